"""EfficientNet-Lite0 in Keras 3 layers, and its ImageNet weights read from a PyTorch state (``.npz``).

There is no ``keras.applications`` EfficientNet-Lite. This builds the network of Tan & Le's Lite
variant (no squeeze-excite, ReLU6, fixed stem and head, TensorFlow ``same`` padding, BatchNorm
epsilon 1e-3) with layer names that follow the state's keys (``blocks_3_depthwise_conv`` holds
``_blocks.3._depthwise_conv.weight``), so the arrays load by name. Input: RGB in 0-255 scaled as
``(x - 127) / 128``, which :func:`road_seg_perception.training.model.build_mobilenet_unet` does itself.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

#: (kernel, stride, expansion, output channels, repeats) per stage of EfficientNet-Lite0.
LITE0_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
#: Feature taps at strides 2, 4, 8, 16 (the expansion before each stride-2 block, as MobileNetV2's)
#: and 32 (the last block's projection).
LITE0_TAPS = ("blocks_1_expand_relu", "blocks_3_expand_relu", "blocks_5_expand_relu",
              "blocks_11_expand_relu", "blocks_15_project_bn")
BN_EPSILON = 1e-3
#: Keras layer-name prefix -> state-key prefix for the layers outside the blocks.
_TOP_LEVEL = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
              "predictions": "_fc"}


def _bn(x, name: str):
    return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)(x)


def _relu6(x, name: str):
    return layers.ReLU(max_value=6.0, name=name)(x)


def _block(x, idx: int, kernel: int, stride: int, expand: int, out_ch: int):
    in_ch = x.shape[-1]
    p = f"blocks_{idx}"
    y = x
    if expand != 1:
        y = layers.Conv2D(in_ch * expand, 1, use_bias=False, name=f"{p}_expand_conv")(y)
        y = _relu6(_bn(y, f"{p}_bn0"), f"{p}_expand_relu")
    y = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{p}_depthwise_conv")(y)
    y = _relu6(_bn(y, f"{p}_bn1"), f"{p}_depthwise_relu")
    y = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{p}_project_conv")(y)
    y = _bn(y, f"{p}_project_bn")
    if stride == 1 and in_ch == out_ch:
        y = layers.Add(name=f"{p}_add")([x, y])
    return y


def efficientnet_lite0(input_shape: tuple = (None, None, 3), include_top: bool = False) -> keras.Model:
    """EfficientNet-Lite0 on ``(x - 127) / 128`` scaled RGB; ``include_top`` adds the ImageNet head (logits)."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _relu6(_bn(x, "stem_bn"), "stem_relu")
    idx = 0
    for kernel, stride, expand, out_ch, repeats in LITE0_STAGES:
        for r in range(repeats):
            x = _block(x, idx, kernel, stride if r == 0 else 1, expand, out_ch)
            idx += 1
    if include_top:
        x = layers.Conv2D(1280, 1, use_bias=False, name="head_conv")(x)
        x = _relu6(_bn(x, "head_bn"), "head_relu")
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _state_key(layer_name: str) -> str:
    if layer_name in _TOP_LEVEL:
        return _TOP_LEVEL[layer_name]
    _, idx, rest = layer_name.split("_", 2)  # blocks_<i>_<part>
    part = {"project_bn": "bn2"}.get(rest, rest)
    return f"_blocks.{idx}._{part}"


def _layer_arrays(layer: layers.Layer, state, key: str) -> list[np.ndarray]:
    if isinstance(layer, layers.BatchNormalization):
        return [state[f"{key}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")]
    w = state[f"{key}.weight"]
    if isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [w.transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):  # (O, I, kh, kw) -> (kh, kw, I, O)
        return [w.transpose(2, 3, 1, 0)]
    return [w.T, state[f"{key}.bias"]]  # Dense


def load_lite0_state(model: keras.Model, path: str | Path) -> int:
    """Set every weighted layer of ``model`` from the PyTorch state file ``path``; returns the arrays used.

    Raises ``ValueError`` naming the file when it is not an EfficientNet-Lite0 state.
    """
    used = 0
    try:
        with np.load(path) as state:  # an .npz archive; anything else raises or has no close()
            for lyr in model.layers:
                if lyr.weights:
                    arrays = _layer_arrays(lyr, state, _state_key(lyr.name))
                    lyr.set_weights(arrays)
                    used += len(arrays)
    except (KeyError, ValueError, OSError, AttributeError, TypeError) as e:
        raise ValueError(f"model.encoder_weights {path} is not an EfficientNet-Lite0 state: {e}") from e
    return used
