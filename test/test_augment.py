"""Augmentation keeps image and label aligned, is seedable and can be turned off."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.training.augment import AugmentConfig, augment, augment_with_soft, photometric

H, W, CELL = 96, 128, 16

NO_PHOTO = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue_deg": 0.0}


def block_label(seed: int, void_cells: bool = True) -> np.ndarray:
    """A label of random 16x16 cells: road, not road and (optionally) void."""
    rng = np.random.default_rng(seed)
    choices = [0, 1, VOID] if void_cells else [0, 1]
    cells = rng.choice(choices, size=(H // CELL, W // CELL), p=[0.45, 0.45, 0.1] if void_cells else None)
    return np.kron(cells, np.ones((CELL, CELL), np.int64)).astype(np.uint8)


def encode(label: np.ndarray) -> np.ndarray:
    """An RGB image whose colour encodes the label: road white, not road black, void mid grey.

    Grey levels survive the photometric jitter's hue and saturation changes, and the default
    brightness/contrast strengths (0.25) keep white above 140 and black below 80.
    """
    grey = np.where(label == 1, 255, np.where(label == 0, 0, 128)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def misaligned_pixels(image: np.ndarray, label: np.ndarray, margin: int = 1) -> tuple[int, int]:
    """(checked, wrong): non-void label pixels away from any class edge whose colour disagrees.

    Pixels within ``margin`` of another label value (or of void, where the image holds
    reflected border content) are skipped: bilinear image interpolation blends across edges
    while the nearest-neighbour label does not.
    """
    k = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    bright = image.mean(axis=2) > 110
    checked = wrong = 0
    for cls, expect_bright in ((0, False), (1, True)):
        interior = cv2.erode((label == cls).astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
        checked += int(interior.sum())
        wrong += int((interior & (bright != expect_bright)).sum())
    return checked, wrong


def test_checker_detects_misalignment():
    """The alignment check is not vacuous: a 2-px shift of the image alone is caught."""
    label = block_label(3, void_cells=False)
    image = encode(label)
    checked, wrong = misaligned_pixels(image, label)
    assert checked > 0.3 * label.size and wrong == 0
    _, wrong = misaligned_pixels(np.roll(image, 2, axis=1), label)
    assert wrong > 0


@settings(max_examples=60, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), label_seed=st.integers(0, 1000),
       lo=st.floats(0.6, 1.0), span=st.floats(0.0, 0.6), rotate=st.floats(0.0, 15.0), hflip=st.floats(0.0, 1.0),
       photometric=st.booleans())
def test_augmentation_keeps_image_and_label_aligned(seed, label_seed, lo, span, rotate, hflip, photometric):
    cfg = AugmentConfig(scale=(lo, lo + span), rotate_deg=rotate, hflip=hflip,
                        **({} if photometric else NO_PHOTO))
    label = block_label(label_seed)
    image = encode(label)
    out_img, out_lbl = augment(image, label, np.random.default_rng(seed), cfg)
    assert out_img.shape == image.shape and out_img.dtype == np.uint8
    assert out_lbl.shape == label.shape and out_lbl.dtype == np.uint8
    assert set(np.unique(out_lbl)) <= {0, 1, VOID}
    checked, wrong = misaligned_pixels(out_img, out_lbl)
    # at the smallest zoom (0.6) about a third of the frame is real content; most of it is checked
    assert checked > 0.05 * label.size
    assert wrong == 0, f"{wrong} of {checked} interior pixels have the other class's colour"


def test_hflip_only_is_an_exact_mirror():
    cfg = AugmentConfig(hflip=1.0, scale=(1.0, 1.0), rotate_deg=0.0, **NO_PHOTO)
    label = block_label(5)
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out_img, out_lbl = augment(image, label, np.random.default_rng(1), cfg)
    np.testing.assert_array_equal(out_img, image[:, ::-1])
    np.testing.assert_array_equal(out_lbl, label[:, ::-1])


def test_no_flip_no_scale_no_rotation_is_identity_geometry():
    cfg = AugmentConfig(hflip=0.0, scale=(1.0, 1.0), rotate_deg=0.0, **NO_PHOTO)
    label = block_label(6)
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out_img, out_lbl = augment(image, label, np.random.default_rng(2), cfg)
    np.testing.assert_array_equal(out_img, image)
    np.testing.assert_array_equal(out_lbl, label)


def test_zoom_out_fills_outside_with_void():
    cfg = AugmentConfig(hflip=0.0, scale=(0.5, 0.5), rotate_deg=0.0, **NO_PHOTO)
    label = np.ones((H, W), np.uint8)
    _, out_lbl = augment(encode(label), label, np.random.default_rng(0), cfg)
    frac_void = (out_lbl == VOID).mean()
    assert 0.7 < frac_void < 0.8  # a half-size frame covers a quarter of the output
    assert set(np.unique(out_lbl)) == {1, VOID}


def test_same_seed_same_output_and_different_seed_differs():
    cfg = AugmentConfig()
    label = block_label(7)
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    a = augment(image, label, np.random.default_rng(123), cfg)
    b = augment(image, label, np.random.default_rng(123), cfg)
    c = augment(image, label, np.random.default_rng(124), cfg)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_photometric_changes_colour_not_label():
    cfg = AugmentConfig(hflip=0.0, scale=(1.0, 1.0), rotate_deg=0.0)
    label = block_label(8)
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out_img, out_lbl = augment(image, label, np.random.default_rng(3), cfg)
    np.testing.assert_array_equal(out_lbl, label)
    assert not np.array_equal(out_img, image)


def test_disabled_is_identity():
    label = block_label(9)
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out_img, out_lbl = augment(image, label, np.random.default_rng(0), AugmentConfig(enabled=False))
    np.testing.assert_array_equal(out_img, image)
    np.testing.assert_array_equal(out_lbl, label)


@pytest.mark.parametrize(("field", "value"), [
    ("hflip", 1.5), ("scale", (1.2, 0.9)), ("scale", (0.0, 1.0)), ("rotate_deg", -1.0), ("hue_deg", -2.0),
    ("gamma", (0.0, 1.0)), ("gamma", (2.0, 1.5)), ("noise", -1.0),
])
def test_bad_config_names_field(field, value):
    with pytest.raises(ValueError, match=f"augment.{field}"):
        AugmentConfig(**{field: value}).validate()


def test_gamma_darkens_midtones_and_keeps_black_and_white():
    """A gamma of exactly 2 maps grey 128 to 64 (a dusk-like exposure), leaving 0 and 255 alone."""
    cfg = AugmentConfig(hflip=0.0, scale=(1.0, 1.0), rotate_deg=0.0, **NO_PHOTO, gamma=(2.0, 2.0))
    image = np.zeros((H, W, 3), np.uint8)
    image[:, : W // 3] = 128
    image[:, W // 3: 2 * W // 3] = 255
    label = block_label(10)
    out_img, out_lbl = augment(image, label, np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(out_lbl, label)
    assert set(np.unique(out_img[:, : W // 3])) == {64}  # 255 * (128/255)**2 = 64.25
    assert set(np.unique(out_img[:, W // 3: 2 * W // 3])) == {255}
    assert set(np.unique(out_img[:, 2 * W // 3:])) == {0}


def test_gamma_range_is_sampled_per_draw():
    cfg = AugmentConfig(hflip=0.0, scale=(1.0, 1.0), rotate_deg=0.0, **NO_PHOTO, gamma=(0.5, 2.5))
    image = np.full((H, W, 3), 128, np.uint8)
    label = block_label(11)
    means = {float(augment(image, label, np.random.default_rng(s), cfg)[0].mean()) for s in range(20)}
    assert min(means) < 100 < 128 < max(means)  # both darker and brighter exposures occur


def test_noise_perturbs_pixels_with_bounded_spread():
    cfg = AugmentConfig(hflip=0.0, scale=(1.0, 1.0), rotate_deg=0.0, **NO_PHOTO, noise=8.0)
    image = np.full((H, W, 3), 128, np.uint8)
    out_img, _ = augment(image, block_label(12), np.random.default_rng(5), cfg)
    diff = out_img.astype(np.int16) - 128
    assert 0 < diff.std() <= 8.0 * 1.1
    assert abs(diff.mean()) < 1.0


# ----------------------------------------------------------------------------- robustness augmentations

def _photo_only(**kw) -> AugmentConfig:
    return AugmentConfig(hflip=0.0, scale=(1.0, 1.0), rotate_deg=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                         hue_deg=0.0, **kw)


def test_white_balance_scales_channels_independently():
    image = np.full((16, 16, 3), 100, np.uint8)
    out = photometric(image, np.random.default_rng(3), _photo_only(white_balance=0.2))
    means = out.reshape(-1, 3).mean(axis=0)
    assert np.all((means >= 80) & (means <= 120)) and np.ptp(means) > 1  # channels moved by different gains


def test_blur_smooths_and_jpeg_adds_artefacts():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    blurred = photometric(image, np.random.default_rng(0), _photo_only(blur=1.0, blur_sigma=(1.0, 1.0)))
    assert blurred.std() < image.std() * 0.7
    jpeg = photometric(image, np.random.default_rng(0), _photo_only(jpeg=1.0, jpeg_quality=(20, 20)))
    assert jpeg.shape == image.shape and jpeg.dtype == np.uint8 and np.abs(jpeg.astype(int) - image).mean() > 5


def test_vertical_shift_moves_image_and_label_together():
    label = np.zeros((40, 20), np.uint8)
    label[20:] = 1
    image = np.where(label[..., None] == 1, 200, 50).astype(np.uint8).repeat(3, axis=2)
    cfg = AugmentConfig(hflip=0.0, scale=(1.0, 1.0), rotate_deg=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                        hue_deg=0.0, vshift=0.25)
    img2, lab2 = augment(image, label, np.random.default_rng(5), cfg)
    rows = np.flatnonzero((lab2 == 1).all(axis=1))
    assert rows[0] != 20  # the horizon moved
    valid = lab2 != 255
    assert np.all((img2[..., 0][valid] > 125) == (lab2[valid] == 1))


def test_soft_map_follows_the_label_geometry():
    rng = np.random.default_rng(6)
    label = (rng.random((24, 32)) > 0.5).astype(np.uint8)
    image = np.repeat(label[..., None] * 200, 3, axis=2).astype(np.uint8)
    soft = label.astype(np.float32)
    _, lab2, soft2 = augment_with_soft(image, label, soft, np.random.default_rng(7),
                                       AugmentConfig(scale=(0.7, 1.2), rotate_deg=0.0))
    inside = (lab2 != 255) & (soft2 >= 0)
    assert np.mean(np.abs(soft2[inside] - lab2[inside]) < 0.5) > 0.9  # bilinear vs nearest differ only at edges
    assert np.all(soft2[lab2 == 255] <= 0.5)  # outside the frame: no soft label (-1, blended at the border)


@pytest.mark.parametrize("field,value", [("blur", 1.5), ("jpeg", -0.1), ("white_balance", -1.0), ("vshift", -0.1),
                                         ("jpeg_quality", (0, 50)), ("blur_sigma", (0.0, 1.0))])
def test_bad_robustness_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"augment.{field}"):
        AugmentConfig(**{field: value}).validate()
