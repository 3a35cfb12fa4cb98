"""Binary segmentation metrics on numpy arrays, void pixels excluded from every count.

Aggregate scores are computed from confusion counts summed over all pixels of all frames
(the "road IoU of a split"), not as means of per-frame scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from road_seg_perception.core.preprocessing import VOID


@dataclass
class Confusion:
    """Pixel counts of a binary confusion matrix."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def iou(self) -> float:
        d = self.tp + self.fp + self.fn
        return self.tp / d if d else 1.0

    @property
    def precision(self) -> float:
        d = self.tp + self.fp
        return self.tp / d if d else 1.0

    @property
    def recall(self) -> float:
        d = self.tp + self.fn
        return self.tp / d if d else 1.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    @property
    def accuracy(self) -> float:
        n = self.tp + self.fp + self.fn + self.tn
        return (self.tp + self.tn) / n if n else 1.0

    def scores(self) -> dict[str, float]:
        """IoU, F1, precision, recall and accuracy."""
        return {"iou": self.iou, "f1": self.f1, "precision": self.precision,
                "recall": self.recall, "accuracy": self.accuracy}

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()}


def confusion(pred: np.ndarray, label: np.ndarray) -> Confusion:
    """Count TP/FP/FN/TN of ``pred`` (bool, or uint8 0/255) against ``label`` (0/1, :data:`VOID` ignored)."""
    if pred.shape[:2] != label.shape[:2]:
        raise ValueError(f"prediction {pred.shape[:2]} and label {label.shape[:2]} differ in size")
    p = pred if pred.dtype == bool else pred > 0
    valid = label != VOID
    positive = label == 1
    pv = p & valid
    tp = int(np.count_nonzero(pv & positive))
    fp = int(np.count_nonzero(pv)) - tp
    fn = int(np.count_nonzero(positive)) - tp
    tn = int(np.count_nonzero(valid)) - tp - fp - fn
    return Confusion(tp, fp, fn, tn)


def label_from_gt_image(gt: np.ndarray) -> np.ndarray:
    """Convert a ground-truth image (255 road, 0 not road, 128 void) to a 0/1/:data:`VOID` label."""
    label = (gt > 191).astype(np.uint8)
    label[(gt > 63) & (gt <= 191)] = VOID
    return label


def gt_image_from_label(label: np.ndarray) -> np.ndarray:
    """Inverse of :func:`label_from_gt_image`: 0/1/:data:`VOID` to a 0/255/128 mono8 image."""
    gt = np.where(label == 1, 255, 0).astype(np.uint8)
    gt[label == VOID] = 128
    return gt


class PRAccumulator:
    """Pooled precision/recall over thresholds from probability maps, streamed frame by frame.

    Keeps two 256-bin histograms (road and not-road pixels by quantised probability) instead of
    every probability map, so long bags need no extra memory.
    """

    bins = 256

    def __init__(self) -> None:
        self.pos = np.zeros(self.bins, np.int64)
        self.neg = np.zeros(self.bins, np.int64)

    def add(self, prob: np.ndarray, label: np.ndarray) -> None:
        """Add one frame: ``prob`` in [0, 1] and its 0/1/:data:`VOID` label of the same size."""
        valid = label != VOID
        positive = label == 1
        q = np.clip((prob * (self.bins - 1)).round().astype(np.int64), 0, self.bins - 1)
        self.pos += np.bincount(q[valid & positive], minlength=self.bins)
        self.neg += np.bincount(q[valid & ~positive], minlength=self.bins)

    def curve(self, thresholds: np.ndarray) -> dict[str, list[float]]:
        """Precision, recall and F1 at each threshold (a pixel is road when its bin is at or above it)."""
        pos_above = np.cumsum(self.pos[::-1])[::-1]  # count with q >= i
        neg_above = np.cumsum(self.neg[::-1])[::-1]
        total_pos = int(self.pos.sum())
        out: dict[str, list[float]] = {"threshold": [], "precision": [], "recall": [], "f1": []}
        for t in thresholds:
            i = min(max(int(np.ceil(t * (self.bins - 1) - 1e-9)), 0), self.bins - 1)
            tp, fp = int(pos_above[i]), int(neg_above[i])
            prec = tp / (tp + fp) if tp + fp else 1.0
            rec = tp / total_pos if total_pos else 1.0
            out["threshold"].append(float(t))
            out["precision"].append(prec)
            out["recall"].append(rec)
            out["f1"].append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        return out


def pr_curve(probs: list[np.ndarray], labels: list[np.ndarray], thresholds: np.ndarray | None = None
             ) -> dict[str, list[float]]:
    """Precision/recall/F over thresholds from probability maps, pooled over all pixels."""
    acc = PRAccumulator()
    for prob, label in zip(probs, labels, strict=True):
        acc.add(prob, label)
    return acc.curve(np.linspace(0.05, 0.95, 19) if thresholds is None else thresholds)


class SplitScore:
    """Confusion summed over every pixel of every frame (the split's IoU) and each frame's own IoU."""

    def __init__(self) -> None:
        self.total = Confusion()
        self.frame_ious: list[float] = []

    def add(self, pred: np.ndarray, label: np.ndarray) -> Confusion:
        """Score one frame's mask against its label; return that frame's confusion."""
        c = confusion(pred, label)
        self.total = self.total + c
        self.frame_ious.append(c.iou)
        return c

    @property
    def mean_frame_iou(self) -> float:
        return float(np.mean(self.frame_ious)) if self.frame_ious else float("nan")


def max_f(curve: dict[str, list[float]]) -> tuple[float, float]:
    """KITTI-road style MaxF: the best F over thresholds, and that threshold."""
    i = int(np.argmax(curve["f1"]))
    return curve["f1"][i], curve["threshold"][i]


def percentile(values: list[float], q: float) -> float:
    """``q``-th percentile of ``values`` (0 for an empty list)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0
