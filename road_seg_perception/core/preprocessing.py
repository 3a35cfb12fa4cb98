"""The one pre-processing path shared by training and inference.

Images enter as ``uint8`` RGB ``(H, W, 3)`` arrays; the model sees ``float32`` RGB in ``[0, 1]``
at its input size. Masks are resized with nearest-neighbour so labels never blend.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Label value for pixels that carry no ground truth (ignored by losses and metrics).
VOID = 255


def resize_image(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an image to ``size_hw`` bilinearly, shrinking or enlarging.

    Area interpolation, the textbook choice for shrinking, costs several times as much for the
    non-integer steps from camera frames to the model input (``bench/resize_ab.py``); the shipped
    model was fine-tuned on bilinear frames (models/MODEL_CARD.md: what that cost and saved).
    """
    h, w = size_hw
    if image.shape[0] == h and image.shape[1] == w:
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def preprocess(image_rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Return the model input for one RGB uint8 image: resized, ``float32`` in ``[0, 1]``."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image_rgb.shape}")
    resized = resize_image(image_rgb, size_hw)
    return resized.astype(np.float32) * np.float32(1.0 / 255.0)


def preprocess_batch(images_rgb: list[np.ndarray], size_hw: tuple[int, int]) -> np.ndarray:
    """Stack :func:`preprocess` of several images into an ``(N, H, W, 3)`` batch."""
    return np.stack([preprocess(im, size_hw) for im in images_rgb], axis=0)


def resize_label(label: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a label map (0/1 with :data:`VOID`) with nearest-neighbour interpolation."""
    h, w = size_hw
    if label.shape[0] == h and label.shape[1] == w:
        return label
    return cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)


def upsample_probability(prob: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a ``float32`` probability map back to the camera resolution (bilinear)."""
    h, w = size_hw
    if prob.shape[0] == h and prob.shape[1] == w:
        return prob
    return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
