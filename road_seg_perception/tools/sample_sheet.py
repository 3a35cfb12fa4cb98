"""A model's masks beside the ground truth on frames of every validation split of a config (an image sheet).

    python -m road_seg_perception.tools.sample_sheet --config config/train_road.yaml \\
        --model models/road_unet_camvid.onnx --per-split 2 --out docs/samples.jpg

    python -m road_seg_perception.tools.sample_sheet --config config/train_road.yaml \\
        --model models/road_unet_camvid.onnx --per-split 4 --pick worst --out worst.jpg

Frames are spread evenly over each split (``--pick even``) or are the split's lowest road IoU, worst
first (``--pick worst``: every frame is segmented once to find them; where the model errs, and whether the
label or the model is at fault). Each row is titled with its split, frame and road IoU, and the
sheet's last line is the command that wrote it. Masks come from ``RoadSegmenter``, the node's path.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from road_seg_perception.core.fileio import write_atomically
from road_seg_perception.core.metrics import Confusion, confusion
from road_seg_perception.core.overlay import compare_panel, stack_rows, text_strip
from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.training.config import dataset_configs, load_config
from road_seg_perception.training.data import dataset_samples, evenly_spaced, label_spec, sample_name
from road_seg_perception.training.datasets import LabelSpec, Sample, load_samples

#: Every row is scaled to this width (pixels): two 480-wide panels side by side, shrunk.
SHEET_WIDTH = 960
#: Height of the white strip at the bottom that holds the command.
FOOTER_HEIGHT = 28
#: JPEG quality of a ``.jpg`` sheet: overlays and titles stay clean at about half the size of OpenCV's default (95).
JPEG_QUALITY = 85


#: A picked frame: its sample, image, label and published mask.
Picked = tuple[Sample, np.ndarray, np.ndarray, np.ndarray]


def worst(seg: RoadSegmenter, samples: list[Sample], spec: LabelSpec, n: int) -> tuple[list[Picked], str]:
    """The ``n`` frames whose published mask has the lowest road IoU, lowest first (ties in list order).

    Also returns a line with the split's road IoU (pixels pooled) with and without them: how much
    of the split's error those frames hold. Frames are read one at a time and only the ``n`` lowest so
    far are kept (with their masks, so they are not segmented again), so a long split is not held in memory.
    """
    counts, kept = [], []  # kept: (iou, index, frame) of the n lowest so far
    for i, s in enumerate(tqdm(samples, desc="finding the worst frames", unit="frame", leave=False)):
        (image, label), = load_samples([s], spec)
        mask = seg.segment(image).mask
        counts.append(confusion(mask, label))
        kept = sorted([*kept, (counts[-1].iou, i, (s, image, label, mask))], key=lambda k: k[:2])[:n]
    every = sum(counts, Confusion())
    chosen = {i for _, i, _ in kept}
    rest = sum((c for i, c in enumerate(counts) if i not in chosen), Confusion())
    line = f"road IoU {every.iou:.4f} over {len(samples)} frames"
    if len(kept) < len(samples):
        line += f", {rest.iou:.4f} without the {len(kept)} worst"
    return [frame for *_, frame in kept], line


#: How ``--pick`` chooses a split's frames.
PICKS = ("even", "worst")


def sheet_rows(seg: RoadSegmenter, cfg: dict, per_split: int, pick: str = "even",
               log: Callable[[str], None] = print) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """``(title, panel, mask, iou)`` for ``per_split`` frames of every validation split of ``cfg``.

    ``pick="even"``: frames spread evenly over the split, in its order; ``"worst"``: the split's
    ``per_split`` frames of lowest road IoU, lowest first (ties in the split's order), with a line per
    split to ``log`` saying how much of its error they hold.
    """
    if pick not in PICKS:
        raise ValueError(f"pick must be one of {PICKS}, got {pick!r}")
    rows = []
    for ds in dataset_configs(cfg):
        spec = label_spec(ds)
        _, splits = dataset_samples(ds)
        for split, samples in splits.items():
            if pick == "even":
                even = evenly_spaced(samples, per_split)
                picked = [(s, image, label, seg.segment(image).mask)
                          for s, (image, label) in zip(even, load_samples(even, spec), strict=True)]
            else:
                picked, line = worst(seg, samples, spec, per_split)
                log(f"{split}: {line}")
            for s, image, label, mask in picked:
                iou = confusion(mask, label).iou
                title = f"{split}: {sample_name(s)}  IoU {iou:.3f}  (left: prediction, right: ground truth)"
                rows.append((title, compare_panel(image, mask, label, VOID), mask, iou))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m road_seg_perception.tools.sample_sheet",
                                description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="training config whose validation splits are shown")
    p.add_argument("--model", required=True, help=".onnx or .keras model")
    p.add_argument("--per-split", type=int, default=2, help="frames per validation split (default 2)")
    p.add_argument("--pick", choices=PICKS, default="even",
                   help="even: frames spread over each split (default); worst: each split's lowest road IoU")
    p.add_argument("--out", required=True, help="image to write (.png, or .jpg for a smaller file)")
    a = p.parse_args(argv)
    if a.per_split < 1:
        p.error("--per-split must be >= 1")
    if not Path(a.model).is_file():
        p.error(f"--model {a.model} does not exist")
    if not Path(a.out).parent.is_dir():
        p.error(f"--out {a.out}: folder {Path(a.out).parent} does not exist")
    try:
        cfg = load_config(a.config)
    except (FileNotFoundError, ValueError) as e:
        p.error(f"--config {a.config}: {e}")
    seg = RoadSegmenter(a.model)
    try:
        rows = sheet_rows(seg, cfg, a.per_split, a.pick)
    finally:
        seg.close()
    if not rows:
        p.error(f"--config {a.config} has no validation split")
    for title, *_ in rows:
        print(title)
    command = "python -m road_seg_perception.tools.sample_sheet " + shlex.join(argv if argv is not None else
                                                                              sys.argv[1:])
    sheet = stack_rows([(title, panel) for title, panel, _, _ in rows], SHEET_WIDTH)
    sheet = np.concatenate([sheet, text_strip(command, SHEET_WIDTH, FOOTER_HEIGHT, dark=False)])
    suffix = Path(a.out).suffix or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, png = cv2.imencode(suffix, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), params)
    if not ok:
        print(f"could not encode {a.out}", file=sys.stderr)
        return 1
    write_atomically(Path(a.out), lambda tmp: tmp.write_bytes(png.tobytes()))
    print(f"wrote {a.out} ({len(rows)} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
