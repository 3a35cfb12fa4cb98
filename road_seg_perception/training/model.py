"""A light U-Net for road segmentation built from Keras 3 layers only (any backend).

Depthwise-separable convolutions keep it fast on a CPU; dilated convolutions at the bottleneck
widen its view. Layer names are fixed (``enc*``, ``bott*``, ``dec*``, ``head``) so saved weights
stay loadable and the encoder can be frozen or transferred by name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import keras
from keras import layers

from road_seg_perception.core.layers import custom_layers
from road_seg_perception.training.config import INPUT_NORMS, UNetConfig  # noqa: F401  (re-exported)
from road_seg_perception.training.efficientnet_lite import LITE0_TAPS, efficientnet_lite0, load_lite0_state

ENCODER_PREFIXES = ("enc", "bott")
#: Moving-statistics momentum: 0.9 so that short CPU trainings get usable inference statistics.
BN_MOMENTUM = 0.9


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


#: MobileNetV2 feature maps used as skips (strides 2, 4, 8, 16) and the deepest one (stride 32).
MOBILENET_V2_TAPS = ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
                     "block_13_expand_relu", "block_16_project_BN")
#: MobileNetV3-Small taps at the same strides: the activation that follows each of these named layers
#: (Keras names those activations by a global counter, so they are found by position).
MOBILENET_V3_SMALL_TAPS_AFTER = ("conv_bn", "expanded_conv_1_expand_bn", "expanded_conv_3_expand_bn",
                                 "expanded_conv_8_expand_bn", "conv_1_bn")
#: Momentum for the pretrained encoder's BatchNorm: its statistics adapt within a short run.
ENCODER_BN_MOMENTUM = 0.99


def _load_encoder_weights(base: keras.Model, weights: str, encoder: str) -> None:
    try:
        with warnings.catch_warnings():  # Keras warns about every weightless sub-container (activations)
            warnings.filterwarnings("ignore", message="Skipping nested container")
            base.load_weights(weights)
    except (ValueError, KeyError, OSError) as e:
        raise ValueError(f"model.encoder_weights {weights} does not fit encoder {encoder}: {e}") from e


def _pretrained_encoder(base: keras.Model, weights: str, encoder: str, taps: list,
                        load: Callable[[keras.Model, str], object] | None = None) -> keras.Model:
    """``base`` truncated to ``taps``, its weights read from ``weights`` (by ``load``; default a Keras file)."""
    if weights:
        if load is None:
            _load_encoder_weights(base, weights, encoder)
        else:
            load(base, weights)
    for lyr in base.layers:
        if isinstance(lyr, layers.BatchNormalization):
            lyr.momentum = ENCODER_BN_MOMENTUM
    return keras.Model(base.input, taps, name=f"enc_{encoder}")


def mobilenet_v2_encoder(input_hw: tuple[int, int], weights: str = "") -> keras.Model:
    """ImageNet MobileNetV2 (``[-1, 1]`` input) truncated to its feature taps, named ``enc_mobilenet_v2``.

    ``weights`` is a local ``.weights.h5`` file of ``keras.applications.MobileNetV2(include_top=False)``;
    ``""`` leaves the weights random (tests).
    """
    base = keras.applications.MobileNetV2(input_shape=(*input_hw, 3), include_top=False, weights=None)
    taps = [base.get_layer(n).output for n in MOBILENET_V2_TAPS]
    return _pretrained_encoder(base, weights, "mobilenet_v2", taps)


def mobilenet_v3_small_encoder(input_hw: tuple[int, int], weights: str = "") -> keras.Model:
    """ImageNet MobileNetV3-Small (``[-1, 1]`` input, no built-in rescaling) truncated to its taps.

    Named ``enc_mobilenet_v3_small``; ``weights`` is a local ``.weights.h5`` file of
    ``keras.applications.MobileNetV3Small(include_top=False)``, ``""`` leaves them random.
    """
    base = keras.applications.MobileNetV3Small(input_shape=(*input_hw, 3), include_top=False, weights=None,
                                               include_preprocessing=False)
    names = [lyr.name for lyr in base.layers]
    taps = [base.layers[names.index(n) + 1].output for n in MOBILENET_V3_SMALL_TAPS_AFTER]
    return _pretrained_encoder(base, weights, "mobilenet_v3_small", taps)


def efficientnet_lite0_encoder(input_hw: tuple[int, int], weights: str = "") -> keras.Model:
    """ImageNet EfficientNet-Lite0 (``(RGB - 127) / 128`` input) truncated to its taps.

    Named ``enc_efficientnet_lite0``; ``weights`` is a local ``.npz`` of its PyTorch state
    (``road_seg_perception.training.efficientnet_lite``), ``""`` leaves them random.
    """
    base = efficientnet_lite0((*input_hw, 3))
    taps = [base.get_layer(n).output for n in LITE0_TAPS]
    return _pretrained_encoder(base, weights, "efficientnet_lite0", taps, load=load_lite0_state)


PRETRAINED_ENCODERS = {"mobilenet_v2": mobilenet_v2_encoder, "mobilenet_v3_small": mobilenet_v3_small_encoder,
                       "efficientnet_lite0": efficientnet_lite0_encoder}
#: ``[0, 1]`` image -> the range each encoder was trained on, as (scale, offset): MobileNets ``[-1, 1]``,
#: EfficientNet-Lite ``(255 x - 127) / 128``.
ENCODER_INPUT_SCALE = {"mobilenet_v2": (2.0, -1.0), "mobilenet_v3_small": (2.0, -1.0),
                       "efficientnet_lite0": (255.0 / 128.0, -127.0 / 128.0)}


def _sep_block(x, filters: int, name: str):
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_sep")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _project(x, filters: int, name: str):
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_proj")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_projbn")(x)
    return layers.ReLU(name=f"{name}_projrelu")(x)


def _context_gate(x, s32, filters: int):
    """LR-ASPP's gate (Howard et al., "Searching for MobileNetV3", 2019): ``x`` times a per-channel
    weight from the globally pooled encoder features, so each pixel sees the whole frame's context.
    The weight is ``2 sigmoid(z)`` with ``z`` from a zero-initialised 1x1 convolution: 1 at the start,
    so a model initialised from one without the gate starts with the same output."""
    g = layers.GlobalAveragePooling2D(keepdims=True, name="dec5_pool")(s32)
    g = layers.Conv2D(filters, 1, kernel_initializer="zeros", name="dec5_gate")(g)
    g = layers.Activation("sigmoid", name="dec5_gate_sigmoid")(g)
    g = layers.Rescaling(2.0, name="dec5_gate_scale")(g)
    return layers.Multiply(name="dec5_context")([x, g])


def _full_res_correction(logits, feats, image, filters: int):
    """``logits`` (upsampled to the input's size) plus a correction computed at that size from a 3x3
    convolution of the (encoder-scaled) ``image`` and the decoder's last ``feats``, upsampled: the
    half-resolution head's edges refined against the image's own. The correction's last 1x1 convolution
    starts at zero, so a model initialised from one without it starts with the same output."""
    own = _conv_bn_relu(image, filters // 2, "full_image", separable=False)
    ctx = layers.UpSampling2D(2, interpolation="bilinear", name="full_ctx_up")(_project(feats, filters // 2, "full"))
    x = layers.Concatenate(name="full_concat")([logits, ctx, own])
    x = _sep_block(x, filters, "full")
    x = layers.Conv2D(1, 1, kernel_initializer="zeros", name="full_logits")(x)
    return layers.Add(name="full_add")([logits, x])


def build_mobilenet_unet(cfg: UNetConfig) -> keras.Model:
    """Pretrained encoder + light separable decoder: ``(N, H, W, 3)`` in [0, 1] -> road probability.

    ``cfg.encoder`` picks MobileNetV2, MobileNetV3-Small or EfficientNet-Lite0. The input scaling the
    encoder was trained with is the model's first layer, so callers feed the same input as to every
    other road model.
    """
    f = cfg.decoder_filters
    inputs = keras.Input(shape=(*cfg.input_hw, 3), name="image")
    scale, offset = ENCODER_INPUT_SCALE[cfg.encoder]
    image = layers.Rescaling(scale, offset=offset, name="enc_input_scale")(inputs)
    s2, s4, s8, s16, s32 = PRETRAINED_ENCODERS[cfg.encoder](cfg.input_hw, cfg.encoder_weights)(image)
    x = _project(s32, f * 4, "dec5")
    if cfg.global_context:
        x = _context_gate(x, s32, f * 4)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="dec5_dropout")(x)
    for lvl, skip, ch, skip_ch in ((4, s16, f * 3, f * 2), (3, s8, f * 2, f), (2, s4, f * 3 // 2, f // 2),
                                   (1, s2, f, f // 2)):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{lvl}_up")(x)
        x = layers.Concatenate(name=f"dec{lvl}_concat")([x, _project(skip, skip_ch, f"dec{lvl}_skip")])
        x = _sep_block(x, ch, f"dec{lvl}")
    feats = x
    x = layers.Conv2D(1, 1, name="head_logits")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear", name="head_up")(x)
    if cfg.full_res_head:
        x = _full_res_correction(x, feats, image, f // 2)
    outputs = layers.Activation("sigmoid", dtype="float32", name="head")(x)
    return keras.Model(inputs, _with_aux_head(outputs, feats, cfg, 2), name=f"road_{cfg.encoder}")


def _with_aux_head(road, feats, cfg: UNetConfig, upsample: int):
    """``road``, or with ``cfg.aux_classes`` the road probability and the auxiliary head's class
    probabilities (a 1x1 convolution on the decoder's last features) concatenated on the channel axis."""
    if not cfg.aux_classes:
        return road
    x = layers.Conv2D(cfg.aux_classes, 1, name="aux_logits")(feats)
    if upsample > 1:
        x = layers.UpSampling2D(upsample, interpolation="bilinear", name="aux_up")(x)
    x = layers.Softmax(dtype="float32", name="aux")(x)
    return layers.Concatenate(name="road_and_aux")([road, x])


def road_only(model: keras.Model) -> keras.Model:
    """The road output of a model trained with an auxiliary head (same layers and weights); else ``model``."""
    names = {lyr.name for lyr in model.layers}
    if "aux" not in names:
        return model
    return keras.Model(model.inputs, model.get_layer("head").output, name=model.name)


def build_model(cfg: UNetConfig) -> keras.Model:
    """Build the configured road model (``cfg.encoder`` chooses the architecture)."""
    cfg.validate()
    return build_mobilenet_unet(cfg) if cfg.encoder in PRETRAINED_ENCODERS else build_unet(cfg)


def build_unet(cfg: UNetConfig = UNetConfig()) -> keras.Model:
    """Build the road U-Net: ``(N, H, W, 3)`` float in [0, 1] -> ``(N, H, W, 1)`` road probability."""
    cfg.validate()
    if cfg.encoder != "unet":
        return build_mobilenet_unet(cfg)
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
    return keras.Model(inputs, _with_aux_head(outputs, x, cfg, 1), name="road_unet")


def encoder_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of the encoder (and bottleneck), found by their fixed names."""
    return [lyr for lyr in model.layers if lyr.name.startswith(ENCODER_PREFIXES)]


def count_flops(model: keras.Model) -> int:
    """Multiply-accumulate count of one forward pass at batch 1 (convolutions only)."""
    macs = 0
    for lyr in model.layers:
        if isinstance(lyr, keras.Model):
            macs += count_flops(lyr)
            continue
        if isinstance(lyr, layers.SeparableConv2D):
            out_shape = lyr.output.shape
            h, w, c_out = out_shape[1], out_shape[2], out_shape[3]
            c_in = lyr.input.shape[-1]
            macs += h * w * c_in * 9 + h * w * c_in * c_out
            continue
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
