"""launch_testing: the managed node driven to its end by launch events alone.

``road_segmentation.launch.py lifecycle:=true autostart:=true`` configures and activates the node. The test
then emits launch_ros ``ChangeState`` events into the running launch (deactivate, cleanup, shutdown, by
``lifecycle_msgs`` transition id); an ``OnStateTransition`` handler registered here records every
``StateTransition`` launch sees, and the test waits for each before checking the node's outputs in that
state: inactive, frames are counted as skipped and no mask comes out; unconfigured, the model is closed,
the topics and ``/diagnostics`` are gone; shutdown ends the process with exit 0, and its exit the launch.
"""

from __future__ import annotations

import threading
import time
import unittest

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
from domain_ids import domain_id
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_env import SHARE, use_installed_env
from launch_helpers import SHUTDOWN_ERRORS, Probe, image_msg, values
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.events.matchers import matches_node_name
from lifecycle_msgs.msg import Transition
from scenes import road_scene

DOMAIN_ID = domain_id("lifecycle_events_launch")
IMAGE_TOPIC = "/evented/image_raw"
NODE = "road_seg_node"
PROCESS = "road_seg_lifecycle_node"
STATUS_NAME = f"{NODE}: road segmentation"


class TransitionLog:
    """The ``(start_state, goal_state)`` of every ``StateTransition`` event, as launch handled them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []

    def record(self, context) -> None:
        event = context.locals.event
        with self.lock:
            self.seen.append((event.start_state, event.goal_state))

    def copy(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.seen)


@pytest.mark.launch_test
def generate_test_description():
    use_installed_env(DOMAIN_ID)
    log = TransitionLog()
    return LaunchDescription([
        RegisterEventHandler(OnStateTransition(entities=[OpaqueFunction(function=log.record)])),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(SHARE / "launch" / "road_segmentation.launch.py")),
                                 launch_arguments={"image": IMAGE_TOPIC, "lifecycle": "true",
                                                   "autostart": "true"}.items()),
        launch_testing.actions.ReadyToTest(),
    ]), {"transitions": log}


class TestLaunchEventsDriveTheNode(unittest.TestCase):
    def test_deactivate_cleanup_shutdown_by_launch_events(self, launch_service, proc_info, proc_output,
                                                          transitions):
        probe = Probe(IMAGE_TOPIC, DOMAIN_ID)

        def change_state(transition_id: int, start: str, goal: str) -> None:
            """Emit ``ChangeState`` into the launch; wait for launch to see the transition reach ``goal``."""
            launch_service.emit_event(ChangeState(lifecycle_node_matcher=matches_node_name(NODE),
                                                  transition_id=transition_id))
            probe.wait(lambda: (start, goal) in transitions.copy(), 30, f"launch to see {start} -> {goal}")

        def statuses() -> list:
            return [s for d in probe.outputs("diagnostics") for s in d.status if s.name == STATUS_NAME]

        try:
            # active (autostart's ChangeState events): masks come out
            mask, _ = probe.segment(road_scene(seed=1), sec=500, timeout=90)
            self.assertEqual((mask.encoding, mask.width, mask.height), ("mono8", 240, 180))
            self.assertIn(("activating", "active"), transitions.copy())

            # deactivate: frames are counted as skipped, no mask is published
            change_state(Transition.TRANSITION_DEACTIVATE, "deactivating", "inactive")
            n_masks = len(probe.outputs("road_mask"))
            for i in range(3):
                probe.pub.publish(image_msg(road_scene(seed=2), 600 + i))
                time.sleep(0.1)
            probe.wait(lambda: any(values(s)["active"] == "false" and int(values(s)["frames_skipped"]) >= 3
                                   for s in statuses()), 15, "diagnostics of the inactive node counting skipped frames")
            self.assertEqual(len(probe.outputs("road_mask")), n_masks)
            self.assertFalse(any(m.header.stamp.sec >= 600 for m in probe.outputs("road_mask")))

            # cleanup: the model is closed, the node's topics and its diagnostics are gone
            change_state(Transition.TRANSITION_CLEANUP, "cleaningup", "unconfigured")
            proc_output.assertWaitFor("cleaned up: model freed", process=PROCESS, timeout=15)
            probe.wait(lambda: probe.node.count_publishers("/road_mask") == 0
                       and probe.node.count_subscribers(IMAGE_TOPIC) == 0, 15, "the node's topics to go")
            time.sleep(0.5)  # a diagnostics message already on its way
            n_status = len(statuses())
            probe.pub.publish(image_msg(road_scene(seed=3), 700))
            time.sleep(2.5)  # more than two diagnostics periods (1 s)
            self.assertEqual(len(statuses()), n_status, "diagnostics after cleanup")
            self.assertEqual(len(probe.outputs("road_mask")), n_masks)
        finally:
            probe.close()

        # shutdown from unconfigured: the process exits 0 (checked after the launch), and the launch ends with it
        change_state(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, "shuttingdown", "finalized")
        proc_info.assertWaitForShutdown(process=PROCESS, timeout=30)


@launch_testing.post_shutdown_test()
class TestAfterShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_transitions_in_order(self, transitions):
        goals = [goal for _, goal in transitions.copy()]
        expected = ["configuring", "inactive", "activating", "active", "deactivating", "inactive",
                    "cleaningup", "unconfigured", "shuttingdown", "finalized"]
        # autostart calls change_state as soon as the service answers, which can be before launch's
        # transition_event subscription has matched the node's publisher: the first event ("configuring") can
        # be missed; every later one must arrive, in order
        self.assertIn(goals, (expected, expected[1:]))

    def test_output(self, proc_output):
        text = "".join(o.text.decode(errors="replace") if isinstance(o.text, bytes) else o.text for o in proc_output)
        for line in ("inactive: incoming frames are skipped", "cleaned up: model freed", "shut down from unconfigured"):
            self.assertIn(line, text)
        for error in SHUTDOWN_ERRORS:
            self.assertNotIn(error, text)
