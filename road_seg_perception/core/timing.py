"""Timing of the segmenter's stages, shared by the benchmark and the model card."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from road_seg_perception.core.preprocessing import preprocess
from road_seg_perception.core.segmenter import RoadSegmenter


def time_segmenter(seg: RoadSegmenter, frame: np.ndarray | Sequence[np.ndarray], runs: int = 50,
                   warmup: int = 5, rate_hz: float = 0.0) -> dict[str, float]:
    """Median milliseconds of pre, infer, post and total over ``runs`` calls of ``seg.segment``.

    ``frame`` is one RGB image or a sequence of them, used in turn. ``rate_hz`` > 0 starts the calls
    at that rate, as a camera delivers frames, so each one follows an idle gap (0: back to back).
    """
    frames = [frame] if isinstance(frame, np.ndarray) else list(frame)
    for i in range(warmup):
        seg.segment(frames[i % len(frames)])
    rows = []
    period = 1.0 / rate_hz if rate_hz > 0 else 0.0
    next_start = time.perf_counter()
    for i in range(runs):
        f = frames[i % len(frames)]
        if period:
            next_start += period
            time.sleep(max(0.0, next_start - time.perf_counter()))
        t = time.perf_counter()
        r = seg.segment(f)
        rows.append({**r.timings_ms, "total": (time.perf_counter() - t) * 1e3})
    out = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    out["p95_total"] = float(np.percentile([r["total"] for r in rows], 95))
    out["fps"] = 1000.0 / out["total"]
    return out


def time_keras_predict(seg: RoadSegmenter, frame: np.ndarray, runs: int = 10) -> float:
    """Median milliseconds of ``model.predict`` on one frame (the path tutorials use), for comparison."""
    model = seg.backend.model
    x = preprocess(frame, seg.input_hw)[None]
    model.predict(x, verbose=0)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        model.predict(x, verbose=0)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))
