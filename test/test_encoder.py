"""The pretrained encoders (MobileNetV2, MobileNetV3-Small) in the road model: weights file, normalisation, naming."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from road_seg_perception.core.model_io import load_keras_model
from road_seg_perception.training.config import UNetConfig
from road_seg_perception.training.model import (
    build_model,
    count_flops,
    encoder_layers,
    mobilenet_v2_encoder,
    mobilenet_v3_small_encoder,
)

TINY = UNetConfig(input_hw=(32, 64), encoder="mobilenet_v2", encoder_weights="", decoder_filters=8, dropout=0.0)
TINY_V3 = UNetConfig(**{**TINY.__dict__, "encoder": "mobilenet_v3_small"})


@pytest.fixture(autouse=True)
def _clear_session():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


@pytest.mark.parametrize("cfg", [TINY, TINY_V3], ids=["mobilenet_v2", "mobilenet_v3_small"])
def test_mobilenet_model_shapes_range_and_in_model_normalisation(cfg):
    model = build_model(cfg)
    assert model.input_shape == (None, 32, 64, 3) and model.output_shape == (None, 32, 64, 1)
    y = np.asarray(model(np.random.default_rng(0).random((2, 32, 64, 3), dtype=np.float32)))
    assert np.all((y >= 0) & (y <= 1))
    scale = model.get_layer("enc_input_scale")  # [0, 1] -> [-1, 1], the range MobileNetV2 was trained on
    np.testing.assert_allclose(np.asarray(scale(np.array([[0.0, 0.5, 1.0]], np.float32))), [[-1.0, 0.0, 1.0]])
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


@pytest.mark.parametrize("make", [mobilenet_v2_encoder, mobilenet_v3_small_encoder])
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
    for enc in ("mobilenet_v2", "mobilenet_v3_small"):
        with pytest.raises(ValueError, match="divisible by 32"):
            UNetConfig(input_hw=(48, 64), encoder=enc, encoder_weights="").validate()
    with pytest.raises(ValueError, match="model.encoder"):
        UNetConfig(encoder="resnet").validate()


@pytest.mark.parametrize("cfg", [TINY, TINY_V3], ids=["mobilenet_v2", "mobilenet_v3_small"])
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
