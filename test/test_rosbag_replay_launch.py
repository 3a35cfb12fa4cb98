"""launch_testing: ``rosbag_replay.launch.py`` from the installed share folder replays a bag through the node.

Where ``ros2 bag`` is missing (here) the launch file's ``player:=auto`` uses the package's
``road-seg-replay``, which also records the outputs; on a ROS 2 installation it is ``ros2 bag play``.
The node segments every frame (diagnostics); the recorded masks are checked against the reference
segmenter frame by frame (stamps, sizes, IoU),
the overlays and diagnostics are there, ``exit_when_done`` ends the launch and every process exits 0.
"""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

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
from launch_helpers import SHUTDOWN_ERRORS, iou
from scenes import road_scene

from road_seg_perception.bagio.bag import Frame, iter_messages, mono8_array, write_frames
from road_seg_perception.bagio.image_codec import image_to_rgb
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.ros.launch_args import ros2bag_available

DOMAIN_ID = domain_id("rosbag_replay_launch")
WORK = Path(tempfile.mkdtemp(prefix="road_seg_replay_launch_"))
BAG = WORK / "drive"
RECORDED = WORK / "outputs"
FRAMES = 4
START_NS = 1_700_000_000 * 1_000_000_000


@pytest.mark.launch_test
def generate_test_description():
    use_installed_env(DOMAIN_ID)
    write_frames(BAG, [Frame(road_scene(120, 160, seed=10 + i)) for i in range(FRAMES)], rate=1.0,
                 start_ns=START_NS)
    launch_file = SHARE / "launch" / "rosbag_replay.launch.py"
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)), launch_arguments={
            "bag": str(BAG), "topics": "/camera/image_raw", "record": "true", "record_bag": str(RECORDED),
            "exit_when_done": "true"}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


class TestReplay(unittest.TestCase):
    def test_replay_runs_to_the_end(self, proc_info):
        """The player ends by itself. Then ``exit_when_done`` ends the launch, which shuts the node down: this test
        returns at once so as not to race with that end; the post-shutdown checks see every exit code."""
        proc_info.assertWaitForShutdown(process="ros2" if ros2bag_available() else "road-seg-replay", timeout=180)


@launch_testing.post_shutdown_test()
class TestRecordedOutputs(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        """Every process, the player included, ended by itself with exit code 0."""
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_clean_output(self, proc_output):
        text = "".join(o.text.decode(errors="replace") if isinstance(o.text, bytes) else o.text for o in proc_output)
        for error in SHUTDOWN_ERRORS:
            self.assertNotIn(error, text)

    def test_every_frame_masked_like_the_reference(self):
        reference = RoadSegmenter(SHIPPED_MODEL, backend="onnxruntime")
        inputs = {m.msg.header.stamp.sec * 10**9 + m.msg.header.stamp.nanosec: m.msg
                  for m in iter_messages(BAG, ["/camera/image_raw"])}
        masks = [m.msg for m in iter_messages(RECORDED, ["/road_mask"])]
        overlays = [m.msg for m in iter_messages(RECORDED, ["/road_overlay"])]
        diagnostics = [m.msg for m in iter_messages(RECORDED, ["/diagnostics"])]
        # Recording starts once the recorder has discovered the node: the first frame's outputs may come
        # before that; every later frame's are there.
        self.assertIn(len(masks), (FRAMES - 1, FRAMES))
        for mask in masks:
            stamp = mask.header.stamp.sec * 10**9 + mask.header.stamp.nanosec
            self.assertIn(stamp, inputs)
            self.assertEqual((mask.encoding, mask.height, mask.width, mask.header.frame_id),
                             ("mono8", 120, 160, "camera"))
            expected = reference.segment(image_to_rgb(inputs[stamp])).mask
            self.assertGreaterEqual(iou(mono8_array(mask), expected), 0.99)
        seconds = [START_NS // 10**9 + i for i in range(FRAMES)]
        self.assertEqual(sorted(m.header.stamp.sec for m in masks), seconds[FRAMES - len(masks):])
        self.assertEqual(len(overlays), len(masks))
        self.assertTrue(all((o.encoding, o.height, o.width) == ("rgb8", 120, 160) for o in overlays))
        statuses = [s for d in diagnostics for s in d.status if s.name == "road_seg_node: road segmentation"]
        self.assertTrue(statuses, "diagnostics recorded")
        last = {kv.key: kv.value for kv in statuses[-1].values}
        self.assertEqual(last["input_topic"], "/camera/image_raw")
        self.assertEqual((int(last["frames_received"]), int(last["frames_processed"])), (FRAMES, FRAMES))
        self.assertTrue(np.isfinite(float(last["processed_rate_hz"])))
