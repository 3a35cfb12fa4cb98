"""AdamW with a smaller learning rate for the pretrained encoder (discriminative learning rates).

``train.encoder_lr_scale`` < 1 lets a random decoder learn at the full rate while the ImageNet
encoder moves more slowly, which keeps more of its general features. The scale multiplies the
scheduled rate of every encoder variable; weight decay and the schedule are AdamW's own.

``train.ema_momentum`` > 0 keeps an exponential moving average of the trainable weights in the
optimizer (Keras's ``use_ema``); :func:`averaged_weights` puts it in the model for scoring and saving.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="road_seg_perception")
class EncoderScaledAdamW(keras.optimizers.AdamW):
    """AdamW whose step for the variables named in ``encoder_paths`` uses ``encoder_lr_scale`` x the rate."""

    def __init__(self, encoder_paths: list[str] | tuple[str, ...] = (), encoder_lr_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not encoder_lr_scale > 0:
            raise ValueError(f"train.encoder_lr_scale must be > 0, got {encoder_lr_scale}")
        self.encoder_paths = [str(p) for p in encoder_paths]
        self.encoder_lr_scale = float(encoder_lr_scale)
        self._scaled: frozenset[int] = frozenset()

    def build(self, var_list):
        super().build(var_list)
        wanted = set(self.encoder_paths)
        self._scaled = frozenset(self._get_variable_index(v) for v in var_list if v.path in wanted)

    @property
    def scaled_count(self) -> int:
        """How many of the built variables take the encoder rate."""
        return len(self._scaled)

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._scaled:
            learning_rate = learning_rate * self.encoder_lr_scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(encoder_paths=list(self.encoder_paths), encoder_lr_scale=self.encoder_lr_scale)
        return cfg


def make_optimizer(model: keras.Model, schedule, weight_decay: float, encoder_lr_scale: float = 1.0,
                   ema_momentum: float = 0.0):
    """Plain AdamW, or :class:`EncoderScaledAdamW` over the encoder layers' variables when the scale is not 1;
    with ``ema_momentum`` > 0 either keeps a moving average of the weights."""
    if not 0.0 <= ema_momentum < 1.0:
        raise ValueError(f"train.ema_momentum must be >= 0 and < 1, got {ema_momentum}")
    ema = {"use_ema": True, "ema_momentum": ema_momentum} if ema_momentum > 0 else {}
    if encoder_lr_scale == 1.0:
        return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay, **ema)
    from road_seg_perception.training.model import encoder_layers

    paths = [v.path for lyr in encoder_layers(model) for v in lyr.trainable_variables]
    if not paths:
        raise ValueError("train.encoder_lr_scale != 1 but the model has no encoder layers (enc*, bott*)")
    return EncoderScaledAdamW(encoder_paths=paths, encoder_lr_scale=encoder_lr_scale,
                              learning_rate=schedule, weight_decay=weight_decay, **ema)


def moving_average(optimizer: keras.optimizers.Optimizer, var) -> keras.Variable | None:
    """The moving average an optimizer with ``use_ema`` keeps of ``var`` (``None`` where it keeps none)."""
    return optimizer._model_variables_moving_average[optimizer._get_variable_index(var)]


def _swap_averages(model: keras.Model) -> None:
    """Exchange each trainable variable with its average in the optimizer (as `keras.callbacks.SwapEMAWeights`)."""
    for var in model.trainable_variables:
        avg = moving_average(model.optimizer, var)
        if avg is None:
            continue
        raw = np.array(var)
        var.assign(np.array(avg))
        avg.assign(raw)


@contextlib.contextmanager
def averaged_weights(model: keras.Model) -> Iterator[bool]:
    """Within the block the model holds its weights' moving averages (the optimizer the raw weights);
    after it, the raw weights again. Yields whether there were averages (an optimizer with ``use_ema``
    that has taken a step); otherwise the model is left as it is."""
    opt = getattr(model, "optimizer", None)
    active = bool(opt is not None and getattr(opt, "use_ema", False) and opt.built
                  and int(np.array(opt.iterations)) > 0)
    if active:
        _swap_averages(model)
    try:
        yield active
    finally:
        if active:
            _swap_averages(model)
