"""launch_testing: ``road_segmentation.launch.py`` from the installed share folder, checked by its outputs.

Camera frames go in; masks (size, encoding, header, IoU against the reference ``RoadSegmenter``),
overlays (pixel-exact against ``draw_overlay``) and a diagnostics message come out; after shutdown
every process exited 0 and nothing was logged to a dead rosout.
"""

from __future__ import annotations

import unittest

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import numpy as np
import pytest
from domain_ids import domain_id
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_env import SHARE, SHIPPED_MODEL, use_installed_env
from launch_helpers import SHUTDOWN_ERRORS, Probe, iou, values
from scenes import road_scene
from sensor_msgs.msg import Image

from road_seg_perception.core.overlay import draw_overlay
from road_seg_perception.core.segmenter import RoadSegmenter

DOMAIN_ID = domain_id("road_segmentation_launch")
IMAGE_TOPIC = "/front/image_raw"


def as_array(msg: Image) -> np.ndarray:
    ch = {"mono8": 1, "rgb8": 3}[msg.encoding]
    a = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, : msg.width * ch]
    return a.reshape(msg.height, msg.width, ch) if ch > 1 else a


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
        probe = Probe(IMAGE_TOPIC, DOMAIN_ID)
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
            self.assertTrue(v["model"].endswith(SHIPPED_MODEL.name), v["model"])  # the default for this CPU
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
