"""rclpy-side test tools: waiting, ``sensor_msgs/Image`` builders and readers, and ``Harness`` (a live node)."""

from __future__ import annotations

import array
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from road_seg_perception.ros.node import RoadSegNode

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def header(sec: int, frame_id: str = "camera_optical") -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, 123_456_789
    return h


def image_msg(rgb: np.ndarray, encoding: str, stamp: int, pad: int = 0) -> Image:
    """An Image of ``rgb`` in ``encoding`` (lossy encodings are built from its pixels)."""
    h, w = rgb.shape[:2]
    if encoding == "rgb8":
        px = rgb
    elif encoding == "bgr8":
        px = rgb[..., ::-1]
    elif encoding == "rgba8":
        px = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], 2)
    elif encoding == "mono8":
        px = rgb[..., 1]
    elif encoding == "mono16":
        px = (rgb[..., 1].astype(np.uint16) * 257).astype("<u2").view(np.uint8).reshape(h, w * 2)
    elif encoding.startswith("bayer"):
        px = rgb[..., 1]  # any byte plane is a valid mosaic
    elif encoding in ("yuv422", "yuyv"):
        px = rgb[..., :2]
    else:
        raise ValueError(encoding)
    rows = np.ascontiguousarray(px).reshape(h, -1)
    rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], 1)
    return Image(header=header(stamp), height=h, width=w, encoding=encoding, is_bigendian=0,
                 step=rows.shape[1], data=array.array("B", rows.tobytes()))


def random_rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def as_array(msg: Image) -> np.ndarray:
    ch = {"mono8": 1, "rgb8": 3, "bgr8": 3}[msg.encoding]
    a = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, : msg.width * ch]
    return a.reshape(msg.height, msg.width, ch) if ch > 1 else a


class Harness:
    """The node under test plus a test-side node publishing inputs and collecting outputs, both spun."""

    def __init__(self, ctx, model: Path, params: dict | None = None, reliable_input: bool = False,
                 factory=None, compressed: bool = False, outputs=("road_mask", "road_overlay"),
                 diagnostics_period_s: float = 0.2):
        self.ns = "/t" + uuid.uuid4().hex[:10]
        topic = "image/compressed" if compressed else "image"
        values = {"model_path": str(model), "use_compressed": compressed, **(params or {})}
        if reliable_input:  # through the qos_overrides parameters: exact counts need every frame delivered
            values[f"qos_overrides.{self.ns}/{topic}.subscription.reliability"] = "reliable"
            values[f"qos_overrides.{self.ns}/{topic}.subscription.history"] = "keep_all"
        self.node = RoadSegNode(namespace=self.ns, context=ctx, segmenter_factory=factory,
                                diagnostics_period_s=diagnostics_period_s,
                                parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.io = rclpy.create_node("tester", namespace=self.ns, context=ctx)
        self.pub = self.io.create_publisher(CompressedImage if compressed else Image, topic, RELIABLE)
        self.info_pub = self.io.create_publisher(CameraInfo, "camera_info", RELIABLE)
        self.received: dict[str, list] = {name: [] for name in outputs}
        self._lock = threading.Lock()
        for name in outputs:
            msg_type = CameraInfo if name == "road_camera_info" else Image
            self.io.create_subscription(msg_type, name, self._collector(name), RELIABLE)
        self.diagnostics: list[DiagnosticStatus] = []
        self.io.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.io)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        wait_for(lambda: self.pub.get_subscription_count() > 0, what="the node's image subscription")
        for name in outputs:
            pub = {"road_mask": self.node.mask_pub, "road_overlay": self.node.overlay_pub,
                   "road_probability": self.node.probability_pub,
                   "road_camera_info": self.node.camera_info_pub}[name]
            wait_for(lambda p=pub: p.get_subscription_count() > 0, what=f"a subscriber on {name}")

    def _collector(self, name):
        def cb(msg):
            with self._lock:
                self.received[name].append(msg)
        return cb

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name == f"{self.node.get_name()}: road segmentation" and \
                    dict((kv.key, kv.value) for kv in s.values).get("input_topic", "").startswith(self.ns + "/"):
                with self._lock:
                    self.diagnostics.append(s)

    def outputs(self, name: str) -> list:
        with self._lock:
            return list(self.received[name])

    def counts(self):
        return self.node.scheduler.counts()

    def publish_settled(self, msg) -> None:
        """Publish and wait until the node has fully accounted for the frame (lock-step)."""
        before = self.counts().received
        self.pub.publish(msg)
        wait_for(lambda: self.counts().received == before + 1 and self.counts().pending == 0,
                 what="the frame to be accounted for")

    def mask_for(self, stamp_sec: int, timeout: float = 10.0) -> Image:
        def find():
            return next((m for m in self.outputs("road_mask") if m.header.stamp.sec == stamp_sec), None)
        wait_for(lambda: find() is not None, timeout, what=f"road_mask with stamp {stamp_sec}")
        return find()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(5.0)
        self.node.destroy_node()
        self.io.destroy_node()
