"""Turn a model's low-resolution road probability into a full-resolution 0/255 mask."""

from __future__ import annotations

import cv2
import numpy as np

from road_seg_perception.core.preprocessing import upsample_probability


def probability_to_mask(prob: np.ndarray, out_hw: tuple[int, int], threshold: float = 0.5,
                        min_blob_area: int = 0, fill_holes_area: int = 0) -> np.ndarray:
    """Upsample ``prob`` (H, W) float32 to ``out_hw``, threshold it and clean it up.

    ``min_blob_area`` removes road blobs smaller than that many pixels; then ``fill_holes_area``
    fills non-road regions smaller than that many pixels. Returns uint8 0/255.
    """
    full = upsample_probability(prob, out_hw)
    mask = np.where(full >= threshold, np.uint8(255), np.uint8(0))
    if min_blob_area > 0:
        mask = remove_small_blobs(mask, min_blob_area)
    if fill_holes_area > 0:
        mask = 255 - remove_small_blobs(255 - mask, fill_holes_area)
    return mask


def remove_small_blobs(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Zero the 8-connected 255-components of ``mask`` smaller than ``min_area`` pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False  # background label
    return np.where(keep[labels], np.uint8(255), np.uint8(0))
