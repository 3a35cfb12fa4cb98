"""The pretrained-encoder option: MobileNetV2 inside the road model, its weights file, normalisation and naming."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from road_seg_perception.core.model_io import load_keras_model
from road_seg_perception.training.config import UNetConfig
from road_seg_perception.training.model import build_model, count_flops, encoder_layers, mobilenet_v2_encoder

TINY = UNetConfig(input_hw=(32, 64), encoder="mobilenet_v2", encoder_weights="", decoder_filters=8, dropout=0.0)


@pytest.fixture(autouse=True)
def _clear_session():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


def test_mobilenet_model_shapes_range_and_in_model_normalisation():
    model = build_model(TINY)
    assert model.input_shape == (None, 32, 64, 3) and model.output_shape == (None, 32, 64, 1)
    y = np.asarray(model(np.random.default_rng(0).random((2, 32, 64, 3), dtype=np.float32)))
    assert np.all((y >= 0) & (y <= 1))
    scale = model.get_layer("enc_input_scale")  # [0, 1] -> [-1, 1], the range MobileNetV2 was trained on
    np.testing.assert_allclose(np.asarray(scale(np.array([[0.0, 0.5, 1.0]], np.float32))), [[-1.0, 0.0, 1.0]])
    names = [lyr.name for lyr in encoder_layers(model)]
    assert "enc_mobilenet_v2" in names and not any(n.startswith(("dec", "head")) for n in names)
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


def test_missing_encoder_weights_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="model.encoder_weights .*nope.h5"):
        UNetConfig(input_hw=(64, 64), encoder="mobilenet_v2", encoder_weights=str(tmp_path / "nope.h5")).validate()
    with pytest.raises(ValueError, match="divisible by 32"):
        UNetConfig(input_hw=(48, 64), encoder="mobilenet_v2", encoder_weights="").validate()
    with pytest.raises(ValueError, match="model.encoder"):
        UNetConfig(encoder="resnet").validate()


def test_mobilenet_model_saves_and_loads_in_safe_mode(tmp_path):
    model = build_model(TINY)
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
