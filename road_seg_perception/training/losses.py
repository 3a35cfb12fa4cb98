"""Losses written with ``keras.ops`` so they run on every Keras backend.

Targets are ``(N, H, W, 1)`` floats: 1 road, 0 not road, and any value above 1.5 is void
(the readers' 255), which contributes nothing to the loss. With distillation the targets are
``(N, H, W, 2)``: the second channel is a teacher's road probability, negative where there is none.
With an auxiliary head (``aux`` weight > 0) the targets are ``(N, H, W, 3)``, the third channel an
auxiliary class id (void: any id the head does not have), and the predictions ``(N, H, W, 1 + K)``:
the road probability, then the head's ``K`` class probabilities.
"""

from __future__ import annotations

import keras
from keras import ops


def _split(y_true, y_pred):
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.clip(ops.cast(y_pred, "float32"), 1e-6, 1.0 - 1e-6)
    valid = ops.cast(y_true < 1.5, "float32")
    target = y_true * valid
    return target, y_pred, valid


def masked_bce(y_true, y_pred):
    """Binary cross-entropy averaged over non-void pixels."""
    t, p, v = _split(y_true, y_pred)
    bce = -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
    return ops.sum(bce * v) / ops.maximum(ops.sum(v), 1.0)


def masked_dice(y_true, y_pred):
    """Soft Dice loss (1 - Dice) over non-void pixels of the whole batch."""
    t, p, v = _split(y_true, y_pred)
    p = p * v
    inter = ops.sum(t * p)
    return 1.0 - (2.0 * inter + 1.0) / (ops.sum(t) + ops.sum(p) + 1.0)


def masked_focal(y_true, y_pred, gamma: float = 2.0):
    """Focal loss over non-void pixels."""
    t, p, v = _split(y_true, y_pred)
    pt = t * p + (1.0 - t) * (1.0 - p)
    fl = -ops.power(1.0 - pt, gamma) * ops.log(pt)
    return ops.sum(fl * v) / ops.maximum(ops.sum(v), 1.0)


def _lovasz_grad(gt_sorted):
    """Gradient of the Lovász extension of the Jaccard loss for labels sorted by decreasing error."""
    gts = ops.sum(gt_sorted)
    intersection = gts - ops.cumsum(gt_sorted)
    union = gts + ops.cumsum(1.0 - gt_sorted)
    jaccard = 1.0 - intersection / union
    return ops.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)


def masked_lovasz(y_true, y_pred):
    """Lovász hinge (Berman et al., CVPR 2018): a convex surrogate of 1 - IoU, over the batch's non-void pixels.

    The whole batch is one set of pixels, as the model card's IoU pools every pixel of a split. The hinge
    works on the logit of ``y_pred``; void pixels sort last with a negative error and add nothing.
    """
    t, p, v = _split(y_true, y_pred)
    t, v = ops.reshape(t, (-1,)), ops.reshape(v, (-1,))
    logits = ops.reshape(ops.log(p) - ops.log(1.0 - p), (-1,))
    errors = (1.0 - logits * (2.0 * t - 1.0)) * v - (1.0 - v) * 1e3
    order = ops.argsort(-ops.stop_gradient(errors))
    grad = ops.stop_gradient(_lovasz_grad(ops.take(t, order)))
    return ops.sum(ops.relu(ops.take(errors, order)) * grad)


def soft_bce(soft, y_pred):
    """Cross-entropy to a teacher's road probability, averaged over pixels that have one (``soft >= 0``)."""
    soft = ops.cast(soft, "float32")
    p = ops.clip(ops.cast(y_pred, "float32"), 1e-6, 1.0 - 1e-6)
    valid = ops.cast(soft >= 0.0, "float32")
    t = ops.clip(soft, 0.0, 1.0)
    ce = -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
    return ops.sum(ce * valid) / ops.maximum(ops.sum(valid), 1.0)


def masked_class_ce(classes, probs):
    """Cross-entropy of class probabilities ``(N, H, W, K)`` to class ids ``(N, H, W)``, averaged over pixels
    whose id is a class of the head (``0 <= id < K``)."""
    k = probs.shape[-1]
    classes = ops.cast(classes, "float32")
    valid = ops.cast((classes >= 0.0) & (classes < k), "float32")
    onehot = ops.one_hot(ops.cast(ops.clip(classes, 0.0, k - 1.0), "int32"), k)
    p = ops.clip(ops.cast(probs, "float32"), 1e-6, 1.0)
    ce = -ops.sum(onehot * ops.log(p), axis=-1)
    return ops.sum(ce * valid) / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable(package="road_seg")
class RoadLoss(keras.losses.Loss):
    """Weighted sum of masked BCE, Dice, focal and Lovász terms, plus ``distill`` times the teacher term
    and ``aux`` times the auxiliary head's class cross-entropy.

    A registered, safe-mode loadable loss. The teacher term is used only when the targets carry
    a second (teacher) channel; with ``aux`` > 0 the last target channel holds class ids.
    """

    def __init__(self, bce: float = 1.0, dice: float = 1.0, focal: float = 0.0, distill: float = 0.0,
                 lovasz: float = 0.0, aux: float = 0.0, name: str = "road_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bce, self.dice, self.focal, self.distill = float(bce), float(dice), float(focal), float(distill)
        self.lovasz, self.aux = float(lovasz), float(aux)

    def call(self, y_true, y_pred):
        loss = 0.0
        if self.aux:
            loss = loss + self.aux * masked_class_ce(y_true[..., -1], y_pred[..., 1:])
            y_true, y_pred = y_true[..., :-1], y_pred[..., 0:1]
        if y_true.shape[-1] == 2:
            if self.distill:
                loss = loss + self.distill * soft_bce(y_true[..., 1:2], y_pred)
            y_true = y_true[..., 0:1]
        if self.bce:
            loss = loss + self.bce * masked_bce(y_true, y_pred)
        if self.dice:
            loss = loss + self.dice * masked_dice(y_true, y_pred)
        if self.focal:
            loss = loss + self.focal * masked_focal(y_true, y_pred)
        if self.lovasz:
            loss = loss + self.lovasz * masked_lovasz(y_true, y_pred)
        return loss

    def get_config(self):
        return {**super().get_config(), "bce": self.bce, "dice": self.dice, "focal": self.focal,
                "distill": self.distill, "lovasz": self.lovasz, "aux": self.aux}


def parse_loss(spec: str, distill: float = 0.0, aux: float = 0.0) -> RoadLoss:
    """Parse ``"bce+dice"`` or ``"bce:1,dice:0.5,lovasz:1"`` into a :class:`RoadLoss` (``distill``: teacher
    weight, ``aux``: auxiliary head weight)."""
    weights = {"bce": 0.0, "dice": 0.0, "focal": 0.0, "lovasz": 0.0}
    for part in spec.replace("+", ",").split(","):
        part = part.strip()
        if not part:
            continue
        name, _, w = part.partition(":")
        if name not in weights:
            raise ValueError(f"train.loss: unknown term {name!r} in {spec!r} (use bce, dice, focal, lovasz)")
        weights[name] = float(w) if w else 1.0
    if not any(weights.values()):
        raise ValueError(f"train.loss: {spec!r} has no terms")
    if distill < 0:
        raise ValueError(f"train.distill_weight must be >= 0, got {distill}")
    if aux < 0:
        raise ValueError(f"train.aux_weight must be >= 0, got {aux}")
    return RoadLoss(**weights, distill=distill, aux=aux)
