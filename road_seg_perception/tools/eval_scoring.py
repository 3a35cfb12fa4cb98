"""Scoring a bag offline: ground truth by stamp or mask folder, per-frame rows, and the metrics they sum up to."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from road_seg_perception.bagio.bag import (
    GT_TOPIC,
    IMAGE_TYPE,
    IMAGE_TYPES,
    BagError,
    BagMessage,
    decode_image,
    default_image_topic,
    iter_messages,
    mono8_array,
    read_bag_topics,
    require_topic,
    stamp_ns_of,
)
from road_seg_perception.bagio.image_codec import ImageConversionError
from road_seg_perception.core.imageio import max_image_pixels
from road_seg_perception.core.metrics import (
    Confusion,
    PRAccumulator,
    SplitScore,
    label_from_gt_image,
    max_f,
    percentile,
)
from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.core.temporal import (
    DEFAULT_ALPHA,
    DEFAULT_RESET_GAP_S,
    DEFAULT_SMOOTHING,
    FlickerMeter,
    ProbabilityEMA,
)
from road_seg_perception.training.datasets import IMAGE_EXTS, LabelSpec, read_label

#: Thresholds over which the PR curve and MaxF are computed.
PR_THRESHOLDS = np.round(np.linspace(0.01, 0.99, 99), 4)
#: At most this many bad frames are listed by index in ``metrics.json`` (all are counted).
MAX_LISTED_BAD = 100


@dataclass
class EvalConfig:
    """Options of one evaluation run (the CLI's flags)."""

    image_topic: str | None = None  # None: /camera/image_raw, else /camera/image_raw/compressed
    gt_topic: str = GT_TOPIC
    gt_dir: Path | None = None
    mask_format: str = "camvid"
    every_n: int = 1
    limit: int | None = None
    worst_k: int = 6
    video: bool = True
    output_bag: bool = True
    progress: bool = True
    temporal_smoothing: bool = DEFAULT_SMOOTHING  # the node's temporal_smoothing: EMA of the probability
    temporal_alpha: float = DEFAULT_ALPHA
    temporal_reset_gap_s: float = DEFAULT_RESET_GAP_S


@dataclass
class FrameRow:
    """One processed frame's scores and timings."""

    index: int
    stamp_ns: int
    time_s: float
    frame_id: str
    width: int
    height: int
    confusion: Confusion | None
    timings_ms: dict[str, float]
    decode_ms: float
    flicker: float | None = None  # share of valid pixels whose label changed since the previous processed frame

    @property
    def latency_ms(self) -> float:
        return self.timings_ms["pre"] + self.timings_ms["infer"] + self.timings_ms["post"]

    def csv_row(self) -> dict[str, Any]:
        c = self.confusion
        row: dict[str, Any] = {"index": self.index, "stamp_ns": self.stamp_ns, "time_s": f"{self.time_s:.6f}",
                               "frame_id": self.frame_id, "width": self.width, "height": self.height,
                               "scored": int(c is not None)}
        for k in ("iou", "f1", "precision", "recall"):
            row[k] = f"{getattr(c, k):.6f}" if c else ""
        for k in ("tp", "fp", "fn", "tn"):
            row[k] = getattr(c, k) if c else ""
        for k in ("pre", "infer", "post"):
            row[f"{k}_ms"] = f"{self.timings_ms[k]:.3f}"
        row["latency_ms"] = f"{self.latency_ms:.3f}"
        row["decode_ms"] = f"{self.decode_ms:.3f}"
        row["flicker"] = "" if self.flicker is None else f"{self.flicker:.6f}"
        return row


CSV_FIELDS = ["index", "stamp_ns", "time_s", "frame_id", "width", "height", "scored", "iou", "f1", "precision",
              "recall", "tp", "fp", "fn", "tn", "pre_ms", "infer_ms", "post_ms", "latency_ms", "decode_ms", "flicker"]


# --------------------------------------------------------------------------- ground truth sources


class GroundTruth:
    """Ground-truth labels (0/1/VOID) per frame: from a bag topic by stamp, or a mask folder by order."""

    def __init__(self, bag: Path, topics: dict, cfg: EvalConfig, n_images: int, image_topic: str):
        self.by_stamp: dict[int, bytes] = {}
        self.by_index: list[bytes] | None = None
        self.duplicate_stamps = 0
        self.files: list[Path] = []
        if cfg.gt_dir is not None:
            d = Path(cfg.gt_dir)
            if not d.is_dir():
                raise BagError(f"ground-truth folder {d} does not exist")
            self.spec = LabelSpec(format=cfg.mask_format)
            self.spec.validate()
            self.files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
            if len(self.files) != n_images:
                raise BagError(f"ground-truth folder {d} holds {len(self.files)} masks but the bag has {n_images} "
                               "images; masks are matched to frames in name order, so the counts must agree")
            self.source = f"folder {d} ({cfg.mask_format}, matched in name order)"
            return
        require_topic(bag, topics, cfg.gt_topic, (IMAGE_TYPE,), "ground-truth", "--gt-topic or --gt-dir")
        in_order: list[tuple[int, bytes]] = []
        for m in iter_messages(bag, [cfg.gt_topic]):
            # PNG keeps long bags' ground truth small in memory; lossless
            ok, buf = cv2.imencode(".png", mono8_array(m.msg))
            in_order.append((stamp_ns_of(m.msg), buf.tobytes()))
        gt_stamps = [s for s, _ in in_order]
        image_stamps = [stamp_ns_of(m.msg) for m in iter_messages(bag, [image_topic])]
        self.duplicate_stamps = (len(image_stamps) - len(set(image_stamps))) + (len(gt_stamps) - len(set(gt_stamps)))
        if not self.duplicate_stamps:
            self.by_stamp = dict(in_order)
            self.source = f"topic {cfg.gt_topic} (matched by header stamp)"
            return
        # Stamps cannot tell these frames apart: pair by message order when that is unambiguous, else refuse.
        if len(gt_stamps) != len(image_stamps) or gt_stamps != image_stamps:
            raise BagError(f"bag {bag} has duplicate header stamps ({len(image_stamps) - len(set(image_stamps))} on "
                           f"{image_topic}, {len(gt_stamps) - len(set(gt_stamps))} on {cfg.gt_topic}) and its "
                           "ground truth cannot be paired with the images by message order either (the two "
                           "topics' stamp sequences differ); rebuild the bag with distinct stamps")
        self.by_index = [png for _, png in in_order]
        self.source = (f"topic {cfg.gt_topic} (matched by message order: the bag has {self.duplicate_stamps} "
                       "duplicate header stamps)")

    def label(self, index: int, stamp_ns: int) -> np.ndarray | None:
        if self.files:
            return read_label(self.files[index], self.spec)
        png = self.by_index[index] if self.by_index is not None else self.by_stamp.get(stamp_ns)
        if png is None:
            return None
        return label_from_gt_image(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED))


# --------------------------------------------------------------------------- scoring


@dataclass
class ScoredFrame:
    """One processed frame as the scorer hands it to output writers."""

    receive_ns: int
    row: FrameRow
    rgb: np.ndarray
    mask: np.ndarray
    label: np.ndarray | None


@dataclass
class BagScore:
    """Everything scoring one bag produced (no files written)."""

    bag: Path
    image_topic: str
    image_msgtype: str
    gt_source: str
    frames_in_bag: int
    considered: int
    rate_hz: float
    rows: list[FrameRow] = field(default_factory=list)
    bad: list[dict[str, Any]] = field(default_factory=list)  # frames that could not be decoded
    skipped: int = 0  # left out by every_n
    split: SplitScore = field(default_factory=SplitScore)
    pr: PRAccumulator = field(default_factory=PRAccumulator)

    @property
    def scored(self) -> list[FrameRow]:
        return [r for r in self.rows if r.confusion is not None]


def open_bag(bag: Path, cfg: EvalConfig) -> tuple[BagScore, GroundTruth]:
    """Check the bag's topics and ground truth before any frame is read: an empty score and the ground truth."""
    if cfg.every_n < 1:
        raise BagError(f"--every-n must be >= 1, got {cfg.every_n}")
    if cfg.limit is not None and cfg.limit < 1:
        raise BagError(f"--limit must be >= 1, got {cfg.limit}")
    try:
        ProbabilityEMA.validate(cfg.temporal_alpha, cfg.temporal_reset_gap_s)
    except ValueError as e:
        raise BagError(f"--temporal-alpha / --temporal-reset-gap: {e}") from e
    topics = read_bag_topics(bag)
    image_topic = cfg.image_topic or default_image_topic(topics)
    img_t = require_topic(bag, topics, image_topic, IMAGE_TYPES, "image", "--image-topic")
    if img_t.count == 0:
        raise BagError(f"bag {bag} has no messages on the image topic {image_topic!r}; nothing to evaluate")
    n_images = img_t.count if cfg.limit is None else min(img_t.count, cfg.limit)
    gt = GroundTruth(bag, topics, cfg, img_t.count, image_topic)
    duration_s = topic_duration_s(bag, image_topic) if img_t.count > 1 else 0.0
    rate_hz = (img_t.count - 1) / duration_s if duration_s > 0 else 10.0
    return BagScore(bag, image_topic, img_t.msgtype, gt.source, img_t.count, n_images, rate_hz), gt


def score_frames(score: BagScore, gt: GroundTruth, segmenter, cfg: EvalConfig) -> Iterator[ScoredFrame]:
    """Segment and score the bag's frames one by one, filling ``score``; yields each frame for output writers."""
    t0_stamp: int | None = None
    ema = ProbabilityEMA(cfg.temporal_alpha, cfg.temporal_reset_gap_s) if cfg.temporal_smoothing else None
    flicker = FlickerMeter()
    for index, m in enumerate(iter_messages(score.bag, [score.image_topic])):
        if cfg.limit is not None and index >= cfg.limit:
            break
        if index % cfg.every_n:
            score.skipped += 1
            continue
        stamp = stamp_ns_of(m.msg)
        t0_stamp = stamp if t0_stamp is None else t0_stamp
        td = time.perf_counter()
        rgb = _decode_or_count_bad(m, score, index, stamp)
        if rgb is None:
            continue
        decode_ms = (time.perf_counter() - td) * 1e3
        temporal = {} if ema is None else {"smooth": partial(ema.update, stamp_s=stamp / 1e9, key=rgb.shape)}
        res = segmenter.segment(rgb, with_probability=True, **temporal)
        label = gt.label(index, stamp)
        c = None
        if label is not None:
            if label.shape != res.mask.shape:
                raise BagError(f"frame {index} (stamp {stamp}): ground truth is {label.shape[1]}x{label.shape[0]}"
                               f", image is {rgb.shape[1]}x{rgb.shape[0]}")
            c = score.split.add(res.mask, label)
            score.pr.add(res.probability, label)
        valid = label != VOID if label is not None and label.shape == res.mask.shape else None
        row = FrameRow(index, stamp, (stamp - t0_stamp) / 1e9, m.msg.header.frame_id, rgb.shape[1], rgb.shape[0], c,
                       dict(res.timings_ms), decode_ms, flicker.update(res.mask, stamp / 1e9, valid))
        score.rows.append(row)
        yield ScoredFrame(m.timestamp_ns, row, rgb, res.mask, label)


def _decode_or_count_bad(m: BagMessage, score: BagScore, index: int, stamp: int) -> np.ndarray | None:
    """The frame's RGB image, or ``None`` after counting it as bad (as the node does with a malformed image)."""
    try:
        return decode_image(m.msg, score.image_msgtype, max_image_pixels())
    except (ImageConversionError, BagError) as e:
        score.bad.append({"index": index, "stamp_ns": stamp, "reason": str(e)})
        return None


def build_metrics(score: BagScore, segmenter, cfg: EvalConfig) -> dict[str, Any]:
    """``metrics.json``'s content (without the output paths); raises :class:`BagError` if no frame was scored."""
    rows, scored = score.rows, score.scored
    if not scored:
        why = f", {len(score.bad)} could not be decoded" if score.bad else ""
        raise BagError(f"no frame of {score.bag} could be scored ({len(rows)} processed{why}; ground truth: "
                       f"{score.gt_source})")
    curve = score.pr.curve(PR_THRESHOLDS)
    best_f, best_t = max_f(curve)
    lat = [r.latency_ms for r in rows]
    thr = float(segmenter.post.threshold)
    op = score.pr.curve(np.array([thr]))
    total: Confusion = score.split.total
    return {
        "bag": str(score.bag),
        "image_topic": score.image_topic,
        "ground_truth": score.gt_source,
        "model": segmenter.info,
        "post": {"threshold": thr, "min_blob_area": int(segmenter.post.min_blob_area),
                 "fill_holes_area": int(segmenter.post.fill_holes_area)},
        # exact accounting: considered == processed + bad + skipped_every_n
        "frames": {"in_bag": score.frames_in_bag, "considered": score.considered, "every_n": cfg.every_n,
                   "processed": len(rows), "bad": len(score.bad), "skipped_every_n": score.skipped,
                   "scored": len(scored), "without_ground_truth": len(rows) - len(scored)},
        "bad_frames": score.bad[:MAX_LISTED_BAD],
        "aggregate": {**total.scores(), "confusion": total.to_dict()},
        "mean_frame_iou": score.split.mean_frame_iou,
        "mean_frame_f1": float(np.mean([r.confusion.f1 for r in scored])),
        "min_frame_iou": float(np.min(score.split.frame_ious)),
        "maxf": {"f": best_f, "threshold": best_t},
        "operating_point": {"threshold": thr, "precision": op["precision"][0], "recall": op["recall"][0]},
        "pr_curve": curve,
        "latency_ms": {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "mean": float(np.mean(lat)),
                       "max": float(np.max(lat)),
                       **{k: {"p50": percentile([r.timings_ms[k] for r in rows], 50),
                              "p95": percentile([r.timings_ms[k] for r in rows], 95)}
                          for k in ("pre", "infer", "post")},
                       "note": "pre-processing + inference + post-processing per frame (image decoding excluded)"},
        "decode_ms": {"p50": percentile([r.decode_ms for r in rows], 50),
                      "p95": percentile([r.decode_ms for r in rows], 95)},
        "fps_offline": 1000.0 / float(np.mean(lat)),
        "flicker": flicker_summary(rows),
        "temporal_smoothing": {"enabled": cfg.temporal_smoothing, "alpha": cfg.temporal_alpha,
                               "reset_gap_s": cfg.temporal_reset_gap_s},
    }


def flicker_summary(rows: list[FrameRow]) -> dict[str, Any]:
    """Mean and p95 of the per-frame flicker over consecutive processed frame pairs."""
    values = [r.flicker for r in rows if r.flicker is not None]
    return {"mean": float(np.mean(values)) if values else None, "p95": percentile(values, 95) if values else None,
            "pairs": len(values),
            "note": "share of pixels (void excluded where ground truth exists) whose road/not-road label changed "
                    "since the previous processed frame of the same size"}


def topic_duration_s(bag: Path, topic: str) -> float:
    """Seconds between the first and last message of ``topic`` (receive timestamps, no deserialising)."""
    from rosbags.rosbag2 import Reader

    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == topic]
        stamps = [t for _, t, _ in r.messages(connections=conns)]
    return (max(stamps) - min(stamps)) / 1e9 if stamps else 0.0
