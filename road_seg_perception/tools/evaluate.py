"""``road-seg-eval``: offline replay evaluation of a rosbag2 file, with no ROS graph.

    road-seg-eval BAG --report DIR [--image-topic T] [--gt-topic T | --gt-dir DIR [--mask-format F]]
                  [--model M] [--backend B] [--device D] [--every-n N] [--threshold T] [--limit N]

Each image of the bag goes through the same :class:`~road_seg_perception.segmenter.RoadSegmenter`
the node uses. Ground truth comes from a mono8 topic (255 road, 0 not road, 128 void; the default
``/road_seg/ground_truth`` that ``road-seg-bag`` writes), matched by header stamp, or from a mask
folder matched to the frames in name order. ``DIR`` receives:

* ``metrics.json``: aggregate IoU/F1/precision/recall (confusion summed over every pixel of every
  scored frame, void excluded), mean per-frame IoU, MaxF with its threshold, the PR curve,
  latency p50/p95 of pre-processing + inference + post-processing;
* ``frames.csv``: one row per processed frame;
* ``report.html``: self-contained report (summary, IoU over time, PR curve, worst frames);
* ``overlay.mp4`` (or ``overlay.gif`` where no mp4 encoder exists);
* ``output_bag/``: ``/road_mask`` (mono8) and ``/road_overlay`` (rgb8) with the inputs' headers.

A missing or misnamed topic exits with status 2 and lists the topics the bag has.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from road_seg_perception.bagio.bag import (
    EXIT_USAGE,
    GT_TOPIC,
    IMAGE_TYPE,
    IMAGE_TYPES,
    BagError,
    BagWriter,
    decode_image,
    default_image_topic,
    image_msg,
    iter_messages,
    mono8_array,
    read_bag_topics,
    require_topic,
    stamp_ns_of,
)
from road_seg_perception.core.imageio import add_max_pixels_argument, max_image_pixels, set_max_image_pixels
from road_seg_perception.core.metrics import Confusion, confusion, label_from_gt_image, max_f, percentile
from road_seg_perception.core.overlay import draw_overlay, side_by_side
from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.tools.report import WorstFrame, write_report

MASK_TOPIC = "/road_mask"
OVERLAY_TOPIC = "/road_overlay"
#: Thresholds over which the PR curve and MaxF are computed.
PR_THRESHOLDS = np.round(np.linspace(0.01, 0.99, 99), 4)
PRED_COLOR = (0, 200, 0)
GT_COLOR = (40, 90, 255)


class PRAccumulator:
    """Streaming version of :func:`road_seg_perception.metrics.pr_curve` (same 256 bins, same thresholds rule).

    Keeps two histograms instead of every probability map, so long bags need no extra memory.
    """

    bins = 256

    def __init__(self) -> None:
        self.pos = np.zeros(self.bins, np.int64)
        self.neg = np.zeros(self.bins, np.int64)

    def add(self, prob: np.ndarray, label: np.ndarray) -> None:
        valid = label != VOID
        positive = label == 1
        q = np.clip((prob * (self.bins - 1)).round().astype(np.int64), 0, self.bins - 1)
        self.pos += np.bincount(q[valid & positive], minlength=self.bins)
        self.neg += np.bincount(q[valid & ~positive], minlength=self.bins)

    def curve(self, thresholds: np.ndarray = PR_THRESHOLDS) -> dict[str, list[float]]:
        pos_above = np.cumsum(self.pos[::-1])[::-1]
        neg_above = np.cumsum(self.neg[::-1])[::-1]
        total_pos = int(self.pos.sum())
        out: dict[str, list[float]] = {"threshold": [], "precision": [], "recall": [], "f1": []}
        for t in thresholds:
            i = min(max(int(np.ceil(t * (self.bins - 1) - 1e-9)), 0), self.bins - 1)
            tp, fp = int(pos_above[i]), int(neg_above[i])
            prec = tp / (tp + fp) if tp + fp else 1.0
            rec = tp / total_pos if total_pos else 1.0
            out["threshold"].append(float(t))
            out["precision"].append(prec)
            out["recall"].append(rec)
            out["f1"].append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        return out


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
        return row


CSV_FIELDS = ["index", "stamp_ns", "time_s", "frame_id", "width", "height", "scored", "iou", "f1", "precision",
              "recall", "tp", "fp", "fn", "tn", "pre_ms", "infer_ms", "post_ms", "latency_ms", "decode_ms"]


@dataclass
class EvalResult:
    """Everything one evaluation produced; ``metrics`` is what ``metrics.json`` holds."""

    metrics: dict[str, Any]
    frames: list[FrameRow]
    worst: list[WorstFrame]
    report_dir: Path
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # stamp -> mask, only if keep_masks

    def frame_ious(self) -> dict[int, float]:
        """Per-frame IoU by header stamp, for scored frames."""
        return {f.stamp_ns: f.confusion.iou for f in self.frames if f.confusion is not None}

    def write_report(self, live: dict[str, Any] | None = None) -> Path:
        """(Re)write ``report.html``, optionally with a live-replay section."""
        scored = [f for f in self.frames if f.confusion is not None]
        return write_report(self.report_dir / "report.html", self.metrics, [f.time_s for f in scored],
                            [f.confusion.iou for f in scored], self.worst, live)


# --------------------------------------------------------------------------- ground truth sources


class GroundTruth:
    """Ground-truth labels (0/1/VOID) per frame: from a bag topic by stamp, or a mask folder by order."""

    def __init__(self, bag: Path, topics: dict, cfg: EvalConfig, n_images: int):
        self.by_stamp: dict[int, bytes] = {}
        self.files: list[Path] = []
        if cfg.gt_dir is not None:
            from road_seg_perception.training.datasets import IMAGE_EXTS, LabelSpec

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
        for m in iter_messages(bag, [cfg.gt_topic]):
            # PNG keeps long bags' ground truth small in memory; lossless
            ok, buf = cv2.imencode(".png", mono8_array(m.msg))
            self.by_stamp[stamp_ns_of(m.msg)] = buf.tobytes()
        self.source = f"topic {cfg.gt_topic} (matched by header stamp)"

    def label(self, index: int, stamp_ns: int) -> np.ndarray | None:
        if self.files:
            from road_seg_perception.training.datasets import read_label

            return read_label(self.files[index], self.spec)
        png = self.by_stamp.get(stamp_ns)
        if png is None:
            return None
        return label_from_gt_image(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED))


# --------------------------------------------------------------------------- panels and video


def error_image(mask: np.ndarray, label: np.ndarray) -> np.ndarray:
    """RGB error map: green TP, red FP, blue FN, grey void, black TN."""
    pred = mask > 0
    out = np.zeros((*mask.shape, 3), np.uint8)
    out[pred & (label == 1)] = (0, 200, 0)
    out[pred & (label == 0)] = (230, 0, 0)
    out[~pred & (label == 1)] = (40, 90, 255)
    out[label == VOID] = (128, 128, 128)
    return out


def worst_panel(rgb: np.ndarray, mask: np.ndarray, label: np.ndarray, max_width: int = 1200) -> np.ndarray:
    """Prediction overlay | ground-truth overlay | error map, scaled to at most ``max_width``."""
    gt_vis = draw_overlay(rgb, (label == 1).astype(np.uint8) * 255, GT_COLOR, boundary=False)
    gt_vis[label == VOID] = (gt_vis[label == VOID] // 2 + 64).astype(np.uint8)
    panel = side_by_side([draw_overlay(rgb, mask, PRED_COLOR), gt_vis, error_image(mask, label)])
    if panel.shape[1] > max_width:
        s = max_width / panel.shape[1]
        panel = cv2.resize(panel, (max_width, round(panel.shape[0] * s)), interpolation=cv2.INTER_AREA)
    return panel


class VideoSink:
    """Overlay video: mp4 (OpenCV 'mp4v') or, where that cannot be opened, an animated gif."""

    def __init__(self, stem: Path, fps: float):
        self.stem, self.fps = stem, max(fps, 1.0)
        self.size: tuple[int, int] | None = None
        self.writer = None
        self.gif_frames: list[Any] = []
        self.path: Path | None = None

    def add(self, rgb: np.ndarray) -> None:
        if self.size is None:
            self.size = (rgb.shape[1], rgb.shape[0])
            p = self.stem.with_suffix(".mp4")
            w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if w.isOpened():
                self.writer, self.path = w, p
            else:
                w.release()
                p.unlink(missing_ok=True)
                self.path = self.stem.with_suffix(".gif")
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        if self.writer is not None:
            self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        else:
            from PIL import Image

            small = cv2.resize(rgb, (self.size[0] // 2, self.size[1] // 2), interpolation=cv2.INTER_AREA)
            self.gif_frames.append(Image.fromarray(small))

    def close(self) -> Path | None:
        if self.writer is not None:
            self.writer.release()
        elif self.gif_frames and self.path is not None:
            self.gif_frames[0].save(self.path, save_all=True, append_images=self.gif_frames[1:],
                                    duration=round(1000 / self.fps), loop=0)
        return self.path


# --------------------------------------------------------------------------- evaluation


def evaluate_bag(bag: Path | str, report_dir: Path | str, segmenter=None, cfg: EvalConfig | None = None,
                 model: str | Path | None = None, backend: str = "auto", device: str = "auto",
                 post=None, keep_masks: bool = False) -> EvalResult:
    """Run the offline evaluation and write every output into ``report_dir``.

    ``segmenter`` is a ready :class:`RoadSegmenter`; without one, it is opened from ``model``
    (default: the shipped model), ``backend``, ``device`` and ``post``.
    """
    cfg = cfg or EvalConfig()
    if cfg.every_n < 1:
        raise BagError(f"--every-n must be >= 1, got {cfg.every_n}")
    bag = Path(bag)
    topics = read_bag_topics(bag)
    image_topic = cfg.image_topic or default_image_topic(topics)
    img_t = require_topic(bag, topics, image_topic, IMAGE_TYPES, "image", "--image-topic")
    n_images = img_t.count if cfg.limit is None else min(img_t.count, cfg.limit)
    gt = GroundTruth(bag, topics, cfg, img_t.count)
    if segmenter is None:
        from road_seg_perception.core.segmenter import RoadSegmenter

        segmenter = RoadSegmenter(model, backend=backend, device=device, post=post)
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)

    duration_s = _topic_duration_s(bag, image_topic) if img_t.count > 1 else 0.0
    rate_hz = (img_t.count - 1) / duration_s if duration_s > 0 else 10.0
    video = VideoSink(out / "overlay", rate_hz / cfg.every_n) if cfg.video else None
    writer = BagWriter(out / "output_bag", _storage_of(bag), overwrite=True) if cfg.output_bag else None
    if writer is not None:
        writer.add_topic(MASK_TOPIC, IMAGE_TYPE)
        writer.add_topic(OVERLAY_TOPIC, IMAGE_TYPE)

    total = Confusion()
    pr = PRAccumulator()
    rows: list[FrameRow] = []
    worst_heap: list[tuple[float, int, WorstFrame]] = []
    masks: dict[int, np.ndarray] = {}
    t0_stamp: int | None = None
    n_expected = (n_images + cfg.every_n - 1) // cfg.every_n
    it = iter_messages(bag, [image_topic])
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=n_expected, desc="evaluating", unit="frame")
    try:
        for index, m in enumerate(it):
            if cfg.limit is not None and index >= cfg.limit:
                break
            if index % cfg.every_n:
                continue
            stamp = stamp_ns_of(m.msg)
            t0_stamp = stamp if t0_stamp is None else t0_stamp
            td = time.perf_counter()
            rgb = decode_image(m.msg, img_t.msgtype, max_image_pixels())
            decode_ms = (time.perf_counter() - td) * 1e3
            res = segmenter.segment(rgb, with_probability=True)
            label = gt.label(index, stamp)
            c = None
            if label is not None:
                if label.shape != res.mask.shape:
                    raise BagError(f"frame {index} (stamp {stamp}): ground truth is {label.shape[1]}x{label.shape[0]}"
                                   f", image is {rgb.shape[1]}x{rgb.shape[0]}")
                c = confusion(res.mask, label)
                total += c
                pr.add(res.probability, label)
                key = (-c.iou, -index)
                if len(worst_heap) < cfg.worst_k or key > worst_heap[0][:2]:
                    entry = (*key, WorstFrame(index, stamp, (stamp - t0_stamp) / 1e9, c.iou,
                                              worst_panel(rgb, res.mask, label)))
                    if len(worst_heap) < cfg.worst_k:
                        heapq.heappush(worst_heap, entry)
                    else:
                        heapq.heapreplace(worst_heap, entry)
            rows.append(FrameRow(index, stamp, (stamp - t0_stamp) / 1e9, m.msg.header.frame_id, rgb.shape[1],
                                 rgb.shape[0], c, dict(res.timings_ms), decode_ms))
            if keep_masks:
                masks[stamp] = res.mask
            if video is not None or writer is not None:
                overlay = draw_overlay(rgb, res.mask, PRED_COLOR)
                if video is not None:
                    video.add(overlay)
                if writer is not None:
                    fid = m.msg.header.frame_id
                    writer.write(MASK_TOPIC, m.timestamp_ns, image_msg(res.mask, "mono8", stamp, fid))
                    writer.write(OVERLAY_TOPIC, m.timestamp_ns, image_msg(overlay, "rgb8", stamp, fid))
            if bar is not None:
                bar.update(1)
                if c is not None:
                    bar.set_postfix(iou=f"{total.iou:.3f}")
    finally:
        if bar is not None:
            bar.close()
        video_path = video.close() if video is not None else None
        if writer is not None:
            writer.close()
    scored = [r for r in rows if r.confusion is not None]
    if not scored:
        raise BagError(f"no frame of {bag} has ground truth ({gt.source}); nothing to score")

    curve = pr.curve()
    best_f, best_t = max_f(curve)
    lat = [r.latency_ms for r in rows]
    thr = float(segmenter.post.threshold)
    op = pr.curve(np.array([thr]))
    metrics: dict[str, Any] = {
        "bag": str(bag),
        "image_topic": image_topic,
        "ground_truth": gt.source,
        "model": segmenter.info,
        "post": {"threshold": thr, "min_blob_area": int(segmenter.post.min_blob_area),
                 "fill_holes_area": int(segmenter.post.fill_holes_area)},
        "frames": {"in_bag": img_t.count, "considered": n_images, "every_n": cfg.every_n, "processed": len(rows),
                   "scored": len(scored), "without_ground_truth": len(rows) - len(scored)},
        "aggregate": {**total.scores(), "confusion": total.to_dict()},
        "mean_frame_iou": float(np.mean([r.confusion.iou for r in scored])),
        "mean_frame_f1": float(np.mean([r.confusion.f1 for r in scored])),
        "min_frame_iou": float(np.min([r.confusion.iou for r in scored])),
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
        "outputs": {"metrics": str(out / "metrics.json"), "frames_csv": str(out / "frames.csv"),
                    "report": str(out / "report.html"), "video": str(video_path) if video_path else None,
                    "bag": str(out / "output_bag") if writer is not None else None},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    with (out / "frames.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow(r.csv_row())
    worst = [e[2] for e in sorted(worst_heap, key=lambda e: (e[2].iou, e[2].index))]
    result = EvalResult(metrics, rows, worst, out, masks)
    result.write_report()
    return result


def _topic_duration_s(bag: Path, topic: str) -> float:
    """Seconds between the first and last message of ``topic`` (receive timestamps, no deserialising)."""
    from rosbags.rosbag2 import Reader

    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == topic]
        stamps = [t for _, t, _ in r.messages(connections=conns)]
    return (max(stamps) - min(stamps)) / 1e9 if stamps else 0.0


def _storage_of(bag: Path) -> str:
    return "mcap" if any(p.suffix == ".mcap" for p in bag.iterdir()) else "sqlite3"


def score_masks(masks: dict[int, np.ndarray], gt_bag: Path | str, gt_topic: str = GT_TOPIC) -> dict[int, Confusion]:
    """Confusion of each mask (by header stamp) against the ground truth in ``gt_bag``; unmatched stamps skipped."""
    out: dict[int, Confusion] = {}
    for m in iter_messages(gt_bag, [gt_topic]):
        s = stamp_ns_of(m.msg)
        if s in masks:
            out[s] = confusion(masks[s], label_from_gt_image(mono8_array(m.msg)))
    return out


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from road_seg_perception.core.backends import BACKENDS, DEVICES

    p = argparse.ArgumentParser(prog="road-seg-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", metavar="BAG", help="rosbag2 folder (sqlite3 or mcap)")
    p.add_argument("--report", required=True, metavar="DIR", help="output folder for the report and outputs")
    p.add_argument("--image-topic", help="Image or CompressedImage topic (default: /camera/image_raw, "
                                         "else /camera/image_raw/compressed)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gt-topic", default=GT_TOPIC, help=f"mono8 ground-truth topic (default: {GT_TOPIC})")
    g.add_argument("--gt-dir", metavar="DIR", help="folder of masks, matched to frames in name order")
    p.add_argument("--mask-format", choices=("camvid", "kitti", "binary"), default="camvid",
                   help="layout of --gt-dir masks (default: camvid)")
    p.add_argument("--model", metavar="PATH", help="model .onnx or .keras (default: the shipped model)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="inference device (default: auto)")
    p.add_argument("--every-n", type=int, default=1, metavar="N", help="evaluate every N-th frame (default: 1)")
    p.add_argument("--threshold", type=float, default=0.5, help="road probability threshold (default: 0.5)")
    p.add_argument("--min-blob-area", type=int, default=0, help="drop road blobs smaller than this (pixels)")
    p.add_argument("--fill-holes-area", type=int, default=0, help="fill non-road holes up to this size (pixels)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of the bag")
    p.add_argument("--no-video", action="store_true", help="skip the overlay video")
    p.add_argument("--no-bag", action="store_true", help="skip the output bag")
    add_max_pixels_argument(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from road_seg_perception.core.model_io import ModelFileError
    from road_seg_perception.core.segmenter import PostConfig
    from road_seg_perception.training.datasets import DatasetError

    args = parse_args(argv)
    set_max_image_pixels(args.max_image_pixels)  # bag frames and --gt-dir masks, checked before decoding
    cfg = EvalConfig(image_topic=args.image_topic, gt_topic=args.gt_topic,
                     gt_dir=Path(args.gt_dir) if args.gt_dir else None, mask_format=args.mask_format,
                     every_n=args.every_n, limit=args.limit, video=not args.no_video, output_bag=not args.no_bag)
    post = PostConfig(args.threshold, args.min_blob_area, args.fill_holes_area)
    try:
        post.validate()
    except ValueError as e:
        print(f"road-seg-eval: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.model is None:
            from road_seg_perception.core.segmenter import default_model_path

            if not default_model_path().is_file():
                raise ModelFileError(f"the shipped model {default_model_path()} is missing; pass --model PATH")
        r = evaluate_bag(args.bag, args.report, cfg=cfg, model=args.model, backend=args.backend,
                         device=args.device, post=post)
    except (BagError, DatasetError, ModelFileError) as e:
        print(f"road-seg-eval: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    m = r.metrics
    print(f"road IoU (aggregate) {m['aggregate']['iou']:.4f}, mean per-frame IoU {m['mean_frame_iou']:.4f}, "
          f"F1 {m['aggregate']['f1']:.4f}, MaxF {m['maxf']['f']:.4f} @ {m['maxf']['threshold']:.2f}, "
          f"latency p50 {m['latency_ms']['p50']:.1f} ms p95 {m['latency_ms']['p95']:.1f} ms "
          f"over {m['frames']['scored']} frames")
    print(f"report: {r.report_dir / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
