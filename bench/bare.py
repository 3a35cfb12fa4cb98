"""The bare segmenter section: ``RoadSegmenter.segment`` in this process, per backend and size."""

from __future__ import annotations

import gc
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from bench.settings import ORT_VARIANTS, BenchSettings
from road_seg_perception.core.backends import resolve_model_files
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.core.timing import time_segmenter

# ----------------------------------------------------------------------------- bare segmenter


class KerasPredictBackend:
    """The tutorial path, for comparison only: ``model.predict`` on every frame."""

    def __init__(self, keras_backend: Any):
        self.model = keras_backend.model
        self.name = "keras-predict"
        self.device = keras_backend.device
        self.input_hw = keras_backend.input_hw
        self.path = keras_backend.path

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(batch, verbose=0))[..., 0]


def available_backends(model: Path, wanted: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The wanted bare backends that can run for ``model``, and why the others cannot."""

    onnx_path, keras_path = resolve_model_files(model)
    ok, why = [], {}
    for b in wanted:
        path, ext, package = ((onnx_path, ".onnx", "onnxruntime") if b.startswith("onnxruntime")
                              else (keras_path, ".keras", "keras"))
        if path is None:
            why[b] = f"no {ext} file beside the model"
        elif importlib.util.find_spec(package) is None:
            why[b] = f"{package} is not installed"
        else:
            ok.append(b)
    return ok, why


def bench_bare(s: BenchSettings, frames_by_size: dict[tuple[int, int], list[np.ndarray]],
               log: Any = print) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Time ``RoadSegmenter.segment`` for each available backend and size (medians, ms)."""
    import copy

    backends, skipped = available_backends(s.model, s.backends)
    onnx_path, keras_path = resolve_model_files(s.model)  # each backend runs its own file of the model
    rows: list[dict[str, Any]] = []
    keras_seg: RoadSegmenter | None = None
    for b in backends:
        if b == "onnxruntime" or b in ORT_VARIANTS:
            seg = RoadSegmenter(onnx_path, backend="onnxruntime", **ORT_VARIANTS.get(b, {}))
            seg.backend.name = b
        else:
            if keras_seg is None:
                keras_seg = RoadSegmenter(keras_path, backend="keras")
            seg = keras_seg
            if b == "keras-predict":
                seg = copy.copy(keras_seg)
                seg.backend = KerasPredictBackend(keras_seg.backend)
        for size in s.sizes:
            log(f"  bare {b} {size[0]}x{size[1]} ({s.runs[b]} runs)")
            t = time_segmenter(seg, frames_by_size[size], runs=s.runs[b], warmup=min(s.warmup, s.runs[b]))
            row = {"backend": b, "runtime": seg.backend.name, "device": seg.backend.device,
                   "size": f"{size[0]}x{size[1]}", "pre_ms": t["pre"], "infer_ms": t["infer"],
                   "post_ms": t["post"], "total_ms": t["total"], "p95_total_ms": t["p95_total"],
                   "fps": t["fps"], "runs": s.runs[b]}
            if b.startswith("onnxruntime") and size == s.stream_size and s.paced_runs > 0:
                # A camera delivers a frame, then nothing until the next: idle thread pools wake slowly.
                row["paced_total_ms"] = {}
                for rate in s.rates_hz:
                    log(f"  bare {b} {size[0]}x{size[1]} started at {rate:g} Hz ({s.paced_runs} runs)")
                    row["paced_total_ms"][f"{rate:g}hz"] = time_segmenter(
                        seg, frames_by_size[size], runs=s.paced_runs, warmup=1, rate_hz=rate)["total"]
            rows.append(row)
    del keras_seg
    gc.collect()
    return rows, skipped


