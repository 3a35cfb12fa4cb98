"""``SubscriptionIntake``: a subscription served by a thread of its own, never by the executor."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for
from std_msgs.msg import String

from road_seg_perception.ros.intake import NoExecutorGroup, SubscriptionIntake, intake_available

pytestmark = pytest.mark.skipif(not intake_available(), reason="this rclpy has no rclpy_implementation.WaitSet")
InvalidHandle = rclpy_implementation.InvalidHandle
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture
def pair(ctx):
    """A node spun by an executor, with a publisher and a NoExecutorGroup subscription on a fresh topic."""
    node = rclpy.create_node("intake_test", namespace="/i" + uuid.uuid4().hex[:10], context=ctx)
    got: list[tuple[str, str]] = []  # (data, thread name)

    def on_msg(msg: String) -> None:
        got.append((msg.data, threading.current_thread().name))

    sub = node.create_subscription(String, "chatter", on_msg, RELIABLE, callback_group=NoExecutorGroup())
    pub = node.create_publisher(String, "chatter", RELIABLE)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    wait_for(lambda: pub.get_subscription_count() > 0, what="the subscription to match")
    yield node, sub, pub, on_msg, got
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()


def test_every_message_is_taken_once_in_order_on_the_intake_thread(pair, ctx):
    node, sub, pub, on_msg, got = pair
    intake = SubscriptionIntake(sub, on_msg, ctx, name="intake_under_test").start()
    try:
        for i in range(50):
            pub.publish(String(data=f"m{i}"))
        wait_for(lambda: len(got) >= 50, what="50 messages")
        time.sleep(0.3)  # an executor that also took them would add duplicates by now
        assert [d for d, _ in got] == [f"m{i}" for i in range(50)]
        assert {t for _, t in got} == {"intake_under_test"}
        assert intake.taken == 50
    finally:
        intake.stop()
    assert not intake.alive


def test_nothing_is_delivered_without_the_intake_thread(pair):
    node, sub, pub, on_msg, got = pair
    pub.publish(String(data="lost"))
    time.sleep(0.5)
    assert got == []  # the executor never runs a NoExecutorGroup subscription


def test_a_failing_callback_is_reported_and_the_thread_goes_on(pair, ctx):
    node, sub, pub, _, got = pair
    errors: list[Exception] = []

    def picky(msg: String) -> None:
        if msg.data == "bad":
            raise ValueError("bad message")
        if msg.data == "stale handle":  # from the callback, not the wait: reported, not the end of the thread
            raise InvalidHandle("a handle the callback used is gone")
        got.append((msg.data, threading.current_thread().name))

    intake = SubscriptionIntake(sub, picky, ctx, on_error=errors.append).start()
    try:
        for data in ("a", "bad", "stale handle", "b"):
            pub.publish(String(data=data))
        wait_for(lambda: len(got) == 2, what="the two good messages")
        assert [d for d, _ in got] == ["a", "b"]
        assert [str(e) for e in errors] == ["bad message", "a handle the callback used is gone"]
        assert intake.alive
    finally:
        intake.stop()


def test_stop_ends_the_thread_within_one_wait(pair, ctx):
    node, sub, _, on_msg, _ = pair
    intake = SubscriptionIntake(sub, on_msg, ctx).start()
    t = time.monotonic()
    intake.stop(timeout=5.0)
    assert not intake.alive
    assert time.monotonic() - t < 2.0


def test_a_subscription_the_executor_runs_is_refused(ctx):
    node = rclpy.create_node("intake_refuse", namespace="/i" + uuid.uuid4().hex[:10], context=ctx)
    try:
        sub = node.create_subscription(String, "chatter", lambda _m: None, 10)
        with pytest.raises(ValueError, match="NoExecutorGroup"):
            SubscriptionIntake(sub, lambda _m: None, ctx)
    finally:
        node.destroy_node()


def test_the_thread_ends_when_its_subscription_is_destroyed(pair, ctx):
    node, sub, _, on_msg, _ = pair
    errors: list[Exception] = []
    intake = SubscriptionIntake(sub, on_msg, ctx, on_error=errors.append).start()
    node.destroy_subscription(sub)
    wait_for(lambda: not intake.alive, timeout=3.0, what="the intake thread to end")
    assert errors == []
