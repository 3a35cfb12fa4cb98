"""An operating threshold baked into a model's logit bias: 0.5 on the new output is T on the old one."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
from sample_data import threshold_config

from road_seg_perception.core.segmenter import PostConfig, RoadSegmenter
from road_seg_perception.tools import threshold as tool
from road_seg_perception.training.model import UNetConfig, build_unet
from road_seg_perception.training.operating_point import bake_threshold, logit, logit_bias_layer


def _inputs(model, n: int = 3) -> np.ndarray:
    return np.random.default_rng(7).random((n, *model.input_shape[1:]), dtype=np.float32)


@pytest.mark.parametrize("cfg", [UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, dropout=0.0),
                                 UNetConfig(encoder="mobilenet_v2", input_hw=(32, 32), decoder_filters=8)],
                         ids=["unet: sigmoid conv head", "mobilenet_v2: conv, upsampling, sigmoid"])
@pytest.mark.parametrize("q", [0.3, 0.7])
def test_baked_output_at_one_half_is_the_original_at_t(cfg, q):
    keras.utils.set_random_seed(3)
    model = build_unet(cfg)
    layer = logit_bias_layer(model)
    kernel = layer.get_weights()[0]
    layer.set_weights([kernel, np.zeros(1, np.float32)])
    x = _inputs(model)
    p = model.predict(x, verbose=0).astype(np.float64)
    spread = np.std(np.log(p / (1 - p)))  # untrained logits sit near 0: spread them to a std of 2
    layer.set_weights([kernel * (2 / spread), np.array([0.1], np.float32)])  # with a non-zero bias to shift
    before = model.predict(x, verbose=0)
    t = float(np.quantile(before, q))  # a threshold with road on both sides of it
    assert 0.05 < np.mean(before >= t) < 0.95 and abs(t - 0.5) > 1e-3
    shift = bake_threshold(model, t)
    after = model.predict(x, verbose=0)
    assert shift == pytest.approx(-math.log(t / (1 - t)))
    assert layer.get_weights()[1] == pytest.approx([0.1 + shift], abs=1e-6)
    # the new probability is sigmoid(logit(p) - logit(t)) everywhere, so the masks agree pixel for pixel
    np.testing.assert_allclose(after, 1 / (1 + (1 - before) / before * t / (1 - t)), rtol=1e-4, atol=1e-6)
    near = np.abs(before - t) < 1e-5
    np.testing.assert_array_equal((after >= 0.5)[~near], (before >= t)[~near])
    keras.backend.clear_session()


def test_models_whose_logit_has_no_bias_to_shift_are_refused():
    inp = keras.Input((8, 8, 3))
    relu_head = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="relu", name="out")(inp))
    with pytest.raises(ValueError, match="does not end in a sigmoid"):
        logit_bias_layer(relu_head)
    no_bias = keras.Model(inp, keras.layers.Activation("sigmoid")(keras.layers.Conv2D(1, 1, use_bias=False,
                                                                                      name="nb")(inp)))
    with pytest.raises(ValueError, match="nb .*not from a 1-filter Conv2D with a bias"):
        logit_bias_layer(no_bias)
    relu = keras.Model(inp, keras.layers.Activation("sigmoid")(keras.layers.ReLU(name="relu")(
        keras.layers.Conv2D(1, 1, name="c")(inp))))
    with pytest.raises(ValueError, match="from relu"):  # not shift-invariant: refused, not walked through
        logit_bias_layer(relu)
    with pytest.raises(ValueError, match="threshold must be in"):
        logit(1.0)
    keras.backend.clear_session()


def test_cli_writes_a_model_whose_default_mask_is_the_chosen_thresholds(tmp_path, tiny_model, capsys):
    cfg = threshold_config(tmp_path)
    out = tmp_path / "operating.keras"
    assert tool.main(["--config", str(cfg), "--model", str(tiny_model["keras"]), "--frames", "4", "--thresholds",
                      "0.48", "0.5", "0.52", "--write", str(out), "--json", str(tmp_path / "s.json")]) == 0
    chosen = float(json.loads((tmp_path / "s.json").read_text())["chosen"])
    assert f"threshold 0.5 on its output = {chosen:.2f}" in capsys.readouterr().out
    original = RoadSegmenter(tiny_model["keras"], backend="keras", post=PostConfig(threshold=chosen))
    baked = RoadSegmenter(out, backend="keras")  # the default threshold
    assert baked.post.threshold == 0.5
    pairs = tool.training_pairs(tool.load_config(cfg), 4)["idd"]
    for image, _ in pairs:
        a, b = original.segment(image, with_probability=True), baked.segment(image, with_probability=True)
        # identical at the model's grid; at full size only where the resized probabilities sit at the threshold
        np.testing.assert_array_equal(a.low_res_probability >= chosen, b.low_res_probability >= 0.5)
        assert np.mean(a.mask != b.mask) < 0.01


def test_cli_write_needs_keras_files(tmp_path, tiny_model, capsys):
    cfg = threshold_config(tmp_path)
    assert tool.main(["--config", str(cfg), "--model", str(tiny_model["onnx"]), "--write",
                      str(tmp_path / "x.keras")]) == 2
    assert "--write needs a .keras --model" in capsys.readouterr().err
    assert not (tmp_path / "x.keras").exists()
    before = tiny_model["keras"].read_bytes()
    keras_file = str(tiny_model["keras"])
    assert tool.main(["--config", str(cfg), "--model", keras_file, "--write", keras_file]) == 2
    assert "is the --model file" in capsys.readouterr().err and tiny_model["keras"].read_bytes() == before
