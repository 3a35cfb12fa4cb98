"""What the road grid and temporal smoothing cost: per frame in the core, and in the live node flooded.

    python bench/grid_bench.py [--quick] [--sections cost,boundary,live] [--figure docs/grid_cost.png]
                               [--json out/bench/grid.json] [--phase-s 12] [--flood-hz 100]

``cost``: for several grids and two image sizes, the one-off table build, the per-frame projection
(``GroundGridCache.project``, what the node calls) and the ``nav_msgs/OccupancyGrid`` message build,
plus one temporal-smoothing update at the shipped model's output size; a bar chart of the per-frame
costs goes to ``--figure``.
``boundary``: ``road_boundary`` (the outline of the robot's road, ``core.road_boundary``) and its
``geometry_msgs/PolygonStamped`` per frame, for each grid, on the grid of a road-shaped mask (a road
narrowing towards the horizon, with spurious blobs beside it and holes in it) and on that of random
noise (40 % road pixels: thousands of components, the worst case).
``live``: ``road_seg_node`` flooded with CamVid frames at ``--flood-hz`` (as ``bench/run_bench.py``'s flood
phase) with ``publish_grid`` on, ``camera_info`` published with every frame and ``road_grid``
subscribed, and the same run without the grid, alternated ``--repeat`` times; masks/s and grids/s of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: ``bench`` and the package

from bench.client import StreamClient  # noqa: E402
from bench.frames import load_frames  # noqa: E402
from bench.settings import BenchSettings  # noqa: E402
from bench.streams import run_streams  # noqa: E402
from road_seg_perception.core.ground_grid import CameraPose, GridSpec, GroundGridCache, Intrinsics  # noqa: E402
from road_seg_perception.core.temporal import ProbabilityEMA  # noqa: E402

#: Intrinsics that fit CamVid's 480x360 frames (as tools/grid_picture uses) and the mount there.
K_480 = (450.0, 0.0, 239.5, 0.0, 450.0, 179.5, 0.0, 0.0, 1.0)
POSE = CameraPose.from_mount(1.4, pitch=0.006)
GRIDS = {  # name: spec
    "0.2 m, 20x10 m (100x50 cells)": GridSpec(0.2, 20.0, 10.0, 20.0),
    "0.1 m, 20x10 m (200x100, node default)": GridSpec(0.1, 20.0, 10.0, 20.0),
    "0.05 m, 30x20 m (600x400)": GridSpec(0.05, 30.0, 20.0, 30.0),
}
SIZES = ((480, 360), (1280, 720))
GRID_NODE_PARAMS = {"publish_grid": True, "grid_frame": "base_footprint", "camera_height_m": 1.4,
                    "camera_pitch_rad": 0.006}


def _stats_us(samples: list[float]) -> dict[str, float]:
    us = sorted(1e6 * s for s in samples)
    return {"median_us": statistics.median(us), "p95_us": us[min(len(us) - 1, int(0.95 * len(us)))],
            "mean_us": statistics.fmean(us)}


def bench_cost(runs: int, log: Any = print) -> dict[str, Any]:
    """Table build, per-frame projection and message build for each grid and image size."""
    from builtin_interfaces.msg import Time

    from road_seg_perception.ros.grid import occupancy_grid_msg

    base = Intrinsics(480, 360, K_480, (), "none")
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for w, h in SIZES:
        intr = base.scaled_to(w, h)
        masks = [np.where(rng.random((h, w)) < 0.4, 255, 0).astype(np.uint8) for _ in range(4)]
        for name, spec in GRIDS.items():
            build = []
            for _ in range(3):
                t0 = time.perf_counter()
                GroundGridCache().get(intr, POSE, spec, (h, w))
                build.append(time.perf_counter() - t0)
            cache = GroundGridCache()
            cache.project(masks[0], intr, POSE, spec)
            proj, msg = [], []
            for i in range(runs):
                t0 = time.perf_counter()
                grid = cache.project(masks[i % len(masks)], intr, POSE, spec)
                t1 = time.perf_counter()
                occupancy_grid_msg(grid, spec, Time(sec=i), "base_footprint")
                t2 = time.perf_counter()
                proj.append(t1 - t0)
                msg.append(t2 - t1)
            key = f"{w}x{h} | {name}"
            out[key] = {"size": f"{w}x{h}", "grid": name, "cells": spec.rows * spec.cols,
                        "build_ms": 1e3 * statistics.median(build), "project": _stats_us(proj),
                        "message": _stats_us(msg), "table_builds": cache.builds}
            log(f"  {key}: build {out[key]['build_ms']:.1f} ms, project {out[key]['project']['median_us']:.0f} us, "
                f"message {out[key]['message']['median_us']:.0f} us (median of {runs})")
    return out


def road_like_mask(w: int, h: int, seed: int) -> np.ndarray:
    """A road narrowing towards the horizon (row 0.52 h) with spurious road blobs beside it and holes in it."""
    import cv2

    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    top = 0.52 * h
    road = np.array([(0.05 * w, h), (0.95 * w, h), (0.56 * w, top), (0.46 * w, top)], np.int32)
    cv2.fillPoly(mask, [road], 255)
    for _ in range(6):
        cx, cy = int(rng.uniform(0, w)), int(rng.uniform(top, h))
        value = 0 if mask[min(cy, h - 1), cx] else 255
        cv2.circle(mask, (cx, cy), int(rng.uniform(0.01, 0.04) * w), value, -1)
    return mask


def bench_boundary(runs: int, log: Any = print) -> dict[str, Any]:
    """road_boundary and its message per frame, for each grid, on road-shaped and on noise masks (480x360)."""
    from builtin_interfaces.msg import Time

    from road_seg_perception.core.road_boundary import road_boundary
    from road_seg_perception.ros.grid import polygon_msg

    w, h = 480, 360
    intr = Intrinsics(w, h, K_480, (), "none")
    rng = np.random.default_rng(0)
    kinds = {"road-shaped mask": [road_like_mask(w, h, i) for i in range(4)],
             "random noise mask (worst case)": [np.where(rng.random((h, w)) < 0.4, 255, 0).astype(np.uint8)
                                                for _ in range(4)]}
    out: dict[str, Any] = {}
    for kind, masks in kinds.items():
        for name, spec in GRIDS.items():
            cache = GroundGridCache()
            grids = [cache.project(m, intr, POSE, spec) for m in masks]
            boundary, msg, vertices = [], [], []
            for i in range(runs):
                t0 = time.perf_counter()
                points = road_boundary(grids[i % len(grids)], spec)
                t1 = time.perf_counter()
                polygon_msg(points, Time(sec=i), "base_footprint")
                t2 = time.perf_counter()
                boundary.append(t1 - t0)
                msg.append(t2 - t1)
                vertices.append(len(points))
            key = f"{kind} | {name}"
            out[key] = {"mask": kind, "grid": name, "cells": spec.rows * spec.cols, "boundary": _stats_us(boundary),
                        "message": _stats_us(msg), "vertices_median": statistics.median(vertices)}
            r = out[key]
            log(f"  {key}: boundary {r['boundary']['median_us']:.0f} us, message {r['message']['median_us']:.0f} us, "
                f"{r['vertices_median']:g} vertices (median of {runs})")
    return out


def bench_temporal(runs: int) -> dict[str, Any]:
    """One EMA update at the shipped model's output size."""
    from road_seg_perception.core.segmenter import RoadSegmenter

    hw = RoadSegmenter(warmup=0).input_hw
    rng = np.random.default_rng(1)
    maps = [rng.random(hw, dtype=np.float32) for _ in range(4)]
    ema = ProbabilityEMA(0.5, 0.5)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        ema.update(maps[i % 4], stamp_s=i / 15.0, key=(360, 480, 3))
        times.append(time.perf_counter() - t0)
    return {"map_hw": list(hw), **_stats_us(times)}


class GridStreamClient(StreamClient):
    """:class:`StreamClient` that also publishes ``camera_info`` with each frame and subscribes ``road_grid``."""

    def __init__(self, domain_id: int, frames: list[np.ndarray], encoding: str = "rgb8"):
        super().__init__(domain_id, frames, encoding)
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo

        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        h, w = frames[0].shape[:2]
        intr = Intrinsics(480, 360, K_480, (), "none").scaled_to(w, h)
        self.info = CameraInfo(width=w, height=h, distortion_model="plumb_bob", k=list(intr.k), d=[0.0] * 5)
        self.info_pub = self.node.create_publisher(CameraInfo, "/camera_info", reliable)
        self._grid_lock = threading.Lock()
        self.grids: list[tuple[int, int, int]] = []  # stamp ns, receive ns, cells
        self.grid_sub = self.node.create_subscription(OccupancyGrid, "/road_grid", self._on_grid, reliable)

    def _on_grid(self, msg: Any) -> None:
        now = time.time_ns()
        with self._grid_lock:
            self.grids.append((msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, now, len(msg.data)))

    def publish(self) -> int:
        stamp = super().publish()
        self.info.header.stamp.sec, self.info.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        self.info_pub.publish(self.info)
        return stamp

    def matched(self) -> bool:
        return super().matched() and self.grid_sub.get_publisher_count() > 0

    def close(self) -> None:
        with self._grid_lock:
            self.final_grids = list(self.grids)
        super().close()


def bench_live(s: BenchSettings, repeat: int = 1, log: Any = print) -> dict[str, Any]:
    """Alternate runs with and without the grid ``repeat`` times (load on a shared machine drifts)."""
    frames, source = load_frames(s.stream_size, s.n_frames, s.frames_dir)
    out: dict[str, Any] = {"frames": source, "runs": []}
    clients: list[GridStreamClient] = []

    def factory(*a: Any) -> GridStreamClient:
        clients.append(GridStreamClient(*a))
        return clients[-1]

    configs = (("grid subscribed", GRID_NODE_PARAMS, factory), ("no grid", {}, None)) * repeat
    for name, params, make in configs:
        log(f"live: node flooded at {s.flood_hz:g} Hz, {name}")
        run = BenchSettings(**{**s.__dict__, "node_params": {**s.node_params, **params}})
        res = run_streams(run, "node", frames, log, client_factory=make)
        flood = res["phases"].get("flood", {})
        row = {"masks_per_s": flood.get("throughput_fps"), "masks": flood.get("masks"),
               "published": flood.get("published"), "latency_p50_ms": flood.get("latency_p50_ms"),
               "latency_p95_ms": flood.get("latency_p95_ms"), "process_cpu_pct": flood.get("process_cpu_pct"),
               "node_counts": flood.get("node_counts"), "returncode": res.get("returncode")}
        if make is not None and clients:
            grids = clients[-1].final_grids
            recv = sorted(g[1] for g in grids)
            row["grids_received"] = len(grids)
            row["masks_received_total"] = clients[-1].n_arrivals()
            row["grid_cells"] = sorted({g[2] for g in grids})
            tail = [r for r in recv if r >= recv[-1] - int(s.phase_s * 1e9)] if recv else []
            span = (tail[-1] - tail[0]) / 1e9 if len(tail) > 1 else 0.0
            row["grids_per_s_last_phase"] = (len(tail) - 1) / span if span > 0 else 0.0
        row["name"] = name
        out["runs"].append(row)
        log(f"  {name}: {row['masks_per_s']:.1f} masks/s" if row["masks_per_s"] is not None else f"  {name}: no data")
    for name in ("grid subscribed", "no grid"):
        rates = [r["masks_per_s"] for r in out["runs"] if r["name"] == name and r["masks_per_s"] is not None]
        out[name] = {"masks_per_s_each": rates, "masks_per_s_median": statistics.median(rates) if rates else None}
    return out


def figure(cost: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SIZES), figsize=(11, 3.4), sharey=True)
    for ax, (w, h) in zip(np.atleast_1d(axes), SIZES, strict=True):
        rows = [v for v in cost.values() if v["size"] == f"{w}x{h}"]
        y = np.arange(len(rows))
        proj = [r["project"]["median_us"] for r in rows]
        msg = [r["message"]["median_us"] for r in rows]
        ax.barh(y, proj, color="tab:green", label="projection (GroundGridCache.project)")
        ax.barh(y, msg, left=proj, color="tab:gray", label="OccupancyGrid message")
        for yi, p, m in zip(y, proj, msg, strict=True):
            ax.text(p + m, yi, f" {p + m:.0f} us", va="center", fontsize=8)
        ax.set_yticks(y, [r["grid"] for r in rows], fontsize=8)
        ax.set_title(f"{w}x{h} mask", fontsize=9)
        ax.set_xlabel("per frame, median (us)")
        ax.set_xlim(0, max(p + m for p, m in zip(proj, msg, strict=True)) * 1.35)
        ax.grid(alpha=0.3, axis="x")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("road_grid: cost per frame (python bench/grid_bench.py)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render(res: dict[str, Any]) -> str:
    lines = ["| mask | grid | cells | table build (ms) | projection median / p95 (us) | message median (us) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"] if res.get("cost") else []
    for v in res.get("cost", {}).values():
        lines.append(f"| {v['size']} | {v['grid']} | {v['cells']} | {v['build_ms']:.1f} | "
                     f"{v['project']['median_us']:.0f} / {v['project']['p95_us']:.0f} | "
                     f"{v['message']['median_us']:.0f} |")
    if res.get("boundary"):
        lines += ["", "| mask (480x360) | grid | cells | road_boundary median / p95 (us) | message median (us) | "
                  "vertices |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for v in res.get("boundary", {}).values():
        lines.append(f"| {v['mask']} | {v['grid']} | {v['cells']} | {v['boundary']['median_us']:.0f} / "
                     f"{v['boundary']['p95_us']:.0f} | {v['message']['median_us']:.0f} | {v['vertices_median']:g} |")
    t = res.get("temporal")
    if t:
        lines.append(f"\ntemporal smoothing update at {t['map_hw'][1]}x{t['map_hw'][0]}: "
                     f"median {t['median_us']:.0f} us, p95 {t['p95_us']:.0f} us")
    live = res.get("live", {})
    for row in live.get("runs", []):
        extra = (f", road_grid {row['grids_received']} received ({row['grids_per_s_last_phase']:.1f}/s in the "
                 f"flood)" if "grids_received" in row else "")
        lines.append(f"node flooded, {row['name']}: {row['masks_per_s']:.1f} masks/s, latency p50 "
                     f"{row['latency_p50_ms']:.1f} ms p95 {row['latency_p95_ms']:.1f} ms{extra}")
    for name in ("grid subscribed", "no grid"):
        if live.get(name, {}).get("masks_per_s_median") is not None:
            each = ", ".join(f"{v:.1f}" for v in live[name]["masks_per_s_each"])
            lines.append(f"median masks/s, {name}: {live[name]['masks_per_s_median']:.1f} ({each})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="cost,boundary,live", help="comma list of cost, boundary, live")
    p.add_argument("--quick", action="store_true", help="few runs, short phases (indicative only)")
    p.add_argument("--runs", type=int, default=None, help="timed projections per grid and size (default 300)")
    p.add_argument("--phase-s", type=float, default=None, help="seconds of flooding per live run (default 12)")
    p.add_argument("--flood-hz", type=float, default=100.0, help="publish rate of the live flood (100)")
    p.add_argument("--repeat", type=int, default=2, help="live runs with and without the grid, alternated (2)")
    p.add_argument("--figure", type=Path, default=Path("docs/grid_cost.png"), help="bar chart of the per-frame cost")
    p.add_argument("--json", type=Path, default=Path("out/bench/grid.json"), help="JSON output")
    a = p.parse_args(argv)
    sections = set(a.sections.split(","))
    runs = a.runs or (30 if a.quick else 300)
    res: dict[str, Any] = {}
    if "cost" in sections:
        print("cost: per-frame projection and message")
        res["cost"] = bench_cost(runs)
        res["temporal"] = bench_temporal(runs)
        figure(res["cost"], a.figure)
        print(f"wrote {a.figure}")
    if "boundary" in sections:
        print("boundary: road_boundary and its message per frame")
        res["boundary"] = bench_boundary(runs)
    if "live" in sections:
        from road_seg_perception.core.segmenter import default_model_path

        kw: dict[str, Any] = {"sections": ("node",), "rates_hz": (), "flood_hz": a.flood_hz,
                              "log_dir": a.json.parent}
        if a.phase_s:
            kw["phase_s"] = a.phase_s
        s = (BenchSettings.quick_settings(default_model_path(), **kw) if a.quick
             else BenchSettings(model=default_model_path(), **kw))
        res["live"] = bench_live(s, a.repeat)
    print("\n" + render(res))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
