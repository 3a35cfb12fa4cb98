#!/usr/bin/env python3
"""Interleaved A/B of ONNX Runtime thread settings, back to back and at a camera's 15 Hz pace.

    python bench/spin_ab.py [--rounds 8] [--model models/road_unet_camvid.onnx]

Each round times every setting in turn (20 calls back to back, 15 calls started at 15 Hz) on
CamVid val frames (synthetic ones without the dataset), so slow drifts of a shared machine hit all
settings alike; the median of the round medians is printed. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.frames import load_frames  # noqa: E402
from road_seg_perception.core.segmenter import RoadSegmenter, default_model_path  # noqa: E402
from road_seg_perception.core.timing import time_segmenter  # noqa: E402

SETTINGS = {"off (product)": {"spinning": "off"}, "run": {"spinning": "run"},
            "1 thread": {"threads": 1, "spinning": "off"}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--model", type=Path, default=None)
    a = p.parse_args(argv)
    model = a.model or default_model_path()
    frames, source = load_frames((480, 360), 10)
    segs = {name: RoadSegmenter(model, backend="onnxruntime", **kw) for name, kw in SETTINGS.items()}
    res: dict[tuple[str, str], list[float]] = {(n, m): [] for n in segs for m in ("back to back", "15 Hz")}
    for _ in range(a.rounds):
        for name, seg in segs.items():
            res[(name, "back to back")].append(time_segmenter(seg, frames, runs=20, warmup=2)["total"])
            res[(name, "15 Hz")].append(time_segmenter(seg, frames, runs=15, warmup=1, rate_hz=15.0)["total"])
    print(f"480x360 frames from {source}; {a.rounds} rounds; ms per frame (pre + infer + post)")
    print("| setting | back to back | started at 15 Hz |")
    print("| --- | --- | --- |")
    for name in segs:
        print(f"| {name} | {np.median(res[(name, 'back to back')]):.1f} | {np.median(res[(name, '15 Hz')]):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
