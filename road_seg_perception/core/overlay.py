"""Drivable-area overlays: road tinted with a colour, its boundary drawn."""

from __future__ import annotations

import cv2
import numpy as np


def draw_overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 0),
                 alpha: float = 0.45, boundary: bool = True, boundary_thickness: int = 2) -> np.ndarray:
    """Tint the road (``mask > 0``) of a 3-channel uint8 ``image`` with ``color``.

    ``color`` is in the image's own channel order. Returns a new array; ``image`` is untouched.
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = np.ascontiguousarray(image).copy()
    road = (mask > 0).view(np.uint8)
    if road.any():
        # value * (1 - alpha) + tint * alpha in float32, truncated, as a per-channel lookup table:
        # the same numbers as blending the road pixels one by one, without gathering them
        tint = np.asarray(color, dtype=np.float32)
        lut = (np.arange(256, dtype=np.float32)[:, None] * (1.0 - alpha) + tint * alpha).astype(np.uint8)
        cv2.copyTo(cv2.LUT(out, lut.reshape(256, 1, 3)), road, out)
        if boundary:
            contours, _ = cv2.findContours(road, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), boundary_thickness)
    return out


def side_by_side(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Join equal-height RGB panels horizontally with a white gap."""
    h = panels[0].shape[0]
    spacer = np.full((h, gap, 3), 255, dtype=np.uint8)
    row: list[np.ndarray] = []
    for p in panels:
        if row:
            row.append(spacer)
        row.append(p)
    return np.concatenate(row, axis=1)
