"""One bag of a fleet evaluation: what a Ray task (or this process) runs and what it returns.

The task scores the bag with the single-bag scorer (:mod:`road_seg_perception.tools.eval_scoring`)
and the same :class:`~road_seg_perception.core.segmenter.RoadSegmenter`, and returns everything
in memory (metrics, per-frame rows, worst-frame panels, PR histograms); it writes no file, so no
two tasks ever share one.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from road_seg_perception.core.imageio import DEFAULT_MAX_IMAGE_PIXELS, pixel_limit
from road_seg_perception.core.metrics import Confusion, PRAccumulator
from road_seg_perception.core.segmenter import PostConfig, RoadSegmenter
from road_seg_perception.tools.eval_outputs import WorstFrames
from road_seg_perception.tools.eval_scoring import EvalConfig, FrameRow, build_metrics, open_bag, score_frames
from road_seg_perception.tools.report import WorstFrame


class FleetError(ValueError):
    """A fleet run that cannot start (no bags, Ray missing, bad flag); the message names the cause."""


@dataclass
class ModelBlob:
    """A model file's bytes, so that workers without the file can open it."""

    name: str  # the path the user gave, for the report
    suffix: str
    data: bytes
    sha1: str

    @classmethod
    def read(cls, path: Path | str) -> ModelBlob:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise FleetError(f"--model {p}: {e.strerror or e}") from e
        return cls(str(p), p.suffix, data, hashlib.sha1(data).hexdigest())


@dataclass
class TaskOptions:
    """What every bag's evaluation shares (the CLI's flags)."""

    cfg: EvalConfig = field(default_factory=EvalConfig)
    backend: str = "auto"
    device: str = "auto"
    threshold: float = 0.5
    min_blob_area: int = 0
    fill_holes_area: int = 0
    threads: int = 1
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    flip_average: bool = False


@dataclass
class BagOutcome:
    """One bag's result: metrics, per-frame rows, worst frames and PR histograms, or the error."""

    bag: str
    name: str
    metrics: dict[str, Any] | None
    frames: list[FrameRow]
    worst: list[WorstFrame]
    pr: PRAccumulator | None
    error: str | None
    seconds: float
    host: str

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def confusion(self) -> Confusion:
        """Confusion summed over the bag's scored frames (empty for a failed bag)."""
        if self.metrics is None:
            return Confusion()
        return Confusion(**self.metrics["aggregate"]["confusion"])

    @classmethod
    def failed(cls, bag: str, name: str, error: BaseException | str, seconds: float = 0.0,
               host: str = "?") -> BagOutcome:
        """A failed bag, with a one-line error."""
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {' '.join(str(error).split()) or '(no message)'}"
        return cls(bag, name, None, [], [], None, error[:1000], seconds, host)


_SEGMENTERS: dict[tuple, Any] = {}  # per worker process: opened once, reused by its later bags


def open_segmenter(model: ModelBlob | None, opts: TaskOptions):
    """The segmenter for ``model`` (``None``: the shipped one), cached in this process."""
    post = PostConfig(opts.threshold, opts.min_blob_area, opts.fill_holes_area)
    key = (model.sha1 if model else None, opts.backend, opts.device, opts.threads, opts.threshold,
           opts.min_blob_area, opts.fill_holes_area, opts.flip_average)
    if key not in _SEGMENTERS:
        def open_(path: Path | None) -> RoadSegmenter:
            return RoadSegmenter(path, opts.backend, opts.device, post, threads=opts.threads,
                                 flip_average=opts.flip_average)

        if model is None:
            _SEGMENTERS[key] = open_(None)
        else:
            d = Path(tempfile.mkdtemp(prefix="road_seg_model_"))
            try:  # the backends read the whole file at opening
                path = d / f"model{model.suffix}"
                path.write_bytes(model.data)
                _SEGMENTERS[key] = open_(path)
            finally:
                shutil.rmtree(d, ignore_errors=True)
    return _SEGMENTERS[key]


def evaluate_one(bag: str, name: str, model: ModelBlob | None, opts: TaskOptions,
                 tick: Callable[[int], Any] | None = None) -> BagOutcome:
    """Score one bag; ``tick(1)`` after each frame; any error becomes the outcome's ``error``."""
    t0 = time.perf_counter()
    host = socket.gethostname()
    try:
        with pixel_limit(opts.max_image_pixels):  # this bag's frames, checked before decoding
            return _evaluate_one(bag, name, model, opts, tick, t0, host)
    except Exception as e:  # a failing bag is reported and never stops the fleet
        return BagOutcome.failed(bag, name, e, time.perf_counter() - t0, host)


def _evaluate_one(bag: str, name: str, model: ModelBlob | None, opts: TaskOptions,
                  tick: Callable[[int], Any] | None, t0: float, host: str) -> BagOutcome:
    seg = open_segmenter(model, opts)
    cfg = opts.cfg
    score, gt = open_bag(Path(bag), cfg)
    worst = WorstFrames(cfg.worst_k)
    for f in score_frames(score, gt, seg, cfg):
        r = f.row
        if r.confusion is not None:
            worst.add(r.index, r.stamp_ns, r.time_s, r.confusion, f.rgb, f.mask, f.label)
        if tick is not None:
            tick(1)
    metrics = build_metrics(score, seg, cfg)
    if model is not None:
        metrics["model"] = {**metrics["model"], "model": model.name}
    return BagOutcome(bag, name, metrics, score.rows, worst.sorted(), score.pr, None,
                      time.perf_counter() - t0, host)
