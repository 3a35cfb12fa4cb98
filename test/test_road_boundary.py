"""``core.road_boundary``: grids whose road is a known shape -> boundary vertices where that shape's corners are."""

from __future__ import annotations

import numpy as np
import pytest

from road_seg_perception.core.ground_grid import NOT_ROAD, ROAD, UNSEEN, GridSpec
from road_seg_perception.core.road_boundary import polygon_area, road_boundary, road_component

SPEC = GridSpec(0.1, 20.0, 10.0, 20.0)  # the node's default: x 0..20 m, y -5..5 m, 200 x 100 cells
RES = SPEC.resolution


def grid_of(road, spec: GridSpec = SPEC, unseen=None) -> np.ndarray:
    """int8 grid: ROAD where ``road(x, y)`` holds at the cell centre, UNSEEN where ``unseen(x, y)``, else NOT_ROAD."""
    x, y = spec.cell_centres()
    g = np.full((spec.rows, spec.cols), NOT_ROAD, np.int8)
    if unseen is not None:
        g[unseen(x, y)] = UNSEEN
    g[road(x, y)] = ROAD
    return g


def distance_to_segments(p: np.ndarray, corners: np.ndarray) -> float:
    """Distance from point ``p`` to the closed polygon through ``corners``."""
    best = np.inf
    for a, b in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0.0, 1.0)
        best = min(best, float(np.linalg.norm(p - (a + t * (b - a)))))
    return best


def assert_corners_match(points: np.ndarray, corners: np.ndarray, tol: float = RES) -> None:
    """Every true corner has a vertex within ``tol`` and every vertex lies within ``tol`` of the true outline."""
    for c in corners:
        assert np.min(np.linalg.norm(points - c, axis=1)) <= tol, (c, points)
    for p in points:
        assert distance_to_segments(p, corners) <= tol, (p, corners)


def test_rectangle_gives_its_four_corners_counter_clockwise():
    grid = grid_of(lambda x, y: (x > 2.0) & (x < 8.0) & (y > -1.5) & (y < 2.0))
    points = road_boundary(grid, SPEC)
    assert points.shape == (4, 2) and points.dtype == np.float64
    corners = np.array([(2.0, -1.5), (8.0, -1.5), (8.0, 2.0), (2.0, 2.0)])
    assert_corners_match(points, corners)
    # vertices are the corner cells' centres, half a cell inside the edge
    assert sorted(map(tuple, np.round(points, 6))) == [(2.05, -1.45), (2.05, 1.95), (7.95, -1.45), (7.95, 1.95)]
    assert polygon_area(points) == pytest.approx(5.9 * 3.4)  # > 0: counter-clockwise in x forward, y left


def test_trapezoid_narrowing_ahead_within_one_cell():
    def road(x, y):  # 6 m wide at x = 1 m, 2 m wide at x = 15 m: a road seen in perspective
        half = 3.0 + (x - 1.0) * (1.0 - 3.0) / 14.0
        return (x > 1.0) & (x < 15.0) & (np.abs(y - 0.5) < half)

    points = road_boundary(grid_of(road), SPEC)
    corners = np.array([(1.0, -2.5), (15.0, -0.5), (15.0, 1.5), (1.0, 3.5)])
    assert 4 <= len(points) <= 6
    assert_corners_match(points, corners)
    assert polygon_area(points) == pytest.approx(14.0 * (6.0 + 2.0) / 2, rel=0.05)


def test_the_robots_road_is_chosen_not_the_largest_patch():
    near = lambda x, y: (x > 0.5) & (x < 3.0) & (np.abs(y) < 1.0)  # noqa: E731
    far = lambda x, y: (x > 6.0) & (x < 19.0) & (np.abs(y) < 4.5)  # noqa: E731 bigger, across a gap
    grid = grid_of(lambda x, y: near(x, y) | far(x, y))
    assert np.array_equal(road_component(grid, SPEC), near(*SPEC.cell_centres()))
    assert_corners_match(road_boundary(grid, SPEC), np.array([(0.5, -1.0), (3.0, -1.0), (3.0, 1.0), (0.5, 1.0)]))
    # a robot standing elsewhere (grid frame metres) is on the other road
    assert_corners_match(road_boundary(grid, SPEC, robot_xy=(10.0, 0.0)),
                         np.array([(6.0, -4.5), (19.0, -4.5), (19.0, 4.5), (6.0, 4.5)]))


def test_unseen_cells_close_the_polygon_and_holes_are_left_out():
    # road from 2 m to 20 m, unseen beyond 12 m: the polygon closes along the last seen cells;
    # a car-sized non-road hole inside the road does not change the outer boundary
    grid = grid_of(lambda x, y: (x > 2.0) & (np.abs(y) < 2.0) & ~((x > 5.0) & (x < 7.0) & (np.abs(y) < 0.5)),
                   unseen=lambda x, y: x > 12.0)
    grid[grid_of(lambda x, y: x > 12.0) == ROAD] = UNSEEN
    assert_corners_match(road_boundary(grid, SPEC), np.array([(2.0, -2.0), (12.0, -2.0), (12.0, 2.0), (2.0, 2.0)]))


def test_tolerance_zero_keeps_every_boundary_cell():
    grid = grid_of(lambda x, y: (x > 2.0) & (x < 3.0) & (y > 0.0) & (y < 0.5))  # 10 x 5 cells
    points = road_boundary(grid, SPEC, tolerance_cells=0.0)
    assert len(points) == 2 * (10 + 5) - 4  # each outermost cell's centre once
    assert len(road_boundary(grid, SPEC)) == 4


def test_no_road_a_single_cell_and_bad_input():
    assert road_boundary(grid_of(lambda x, y: x < 0), SPEC).shape == (0, 2)
    assert road_boundary(np.full((SPEC.rows, SPEC.cols), UNSEEN, np.int8), SPEC).shape == (0, 2)
    one = grid_of(lambda x, y: (np.abs(x - 4.05) < 0.01) & (np.abs(y - 0.05) < 0.01))
    assert road_boundary(one, SPEC) == pytest.approx(np.array([[4.05, 0.05]]))
    with pytest.raises(ValueError, match="expected"):
        road_boundary(np.zeros((3, 4), np.int8), SPEC)
    with pytest.raises(ValueError, match="tolerance_cells"):
        road_boundary(grid_of(lambda x, y: x < 3), SPEC, tolerance_cells=-1.0)
