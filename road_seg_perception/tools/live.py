"""Live replay of a bag through ``road_seg_node`` running as its own process, with the outputs recorded.

Used by the live replay tests and the demo::

    run = run_live(bag, out_bag, model, lockstep=True)
    run.outputs            # one LiveOutput per recorded road_mask: stamp, frame_id, size, mask
    run.node_counts        # the node's final frame counters, from /diagnostics
    run.latency_ms()       # end-to-end (publish -> mask received) p50/p95

The node and this process share a private ``ROS_DOMAIN_ID`` so parallel runs do not mix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from road_seg_perception.bagio.bag import (
    COMPRESSED_TOPIC,
    COMPRESSED_TYPE,
    IMAGE_TYPES,
    default_image_topic,
    iter_messages,
    mono8_array,
    read_bag_topics,
    require_topic,
    stamp_ns_of,
)
from road_seg_perception.bagio.image_codec import compressed_header
from road_seg_perception.core.metrics import percentile
from road_seg_perception.ros.replay import Recorder, Replayer, StampWaiter, header_stamp_ns
from road_seg_perception.tools.eval_outputs import MASK_TOPIC, OVERLAY_TOPIC

DIAGNOSTICS_TOPIC = "/diagnostics"
COUNTER_KEYS = ("received", "processed", "skipped", "dropped_stale", "bad", "pending")


class LiveReplayError(RuntimeError):
    """The node could not be started or never became ready; the message includes its log tail."""


@dataclass
class LiveOutput:
    """One recorded ``road_mask``."""

    stamp_ns: int
    frame_id: str
    width: int
    height: int
    encoding: str
    received_ns: int
    mask: np.ndarray


@dataclass
class LiveRun:
    """What a live replay produced."""

    bag: Path
    out_bag: Path
    image_topic: str
    published: dict[int, tuple[str, int]]  # input stamp -> (frame_id, wall ns at publish)
    outputs: list[LiveOutput]
    overlays: list[tuple[int, str, int, int, str]]  # stamp, frame_id, width, height, encoding
    input_sizes: dict[int, tuple[int, int]]  # stamp -> (width, height) of the input image
    node_counts: dict[str, int] | None
    node_diagnostics: dict[str, str] | None
    wall_s: float
    lockstep_timeouts: int
    node_log: str
    node_returncode: int | None
    settings: dict[str, Any] = field(default_factory=dict)

    def accounting_problem(self) -> str | None:
        """Why the recording does not hold exactly one mask per frame the node processed (None if it does)."""
        if self.node_counts is None:
            return "no /diagnostics with the node's frame counters was recorded"
        processed = self.node_counts.get("processed")
        stamps = [o.stamp_ns for o in self.outputs]
        if len(set(stamps)) != len(stamps):
            return f"the recording holds {len(stamps) - len(set(stamps))} duplicate mask(s)"
        if processed != len(self.outputs):
            return (f"the node processed {processed} frame(s) but the recording holds {len(self.outputs)} mask(s)"
                    f" (published {len(self.published)})")
        return None

    def masks(self) -> dict[int, np.ndarray]:
        return {o.stamp_ns: o.mask for o in self.outputs}

    def latency_ms(self) -> dict[str, float]:
        """End-to-end latency (publish to mask recorded, same clock) p50/p95 over matched frames."""
        lat = [(o.received_ns - self.published[o.stamp_ns][1]) / 1e6 for o in self.outputs
               if o.stamp_ns in self.published]
        return {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "n": len(lat)}

    def output_fps(self) -> float:
        """Masks per second over the span of the recorded outputs."""
        t = sorted(o.received_ns for o in self.outputs)
        return (len(t) - 1) / ((t[-1] - t[0]) / 1e9) if len(t) > 1 and t[-1] > t[0] else 0.0


def private_domain_id() -> int:
    """A ROS domain id (1..100) derived from the process id, unless ``ROAD_SEG_LIVE_DOMAIN_ID`` is set."""
    env = os.environ.get("ROAD_SEG_LIVE_DOMAIN_ID")
    return int(env) if env else 1 + os.getpid() % 100


def subprocess_env(domain_id: int) -> dict[str, str]:
    """Environment for a child process: the domain id, and this package importable even if not installed."""
    src = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": src + (os.pathsep + path if path else "")}


def node_command(model: Path | str, image_topic: str, compressed: bool, params: dict[str, Any] | None = None
                 ) -> list[str]:
    """Command line that starts ``road_seg_node`` reading ``image_topic``."""
    cmd = [sys.executable, "-m", "road_seg_perception.ros.node", "--ros-args"]
    if compressed:
        cmd += ["-r", f"image/compressed:={image_topic}", "-p", "use_compressed:=true"]
    else:
        cmd += ["-r", f"image:={image_topic}"]
    cmd += ["-p", f"model_path:={model}"]
    for k, v in (params or {}).items():
        val = str(v).lower() if isinstance(v, bool) else v
        cmd += ["-p", f"{k}:={val}"]
    return cmd


def _diag_values(data: bytes) -> dict[str, str] | None:
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.serialization import deserialize_message

    arr = deserialize_message(data, DiagnosticArray)
    for st in arr.status:
        values = {kv.key: kv.value for kv in st.values}
        if "frames_received" in values:
            return values
    return None


def node_counts(values: dict[str, str]) -> dict[str, int]:
    """The node's frame counters from its diagnostics key/values."""
    return {k: int(values[f"frames_{k}"]) for k in COUNTER_KEYS if f"frames_{k}" in values}


def run_live(bag: Path | str, out_bag: Path | str, model: Path | str, rate: float = 1.0, lockstep: bool = False,
             image_topic: str | None = None, node_params: dict[str, Any] | None = None,
             domain_id: int | None = None, startup_timeout_s: float = 90.0, frame_timeout_s: float = 10.0,
             settle_timeout_s: float = 10.0, storage: str = "sqlite3", log_path: Path | None = None) -> LiveRun:
    """Start the node, replay ``bag`` into it, record its outputs to ``out_bag``, stop the node.

    ``lockstep`` publishes each image only after the previous one's mask came back (deterministic:
    nothing is dropped whatever the CPU load); otherwise images go out at ``rate`` x recorded timing.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    bag, out_bag = Path(bag), Path(out_bag)
    topics = read_bag_topics(bag)
    image_topic = image_topic or default_image_topic(topics)
    img_t = require_topic(bag, topics, image_topic, IMAGE_TYPES, "image", "image_topic")
    compressed = img_t.msgtype == COMPRESSED_TYPE or image_topic == COMPRESSED_TOPIC
    domain = private_domain_id() if domain_id is None else domain_id
    env = subprocess_env(domain)
    log_path = log_path or out_bag.parent / f"{out_bag.name}_node.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if lockstep:  # one frame in flight: a reliable input loses nothing and cannot queue
        node_params = {f"qos_overrides.{image_topic}.subscription.reliability": "reliable", **(node_params or {})}
    cmd = node_command(model, image_topic, compressed, node_params)

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = Node("road_seg_live_replay", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    spin_stop = threading.Event()

    def spin() -> None:
        while not spin_stop.is_set() and ctx.ok():
            executor.spin_once(timeout_sec=0.05)

    published: dict[int, tuple[str, int]] = {}
    last_diag: dict[str, Any] = {}
    diag_cond = threading.Condition()

    def on_message(topic: str, data: bytes, _now: int) -> None:
        if topic == DIAGNOSTICS_TOPIC:
            values = _diag_values(data)
            if values is not None:
                with diag_cond:
                    last_diag["values"] = values
                    diag_cond.notify_all()

    spinner = threading.Thread(target=spin, name="live_spin", daemon=True)
    proc: subprocess.Popen | None = None
    log_file = log_path.open("w")
    recorder = None
    waiter = None
    t_start = time.monotonic()
    try:
        replayer = Replayer(node, bag, topics=[image_topic], rate=rate)
        recorder = Recorder(node, out_bag, [MASK_TOPIC, OVERLAY_TOPIC, DIAGNOSTICS_TOPIC], storage,
                            overwrite=True, on_message=on_message, inputs=[bag])
        waiter = StampWaiter(node, MASK_TOPIC, reliable=True) if lockstep else None
        spinner.start()
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

        # ready = the node subscribes to the input and we subscribe to its outputs
        end = time.monotonic() + startup_timeout_s
        while time.monotonic() < end:
            if not spinner.is_alive():
                raise LiveReplayError("the executor thread of the replay node died (see the traceback above)")
            if proc.poll() is not None:
                raise LiveReplayError(f"road_seg_node exited with status {proc.returncode} during start-up:\n"
                                      + log_tail(log_path))
            if replayer.publishers[image_topic].get_subscription_count() > 0 and not recorder.unmatched():
                break
            time.sleep(0.1)
        else:
            raise LiveReplayError(f"road_seg_node not ready after {startup_timeout_s} s (command: {' '.join(cmd)})"
                                  ":\n" + log_tail(log_path))
        # the recorder sees the node's publishers; give the node a moment to see the recorder too, so the
        # first mask and overlay are neither lost nor skipped (overlays are drawn only with a subscriber)
        recorder.wait_matched(timeout_s=5.0)
        time.sleep(0.5)

        def on_publish(topic: str, _ts: int, data: bytes, wall_ns: int) -> None:
            if proc.poll() is not None:
                raise LiveReplayError(f"road_seg_node exited with status {proc.returncode} during the replay:\n"
                                      + log_tail(log_path))
            msg_stamp = header_stamp_ns(data, replayer.msgtypes[topic])
            published[msg_stamp] = ("", wall_ns)
            if waiter is not None:
                waiter.wait(msg_stamp, frame_timeout_s)

        stats = replayer.run(on_publish=on_publish)
        n_images = stats.published[image_topic]

        # drain: wait for the node to report every frame received and none pending, and for the
        # recording to hold one mask per frame the node reports processed
        end = time.monotonic() + settle_timeout_s
        with diag_cond:
            while time.monotonic() < end:
                v = last_diag.get("values")
                if v is not None:
                    c = node_counts(v)
                    if (c.get("received", -1) >= n_images and c.get("pending", 1) == 0
                            and recorder.counts[MASK_TOPIC] >= c.get("processed", 0)):
                        break
                diag_cond.wait(0.2)
        time.sleep(0.3)
    finally:
        if recorder is not None:
            recorder.close()
        spin_stop.set()
        if spinner.is_alive():
            spinner.join(timeout=2.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        returncode = stop_process(proc)
        log_file.close()
    wall_s = time.monotonic() - t_start

    outputs: list[LiveOutput] = []
    overlays: list[tuple[int, str, int, int, str]] = []
    for m in iter_messages(out_bag, [MASK_TOPIC, OVERLAY_TOPIC]):
        s = stamp_ns_of(m.msg)
        if m.topic == MASK_TOPIC:
            outputs.append(LiveOutput(s, m.msg.header.frame_id, int(m.msg.width), int(m.msg.height),
                                      m.msg.encoding, m.timestamp_ns, mono8_array(m.msg).copy()))
        else:
            overlays.append((s, m.msg.header.frame_id, int(m.msg.width), int(m.msg.height), m.msg.encoding))
    input_sizes: dict[int, tuple[int, int]] = {}
    frame_ids: dict[int, str] = {}
    for m in iter_messages(bag, [image_topic]):
        s = stamp_ns_of(m.msg)
        frame_ids[s] = m.msg.header.frame_id
        if img_t.msgtype == COMPRESSED_TYPE:

            _, h, w = compressed_header(m.msg)
            input_sizes[s] = (w, h)
        else:
            input_sizes[s] = (int(m.msg.width), int(m.msg.height))
    published = {s: (frame_ids.get(s, ""), t) for s, (_, t) in published.items()}
    values = last_diag.get("values")
    return LiveRun(bag, out_bag, image_topic, published, outputs, overlays, input_sizes,
                   node_counts(values) if values else None, values, wall_s,
                   waiter.timeouts if waiter is not None else 0, log_path.read_text(errors="replace"), returncode,
                   {"rate": rate, "lockstep": lockstep, "domain_id": domain, "command": cmd})


def log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> int | None:
    """SIGINT the node (clean rclpy shutdown), then SIGKILL if it does not exit."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
    return proc.returncode
