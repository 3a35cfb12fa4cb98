"""The performance benchmark, everything measured in one run (from a checkout, at the repo root).

    python bench/run_bench.py [--model M] [--quick] [--json out/bench/bench.json] [--markdown PATH]
                              [--sections bare,work,node,naive] [--phase-s 12] [--profile PATH]

1. **bare**: ``RoadSegmenter`` in this process for each backend present (ONNX Runtime as the node
   runs it, plus two variants it does not use: spinning thread pool, one thread; the Keras compiled
   call; Keras ``model.predict``) at 480x360 and 1280x720: pre / infer / post medians, fps.
2. **work**: the node's per-frame work outside ROS at the stream size (convert, segment, mask
   message, overlay, overlay message); ``--profile PATH`` also writes a cProfile of it.
3. **node**: ``road_seg_node`` as its own process (real rclpy, private ``ROS_DOMAIN_ID``) fed 480x360
   ``sensor_msgs/Image`` frames at 15 Hz, 30 Hz and flooded (``--flood-hz``): latency publish ->
   mask received (p50/p95), masks per second, and the node's own frame counters from /diagnostics.
4. **naive**: the tutorial baseline ``bench/naive_node.py`` (``model.predict`` in the callback,
   default QoS depth 10) on the same streams.

Then it prints the ratios the performance issue targets with PASS/FAIL, writes JSON (and
``--markdown``) and exits 0: speed is reported, never asserted. The machine's load average is
recorded at start and end: on a shared machine the numbers are only as good as the quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: the checkout's root, for ``bench`` and the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bare import bench_bare  # noqa: E402
from bench.frames import load_frames  # noqa: E402
from bench.render import display_path, render  # noqa: E402
from bench.settings import BARE_BACKENDS, DEFAULT_JSON, NAIVE_SCRIPT, SECTIONS, BenchSettings  # noqa: E402
from bench.streams import run_streams  # noqa: E402
from bench.targets import targets  # noqa: E402
from bench.work import bench_node_work  # noqa: E402
from road_seg_perception.core.allocator import keep_large_buffers  # noqa: E402
from road_seg_perception.core.segmenter import default_model_path  # noqa: E402


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def run_bench(s: BenchSettings, log: Any = print) -> dict[str, Any]:
    """Measure every selected section; returns the JSON-able result (targets included)."""
    import onnxruntime

    t0 = time.monotonic()
    outer_log = log

    def log(message: str) -> None:
        outer_log(f"[{time.monotonic() - t0:6.1f} s] {message}")

    res: dict[str, Any] = {"meta": {
        "model": display_path(s.model), "quick": s.quick, "sections": list(s.sections), "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(), "loadavg_start": _loadavg(), "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "phase_s": s.phase_s, "flood_hz": s.flood_hz,
        "stream": f"{s.stream_size[0]}x{s.stream_size[1]} {s.encoding}"}}
    frames_by_size = {}
    for size in {*s.sizes, s.stream_size}:
        frames_by_size[size], res["meta"]["frames"] = load_frames(size, s.n_frames, s.frames_dir)
    if "bare" in s.sections:
        log("bare segmenter")
        res["bare"], res["bare_skipped"] = bench_bare(s, frames_by_size, log)
    if "work" in s.sections:
        log("node per-frame work")
        res["work"] = bench_node_work(s, frames_by_size[s.stream_size])
    for kind in ("node", "naive"):
        if kind in s.sections:
            log(f"{kind} live streams")
            try:
                res[kind] = run_streams(s, kind, frames_by_size[s.stream_size], log)
            except RuntimeError as e:
                res[kind] = {"error": str(e)}
                log(f"  {kind} failed: {e}")
    res["targets"] = targets(res, s)
    res["meta"]["loadavg_end"] = _loadavg()
    res["meta"]["wall_s"] = time.monotonic() - t0
    return res


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from e
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def _csv(choices: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got {text!r}")
        return items
    return parse


def parse_args(argv: list[str] | None) -> tuple[BenchSettings, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="run_bench.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="model (.onnx with a .keras sibling, or .keras); "
                                                             "default: the shipped models/road_unet_camvid.onnx")
    p.add_argument("--quick", action="store_true", help="short phases and few runs (indicative numbers only)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"JSON output (default {DEFAULT_JSON})")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as markdown here")
    p.add_argument("--sections", type=_csv(SECTIONS), default=SECTIONS, help="comma list of " + ",".join(SECTIONS))
    p.add_argument("--backends", type=_csv(BARE_BACKENDS), default=BARE_BACKENDS,
                   help="bare backends to time (default all present)")
    p.add_argument("--sizes", type=lambda t: tuple(_size(x) for x in t.split(",")), default=None,
                   help="bare frame sizes, default 480x360,1280x720")
    p.add_argument("--stream-size", type=_size, default=(480, 360), help="live stream frame size (480x360)")
    p.add_argument("--encoding", choices=("rgb8", "bgr8"), default="rgb8", help="live stream encoding")
    p.add_argument("--rates", type=lambda t: tuple(float(x) for x in t.split(",")), default=(15.0, 30.0),
                   help="stream rates in Hz (default 15,30)")
    p.add_argument("--flood-hz", type=float, default=100.0, help="publish rate of the flood phase (100)")
    p.add_argument("--phase-s", type=float, default=None, help="seconds per stream phase (12; quick 2.5)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per bare backend and size")
    p.add_argument("--frames", type=Path, default=None, help="folder of images to use (default CamVid val, "
                                                              "else synthetic frames)")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra road_seg_node parameter (repeatable)")
    p.add_argument("--naive-script", type=Path, default=NAIVE_SCRIPT, help="the naive baseline node script")
    p.add_argument("--profile", type=Path, default=None, help="write a cProfile of the node's per-frame work here")
    p.add_argument("--node-profile", type=Path, default=None,
                   help="sample the live node with py-spy during the flood phase: .svg flame graph, "
                        ".json speedscope or .txt collapsed stacks")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the live runs (default private)")
    a = p.parse_args(argv)
    model = a.model or default_model_path()
    params = {}
    for item in a.node_param:
        if ":=" not in item:
            p.error(f"--node-param needs NAME:=VALUE, got {item!r}")
        k, v = item.split(":=", 1)
        params[k] = v
    kw: dict[str, Any] = {"sections": a.sections, "backends": a.backends, "stream_size": a.stream_size,
                          "encoding": a.encoding, "rates_hz": a.rates, "flood_hz": a.flood_hz,
                          "frames_dir": a.frames, "node_params": params, "naive_script": a.naive_script,
                          "log_dir": a.json.parent, "profile": a.profile, "node_profile": a.node_profile,
                          "domain_id": a.domain_id}
    if a.sizes:
        kw["sizes"] = a.sizes
    if a.phase_s:
        kw["phase_s"] = a.phase_s
    if a.runs:
        kw["runs"] = {b: a.runs for b in BARE_BACKENDS}
    s = BenchSettings.quick_settings(model, **kw) if a.quick else BenchSettings(model=model, **kw)
    return s, a


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, write JSON (and markdown); exit 0 whatever the speed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    s, a = parse_args(argv)
    if not s.model.exists():
        print(f"run_bench.py: model {s.model} does not exist (pass --model)", file=sys.stderr)
        return 2
    # The benchmark's own process plays the camera driver and the mask consumer: the same allocator
    # setting as the node, so neither end page-faults its image buffers every frame.

    keep_large_buffers()
    res = run_bench(s, log=lambda m: print(m, flush=True))
    text = render(res)
    print("\n" + text)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=2, default=str))
    print(f"\nwrote {a.json}")
    if a.markdown:
        a.markdown.parent.mkdir(parents=True, exist_ok=True)
        a.markdown.write_text(render(res, markdown=True) + "\n")
        print(f"wrote {a.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
