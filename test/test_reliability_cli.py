"""Command-line errors and training run folders.

Every CLI error is one line naming the bad input, exit 2 for usage errors and 1 for runtime
errors, no traceback unless ``--debug``; Ctrl-C in training exits 130 and says how to resume; a
new training run never writes into an existing run folder, a failed one leaves none behind, and
``--resume`` refuses a checkpoint that is not the model of the folder's config.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_data import train_args, write_train_config

from road_seg_perception.training import cli as train
from road_seg_perception.training.config import DEFAULTS, deep_update, parse_set

TINY = ["--set", "model.input_hw=[32,64]", "--set", "model.base_filters=4", "--set", "model.levels=2",
        "--set", "train.batch_size=4", "--set", "train.workers=1", "--set", "output.onnx=false",
        "--set", "output.samples=1"]


def _one_error_line(err: str, prog: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error:") and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A tiny CamVid-like dataset: 4 train frames (2 drives), 2 val frames, 32x64, road in the lower half."""
    root = tmp_path_factory.mktemp("camvid_cli")
    rng = np.random.default_rng(0)
    for split, names in (("train", ["0001TP_000001", "0001TP_000002", "0006R0_000001", "0006R0_000002"]),
                         ("val", ["0016E5_000001", "0016E5_000002"])):
        (root / split).mkdir()
        (root / f"{split}annot").mkdir()
        for n in names:
            cv2.imwrite(str(root / split / f"{n}.png"), rng.integers(0, 256, (32, 64, 3), dtype=np.uint8))
            label = np.full((32, 64), 1, np.uint8)
            label[16:] = 3
            cv2.imwrite(str(root / f"{split}annot" / f"{n}.png"), label)
    write_train_config(root)
    return root


pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def _args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return train_args(root, run_dir, *TINY, *extra)


# ----------------------------------------------------------------------------- 17: training settings


@pytest.mark.parametrize(("setting", "key"), [("train.batch_size=0", "train.batch_size"),
                                              ("data.positive_ids=3", "data.positive_ids"),
                                              ("augment.scale=1.0", "augment.scale"),
                                              ("train.epochs=abc", "train.epochs"),
                                              ("train.epochs=0", "train.epochs"),
                                              ("train.encoder_lr_scale=0", "train.encoder_lr_scale"),
                                              ("train.lr=-0.001", "train.lr"),
                                              ("model.input_hw=[32, x]", "model.input_hw")])
def test_bad_training_setting_is_one_line_naming_the_key(data_root, tmp_path, capsys, setting, key):
    nowhere = f"data.root={tmp_path / 'nowhere'}"  # the setting is reported before any data is read
    assert train.main(_args(data_root, tmp_path / "run", "--set", nowhere, "--set", setting)) == 2
    assert key in _one_error_line(capsys.readouterr().err, "road-seg-train")
    assert not (tmp_path / "run").exists()


def _leaves(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        out += _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(leaf=st.sampled_from([(k, v) for k, v in _leaves(DEFAULTS) if v is not None]),
       value=st.sampled_from(["abc", "3", "1.5", "[1, 2]", "{a: 1}", "true", "[]"]))
def test_any_ill_typed_setting_is_named_or_accepted(tmp_path, leaf, value):
    """Whatever a --set gives, the CLI answers with exit 0/2 and, for 2, one line naming the key."""
    key, default = leaf
    cfg_val = yaml.safe_load(value)
    try:
        train.check_settings(deep_update(DEFAULTS, parse_set(f"{key}={value}")))
    except train.SettingsError as e:
        assert key in str(e) and "\n" not in str(e)
        return
    except KeyError as e:  # a mapping where a value belongs: deep_update names the key
        assert key in str(e)
        return
    # accepted: of the default's type
    if isinstance(default, list):
        assert isinstance(cfg_val, list)
    elif isinstance(default, bool):
        assert isinstance(cfg_val, bool)
    elif isinstance(default, int | float):
        assert isinstance(cfg_val, int | float) and not isinstance(cfg_val, bool)
    else:
        assert isinstance(cfg_val, type(default))


def test_yaml_errors_name_the_file_or_the_set_item(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2\n")
    assert train.main(["--config", str(bad), "--run-dir", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys.readouterr().err, "road-seg-train")
    assert f"config file {bad}" in line and "line" in line and "<unicode string>" not in line
    assert train.main(["--config", str(bad), "--set", "train.epochs=[3"]) == 2
    assert "--set 'train.epochs=[3'" in _one_error_line(capsys.readouterr().err, "road-seg-train")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 6: run folders


def test_new_run_never_writes_into_an_existing_run_folder(data_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, text in (("model.keras", "old model"), ("config.yaml", "old: config\n"), ("metrics.json", "{}")):
        (run_dir / name).write_text(text)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert train.main(_args(data_root, run_dir, "--set", "train.epochs=1")) == 2
    line = _one_error_line(capsys.readouterr().err, "road-seg-train")
    assert f"run folder {run_dir} is not empty" in line and "--run-dir" in line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_failed_run_leaves_no_run_folder(data_root, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(train, "build_and_compile", broken)
    run_dir = tmp_path / "runs" / "r1"
    assert train.main(_args(data_root, run_dir, "--set", "train.epochs=1")) == 1
    err = capsys.readouterr().err
    assert "road-seg-train: error: RuntimeError: out of memory (run with --debug" in err
    assert "Traceback" not in err
    assert not run_dir.exists()
    assert train.main(_args(data_root, run_dir, "--set", "train.epochs=1", "--debug")) == 1
    assert "Traceback" in capsys.readouterr().err


def _interrupt_at_epoch(monkeypatch, epoch: int) -> None:
    real = train.build_callback

    def build_callback(*args, **kwargs):
        cb = real(*args, **kwargs)
        begin = cb.on_epoch_begin

        def on_epoch_begin(e, logs=None):
            if e == epoch:
                raise KeyboardInterrupt
            begin(e, logs)

        cb.on_epoch_begin = on_epoch_begin
        return cb

    monkeypatch.setattr(train, "build_callback", build_callback)


def test_ctrl_c_keeps_the_saved_epoch_says_how_to_resume_and_exits_130(data_root, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    _interrupt_at_epoch(monkeypatch, 1)
    assert train.main(_args(data_root, run_dir, "--set", "train.epochs=2")) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"road-seg-train --resume {run_dir}" in err and "epoch 1 is saved" in err
    assert json.loads((run_dir / "state.json").read_text())["epoch"] == 1
    assert (run_dir / "last.keras").is_file() and not (run_dir / "metrics.json").exists()


def test_ctrl_c_before_the_first_epoch_leaves_no_folder(data_root, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    _interrupt_at_epoch(monkeypatch, 0)
    assert train.main(_args(data_root, run_dir, "--set", "train.epochs=2")) == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert not run_dir.exists()


def test_resume_refuses_a_checkpoint_of_another_model(data_root, tmp_path, capsys):
    """A run folder whose config.yaml no longer describes its last.keras (e.g. rewritten by a later run)."""
    from road_seg_perception.training.loop import unet_config
    from road_seg_perception.training.model import build_unet

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = train.load_settings(data_root / "train.yaml", [f"data.root={data_root}", *TINY[1::2]])
    other = deep_update(cfg, {"model": {"base_filters": 8}})
    build_unet(unet_config(other)).save(run_dir / "last.keras")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    state = {"epoch": 1, "best_iou": 0.5, "best_epoch": 1, "wait": 0, "history": []}
    (run_dir / "state.json").write_text(json.dumps(state))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    keras.backend.clear_session()
    assert train.main(["--resume", str(run_dir)]) == 2
    line = _one_error_line(capsys.readouterr().err, "road-seg-train")
    assert "last.keras does not match the folder's config.yaml" in line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    # --set overrides on resume are part of "the folder's config": naming the right model is accepted up to data
    keras.backend.clear_session()
    rc = train.main(["--resume", str(run_dir), "--set", "model.base_filters=8", "--set",
                     f"data.root={tmp_path / 'nowhere'}"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 17: export, predict


def test_export_errors_are_one_line(tiny_model, tmp_path, capsys):
    from road_seg_perception.training import export

    out_dir = tmp_path / "outdir"
    out_dir.mkdir()
    assert export.main([str(tiny_model["keras"]), str(out_dir)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err, "road-seg-export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir"] and not any(out_dir.iterdir())
    assert export.main([str(tmp_path / "missing.keras"), str(tmp_path / "m.onnx")]) == 2
    assert "missing.keras" in _one_error_line(capsys.readouterr().err, "road-seg-export")
    copy = tmp_path / "copy.keras"
    copy.write_bytes(tiny_model["keras"].read_bytes())
    assert export.main([str(copy), str(tmp_path / "m.onnx"), "--keras-copy", str(copy)]) == 2
    assert "is the input model" in _one_error_line(capsys.readouterr().err, "road-seg-export")
    assert copy.read_bytes() == tiny_model["keras"].read_bytes()


def test_predict_output_dir_that_is_a_file(tmp_path, capsys):
    from road_seg_perception.tools import predict

    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "out").write_text("a file")
    assert predict.main([str(tmp_path / "x.png"), "--output-dir", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err, "road-seg-predict")
    assert f"--output-dir {tmp_path / 'out'} exists and is not a folder" in line
    assert (tmp_path / "out").read_text() == "a file"
