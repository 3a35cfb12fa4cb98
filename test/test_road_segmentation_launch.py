"""launch_testing: ``road_segmentation.launch.py`` from the installed share folder, checked by its outputs.

Camera frames go in; masks (size, encoding, header, IoU against the reference ``RoadSegmenter``),
overlays (pixel-exact against ``draw_overlay``) and a diagnostics message come out; after shutdown
every process exited 0 and nothing was logged to a dead rosout.
"""

from __future__ import annotations

import os
import threading
import time
import unittest

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_env import SHARE, SHIPPED_MODEL, use_installed_env
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image

from road_seg_perception.core.overlay import draw_overlay
from road_seg_perception.core.segmenter import RoadSegmenter

DOMAIN_ID = 1 + (os.getpid() + 53) % 200
IMAGE_TOPIC = "/front/image_raw"
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
SHUTDOWN_ERRORS = ("Failed to publish log message to rosout", "Traceback", "terminate called", "RCLError")


def road_scene(h: int = 180, w: int = 240, seed: int = 0) -> np.ndarray:
    """A synthetic street: sky, buildings, a grey road trapezoid, a little noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 3] = (140, 180, 230)
    img[h // 3:] = (90, 80, 70)
    ys, xs = np.mgrid[0:h, 0:w]
    road = (ys > h // 2) & (np.abs(xs - w / 2) < (ys - h / 2) * 1.4 + 10)
    img[road] = (120, 120, 125)
    return np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


def image_msg(rgb: np.ndarray, sec: int) -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3,
                data=rgb.tobytes())
    msg.header.frame_id = "front_camera"
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 250
    return msg


def as_array(msg: Image) -> np.ndarray:
    ch = {"mono8": 1, "rgb8": 3}[msg.encoding]
    a = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, : msg.width * ch]
    return a.reshape(msg.height, msg.width, ch) if ch > 1 else a


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


class Probe:
    """A test-side node on its own context: publishes camera frames, collects the launched node's outputs."""

    def __init__(self, image_topic: str = IMAGE_TOPIC, domain_id: int = DOMAIN_ID, namespace: str = "/"):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("launch_probe", namespace=namespace, context=self.ctx)
        self.pub = self.node.create_publisher(Image, image_topic, RELIABLE)
        self.lock = threading.Lock()
        self.got: dict[str, list] = {"road_mask": [], "road_overlay": [], "diagnostics": []}
        for name in ("road_mask", "road_overlay"):
            self.node.create_subscription(Image, "/" + name, self._keep(name), RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._keep("diagnostics"), 50)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _keep(self, name):
        def cb(msg):
            with self.lock:
                self.got[name].append(msg)
        return cb

    def outputs(self, name: str) -> list:
        with self.lock:
            return list(self.got[name])

    def wait(self, pred, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def segment(self, rgb: np.ndarray, sec: int, timeout: float = 60.0) -> tuple[Image, Image | None]:
        """Publish ``rgb`` (again every 0.5 s: the node may still be starting) until its mask arrives."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pub.publish(image_msg(rgb, sec))
            t = time.monotonic() + 0.5
            while time.monotonic() < t:
                mask = next((m for m in self.outputs("road_mask") if m.header.stamp.sec == sec), None)
                if mask is not None:
                    time.sleep(0.2)
                    overlay = next((m for m in self.outputs("road_overlay") if m.header.stamp.sec == sec), None)
                    return mask, overlay
                time.sleep(0.02)
        raise AssertionError(f"no road_mask with stamp {sec} within {timeout} s")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@pytest.mark.launch_test
def generate_test_description():
    use_installed_env(DOMAIN_ID)
    launch_file = SHARE / "launch" / "road_segmentation.launch.py"
    assert launch_file.is_file(), launch_file
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)),
                                 launch_arguments={"image": IMAGE_TOPIC}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


class TestNodeOutputs(unittest.TestCase):
    def test_masks_overlays_and_diagnostics(self):
        reference = RoadSegmenter(SHIPPED_MODEL, backend="onnxruntime")
        probe = Probe()
        try:
            for i, (h, w) in enumerate([(180, 240), (97, 131)]):
                rgb = road_scene(h, w, seed=i)
                mask, overlay = probe.segment(rgb, sec=100 + i)
                self.assertEqual((mask.encoding, mask.height, mask.width), ("mono8", h, w))
                self.assertEqual((mask.header.frame_id, mask.header.stamp.nanosec), ("front_camera", 250))
                got = as_array(mask)
                self.assertTrue(set(np.unique(got)) <= {0, 255})
                expected = reference.segment(rgb).mask
                self.assertGreater(expected.mean(), 0, "the reference finds road in the scene")
                self.assertGreaterEqual(iou(got, expected), 0.99)
                self.assertIsNotNone(overlay, "road_overlay published with the mask")
                self.assertEqual((overlay.encoding, overlay.height, overlay.width), ("rgb8", h, w))
                self.assertEqual(overlay.header, mask.header)
                np.testing.assert_array_equal(as_array(overlay),
                                              draw_overlay(rgb, got, (0, 255, 0), 0.45, boundary=True))
            probe.wait(lambda: any(s.name == "road_seg_node: road segmentation" and
                                   int(values(s)["frames_processed"]) >= 2
                                   for d in probe.outputs("diagnostics") for s in d.status), 10,
                       "diagnostics counting the processed frames")
            status = next(s for d in probe.outputs("diagnostics") for s in d.status
                          if int(values(s).get("frames_processed", 0)) >= 2)
            v = values(status)
            self.assertEqual((v["backend"], v["input_topic"], v["active"]), ("onnxruntime", IMAGE_TOPIC, "true"))
            self.assertTrue(v["model"].endswith("road_unet_camvid.onnx"), v["model"])
            self.assertEqual(int(v["frames_bad"]), 0)
        finally:
            probe.close()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_clean_shutdown_output(self, proc_output):
        text = "".join(out.text.decode(errors="replace") if isinstance(out.text, bytes) else out.text
                       for out in proc_output)
        self.assertIn("shutting down", text)
        for error in SHUTDOWN_ERRORS:
            self.assertNotIn(error, text)
