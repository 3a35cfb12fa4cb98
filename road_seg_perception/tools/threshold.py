"""``road-seg-threshold``: the probability threshold that maximises road IoU on a config's training frames.

    road-seg-threshold --config config/train_road.yaml --model models/road_unet_camvid.onnx --val

Runs the model over labelled training frames of every trained dataset of the config (``--frames``
per dataset, spread evenly over its drives), thresholds the road probability at full resolution
(as the published mask is made) at each threshold, and prints road IoU per dataset, pixels pooled
over its frames. The threshold it proposes maximises the mean of the datasets' IoU:
chosen on frames the model trained on, never on a validation split. ``--val`` also scores the
config's validation splits at every threshold, to show what the choice does there (reported, not
used). The proposal goes to the node as ``threshold:=T`` and to every tool as ``--threshold T``,
or into the model itself: ``--write OUT.keras`` (with a ``.keras`` ``--model``) saves a copy whose
logit bias is shifted so that the default 0.5 on its output is the chosen ``T`` on the model's
(``training/operating_point.py``); export that copy with ``road-seg-export``.

    road-seg-threshold --config config/train_road.yaml --model runs/NAME/model.keras \
        --write runs/NAME/model_operating.keras
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from road_seg_perception.core.cli_errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, fail
from road_seg_perception.core.fileio import atomic_save, atomic_write_text
from road_seg_perception.core.metrics import Confusion, confusion
from road_seg_perception.core.model_io import ModelFileError, load_keras_model
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.tools.model_args import add_flip_average_arg, add_model_file_args
from road_seg_perception.tools.model_card import config_splits
from road_seg_perception.training.config import dataset_configs, load_config
from road_seg_perception.training.data import dataset_samples, evenly_spaced, label_spec
from road_seg_perception.training.datasets import load_samples
from road_seg_perception.training.operating_point import bake_threshold

PROG = "road-seg-threshold"
#: Thresholds scanned by default: 0.20, 0.25, ..., 0.80.
THRESHOLDS = np.round(np.arange(0.20, 0.801, 0.05), 2)


def training_pairs(cfg: dict, frames: int) -> dict[str, list]:
    """Up to ``frames`` labelled training (image, label) pairs per trained dataset, spread evenly over it."""
    out: dict[str, list] = {}
    for ds in dataset_configs(cfg):
        if not ds.train or not ds.ground_truth or ds.format == "images":
            continue  # no labels of its own to score against
        samples, _ = dataset_samples(ds)
        if samples:
            out[ds.name] = load_samples(evenly_spaced(samples, frames), label_spec(ds))
    if not out:
        raise ValueError("the config trains on no labelled dataset: nothing to choose a threshold on")
    return out


def iou_curves(seg: RoadSegmenter, groups: dict[str, list], thresholds: np.ndarray) -> dict[str, list[float]]:
    """Pooled road IoU of each group of (image, label) pairs at each threshold."""
    curves = {}
    for name, pairs in groups.items():
        pooled = [Confusion() for _ in thresholds]
        for image, label in tqdm(pairs, desc=name, unit="frame", leave=False):
            prob = seg.segment(image, with_probability=True).probability
            pooled = [c + confusion(prob >= t, label) for c, t in zip(pooled, thresholds, strict=True)]
        curves[name] = [c.iou for c in pooled]
    return curves


def choose(curves: dict[str, list[float]], thresholds: np.ndarray) -> tuple[float, float]:
    """The threshold with the highest mean IoU over the curves (the lowest such one on a tie), and that mean."""
    mean = np.mean(np.array(list(curves.values())), axis=0)
    i = int(np.argmax(mean))
    return float(thresholds[i]), float(mean[i])


def table(thresholds: np.ndarray, curves: dict[str, list[float]], chosen: float) -> str:
    """Markdown table: a row per threshold, a column per curve, the chosen row marked."""
    names = list(curves)
    lines = ["| threshold | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for i, t in enumerate(thresholds):
        mark = " (chosen)" if abs(t - chosen) < 1e-9 else ""
        lines.append(f"| {t:.2f}{mark} | " + " | ".join(f"{curves[n][i]:.4f}" for n in names) + " |")
    return "\n".join(lines)


def write_operating_model(model: Path, out: Path, threshold: float) -> float:
    """Save ``model`` (.keras) to ``out`` with ``threshold`` baked into its logit bias; returns the bias shift."""
    keras_model = load_keras_model(model)
    shift = bake_threshold(keras_model, threshold)
    atomic_save(keras_model, out)
    return shift


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="training config whose datasets give the frames")
    add_model_file_args(p)
    p.add_argument("--frames", type=int, default=150, help="training frames per dataset (default: 150)")
    p.add_argument("--thresholds", type=float, nargs="+", help="thresholds to scan (default: 0.20 to 0.80 by 0.05)")
    p.add_argument("--val", action="store_true", help="also score the validation splits (reported, not used)")
    add_flip_average_arg(p)
    p.add_argument("--json", metavar="OUT", help="write the curves and the choice as JSON")
    p.add_argument("--write", metavar="OUT.keras",
                   help="save a copy of the .keras --model whose output at 0.5 is the chosen threshold's mask")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    a = p.parse_args(argv)
    thresholds = np.asarray(a.thresholds if a.thresholds else THRESHOLDS, dtype=np.float64)
    try:
        if a.json and Path(a.json).is_dir():
            raise ValueError(f"--json {a.json} is a folder")
        if a.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {a.frames}")
        if a.write and not (str(a.model or "").endswith(".keras") and a.write.endswith(".keras")):
            raise ValueError("--write needs a .keras --model and a .keras output path")
        if a.write and Path(a.write).resolve() == Path(a.model).resolve():
            raise ValueError(f"--write {a.write} is the --model file: write the copy elsewhere")
        if not np.all((thresholds > 0) & (thresholds < 1)):
            raise ValueError(f"--thresholds must lie in (0, 1), got {thresholds.tolist()}")
        cfg = load_config(Path(a.config))
        train = training_pairs(cfg, a.frames)
        val = config_splits(cfg) if a.val else {}
        seg = RoadSegmenter(a.model, backend=a.backend, flip_average=a.flip_average)
    except (ValueError, FileNotFoundError, ModelFileError) as exc:
        return fail(PROG, exc, EXIT_USAGE, a.debug)
    try:
        curves = iou_curves(seg, train, thresholds)
        chosen, mean = choose(curves, thresholds)
        val_curves = iou_curves(seg, val, thresholds) if val else {}
    except KeyboardInterrupt as exc:
        return fail(PROG, exc, EXIT_INTERRUPTED, a.debug)
    except Exception as exc:  # noqa: BLE001  named in one line, traceback with --debug
        return fail(PROG, exc, EXIT_RUNTIME, a.debug)
    frames = {name: len(pairs) for name, pairs in train.items()}
    print(f"model {seg.info['model']}{' (flip-averaged)' if a.flip_average else ''}; training frames "
          + ", ".join(f"{n} {k}" for n, k in frames.items()))
    print(table(thresholds, curves, chosen))
    print(f"chosen threshold {chosen:.2f}: mean training-frame road IoU {mean:.4f}")
    if val_curves:
        print("validation splits (not used for the choice):")
        print(table(thresholds, val_curves, chosen))
    if a.write:
        try:
            shift = write_operating_model(Path(a.model), Path(a.write), chosen)
        except (ValueError, OSError, ModelFileError) as exc:
            return fail(PROG, exc, EXIT_RUNTIME, a.debug)
        print(f"wrote {a.write}: logit bias {shift:+.4f}, so threshold 0.5 on its output = {chosen:.2f} on {a.model}'s")
    if a.json:
        atomic_write_text(Path(a.json), json.dumps({
            "model": seg.info["model"], "flip_average": a.flip_average, "config": a.config, "frames": frames,
            "thresholds": thresholds.tolist(), "train_iou": curves, "val_iou": val_curves,
            "chosen": chosen, "mean_train_iou": round(mean, 6)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
