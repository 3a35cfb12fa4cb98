"""``road-seg-bench``: the performance benchmark, everything measured in one run.

    road-seg-bench [--model M] [--quick] [--json out/bench/bench.json] [--markdown PATH]
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
import cProfile
import gc
import importlib.util
import io
import json
import os
import platform
import pstats
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from road_seg_perception.bagio.image_codec import image_to_rgb, rgb_to_encoding, validate_image_msg
from road_seg_perception.core.allocator import keep_large_buffers
from road_seg_perception.core.backends import resolve_model_files
from road_seg_perception.core.metrics import percentile
from road_seg_perception.core.overlay import draw_overlay
from road_seg_perception.core.segmenter import RoadSegmenter, default_model_path
from road_seg_perception.core.timing import time_segmenter
from road_seg_perception.ros.messages import numpy_to_image_msg
from road_seg_perception.tools.live import _stop, _tail, node_command, node_counts, private_domain_id, subprocess_env
from road_seg_perception.training.datasets import IMAGE_EXTS, default_camvid_root, read_image

DEFAULT_JSON = Path("out/bench/bench.json")
NAIVE_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "naive_node.py"
IMAGE_TOPIC = "/bench/image"
MASK_TOPIC = "/road_mask"
FRAME_ID = "bench_camera"
SECTIONS = ("bare", "work", "node", "naive")
#: ONNX Runtime variants that the product does not use, kept so each run shows what its choices cost
#: or gain: ``onnxruntime-runspin`` (threads spin-wait during a run only), ``onnxruntime-spinning``
#: (threads spin-wait, also between frames: ONNX Runtime's own default) and ``onnxruntime-1thread``
#: (one intra-op thread instead of ``min(4, cores)``). The product's threads never spin.
ORT_VARIANTS = {"onnxruntime-runspin": {"spinning": "run"}, "onnxruntime-spinning": {"spinning": "always"},
                "onnxruntime-1thread": {"threads": 1}}
BARE_BACKENDS = ("onnxruntime", *ORT_VARIANTS, "keras-compiled", "keras-predict")
#: Node backend name (from /diagnostics) -> bare row that it is compared with.
NODE_BACKEND_ROW = {"onnxruntime": "onnxruntime", "keras-tensorflow": "keras-compiled",
                    "keras-jax": "keras-compiled", "keras-torch": "keras-compiled"}


# ----------------------------------------------------------------------------- settings


@dataclass
class BenchSettings:
    """Everything a run measures, and for how long."""

    model: Path
    sections: tuple[str, ...] = SECTIONS
    backends: tuple[str, ...] = BARE_BACKENDS
    sizes: tuple[tuple[int, int], ...] = ((480, 360), (1280, 720))  # (width, height)
    stream_size: tuple[int, int] = (480, 360)
    runs: dict[str, int] = field(default_factory=lambda: {"onnxruntime": 50, "onnxruntime-runspin": 50,
                                                          "onnxruntime-spinning": 50, "onnxruntime-1thread": 50,
                                                          "keras-compiled": 30, "keras-predict": 10})
    paced_runs: int = 45  # ONNX Runtime rows at the stream size, started at each stream rate
    warmup: int = 5
    work_runs: int = 40
    rates_hz: tuple[float, ...] = (15.0, 30.0)
    flood_hz: float = 100.0
    phase_s: float = 12.0
    encoding: str = "rgb8"
    frames_dir: Path | None = None
    n_frames: int = 8
    startup_timeout_s: float = 180.0
    settle_max_s: float = 30.0
    quick: bool = False
    node_params: dict[str, str] = field(default_factory=dict)
    naive_script: Path = NAIVE_SCRIPT
    log_dir: Path = Path("out/bench")
    profile: Path | None = None
    node_profile: Path | None = None
    domain_id: int | None = None

    @classmethod
    def quick_settings(cls, model: Path, **kw: Any) -> BenchSettings:
        """A short run for development and tests (numbers are indicative only)."""
        base = {"runs": {"onnxruntime": 5, "onnxruntime-runspin": 5, "onnxruntime-spinning": 5,
                         "onnxruntime-1thread": 5, "keras-compiled": 3, "keras-predict": 2},
                "paced_runs": 4,
                "warmup": 1, "work_runs": 5,
                "phase_s": 2.5, "n_frames": 3, "settle_max_s": 15.0, "quick": True}
        return cls(model=model, **{**base, **kw})


# ----------------------------------------------------------------------------- frames


def _synthetic_frame(w: int, h: int, seed: int) -> np.ndarray:
    """A road-like RGB frame: sky gradient, grey road trapezoid at the bottom, texture noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    sky = np.linspace(230, 140, h // 2, dtype=np.float32)[:, None, None] * np.array([0.6, 0.8, 1.0], np.float32)
    img[: h // 2] = sky.astype(np.uint8)
    img[h // 2:] = (60, 110, 50)
    import cv2

    top, bottom = h // 2, h
    poly = np.array([[w * 0.42, top], [w * 0.58, top], [w * 0.98, bottom], [w * 0.02, bottom]], np.int32)
    cv2.fillConvexPoly(img, poly, (105, 105, 110))
    noise = rng.integers(-12, 13, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def load_frames(size_wh: tuple[int, int], n: int, frames_dir: Path | None = None) -> tuple[list[np.ndarray], str]:
    """``n`` RGB frames at ``size_wh`` from ``frames_dir`` (default CamVid val), else synthetic ones.

    Returns the frames and where they came from.
    """
    import cv2

    w, h = size_wh
    folder = frames_dir if frames_dir is not None else default_camvid_root() / "val"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)[:n] if folder.is_dir() else []
    if files:
        frames = []
        for p in files:
            img = read_image(p)
            shrink = img.shape[0] > h and img.shape[1] > w
            frames.append(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR))
        return frames, str(folder)
    return [_synthetic_frame(w, h, i) for i in range(n)], "synthetic"


# ----------------------------------------------------------------------------- bare segmenter


class KerasPredictBackend:
    """The tutorial path, for comparison only: ``model.predict`` on every frame."""

    def __init__(self, keras_backend: Any):
        self.model = keras_backend.model
        self.name = "keras-predict"
        self.device = keras_backend.device
        self.input_hw = keras_backend.input_hw
        self.path = keras_backend.path

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(batch, verbose=0))[..., 0]


def available_backends(model: Path, wanted: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The wanted bare backends that can run for ``model``, and why the others cannot."""

    onnx_path, keras_path = resolve_model_files(model)
    ok, why = [], {}
    for b in wanted:
        path, ext, package = ((onnx_path, ".onnx", "onnxruntime") if b.startswith("onnxruntime")
                              else (keras_path, ".keras", "keras"))
        if path is None:
            why[b] = f"no {ext} file beside the model"
        elif importlib.util.find_spec(package) is None:
            why[b] = f"{package} is not installed"
        else:
            ok.append(b)
    return ok, why


def bench_bare(s: BenchSettings, frames_by_size: dict[tuple[int, int], list[np.ndarray]],
               log: Any = print) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Time ``RoadSegmenter.segment`` for each available backend and size (medians, ms)."""
    import copy

    backends, skipped = available_backends(s.model, s.backends)
    onnx_path, keras_path = resolve_model_files(s.model)  # each backend runs its own file of the model
    rows: list[dict[str, Any]] = []
    keras_seg: RoadSegmenter | None = None
    for b in backends:
        if b == "onnxruntime" or b in ORT_VARIANTS:
            seg = RoadSegmenter(onnx_path, backend="onnxruntime", **ORT_VARIANTS.get(b, {}))
            seg.backend.name = b
        else:
            if keras_seg is None:
                keras_seg = RoadSegmenter(keras_path, backend="keras")
            seg = keras_seg
            if b == "keras-predict":
                seg = copy.copy(keras_seg)
                seg.backend = KerasPredictBackend(keras_seg.backend)
        for size in s.sizes:
            log(f"  bare {b} {size[0]}x{size[1]} ({s.runs[b]} runs)")
            t = time_segmenter(seg, frames_by_size[size], runs=s.runs[b], warmup=min(s.warmup, s.runs[b]))
            row = {"backend": b, "runtime": seg.backend.name, "device": seg.backend.device,
                   "size": f"{size[0]}x{size[1]}", "pre_ms": t["pre"], "infer_ms": t["infer"],
                   "post_ms": t["post"], "total_ms": t["total"], "p95_total_ms": t["p95_total"],
                   "fps": t["fps"], "runs": s.runs[b]}
            if b.startswith("onnxruntime") and size == s.stream_size and s.paced_runs > 0:
                # A camera delivers a frame, then nothing until the next: idle thread pools wake slowly.
                row["paced_total_ms"] = {}
                for rate in s.rates_hz:
                    log(f"  bare {b} {size[0]}x{size[1]} started at {rate:g} Hz ({s.paced_runs} runs)")
                    row["paced_total_ms"][f"{rate:g}hz"] = time_segmenter(
                        seg, frames_by_size[size], runs=s.paced_runs, warmup=1, rate_hz=rate)["total"]
            rows.append(row)
    del keras_seg
    gc.collect()
    return rows, skipped


# ----------------------------------------------------------------------------- node work outside ROS


def bench_node_work(s: BenchSettings, frames: list[np.ndarray]) -> dict[str, Any]:
    """Median ms of each step of the node's per-frame work (``RoadSegNode._process``) on the stream frames.

    Steps: ``convert`` (validate + ``image_to_rgb``), ``segment`` (pre + infer + post), ``mask_msg``,
    ``overlay`` (``draw_overlay``, only done while someone subscribes) and ``overlay_msg``.
    With ``s.profile`` a cProfile of the same loop is written there (by cumulative, then by own time).
    """

    seg = RoadSegmenter(s.model)
    msgs = [numpy_to_image_msg(_to_encoding(f, s.encoding), s.encoding) for f in frames]

    def step(msg: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        enc = validate_image_msg(msg)[0]
        rgb = image_to_rgb(msg)
        t1 = time.perf_counter()
        r = seg.segment(rgb)
        t2 = time.perf_counter()
        numpy_to_image_msg(r.mask, "mono8", msg.header)
        t3 = time.perf_counter()
        ov = draw_overlay(rgb, r.mask, (0, 255, 0), 0.45, boundary=True)
        t4 = time.perf_counter()
        arr, out_enc = rgb_to_encoding(ov, enc)
        numpy_to_image_msg(arr, out_enc, msg.header)
        t5 = time.perf_counter()
        return {"convert": t1 - t0, "segment": t2 - t1, "mask_msg": t3 - t2, "overlay": t4 - t3,
                "overlay_msg": t5 - t4, "total_mask_only": t3 - t0, "total_with_overlay": t5 - t0}

    for i in range(s.warmup):
        step(msgs[i % len(msgs)])
    rows = [step(msgs[i % len(msgs)]) for i in range(s.work_runs)]
    out: dict[str, Any] = {k + "_ms": float(np.median([r[k] for r in rows])) * 1e3 for k in rows[0]}
    out.update({"size": f"{s.stream_size[0]}x{s.stream_size[1]}", "encoding": s.encoding,
                "backend": seg.backend.name, "runs": s.work_runs})
    if s.profile is not None:
        prof = cProfile.Profile()
        prof.enable()
        for i in range(s.work_runs):
            step(msgs[i % len(msgs)])
        prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(20)
        s.profile.parent.mkdir(parents=True, exist_ok=True)
        s.profile.write_text(f"cProfile of {s.work_runs} frames of the node's per-frame work "
                             f"({out['size']} {s.encoding}, backend {out['backend']})\n" + buf.getvalue())
        out["profile"] = str(s.profile)
    return out


def _to_encoding(rgb: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    raise ValueError(f"--encoding must be rgb8 or bgr8, got {encoding!r}")


# ----------------------------------------------------------------------------- live streams


class StreamClient:
    """The bench side of a live run: publishes camera frames, timestamps every mask that comes back.

    Frames go out on :data:`IMAGE_TOPIC` with reliable KEEP_LAST 10 QoS (what a default camera
    publisher offers, so both the best-effort node and the default-QoS naive node match) and a
    header stamp equal to the publish wall time, so latency = receive wall time - stamp. Masks are
    taken by a thread of their own (:class:`~road_seg_perception.ros.intake.SubscriptionIntake`), so
    the measuring side adds no executor round to the node's latency.
    """

    def __init__(self, domain_id: int, frames: list[np.ndarray], encoding: str = "rgb8"):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header

        from road_seg_perception.ros.intake import NoExecutorGroup, SubscriptionIntake, intake_available

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node("road_seg_bench_client", context=self.ctx)
        self.msgs = [numpy_to_image_msg(_to_encoding(f, encoding), encoding, Header(frame_id=FRAME_ID))
                     for f in frames]
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Image, IMAGE_TOPIC, reliable)
        self.mask_sub = self.node.create_subscription(
            Image, MASK_TOPIC, self._on_mask,
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE),
            callback_group=NoExecutorGroup() if intake_available() else None)
        self.diag_sub = self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self._lock = threading.Condition()
        self.arrivals: list[tuple[int, int, int, int, str, str]] = []  # stamp, recv ns, w, h, encoding, frame_id
        self.diag: tuple[float, dict[str, str]] | None = None  # (monotonic receive time, values)
        self._executor = SingleThreadedExecutor(context=self.ctx)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="bench_spin", daemon=True)
        self._thread.start()
        self._intake = (SubscriptionIntake(self.mask_sub, self._on_mask, self.ctx, name="bench_masks").start()
                        if intake_available() else None)
        self._i = 0

    def _spin(self) -> None:
        while not self._stop.is_set() and self.ctx.ok():
            self._executor.spin_once(timeout_sec=0.05)

    def _on_mask(self, msg: Any) -> None:
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._lock:
            self.arrivals.append((stamp, now, int(msg.width), int(msg.height), msg.encoding, msg.header.frame_id))
            self._lock.notify_all()

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if "frames_received" in values:
                with self._lock:
                    self.diag = (time.monotonic(), values)
                    self._lock.notify_all()

    def publish(self) -> int:
        """Publish the next frame stamped with the wall time now; returns the stamp (ns)."""
        msg = self.msgs[self._i % len(self.msgs)]
        self._i += 1
        stamp = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        self.pub.publish(msg)
        return stamp

    def matched(self) -> bool:
        return self.pub.get_subscription_count() > 0 and self.mask_sub.get_publisher_count() > 0

    def n_arrivals(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def arrivals_since(self, index: int) -> list[tuple[int, int, int, int, str, str]]:
        """Masks received after the first ``index`` ones: (stamp, receive ns, width, height, encoding, frame_id)."""
        with self._lock:
            return self.arrivals[index:]

    def fresh_diag(self, after: float, timeout_s: float = 3.0) -> dict[str, str] | None:
        """The first /diagnostics values received after monotonic time ``after`` (None on timeout)."""
        end = time.monotonic() + timeout_s
        with self._lock:
            while self.diag is None or self.diag[0] <= after:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)
            return self.diag[1]

    def close(self) -> None:
        self._stop.set()
        if self._intake is not None:
            self._intake.stop()
        self._thread.join(2.0)
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        import rclpy

        rclpy.try_shutdown(context=self.ctx)


def stream_phase(client: StreamClient, name: str, rate_hz: float, duration_s: float, settle_max_s: float,
                 expect_wh: tuple[int, int]) -> dict[str, Any]:
    """Publish at ``rate_hz`` for ``duration_s``, wait for the outputs to settle, summarise.

    Latencies are over the frames whose mask came back. Throughput is masks per second over the span
    from the first to the last mask of the phase, the settling included: a node that keeps up
    delivers at the input rate, one that cannot delivers at its own pace, and a queue that drains
    after the input stopped still counts at the pace it drains. Growth compares the median latency
    of the frames published in the first and the last quarter of the phase.
    """
    first_index = client.n_arrivals()
    period = 1.0 / rate_hz
    stamps: list[int] = []
    t_start_ns = time.time_ns()
    start = time.monotonic()
    due = start
    while time.monotonic() - start < duration_s:
        stamps.append(client.publish())
        due += period
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -period:  # fell behind (the publisher is starved): no catch-up burst
            due = time.monotonic()
    t_end_ns = time.time_ns()
    pub_s = (t_end_ns - t_start_ns) / 1e9
    # settle: every frame answered, or no mask for a while (the rest were dropped)
    published = set(stamps)
    settle_start = time.monotonic()
    last_n, last_change = -1, time.monotonic()
    while time.monotonic() - settle_start < settle_max_s:
        phase_arrivals = client.arrivals_since(first_index)
        answered = {a[0] for a in phase_arrivals if a[0] in published}
        if len(answered) == len(published):
            break
        if len(phase_arrivals) != last_n:
            last_n, last_change = len(phase_arrivals), time.monotonic()
        gaps = np.diff(sorted(a[1] for a in phase_arrivals)) / 1e9 if len(phase_arrivals) > 2 else []
        quiet_s = max(1.5, 4.0 * float(np.max(gaps))) if len(gaps) else 3.0
        if time.monotonic() - last_change > quiet_s:
            break
        time.sleep(0.05)
    arrivals = [a for a in client.arrivals_since(first_index) if a[0] in published]
    lat = {a[0]: (a[1] - a[0]) / 1e6 for a in arrivals}
    lat_ms = list(lat.values())
    recv = sorted(a[1] for a in arrivals)
    span_s = (recv[-1] - recv[0]) / 1e9 if len(recv) > 1 else 0.0
    q = (t_end_ns - t_start_ns) // 4
    first_q = [v for s, v in lat.items() if s < t_start_ns + q]
    last_q = [v for s, v in lat.items() if s >= t_end_ns - q]
    sizes = sorted({(a[2], a[3], a[4]) for a in arrivals})
    return {
        "name": name, "rate_hz": rate_hz, "published": len(stamps), "publish_s": pub_s,
        "achieved_rate_hz": len(stamps) / pub_s if pub_s > 0 else 0.0,
        "masks": len(arrivals), "unanswered": len(stamps) - len(arrivals),
        "duplicates": len(arrivals) - len(lat),
        "latency_p50_ms": percentile(lat_ms, 50), "latency_p95_ms": percentile(lat_ms, 95),
        "latency_max_ms": max(lat_ms) if lat_ms else 0.0,
        "latency_first_quarter_p50_ms": percentile(first_q, 50),
        "latency_last_quarter_p50_ms": percentile(last_q, 50),
        "throughput_fps": (len(recv) - 1) / span_s if span_s > 0 else 0.0,
        "mask_sizes": [f"{w}x{h} {e}" for w, h, e in sizes],
        "mask_size_ok": bool(sizes) and all((w, h) == expect_wh and e == "mono8" for w, h, e in sizes),
        "frame_id_ok": bool(arrivals) and all(a[5] == FRAME_ID for a in arrivals),
    }


def display_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it, else its file name (no machine paths)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


def py_spy_path() -> str | None:
    """The ``py-spy`` executable beside this interpreter, else on PATH (None when absent)."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def start_py_spy(pid: int, out: Path, duration_s: float, log: Any = print) -> subprocess.Popen | None:
    """Sample process ``pid`` (every thread, native frames off) for ``duration_s`` into ``out``.

    The suffix picks the format: ``.json`` speedscope, ``.txt`` collapsed stacks, anything else a flame graph.
    """
    exe = py_spy_path()
    if exe is None:
        log("  py-spy is not installed (pip install -r requirements-dev.txt): no node profile")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = "speedscope" if out.suffix == ".json" else "raw" if out.suffix == ".txt" else "flamegraph"
    # argv[0] is the bare name: py-spy writes its command line into the profile
    cmd = ["py-spy", "record", "--pid", str(pid), "--duration", str(max(1, round(duration_s))), "--rate", "200",
           "--threads", "--nonblocking", "--format", fmt, "--output", str(out)]
    return subprocess.Popen(cmd, executable=exe, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_py_spy(spy: subprocess.Popen, out: Path, log: Any = print) -> str | None:
    """Wait for ``py-spy record``; the profile's path, or None (and the reason logged) when it failed."""
    try:
        text, _ = spy.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        text, _ = spy.communicate()
    if spy.returncode != 0 or not out.is_file():
        log(f"  py-spy failed (status {spy.returncode}): {(text or '').strip()[-500:]}")
        return None
    log(f"  node profile of the flood phase: {out}")
    if out.suffix == ".txt":
        for line in summarize_stacks(out):
            log("    " + line)
    return str(out)


def summarize_stacks(path: Path, top: int = 12) -> list[str]:
    """Share of py-spy's samples (collapsed ``frame;frame;... count`` lines) per thread and per innermost frame."""
    per_thread: dict[str, int] = {}
    per_frame: dict[tuple[str, str], int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]  # "thread (1234): name" -> name
        per_thread[thread] = per_thread.get(thread, 0) + int(count)
        per_frame[(thread, frames[-1])] = per_frame.get((thread, frames[-1]), 0) + int(count)
    total = sum(per_thread.values())
    if not total:
        return ["no samples"]
    lines = [f"{total} samples of running (not waiting) threads; by thread: "
             + ", ".join(f"{t} {100 * n / total:.1f}%" for t, n in sorted(per_thread.items(), key=lambda kv: -kv[1]))]
    lines += [f"{100 * n / total:5.1f}%  {t}: {f}"
              for (t, f), n in sorted(per_frame.items(), key=lambda kv: -kv[1])[:top]]
    return lines


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (all threads); None where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _float(text: str | None) -> float | None:
    try:
        v = float(text) if text is not None else None
    except ValueError:
        return None
    return v if v is not None and np.isfinite(v) else None


def _counts(values: dict[str, str] | None) -> dict[str, int] | None:

    return node_counts(values) if values else None


def run_streams(s: BenchSettings, kind: str, frames: list[np.ndarray], log: Any = print,
                client_factory: Any = None) -> dict[str, Any]:
    """Start ``road_seg_node`` (``kind="node"``) or the naive baseline as a process and run every stream phase.

    ``client_factory(domain_id, frames, encoding)`` makes the measuring side (default :class:`StreamClient`).
    """

    domain = s.domain_id if s.domain_id is not None else private_domain_id()
    if kind == "node":
        cmd = node_command(s.model, IMAGE_TOPIC, False, s.node_params)
    else:
        if not s.naive_script.is_file():
            return {"skipped": f"naive baseline script {s.naive_script} not found (it lives in the source tree)"}
        cmd = [sys.executable, str(s.naive_script), "--ros-args", "-r", f"image:={IMAGE_TOPIC}",
               "-p", f"model_path:={s.model}"]
    s.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = s.log_dir / f"{kind}.log"
    result: dict[str, Any] = {"command": cmd, "log": str(log_path), "domain_id": domain, "phases": {}}
    client = (client_factory or StreamClient)(domain, frames, s.encoding)
    proc = None
    with log_path.open("w") as log_file:
        try:
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, env=subprocess_env(domain), stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            while not client.matched():
                if proc.poll() is not None:
                    raise RuntimeError(f"{kind} exited with status {proc.returncode} at start-up:\n" + _tail(log_path))
                if time.monotonic() - t0 > s.startup_timeout_s:
                    raise RuntimeError(f"{kind} not ready after {s.startup_timeout_s} s:\n" + _tail(log_path))
                time.sleep(0.1)
            time.sleep(0.5)
            # warm-up: a few frames answered end to end (first inference, DDS matching)
            warm_end = time.monotonic() + 90.0
            while client.n_arrivals() < 3 and time.monotonic() < warm_end and proc.poll() is None:
                client.publish()
                time.sleep(0.2)
            if client.n_arrivals() == 0:
                raise RuntimeError(f"{kind} answered no warm-up frame:\n" + _tail(log_path))
            result["startup_s"] = time.monotonic() - t0
            time.sleep(1.0)
            before = _counts(client.fresh_diag(time.monotonic())) if kind == "node" else None
            if kind == "node" and client.diag is not None:
                result["info"] = {k: client.diag[1].get(k, "") for k in ("backend", "device", "model",
                                                                         "model_input_size")}
            phases = [(f"{r:g}hz", r) for r in s.rates_hz] + [("flood", s.flood_hz)]
            for name, rate in phases:
                log(f"  {kind}: {name} stream for {s.phase_s:g} s")
                spy = (start_py_spy(proc.pid, s.node_profile, s.phase_s, log)
                       if kind == "node" and name == "flood" and s.node_profile is not None else None)
                cpu0, own0, wall0 = process_cpu_s(proc.pid), time.process_time(), time.monotonic()
                ph = stream_phase(client, name, rate, s.phase_s, s.settle_max_s, s.stream_size)
                if spy is not None:
                    result["node_profile"] = finish_py_spy(spy, s.node_profile, log)
                cpu1, own1, wall = process_cpu_s(proc.pid), time.process_time(), time.monotonic() - wall0
                # CPU use over the phase including its settle time, in % of one core
                ph["process_cpu_pct"] = 100 * (cpu1 - cpu0) / wall if cpu0 is not None and cpu1 is not None else None
                ph["bench_client_cpu_pct"] = 100 * (own1 - own0) / wall
                if kind == "node":
                    values = client.fresh_diag(time.monotonic())
                    after = _counts(values)
                    if values:  # the node's own latency (frame received -> outputs published), last 300 frames
                        ph["node_internal_latency_p50_ms"] = _float(values.get("latency_p50_ms"))
                        ph["node_internal_latency_p95_ms"] = _float(values.get("latency_p95_ms"))
                    if before is not None and after is not None:
                        ph["node_counts"] = {k: after[k] - before.get(k, 0) for k in after if k != "pending"}
                        ph["node_counts"]["pending"] = after.get("pending", 0)
                    before = after
                result["phases"][name] = ph
        finally:
            client.close()
            result["returncode"] = _stop(proc)
    return result


# ----------------------------------------------------------------------------- targets and output


def targets(res: dict[str, Any], s: BenchSettings) -> list[dict[str, Any]]:
    """The issue's targets from this run's numbers (``value`` None when a needed part was not measured)."""
    size = f"{s.stream_size[0]}x{s.stream_size[1]}"
    node = res.get("node", {}).get("phases", {})
    naive = res.get("naive", {}).get("phases", {})
    node_backend = res.get("node", {}).get("info", {}).get("backend", "onnxruntime")
    row_name = NODE_BACKEND_ROW.get(node_backend, node_backend)
    if row_name == "onnxruntime":  # a node run with another thread setting is compared with that row
        node_setting = (str(s.node_params.get("inference_spinning", "off")),
                        str(s.node_params.get("inference_threads", "0")))
        row_name = next((name for name, kw in ORT_VARIANTS.items()
                         if (kw.get("spinning", "off"), str(kw.get("threads", 0))) == node_setting), row_name)
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
         "note": f"against the bare total at {low[:-2]} Hz: " + _fmt(ratio(get(node, low, "latency_p50_ms"),
                                                                            paced_ms), "x", 2)},
        {"name": f"node p95 latency at {high} / bare total", "goal": "<= 2",
         "value": ratio(get(node, high, "latency_p95_ms"), bare_ms), "op": "<=", "limit": 2.0,
         "note": f"against the bare total at {high[:-2]} Hz: "
                 + _fmt(ratio(get(node, high, "latency_p95_ms"), paced_high_ms), "x", 2)
                 + "; flooded (over capacity): " + _fmt(ratio(get(node, "flood", "latency_p95_ms"), bare_ms), "x", 2)
                 + "; naive: " + _fmt(ratio(get(naive, high, "latency_p95_ms"), bare_ms), "x") + ", grows "
                 + _fmt(get(naive, high, "latency_first_quarter_p50_ms"), " ms") + " -> "
                 + _fmt(get(naive, high, "latency_last_quarter_p50_ms"), " ms")},
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


def _fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
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
                 *(_fmt(r.get("paced_total_ms", {}).get(k)) if r.get("paced_total_ms") else "-" for k in rates)]
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
                             f"{p['throughput_fps']:.1f}", counts, _fmt(p.get("node_internal_latency_p50_ms")),
                             _fmt(p.get("process_cpu_pct"), "", 0),
                             _fmt(p.get("bench_client_cpu_pct"), "", 0)])
        out += ["", title("Live streams", "publish -> mask received, real rclpy, node as its own process"),
                _table(["node", "stream", "in Hz", "sent", "masks", "p50 ms", "p95 ms", "p50 first->last quarter",
                        "masks/s", "node recv/proc/dropped", "in-node p50 ms", "node CPU %", "publisher CPU %"],
                       rows, markdown)]
    for k in ("node", "naive"):
        if res.get(k, {}).get("skipped") or res.get(k, {}).get("error"):
            out.append(f"({k}: {res[k].get('skipped') or res[k].get('error')})")
    if res.get("targets"):
        rows = [[t["name"], _fmt(t["value"], "", 2), t["goal"], t["status"], t.get("note", "")]
                for t in res["targets"]]
        out += ["", title("Targets", "this run"),
                _table(["target", "measured", "goal", "status", "note"], rows, markdown)]
    return "\n".join(out)


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
    p = argparse.ArgumentParser(prog="road-seg-bench", description=__doc__.split("\n\n")[0],
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
        print(f"road-seg-bench: model {s.model} does not exist (pass --model)", file=sys.stderr)
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
