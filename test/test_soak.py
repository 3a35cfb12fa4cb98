"""Soak test: a small bag looped at maximum rate through ``road_seg_node`` running as its own process.

Run it with ``make soak`` (``pytest -m soak test -s``); the normal test command deselects it.
``ROAD_SEG_SOAK_FRAMES`` sets how many frames are published (default 20000);
``ROAD_SEG_SOAK_WARMUP`` how many frames count as warm-up for the memory check (default: the first
30 % of the run). The heap grows until the largest burst the reliable reader buffers (up to
``WINDOW`` frames of 518 kB) has been seen; in 20000-frame runs on a quiet machine that took
about 6000 frames, then RSS stayed flat to within 0.2 MiB (the trajectory is printed).

What it checks, from the node's own ``/diagnostics`` counters and ``/proc/<pid>/status``:

* the node stays alive for the whole run and exits with status 0 within 2 s of SIGTERM at the end;
* resident memory after warm-up never grows more than 10 % above its value at the end of warm-up;
* exact accounting: received == processed + skipped + dropped + bad, nothing pending at the end;
* received == published, and bad == the malformed frames published (the transport is made
  lossless: reliable/keep-all on both ends, and the publisher keeps at most ``WINDOW`` frames in
  flight beyond what the node reported received, so no backlog can build in the DDS queues).

The model is the shipped ``models/road_unet_camvid.onnx`` when present, else an untrained model of
the same architecture exported once into ``build/soak_model/`` (gitignored); the output says which.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from domain_ids import domain_id

pytest.importorskip("rclpy", reason="rclpy is not installed")

from conftest import SHIPPED_MODEL  # noqa: E402

from road_seg_perception.bagio import bag as B  # noqa: E402
from road_seg_perception.tools.live import node_command, node_counts, subprocess_env  # noqa: E402

pytestmark = pytest.mark.soak

REPO = Path(__file__).resolve().parent.parent
SOAK_FRAMES = int(os.environ.get("ROAD_SEG_SOAK_FRAMES", "20000"))
WARMUP_FRAMES = int(os.environ.get("ROAD_SEG_SOAK_WARMUP", str(max(1, SOAK_FRAMES * 3 // 10))))
FRAME_HW = (360, 480)  # CamVid's size
GOOD_PER_PASS = 19  # plus one malformed frame per pass of the bag
WINDOW = 120  # frames in flight beyond the node's last reported "received"
MAX_RSS_GROWTH = 0.10
#: What a user would run on a CPU: every 2nd frame, overlay on (someone subscribes to it).
NODE_PARAMS = {"process_every_n": 2, "publish_overlay": True,
               "qos_overrides./camera/image_raw.subscription.reliability": "reliable",
               "qos_overrides./camera/image_raw.subscription.history": "keep_all"}
UNTRAINED_DIR = REPO / "build" / "soak_model"


def soak_model() -> tuple[Path, str]:
    """The shipped model, else a same-architecture untrained one (built once, cached)."""
    if SHIPPED_MODEL.is_file():
        return SHIPPED_MODEL, f"shipped model {SHIPPED_MODEL}"
    path = UNTRAINED_DIR / "road_unet_untrained.onnx"
    if not path.is_file():
        import keras

        from road_seg_perception.training.export import export_onnx
        from road_seg_perception.training.model import UNetConfig, build_unet

        UNTRAINED_DIR.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(0)
        model = build_unet(UNetConfig(input_hw=(192, 256), base_filters=24, levels=4, stem_stride=2))
        rng = np.random.default_rng(0)
        export_onnx(model, path, [rng.random((192, 256, 3), dtype=np.float32)])
        keras.backend.clear_session()
    return path, (f"untrained model of the shipped architecture {path} (192x256 input, 24 base filters, "
                  f"4 levels, stride-2 stem): {SHIPPED_MODEL} is missing")


def write_soak_bag(path: Path) -> tuple[Path, int]:
    """A bag of ``GOOD_PER_PASS`` road-like rgb8 frames and one malformed frame (step too short)."""
    rng = np.random.default_rng(0)
    h, w = FRAME_HW
    yy, xx = np.mgrid[0:h, 0:w]
    road = (yy > h * 0.55) & (np.abs(xx - w / 2) < (yy - h * 0.45) * 1.2)
    writer = B.BagWriter(path)
    writer.add_topic(B.IMAGE_TOPIC, B.IMAGE_TYPE)
    start = 1_700_000_000_000_000_000
    for i in range(GOOD_PER_PASS + 1):
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[:] = (120 + 3 * i, 170, 230)
        rgb[road] = (90, 90, 95)
        rgb = np.clip(rgb.astype(int) + rng.integers(-15, 16, rgb.shape), 0, 255).astype(np.uint8)
        t = start + i * 33_333_333
        msg = B.image_msg(rgb, "rgb8", t, "soak_cam")
        if i == GOOD_PER_PASS // 2:
            msg.step = w * 3 - 1  # malformed: the node must count it as bad and carry on
        writer.write(B.IMAGE_TOPIC, t, msg)
    writer.close()
    return path, GOOD_PER_PASS + 1


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from ``/proc/<pid>/status`` (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Sample:
    t: float
    published: int
    received: int
    rss_kib: int


@dataclass
class SoakState:
    """Shared between the publishing loop, the executor thread and the RSS sampler."""

    published: int = 0
    bad_published: int = 0
    window_wait_s: float = 0.0
    diag: dict[str, str] | None = None
    masks: int = 0
    overlays: int = 0
    samples: list[Sample] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def received(self) -> int:
        return int(self.diag["frames_received"]) if self.diag else 0


def test_soak_live_node(tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from road_seg_perception.ros.replay import Replayer

    model, model_text = soak_model()
    bag, per_pass = write_soak_bag(tmp_path / "soak_bag")
    bad_index = GOOD_PER_PASS // 2
    domain = domain_id("soak")
    log_path = tmp_path / "node.log"
    print(f"\nsoak: {SOAK_FRAMES} frames ({FRAME_HW[1]}x{FRAME_HW[0]} rgb8, 1 in {per_pass} malformed), "
          f"warm-up {WARMUP_FRAMES} frames, node parameters {NODE_PARAMS}\nsoak: model: {model_text}", flush=True)

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = Node("road_seg_soak", context=ctx)
    state = SoakState()
    stop = threading.Event()

    def on_diag(data: bytes) -> None:
        for st in deserialize_message(data, DiagnosticArray).status:
            values = {kv.key: kv.value for kv in st.values}
            if "frames_received" in values:
                with state.cond:
                    state.diag = values
                    state.cond.notify_all()

    def counter(name: str):
        def cb(_data: bytes) -> None:
            setattr(state, name, getattr(state, name) + 1)
        return cb

    out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50, raw=True)
    node.create_subscription(Image, "/road_mask", counter("masks"), out_qos, raw=True)
    node.create_subscription(Image, "/road_overlay", counter("overlays"), out_qos, raw=True)
    replayer = Replayer(node, bag, topics=[B.IMAGE_TOPIC], rate=0, loop=True, depth=WINDOW + 20)
    image_pub = replayer.publishers[B.IMAGE_TOPIC]
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    spinner = threading.Thread(target=lambda: _spin(executor, stop), daemon=True)
    spinner.start()

    cmd = node_command(model, B.IMAGE_TOPIC, False, NODE_PARAMS)
    log_file = log_path.open("w")
    proc = subprocess.Popen(cmd, env=subprocess_env(domain), stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def log_tail(n: int = 40) -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-n:])

    def sample_rss() -> None:
        while not stop.is_set() and proc.poll() is None:
            try:
                rss = rss_kib(proc.pid)
            except (OSError, RuntimeError):
                break
            with state.cond:
                state.samples.append(Sample(time.monotonic(), state.published, state.received(), rss))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    exit_s = None
    try:
        end = time.monotonic() + 120
        while not (image_pub.get_subscription_count() > 0 and state.diag is not None):
            assert proc.poll() is None, f"the node exited during start-up:\n{log_tail()}"
            assert time.monotonic() < end, f"the node was not ready after 120 s:\n{log_tail()}"
            time.sleep(0.1)
        time.sleep(1.0)  # both ends of every topic matched
        sampler.start()
        t0 = time.monotonic()
        stall_s = 120.0

        def on_publish(_topic: str, _ts: int, _data: bytes, _wall: int) -> None:
            with state.cond:
                if state.published % per_pass == bad_index:
                    state.bad_published += 1
                state.published += 1
                if state.published >= SOAK_FRAMES:
                    replay_stop.set()
                    return
                waited = time.monotonic()
                deadline = waited + stall_s
                while state.published - state.received() > WINDOW:
                    if proc.poll() is not None:
                        raise AssertionError(f"the node died (status {proc.returncode}):\n{log_tail()}")
                    if time.monotonic() > deadline:
                        raise AssertionError(f"the node received nothing for {stall_s} s:\n{log_tail()}")
                    state.cond.wait(0.2)
                state.window_wait_s += time.monotonic() - waited

        replay_stop = threading.Event()
        stats = replayer.run(replay_stop, on_publish=on_publish)
        publish_s = time.monotonic() - t0
        assert stats.published[B.IMAGE_TOPIC] == state.published == SOAK_FRAMES

        # settle: the node reports every published frame received and none pending
        end = time.monotonic() + 60
        with state.cond:
            while time.monotonic() < end:
                c = node_counts(state.diag)
                if c["received"] >= SOAK_FRAMES and c["pending"] == 0:
                    break
                state.cond.wait(0.5)
        duration_s = time.monotonic() - t0
        time.sleep(1.5)  # one more diagnostics period with the final counts
        final_rss = rss_kib(proc.pid)
        assert proc.poll() is None, f"the node died (status {proc.returncode}):\n{log_tail()}"
        stop.set()
        sampler.join(2.0)
        ts = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        exit_s = time.monotonic() - ts
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log_file.close()
        spinner.join(2.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)

    c = node_counts(state.diag)
    v = state.diag
    samples = state.samples
    warm = next((s for s in samples if s.received >= WARMUP_FRAMES), None)
    assert warm is not None, "no RSS sample after warm-up"
    after = [s for s in samples if s.t >= warm.t] + [Sample(time.monotonic(), SOAK_FRAMES, c["received"],
                                                            final_rss)]
    peak = max(after, key=lambda s: s.rss_kib)
    growth_end = final_rss / warm.rss_kib - 1
    growth_peak = peak.rss_kib / warm.rss_kib - 1
    mib = 1024.0
    print(f"soak: published {state.published} frames ({state.bad_published} malformed) in {publish_s:.1f} s "
          f"({state.published / publish_s:.1f} frames/s, {state.window_wait_s:.1f} s of it waiting for the node to "
          f"catch up); {duration_s:.1f} s until settled\n"
          f"soak: node counts {c}; processed {c['processed'] / duration_s:.1f} fps over the run; "
          f"masks received {state.masks}, overlays received {state.overlays}\n"
          f"soak: node latency p50 {v['latency_p50_ms']} ms p95 {v['latency_p95_ms']} ms (last 300 frames); "
          f"backend {v['backend']} on {v['device']}\n"
          f"soak: RSS {samples[0].rss_kib / mib:.1f} MiB at start, {warm.rss_kib / mib:.1f} MiB after warm-up "
          f"({warm.received} frames), peak {peak.rss_kib / mib:.1f} MiB (at {peak.received} frames), "
          f"{final_rss / mib:.1f} MiB at the end: growth after warm-up {100 * growth_end:+.1f} % at the end, "
          f"{100 * growth_peak:+.1f} % at the peak ({len(after)} samples)\n"
          f"soak: exit {proc.returncode} {exit_s:.2f} s after SIGTERM\n"
          f"soak: RSS MiB by frames received: " + ", ".join(
              f"{s.received}: {s.rss_kib / mib:.1f}" for s in samples[:: max(1, len(samples) // 12)]), flush=True)

    log = log_path.read_text(errors="replace")
    assert "reliability=reliable, history=keep_all" in log, "the QoS override did not apply:\n" + log[-3000:]
    assert proc.returncode == 0, log[-3000:]
    assert exit_s < 2.0, f"the node took {exit_s:.2f} s to exit after SIGTERM (at most 2 s)"
    assert "Traceback" not in log, log[-3000:]
    assert c["received"] == c["processed"] + c["skipped"] + c["dropped_stale"] + c["bad"] + c["pending"]
    assert c["pending"] == 0
    assert c["received"] == state.published, "lossless transport: every published frame must be received"
    assert c["bad"] == state.bad_published
    assert c["processed"] > 0 and c["skipped"] > 0
    assert state.masks > 0 and state.overlays > 0
    assert growth_peak <= MAX_RSS_GROWTH, f"RSS grew {100 * growth_peak:.1f} % after warm-up"


def _spin(executor, stop: threading.Event) -> None:
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
