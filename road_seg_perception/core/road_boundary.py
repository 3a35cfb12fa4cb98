"""The boundary of the robot's road in a drivable-area grid, as a polygon in metres (ROS-free).

    points = road_boundary(grid, spec)   # (N, 2) float64 grid-frame (x, y), counter-clockwise

The road region is the 8-connected component of road cells (value 0) that holds the road cell
nearest the robot (ties: the larger component), so a patch of road seen across a field is not taken
for the robot's road. Its outer contour runs through the centres of its outermost cells
(``cv2.findContours``), simplified by ``cv2.approxPolyDP`` to ``tolerance_cells`` (default one cell):
every vertex is a boundary cell's centre, half a cell inside the road's edge, and the polygon strays
at most ``tolerance_cells`` from the traced contour. Holes (an obstacle inside the road) are not part
of it. Where the road runs into unseen cells or the grid's border, the polygon closes along them.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from road_seg_perception.core.ground_grid import ROAD, GridSpec


@functools.lru_cache(maxsize=8)
def _squared_distances(spec: GridSpec, robot_xy: tuple[float, float]) -> np.ndarray:
    """Squared distance (m^2) of every cell centre to ``robot_xy``, ``(rows, cols)``, read-only (cached)."""
    x, y = spec.cell_centres()
    d2 = (x - robot_xy[0]) ** 2 + (y - robot_xy[1]) ** 2
    d2.flags.writeable = False
    return d2


def road_component(grid: np.ndarray, spec: GridSpec, robot_xy: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Boolean ``(rows, cols)`` mask of the robot's road: the road component with the road cell nearest
    ``robot_xy`` (grid frame, metres); all False when the grid holds no road."""
    if grid.shape != (spec.rows, spec.cols):
        raise ValueError(f"grid is {grid.shape}, expected ({spec.rows}, {spec.cols}) for its spec")
    road = grid == ROAD
    if not road.any():
        return road
    d2 = np.where(road, _squared_distances(spec, (float(robot_xy[0]), float(robot_xy[1]))), np.inf)
    nearest = np.flatnonzero(d2 <= d2.min() + 1e-9 * spec.resolution ** 2)
    _, labels = cv2.connectedComponents(road.view(np.uint8), connectivity=8)
    candidates = np.unique(labels.ravel()[nearest])
    label = max(candidates, key=lambda c: np.count_nonzero(labels == c)) if len(candidates) > 1 else candidates[0]
    return labels == label


def road_boundary(grid: np.ndarray, spec: GridSpec, robot_xy: tuple[float, float] = (0.0, 0.0),
                  tolerance_cells: float = 1.0) -> np.ndarray:
    """Outer boundary of the robot's road (:func:`road_component`) as ``(N, 2)`` float64 grid-frame (x, y)
    metres, counter-clockwise (x forward, y left), not repeating the first vertex; ``(0, 2)`` when the
    grid holds no road. A road one cell wide or a single cell gives fewer than 3 vertices."""
    if not tolerance_cells >= 0:
        raise ValueError(f"tolerance_cells must be >= 0, got {tolerance_cells}")
    region = road_component(grid, spec, robot_xy)
    if not region.any():
        return np.zeros((0, 2), np.float64)
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=len)  # one component: one outer contour
    if tolerance_cells > 0 and len(contour) > 2:
        contour = cv2.approxPolyDP(contour, tolerance_cells, closed=True)
    cells = contour.reshape(-1, 2).astype(np.float64)  # (col, row)
    x0, y0 = spec.origin
    points = np.column_stack([x0 + (cells[:, 0] + 0.5) * spec.resolution, y0 + (cells[:, 1] + 0.5) * spec.resolution])
    if len(points) > 2 and polygon_area(points) < 0:
        points = points[::-1].copy()
    return points


def polygon_area(points: np.ndarray) -> float:
    """Signed area (shoelace) of a closed polygon given without its repeated first vertex: > 0 counter-clockwise."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
