"""Weight soups (road-seg-soup): the mean of every variable, batch-norm statistics included; other networks refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from road_seg_perception.core.cli_errors import EXIT_USAGE
from road_seg_perception.core.model_io import load_keras_model
from road_seg_perception.training.soup import average_weights, main, read_record, record_models

pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def small_net(seed: int, filters: int = 3):
    """A named conv + batch-norm + head network whose every variable (BN statistics too) is drawn from ``seed``."""
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(filters, 3, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    out = keras.layers.Conv2D(1, 1, name="head")(x)
    model = keras.Model(inp, out, name="net")
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def save_nets(tmp_path, seeds, filters=3):
    paths = []
    for s in seeds:
        p = tmp_path / f"net{s}.keras"
        small_net(s, filters).save(p)
        paths.append(p)
    return paths


def test_soup_is_the_mean_of_every_variable(tmp_path):
    paths = save_nets(tmp_path, [1, 2, 3])
    weights = [load_keras_model(p).get_weights() for p in paths]
    out = tmp_path / "soup.keras"
    assert main([str(out), *map(str, paths)]) == 0
    soup = load_keras_model(out)
    names = [w.path for w in soup.weights]
    assert "bn/moving_mean" in names and "bn/moving_variance" in names  # statistics are averaged too
    for i, got in enumerate(soup.get_weights()):
        want = (weights[0][i] + weights[1][i] + weights[2][i]) / 3
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert not np.allclose(got, weights[0][i])
    # the soup's output is its own network's output, not any input's
    x = np.random.default_rng(0).random((1, 8, 8, 3), dtype=np.float32)
    first = np.asarray(load_keras_model(paths[0])(x))
    assert not np.allclose(np.asarray(soup(x)), first)
    # its record names the inputs (from the soup's folder) and the command, which the model card reads
    assert read_record(out) == {"models": ["net1.keras", "net2.keras", "net3.keras"],
                                "command": f"road-seg-soup {out} {paths[0]} {paths[1]} {paths[2]}"}
    assert (tmp_path / "soup.soup.json").is_file() and read_record(paths[0]) is None


def test_soup_record_holds_from_any_folder_and_a_bad_one_is_named(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "soup").mkdir(parents=True)
    paths = save_nets(runs, [1, 2])
    monkeypatch.chdir(runs)  # inputs given from one folder ...
    assert main(["soup/model.keras", "net1.keras", "net2.keras"]) == 0
    assert read_record(runs / "soup" / "model.keras")["models"] == ["../net1.keras", "../net2.keras"]
    monkeypatch.chdir(tmp_path)  # ... read from another
    assert record_models(Path("runs/soup/model.keras")) == [Path("runs/net1.keras"), Path("runs/net2.keras")]
    assert all(p.exists() for p in record_models(Path("runs/soup/model.keras"))) and len(paths) == 2
    (runs / "soup" / "model.soup.json").write_text('{"models": "net1.keras"}')
    with pytest.raises(ValueError, match="model.soup.json is not one road-seg-soup writes"):
        read_record(runs / "soup" / "model.keras")


def test_soup_of_one_model_twice_is_that_model(tmp_path):
    (p,) = save_nets(tmp_path, [5])
    out = tmp_path / "same.keras"
    assert main([str(out), str(p), str(p)]) == 0
    for a, b in zip(load_keras_model(out).get_weights(), load_keras_model(p).get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7)


def test_other_network_is_refused_with_its_name(tmp_path, capsys):
    (a,) = save_nets(tmp_path, [1])
    b = tmp_path / "wide.keras"
    small_net(2, filters=4).save(b)
    out = tmp_path / "soup.keras"
    assert main([str(out), str(a), str(b)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "wide.keras is not the same network as" in err and "conv/kernel (3, 3, 3, 4)" in err
    assert not out.exists()
    with pytest.raises(ValueError, match="at least two models, got 1"):
        average_weights([load_keras_model(a)])


@pytest.mark.parametrize("case", ["one input", "output is an input", "not .keras", "no folder"])
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys, case):
    a, b = save_nets(tmp_path, [1, 2])
    before = a.read_bytes()
    out = {"one input": tmp_path / "o.keras", "output is an input": a, "not .keras": tmp_path / "o.onnx",
           "no folder": tmp_path / "missing" / "o.keras"}[case]
    args = [str(out), str(a)] if case == "one input" else [str(out), str(a), str(b)]
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("road-seg-soup: error: ")
    want = {"one input": "at least two models, got 1", "output is an input": "is one of the input models",
            "not .keras": "must end in .keras", "no folder": "existing folder"}[case]
    assert want in err
    assert a.read_bytes() == before
    assert not (tmp_path / "o.keras").exists() and not (tmp_path / "o.onnx").exists()
    assert not list(tmp_path.rglob("*.soup.json"))
