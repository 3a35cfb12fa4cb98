"""AdamW with a smaller learning rate for the pretrained encoder (discriminative learning rates).

``train.encoder_lr_scale`` < 1 lets a random decoder learn at the full rate while the ImageNet
encoder moves more slowly, which keeps more of its general features. The scale multiplies the
scheduled rate of every encoder variable; weight decay and the schedule are AdamW's own.
"""

from __future__ import annotations

import keras


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


def make_optimizer(model: keras.Model, schedule, weight_decay: float, encoder_lr_scale: float = 1.0):
    """Plain AdamW, or :class:`EncoderScaledAdamW` over the encoder layers' variables when the scale is not 1."""
    if encoder_lr_scale == 1.0:
        return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    from road_seg_perception.training.model import encoder_layers

    paths = [v.path for lyr in encoder_layers(model) for v in lyr.trainable_variables]
    if not paths:
        raise ValueError("train.encoder_lr_scale != 1 but the model has no encoder layers (enc*, bott*)")
    return EncoderScaledAdamW(encoder_paths=paths, encoder_lr_scale=encoder_lr_scale,
                              learning_rate=schedule, weight_decay=weight_decay)
