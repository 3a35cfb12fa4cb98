#!/usr/bin/env python3
"""The model-input resize: area against bilinear interpolation, timed in one interleaved run.

    python bench/resize_ab.py [--rounds 20] [--runs 50] [--input-hw 256 352]

Camera frames (480x360 and 1280x720 RGB uint8) are resized to the model input the way
``core/preprocessing.resize_image`` does (``cv2.INTER_LINEAR``) and the way it did before
(``cv2.INTER_AREA``), rounds alternating between the two. Median milliseconds; reported, never asserted.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

SIZES = ((480, 360), (1280, 720))
MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR}


def measure(rounds: int, runs: int, hw: tuple[int, int]) -> dict[str, dict[str, float]]:
    """``{frame size: {mode: median ms}}`` over ``rounds`` alternating rounds of ``runs`` resizes each."""
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, float]] = {}
    for w, h in SIZES:
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(rounds):
            for mode, flag in MODES.items():
                for _ in range(runs):
                    t = time.perf_counter()
                    cv2.resize(frame, (hw[1], hw[0]), interpolation=flag)
                    times[mode].append((time.perf_counter() - t) * 1e3)
        out[f"{w}x{h}"] = {m: float(np.median(v)) for m, v in times.items()}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--input-hw", type=int, nargs=2, default=[256, 352], metavar=("H", "W"))
    a = p.parse_args()
    res = measure(a.rounds, a.runs, tuple(a.input_hw))
    print(f"resize to {a.input_hw[0]}x{a.input_hw[1]} (median ms; cv2 threads {cv2.getNumThreads()})")
    print("| frame | area | bilinear | area / bilinear |\n| --- | --- | --- | --- |")
    for size, r in res.items():
        print(f"| {size} | {r['area']:.2f} | {r['bilinear']:.2f} | {r['area'] / r['bilinear']:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
