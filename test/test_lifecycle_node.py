"""The managed node driven through its lifecycle services (``lifecycle_msgs``), outputs checked in every state."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from domain_ids import domain_id
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from ros_helpers import RELIABLE, wait_for
from sensor_msgs.msg import Image

from road_seg_perception.bagio.image_codec import image_to_rgb
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.ros.lifecycle_node import RoadSegLifecycleNode

DOMAIN_ID = domain_id("lifecycle_node")


def image(seed: int, sec: int, h: int = 40, w: int = 56) -> Image:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=rgb.tobytes())
    msg.header.frame_id = "cam"
    msg.header.stamp.sec = sec
    return msg


class Managed:
    """The lifecycle node under test plus a test-side node calling its services and collecting outputs."""

    def __init__(self, model, params: dict | None = None):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
        self.ns = "/m" + uuid.uuid4().hex[:8]
        values = {"model_path": str(model), **(params or {})}
        self.node = RoadSegLifecycleNode(namespace=self.ns, context=self.ctx, diagnostics_period_s=0.2,
                                         parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.io = rclpy.create_node("lifecycle_tester", namespace=self.ns, context=self.ctx)
        self.pub = self.io.create_publisher(Image, "image", RELIABLE)
        self.masks: list[Image] = []
        self.diagnostics: list = []
        self.io.create_subscription(Image, "road_mask", self.masks.append, RELIABLE)
        self.io.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        base = f"{self.ns}/road_seg_node"
        self.change = self.io.create_client(ChangeState, f"{base}/change_state")
        self.get = self.io.create_client(GetState, f"{base}/get_state")
        self.set_params = self.io.create_client(SetParameters, f"{base}/set_parameters")
        # one thread, as the node's own process spins it: with two, a transition that destroys the node's
        # topics can race the other thread's wait set (rclpy InvalidHandle kills that spin thread)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.io)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        assert self.change.wait_for_service(10.0) and self.get.wait_for_service(10.0)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            v = {kv.key: kv.value for kv in s.values}
            if v.get("input_topic") == f"{self.ns}/image":
                self.diagnostics.append(v)

    def call(self, client, request, timeout: float = 30.0):
        future = client.call_async(request)
        wait_for(future.done, timeout, f"{client.srv_name}")
        return future.result()

    def transition(self, transition_id: int) -> bool:
        return self.call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def state(self) -> str:
        return self.call(self.get, GetState.Request()).current_state.label

    def set_param(self, name: str, value) -> bool:
        req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(self.set_params, req).results[0].successful

    def mask_for(self, sec: int, timeout: float = 10.0) -> Image:
        wait_for(lambda: any(m.header.stamp.sec == sec for m in self.masks), timeout, f"mask {sec}")
        return next(m for m in self.masks if m.header.stamp.sec == sec)

    def publish_settled(self, msg: Image) -> None:
        before = self.node.scheduler.counts()
        self.pub.publish(msg)
        wait_for(lambda: self.node.scheduler.counts().received == before.received + 1
                 and self.node.scheduler.counts().pending == 0, what="the frame to be counted")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(5.0)
        self.node.destroy_node()
        self.io.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@pytest.fixture
def managed(tiny_model):
    made: list[Managed] = []

    def make(**kw) -> Managed:
        m = Managed(kw.pop("model", tiny_model["onnx"]), **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def test_every_transition_with_outputs_checked_in_each_state(managed, tiny_model):
    m = managed(params={"intake_thread": False})
    reference = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime")
    # unconfigured: no model, no topics
    assert m.state() == "unconfigured" and m.node.segmenter is None
    assert m.pub.get_subscription_count() == 0
    # configure: model loaded, topics up, not yet segmenting
    assert m.transition(Transition.TRANSITION_CONFIGURE)
    assert m.state() == "inactive" and m.node.segmenter is not None
    wait_for(lambda: m.pub.get_subscription_count() == 1, what="the image subscription")
    m.publish_settled(image(0, 10))
    c = m.node.scheduler.counts()
    assert (c.received, c.skipped, c.processed) == (1, 1, 0) and m.masks == []
    wait_for(lambda: any(d["active"] == "false" and d["frames_skipped"] == "1" for d in m.diagnostics),
             what="inactive diagnostics")
    # activate: masks equal to the reference segmenter's, with the input header
    assert m.transition(Transition.TRANSITION_ACTIVATE) and m.state() == "active"
    msg = image(1, 11)
    m.pub.publish(msg)
    mask = m.mask_for(11)
    assert (mask.encoding, mask.height, mask.width, mask.header.frame_id) == ("mono8", 40, 56, "cam")
    got = np.frombuffer(bytes(mask.data), np.uint8).reshape(40, 56)
    np.testing.assert_array_equal(got, reference.segment(image_to_rgb(msg)).mask)
    # deactivate: frames counted as skipped, no output
    assert m.transition(Transition.TRANSITION_DEACTIVATE) and m.state() == "inactive"
    n_masks = len(m.masks)
    for i in range(3):
        m.publish_settled(image(2 + i, 20 + i))
    time.sleep(0.3)
    c = m.node.scheduler.counts()
    assert (c.received, c.skipped, c.processed) == (5, 4, 1) and len(m.masks) == n_masks
    # activate again: processing resumes
    assert m.transition(Transition.TRANSITION_ACTIVATE)
    m.pub.publish(image(9, 30))
    m.mask_for(30)
    # deactivate + cleanup: model closed and dropped, topics gone
    assert m.transition(Transition.TRANSITION_DEACTIVATE)
    backend = m.node.segmenter.backend
    assert "session" in vars(backend)
    assert m.transition(Transition.TRANSITION_CLEANUP) and m.state() == "unconfigured"
    assert m.node.segmenter is None and m.node.config is None
    assert "session" not in vars(backend)  # the ONNX Runtime session released
    wait_for(lambda: m.pub.get_subscription_count() == 0, what="the subscription to go")
    # configure + activate again from scratch
    assert m.transition(Transition.TRANSITION_CONFIGURE) and m.transition(Transition.TRANSITION_ACTIVATE)
    m.pub.publish(image(10, 40))
    m.mask_for(40)
    # shutdown from active
    assert m.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert m.state() == "finalized" and m.node.finalized and m.node.segmenter is None


def test_configure_fails_with_the_reason_and_succeeds_once_fixed(managed, tiny_model, tmp_path):
    m = managed(model=tmp_path / "missing.onnx")
    assert not m.transition(Transition.TRANSITION_CONFIGURE)
    assert m.state() == "unconfigured"
    assert "missing.onnx" in m.node.last_failure and "configure failed" in m.node.last_failure
    assert m.pub.get_subscription_count() == 0
    # parameters are checked while unconfigured too
    assert not m.set_param("threshold", 1.5)
    assert m.set_param("model_path", str(tiny_model["onnx"]))
    assert m.transition(Transition.TRANSITION_CONFIGURE) and m.state() == "inactive"
    assert m.node.segmenter.info["model"] == str(tiny_model["onnx"])
    assert m.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)
    assert m.state() == "finalized"


def test_shutdown_from_unconfigured(managed):
    m = managed()
    assert m.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert m.state() == "finalized" and m.node.finalized
