"""The benchmark result as text or markdown tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}{unit}"


def _table(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def render(res: dict[str, Any], markdown: bool = False) -> str:
    """The result as text tables (or markdown for the README)."""
    m = res["meta"]
    out = []

    def title(name: str, detail: str) -> str:
        return f"**{name}** ({detail})\n" if markdown else f"{name} ({detail})"

    head = (f"model {m['model']} | {m['cpu']} ({m['cpu_count']} cores) | load average {m['loadavg_start']} at start, "
            f"{m.get('loadavg_end', '?')} at end" + (" | QUICK run: indicative only" if m["quick"] else ""))
    out.append(head)
    if res.get("bare"):
        rates = sorted({k for r in res["bare"] for k in r.get("paced_total_ms", {})}, key=lambda k: float(k[:-2]))
        rows = [[r["backend"], r["device"], r["size"], f"{r['pre_ms']:.1f}", f"{r['infer_ms']:.1f}",
                 f"{r['post_ms']:.1f}", f"{r['total_ms']:.1f}", f"{r['fps']:.1f}",
                 *(fmt(r.get("paced_total_ms", {}).get(k)) if r.get("paced_total_ms") else "-" for k in rates)]
                for r in res["bare"]]
        out += ["", title("Bare segmenter", "median ms per frame; total: back to back; "
                          "'total at N Hz': calls started at a camera's pace, each after an idle gap"),
                _table(["backend", "device", "frame", "pre", "infer", "post", "total", "fps",
                        *(f"total at {k[:-2]} Hz" for k in rates)], rows, markdown)]
        for b, why in res.get("bare_skipped", {}).items():
            out.append(f"(not measured: {b}: {why})")
    if res.get("work"):
        w = res["work"]
        keys = ["convert", "segment", "mask_msg", "overlay", "overlay_msg", "total_mask_only", "total_with_overlay"]
        out += ["", title("Node per-frame work outside ROS", f"{w['size']} {w['encoding']}, median ms"),
                _table(keys, [[f"{w[k + '_ms']:.2f}" for k in keys]], markdown)]
    kinds = [k for k in ("node", "naive") if res.get(k, {}).get("phases")]
    if kinds:
        rows = []
        for k in kinds:
            for name, p in res[k]["phases"].items():
                c = p.get("node_counts")
                counts = (f"{c.get('received', 0)}/{c.get('processed', 0)}/{c.get('dropped_stale', 0)}"
                          if c else "-")
                rows.append([k if k == "node" else "naive (baseline)", name, f"{p['achieved_rate_hz']:.1f}",
                             str(p["published"]), str(p["masks"]), f"{p['latency_p50_ms']:.1f}",
                             f"{p['latency_p95_ms']:.1f}",
                             f"{p['latency_first_quarter_p50_ms']:.0f} -> {p['latency_last_quarter_p50_ms']:.0f}",
                             f"{p['throughput_fps']:.1f}", counts, fmt(p.get("node_internal_latency_p50_ms")),
                             fmt(p.get("process_cpu_pct"), "", 0),
                             fmt(p.get("bench_client_cpu_pct"), "", 0)])
        out += ["", title("Live streams", "publish -> mask received, real rclpy, node as its own process"),
                _table(["node", "stream", "in Hz", "sent", "masks", "p50 ms", "p95 ms", "p50 first->last quarter",
                        "masks/s", "node recv/proc/dropped", "in-node p50 ms", "node CPU %", "publisher CPU %"],
                       rows, markdown)]
    for k in ("node", "naive"):
        if res.get(k, {}).get("skipped") or res.get(k, {}).get("error"):
            out.append(f"({k}: {res[k].get('skipped') or res[k].get('error')})")
    if res.get("targets"):
        rows = [[t["name"], fmt(t["value"], "", 2), t["goal"], t["status"], t.get("note", "")]
                for t in res["targets"]]
        out += ["", title("Targets", "this run"),
                _table(["target", "measured", "goal", "status", "note"], rows, markdown)]
    return "\n".join(out)


def display_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it, else its file name (no machine paths)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


