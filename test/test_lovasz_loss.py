"""The Lovász hinge term: 1 - IoU at binary hinge errors, void ignored, against a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.training.losses import RoadLoss, masked_lovasz, parse_loss

_SURE = float(1.0 / (1.0 + np.exp(-1.0)))  # the probability whose logit is 1: hinge error 0 when right


def _np_lovasz(t: np.ndarray, p: np.ndarray) -> float:
    t, p = t.ravel().astype(np.float64), p.ravel().astype(np.float64)
    keep = t < 1.5
    t, p = t[keep], p[keep]
    errors = 1.0 - np.log(p / (1.0 - p)) * (2.0 * t - 1.0)
    order = np.argsort(-errors, kind="stable")
    gt = t[order]
    inter = gt.sum() - np.cumsum(gt)
    union = gt.sum() + np.cumsum(1.0 - gt)
    jac = 1.0 - inter / union
    grad = np.concatenate([jac[:1], np.diff(jac)])
    return float(np.maximum(errors[order], 0.0) @ grad)


def test_unsure_pixels_give_one_minus_iou():
    # 4 road pixels, 4 not; two road pixels unsure (p 0.5: missed) and one non-road unsure (false positive).
    t = np.array([1, 1, 1, 1, 0, 0, 0, 0], np.float32).reshape(1, 2, 4, 1)
    p = np.array([0.5, 0.5, _SURE, _SURE, 0.5, 1 - _SURE, 1 - _SURE, 1 - _SURE], np.float32).reshape(1, 2, 4, 1)
    iou = 2 / (2 + 1 + 2)  # TP 2, FP 1, FN 2
    assert float(masked_lovasz(t, p)) == pytest.approx(1.0 - iou, abs=1e-5)
    right = np.where(t > 0.5, _SURE, 1 - _SURE).astype(np.float32)
    assert float(masked_lovasz(t, right)) == pytest.approx(0.0, abs=1e-5)


def test_matches_numpy_and_ignores_void():
    rng = np.random.default_rng(3)
    t = (rng.random((2, 5, 6, 1)) > 0.4).astype(np.float32)
    p = rng.uniform(0.02, 0.98, t.shape).astype(np.float32)
    value = float(masked_lovasz(t, p))
    assert value == pytest.approx(_np_lovasz(t, p), rel=1e-4)
    voided = t.copy()
    voided[:, :2] = VOID  # a third of the pixels void, whatever is predicted there
    wild = p.copy()
    wild[:, :2] = rng.uniform(0.02, 0.98, wild[:, :2].shape)
    assert float(masked_lovasz(voided, wild)) == pytest.approx(_np_lovasz(voided, p), rel=1e-4)


def test_road_loss_adds_the_lovasz_term():
    rng = np.random.default_rng(4)
    t = (rng.random((2, 4, 4, 1)) > 0.5).astype(np.float32)
    p = rng.uniform(0.05, 0.95, t.shape).astype(np.float32)
    bce_only = float(parse_loss("bce")(t, p))
    assert float(parse_loss("bce+lovasz")(t, p)) == pytest.approx(bce_only + _np_lovasz(t, p), rel=1e-4)
    assert float(parse_loss("bce,lovasz:0.5")(t, p)) == pytest.approx(bce_only + 0.5 * _np_lovasz(t, p), rel=1e-4)
    assert RoadLoss(lovasz=0.5).get_config()["lovasz"] == 0.5
    assert RoadLoss().lovasz == 0.0  # models saved before the term existed load with it off
    with pytest.raises(ValueError, match="lovasz"):
        parse_loss("bce+lovász")
