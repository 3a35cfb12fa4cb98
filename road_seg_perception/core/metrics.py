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


def pr_curve(probs: list[np.ndarray], labels: list[np.ndarray], thresholds: np.ndarray | None = None
             ) -> dict[str, list[float]]:
    """Precision/recall/F over thresholds from probability maps, pooled over all pixels."""
    if thresholds is None:
        thresholds = np.linspace(0.05, 0.95, 19)
    bins = 256
    pos_hist = np.zeros(bins, dtype=np.int64)
    neg_hist = np.zeros(bins, dtype=np.int64)
    for prob, label in zip(probs, labels, strict=True):
        valid = label != VOID
        positive = label == 1
        q = np.clip((prob * (bins - 1)).round().astype(np.int64), 0, bins - 1)
        pos_hist += np.bincount(q[valid & positive], minlength=bins)
        neg_hist += np.bincount(q[valid & ~positive], minlength=bins)
    pos_above = np.cumsum(pos_hist[::-1])[::-1]  # count with q >= i
    neg_above = np.cumsum(neg_hist[::-1])[::-1]
    total_pos = int(pos_hist.sum())
    out: dict[str, list[float]] = {"threshold": [], "precision": [], "recall": [], "f1": []}
    for t in thresholds:
        i = int(np.ceil(t * (bins - 1) - 1e-9))
        i = min(max(i, 0), bins - 1)
        tp = int(pos_above[i])
        fp = int(neg_above[i])
        prec = tp / (tp + fp) if tp + fp else 1.0
        rec = tp / total_pos if total_pos else 1.0
        f = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out["threshold"].append(float(t))
        out["precision"].append(prec)
        out["recall"].append(rec)
        out["f1"].append(f)
    return out


def max_f(curve: dict[str, list[float]]) -> tuple[float, float]:
    """KITTI-road style MaxF: the best F over thresholds, and that threshold."""
    i = int(np.argmax(curve["f1"]))
    return curve["f1"][i], curve["threshold"][i]


def percentile(values: list[float], q: float) -> float:
    """``q``-th percentile of ``values`` (0 for an empty list)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0
