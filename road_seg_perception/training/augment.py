"""On-the-fly augmentation with identical geometry for image and label.

One affine warp applies flip, scale, crop and rotation together (bilinear for the image,
nearest-neighbour for the label, void outside the frame); photometric jitter works in HSV.
Everything is drawn from the ``numpy.random.Generator`` passed in, so runs are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from road_seg_perception.core.preprocessing import VOID


@dataclass
class AugmentConfig:
    """Augmentation strengths; ``enabled: false`` turns all of it off."""

    enabled: bool = True
    hflip: float = 0.5
    scale: tuple[float, float] = (0.8, 1.3)
    rotate_deg: float = 6.0
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    hue_deg: float = 8.0
    gamma: tuple[float, float] = (1.0, 1.0)  # exposure curve 255*(x/255)**g, g log-uniform in range
    noise: float = 0.0  # std of additive Gaussian sensor noise, in grey levels
    white_balance: float = 0.0  # per-channel gain in 1 +- this (camera white balance)
    blur: float = 0.0  # probability of a Gaussian blur (focus, motion)
    blur_sigma: tuple[float, float] = (0.5, 1.5)  # its sigma range, in pixels of the augmented image
    jpeg: float = 0.0  # probability of a JPEG round trip (compression artefacts)
    jpeg_quality: tuple[int, int] = (30, 90)
    vshift: float = 0.0  # vertical shift up to this fraction of the height: camera pitch / mounting height

    def validate(self) -> None:
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"augment.hflip must be in [0, 1], got {self.hflip}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"augment.scale must be 0 < low <= high, got {self.scale}")
        g_lo, g_hi = self.gamma
        if not 0 < g_lo <= g_hi:
            raise ValueError(f"augment.gamma must be 0 < low <= high, got {self.gamma}")
        for name in ("rotate_deg", "brightness", "contrast", "saturation", "hue_deg", "noise", "white_balance",
                     "vshift"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be >= 0")
        for name in ("blur", "jpeg"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augment.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"augment.blur_sigma must be 0 < low <= high, got {self.blur_sigma}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"augment.jpeg_quality must be 1 <= low <= high <= 100, got {self.jpeg_quality}")

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        """The ``augment`` section, checked (range settings become tuples)."""
        kw = dict(d)
        for k in ("scale", "gamma", "blur_sigma", "jpeg_quality"):
            if k in kw:
                kw[k] = tuple(kw[k])
        out = cls(**kw)
        out.validate()
        return out


def geometric_matrix(shape_hw: tuple[int, int], rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """A 2x3 affine matrix: zoom by a random scale about a random centre, rotate, maybe flip."""
    h, w = shape_hw
    s = rng.uniform(*cfg.scale)
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg) if cfg.rotate_deg else 0.0
    # Pick the centre so that a zoomed-in crop stays within the frame.
    half_w, half_h = w / (2 * s), h / (2 * s)
    cx = rng.uniform(min(half_w, w / 2), max(w - half_w, w / 2))
    cy = rng.uniform(min(half_h, h / 2), max(h - half_h, h / 2))
    m = cv2.getRotationMatrix2D((cx, cy), angle, s)
    m[:, 2] += (w / 2 - cx, h / 2 - cy)
    if cfg.vshift:  # a camera pitched or mounted differently sees the horizon higher or lower
        m[1, 2] += rng.uniform(-cfg.vshift, cfg.vshift) * h
    if rng.random() < cfg.hflip:
        m = np.array([[-1, 0, w - 1], [0, 1, 0]], dtype=np.float64) @ np.vstack([m, [0, 0, 1]])
    return m


def photometric(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Gamma, brightness, contrast, saturation and hue jitter and sensor noise of an RGB uint8 image.

    A gamma above 1 darkens shadows and mid-tones while the sky stays bright: how a camera
    exposed for the sky renders a street at dusk.
    """
    g_lo, g_hi = cfg.gamma
    if g_hi > g_lo or g_lo != 1.0:
        g = float(np.exp(rng.uniform(np.log(g_lo), np.log(g_hi))))
        lut = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** g), 0, 255).astype(np.uint8)
        image = cv2.LUT(image, lut)
    img = image.astype(np.float32)
    if cfg.white_balance:
        img *= (1.0 + rng.uniform(-cfg.white_balance, cfg.white_balance, 3)).astype(np.float32)
    if cfg.brightness:
        img *= 1.0 + rng.uniform(-cfg.brightness, cfg.brightness)
    if cfg.contrast:
        mean = img.mean()
        img = (img - mean) * (1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    img = np.clip(img, 0, 255).astype(np.uint8)
    if cfg.saturation or cfg.hue_deg:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
        if cfg.hue_deg:  # OpenCV hue is in [0, 180)
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue_deg, cfg.hue_deg) / 2.0) % 180.0
        if cfg.saturation:
            hsv[..., 1] *= 1.0 + rng.uniform(-cfg.saturation, cfg.saturation)
        hsv = np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if cfg.blur and rng.random() < cfg.blur:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(*cfg.blur_sigma))
    if cfg.noise:
        sigma = rng.uniform(0.0, cfg.noise)
        img = np.clip(np.rint(img + rng.normal(0.0, sigma, img.shape)), 0, 255).astype(np.uint8)
    if cfg.jpeg and rng.random() < cfg.jpeg:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return img


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
            ) -> tuple[np.ndarray, np.ndarray]:
    """Augment one (RGB uint8 image, 0/1/void label) pair; sizes are kept."""
    image, label, _ = augment_with_soft(image, label, None, rng, cfg)
    return image, label


def augment_with_soft(image: np.ndarray, label: np.ndarray, soft: np.ndarray | None, rng: np.random.Generator,
                      cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Augment an image, its label and (optionally) a teacher probability map with the same geometry.

    Outside the warped frame the label is void and the teacher map is -1 (no soft label).
    """
    image, label, soft, _ = augment_sample(image, label, soft, None, rng, cfg)
    return image, label, soft


def augment_sample(image: np.ndarray, label: np.ndarray, soft: np.ndarray | None, classes: np.ndarray | None,
                   rng: np.random.Generator, cfg: AugmentConfig
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """:func:`augment_with_soft`, and an optional map of auxiliary class ids warped like the label."""
    if not cfg.enabled:
        return image, label, soft, classes
    h, w = label.shape[:2]
    m = geometric_matrix((h, w), rng, cfg)
    image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    def nearest(ids: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(ids, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=VOID)

    label = nearest(label)
    if classes is not None:
        classes = nearest(classes)
    if soft is not None:
        soft = cv2.warpAffine(soft.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
    return photometric(image, rng, cfg), label, soft, classes
