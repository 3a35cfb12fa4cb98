"""Temporal smoothing on the CamVid val stretch (101 frames of drive 0016E5 at 15 Hz): flicker vs IoU vs lag.

    ROAD_SEG_CAMVID=DIR python bench/temporal_tradeoff.py [--model M] [--alphas 0.8,0.6,0.5,0.4,0.3]
                                                          [--out out/temporal] [--figure docs/temporal_tradeoff.png]

Builds the val bag as ``road-seg-bag`` does (``OUT/camvid_val_bag``), runs ``road-seg-eval``'s
:func:`evaluate_bag` once without smoothing and once per ``alpha``, and reports for each:

* road IoU (aggregate and mean per frame) and flicker (mean, p95) as ``road-seg-eval`` prints them;
* spurious flicker: flicker counted only where the ground truth did not change between the two
  frames (both labelled, not void): label changes that no scene change explains;
* IoU on the fastest-changing frames: the tenth of frames whose ground truth changes most from the
  previous frame (the camera turning or passing something), where lag would hurt first;
* lag: the shift k (frames) at which the smoothed masks agree best with the unsmoothed ones k frames
  earlier, with sub-frame precision from a parabola through the best three shifts (so "off" reads
  0), and the EMA's mean delay (1 - alpha) / alpha frames for reference.

Writes ``OUT/tradeoff.json`` and a figure (flicker and IoU against alpha; flicker over time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from road_seg_perception.core.metrics import Confusion, confusion
from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.core.temporal import flicker
from road_seg_perception.tools.evaluate import EvalConfig, evaluate_bag

RATE_HZ = 15.0
MAX_SHIFT = 4


def labels_of(camvid: Path) -> list[np.ndarray]:
    from road_seg_perception.training.datasets import LabelSpec, read_label

    spec = LabelSpec(format="camvid")
    return [read_label(p, spec) for p in sorted((camvid / "valannot").iterdir()) if p.suffix == ".png"]


def lag_frames(smoothed: list[np.ndarray], raw: list[np.ndarray]) -> tuple[float, dict[int, float]]:
    """Shift k maximising the mean IoU of smoothed[t] with raw[t - k], sub-frame by a parabola through the best
    three shifts (k from -MAX_SHIFT to MAX_SHIFT: an unbiased peak needs shifts on both sides), and the curve."""
    shifts = list(range(-MAX_SHIFT, MAX_SHIFT + 1))
    ts = range(MAX_SHIFT, len(raw) - MAX_SHIFT)
    curve = {k: float(np.mean([confusion(smoothed[t], (raw[t - k] > 0).astype(np.uint8)).iou for t in ts]))
             for k in shifts}
    i = max(shifts, key=curve.get)
    if -MAX_SHIFT < i < MAX_SHIFT:
        a, b, c = curve[i - 1], curve[i], curve[i + 1]
        d = a - 2 * b + c
        return (i + 0.5 * (a - c) / d if d else float(i)), curve
    return float(i), curve


def run(bag: Path, camvid: Path, out: Path, alphas: list[float], model: str | None) -> dict[str, Any]:
    from road_seg_perception.core.segmenter import RoadSegmenter

    seg = RoadSegmenter(model)
    labels = labels_of(camvid)
    gt_change = [None] + [flicker(labels[t - 1] == 1, labels[t] == 1, (labels[t] != VOID) & (labels[t - 1] != VOID))
                          for t in range(1, len(labels))]
    ranked = sorted(range(1, len(labels)), key=lambda t: -gt_change[t])
    fast = sorted(ranked[: max(1, len(ranked) // 10)])
    print(f"ground truth: {100 * float(np.mean(gt_change[1:])):.2f} % of pixels change between consecutive frames")
    res: dict[str, Any] = {"bag": str(bag), "model": seg.info, "frames": len(labels),
                           "fast_frames": fast, "gt_change_mean": float(np.mean(gt_change[1:])), "runs": {}}
    raw_masks: list[np.ndarray] | None = None
    for alpha in [None, *alphas]:
        name = "off" if alpha is None else f"alpha {alpha:g}"
        cfg = EvalConfig(progress=False, video=False, output_bag=False, temporal_smoothing=alpha is not None,
                         temporal_alpha=alpha or 0.5)
        r = evaluate_bag(bag, out / name.replace(" ", "_"), segmenter=seg, cfg=cfg, keep_masks=True)
        masks = [r.masks[f.stamp_ns] for f in r.frames]
        if raw_masks is None:
            raw_masks = masks
        total = sum((confusion(masks[t], labels[t]) for t in fast), start=Confusion())
        lag, curve = lag_frames(masks, raw_masks)
        spurious = [flicker(masks[t - 1], masks[t], (labels[t] != VOID) & (labels[t - 1] != VOID)
                            & ((labels[t] == 1) == (labels[t - 1] == 1))) for t in range(1, len(labels))]
        m = r.metrics
        res["runs"][name] = {
            "alpha": alpha, "iou": m["aggregate"]["iou"], "mean_frame_iou": m["mean_frame_iou"],
            "flicker_mean": m["flicker"]["mean"], "flicker_p95": m["flicker"]["p95"],
            "spurious_flicker_mean": float(np.mean(spurious)),
            "spurious_flicker_p95": float(np.percentile(spurious, 95)),
            "iou_fast_frames": total.iou, "lag_frames": lag, "lag_ms": 1000 * lag / RATE_HZ,
            "ema_mean_delay_frames": 0.0 if alpha is None else (1 - alpha) / alpha, "lag_curve": curve,
            "flicker_series": [(f.time_s, f.flicker) for f in r.frames if f.flicker is not None],
        }
        row = res["runs"][name]
        print(f"{name:>10}: IoU {row['iou']:.4f} (mean per frame {row['mean_frame_iou']:.4f}), flicker mean "
              f"{100 * row['flicker_mean']:.2f} % p95 {100 * row['flicker_p95']:.2f} % (spurious "
              f"{100 * row['spurious_flicker_mean']:.2f} % / {100 * row['spurious_flicker_p95']:.2f} %), IoU on the "
              f"{len(fast)} fastest-changing frames {row['iou_fast_frames']:.4f}, lag {row['lag_frames']:.2f} frames "
              f"({row['lag_ms']:.0f} ms)", flush=True)
    return res


def figure(res: dict[str, Any], path: Path, highlight: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = res["runs"]
    names = list(runs)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1.4]})
    x = np.arange(len(names))
    a1.plot(x, [100 * runs[n]["flicker_mean"] for n in names], "o-", color="tab:orange", label="flicker mean (%)")
    a1.plot(x, [100 * runs[n]["flicker_p95"] for n in names], "s--", color="tab:orange", alpha=0.6,
            label="flicker p95 (%)")
    a1.set_xticks(x, names, fontsize=8)
    a1.set_ylabel("pixels changed per frame (%)")
    a1.set_ylim(bottom=0)
    b1 = a1.twinx()
    b1.plot(x, [runs[n]["iou"] for n in names], "^-", color="tab:green", label="road IoU")
    b1.plot(x, [runs[n]["iou_fast_frames"] for n in names], "v:", color="tab:green", label="IoU, fastest-changing")
    b1.set_ylabel("road IoU")
    h1, l1 = a1.get_legend_handles_labels()
    h2, l2 = b1.get_legend_handles_labels()
    a1.legend(h1 + h2, l1 + l2, fontsize=7, loc="center left")
    a1.set_title("CamVid val, 15 Hz: smoothing against flicker and IoU", fontsize=9)
    for n in ("off", highlight):
        if n in runs:
            t, f = zip(*runs[n]["flicker_series"], strict=True)
            label = f"{n} (mean {100 * runs[n]['flicker_mean']:.2f} %)"
            a2.plot(t, [100 * v for v in f], ".-", lw=1, ms=3, label=label)
    a2.set_xlabel("bag time (s)")
    a2.set_ylabel("pixels changed (%)")
    a2.set_ylim(bottom=0)
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    a2.set_title("flicker per frame", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from road_seg_perception.tools.bag import make_bag
    from road_seg_perception.training.datasets import default_camvid_root

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--camvid", type=Path, default=default_camvid_root(), help="CamVid folder (val/, valannot/)")
    p.add_argument("--model", default=None, help="model (default: the shipped one)")
    p.add_argument("--alphas", default="0.8,0.6,0.5,0.4,0.3", help="comma list of temporal_alpha values")
    p.add_argument("--out", type=Path, default=Path("out/temporal"), help="output folder")
    p.add_argument("--figure", type=Path, default=Path("docs/temporal_tradeoff.png"), help="figure to write")
    p.add_argument("--highlight", default="alpha 0.6", help="run drawn beside 'off' over time (the default)")
    a = p.parse_args(argv)
    if not (a.camvid / "val").is_dir():
        print(f"temporal_tradeoff: CamVid not found at {a.camvid} (set ROAD_SEG_CAMVID or --camvid)", file=sys.stderr)
        return 2
    bag = a.out / "camvid_val_bag"
    if not bag.is_dir():
        make_bag(a.camvid / "val", bag, a.camvid / "valannot", rate=RATE_HZ)
    res = run(bag, a.camvid, a.out, [float(x) for x in a.alphas.split(",")], a.model)
    (a.out / "tradeoff.json").write_text(json.dumps(res, indent=2))
    figure(res, a.figure, a.highlight)
    print(f"wrote {a.out / 'tradeoff.json'} and {a.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
