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


#: Ground truth is drawn in magenta beside the prediction's green; void pixels are dimmed.
TRUTH_COLOR = (255, 0, 255)


def compare_panel(image: np.ndarray, pred: np.ndarray, label: np.ndarray, void: int = 255) -> np.ndarray:
    """A prediction overlay (0/255 ``pred``) beside the ground truth (``label`` 0/1/``void``), RGB."""
    truth = draw_overlay(image, np.where(label == 1, 255, 0).astype(np.uint8), color=TRUTH_COLOR)
    truth[label == void] //= 3
    return side_by_side([draw_overlay(image, pred), truth])


#: Height of the dark strip above each row of a sheet that holds the row's title.
TITLE_HEIGHT = 24


def text_strip(text: str, width: int, height: int = TITLE_HEIGHT, dark: bool = True) -> np.ndarray:
    """A strip of ``width`` with ``text`` on it (white on dark grey, or black on white), shrunk to fit."""
    strip = np.full((height, width, 3), 40 if dark else 255, np.uint8)
    (text_w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    scale = 0.5 * min(1.0, (width - 16) / max(text_w, 1))
    cv2.putText(strip, text, (8, height - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255) if dark else (0, 0, 0),
                1, cv2.LINE_AA)
    return strip


def stack_rows(rows: list[tuple[str, np.ndarray]], width: int) -> np.ndarray:
    """Stack ``(title, panel)`` rows vertically, each panel resized (aspect kept) to ``width`` under its title."""
    out = []
    for title, panel in rows:
        out.append(text_strip(title, width))
        out.append(cv2.resize(panel, (width, int(round(panel.shape[0] * width / panel.shape[1]))),
                              interpolation=cv2.INTER_AREA))
    return np.concatenate(out)
