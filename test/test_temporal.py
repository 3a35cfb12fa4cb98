"""Temporal stability core: the flicker metric and the probability EMA (values, resets)."""

from __future__ import annotations

import numpy as np
import pytest

from road_seg_perception.core.temporal import FlickerMeter, ProbabilityEMA, flicker


def test_flicker_counts_changed_valid_pixels():
    a = np.zeros((4, 5), np.uint8)
    b = a.copy()
    b[0, :3] = 255  # 3 of 20 pixels change
    assert flicker(a, b) == pytest.approx(3 / 20)
    valid = np.ones((4, 5), bool)
    valid[0, 0] = False  # one changed pixel is void: 2 of 19
    assert flicker(a, b, valid) == pytest.approx(2 / 19)
    assert flicker(a, a) == 0.0 and flicker(a, b, np.zeros((4, 5), bool)) == 0.0
    assert flicker(a > 0, b > 0) == pytest.approx(3 / 20)  # bool masks too
    with pytest.raises(ValueError, match="size"):
        flicker(a, np.zeros((5, 4), np.uint8))


def test_flicker_meter_pairs_consecutive_frames_of_one_stream():
    m = FlickerMeter(max_gap_s=0.2)
    a, b = np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8)
    assert m.update(a, 0.0) is None  # first frame
    assert m.update(b, 0.1) == 1.0
    assert m.update(b, 0.2) == 0.0
    assert m.update(a, 0.9) is None  # a gap
    assert m.update(np.zeros((3, 3), np.uint8), 1.0) is None  # new size
    assert m.update(np.zeros((3, 3), np.uint8), 0.95) is None  # time went back


def test_ema_values_and_resets():
    ema = ProbabilityEMA(alpha=0.25, max_gap_s=0.5)
    p0, p1, p2 = (np.full((2, 3), v, np.float32) for v in (0.8, 0.0, 1.0))
    np.testing.assert_allclose(ema.update(p0, 0.0, "k"), 0.8)
    np.testing.assert_allclose(ema.update(p1, 0.1, "k"), 0.6)  # 0.25 * 0 + 0.75 * 0.8
    out = ema.update(p2, 0.2, "k")
    np.testing.assert_allclose(out, 0.25 + 0.75 * 0.6)
    out[:] = 7  # the caller's copy: the state is untouched
    np.testing.assert_allclose(ema.update(p2, 0.3, "k"), 0.25 + 0.75 * 0.7)
    assert ema.resets == 0
    np.testing.assert_allclose(ema.update(p1, 1.0, "k"), 0.0)  # gap of 0.7 s > 0.5 s
    np.testing.assert_allclose(ema.update(p0, 0.9, "k"), 0.8)  # time went back
    np.testing.assert_allclose(ema.update(p1, 1.0, "other size"), 0.0)  # key changed
    np.testing.assert_allclose(ema.update(np.ones((4, 4), np.float32), 1.1, "other size"), 1.0)  # shape changed
    assert ema.resets == 4
    ema.reset()
    np.testing.assert_allclose(ema.update(p0, 1.2, "other size"), 0.8)
    one = ProbabilityEMA(alpha=1.0)
    one.update(p0, 0.0)
    np.testing.assert_allclose(one.update(p1, 0.1), 0.0)  # alpha 1: no smoothing


@pytest.mark.parametrize("alpha, gap, match", [(0.0, 1.0, "alpha"), (1.5, 1.0, "alpha"), (0.5, 0.0, "gap")])
def test_ema_refuses_bad_settings(alpha, gap, match):
    with pytest.raises(ValueError, match=match):
        ProbabilityEMA(alpha, gap)
