"""The frames the benchmark feeds: CamVid validation images, else synthetic road-like ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from road_seg_perception.training.datasets import IMAGE_EXTS, default_camvid_root, read_image

# ----------------------------------------------------------------------------- frames


def _synthetic_frame(w: int, h: int, seed: int) -> np.ndarray:
    """A road-like RGB frame: sky gradient, grey road trapezoid at the bottom, texture noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    sky = np.linspace(230, 140, h // 2, dtype=np.float32)[:, None, None] * np.array([0.6, 0.8, 1.0], np.float32)
    img[: h // 2] = sky.astype(np.uint8)
    img[h // 2:] = (60, 110, 50)
    import cv2

    top, bottom = h // 2, h
    poly = np.array([[w * 0.42, top], [w * 0.58, top], [w * 0.98, bottom], [w * 0.02, bottom]], np.int32)
    cv2.fillConvexPoly(img, poly, (105, 105, 110))
    noise = rng.integers(-12, 13, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def load_frames(size_wh: tuple[int, int], n: int, frames_dir: Path | None = None) -> tuple[list[np.ndarray], str]:
    """``n`` RGB frames at ``size_wh`` from ``frames_dir`` (default CamVid val), else synthetic ones.

    Returns the frames and where they came from.
    """
    import cv2

    w, h = size_wh
    folder = frames_dir if frames_dir is not None else default_camvid_root() / "val"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)[:n] if folder.is_dir() else []
    if files:
        frames = []
        for p in files:
            img = read_image(p)
            shrink = img.shape[0] > h and img.shape[1] > w
            frames.append(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR))
        return frames, str(folder)
    return [_synthetic_frame(w, h, i) for i in range(n)], "synthetic"


def to_encoding(rgb: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    raise ValueError(f"--encoding must be rgb8 or bgr8, got {encoding!r}")


