"""launch_testing: ``road_segmentation.launch.py lifecycle:=true autostart:=true``.

Launch's ``ChangeState`` events configure and activate the managed node (masks come out); the
test then deactivates it through its service (frames skipped, no masks), activates it again and
shuts it down through the services: the node process exits 0 and its exit ends the launch. The
shutdown request is the test's last step, so the launch's end never races the test's own teardown.
"""

from __future__ import annotations

import time
import unittest

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
from domain_ids import domain_id
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_env import SHARE, use_installed_env
from launch_helpers import SHUTDOWN_ERRORS, LastCall, Probe, image_msg, values
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from scenes import road_scene

DOMAIN_ID = domain_id("lifecycle_launch")
IMAGE_TOPIC = "/managed/image_raw"
LAST_CALL: LastCall | None = None


@pytest.mark.launch_test
def generate_test_description():
    use_installed_env(DOMAIN_ID)
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(SHARE / "launch" / "road_segmentation.launch.py")),
                                 launch_arguments={"image": IMAGE_TOPIC, "lifecycle": "true",
                                                   "autostart": "true"}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


class TestManagedNode(unittest.TestCase):
    def test_launch_activates_then_services_drive_it_to_shutdown(self):
        global LAST_CALL
        LAST_CALL = LastCall(ChangeState, "/road_seg_node/change_state", DOMAIN_ID)
        probe = Probe(IMAGE_TOPIC, DOMAIN_ID)
        try:
            change = probe.node.create_client(ChangeState, "/road_seg_node/change_state")
            get = probe.node.create_client(GetState, "/road_seg_node/get_state")
            self.assertTrue(change.wait_for_service(60.0) and get.wait_for_service(10.0))

            def call(client, request):
                future = client.call_async(request)
                probe.wait(future.done, 30, client.srv_name)
                return future.result()

            def transition(tid: int) -> bool:
                return call(change, ChangeState.Request(transition=Transition(id=tid))).success

            # configured and activated by launch's ChangeState events
            mask, _ = probe.segment(road_scene(seed=1), sec=500, timeout=90)
            self.assertEqual((mask.encoding, mask.width, mask.height), ("mono8", 240, 180))
            self.assertEqual(call(get, GetState.Request()).current_state.label, "active")
            # deactivate: frames counted as skipped, no masks
            self.assertTrue(transition(Transition.TRANSITION_DEACTIVATE))
            n_masks = len(probe.outputs("road_mask"))
            for i in range(3):
                probe.pub.publish(image_msg(road_scene(seed=2), 600 + i))
                time.sleep(0.1)
            probe.wait(lambda: any(s.name == "road_seg_node: road segmentation" and values(s)["active"] == "false"
                                   and int(values(s)["frames_skipped"]) >= 3
                                   for d in probe.outputs("diagnostics") for s in d.status), 15,
                       "diagnostics of the inactive node counting skipped frames")
            self.assertEqual(len(probe.outputs("road_mask")), n_masks)
            # activate again
            self.assertTrue(transition(Transition.TRANSITION_ACTIVATE))
            probe.segment(road_scene(seed=3), sec=700, timeout=30)
        finally:
            probe.close()
        # then shut down from active, last: the node's exit ends the launch, so this test returns as soon as the
        # transition is answered; the exit code and the node's log are checked after shutdown
        response = LAST_CALL.call(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVE_SHUTDOWN)))
        self.assertTrue(response is not None and response.success, "shutdown transition answered with success")


@launch_testing.post_shutdown_test()
class TestAfterShutdown(unittest.TestCase):
    @classmethod
    def tearDownClass(cls):
        if LAST_CALL is not None:
            LAST_CALL.close()

    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_output(self, proc_output):
        text = "".join(o.text.decode(errors="replace") if isinstance(o.text, bytes) else o.text for o in proc_output)
        self.assertIn("shut down from active", text)
        for error in SHUTDOWN_ERRORS:
            self.assertNotIn(error, text)
