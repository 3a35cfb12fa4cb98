"""The teacher term of the loss: cross-entropy to soft labels where the teacher has one, weight 0 = off."""

from __future__ import annotations

import numpy as np
import pytest

from road_seg_perception.training.losses import RoadLoss, parse_loss, soft_bce


def _np_bce(t, p):
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def test_soft_bce_skips_pixels_without_a_teacher_value():
    soft = np.array([[[[0.9], [0.2], [-1.0], [-0.5]]]], np.float32)
    pred = np.array([[[[0.7], [0.4], [0.01], [0.99]]]], np.float32)
    expected = (_np_bce(0.9, 0.7) + _np_bce(0.2, 0.4)) / 2
    assert float(soft_bce(soft, pred)) == pytest.approx(expected, rel=1e-5)


def test_road_loss_adds_the_weighted_teacher_term_only_with_two_channels():
    rng = np.random.default_rng(0)
    label = (rng.random((2, 4, 4, 1)) > 0.5).astype(np.float32)
    soft = rng.random((2, 4, 4, 1)).astype(np.float32)
    pred = rng.uniform(0.05, 0.95, (2, 4, 4, 1)).astype(np.float32)
    both = np.concatenate([label, soft], axis=-1)
    gt_only = float(RoadLoss()(label, pred))
    assert float(RoadLoss()(both, pred)) == pytest.approx(gt_only, rel=1e-5)  # distill 0: the teacher is ignored
    with_teacher = float(parse_loss("bce+dice", distill=0.5)(both, pred))
    assert with_teacher == pytest.approx(gt_only + 0.5 * float(soft_bce(soft, pred)), rel=1e-5)
    assert float(parse_loss("bce+dice", distill=0.5)(label, pred)) == pytest.approx(gt_only, rel=1e-5)
    assert RoadLoss(distill=0.5).get_config()["distill"] == 0.5
    with pytest.raises(ValueError, match="distill_weight"):
        parse_loss("bce", distill=-1.0)
