"""Road mask -> drivable-area occupancy grid on a flat ground plane (ROS-free).

Frames (REP 103): the grid frame has x forward, y left, z up, the ground at z = 0. The camera's
optical frame has z along the view, x right, y down (the frame ``camera_info`` refers to).

    grids = GroundGridCache()
    grid = grids.project(mask, intrinsics, pose, spec)   # int8 (rows, cols): 0 road, 100 not road, -1 unseen

The grid is stored as ``nav_msgs/OccupancyGrid`` lays it out: row ``r``, column ``c`` is the cell
whose centre is at ``spec.origin + ((c + 0.5) * res, (r + 0.5) * res)``: columns run along x
(forward), rows along y (left). Every cell centre is projected once into the image through the
pinhole model with lens distortion (:class:`GroundGrid`, rebuilt only when the intrinsics, the
pose, the grid or the image size change); a frame then costs one ``cv2.remap`` of the mask at
those pixels (nearest pixel). A cell is unseen (-1) when its centre lies behind the camera,
beyond ``max_range_m`` from the camera's foot point, outside the image, or where the lens model
folds back (beyond the radius at which the distortion polynomial stops increasing). Mask pixels
above the horizon are never read: no ground point projects there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

ROAD, NOT_ROAD, UNSEEN = 0, 100, -1
#: ``camera_info.distortion_model`` values understood, with the number of coefficients they use.
DISTORTION_MODELS = {"": 0, "none": 0, "plumb_bob": 5, "rational_polynomial": 8}
#: Largest grid accepted (cells); a bigger one is refused as a configuration error.
MAX_CELLS = 4_000_000


class GridConfigError(ValueError):
    """Intrinsics, pose or grid settings that cannot make a grid; the message names the value."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics as ``sensor_msgs/CameraInfo`` carries them (K row-major, D, model, size)."""

    width: int
    height: int
    k: tuple[float, ...]
    d: tuple[float, ...] = ()
    distortion_model: str = "plumb_bob"

    def validate(self) -> Intrinsics:
        """Return self, or raise :class:`GridConfigError` saying what is wrong."""
        if self.width <= 0 or self.height <= 0:
            raise GridConfigError(f"camera_info size {self.width}x{self.height} is invalid")
        if len(self.k) != 9 or not all(math.isfinite(v) for v in self.k):
            raise GridConfigError(f"camera_info K must hold 9 finite numbers, got {list(self.k)}")
        fx, fy = self.k[0], self.k[4]
        if fx <= 0 or fy <= 0:
            raise GridConfigError(f"camera_info K has fx={fx}, fy={fy}: the camera is not calibrated")
        model = self.distortion_model
        if model not in DISTORTION_MODELS:
            raise GridConfigError(f"camera_info distortion_model {model!r} is not supported "
                                  f"(supported: {', '.join(m for m in DISTORTION_MODELS if m)})")
        if not all(math.isfinite(v) for v in self.d):
            raise GridConfigError(f"camera_info D holds non-finite values: {list(self.d)}")
        return self

    def scaled_to(self, width: int, height: int) -> Intrinsics:
        """The same camera at another image size (a resized stream): K scaled, pixel centres kept."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        k = list(self.k)
        k[0], k[1], k[2] = k[0] * sx, k[1] * sx, (k[2] + 0.5) * sx - 0.5
        k[4], k[5] = k[4] * sy, (k[5] + 0.5) * sy - 0.5
        return Intrinsics(width, height, tuple(k), self.d, self.distortion_model)

    def matrix(self) -> np.ndarray:
        return np.array(self.k, np.float64).reshape(3, 3)

    def coefficients(self) -> np.ndarray:
        """Distortion coefficients for OpenCV (k1, k2, p1, p2[, k3[, k4, k5, k6]]); zeros when none."""
        n = DISTORTION_MODELS[self.distortion_model]
        d = np.zeros(max(n, 5) if n else 5, np.float64)
        m = min(len(self.d), len(d)) if n else 0
        d[:m] = self.d[:m]
        return d


def _rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll): the ROS fixed-axis roll-pitch-yaw convention."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


#: Columns: the optical frame's x (right), y (down), z (forward) in a body frame (x forward, y left, z up).
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class CameraPose:
    """The camera's optical frame in the grid frame: ``rotation`` (row-major 3x3) and ``position``."""

    rotation: tuple[float, ...]
    position: tuple[float, float, float]

    @classmethod
    def from_mount(cls, height: float, roll: float = 0.0, pitch: float = 0.0, yaw: float = 0.0,
                   x: float = 0.0, y: float = 0.0) -> CameraPose:
        """A camera ``height`` metres above the ground at ``(x, y)``, turned by roll/pitch/yaw (radians).

        The angles turn a body frame (x forward, y left, z up) in the ROS convention: positive pitch
        looks down, positive yaw looks left, positive roll turns the camera's right side down (the
        horizon then rises towards the image's right edge).
        """
        for name, v in (("height", height), ("roll", roll), ("pitch", pitch), ("yaw", yaw), ("x", x), ("y", y)):
            if not math.isfinite(v):
                raise GridConfigError(f"camera {name} must be finite, got {v}")
        if height <= 0:
            raise GridConfigError(f"camera height must be > 0 m, got {height}")
        r = _rotation_rpy(roll, pitch, yaw) @ BODY_FROM_OPTICAL
        return cls(tuple(float(v) for v in r.ravel()), (float(x), float(y), float(height)))

    @classmethod
    def from_transform(cls, translation: tuple[float, float, float],
                       quaternion_xyzw: tuple[float, float, float, float]) -> CameraPose:
        """The pose a tf lookup gives (grid frame <- camera optical frame)."""
        x, y, z, w = quaternion_xyzw
        n = math.sqrt(x * x + y * y + z * z + w * w)
        if not n > 0 or not math.isfinite(n):
            raise GridConfigError(f"camera orientation quaternion {quaternion_xyzw} is invalid")
        x, y, z, w = x / n, y / n, z / n, w / n
        r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        if not translation[2] > 0:
            raise GridConfigError(f"camera height (z of the transform) must be > 0 m, got {translation[2]}")
        return cls(tuple(float(v) for v in r.ravel()), tuple(float(v) for v in translation))  # type: ignore[arg-type]

    def matrix(self) -> np.ndarray:
        return np.array(self.rotation, np.float64).reshape(3, 3)


@dataclass(frozen=True)
class GridSpec:
    """Grid geometry: ``resolution`` m/cell, x from 0 to ``forward_m``, y from ``-lateral_m/2`` to
    ``+lateral_m/2``; cells farther than ``max_range_m`` from the camera's foot point are unseen."""

    resolution: float = 0.1
    forward_m: float = 20.0
    lateral_m: float = 10.0
    max_range_m: float = 20.0

    def validate(self) -> GridSpec:
        """Return self, or raise :class:`GridConfigError` naming the bad value."""
        for name in ("resolution", "forward_m", "lateral_m", "max_range_m"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise GridConfigError(f"grid {name} must be > 0, got {v}")
        if self.forward_m < self.resolution or self.lateral_m < self.resolution:
            raise GridConfigError(f"grid extent {self.forward_m} x {self.lateral_m} m is smaller than one "
                                  f"cell ({self.resolution} m)")
        if self.cols * self.rows > MAX_CELLS:
            raise GridConfigError(f"grid of {self.cols} x {self.rows} cells is larger than {MAX_CELLS} cells: "
                                  "raise the resolution or shrink the extent")
        return self

    @property
    def cols(self) -> int:
        """Cells along x (forward): ``OccupancyGrid.info.width``."""
        return max(1, round(self.forward_m / self.resolution))

    @property
    def rows(self) -> int:
        """Cells along y (lateral): ``OccupancyGrid.info.height``."""
        return max(1, round(self.lateral_m / self.resolution))

    @property
    def origin(self) -> tuple[float, float]:
        """Grid-frame (x, y) of cell (0, 0)'s outer corner: ``OccupancyGrid.info.origin``."""
        return 0.0, -self.rows * self.resolution / 2.0

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """x and y of every cell centre, each ``(rows, cols)`` float64."""
        x0, y0 = self.origin
        xs = x0 + (np.arange(self.cols) + 0.5) * self.resolution
        ys = y0 + (np.arange(self.rows) + 0.5) * self.resolution
        return np.meshgrid(xs, ys)


def monotonic_radius(intr: Intrinsics, r_max: float = 20.0, steps: int = 20000) -> float:
    """Largest undistorted radius (normalised) up to which the radial distortion keeps increasing.

    Beyond it the polynomial folds back and far-off points would land inside the image.
    """
    d = intr.coefficients()
    k1, k2, k3 = d[0], d[1], d[4]
    k4, k5, k6 = (d[5], d[6], d[7]) if len(d) >= 8 else (0.0, 0.0, 0.0)
    r = np.linspace(0.0, r_max, steps)
    r2 = r * r
    rd = r * (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    bad = np.nonzero(np.diff(rd) <= 0)[0]
    return float(r[bad[0]]) if len(bad) else float("inf")


def project_ground_points(x: np.ndarray, y: np.ndarray, intrinsics: Intrinsics, pose: CameraPose
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel ``(u, v)`` of ground points ``(x, y, 0)`` (grid frame) and whether the camera sees them.

    Returns ``uv`` (shape ``x.shape + (2,)``, -1 where unseen) and ``seen`` (bool): in front of the
    camera, inside the lens model's monotonic radius and inside the image (pixel centres 0..W-1, 0..H-1).
    """
    rot = pose.matrix()
    cx, cy, cz = pose.position
    pts = np.stack([x - cx, y - cy, np.full(np.shape(x), -cz)], axis=-1)  # ground points relative to the camera
    cam = pts @ rot  # rotation.T @ p for every p: optical-frame coordinates
    z = cam[..., 2]
    in_front = z > 1e-6
    zs = np.where(in_front, z, 1.0)
    xn, yn = cam[..., 0] / zs, cam[..., 1] / zs
    ok = in_front & (np.hypot(xn, yn) < monotonic_radius(intrinsics))
    uv = np.full((*np.shape(x), 2), -1.0, np.float64)
    if ok.any():
        obj = np.stack([xn[ok], yn[ok], np.ones(int(ok.sum()))], axis=-1).reshape(-1, 1, 3)
        proj, _ = cv2.projectPoints(obj, np.zeros(3), np.zeros(3), intrinsics.matrix(), intrinsics.coefficients())
        uv[ok] = proj.reshape(-1, 2)
    u, v = uv[..., 0], uv[..., 1]
    seen = ok & (u >= 0) & (u <= intrinsics.width - 1) & (v >= 0) & (v <= intrinsics.height - 1)
    uv[~seen] = -1.0
    return uv, seen


class GroundGrid:
    """The cell -> pixel table of one camera, pose, grid and image size; :meth:`project` runs per frame."""

    def __init__(self, intrinsics: Intrinsics, pose: CameraPose, spec: GridSpec):
        self.intrinsics = intrinsics.validate()
        self.pose = pose
        self.spec = spec.validate()
        gx, gy = spec.cell_centres()
        uv, seen = project_ground_points(gx, gy, intrinsics, pose)
        seen &= np.hypot(gx - pose.position[0], gy - pose.position[1]) <= spec.max_range_m
        #: Cells whose centre the camera sees on the ground within range, ``(rows, cols)`` bool.
        self.seen = seen
        self.map_x = np.where(seen, uv[..., 0], -1.0).astype(np.float32)
        self.map_y = np.where(seen, uv[..., 1], -1.0).astype(np.float32)
        # the grid without road, as uint8 (-1 is 255): a frame clears the road cells out of it
        self._unseen_or_not_road = np.where(seen, NOT_ROAD, UNSEEN).astype(np.int8).view(np.uint8)

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.intrinsics.height, self.intrinsics.width

    def project(self, mask: np.ndarray) -> np.ndarray:
        """Grid of one road ``mask`` (``(H, W)`` uint8, road > 0, or bool): int8 ``(rows, cols)``."""
        if mask.shape[:2] != self.image_hw or mask.ndim != 2:
            raise ValueError(f"mask is {mask.shape}, the grid was built for {self.image_hw[1]}x{self.image_hw[0]} "
                             "single-channel images")
        m = mask.view(np.uint8) if mask.dtype == bool else mask
        if m.dtype != np.uint8:
            raise ValueError(f"mask must be uint8 or bool, got {mask.dtype}")
        sampled = cv2.remap(m, self.map_x, self.map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
        # road cells -> 0 (ROAD); unseen cells sample the border value 0 and keep -1
        not_road = cv2.compare(sampled, 0, cv2.CMP_EQ)  # 255 where not road
        return cv2.bitwise_and(self._unseen_or_not_road, not_road).view(np.int8)


class GroundGridCache:
    """Keeps one :class:`GroundGrid` and rebuilds it only when something it depends on changes.

    Intrinsics given for another image size than the mask's are scaled to the mask's size.
    """

    def __init__(self) -> None:
        self.grid: GroundGrid | None = None
        self._key: tuple | None = None
        #: How many tables were built (a test and the node's diagnostics read it).
        self.builds = 0

    def get(self, intrinsics: Intrinsics, pose: CameraPose, spec: GridSpec, image_hw: tuple[int, int]) -> GroundGrid:
        key = (intrinsics, pose, spec, tuple(image_hw))
        if self.grid is None or key != self._key:
            self.grid = GroundGrid(intrinsics.validate().scaled_to(image_hw[1], image_hw[0]), pose, spec)
            self._key = key
            self.builds += 1
        return self.grid

    def project(self, mask: np.ndarray, intrinsics: Intrinsics, pose: CameraPose, spec: GridSpec) -> np.ndarray:
        """:meth:`GroundGrid.project` with the table for these settings (built if needed)."""
        return self.get(intrinsics, pose, spec, mask.shape[:2]).project(mask)


def project_mask(mask: np.ndarray, intrinsics: Intrinsics, pose: CameraPose, spec: GridSpec) -> np.ndarray:
    """One-off grid of ``mask`` (builds the table each call; use :class:`GroundGridCache` per stream)."""
    return GroundGrid(intrinsics.validate().scaled_to(mask.shape[1], mask.shape[0]), pose, spec).project(mask)


GRID_COLOURS = {ROAD: (60, 200, 60), NOT_ROAD: (70, 70, 70), UNSEEN: (200, 200, 200)}


def grid_image(grid: np.ndarray, cell_px: int = 2, origin_marker: bool = True) -> np.ndarray:
    """Bird's-eye RGB picture of a grid: forward up, left on the left; road green, not road dark, unseen light."""
    top = grid.T[::-1, ::-1]  # rows: x decreasing (forward up); columns: y decreasing (left on the left)
    out = np.empty((*top.shape, 3), np.uint8)
    for value, colour in GRID_COLOURS.items():
        out[top == value] = colour
    if cell_px > 1:
        out = cv2.resize(out, (top.shape[1] * cell_px, top.shape[0] * cell_px), interpolation=cv2.INTER_NEAREST)
    if origin_marker:  # the grid frame's origin: middle of the bottom edge
        h, w = out.shape[:2]
        cv2.drawMarker(out, (w // 2, h - 1), (220, 40, 40), cv2.MARKER_TRIANGLE_UP, max(8, 4 * cell_px), 2)
    return out
