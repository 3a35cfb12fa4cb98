"""``road-seg-eval``: offline replay evaluation of a rosbag2 file, with no ROS graph.

    road-seg-eval BAG --report DIR [--image-topic T] [--gt-topic T | --gt-dir DIR [--mask-format F]]
                  [--model M] [--backend B] [--device D] [--every-n N] [--threshold T] [--limit N]
                  [--[no-]temporal-smoothing] [--temporal-alpha A] [--temporal-reset-gap S]

Each image of the bag goes through the same :class:`~road_seg_perception.core.segmenter.RoadSegmenter`
the node uses. Ground truth comes from a mono8 topic (255 road, 0 not road, 128 void; the default
``/road_seg/ground_truth`` that ``road-seg-bag`` writes), matched by header stamp, or from a mask
folder matched to the frames in name order. ``DIR`` receives:

* ``metrics.json``: aggregate IoU/F1/precision/recall (confusion summed over every pixel of every
  scored frame, void excluded), mean per-frame IoU, MaxF with its threshold, the PR curve,
  latency p50/p95 of pre-processing + inference + post-processing, flicker mean/p95 (share of
  pixels whose label changed since the previous processed frame, void excluded);
* ``frames.csv``: one row per processed frame;
* ``report.html``: self-contained report (summary, IoU over time, PR curve, worst frames);
* ``overlay.mp4`` (or ``overlay.gif`` where no mp4 encoder exists);
* ``output_bag/``: ``/road_mask`` (mono8) and ``/road_overlay`` (rgb8) with the inputs' headers.

Outputs are written into a fresh hidden folder inside ``DIR`` and moved into place only when the
evaluation completed: a failed or interrupted run leaves the previous outputs as they were, and a
complete run replaces every one of them (stale ones from an earlier run, such as a
``live_metrics.json``, are removed). Files in ``DIR`` are replaced by rename, so a symbolic link
there is replaced, never written through. The input bag and ground-truth folder may not be, hold
or lie inside any of these outputs.

A missing or misnamed topic exits with status 2 and lists the topics the bag has.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from road_seg_perception.bagio.bag import (
    EXIT_USAGE,
    GT_TOPIC,
    BagError,
    check_not_overlapping,
    iter_messages,
    mono8_array,
    stamp_ns_of,
    written_by_us,
)
from road_seg_perception.core.cli_errors import EXIT_INTERRUPTED, EXIT_RUNTIME, fail
from road_seg_perception.core.imageio import add_max_pixels_argument, pixel_limit
from road_seg_perception.core.metrics import Confusion, confusion, label_from_gt_image
from road_seg_perception.core.model_io import ModelFileError
from road_seg_perception.core.segmenter import PostConfig, RoadSegmenter, default_model_path
from road_seg_perception.tools.eval_args import add_eval_args
from road_seg_perception.tools.eval_outputs import (
    MASK_TOPIC,
    OVERLAY_TOPIC,
    OutputStreams,
    WorstFrames,
    write_frames_csv,
)
from road_seg_perception.tools.eval_scoring import EvalConfig, FrameRow, build_metrics, open_bag, score_frames
from road_seg_perception.tools.report import WorstFrame, write_report
from road_seg_perception.training.datasets import DatasetError

__all__ = ["MASK_TOPIC", "OVERLAY_TOPIC", "EvalConfig", "EvalResult", "evaluate_bag", "score_masks", "main"]

#: Everything road-seg-eval (and the demo, ``live_metrics.json``) writes into a report folder; a complete
#: run replaces all of them, and nothing else in the folder is touched.
OUTPUT_NAMES = ("metrics.json", "frames.csv", "report.html", "overlay.mp4", "overlay.gif", "output_bag",
                "live_metrics.json")


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
        paired = [f for f in self.frames if f.flicker is not None]
        return write_report(self.report_dir / "report.html", self.metrics, [f.time_s for f in scored],
                            [f.confusion.iou for f in scored], self.worst, live,
                            ([f.time_s for f in paired], [f.flicker for f in paired]))


# --------------------------------------------------------------------------- evaluation


def evaluate_bag(bag: Path | str, report_dir: Path | str, segmenter=None, cfg: EvalConfig | None = None,
                 model: str | Path | None = None, backend: str = "auto", device: str = "auto",
                 post=None, keep_masks: bool = False, flip_average: bool = False) -> EvalResult:
    """Run the offline evaluation and write every output into ``report_dir``.

    ``segmenter`` is a ready :class:`RoadSegmenter`; without one, it is opened from ``model``
    (default: the shipped model), ``backend``, ``device``, ``post`` and ``flip_average``.
    """
    cfg = cfg or EvalConfig()
    bag = Path(bag)
    out = Path(report_dir)
    check_report_dir(out, [bag] + ([Path(cfg.gt_dir)] if cfg.gt_dir is not None else []))
    score, gt = open_bag(bag, cfg)
    if segmenter is None:
        segmenter = RoadSegmenter(model, backend=backend, device=device, post=post, flip_average=flip_average)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".eval-partial-", dir=out))
    try:
        metrics, worst, masks = _evaluate_into(stage, out, score, gt, segmenter, cfg, keep_masks)
        EvalResult(metrics, score.rows, worst, stage).write_report()
        _move_into_place(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return EvalResult(metrics, score.rows, worst, out, masks)


def _evaluate_into(stage: Path, out: Path, score, gt, segmenter, cfg: EvalConfig, keep_masks: bool):
    """Score every frame and write metrics, CSV, video and output bag into ``stage`` (paths named as in ``out``)."""
    streams = OutputStreams(stage, score.rate_hz / cfg.every_n, _storage_of(score.bag), cfg.video, cfg.output_bag)
    worst = WorstFrames(cfg.worst_k)
    masks: dict[int, np.ndarray] = {}
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=(score.considered + cfg.every_n - 1) // cfg.every_n, desc="evaluating", unit="frame")
    try:
        for f in score_frames(score, gt, segmenter, cfg):
            r = f.row
            if r.confusion is not None:
                worst.add(r.index, r.stamp_ns, r.time_s, r.confusion, f.rgb, f.mask, f.label)
            if keep_masks:
                masks[r.stamp_ns] = f.mask
            streams.add(f.receive_ns, r.stamp_ns, r.frame_id, f.rgb, f.mask)
            if bar is not None:
                bar.update(1)
                if r.confusion is not None:
                    bar.set_postfix(iou=f"{score.split.total.iou:.3f}")
    finally:
        if bar is not None:
            bar.close()
        streams.close()
    metrics = build_metrics(score, segmenter, cfg)
    metrics["outputs"] = {"metrics": str(out / "metrics.json"), "frames_csv": str(out / "frames.csv"),
                          "report": str(out / "report.html"),
                          "video": str(out / streams.video_path.name) if streams.video_path else None,
                          "bag": str(out / "output_bag") if cfg.output_bag else None}
    (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_frames_csv(stage / "frames.csv", score.rows)
    return metrics, worst.sorted(), masks


def check_report_dir(out: Path, inputs: list[Path]) -> None:
    """:class:`BagError` unless ``out`` can take the outputs: a folder (or nothing yet) whose output paths
    overlap no input, whose ``output_bag`` (if any) is a bag this package wrote or an empty folder, and
    whose other output names are no folders."""
    if out.exists() and not out.is_dir():
        raise BagError(f"report folder {out} exists and is not a folder")
    for src in inputs:
        if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
            raise BagError(f"report folder {out} lies inside the input {src}; choose a folder outside it")
        for name in OUTPUT_NAMES:
            check_not_overlapping(src, out / name)
    old_bag = out / "output_bag"
    if old_bag.exists() or old_bag.is_symlink():
        if old_bag.is_symlink() or not (written_by_us(old_bag) or (old_bag.is_dir() and not any(old_bag.iterdir()))):
            raise BagError(f"refusing to replace {old_bag}: it is not a rosbag2 bag written by road_seg_perception")
    for name in OUTPUT_NAMES:
        p = out / name
        if name != "output_bag" and p.is_dir() and not p.is_symlink():
            raise BagError(f"refusing to replace {p}: it is a folder, not a file this tool wrote")


def _move_into_place(stage: Path, out: Path) -> None:
    """Replace every output in ``out`` by the staged one (or remove it if this run made none)."""
    for name in OUTPUT_NAMES:
        new, old = stage / name, out / name
        if name == "output_bag" and old.is_dir() and not old.is_symlink():  # checked by check_report_dir
            trash = Path(tempfile.mkdtemp(prefix=".eval-old-", dir=out))
            old.rename(trash / name)
            shutil.rmtree(trash)
        if new.exists():
            new.replace(old)  # a file or link at ``old`` is replaced, never followed
        elif old.is_symlink() or old.exists():
            old.unlink()


def _storage_of(bag: Path) -> str:
    return "mcap" if any(p.suffix == ".mcap" for p in bag.iterdir()) else "sqlite3"


def score_masks(masks: dict[int, np.ndarray], gt_bag: Path | str, gt_topic: str = GT_TOPIC) -> dict[int, Confusion]:
    """Confusion of each mask (by header stamp) against the ground truth in ``gt_bag``; unmatched stamps skipped.

    Ground truth with duplicate stamps is refused: masks matched by stamp could not be paired."""
    out: dict[int, Confusion] = {}
    seen: set[int] = set()
    for m in iter_messages(gt_bag, [gt_topic]):
        s = stamp_ns_of(m.msg)
        if s in seen:
            raise BagError(f"ground truth {gt_topic} in {gt_bag} has a duplicate header stamp {s}; masks matched by "
                           "stamp cannot be paired with it")
        seen.add(s)
        if s in masks:
            out[s] = confusion(masks[s], label_from_gt_image(mono8_array(m.msg)))
    return out


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="road-seg-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", metavar="BAG", help="rosbag2 folder (sqlite3 or mcap)")
    p.add_argument("--report", required=True, metavar="DIR", help="output folder for the report and outputs")
    add_eval_args(p)
    p.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    add_max_pixels_argument(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with pixel_limit(args.max_image_pixels):  # bag frames and --gt-dir masks, checked before decoding
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    cfg = EvalConfig(image_topic=args.image_topic, gt_topic=args.gt_topic,
                     gt_dir=Path(args.gt_dir) if args.gt_dir else None, mask_format=args.mask_format,
                     every_n=args.every_n, limit=args.limit, video=not args.no_video, output_bag=not args.no_bag,
                     temporal_smoothing=args.temporal_smoothing, temporal_alpha=args.temporal_alpha,
                     temporal_reset_gap_s=args.temporal_reset_gap)
    post = PostConfig(args.threshold, args.min_blob_area, args.fill_holes_area)
    try:
        post.validate()
    except ValueError as e:
        return fail("road-seg-eval", e, EXIT_USAGE, args.debug)
    try:
        if args.model is None:

            if not default_model_path().is_file():
                raise ModelFileError(f"the shipped model {default_model_path()} is missing; pass --model PATH")
        r = evaluate_bag(args.bag, args.report, cfg=cfg, model=args.model, backend=args.backend,
                         device=args.device, post=post, flip_average=args.flip_average)
    except (BagError, DatasetError, ModelFileError) as e:
        return fail("road-seg-eval", e, EXIT_USAGE, args.debug)
    except KeyboardInterrupt:
        print(f"road-seg-eval: interrupted; {args.report} holds its previous outputs, if any", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a runtime failure: one line, the traceback only with --debug
        return fail("road-seg-eval", e, EXIT_RUNTIME, args.debug)
    m = r.metrics
    print(f"road IoU (aggregate) {m['aggregate']['iou']:.4f}, mean per-frame IoU {m['mean_frame_iou']:.4f}, "
          f"F1 {m['aggregate']['f1']:.4f}, MaxF {m['maxf']['f']:.4f} @ {m['maxf']['threshold']:.2f}, "
          f"latency p50 {m['latency_ms']['p50']:.1f} ms p95 {m['latency_ms']['p95']:.1f} ms "
          f"over {m['frames']['scored']} frames" + (f" ({m['frames']['bad']} bad frames not scored)"
                                                   if m["frames"]["bad"] else ""))
    fl = m["flicker"]
    if fl["pairs"]:
        print(f"flicker mean {100 * fl['mean']:.2f} % p95 {100 * fl['p95']:.2f} % of pixels over {fl['pairs']} "
              "consecutive frame pairs, temporal smoothing "
              + (f"on (alpha {cfg.temporal_alpha})" if cfg.temporal_smoothing else "off"))
    print(f"report: {r.report_dir / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
