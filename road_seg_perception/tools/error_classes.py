"""What a model's false road is, by the labels' own classes, on every validation split of a config.

    python -m road_seg_perception.tools.error_classes --config config/train_road_no_camvid.yaml \\
        --model runs/road_mnv2_no_camvid_hires/model.onnx

A road IoU says how much is wrong; this says what. For each validation split whose masks hold class
ids (CamVid ids, IDD-Lite level-1 ids), every pixel the model calls road (the published mask, as the
node makes it) that the label does not is counted under its labelled class. The table gives each
class's share of the false road and the split's road IoU if that class were left out of scoring
(void): the score a model would have if the datasets agreed on that class. Missed road is given as
its share of all wrong pixels. Where the wrong pixels lie is given too: the share within ``--edge-band``
pixels of the label's road edge (a pixel touching the other class is 1 px from it; void is neither side)
and the road IoU with that band left out, which tells errors of where exactly an edge runs from errors of
whole regions. Splits of formats without class ids (KITTI colours, binary masks) are named and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from road_seg_perception.core.backends import BACKENDS
from road_seg_perception.core.cli_errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, fail
from road_seg_perception.core.fileio import atomic_write_text
from road_seg_perception.core.metrics import Confusion, confusion
from road_seg_perception.core.model_io import ModelFileError
from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.training.config import dataset_configs, load_config
from road_seg_perception.training.data import dataset_samples, label_spec
from road_seg_perception.training.datasets import (
    DatasetError,
    LabelSpec,
    Sample,
    label_from_ids,
    read_class_ids,
    read_image,
    size_mismatch,
)

PROG = "python -m road_seg_perception.tools.error_classes"
#: Class names of the id-mask formats (the datasets' READMEs).
CLASS_NAMES = {
    "camvid": {0: "sky", 1: "building", 2: "pole", 3: "road", 4: "pavement", 5: "tree", 6: "sign/symbol",
               7: "fence", 8: "car", 9: "pedestrian", 10: "bicyclist", 11: "unlabelled"},
    "idd": {0: "drivable", 1: "non-drivable", 2: "living things", 3: "vehicles", 4: "road-side objects",
            5: "far objects", 6: "sky", 255: "void"},
}

#: Default width (px) of the band along the labelled road edge whose wrong pixels are counted apart.
EDGE_BAND = 2


@dataclass
class ClassErrors:
    """A split's confusion counts and its false-road pixels by labelled class id."""

    frames: int = 0
    counts: Confusion = field(default_factory=Confusion)
    false_road: Counter = field(default_factory=Counter)
    edge_band: int = EDGE_BAND
    near_edge: Confusion = field(default_factory=Confusion)

    def add(self, mask: np.ndarray, ids: np.ndarray, spec: LabelSpec) -> None:
        """Count one frame: ``mask`` the published 0/255 mask, ``ids`` its class-id mask."""
        label = label_from_ids(ids, spec)
        self.counts += confusion(mask, label)
        values, n = np.unique(ids[(mask > 0) & (label == 0)], return_counts=True)
        self.false_road.update(dict(zip(values.tolist(), n.tolist(), strict=True)))
        band = label.copy()
        band[edge_distance(label) > self.edge_band] = VOID
        self.near_edge += confusion(mask, band)
        self.frames += 1

    def share(self, class_id: int) -> float:
        """The class's share of the false-road pixels."""
        return self.false_road[class_id] / self.counts.fp if self.counts.fp else 0.0

    def iou_without(self, class_id: int) -> float:
        """Road IoU with the class's pixels left out of scoring."""
        c = self.counts
        d = c.tp + c.fp - self.false_road[class_id] + c.fn
        return c.tp / d if d else 1.0

    @property
    def edge_share(self) -> float:
        """The share of the wrong pixels that lie within ``edge_band`` px of the label's road edge."""
        wrong = self.counts.fp + self.counts.fn
        return (self.near_edge.fp + self.near_edge.fn) / wrong if wrong else 0.0

    @property
    def iou_off_edge(self) -> float:
        """Road IoU with the pixels within ``edge_band`` px of the label's road edge left out of scoring."""
        c, e = self.counts, self.near_edge
        d = c.tp - e.tp + c.fp - e.fp + c.fn - e.fn
        return (c.tp - e.tp) / d if d else 1.0

    @property
    def missed_share(self) -> float:
        """Missed road's share of all wrong pixels."""
        wrong = self.counts.fp + self.counts.fn
        return self.counts.fn / wrong if wrong else 0.0


def edge_distance(label: np.ndarray) -> np.ndarray:
    """Each pixel's chessboard distance (px) to the nearest pixel of the other class of a 0/1/VOID label.

    A road pixel touching a non-road one is 1 px from the edge, and so is that non-road pixel; void pixels
    belong to neither side (their own distance is that to the nearest road pixel). A label with one class
    only has no edge: every distance is then the frame's height plus width, more than any edge distance.
    """
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D, got shape {label.shape}")
    far = float(sum(label.shape))
    out = np.full(label.shape, far, np.float32)
    for side, other in ((label == 1, label == 0), (label != 1, label == 1)):
        if other.any():
            d = cv2.distanceTransform(np.where(other, 0, 255).astype(np.uint8), cv2.DIST_C, 3)
            out[side] = d[side]
    return out


def split_errors(seg: RoadSegmenter, samples: list[Sample], spec: LabelSpec, desc: str,
                 edge_band: int = EDGE_BAND) -> ClassErrors:
    """Run ``seg`` over a split, one frame at a time, and count its false road by class."""
    out = ClassErrors(edge_band=edge_band)
    for s in tqdm(samples, desc=desc, unit="frame", leave=False):
        image, ids = read_image(s.image), read_class_ids(s.mask)
        if problem := size_mismatch(s, image, ids):
            raise DatasetError(problem)
        out.add(seg.segment(image).mask, ids, spec)
    return out


def config_errors(seg: RoadSegmenter, cfg: dict, log: Callable[[str], None] = print,
                  only: set[str] | None = None, edge_band: int = EDGE_BAND) -> dict[str, tuple[str, ClassErrors]]:
    """``{split: (format, ClassErrors)}`` for every validation split of ``cfg`` (or those in ``only``) whose
    masks hold class ids."""
    out = {}
    for ds in dataset_configs(cfg):
        _, splits = dataset_samples(ds)
        splits = {k: v for k, v in splits.items() if only is None or k in only}
        if splits and ds.format not in CLASS_NAMES:
            log(f"skipped {', '.join(splits)}: format {ds.format} has no class ids")
            continue
        for split, samples in splits.items():
            out[split] = (ds.format, split_errors(seg, samples, label_spec(ds), split, edge_band))
    return out


def largest_false_class(fmt: str, e: ClassErrors) -> dict:
    """The class holding most of a split's false road: its name, share and the road IoU without it."""
    if not e.false_road:
        return {}
    cid, _ = e.false_road.most_common(1)[0]
    return {"false_road_class": CLASS_NAMES[fmt].get(cid, str(cid)), "false_road_share": round(e.share(cid), 4),
            "iou_without_class": round(e.iou_without(cid), 4)}


def table(split: str, fmt: str, e: ClassErrors, top: int) -> str:
    """A markdown table of a split's false road by class, largest share first."""
    names = CLASS_NAMES[fmt]
    lines = [f"{split}: {e.frames} frames, road IoU {e.counts.iou:.4f}; false road {e.counts.fp} px, "
             f"missed road {e.counts.fn} px ({e.missed_share:.1%} of the wrong pixels); "
             f"{e.edge_share:.1%} of the wrong pixels lie within {e.edge_band} px of the labelled road edge, "
             f"road IoU with them left out {e.iou_off_edge:.4f}",
             "", "| labelled class | share of false road | road IoU with the class left out |",
             "| --- | --- | --- |"]
    for cid, _ in e.false_road.most_common(top):
        lines.append(f"| {names.get(cid, 'unknown')} ({cid}) | {e.share(cid):.1%} | {e.iou_without(cid):.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="training config whose validation splits are scored")
    p.add_argument("--model", metavar="PATH", help="model .onnx or .keras (default: the shipped model)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto)")
    p.add_argument("--top", type=int, default=5, help="classes listed per split (default 5)")
    p.add_argument("--edge-band", type=int, default=EDGE_BAND, metavar="PX",
                   help="width of the band along the labelled road edge whose wrong pixels are counted apart "
                        f"(default {EDGE_BAND})")
    p.add_argument("--json", metavar="OUT", help="also write every split's counts as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    a = p.parse_args(argv)
    try:
        if a.top < 1:
            raise ValueError(f"--top must be >= 1, got {a.top}")
        if a.edge_band < 1:
            raise ValueError(f"--edge-band must be >= 1, got {a.edge_band}")
        if a.json and Path(a.json).is_dir():
            raise ValueError(f"--json {a.json} is a folder")
        cfg = load_config(Path(a.config))
        seg = RoadSegmenter(a.model, backend=a.backend)
    except (ValueError, FileNotFoundError, ModelFileError) as exc:
        return fail(PROG, exc, EXIT_USAGE, a.debug)
    model = seg.info["model"]
    try:
        found = config_errors(seg, cfg, edge_band=a.edge_band)
    except KeyboardInterrupt as exc:
        return fail(PROG, exc, EXIT_INTERRUPTED, a.debug)
    except Exception as exc:  # noqa: BLE001  named in one line, traceback with --debug
        return fail(PROG, exc, EXIT_RUNTIME, a.debug)
    finally:
        seg.close()
    if not found:
        return fail(PROG, ValueError(f"--config {a.config} has no validation split with class ids"), EXIT_USAGE)
    print(f"model {model}")
    for split, (fmt, e) in found.items():
        print()
        print(table(split, fmt, e, a.top))
    if a.json:
        atomic_write_text(Path(a.json), json.dumps({
            "model": model, "config": a.config,
            "splits": {split: {"format": fmt, "frames": e.frames, **e.counts.to_dict(),
                               "false_road_by_class": {str(k): v for k, v in sorted(e.false_road.items())},
                               "edge_band_px": e.edge_band, "near_edge": e.near_edge.to_dict()}
                       for split, (fmt, e) in found.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
