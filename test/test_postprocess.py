"""Post-processing on hand-made masks: thresholding, ``min_blob_area`` and ``fill_holes_area``."""

from __future__ import annotations

import numpy as np
import pytest

from road_seg_perception.core.postprocess import probability_to_mask, remove_small_blobs


def prob_from(mask01: np.ndarray) -> np.ndarray:
    """A probability map that is 0.9 on road and 0.1 elsewhere, at the output size (no resampling)."""
    return np.where(mask01 > 0, 0.9, 0.1).astype(np.float32)


def road(shape=(12, 16)) -> np.ndarray:
    return np.zeros(shape, np.uint8)


def test_threshold_is_inclusive():
    prob = np.array([[0.49, 0.5, 0.51]], np.float32)
    np.testing.assert_array_equal(probability_to_mask(prob, (1, 3), threshold=0.5), [[0, 255, 255]])


def test_min_blob_area_drops_small_blobs_and_keeps_one_of_exactly_that_size():
    m = road()
    m[0:6, 0:8] = 1  # 48 px: the road
    m[9:11, 12:14] = 1  # 4 px blob
    m[8:11, 1:3] = 1  # 6 px blob
    out = probability_to_mask(prob_from(m), m.shape, min_blob_area=6)
    expected = np.where(m > 0, 255, 0).astype(np.uint8)
    expected[9:11, 12:14] = 0  # only the 4-px blob goes
    np.testing.assert_array_equal(out, expected)


def test_min_blob_area_counts_diagonal_neighbours_as_one_blob():
    m = road((6, 6))
    for i in range(4):  # 4 pixels touching only at corners: one 8-connected blob of 4
        m[i, i] = 1
    kept = probability_to_mask(prob_from(m), m.shape, min_blob_area=4)
    np.testing.assert_array_equal(kept, np.where(m > 0, 255, 0))
    gone = probability_to_mask(prob_from(m), m.shape, min_blob_area=5)
    assert not gone.any()


def test_fill_holes_area_fills_small_holes_inside_the_road_only():
    m = road()
    m[1:11, 1:15] = 1  # road with a margin of non-road around it (140 px)
    m[3:5, 3:5] = 0  # 4 px hole
    m[6:9, 8:12] = 0  # 12 px hole
    out = probability_to_mask(prob_from(m), m.shape, fill_holes_area=5)
    expected = np.where(m > 0, 255, 0).astype(np.uint8)
    expected[3:5, 3:5] = 255  # the small hole is filled
    np.testing.assert_array_equal(out, expected)
    # the 12 px hole and the margin (52 px of non-road around the road) stay non-road
    assert not out[6:9, 8:12].any() and not out[0].any()


def test_blobs_are_removed_before_holes_are_filled():
    m = road()
    m[1:11, 1:15] = 1
    m[4:7, 4:7] = 0  # 9 px hole ...
    m[5, 5] = 1  # ... with a 1 px road island inside it
    out = probability_to_mask(prob_from(m), m.shape, min_blob_area=2, fill_holes_area=10)
    assert out[5, 5] == 255 and out[4:7, 4:7].all()  # island dropped -> hole of 9 (< 10) -> filled
    kept = probability_to_mask(prob_from(m), m.shape, min_blob_area=2, fill_holes_area=9)
    assert not kept[4:7, 4:7].any()  # a hole of exactly fill_holes_area pixels stays
    out_no_fill = probability_to_mask(prob_from(m), m.shape, min_blob_area=2)
    assert not out_no_fill[4:7, 4:7].any()


@pytest.mark.parametrize("min_area", [0, 1])
def test_remove_small_blobs_with_nothing_to_remove(min_area):
    m = np.full((3, 3), 255, np.uint8)
    np.testing.assert_array_equal(remove_small_blobs(m, max(min_area, 1)), m)
    assert not remove_small_blobs(np.zeros((3, 3), np.uint8), 1).any()
