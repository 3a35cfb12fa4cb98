"""Synthetic camera pictures with known ground truth: a street scene, and flat-ground shapes seen by a camera."""

from __future__ import annotations

import math

import cv2
import numpy as np

from road_seg_perception.core.ground_grid import Intrinsics


def road_scene(h: int = 180, w: int = 240, seed: int = 0) -> np.ndarray:
    """A synthetic street: sky, buildings, a grey road trapezoid, a little noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 3] = (140, 180, 230)
    img[h // 3:] = (90, 80, 70)
    ys, xs = np.mgrid[0:h, 0:w]
    road = (ys > h // 2) & (np.abs(xs - w / 2) < (ys - h / 2) * 1.4 + 10)
    img[road] = (120, 120, 125)
    return np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


def camera_axes(pitch: float, roll: float, yaw: float) -> np.ndarray:
    """Columns: the optical x (right), y (down), z (forward) in the ground frame, built from view vectors.

    Written independently of the module: forward from yaw and pitch, then right/down turned about it by roll.
    """
    fwd = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), -math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(fwd, right)
    right, down = math.cos(roll) * right + math.sin(roll) * down, math.cos(roll) * down - math.sin(roll) * right
    return np.stack([right, down, fwd], axis=1)


def render(shape, intr: Intrinsics, height: float, pitch: float, roll: float = 0.0, yaw: float = 0.0,
           x: float = 0.0, y: float = 0.0, max_range: float = 1e9) -> np.ndarray:
    """A 0/255 road mask as the camera sees ``shape(x, y) -> bool`` on flat ground, one ray per pixel.

    The sky (and ground beyond ``max_range``) is painted road on purpose: no grid cell may read it.
    """
    u, v = np.meshgrid(np.arange(intr.width, dtype=np.float64), np.arange(intr.height, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel()], axis=-1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    norm = cv2.undistortPointsIter(pix, intr.matrix(), intr.coefficients(), None, None, crit).reshape(-1, 2)
    rays = np.concatenate([norm, np.ones((len(norm), 1))], axis=1) @ camera_axes(pitch, roll, yaw).T
    down = rays[:, 2] < -1e-9
    t = np.where(down, height / np.where(down, -rays[:, 2], 1.0), 0.0)
    gx, gy = x + t * rays[:, 0], y + t * rays[:, 1]
    ground = down & (np.hypot(gx - x, gy - y) <= max_range)
    road = ~ground | shape(gx, gy)
    return np.where(road, 255, 0).astype(np.uint8).reshape(intr.height, intr.width)
