"""The performance targets and their evaluation against one run's numbers."""

from __future__ import annotations

from typing import Any

from bench.render import fmt
from bench.settings import NODE_BACKEND_ROW, ORT_VARIANTS, BenchSettings

# ----------------------------------------------------------------------------- targets and output


def targets(res: dict[str, Any], s: BenchSettings) -> list[dict[str, Any]]:
    """The issue's targets from this run's numbers (``value`` None when a needed part was not measured)."""
    size = f"{s.stream_size[0]}x{s.stream_size[1]}"
    node = res.get("node", {}).get("phases", {})
    naive = res.get("naive", {}).get("phases", {})
    node_backend = res.get("node", {}).get("info", {}).get("backend", "onnxruntime")
    row_name = NODE_BACKEND_ROW.get(node_backend, node_backend)
    if row_name == "onnxruntime":  # a node run with another thread setting is compared with that row
        p = s.node_params  # the node's settings as RoadSegmenter keywords, as ORT_VARIANTS gives them
        node_kw = {"spinning": str(p.get("inference_spinning", "off")), "threads": int(p.get("inference_threads", 0)),
                   "flip_average": str(p.get("flip_average", "false")).lower() == "true"}
        default_kw = {"spinning": "off", "threads": 0, "flip_average": False}
        row_name = next((name for name, kw in ORT_VARIANTS.items() if {**default_kw, **kw} == node_kw), row_name)
    bare = next((r for r in res.get("bare", []) if r["backend"] == row_name and r["size"] == size), None)
    bare_ms = bare["total_ms"] if bare else None
    low, high = (f"{r:g}hz" for r in (min(s.rates_hz), max(s.rates_hz)))

    def get(d: dict, phase: str, key: str) -> float | None:
        v = d.get(phase, {}).get(key)
        return float(v) if v is not None and (d.get(phase, {}).get("masks", 0) > 0) else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    paced_ms = (bare or {}).get("paced_total_ms", {}).get(low)
    paced_high_ms = (bare or {}).get("paced_total_ms", {}).get(high)
    rows = [
        {"name": f"node p50 latency at {low} / bare {row_name} total ({size})", "goal": "<= 1.15",
         "value": ratio(get(node, low, "latency_p50_ms"), bare_ms), "op": "<=", "limit": 1.15,
         "note": f"against the bare total at {low[:-2]} Hz: " + fmt(ratio(get(node, low, "latency_p50_ms"),
                                                                            paced_ms), "x", 2)},
        {"name": f"node p95 latency at {high} / bare total", "goal": "<= 2",
         "value": ratio(get(node, high, "latency_p95_ms"), bare_ms), "op": "<=", "limit": 2.0,
         "note": f"against the bare total at {high[:-2]} Hz: "
                 + fmt(ratio(get(node, high, "latency_p95_ms"), paced_high_ms), "x", 2)
                 + "; flooded (over capacity): " + fmt(ratio(get(node, "flood", "latency_p95_ms"), bare_ms), "x", 2)
                 + "; naive: " + fmt(ratio(get(naive, high, "latency_p95_ms"), bare_ms), "x") + ", grows "
                 + fmt(get(naive, high, "latency_first_quarter_p50_ms"), " ms") + " -> "
                 + fmt(get(naive, high, "latency_last_quarter_p50_ms"), " ms")},
        {"name": "throughput flooded: node / naive", "goal": ">= 3",
         "value": ratio(get(node, "flood", "throughput_fps"), get(naive, "flood", "throughput_fps")),
         "op": ">=", "limit": 3.0},
        {"name": f"model fps end to end at {size} (node, flooded)", "goal": ">= 25",
         "value": get(node, "flood", "throughput_fps"), "op": ">=", "limit": 25.0},
    ]
    for r in rows:
        v = r["value"]
        r["status"] = "n/a" if v is None else ("PASS" if (v <= r["limit"] if r["op"] == "<=" else v >= r["limit"])
                                               else "FAIL")
    return rows


