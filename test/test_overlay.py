"""`draw_overlay`, the per-frame overlay: its vectorised blend gives exactly what a per-pixel blend gives."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from road_seg_perception.core.overlay import draw_overlay


def reference_overlay(image, mask, color=(0, 255, 0), alpha=0.45, boundary=True, boundary_thickness=2):
    """The overlay as first written: blend the road pixels one by one (slow, obviously right)."""
    out = image.copy()
    road = mask > 0
    if road.any():
        tint = np.asarray(color, dtype=np.float32)
        out[road] = (out[road].astype(np.float32) * (1.0 - alpha) + tint * alpha).astype(np.uint8)
        if boundary:
            contours, _ = cv2.findContours(road.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), boundary_thickness)
    return out


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       color=st.tuples(*[st.integers(0, 255)] * 3), alpha=st.one_of(st.sampled_from([0.0, 1.0, 0.45]),
                                                                     st.floats(0.0, 1.0)),
       boundary=st.booleans(), thickness=st.integers(1, 3), mask_kind=st.sampled_from(["0/255", "0/1", "bool"]),
       fortran=st.booleans())
def test_overlay_equals_the_per_pixel_blend(h, w, seed, color, alpha, boundary, thickness, mask_kind, fortran):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if fortran:  # a non-C-contiguous input
        image = np.asfortranarray(image)
    road = rng.random((h, w)) < rng.random()
    mask = {"0/255": road.astype(np.uint8) * 255, "0/1": road.astype(np.uint8), "bool": road}[mask_kind]
    before = image.copy()
    got = draw_overlay(image, mask, color, alpha, boundary, thickness)
    want = reference_overlay(before.copy(), mask, color, alpha, boundary, thickness)
    assert got.dtype == np.uint8 and got.shape == (h, w, 3)
    assert np.array_equal(got, want)
    assert np.array_equal(image, before) and not np.shares_memory(got, image)


def test_overlay_on_a_camera_frame_and_its_checks():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    mask = np.zeros((360, 480), np.uint8)
    mask[200:, 100:400] = 255
    assert np.array_equal(draw_overlay(image, mask, (255, 0, 0), 0.3), reference_overlay(image, mask, (255, 0, 0), 0.3))
    assert np.array_equal(draw_overlay(image, np.zeros_like(mask)), image)
    with pytest.raises(ValueError, match="differ in size"):
        draw_overlay(image, mask[:10])
    with pytest.raises(ValueError, match="alpha"):
        draw_overlay(image, mask, alpha=1.5)
