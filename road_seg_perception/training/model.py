"""A light U-Net for road segmentation built from Keras 3 layers only (any backend).

Depthwise-separable convolutions keep it fast on a CPU; dilated convolutions at the bottleneck
widen its view. Layer names are fixed (``enc*``, ``bott*``, ``dec*``, ``head``) so saved weights
stay loadable and the encoder can be frozen or transferred by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from road_seg_perception.core.layers import custom_layers

ENCODER_PREFIXES = ("enc", "bott")
#: Moving-statistics momentum: 0.9 so that short CPU trainings get usable inference statistics.
BN_MOMENTUM = 0.9


INPUT_NORMS = ("none", "instance", "exposure")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture settings; ``input_hw`` must be divisible by ``2 ** levels``."""

    input_hw: tuple[int, int] = (192, 256)
    base_filters: int = 16
    levels: int = 4
    separable: bool = True
    dropout: float = 0.1
    stem_stride: int = 1
    input_norm: str = "none"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"model.input_norm must be one of {', '.join(INPUT_NORMS)}, got {self.input_norm!r}")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"model.stem_stride must be 1 or 2, got {self.stem_stride}")
        if not 1 <= self.levels <= 6:  # checked first: input_hw's divisor depends on it
            raise ValueError(f"model.levels must be in 1..6, got {self.levels}")
        div = 2**self.levels * self.stem_stride
        if len(self.input_hw) != 2:
            raise ValueError(f"model.input_hw must be [height, width], got {self.input_hw}")
        h, w = self.input_hw
        if h % div or w % div or h <= 0 or w <= 0:
            raise ValueError(f"model.input_hw {self.input_hw} must be positive and divisible by {div}")
        if self.base_filters < 4:
            raise ValueError(f"model.base_filters must be >= 4, got {self.base_filters}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")


def _conv_bn_relu(x, filters: int, name: str, stride: int = 1, dilation: int = 1, separable: bool = True):
    if separable:
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", dilation_rate=dilation,
                                   use_bias=False, name=f"{name}_dw")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dwbn")(x)
        x = layers.ReLU(name=f"{name}_dwrelu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    else:
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", dilation_rate=dilation,
                          use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_unet(cfg: UNetConfig = UNetConfig()) -> keras.Model:
    """Build the road U-Net: ``(N, H, W, 3)`` float in [0, 1] -> ``(N, H, W, 1)`` road probability."""
    cfg.validate()
    f = cfg.base_filters
    sep = cfg.separable
    inputs = keras.Input(shape=(*cfg.input_hw, 3), name="image")
    # Stem: one plain conv (cheap with 3 input channels), optionally strided, then a separable one.
    x = inputs
    if cfg.input_norm == "instance":  # per-image, per-channel standardisation: global brightness/contrast invariance
        x = layers.LayerNormalization(axis=[1, 2], center=False, scale=False, epsilon=1e-3, name="enc0_input_norm")(x)
    elif cfg.input_norm == "exposure":  # log-domain standardisation: global gain and gamma invariance
        x = custom_layers()["ExposureNorm"](name="enc0_exposure_norm")(x)
    x = layers.Conv2D(f, 3, strides=cfg.stem_stride, padding="same", use_bias=False, name="enc0_stem_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="enc0_stem_bn")(x)
    x = layers.ReLU(name="enc0_stem_relu")(x)
    x = _conv_bn_relu(x, f, "enc0_b", separable=sep)
    skips = [x]
    for lvl in range(1, cfg.levels):
        ch = f * 2**lvl
        x = _conv_bn_relu(x, ch, f"enc{lvl}_a", stride=2, separable=sep)
        x = _conv_bn_relu(x, ch, f"enc{lvl}_b", separable=sep)
        skips.append(x)
    ch = f * 2**cfg.levels
    x = _conv_bn_relu(x, ch, "bott_a", stride=2, separable=sep)
    x = _conv_bn_relu(x, ch, "bott_b", dilation=2, separable=sep)
    x = _conv_bn_relu(x, ch, "bott_c", dilation=4, separable=sep)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="bott_dropout")(x)
    for lvl in range(cfg.levels - 1, -1, -1):
        ch = f * 2**lvl
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{lvl}_up")(x)
        x = layers.Concatenate(name=f"dec{lvl}_concat")([x, skips[lvl]])
        x = _conv_bn_relu(x, ch, f"dec{lvl}_a", separable=sep)
        if lvl >= cfg.levels - 2:
            x = _conv_bn_relu(x, ch, f"dec{lvl}_b", separable=sep)
    if cfg.stem_stride > 1:  # a stride-2 stem works at half resolution; bring it back before the head
        x = layers.UpSampling2D(cfg.stem_stride, interpolation="bilinear", name="head_up")(x)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name="road_unet")


def encoder_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of the encoder (and bottleneck), found by their fixed names."""
    return [lyr for lyr in model.layers if lyr.name.startswith(ENCODER_PREFIXES)]


def count_flops(model: keras.Model) -> int:
    """Multiply-accumulate count of one forward pass at batch 1 (convolutions only)."""
    macs = 0
    for lyr in model.layers:
        if not isinstance(lyr, (layers.Conv2D, layers.DepthwiseConv2D)):
            continue
        out_shape = lyr.output.shape
        h, w, c_out = out_shape[1], out_shape[2], out_shape[3]
        k = lyr.kernel_size[0] * lyr.kernel_size[1]
        c_in = lyr.input.shape[-1]
        if isinstance(lyr, layers.DepthwiseConv2D):
            macs += h * w * c_in * k
        else:
            macs += h * w * c_out * c_in * k
    return int(macs)
