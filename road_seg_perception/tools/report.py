"""Self-contained HTML evaluation report: summary table, IoU over time, PR curve, worst frames.

Every figure is a PNG embedded as a base64 ``data:`` URI, so ``report.html`` can be mailed or
attached to an issue on its own. Rendering only: the numbers come from the evaluator.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from road_seg_perception.core.fileio import atomic_write_text


@dataclass
class WorstFrame:
    """A frame shown in the worst-frames section: an RGB panel and its scores."""

    index: int
    stamp_ns: int
    time_s: float  # since the first processed frame
    iou: float
    panel: np.ndarray


def png_data_uri(rgb: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an RGB uint8 image."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("png encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def jpeg_data_uri(rgb: np.ndarray, quality: int = 85) -> str:
    """``data:image/jpeg;base64,...`` of an RGB uint8 image (photos: far smaller than PNG)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("jpeg encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def iou_plot(times_s: list[float], ious: list[float], aggregate_iou: float, live: dict[str, list[float]] | None = None
             ) -> str:
    """Per-frame IoU over bag time (offline, plus live if given) as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(times_s, ious, ".-", lw=1, ms=3, label="offline per-frame IoU")
    if live and live.get("time_s"):
        ax.plot(live["time_s"], live["iou"], "x", ms=4, label="live replay per-frame IoU")
    ax.axhline(aggregate_iou, color="k", ls="--", lw=1, label=f"aggregate IoU {aggregate_iou:.3f}")
    ax.set_xlabel("bag time (s)")
    ax.set_ylabel("road IoU")
    lo = min([*ious, aggregate_iou], default=0.0)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _figure_uri(fig)


def flicker_plot(times_s: list[float], flicker: list[float], mean: float, p95: float) -> str:
    """Per-frame flicker (share of pixels whose label changed since the previous frame) over bag time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.plot(times_s, [100 * f for f in flicker], ".-", lw=1, ms=3, color="tab:orange", label="flicker per frame")
    ax.axhline(100 * mean, color="k", ls="--", lw=1, label=f"mean {100 * mean:.2f} %")
    ax.axhline(100 * p95, color="k", ls=":", lw=1, label=f"p95 {100 * p95:.2f} %")
    ax.set_xlabel("bag time (s)")
    ax.set_ylabel("pixels changed (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _figure_uri(fig)


def pr_plot(curve: dict[str, list[float]], maxf: float, maxf_threshold: float, operating: dict[str, float]) -> str:
    """Precision-recall curve with the MaxF point and the operating threshold, as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(curve["recall"], curve["precision"], "-", lw=1.5, label="PR over thresholds")
    i = int(np.argmax(curve["f1"]))
    ax.plot(curve["recall"][i], curve["precision"][i], "o", label=f"MaxF {maxf:.3f} @ {maxf_threshold:.2f}")
    ax.plot(operating["recall"], operating["precision"], "s",
            label=f"operating point @ {operating['threshold']:.2f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _figure_uri(fig)


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{body}</table>"


def _f(x: Any, digits: int = 4) -> str:
    """Floats: ``digits`` decimals below 10 (scores), one decimal above (rates, milliseconds)."""
    if not isinstance(x, float):
        return str(x)
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.{digits}f}"


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.25em .8em;border:1px solid #ddd;text-align:left}
table.kv th{background:#f5f5f5;font-weight:600}img{max-width:100%}.note{color:#666;font-size:.9em}
"""


def render_report(metrics: dict[str, Any], times_s: list[float], ious: list[float], worst: list[WorstFrame],
                  live: dict[str, Any] | None = None,
                  flicker: tuple[list[float], list[float]] | None = None) -> str:
    """The report as one HTML string; ``flicker`` is (times, per-frame flicker) for its plot."""
    agg = metrics["aggregate"]
    lat = metrics["latency_ms"]
    fr = metrics["frames"]
    rows = [
        ("bag", metrics["bag"]),
        ("image topic", metrics["image_topic"]),
        ("ground truth", metrics["ground_truth"]),
        ("model", f"{metrics['model']['model']} ({metrics['model']['backend']}, {metrics['model']['device']}, "
                  f"input {metrics['model']['input_size']})"),
        ("frames", f"{fr['in_bag']} in bag, {fr['processed']} processed (every {fr['every_n']}), "
                   f"{fr['scored']} scored, {fr['without_ground_truth']} without ground truth, "
                   f"{fr.get('bad', 0)} bad (undecodable, not scored)"),
        ("road IoU (aggregate: summed over all pixels, void excluded)", _f(agg["iou"])),
        ("mean per-frame IoU", _f(metrics["mean_frame_iou"])),
        ("F1 / precision / recall (aggregate)", f"{_f(agg['f1'])} / {_f(agg['precision'])} / {_f(agg['recall'])}"),
        ("MaxF (best F over thresholds)",
         f"{_f(metrics['maxf']['f'])} at threshold {metrics['maxf']['threshold']:.2f}"),
        ("threshold used", _f(metrics["post"]["threshold"], 2)),
        ("latency pre+infer+post p50 / p95", f"{lat['p50']:.1f} ms / {lat['p95']:.1f} ms"),
        ("throughput offline (1000 / mean latency)", f"{metrics['fps_offline']:.1f} frames/s"),
    ]
    fl, ts = metrics.get("flicker") or {}, metrics.get("temporal_smoothing") or {}
    if fl.get("pairs"):
        rows.append(("flicker mean / p95 (pixels changed between consecutive frames)",
                     f"{100 * fl['mean']:.2f} % / {100 * fl['p95']:.2f} % over {fl['pairs']} frame pairs"))
    if ts:
        rows.append(("temporal smoothing", f"on (alpha {ts['alpha']}, reset after {ts['reset_gap_s']} s)"
                     if ts.get("enabled") else "off"))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Road segmentation report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>Road segmentation: replay evaluation report</h1>",
             "<h2>Summary (offline replay)</h2>", _table(rows)]
    if live:
        parts += ["<h2>Live replay through the node</h2>", _table([(k, _f(v)) for k, v in live["summary"].items()])]
        if live.get("note"):
            parts.append(f"<p class='note'>{html.escape(live['note'])}</p>")
    parts += ["<h2>IoU over time</h2>",
              f"<img alt='IoU over time' src='{iou_plot(times_s, ious, agg['iou'], (live or {}).get('series'))}'>",
              *(["<h2>Flicker over time</h2>",
                 f"<img alt='flicker over time' src='{flicker_plot(*flicker, fl['mean'], fl['p95'])}'>"]
                if flicker and flicker[0] and fl.get("pairs") else []),
              "<h2>Precision-recall curve</h2>",
              f"<img alt='precision-recall curve' "
              f"src='{pr_plot(metrics['pr_curve'], metrics['maxf']['f'], metrics['maxf']['threshold'], metrics['operating_point'])}'>",  # noqa: E501
              "<h2>Worst frames</h2>",
              "<p class='note'>Left: prediction overlay (green). Middle: ground truth (blue, void grey). "
              "Right: errors (green true positive, red false positive, blue false negative, grey void).</p>"]
    for w in worst:
        parts.append(f"<h3>frame {w.index} (t = {w.time_s:.3f} s, stamp {w.stamp_ns}): IoU {w.iou:.4f}</h3>"
                     f"<img alt='frame {w.index}' src='{jpeg_data_uri(w.panel)}'>")
    outs = metrics.get("outputs", {})
    if outs:
        parts.append("<h2>Other outputs</h2><ul>" + "".join(
            f"<li>{html.escape(k)}: <code>{html.escape(str(v))}</code></li>" for k, v in outs.items() if v) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: Path, metrics: dict[str, Any], times_s: list[float], ious: list[float],
                 worst: list[WorstFrame], live: dict[str, Any] | None = None,
                 flicker: tuple[list[float], list[float]] | None = None) -> Path:
    """Render and write ``report.html`` (atomically: a link at ``path`` is replaced, not followed); returns its path."""
    atomic_write_text(path, render_report(metrics, times_s, ious, worst, live, flicker))
    return path
