"""The fleet report: one row per bag (worst first), the fleet aggregate, the worst frames across bags.

``write_fleet_report`` writes ``metrics.json``, ``frames.csv`` and ``report.html`` (same style as
the single-bag report) into a staging folder beside ``DIR`` and moves it into place at the end,
so ``DIR`` is never left half written. The aggregate sums the bags' confusion counts (not a mean
of per-bag IoUs); the mean per-bag IoU is given beside it under its own name.
"""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from road_seg_perception.core.metrics import Confusion, PRAccumulator, max_f, percentile
from road_seg_perception.tools.eval_scoring import CSV_FIELDS, PR_THRESHOLDS
from road_seg_perception.tools.fleet_task import BagOutcome
from road_seg_perception.tools.report import CSS, WorstFrame, _f, _figure_uri, _table, jpeg_data_uri

FLEET_CSV_FIELDS = ["bag", *CSV_FIELDS]


def bag_row(o: BagOutcome) -> dict[str, Any]:
    """The report's row for one bag (scores ``None`` for a failed bag)."""
    row: dict[str, Any] = {"name": o.name, "bag": o.bag, "status": "ok" if o.ok else "failed", "error": o.error,
                           "seconds": round(o.seconds, 3), "host": o.host}
    m = o.metrics
    if m is None:
        return row
    agg = m["aggregate"]
    row.update(frames=m["frames"]["processed"], scored=m["frames"]["scored"], iou=agg["iou"],
               precision=agg["precision"], recall=agg["recall"], f1=agg["f1"], mean_frame_iou=m["mean_frame_iou"],
               min_frame_iou=m["min_frame_iou"], maxf=m["maxf"], latency_ms={k: m["latency_ms"][k] for k in
                                                                           ("p50", "p95", "mean")},
               confusion=agg["confusion"])
    if isinstance(m.get("flicker"), dict):
        row["flicker"] = {k: m["flicker"][k] for k in ("mean", "p95", "pairs")}
    return row


def fleet_worst(outcomes: list[BagOutcome], k: int) -> list[tuple[str, WorstFrame]]:
    """The ``k`` lowest-IoU frames across all bags (ties: bag path, then frame index)."""
    cands = [(w.iou, o.bag, w.index, o.name, w) for o in outcomes if o.ok for w in o.worst]
    cands.sort(key=lambda c: c[:3])
    return [(c[3], c[4]) for c in cands[:k]]


def fleet_metrics(outcomes: list[BagOutcome], run_info: dict[str, Any], worst_k: int = 8) -> dict[str, Any]:
    """What ``metrics.json`` holds: run settings, aggregate, per-bag rows worst first, worst frames."""
    ok = [o for o in outcomes if o.ok]
    total = Confusion()
    pr = PRAccumulator()
    for o in ok:
        total += o.confusion
        if o.pr is not None:
            pr.pos += o.pr.pos
            pr.neg += o.pr.neg
    best_f, best_t = max_f(pr.curve(PR_THRESHOLDS)) if ok else (None, None)
    lat = [r.latency_ms for o in ok for r in o.frames]
    flick = [r.flicker for o in ok for r in o.frames if getattr(r, "flicker", None) is not None]
    rows = [bag_row(o) for o in outcomes]
    failed = [r for r in rows if r["status"] != "ok"]
    scored = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (r["iou"], r["name"]))
    n_frames = sum(r["frames"] for r in scored)
    n_scored = sum(r["scored"] for r in scored)
    return {
        "run": run_info,
        "bags_total": len(outcomes),
        "bags_failed": len(failed),
        "frames": {"processed": n_frames, "scored": n_scored},
        "aggregate": {**total.scores(), "confusion": total.to_dict(),
                      "note": "confusion summed over every scored pixel of every bag, void excluded"},
        "maxf": {"f": best_f, "threshold": best_t,
                 "note": "best F over thresholds of the pixel histograms pooled over all bags"},
        "mean_bag_iou": float(np.mean([r["iou"] for r in scored])) if scored else None,
        "latency_ms": {"p50": percentile(lat, 50), "p95": percentile(lat, 95)} if lat else None,
        "flicker": {"mean": float(np.mean(flick)), "p95": percentile(flick, 95), "pairs": len(flick),
                    "note": "over every consecutive frame pair of every bag"} if flick else None,
        "task_seconds": {"sum": round(sum(o.seconds for o in outcomes), 3),
                         "max": round(max((o.seconds for o in outcomes), default=0.0), 3)},
        "label_next": [r["name"] for r in scored],
        "bags": failed + scored,
        "worst_frames": [{"bag": name, "index": w.index, "stamp_ns": w.stamp_ns, "time_s": w.time_s, "iou": w.iou}
                         for name, w in fleet_worst(outcomes, worst_k)],
    }


def bag_iou_plot(rows: list[dict[str, Any]], aggregate_iou: float) -> str:
    """Per-bag IoU, worst at the top, with the fleet aggregate, as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows][::-1]
    ious = [r["iou"] for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(8, min(40.0, 1.0 + 0.25 * len(rows))))
    ax.barh(names, ious, color="#4a8")
    ax.axvline(aggregate_iou, color="k", ls="--", lw=1, label=f"aggregate IoU {aggregate_iou:.3f}")
    ax.set_xlim(max(0.0, min([*ious, aggregate_iou], default=0.0) - 0.05), 1.0)
    ax.set_xlabel("road IoU of the bag (aggregate over its frames)")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="lower right", fontsize=8)
    return _figure_uri(fig)


def _bag_table(rows: list[dict[str, Any]]) -> str:
    flicker = any(r.get("flicker") and r["flicker"]["mean"] is not None for r in rows)
    head = ["#", "bag", "frames", "road IoU", "precision", "recall", "F1", "mean frame IoU", "min frame IoU",
            "latency p50 / p95 (ms)", *(["flicker mean / p95"] if flicker else []), "task s", "host"]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for i, r in enumerate(rows, 1):
        cells = [str(i), f"<span title='{html.escape(r['bag'])}'>{html.escape(r['name'])}</span>", str(r["frames"]),
                 _f(r["iou"]), _f(r["precision"]), _f(r["recall"]), _f(r["f1"]), _f(r["mean_frame_iou"]),
                 _f(r["min_frame_iou"]), f"{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p95']:.1f}",
                 *([_flicker_cell(r.get("flicker"))] if flicker else []),
                 f"{r['seconds']:.1f}", html.escape(r["host"])]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def _flicker_cell(f: dict[str, Any] | None) -> str:
    if not f or f["mean"] is None:
        return "-"
    return f"{f['mean']:.4f} / {f['p95']:.4f}"


def render_fleet_report(metrics: dict[str, Any], worst: list[tuple[str, WorstFrame]]) -> str:
    """The fleet report as one HTML string."""
    agg = metrics["aggregate"]
    run = metrics["run"]
    ok_rows = [r for r in metrics["bags"] if r["status"] == "ok"]
    failed = [r for r in metrics["bags"] if r["status"] != "ok"]
    where = f"Ray at {run['ray_address']}" if run.get("ray_address") else "local Ray" if run["workers"] else \
        "in process"
    summary = [
        ("bags", f"{metrics['bags_total']} given, {len(ok_rows)} scored, {len(failed)} failed"),
        ("frames", f"{metrics['frames']['processed']} processed, {metrics['frames']['scored']} scored"),
        ("model", str(run["model"])),
        ("road IoU (aggregate: confusion summed over all bags, void excluded)", _f(agg["iou"])),
        ("F1 / precision / recall (aggregate)", f"{_f(agg['f1'])} / {_f(agg['precision'])} / {_f(agg['recall'])}"),
        ("MaxF (best F over thresholds, pooled)",
         f"{_f(metrics['maxf']['f'])} at threshold {metrics['maxf']['threshold']:.2f}" if ok_rows else "-"),
        ("mean per-bag IoU", _f(metrics["mean_bag_iou"]) if metrics["mean_bag_iou"] is not None else "-"),
        ("threshold used", _f(run["post"]["threshold"], 2)),
    ]
    if metrics["latency_ms"]:
        summary.append(("latency pre+infer+post p50 / p95 (all frames)",
                        f"{metrics['latency_ms']['p50']:.1f} ms / {metrics['latency_ms']['p95']:.1f} ms"))
    if metrics.get("flicker"):
        summary.append(("flicker mean / p95 (share of pixels changed between consecutive frames)",
                        _flicker_cell(metrics["flicker"])))
    summary.append(("run", f"{run['workers']} worker(s), {where}, {run['threads_per_worker']} inference thread(s) "
                           f"each; wall {run['wall_s']:.1f} s, {metrics['task_seconds']['sum']:.1f} s summed "
                           "over bags"))
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Road segmentation fleet report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>Road segmentation: fleet evaluation report</h1>", "<h2>Summary</h2>", _table(summary)]
    if failed:
        parts.append("<h2>Bags that failed</h2><table><tr><th>bag</th><th>error</th></tr>" + "".join(
            f"<tr><td>{html.escape(r['bag'])}</td><td>{html.escape(r['error'] or '')}</td></tr>" for r in failed)
            + "</table>")
    if ok_rows:
        parts += ["<h2>Bags, worst first (the ones to label next)</h2>",
                  "<p class='note'>Each bag's scores sum the confusion over its own frames.</p>",
                  _bag_table(ok_rows),
                  f"<img alt='IoU per bag' src='{bag_iou_plot(ok_rows, agg['iou'])}'>",
                  "<h2>Worst frames across the fleet</h2>",
                  "<p class='note'>Left: prediction overlay (green). Middle: ground truth (blue, void grey). "
                  "Right: errors (green true positive, red false positive, blue false negative, grey void).</p>"]
        for name, w in worst:
            parts.append(f"<h3>{html.escape(name)}, frame {w.index} (t = {w.time_s:.3f} s, stamp {w.stamp_ns}): "
                         f"IoU {w.iou:.4f}</h3><img alt='{html.escape(name)} frame {w.index}' "
                         f"src='{jpeg_data_uri(w.panel)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_fleet_report(out: Path, outcomes: list[BagOutcome], run_info: dict[str, Any], worst_k: int = 8
                       ) -> dict[str, Any]:
    """Write ``metrics.json``, ``frames.csv`` and ``report.html`` into ``out`` (replaced whole); return the metrics."""
    out = Path(out)
    metrics = fleet_metrics(outcomes, run_info, worst_k)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        with (stage / "frames.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=FLEET_CSV_FIELDS)
            w.writeheader()
            for o in outcomes:
                for r in o.frames:
                    w.writerow({"bag": o.name, **r.csv_row()})
        (stage / "report.html").write_text(render_fleet_report(metrics, fleet_worst(outcomes, worst_k)),
                                           encoding="utf-8")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        stage.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return metrics
