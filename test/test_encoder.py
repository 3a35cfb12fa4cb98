"""The pretrained encoders (MobileNetV2, MobileNetV3-Small, EfficientNet-Lite0) in the road model.

Weights file, normalisation, naming.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import yaml
from conftest import REPO

from road_seg_perception.core.model_io import load_keras_model
from road_seg_perception.training.config import UNetConfig
from road_seg_perception.training.efficientnet_lite import efficientnet_lite0, load_lite0_state
from road_seg_perception.training.model import (
    build_model,
    count_flops,
    efficientnet_lite0_encoder,
    encoder_layers,
    mobilenet_v2_encoder,
    mobilenet_v3_small_encoder,
)

TINY = UNetConfig(input_hw=(32, 64), encoder="mobilenet_v2", encoder_weights="", decoder_filters=8, dropout=0.0)
TINY_V3 = UNetConfig(**{**TINY.__dict__, "encoder": "mobilenet_v3_small"})
TINY_L0 = UNetConfig(**{**TINY.__dict__, "encoder": "efficientnet_lite0"})
TINIES = [TINY, TINY_V3, TINY_L0]
TINY_IDS = ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite0"]
BACKBONES = REPO.parent / "shared" / "models" / "backbones"
LITE0_STATE = BACKBONES / "efficientnet_lite0_imagenet_state.npz"


pytestmark = pytest.mark.usefixtures("fresh_keras_session")


@pytest.mark.parametrize("cfg", TINIES, ids=TINY_IDS)
def test_mobilenet_model_shapes_range_and_in_model_normalisation(cfg):
    model = build_model(cfg)
    assert model.input_shape == (None, 32, 64, 3) and model.output_shape == (None, 32, 64, 1)
    y = np.asarray(model(np.random.default_rng(0).random((2, 32, 64, 3), dtype=np.float32)))
    assert np.all((y >= 0) & (y <= 1))
    # [0, 1] -> the range the encoder was trained on: [-1, 1] for MobileNets, (RGB - 127) / 128 for Lite0
    scale = model.get_layer("enc_input_scale")
    want = [-1.0, 0.0, 1.0] if cfg.encoder != "efficientnet_lite0" else [-127 / 128, 0.5 / 128, 1.0]
    np.testing.assert_allclose(np.asarray(scale(np.array([[0.0, 0.5, 1.0]], np.float32))), [want], rtol=1e-6)
    names = [lyr.name for lyr in encoder_layers(model)]
    assert f"enc_{cfg.encoder}" in names and model.name == f"road_{cfg.encoder}"
    assert not any(n.startswith(("dec", "head")) for n in names)
    assert count_flops(model) > 0


def test_encoder_weights_come_from_the_local_file(tmp_path):
    src = mobilenet_v2_encoder((32, 64))
    rng = np.random.default_rng(1)
    src.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in src.get_weights()])
    # the file holds a full keras.applications MobileNetV2 (no top), as the shared backbones do
    full = keras.applications.MobileNetV2(input_shape=(32, 64, 3), include_top=False, weights=None)
    for lyr in full.layers:
        if lyr.weights:
            try:
                lyr.set_weights(src.get_layer(lyr.name).get_weights())
            except ValueError:  # layers past the last tap keep their random weights
                pass
    path = tmp_path / "mnv2.weights.h5"
    full.save_weights(path)
    model = build_model(UNetConfig(**{**TINY.__dict__, "encoder_weights": str(path)}))
    enc = model.get_layer("enc_mobilenet_v2")
    np.testing.assert_array_equal(enc.get_layer("Conv1").get_weights()[0], src.get_layer("Conv1").get_weights()[0])
    np.testing.assert_array_equal(enc.get_layer("block_13_expand").get_weights()[0],
                                  src.get_layer("block_13_expand").get_weights()[0])


@pytest.mark.parametrize("make", [mobilenet_v2_encoder, mobilenet_v3_small_encoder, efficientnet_lite0_encoder])
def test_encoder_taps_sit_at_strides_2_to_32(make):
    enc = make((64, 128))
    assert [tuple(t.shape[1:3]) for t in enc.outputs] == [(32, 64), (16, 32), (8, 16), (4, 8), (2, 4)]


def test_mobilenet_v3_small_weights_come_from_the_local_file_and_taps_are_activations(tmp_path):
    full = keras.applications.MobileNetV3Small(input_shape=(32, 64, 3), include_top=False, weights=None,
                                               include_preprocessing=False)
    rng = np.random.default_rng(3)
    full.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in full.get_weights()])
    path = tmp_path / "mnv3s.weights.h5"
    full.save_weights(path)
    enc = mobilenet_v3_small_encoder((32, 64), str(path))
    for name in ("conv", "expanded_conv_3_expand", "conv_1"):
        np.testing.assert_array_equal(enc.get_layer(name).get_weights()[0], full.get_layer(name).get_weights()[0])
    # each tap is the activation right after its named BatchNorm (hard-swish or ReLU), not the BatchNorm itself
    kinds = {type(t._keras_history.operation).__name__ for t in enc.outputs}
    assert kinds <= {"Activation", "ReLU"}, kinds
    x = rng.random((1, 32, 64, 3), dtype=np.float32) * 2 - 1
    np.testing.assert_allclose(np.asarray(enc(x)[-1]), np.asarray(keras.Model(full.input, full.output)(x)), atol=1e-5)


def test_encoder_weights_of_another_architecture_are_refused_by_name(tmp_path):
    path = tmp_path / "mnv2.weights.h5"
    keras.applications.MobileNetV2(input_shape=(32, 64, 3), include_top=False, weights=None).save_weights(path)
    with pytest.raises(ValueError, match=r"model.encoder_weights .*mnv2.weights.h5 does not fit encoder mobilenet_v3"):
        build_model(UNetConfig(**{**TINY_V3.__dict__, "encoder_weights": str(path)}))


def test_missing_encoder_weights_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="model.encoder_weights .*nope.h5"):
        UNetConfig(input_hw=(64, 64), encoder="mobilenet_v2", encoder_weights=str(tmp_path / "nope.h5")).validate()
    for enc in ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite0"):
        with pytest.raises(ValueError, match="divisible by 32"):
            UNetConfig(input_hw=(48, 64), encoder=enc, encoder_weights="").validate()
    with pytest.raises(ValueError, match="model.encoder"):
        UNetConfig(encoder="resnet").validate()


@pytest.mark.parametrize("cfg", TINIES, ids=TINY_IDS)
def test_mobilenet_model_saves_and_loads_in_safe_mode(tmp_path, cfg):
    model = build_model(cfg)
    x = np.random.default_rng(2).random((1, 32, 64, 3), dtype=np.float32)
    ref = np.asarray(model(x))
    model.save(tmp_path / "m.keras")
    loaded = load_keras_model(tmp_path / "m.keras")  # no Lambda layers, no custom classes
    np.testing.assert_allclose(np.asarray(loaded(x)), ref, atol=1e-5)


def test_freezing_the_pretrained_encoder_leaves_only_decoder_and_head_trainable(tmp_path):
    from road_seg_perception.training import cli

    model = build_model(TINY)
    for lyr in encoder_layers(model):
        lyr.trainable = False
    names = {w.path.split("/")[0] for w in model.trainable_weights}
    assert names and all(n.startswith(("dec", "head")) for n in names), names
    cfg = tmp_path / "c.yaml"
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"")
    cfg.write_text(f"model:\n  encoder: mobilenet_v2\n  encoder_weights: {weights}\n")
    assert cli._pretrained_encoder(cli.parse_args(["--config", str(cfg), "--freeze", "encoder"]))
    assert not cli._pretrained_encoder(cli.parse_args(["--config", str(cfg), "--set", "model.encoder=unet"]))


def _random_lite0_state(path: Path) -> dict:
    """A PyTorch-layout state of EfficientNet-Lite0 (OIHW convolutions), random, saved to ``path``."""
    rng = np.random.default_rng(4)
    top = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
           "predictions": "_fc"}
    full = {}
    for lyr in efficientnet_lite0((32, 32, 3), include_top=True).layers:
        if not lyr.weights:
            continue
        if lyr.name in top:
            key = top[lyr.name]
        else:
            _, idx, part = lyr.name.split("_", 2)
            key = f"_blocks.{idx}._{'bn2' if part == 'project_bn' else part}"
        if isinstance(lyr, keras.layers.BatchNormalization):
            c = lyr.weights[0].shape[0]
            for n in ("weight", "bias", "running_mean"):
                full[f"{key}.{n}"] = rng.normal(size=c).astype(np.float32)
            full[f"{key}.running_var"] = rng.uniform(0.5, 2.0, size=c).astype(np.float32)
        elif isinstance(lyr, keras.layers.DepthwiseConv2D):
            kh, kw, c, _ = lyr.weights[0].shape
            full[f"{key}.weight"] = rng.normal(size=(c, 1, kh, kw)).astype(np.float32)
        elif isinstance(lyr, keras.layers.Conv2D):
            kh, kw, i, o = lyr.weights[0].shape
            full[f"{key}.weight"] = rng.normal(size=(o, i, kh, kw)).astype(np.float32)
        else:
            i, o = lyr.weights[0].shape
            full[f"{key}.weight"] = rng.normal(size=(o, i)).astype(np.float32)
            full[f"{key}.bias"] = rng.normal(size=o).astype(np.float32)
    np.savez(path, **full)
    return full


def test_lite0_weights_come_from_the_pytorch_state_in_keras_layout(tmp_path):
    path = tmp_path / "lite0.npz"
    state = _random_lite0_state(path)
    assert len(state) == 247  # the shared file's count: every array of the network, classifier included
    model = build_model(UNetConfig(**{**TINY_L0.__dict__, "encoder_weights": str(path)}))
    enc = model.get_layer("enc_efficientnet_lite0")
    # OIHW -> HWIO for convolutions, (C, 1, kh, kw) -> (kh, kw, C, 1) for depthwise ones
    np.testing.assert_array_equal(enc.get_layer("stem_conv").get_weights()[0],
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(enc.get_layer("blocks_11_depthwise_conv").get_weights()[0],
                                  state["_blocks.11._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    bn = enc.get_layer("blocks_15_project_bn").get_weights()
    np.testing.assert_array_equal(bn[3], state["_blocks.15._bn2.running_var"])
    assert enc.get_layer("blocks_15_project_bn").epsilon == 1e-3
    assert {k.split(".")[0] for k in state} >= {"_conv_stem", "_blocks", "_fc"}


def test_lite0_state_of_another_network_is_refused_by_name(tmp_path):
    path = tmp_path / "mnv2.weights.h5"
    keras.applications.MobileNetV2(input_shape=(32, 64, 3), include_top=False, weights=None).save_weights(path)
    with pytest.raises(ValueError, match=r"model.encoder_weights .*mnv2.weights.h5 is not an EfficientNet-Lite0"):
        build_model(UNetConfig(**{**TINY_L0.__dict__, "encoder_weights": str(path)}))
    wrong = tmp_path / "short.npz"
    np.savez(wrong, **{"_conv_stem.weight": np.zeros((32, 3, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"short.npz is not an EfficientNet-Lite0 state.*_bn0"):
        load_lite0_state(efficientnet_lite0((32, 32, 3)), wrong)


IMAGENET_PHOTOS = {"cat.jpg": range(281, 286), "hot_dog.jpg": [934], "dragonfly.jpg": [319]}


@pytest.mark.skipif(not LITE0_STATE.is_file(), reason=f"{LITE0_STATE} not present")
@pytest.mark.parametrize("photo", sorted(IMAGENET_PHOTOS))
def test_lite0_with_the_shared_imagenet_weights_still_classifies(photo):
    """The builder and the weight conversion together: the ImageNet head names the photo's class."""
    model = efficientnet_lite0((224, 224, 3), include_top=True)
    assert load_lite0_state(model, LITE0_STATE) == 247
    im = cv2.cvtColor(cv2.imread(str(BACKBONES / "imagenet_check" / photo)), cv2.COLOR_BGR2RGB)
    h, w = im.shape[:2]
    s = 256 / min(h, w)
    im = cv2.resize(im, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
    top, left = (im.shape[0] - 224) // 2, (im.shape[1] - 224) // 2
    x = (im[top:top + 224, left:left + 224].astype(np.float32) - 127) / 128
    assert int(np.argmax(np.asarray(model(x[None]))[0])) in IMAGENET_PHOTOS[photo]


def test_lite0_model_exports_to_onnx_and_resizes(tmp_path):
    from road_seg_perception.training.export import export_onnx, with_input_hw

    model = build_model(TINY_L0)
    x = np.random.default_rng(5).random((32, 64, 3), dtype=np.float32)
    assert export_onnx(model, tmp_path / "m.onnx", [x]) <= 1e-4  # ReLU6 and TF "same" padding survive
    resized = with_input_hw(model, (64, 96))
    assert resized.output_shape == (None, 64, 96, 1)


def test_encoder_bench_times_every_pretrained_encoder_with_the_shipped_decoder():
    """``bench/arch_tradeoff.py --family encoders`` compares each pretrained encoder like for like."""
    from bench.arch_tradeoff import ENCODERS, FAMILIES
    from road_seg_perception.training.config import ENCODERS as ALL

    assert sorted(c.encoder for c in ENCODERS.values()) == sorted(e for e in ALL if e != "unet")
    shipped = yaml.safe_load((REPO / "config" / "train_road.yaml").read_text())["model"]
    for cfg in ENCODERS.values():
        cfg.validate()
        assert (cfg.input_hw, cfg.decoder_filters) == ((256, 352), shipped["decoder_filters"])
        assert cfg.encoder_weights == ""  # speed does not depend on the weights
    assert set(FAMILIES) == {"unet", "encoders"}


def test_global_context_gate_starts_at_one_and_exports(tmp_path):
    from road_seg_perception.training.export import export_onnx, with_input_hw
    from road_seg_perception.training.loop import transfer_weights

    plain = build_model(TINY)
    gated = build_model(UNetConfig(**{**TINY.__dict__, "global_context": True}))
    assert gated.count_params() == plain.count_params() + (320 + 1) * 8 * 4  # 1x1 conv: pooled s32 (320) -> dec5 (4f)
    copied, kept = transfer_weights(plain, gated)
    assert kept == ["dec5_gate"] and copied > 0
    x = np.random.default_rng(6).random((2, 32, 64, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(gated(x)), np.asarray(plain(x)))  # the gate is 2 sigmoid(0) = 1
    # a trained gate: each channel of the coarsest decoder features times 2 sigmoid(W mean(s32) + b)
    conv = gated.get_layer("dec5_gate")
    w, b = (np.random.default_rng(7).normal(0, 0.5, v.shape).astype(np.float32) for v in conv.get_weights())
    conv.set_weights([w, b])
    probe = keras.Model(gated.inputs, [gated.get_layer("dec5_pool").input, gated.get_layer("dec5_projrelu").output,
                                       gated.get_layer("dec5_context").output])
    s32, proj, ctx = (np.asarray(t) for t in probe(x, training=True))  # batch statistics: features of unit scale
    assert np.abs(proj).mean() > 0.1
    gate = 2.0 / (1.0 + np.exp(-(s32.mean(axis=(1, 2)) @ w[0, 0] + b)))
    np.testing.assert_allclose(ctx, proj * gate[:, None, None, :], rtol=1e-4, atol=1e-5)
    assert np.abs(np.asarray(gated(x, training=True)) - np.asarray(plain(x, training=True))).max() > 1e-3
    assert export_onnx(gated, tmp_path / "g.onnx", [x[0]]) <= 1e-4
    assert with_input_hw(gated, (64, 96)).output_shape == (None, 64, 96, 1)
    with pytest.raises(ValueError, match="model.global_context"):
        UNetConfig(encoder="unet", global_context=True).validate()


def test_full_res_head_starts_at_the_plain_output_and_exports(tmp_path):
    from road_seg_perception.training.export import export_onnx, with_input_hw
    from road_seg_perception.training.loop import transfer_weights

    plain = build_model(TINY)
    full = build_model(UNetConfig(**{**TINY.__dict__, "full_res_head": True}))
    # f = decoder_filters // 2 = 4: image conv 3x3x3->2 (+BN 2x4), projection 8->2 (+BN 2x4), separable 3x3 over
    # 1 + 2 + 2 channels -> 4 (+BN 4x4), 1x1 4 -> 1 with bias
    assert full.count_params() == plain.count_params() + 54 + 8 + 16 + 8 + (45 + 20) + 16 + 5
    copied, kept = transfer_weights(plain, full)
    assert sorted(kept) == ["full_bn", "full_image_bn", "full_image_conv", "full_logits", "full_proj",
                            "full_projbn", "full_sep"] and copied > 0
    x = np.random.default_rng(8).random((2, 32, 64, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(full(x)), np.asarray(plain(x)))  # the correction starts at 0
    conv = full.get_layer("full_logits")
    conv.set_weights([np.random.default_rng(9).normal(0, 0.5, v.shape).astype(np.float32)
                      for v in conv.get_weights()])
    probe = keras.Model(full.inputs, [full.get_layer("head_up").output, full.get_layer("full_logits").output,
                                      full.get_layer("head").output])
    up, correction, prob = (np.asarray(t) for t in probe(x))
    assert up.shape == correction.shape == prob.shape == (2, 32, 64, 1)
    assert np.abs(correction).max() > 1e-3
    np.testing.assert_allclose(prob, 1.0 / (1.0 + np.exp(-(up + correction))), rtol=1e-5, atol=1e-6)
    assert export_onnx(full, tmp_path / "f.onnx", [x[0]]) <= 1e-4
    assert with_input_hw(full, (64, 96)).output_shape == (None, 64, 96, 1)
    with pytest.raises(ValueError, match="model.full_res_head"):
        UNetConfig(encoder="unet", full_res_head=True).validate()
