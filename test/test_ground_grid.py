"""Ground grid geometry: camera images of known ground shapes, rendered by ray casting, back onto the grid."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scenes import camera_axes, render

from road_seg_perception.core.ground_grid import (
    NOT_ROAD,
    ROAD,
    UNSEEN,
    CameraPose,
    GridConfigError,
    GridSpec,
    GroundGrid,
    GroundGridCache,
    Intrinsics,
    grid_image,
    project_ground_points,
    project_mask,
)

W, H = 320, 240
PINHOLE = Intrinsics(W, H, (260.0, 0.0, 159.5, 0.0, 255.0, 119.5, 0.0, 0.0, 1.0), (), "none")
BARREL = Intrinsics(W, H, (250.0, 0.0, 162.0, 0.0, 250.0, 117.0, 0.0, 0.0, 1.0),
                    (-0.28, 0.08, 0.001, -0.0005, 0.0), "plumb_bob")
RATIONAL = Intrinsics(W, H, (255.0, 0.0, 158.0, 0.0, 255.0, 121.0, 0.0, 0.0, 1.0),
                      (0.6, -0.05, 0.0005, 0.0, 0.0, 0.9, 0.05, 0.0), "rational_polynomial")
# 0.2 m cells out to 12 m: half a pixel's ground footprint (d^2 / (2 h f)) stays under one cell there.
SPEC = GridSpec(resolution=0.2, forward_m=14.0, lateral_m=10.0, max_range_m=12.0)


def rectangle(gx, gy):
    return (gx >= 2.05) & (gx <= 9.95) & (gy >= -2.55) & (gy <= 1.45)  # edges a quarter cell off the centres


def curved_lane(gx, gy):
    """A 3.5 m lane curving left on a 14 m radius."""
    return np.abs(np.hypot(gx, gy - 14.0) - 14.0) <= 1.75


POSES = {  # name: intrinsics, height, pitch, roll, yaw, x, y
    "level": (PINHOLE, 1.5, 0.12, 0.0, 0.0, 0.0, 0.0),
    "rolled_yawed_offset": (PINHOLE, 1.3, 0.18, 0.08, 0.12, 0.6, -0.4),
    "horizon_in_view_rolled": (PINHOLE, 1.6, 0.03, -0.1, 0.0, 0.0, 0.0),
    "barrel_distortion": (BARREL, 1.4, 0.15, -0.05, 0.0, 0.2, 0.0),
    "rational_distortion": (RATIONAL, 1.5, 0.14, 0.04, -0.05, 0.0, 0.3),
}


def truth(shape) -> np.ndarray:
    gx, gy = SPEC.cell_centres()
    return shape(gx, gy)


def within_one_cell(pred: np.ndarray, true: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Seen cells that are wrong and have no cell of the other truth value among their 8 neighbours."""
    t = true.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    near_boundary = cv2.dilate(t, kernel) != cv2.erode(t, kernel)
    return seen & (pred != true) & ~near_boundary


@pytest.mark.parametrize("shape", [rectangle, curved_lane], ids=["rectangle", "curved_lane"])
@pytest.mark.parametrize("pose_name", list(POSES))
def test_grid_recovers_the_ground_shape(pose_name, shape):
    intr, h, pitch, roll, yaw, x, y = POSES[pose_name]
    mask = render(shape, intr, h, pitch, roll, yaw, x, y)
    pose = CameraPose.from_mount(h, roll, pitch, yaw, x, y)
    grid = project_mask(mask, intr, pose, SPEC)
    assert grid.shape == (SPEC.rows, SPEC.cols) == (50, 70)
    assert grid.dtype == np.int8 and set(np.unique(grid)) <= {ROAD, NOT_ROAD, UNSEEN}
    seen = grid != UNSEEN
    pred, true = grid == ROAD, truth(shape)
    assert (true & seen).sum() > 150, "the road must be well in view for the test to mean anything"
    assert (~true & seen).sum() > 150, "so must some off-road ground"
    iou = (pred & true & seen).sum() / ((pred | true) & seen).sum()
    assert iou >= 0.95, f"cell IoU {iou:.4f}"
    far = within_one_cell(pred, true, seen)
    assert not far.any(), f"{far.sum()} cells wrong by more than one cell, e.g. at {np.argwhere(far)[:5]}"


@pytest.mark.parametrize("pose_name", list(POSES))
def test_unseen_cells_are_those_out_of_view_or_range(pose_name):
    intr, h, pitch, roll, yaw, x, y = POSES[pose_name]
    pose = CameraPose.from_mount(h, roll, pitch, yaw, x, y)
    grid = GroundGrid(intr, pose, SPEC).project(np.full((H, W), 255, np.uint8))
    gx, gy = SPEC.cell_centres()
    # the test's own forward projection (camera axes built independently of the module)
    rel = np.stack([gx - x, gy - y, np.full_like(gx, -h)], axis=-1) @ camera_axes(pitch, roll, yaw)
    z = rel[..., 2]
    front = z > 0
    obj = np.stack([rel[..., 0] / np.where(front, z, 1), rel[..., 1] / np.where(front, z, 1),
                    np.ones_like(z)], axis=-1).reshape(-1, 1, 3)
    uv = cv2.projectPoints(obj, np.zeros(3), np.zeros(3), intr.matrix(), intr.coefficients())[0].reshape(*z.shape, 2)
    rng = np.hypot(gx - x, gy - y)
    # the lens's field of view: the largest undistorted radius of the image corners (beyond it a
    # distortion polynomial may fold far-off points back into the image)
    corners = np.array([[[0.0, 0.0]], [[W - 1.0, 0.0]], [[0.0, H - 1.0]], [[W - 1.0, H - 1.0]]])
    fov = np.hypot(*cv2.undistortPointsIter(corners, intr.matrix(), intr.coefficients(), None, None,
                                            (3, 100, 1e-12)).reshape(-1, 2).T).max()
    radius = np.hypot(obj[:, 0, 0], obj[:, 0, 1]).reshape(z.shape)
    assert (grid[front & (radius > fov * 1.01)] == UNSEEN).all()  # nothing seen outside the lens's view
    front &= radius <= fov
    margin = 1.0  # pixels / cells off the edges, where rounding may go either way
    clearly_in = (front & (uv[..., 0] > margin) & (uv[..., 0] < W - 1 - margin) & (uv[..., 1] > margin)
                  & (uv[..., 1] < H - 1 - margin) & (rng < SPEC.max_range_m - SPEC.resolution))
    if intr.distortion_model == "none":  # distortion can fold far-off points into the image: only check pinholes
        clearly_out = ~front | (uv[..., 0] < -margin) | (uv[..., 0] > W - 1 + margin) | (uv[..., 1] < -margin) \
            | (uv[..., 1] > H - 1 + margin)
        assert (grid[clearly_out] == UNSEEN).all()
    assert (grid[rng > SPEC.max_range_m] == UNSEEN).all()
    assert (grid[gx < x] == UNSEEN).all() if abs(yaw) < 0.2 else True  # behind the camera's foot point
    assert (grid[clearly_in] == ROAD).all()
    assert (grid == UNSEEN).any() and (grid == ROAD).sum() > 500


def test_pose_convention():
    d = 1.5 / math.tan(0.2)  # where the optical axis meets the ground
    uv, seen = project_ground_points(np.array([d, d]), np.array([0.0, 1.0]), PINHOLE,
                                     CameraPose.from_mount(1.5, pitch=0.2))
    assert seen.all()
    np.testing.assert_allclose(uv[0], [159.5, 119.5], atol=1e-9)  # the principal point
    assert uv[1, 0] < 159.5 and uv[1, 1] == pytest.approx(119.5)  # +y (left) is on the image's left
    uv, _ = project_ground_points(np.array([d * math.cos(0.3)]), np.array([d * math.sin(0.3)]), PINHOLE,
                                  CameraPose.from_mount(1.5, pitch=0.2, yaw=0.3))
    np.testing.assert_allclose(uv[0], [159.5, 119.5], atol=1e-9)  # positive yaw looks left
    uv, _ = project_ground_points(np.array([8.0, 8.0]), np.array([3.0, -3.0]), PINHOLE,
                                  CameraPose.from_mount(1.5, pitch=0.2, roll=0.1))
    assert uv[1, 1] < uv[0, 1]  # positive roll: the right side's ground rises in the image
    # a tf transform of the same pose gives the same table
    mount = CameraPose.from_mount(1.3, 0.08, 0.18, 0.12, 0.6, -0.4)
    rot = mount.matrix()
    w = math.sqrt(1 + np.trace(rot)) / 2
    q = ((rot[2, 1] - rot[1, 2]) / (4 * w), (rot[0, 2] - rot[2, 0]) / (4 * w), (rot[1, 0] - rot[0, 1]) / (4 * w), w)
    tf_pose = CameraPose.from_transform(mount.position, q)
    np.testing.assert_allclose(tf_pose.matrix(), rot, atol=1e-12)


def test_mask_above_the_horizon_is_never_read():
    intr, h, pitch, roll, yaw, x, y = POSES["horizon_in_view_rolled"]
    g = GroundGrid(intr, CameraPose.from_mount(h, roll, pitch, yaw, x, y), SPEC)
    a = camera_axes(pitch, roll, yaw)  # horizon: pixels whose ray is level, a[2] . (xn, yn, 1) = 0
    horizon_rows = [intr.k[5] - intr.k[4] * (a[2, 0] * (u - intr.k[2]) / intr.k[0] + a[2, 2]) / a[2, 1]
                    for u in (0.0, W - 1.0)]
    assert 0 < min(horizon_rows) and max(horizon_rows) < H - 1  # the horizon crosses the image
    sky = render(lambda gx, gy: np.zeros_like(gx, bool), intr, h, pitch, roll, yaw, x, y, max_range=1e9) > 0
    read = np.zeros((H, W), bool)
    read[np.round(g.map_y[g.seen]).astype(int), np.round(g.map_x[g.seen]).astype(int)] = True
    assert not (read & sky).any()
    assert g.map_y[g.seen].min() > min(horizon_rows)


def test_cache_rebuilds_only_on_change():
    cache = GroundGridCache()
    pose = CameraPose.from_mount(1.5, pitch=0.12)
    mask = render(rectangle, PINHOLE, 1.5, 0.12)
    first = cache.project(mask, PINHOLE, pose, SPEC)
    again = cache.project(mask.copy(), Intrinsics(*PINHOLE.__dict__.values()), CameraPose.from_mount(1.5, pitch=0.12),
                          GridSpec(0.2, 14.0, 10.0, 12.0))
    assert cache.builds == 1 and np.array_equal(first, again)
    steps = [  # each changes one input; the grid must follow the new geometry
        (BARREL, pose, SPEC, (H, W)),
        (BARREL, CameraPose.from_mount(1.5, pitch=0.2), SPEC, (H, W)),
        (BARREL, CameraPose.from_mount(1.5, pitch=0.2), GridSpec(0.25, 14.0, 10.0, 12.0), (H, W)),
        (BARREL, CameraPose.from_mount(1.5, pitch=0.2), GridSpec(0.25, 14.0, 10.0, 12.0), (H * 2, W * 2)),
    ]
    for i, (intr, p, spec, hw) in enumerate(steps, start=2):
        m = np.full(hw, 255, np.uint8)
        g = cache.get(intr, p, spec, hw)
        assert cache.builds == i and g.image_hw == hw and g.spec == spec
        ref = GroundGrid(intr.scaled_to(hw[1], hw[0]), p, spec).project(m)
        assert np.array_equal(cache.project(m, intr, p, spec), ref)
        assert cache.builds == i


def test_scaled_intrinsics_see_the_same_ground():
    pose = CameraPose.from_mount(1.5, pitch=0.12)
    small = project_mask(render(rectangle, PINHOLE, 1.5, 0.12), PINHOLE, pose, SPEC)
    big_intr = PINHOLE.scaled_to(2 * W, 2 * H)
    assert big_intr.k[2] == pytest.approx(2 * 159.5 + 0.5)
    big = project_mask(render(rectangle, big_intr, 1.5, 0.12), PINHOLE, pose, SPEC)  # K scaled to the mask's size
    agree = (small == big) | (small == UNSEEN) | (big == UNSEEN)
    assert agree.mean() > 0.99 and (big == ROAD).sum() > 0


@pytest.mark.parametrize("bad, match", [
    (lambda: Intrinsics(W, H, (0.0,) * 9).validate(), "not calibrated"),
    (lambda: Intrinsics(W, H, (1.0,) * 8).validate(), "9 finite"),
    (lambda: Intrinsics(W, H, PINHOLE.k, (), "equidistant").validate(), "equidistant"),
    (lambda: CameraPose.from_mount(0.0), "height"),
    (lambda: CameraPose.from_mount(1.0, pitch=float("nan")), "pitch"),
    (lambda: GridSpec(resolution=0.0).validate(), "resolution"),
    (lambda: GridSpec(resolution=0.001, forward_m=100.0, lateral_m=100.0).validate(), "larger than"),
])
def test_bad_settings_are_refused_with_a_reason(bad, match):
    with pytest.raises(GridConfigError, match=match):
        bad()


def test_project_checks_the_mask():
    g = GroundGrid(PINHOLE, CameraPose.from_mount(1.5, pitch=0.12), SPEC)
    with pytest.raises(ValueError, match="320x240"):
        g.project(np.zeros((H + 1, W), np.uint8))
    assert np.array_equal(g.project(np.ones((H, W), bool)), g.project(np.full((H, W), 255, np.uint8)))


def test_grid_image_is_forward_up_left_left():
    grid = np.full((SPEC.rows, SPEC.cols), NOT_ROAD, np.int8)
    grid[SPEC.rows - 1, SPEC.cols - 1] = ROAD  # far forward, far left
    img = grid_image(grid, cell_px=1, origin_marker=False)
    assert img.shape == (SPEC.cols, SPEC.rows, 3)
    assert tuple(img[0, 0]) == (60, 200, 60) and tuple(img[-1, -1]) == (70, 70, 70)
