"""Metrics and losses against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from road_seg_perception.core.metrics import (
    Confusion,
    confusion,
    gt_image_from_label,
    label_from_gt_image,
    max_f,
    pr_curve,
)
from road_seg_perception.core.preprocessing import VOID

# pred/label pairs, pixel by pixel:  TP, FN, FP / TN, (void), FN
PRED = np.array([[255, 0, 255], [0, 255, 0]], np.uint8)
LABEL = np.array([[1, 1, 0], [0, VOID, 1]], np.uint8)


def test_confusion_counts_by_hand():
    c = confusion(PRED, LABEL)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 2, 1)
    assert c == confusion(PRED > 0, LABEL)  # bool masks count the same
    assert c.to_dict() == {"tp": 1, "fp": 1, "fn": 2, "tn": 1}


def test_scores_by_hand():
    c = Confusion(tp=1, fp=1, fn=2, tn=1)
    assert c.iou == pytest.approx(1 / 4)
    assert c.precision == pytest.approx(1 / 2)
    assert c.recall == pytest.approx(1 / 3)
    assert c.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))  # 0.4
    assert c.f1 == pytest.approx(0.4)
    assert c.accuracy == pytest.approx(2 / 5)
    assert c.scores() == pytest.approx({"iou": 0.25, "f1": 0.4, "precision": 0.5, "recall": 1 / 3,
                                        "accuracy": 0.4})


def test_void_pixels_never_count():
    label = np.full((4, 5), VOID, np.uint8)
    label[0, 0] = 1
    for pred_value in (0, 255):
        c = confusion(np.full((4, 5), pred_value, np.uint8), label)
        assert c.tp + c.fp + c.fn + c.tn == 1
    all_void = confusion(np.full((2, 2), 255, np.uint8), np.full((2, 2), VOID, np.uint8))
    assert all_void == Confusion(0, 0, 0, 0)


def test_sums_pool_pixels_not_frames():
    a = Confusion(tp=90, fp=10, fn=0, tn=0)   # IoU 0.9
    b = Confusion(tp=0, fp=0, fn=10, tn=890)  # IoU 0.0
    s = a + b
    assert s == Confusion(90, 10, 10, 890)
    assert s.iou == pytest.approx(90 / 110)  # not the frame mean 0.45


def test_size_mismatch_raises():
    with pytest.raises(ValueError, match="differ in size"):
        confusion(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))


def test_gt_image_round_trip():
    gt = np.array([[0, 255, 128], [40, 200, 100]], np.uint8)
    label = label_from_gt_image(gt)
    np.testing.assert_array_equal(label, np.array([[0, 1, VOID], [0, 1, VOID]], np.uint8))
    np.testing.assert_array_equal(gt_image_from_label(label), np.array([[0, 255, 128], [0, 255, 128]], np.uint8))


def test_pr_curve_by_hand():
    probs = [np.array([[0.9, 0.6, 0.3, 0.1, 0.99]], np.float32)]
    labels = [np.array([[1, 0, 1, 0, VOID]], np.uint8)]  # the confident void pixel is ignored
    curve = pr_curve(probs, labels, np.array([0.2, 0.5, 0.8]))
    assert curve["threshold"] == pytest.approx([0.2, 0.5, 0.8])
    # t=0.2: 0.9, 0.6, 0.3 positive -> TP 2 FP 1; t=0.5: 0.9, 0.6 -> TP 1 FP 1; t=0.8: 0.9 -> TP 1
    assert curve["precision"] == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert curve["recall"] == pytest.approx([1.0, 1 / 2, 1 / 2])
    assert curve["f1"] == pytest.approx([0.8, 0.5, 2 / 3])
    assert max_f(curve) == pytest.approx((0.8, 0.2))


def test_pr_curve_pools_frames_and_matches_confusion():
    rng = np.random.default_rng(0)
    # probabilities on the 1/255 grid, thresholds off it: pr_curve's histogram is then exact
    probs = [(rng.integers(0, 256, (6, 7)) / 255.0).astype(np.float32) for _ in range(3)]
    labels = [rng.choice([0, 1, VOID], size=(6, 7)).astype(np.uint8) for _ in range(3)]
    thresholds = np.array([0.101, 0.333, 0.5, 0.777])
    curve = pr_curve(probs, labels, thresholds)
    for i, t in enumerate(thresholds):
        c = sum((confusion(p >= t, lab) for p, lab in zip(probs, labels, strict=True)), Confusion())
        assert curve["precision"][i] == pytest.approx(c.precision)
        assert curve["recall"][i] == pytest.approx(c.recall)
        assert curve["f1"][i] == pytest.approx(c.f1)


# --------------------------------------------------------------------------- losses


Y_TRUE = np.array([1, 0, VOID, 1, 0], np.float32).reshape(1, 1, 5, 1)
Y_PRED = np.array([0.8, 0.3, 0.5, 0.6, 0.1], np.float32).reshape(1, 1, 5, 1)
VALID = np.array([0, 1, 3, 4])  # indices of non-void pixels


def _np_bce() -> float:
    t, p = Y_TRUE.ravel()[VALID], Y_PRED.ravel()[VALID]
    return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))


def _np_dice() -> float:
    t, p = Y_TRUE.ravel()[VALID], Y_PRED.ravel()[VALID]
    return float(1 - (2 * np.sum(t * p) + 1) / (np.sum(t) + np.sum(p) + 1))


def _np_focal(gamma: float = 2.0) -> float:
    t, p = Y_TRUE.ravel()[VALID], Y_PRED.ravel()[VALID]
    pt = np.where(t == 1, p, 1 - p)
    return float(np.mean(-((1 - pt) ** gamma) * np.log(pt)))


def test_loss_hand_values():
    # by hand: BCE = -(ln .8 + ln .7 + ln .6 + ln .9) / 4; Dice: inter 1.4, sum t 2, sum p 1.8
    assert _np_bce() == pytest.approx(-(math.log(0.8) + math.log(0.7) + math.log(0.6) + math.log(0.9)) / 4)
    assert _np_dice() == pytest.approx(1 - (2 * 1.4 + 1) / (2 + 1.8 + 1))


def test_masked_losses_match_numpy_and_ignore_void():
    from road_seg_perception.training.losses import masked_bce, masked_dice, masked_focal

    assert float(masked_bce(Y_TRUE, Y_PRED)) == pytest.approx(_np_bce(), rel=1e-5)
    assert float(masked_dice(Y_TRUE, Y_PRED)) == pytest.approx(_np_dice(), rel=1e-5)
    assert float(masked_focal(Y_TRUE, Y_PRED)) == pytest.approx(_np_focal(), rel=1e-5)
    other = Y_PRED.copy()
    other.ravel()[2] = 0.999  # the void pixel's prediction changes nothing
    for fn in (masked_bce, masked_dice, masked_focal):
        assert float(fn(Y_TRUE, other)) == pytest.approx(float(fn(Y_TRUE, Y_PRED)), rel=1e-6)


def test_all_void_batch_gives_zero_bce():
    from road_seg_perception.training.losses import masked_bce

    assert float(masked_bce(np.full((1, 2, 2, 1), VOID, np.float32), np.full((1, 2, 2, 1), 0.3, np.float32))) == 0.0


def test_road_loss_weights_and_parse():
    from road_seg_perception.training.losses import RoadLoss, parse_loss

    loss = parse_loss("bce:1,dice:0.5")
    assert (loss.bce, loss.dice, loss.focal) == (1.0, 0.5, 0.0)
    assert float(loss(Y_TRUE, Y_PRED)) == pytest.approx(_np_bce() + 0.5 * _np_dice(), rel=1e-5)
    both = parse_loss("bce+dice")
    assert (both.bce, both.dice, both.focal) == (1.0, 1.0, 0.0)
    assert float(RoadLoss(bce=0, dice=0, focal=2)(Y_TRUE, Y_PRED)) == pytest.approx(2 * _np_focal(), rel=1e-5)
    assert RoadLoss.from_config(loss.get_config()).dice == 0.5
    with pytest.raises(ValueError, match="train.loss: unknown term 'iou'"):
        parse_loss("bce+iou")
    with pytest.raises(ValueError, match="train.loss"):
        parse_loss(" , ")
