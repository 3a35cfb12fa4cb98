"""``road_seg_node``'s road_grid and temporal smoothing, live: camera_info and frames in, checked against the core."""

from __future__ import annotations

import copy
import shutil
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PolygonStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.parameter import Parameter
from ros_helpers import RELIABLE, as_array, image_msg, random_rgb, wait_for
from scenes import render
from sensor_msgs.msg import CameraInfo

from road_seg_perception.core.ground_grid import ROAD, UNSEEN, CameraPose, GridSpec, Intrinsics, project_mask
from road_seg_perception.core.road_boundary import road_boundary
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.core.temporal import ProbabilityEMA

W, H = 160, 120
K = (130.0, 0.0, 79.5, 0.0, 128.0, 59.5, 0.0, 0.0, 1.0)
D = (-0.2, 0.05, 0.0, 0.0, 0.0)
GRID_PARAMS = {"publish_grid": True, "grid_frame": "base_link", "camera_height_m": 1.4, "camera_pitch_rad": 0.15,
               "camera_x_m": 0.5, "grid_resolution_m": 0.25, "grid_forward_m": 12.0, "grid_lateral_m": 8.0,
               "grid_max_range_m": 10.0}
SPEC = GridSpec(0.25, 12.0, 8.0, 10.0)


def lane(gx, gy):
    return (gx >= 2.1) & (gx <= 8.1) & (np.abs(gy + 0.3) <= 1.6)


class LaneSegmenter(RoadSegmenter):
    """Runs the model, then reports the mask a camera would see of :func:`lane` (known geometry)."""

    pitch = 0.15

    def segment(self, image_rgb, with_probability=False, smooth=None):
        r = super().segment(image_rgb, with_probability, smooth)
        intr = Intrinsics(W, H, K, D, "plumb_bob").scaled_to(image_rgb.shape[1], image_rgb.shape[0])
        r.mask = render(lane, intr, 1.4, self.pitch, x=0.5)
        return r


def camera_info(k=K, d=D, width=W, height=H) -> CameraInfo:
    return CameraInfo(width=width, height=height, distortion_model="plumb_bob", k=list(k), d=list(d))


class GridListener:
    def __init__(self, h):
        self.msgs: list[OccupancyGrid] = []
        self._lock = threading.Lock()
        h.io.create_subscription(OccupancyGrid, "road_grid", self._on, RELIABLE)
        wait_for(lambda: h.node.grid_pub.get_subscription_count() > 0, what="a subscriber on road_grid")

    def _on(self, msg):
        with self._lock:
            self.msgs.append(msg)

    def for_stamp(self, sec: int) -> OccupancyGrid:
        def find():
            with self._lock:
                return next((m for m in self.msgs if m.header.stamp.sec == sec), None)
        wait_for(lambda: find() is not None, what=f"road_grid with stamp {sec}")
        return find()


def send_info(h, msg: CameraInfo, until) -> None:
    for _ in range(200):  # best effort subscription: resend until the node has taken it
        h.info_pub.publish(msg)
        try:
            wait_for(until, 0.05)
            return
        except AssertionError:
            pass
    raise AssertionError("the node never took camera_info")


def grid_array(msg: OccupancyGrid) -> np.ndarray:
    return np.array(msg.data, np.int8).reshape(msg.info.height, msg.info.width)


def test_road_grid_live_matches_the_core(harness):
    h = harness(reliable_input=True, params=GRID_PARAMS, factory=LaneSegmenter)
    grids = GridListener(h)
    intr = Intrinsics(W, H, K, D, "plumb_bob")
    send_info(h, camera_info(), lambda: h.node._intrinsics == intr)

    def check(stamp: int, intrinsics: Intrinsics, pose: CameraPose, rows_cols=(W, H)) -> np.ndarray:
        h.publish_settled(image_msg(random_rgb(rows_cols[1], rows_cols[0], stamp), "rgb8", stamp))
        mask = as_array(h.mask_for(stamp))
        g = grids.for_stamp(stamp)
        assert (g.header.stamp.sec, g.header.stamp.nanosec, g.header.frame_id) == (stamp, 123_456_789, "base_link")
        assert (g.info.width, g.info.height, g.info.resolution) == (48, 32, pytest.approx(0.25))
        o = g.info.origin
        assert (o.position.x, o.position.y, o.position.z, o.orientation.w) == (0.0, -4.0, 0.0, 1.0)
        cells = grid_array(g)
        assert np.array_equal(cells, project_mask(mask, intrinsics, pose, SPEC))
        seen = cells != UNSEEN
        true = lane(*SPEC.cell_centres())
        iou = ((cells == ROAD) & true).sum() / (((cells == ROAD) | true) & seen).sum()
        assert iou > 0.85 and seen.sum() > 300  # a coarse camera: the exact geometry is test_ground_grid's
        return cells

    check(100, intr, CameraPose.from_mount(1.4, pitch=0.15, x=0.5))
    check(101, intr, CameraPose.from_mount(1.4, pitch=0.15, x=0.5))
    assert h.node._grids.builds == 1  # nothing changed: the table is reused

    LaneSegmenter.pitch = 0.22  # the camera tilts; the pose parameter follows at run time
    try:
        assert h.node.set_parameters([Parameter("camera_pitch_rad", value=0.22)])[0].successful
        check(102, intr, CameraPose.from_mount(1.4, pitch=0.22, x=0.5))
        assert h.node._grids.builds == 2

        k2 = (140.0, 0.0, 81.0, 0.0, 139.0, 60.0, 0.0, 0.0, 1.0)  # recalibrated
        intr2 = Intrinsics(W, H, k2, D, "plumb_bob")
        send_info(h, camera_info(k=k2), lambda: h.node._intrinsics == intr2)
        cells = check(103, intr2, CameraPose.from_mount(1.4, pitch=0.22, x=0.5))
        assert h.node._grids.builds == 3
        # a resized stream: K scaled to the image, one more table
        check(104, intr2, CameraPose.from_mount(1.4, pitch=0.22, x=0.5), rows_cols=(2 * W, 2 * H))
        assert h.node._grids.builds == 4
    finally:
        LaneSegmenter.pitch = 0.15
    assert (cells == ROAD).sum() > 50 and (cells == 100).sum() > 50

    refused = h.node.set_parameters([Parameter("grid_resolution_m", value=0.001)])[0]
    assert not refused.successful and "larger than" in refused.reason

    # an uncalibrated camera_info: dropped, counted; masks go on, no grid
    send_info(h, camera_info(k=(0.0,) * 9), lambda: h.node._bad_camera_info >= 1)
    h.publish_settled(image_msg(random_rgb(H, W, 7), "rgb8", 105))
    h.mask_for(105)
    assert all(m.header.stamp.sec != 105 for m in grids.msgs)
    assert "not calibrated" in dict((kv.key, kv.value) for kv in h.node.diagnostic_status().values)["grid"]


def test_road_boundary_live_matches_the_core(harness):
    h = harness(reliable_input=True, params=GRID_PARAMS, factory=LaneSegmenter)
    got: list[PolygonStamped] = []
    h.io.create_subscription(PolygonStamped, "road_boundary", got.append, RELIABLE)
    wait_for(lambda: h.node.boundary_pub.get_subscription_count() > 0, what="a subscriber on road_boundary")
    assert h.node.grid_pub.get_subscription_count() == 0  # the boundary alone makes the node compute the grid
    intr = Intrinsics(W, H, K, D, "plumb_bob")
    send_info(h, camera_info(), lambda: h.node._intrinsics == intr)
    h.publish_settled(image_msg(random_rgb(H, W, 3), "rgb8", 300))
    mask = as_array(h.mask_for(300))
    wait_for(lambda: any(m.header.stamp.sec == 300 for m in got), what="road_boundary with stamp 300")
    msg = next(m for m in got if m.header.stamp.sec == 300)
    assert (msg.header.stamp.nanosec, msg.header.frame_id) == (123_456_789, "base_link")
    points = np.array([(p.x, p.y, p.z) for p in msg.polygon.points])
    want = road_boundary(project_mask(mask, intr, CameraPose.from_mount(1.4, pitch=0.15, x=0.5), SPEC), SPEC)
    assert len(want) >= 4
    np.testing.assert_allclose(points[:, :2], want, atol=1e-5)  # Point32: float32
    assert not points[:, 2].any()
    # every vertex is a road cell's centre of the lane (seen part), up to the rendering's one-cell error
    assert np.all(lane(points[:, 0] + np.array([[0.0], [0.25], [-0.25], [0.0], [0.0]]),
                       points[:, 1] + np.array([[0.0], [0.0], [0.0], [0.25], [-0.25]])).any(axis=0))
    assert dict((kv.key, kv.value) for kv in h.node.diagnostic_status().values)["grid"] == "publishing"


def test_road_grid_costs_nothing_without_a_subscriber(harness):
    h = harness(reliable_input=True, params=GRID_PARAMS)
    send_info(h, camera_info(), lambda: h.node._intrinsics is not None)
    h.publish_settled(image_msg(random_rgb(H, W, 1), "rgb8", 200))
    h.mask_for(200)
    assert h.node._grids.builds == 0


def test_road_grid_off_by_default(harness):
    h = harness(reliable_input=True)
    assert h.node.grid_pub is None and not h.node.config.publish_grid
    assert h.node.count_subscribers(f"{h.ns}/road_grid") == 0


@pytest.mark.parametrize("params, match", [
    ({"grid_pose_source": "tf"}, "tf2_ros"),
    ({"grid_frame": " "}, "grid_frame"),
])
def test_bad_grid_settings_fail_at_start(harness, params, match):
    from road_seg_perception.ros.grid import tf_available
    from road_seg_perception.ros.node import ConfigError

    if params.get("grid_pose_source") == "tf" and tf_available():
        pytest.skip("tf2_ros is importable here")
    with pytest.raises(ConfigError, match=match):
        harness(params={**GRID_PARAMS, **params})


def test_temporal_smoothing_live_matches_the_core(harness, tiny_model):
    h = harness(reliable_input=True, params={"temporal_smoothing": True, "temporal_alpha": 0.4,
                                             "temporal_reset_gap_s": 1.5, "threshold": 0.5})
    ref = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime")
    ema = ProbabilityEMA(0.4, 1.5)
    plain_differs = False
    for i, sec in enumerate([10, 11, 12, 20, 21]):  # 12 -> 20: a gap, the average restarts
        rgb = random_rgb(48, 64, 50 + i)
        h.publish_settled(image_msg(rgb, "rgb8", sec))
        got = as_array(h.mask_for(sec))
        want = ref.segment(rgb, smooth=partial(ema.update, stamp_s=sec + 0.123456789, key=rgb.shape)).mask
        assert np.array_equal(got, want), sec
        plain_differs |= not np.array_equal(got, ref.segment(rgb).mask)
    assert h.node._ema.resets == ema.resets == 1
    assert plain_differs, "the smoothing must have changed some mask"


class InvertingSegmenter(RoadSegmenter):
    """The tiny model, with outputs turned into one minus themselves when its file is named ``inverted.onnx``."""

    def __init__(self, **kw):
        super().__init__(**kw)
        if self.model_path.stem == "inverted":
            infer = self.backend.infer
            self.backend.infer = lambda x: 1.0 - infer(x)


def test_temporal_smoothing_restarts_on_a_model_swap(harness, tiny_model, tmp_path):
    h = harness(reliable_input=True, factory=InvertingSegmenter,
                params={"temporal_smoothing": True, "temporal_alpha": 0.4, "temporal_reset_gap_s": 1.5})
    inverted_file = tmp_path / "inverted.onnx"
    shutil.copy(tiny_model["onnx"], inverted_file)
    plain = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime")
    inverted = InvertingSegmenter(model_path=inverted_file, backend="onnxruntime")
    ema = ProbabilityEMA(0.4, 1.5)

    def frame(sec: int) -> tuple[np.ndarray, np.ndarray]:
        rgb = random_rgb(48, 64, 70 + sec)
        h.publish_settled(image_msg(rgb, "rgb8", sec))
        return rgb, as_array(h.mask_for(sec))

    def smoothed(segmenter: RoadSegmenter, rgb: np.ndarray, sec: int, average: ProbabilityEMA) -> np.ndarray:
        return segmenter.segment(rgb, smooth=partial(average.update, stamp_s=sec + 0.123456789, key=rgb.shape)).mask

    for sec in (10, 11):
        rgb, got = frame(sec)
        assert np.array_equal(got, smoothed(plain, rgb, sec, ema)), sec

    def swap(param: Parameter) -> None:
        assert h.node.set_parameters([param])[0].successful
        assert h.node.wait_for_model(30)

    swap(Parameter("model_path", value=str(inverted_file)))
    assert h.node.segmenter.model_path == inverted_file
    rgb, got = frame(12)  # 1 s after the last frame: only the swap restarts the average
    assert np.array_equal(got, inverted.segment(rgb).mask)  # the new model's own mask, unsmoothed
    carried = copy.deepcopy(ema)  # what an average carried over from the old model would have given
    assert not np.array_equal(got, smoothed(inverted, rgb, 12, carried))
    ema = ProbabilityEMA(0.4, 1.5)
    smoothed(inverted, rgb, 12, ema)
    rgb, got = frame(13)  # the new model's frames are averaged again
    assert np.array_equal(got, smoothed(inverted, rgb, 13, ema))
    assert not np.array_equal(got, inverted.segment(rgb).mask)

    swap(Parameter("model_reload", value=1))  # the same file reloaded: a new model too
    rgb, got = frame(14)
    assert np.array_equal(got, inverted.segment(rgb).mask)
    assert h.node._ema.resets == 2


def test_rviz_config_shows_the_grid_and_boundary_in_their_frame():
    import yaml

    from road_seg_perception.ros.node import PARAMETERS

    cfg = yaml.safe_load((Path(__file__).resolve().parent.parent / "config" / "road_seg.rviz").read_text())
    maps = [d for d in cfg["Visualization Manager"]["Displays"] if d["Class"] == "rviz_default_plugins/Map"]
    assert [m["Topic"]["Value"] for m in maps] == ["/road_grid"]
    assert maps[0]["Topic"]["Reliability Policy"] == "Reliable"  # the node publishes reliable
    polygons = [d for d in cfg["Visualization Manager"]["Displays"] if d["Class"] == "rviz_default_plugins/Polygon"]
    assert [(p["Topic"]["Value"], p["Topic"]["Reliability Policy"]) for p in polygons] == [("/road_boundary",
                                                                                          "Reliable")]
    assert cfg["Visualization Manager"]["Global Options"]["Fixed Frame"] == PARAMETERS["grid_frame"].default
