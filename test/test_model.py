"""The U-Net builder, its fixed layer names, FLOP count and safe model loading."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from road_seg_perception.core.model_io import ModelFileError, inspect_keras_file, load_keras_model
from road_seg_perception.training.model import UNetConfig, build_unet, count_flops, encoder_layers

REPO = Path(__file__).resolve().parent.parent
TINY = UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, dropout=0.0)


pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def test_shapes_and_output_range():
    model = build_unet(TINY)
    assert model.input_shape == (None, 32, 64, 3)
    assert model.output_shape == (None, 32, 64, 1)
    x = np.random.default_rng(0).random((2, 32, 64, 3), dtype=np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 32, 64, 1)
    assert np.all((y >= 0) & (y <= 1))
    wide = build_unet(UNetConfig(input_hw=(48, 80), base_filters=8, levels=4, separable=False))
    assert wide.output_shape == (None, 48, 80, 1)


def test_layer_names_fixed_and_stable():
    a = build_unet(TINY)
    b = build_unet(TINY)  # same session: auto-named layers would get a _1 suffix here
    names = [lyr.name for lyr in a.layers]
    assert names == [lyr.name for lyr in b.layers]
    for expected in ("image", "enc0_stem_conv", "enc0_b_dw", "enc1_a_dw", "enc1_b_pw", "bott_a_pw",
                     "bott_c_relu", "dec1_up", "dec1_concat", "dec0_a_pw", "head"):
        assert expected in names
    assert not any(n.startswith("enc2") for n in names)  # levels=2: encoder levels 0 and 1 only


def test_weights_transfer_between_builds(tmp_path):
    a = build_unet(TINY)
    a.save_weights(tmp_path / "a.weights.h5")
    keras.utils.set_random_seed(99)
    b = build_unet(TINY)
    assert not np.array_equal(a.get_layer("head").get_weights()[0], b.get_layer("head").get_weights()[0])
    b.load_weights(tmp_path / "a.weights.h5")
    for la, lb in zip(a.layers, b.layers, strict=True):
        for wa, wb in zip(la.get_weights(), lb.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)


def test_encoder_layers_are_encoder_and_bottleneck_only():
    model = build_unet(TINY)
    enc = encoder_layers(model)
    names = {lyr.name for lyr in enc}
    assert names and all(n.startswith(("enc", "bott")) for n in names)
    assert {"enc0_stem_conv", "enc1_a_dw", "bott_c_pw"} <= names
    rest = {lyr.name for lyr in model.layers} - names
    assert "head" in rest and all(n.startswith(("dec", "head", "image")) for n in rest)


def test_params_and_flops():
    sep = build_unet(TINY)
    plain = build_unet(UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, dropout=0.0, separable=False))
    assert 0 < sep.count_params() < plain.count_params()
    assert 0 < count_flops(sep) < count_flops(plain)


def test_stride2_stem_keeps_output_resolution():
    model = build_unet(UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, dropout=0.0, stem_stride=2))
    assert model.output_shape == (None, 32, 64, 1)
    assert tuple(model.get_layer("enc0_stem_conv").output.shape[1:3]) == (16, 32)
    assert tuple(model.get_layer("head_up").output.shape[1:3]) == (32, 64)
    assert count_flops(model) < count_flops(build_unet(TINY))
    y = np.asarray(model(np.zeros((1, 32, 64, 3), np.float32), training=False))
    assert y.shape == (1, 32, 64, 1)


def test_count_flops_by_hand():
    inp = keras.Input((8, 10, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)                 # 8*10 * 4 out * 3 in * 9 = 8640
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*5 * 4 ch * 9 = 720
    x = keras.layers.Conv2D(2, 1)(x)                                    # 4*5 * 2 * 4 * 1 = 160
    x = keras.layers.ReLU()(x)
    assert count_flops(keras.Model(inp, x)) == 8640 + 720 + 160


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"input_hw": (30, 64)}, "model.input_hw"),
    ({"input_hw": (32, 0)}, "model.input_hw"),
    ({"input_hw": (32, 64, 3)}, "model.input_hw"),
    ({"base_filters": 2}, "model.base_filters"),
    ({"levels": 0}, "model.levels"),
    ({"levels": 9}, "model.levels"),
    ({"dropout": 1.0}, "model.dropout"),
    ({"stem_stride": 3}, "model.stem_stride"),
    ({"input_hw": (36, 64), "stem_stride": 2}, "model.input_hw"),  # 36 is divisible by 4 but not by 8
])
def test_bad_config_names_field(kwargs, field):
    cfg = UNetConfig(**{"input_hw": (32, 64), "base_filters": 4, "levels": 2, **kwargs})
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build_unet(cfg)


# --------------------------------------------------------------------------- safe loading


def _lambda_model(path: Path) -> Path:
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(1, 1, name="c")(inp)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    keras.Model(inp, x).save(path)
    return path


def test_lambda_model_refused_unless_allowed(tmp_path):
    path = _lambda_model(tmp_path / "lam.keras")
    with pytest.raises(ModelFileError) as e:
        load_keras_model(path)
    msg = str(e.value)
    assert str(path) in msg and "Lambda layer (double)" in msg and "allow_unsafe_model" in msg
    model = load_keras_model(path, allow_unsafe=True)
    x = np.ones((1, 8, 8, 3), np.float32)
    conv = model.get_layer("c")
    expected = 2.0 * (x @ conv.get_weights()[0][0, 0] + conv.get_weights()[1])
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-5)


def test_plain_model_loads_in_safe_mode(tiny_model):
    model = load_keras_model(tiny_model["keras"])
    assert model.input_shape == (None, 32, 64, 3)
    assert inspect_keras_file(tiny_model["keras"]) == []


def test_custom_class_refused(tmp_path):
    path = tmp_path / "custom.keras"
    config = {"module": "keras", "class_name": "Functional", "config": {"layers": [
        {"module": "evil.layers", "class_name": "Backdoor", "config": {"name": "x"}}]}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", "{}")
    reasons = inspect_keras_file(path)
    assert reasons == ["class 'Backdoor' from module 'evil.layers' is custom code"]
    with pytest.raises(ModelFileError, match="Backdoor"):
        load_keras_model(path)


def test_corrupt_and_missing_files_named(tmp_path, tiny_model):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip archive at all")
    with pytest.raises(ModelFileError, match=f"{garbage}.*corrupt"):
        load_keras_model(garbage)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(tiny_model["keras"].read_bytes()[:2000])
    with pytest.raises(ModelFileError, match=str(truncated)):
        load_keras_model(truncated)
    no_config = tmp_path / "empty.keras"
    with zipfile.ZipFile(no_config, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(ModelFileError, match=f"{no_config} is not a Keras 3 .keras archive"):
        load_keras_model(no_config)
    with pytest.raises(ModelFileError, match="missing.keras does not exist"):
        load_keras_model(tmp_path / "missing.keras")
    with pytest.raises(ModelFileError, match=r"must end in \.keras"):
        load_keras_model(tiny_model["onnx"])


# --------------------------------------------------------------------------- other Keras backends

_BACKEND_SCRIPT = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    from road_seg_perception.training.model import UNetConfig, build_unet
    from road_seg_perception.core.model_io import load_keras_model
    assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
    model = build_unet(UNetConfig(input_hw=(32, 64), base_filters=4, levels=2))
    y = np.asarray(keras.ops.convert_to_numpy(model(np.ones((2, 32, 64, 3), "float32"), training=False)))
    assert y.shape == (2, 32, 64, 1) and np.all((y >= 0) & (y <= 1)), y.shape
    saved = load_keras_model(sys.argv[2])
    x = np.load(sys.argv[3])
    np.save(sys.argv[4], np.asarray(keras.ops.convert_to_numpy(saved(x, training=False))))
""")


@pytest.mark.parametrize(("backend", "package"), [("jax", "jax"), ("torch", "torch")])
def test_builds_and_runs_on_other_backend(backend, package, tiny_model, tmp_path):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"KERAS_BACKEND={backend} needs the '{package}' package, which is not installed")
    x = np.random.default_rng(0).random((1, 32, 64, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    reference = np.asarray(load_keras_model(tiny_model["keras"])(x, training=False))
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", _BACKEND_SCRIPT, backend, str(tiny_model["keras"]),
                           str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), reference, atol=1e-4)


def test_instance_input_norm_makes_the_model_brightness_invariant():
    keras.utils.set_random_seed(1)
    model = build_unet(UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, input_norm="instance", dropout=0.0))
    x = np.random.default_rng(1).random((1, 32, 64, 3), dtype=np.float32) * 0.8 + 0.1

    def change(m) -> float:
        """How much darkening the scene by 60% moves the output, relative to the output's own spread."""
        bright = np.asarray(m(x, training=False))
        dark = np.asarray(m(x * 0.4, training=False))
        return float(np.abs(dark - bright).max() / (bright.max() - bright.min()))

    assert change(model) < 0.05  # not exactly 0: the epsilon of the normalisation
    plain = build_unet(UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, dropout=0.0))
    assert change(plain) > 5 * change(model)
    with pytest.raises(ValueError, match="input_norm"):
        UNetConfig(input_norm="batch").validate()
    keras.backend.clear_session()


def test_exposure_norm_makes_the_model_gain_and_gamma_invariant(tmp_path):
    """A dusk-like exposure (x ** 2.2) or a gain (0.4 x) moves the output little; the model saves,
    loads in safe mode (its own registered layer is allowed) and exports to ONNX."""
    from road_seg_perception.training.export import export_onnx

    keras.utils.set_random_seed(2)
    cfg = dict(input_hw=(32, 64), base_filters=4, levels=2, dropout=0.0)
    model = build_unet(UNetConfig(**cfg, input_norm="exposure"))
    x = np.random.default_rng(2).random((1, 32, 64, 3), dtype=np.float32) * 0.8 + 0.2

    def change(m, transform) -> float:
        ref = np.asarray(m(x, training=False))
        out = np.asarray(m(transform(x), training=False))
        return float(np.abs(out - ref).max() / (ref.max() - ref.min()))

    plain = build_unet(UNetConfig(**cfg))
    for transform in (lambda a: a**2.2, lambda a: 0.4 * a):
        assert change(model, transform) < 0.05  # not exactly 0: the epsilon inside the log
        assert change(plain, transform) > 5 * change(model, transform)
    model.save(tmp_path / "m.keras")
    loaded = load_keras_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)), atol=1e-6)
    assert export_onnx(loaded, tmp_path / "m.onnx", [x[0]]) <= 1e-4
    keras.backend.clear_session()


def test_export_at_another_input_size_keeps_the_weights(tiny_model, tmp_path, capsys):
    """``road-seg-export --input-hw``: the same weights for another input size, checked against Keras."""
    import onnx

    from road_seg_perception.core.model_io import ONNX_WEIGHTS_KEY, keras_weights_digest
    from road_seg_perception.core.preprocessing import preprocess
    from road_seg_perception.core.segmenter import RoadSegmenter
    from road_seg_perception.training import export

    model = build_unet(UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, dropout=0.0))
    rng = np.random.default_rng(6)  # weights far from zero, small BN variances: outputs differ pixel to pixel
    model.set_weights([np.abs(rng.normal(0.05, 0.03, w.shape)).astype(np.float32) + 1e-3 if "variance" in v.path else
                       rng.normal(0, 0.5, w.shape).astype(np.float32) for v, w in zip(model.weights,
                                                                                     model.get_weights(), strict=True)])
    src = tmp_path / "m.keras"
    model.save(src)
    out = tmp_path / "small.onnx"
    assert export.main([str(src), str(out), "--input-hw", "48", "96"]) == 0
    seg = RoadSegmenter(out, backend="onnxruntime")
    assert seg.input_hw == (48, 96)
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[60:], frame[:, 80:, 1] = 200, 90  # a bright lower half, a greener right half, and noise
    frame += np.random.default_rng(4).integers(0, 40, (120, 160, 3), dtype=np.uint8)
    assert seg.segment(frame).mask.shape == (120, 160)
    original = load_keras_model(src)
    resized = export.with_input_hw(original, (48, 96))
    assert resized.input_shape == (None, 48, 96, 3) and resized.output_shape[1:3] == (48, 96)
    for a, b in zip(original.get_weights(), resized.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    ref = np.asarray(resized(preprocess(frame, (48, 96))[None], training=False))[0, ..., 0]
    assert ref.std() > 0.05  # a varied output, so that the comparison below means something
    np.testing.assert_allclose(seg.probability(frame), ref, atol=1e-3)  # small BN variances amplify float error
    stamp = {p.key: p.value for p in onnx.load(str(out)).metadata_props}[ONNX_WEIGHTS_KEY]
    assert stamp == keras_weights_digest(src)  # the same weights as its .keras
    # 50 rows do not halve twice into whole rows: refused, naming the option; nothing written
    assert export.main([str(src), str(tmp_path / "bad.onnx"), "--input-hw", "50", "96"]) == 2
    assert "--input-hw 50 96" in capsys.readouterr().err and not (tmp_path / "bad.onnx").exists()
    with pytest.raises(SystemExit):
        export.main([str(tiny_model["keras"]), str(tmp_path / "bad.onnx"), "--input-hw", "0", "96"])
    keras.backend.clear_session()
