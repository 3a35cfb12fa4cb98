"""The rclpy side of a live run: publish frames, timestamp every mask that comes back."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from bench.frames import to_encoding
from bench.settings import FRAME_ID, IMAGE_TOPIC, MASK_TOPIC
from road_seg_perception.core.metrics import percentile
from road_seg_perception.ros.messages import numpy_to_image_msg

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
        self.msgs = [numpy_to_image_msg(to_encoding(f, encoding), encoding, Header(frame_id=FRAME_ID))
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


