"""``road-seg-train`` end to end on a tiny CamVid-like dataset: smoke run, resume, transfer, bad data.

Every run trains a 32x64 U-Net with 4 base filters on 8 images (2 steps per epoch) in-process.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import yaml
from sample_data import train_args, write_train_config

from road_seg_perception.core import imageio
from road_seg_perception.core.metrics import Confusion, confusion
from road_seg_perception.core.model_io import load_keras_model
from road_seg_perception.training import cli as train
from road_seg_perception.training.data import data_stream
from road_seg_perception.training.datasets import LabelSpec, load_samples, pair_samples
from road_seg_perception.training.model import UNetConfig, build_unet, encoder_layers
from road_seg_perception.training.optimizer import moving_average

TINY = ["--set", "model.input_hw=[32,64]", "--set", "model.base_filters=4", "--set", "model.levels=2",
        "--set", "model.stem_stride=2", "--set", "train.batch_size=4", "--set", "train.workers=1",
        "--set", "output.samples=2"]
TINY_CFG = UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, stem_stride=2)
STEPS_PER_EPOCH = 2  # 8 images, batch 4
ROAD, SKY, BUILDING, VOID_ID = 3, 1, 4, 11


def _write_split(root: Path, split: str, names: list[str], seed: int) -> None:
    """64x96 frames: sky, buildings, grey road below a random horizon, a void strip at the horizon."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True)
    (root / f"{split}annot").mkdir(parents=True)
    colours = {SKY: (200, 150, 90), BUILDING: (60, 80, 120), ROAD: (110, 110, 110), VOID_ID: (0, 0, 0)}
    for n in names:
        h, w = 64, 96
        horizon = int(rng.integers(24, 40))
        ids = np.full((h, w), SKY, np.uint8)
        ids[16:horizon] = BUILDING
        ids[horizon:] = ROAD
        ids[horizon:horizon + 2, :10] = VOID_ID
        img = np.zeros((h, w, 3), np.uint8)
        for cls, bgr in colours.items():
            img[ids == cls] = bgr
        img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        assert cv2.imwrite(str(root / split / f"{n}.png"), img)
        assert cv2.imwrite(str(root / f"{split}annot" / f"{n}.png"), ids)


@pytest.fixture(scope="module")
def camvid_tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("camvid_tiny")
    _write_split(root, "train", [f"0001TP_{i:06d}" for i in range(4)] + [f"0006R0_{i:06d}" for i in range(4)], 0)
    _write_split(root, "val", ["0016E5_000001", "0016E5_000002"], 1)
    write_train_config(root)
    return root


pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def _args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return train_args(root, run_dir, *TINY, *extra)


def _val_labels(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    spec = LabelSpec()
    return load_samples(pair_samples(root / "val", root / "valannot", spec), spec)


def _weights(model, names) -> dict[str, list[np.ndarray]]:
    return {n: [np.array(w) for w in model.get_layer(n).get_weights()] for n in names}


def test_smoke_one_epoch(camvid_tiny, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main(_args(camvid_tiny, run_dir, "--set", "train.epochs=1")) == 0
    for name in ("model.keras", "model.onnx", "metrics.json", "curves.png", "samples.png", "config.yaml",
                 "versions.json", "last.keras", "state.json"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".*tmp*")), "temporary files left behind"
    # the command, quoted so that a shell runs it again as it was run
    assert shlex.split((run_dir / "command.txt").read_text()) == [
        "road-seg-train", *_args(camvid_tiny, run_dir, "--set", "train.epochs=1")]

    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["data"]["train_frames"] == 8 and m["data"]["val_frames"] == 2
    assert m["data"]["train_drives"] == ["0001TP", "0006R0"] and m["data"]["val_drives"] == ["0016E5"]
    assert m["best_epoch"] == 1 and m["epochs_run"] == 1 and m["threshold"] == 0.5 and m["input_hw"] == [32, 64]
    assert m["parameters"] > 0 and m["macs"] > 0
    assert m["onnx_max_abs_diff"] <= 1e-4
    [row] = m["history"]
    assert row["epoch"] == 1 and np.isfinite(row["loss"]) and row["loss"] > 0

    # the confusion matrix covers exactly the non-void val pixels and agrees with the scores
    (tn, fp), (fn, tp) = m["confusion_matrix"]["matrix"]
    val = _val_labels(camvid_tiny)
    assert tn + fp + fn + tp == sum(int((lab != 255).sum()) for _, lab in val)
    assert tp + fn == sum(int((lab == 1).sum()) for _, lab in val)
    c = Confusion(tp=tp, fp=fp, fn=fn, tn=tn)
    for k, v in c.scores().items():
        assert m["val"][k] == pytest.approx(v, abs=1e-5), k
        assert row[f"val_{k}"] == pytest.approx(v, abs=1e-5), k  # best epoch == the only epoch

    # an independent evaluation of the exported model.onnx at full resolution gives the same matrix
    # (up to pixels whose probability is within the export's 1e-4 of the threshold)
    from road_seg_perception.core.segmenter import RoadSegmenter

    seg = RoadSegmenter(run_dir / "model.onnx", backend="onnxruntime")
    again = sum((confusion(seg.segment(img).mask, lab) for img, lab in val), Confusion())
    total = tn + fp + fn + tp
    for a, b in zip((again.tn, again.fp, again.fn, again.tp), (tn, fp, fn, tp), strict=True):
        assert abs(a - b) <= 0.002 * total

    model = load_keras_model(run_dir / "model.keras")  # safe mode
    assert model.input_shape == (None, 32, 64, 3)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["model"]["input_hw"] == [32, 64] and cfg["train"]["epochs"] == 1
    assert cfg["data"]["root"] == str(camvid_tiny)
    versions = json.loads((run_dir / "versions.json").read_text())
    assert versions["keras"] == keras.__version__ and versions["keras_backend"] == "tensorflow"
    assert "tensorflow" in versions and "onnxruntime" in versions
    assert json.loads((run_dir / "state.json").read_text())["epoch"] == 1
    for png in ("curves.png", "samples.png"):
        im = cv2.imread(str(run_dir / png))
        assert im is not None and im.ndim == 3 and min(im.shape[:2]) > 50, png
    out = capsys.readouterr().out
    assert "dataset camvid: train 8 frames" in out and "epoch 1: loss" in out and "done:" in out


class _Interrupted(Exception):
    """Stands in for a killed process: raised after epoch 1 was saved, before epoch 2 trains."""


def test_resume_after_interruption(camvid_tiny, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    real_build_callback = train.build_callback

    def interrupting_callback(*args, **kwargs):
        cb = real_build_callback(*args, **kwargs)
        begin = cb.on_epoch_begin

        def on_epoch_begin(epoch, logs=None):
            if epoch == 1:
                raise _Interrupted
            begin(epoch, logs)

        cb.on_epoch_begin = on_epoch_begin
        return cb

    monkeypatch.setattr(train, "build_callback", interrupting_callback)
    # a failure while training is one line and exit status 1; the completed epoch stays saved
    assert train.main(_args(camvid_tiny, run_dir, "--set", "train.epochs=3", "--set", "output.onnx=false")) == 1
    assert "road-seg-train: error: _Interrupted" in capsys.readouterr().err
    monkeypatch.undo()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert not (run_dir / "metrics.json").exists()
    shutil.copy(run_dir / "last.keras", tmp_path / "epoch1.keras")
    keras.backend.clear_session()

    # resume; record the optimizer state the resumed fit starts from
    seen: dict = {}
    real_build_callback = train.build_callback

    def recording_callback(*args, **kwargs):
        cb = real_build_callback(*args, **kwargs)

        def on_train_begin(logs=None):
            seen["iterations"] = int(cb.model.optimizer.iterations.numpy())
            seen["vars"] = [np.array(v) for v in cb.model.optimizer.variables]
            seen["weights"] = [np.array(w) for w in cb.model.weights]

        cb.on_train_begin = on_train_begin
        return cb

    monkeypatch.setattr(train, "build_callback", recording_callback)
    assert train.main(["--resume", str(run_dir), "--set", "output.samples=1"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["output"]["samples"] == 1  # overrides kept

    saved = load_keras_model(tmp_path / "epoch1.keras", compile=True)
    assert seen["iterations"] == STEPS_PER_EPOCH  # the optimizer continues, it does not restart
    assert len(seen["vars"]) == len(saved.optimizer.variables) > 2  # moments, not only counters
    for got, want in zip(seen["vars"], saved.optimizer.variables, strict=True):
        np.testing.assert_array_equal(got, np.array(want))
    for got, want in zip(seen["weights"], saved.weights, strict=True):
        np.testing.assert_array_equal(got, np.array(want))

    m = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert m["history"][0] == state["history"][0]  # epoch 1 kept from the interrupted run
    assert m["epochs_run"] == 3
    last = load_keras_model(run_dir / "last.keras", compile=True)
    assert int(last.optimizer.iterations.numpy()) == 3 * STEPS_PER_EPOCH


def test_resume_without_state_fails(tmp_path, capsys):
    assert train.main(["--resume", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_freeze_without_init_fails_fast(camvid_tiny, tmp_path, capsys):
    assert train.main(_args(camvid_tiny, tmp_path / "run", "--freeze", "encoder")) == 2
    assert "--freeze encoder needs --init-from" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _source_model(path: Path) -> keras.Model:
    keras.utils.set_random_seed(7)
    src = build_unet(TINY_CFG)
    src.save(path)
    return src


def test_init_from_with_frozen_encoder(camvid_tiny, tmp_path, capsys):
    src = _source_model(tmp_path / "src.keras")
    enc_names = [lyr.name for lyr in encoder_layers(src) if lyr.weights]
    src_enc = _weights(src, enc_names)
    src_head = _weights(src, ["head"])["head"]
    n_with_weights = sum(1 for lyr in src.layers if lyr.weights)
    keras.backend.clear_session()

    run_dir = tmp_path / "run"
    rc = train.main(_args(camvid_tiny, run_dir, "--set", "train.epochs=1", "--set", "output.onnx=false",
                          "--init-from", str(tmp_path / "src.keras"), "--freeze", "encoder"))
    assert rc == 0
    out = capsys.readouterr().out
    assert f"initialised {n_with_weights} layers from {tmp_path / 'src.keras'}" in out
    assert "froze" in out
    trained = load_keras_model(run_dir / "last.keras")
    got = _weights(trained, enc_names)
    for name in enc_names:  # kernels and BatchNorm statistics alike
        for a, b in zip(got[name], src_enc[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    head = _weights(trained, ["head"])["head"]
    assert not np.array_equal(head[0], src_head[0])  # the decoder did train


class _Stop(Exception):
    """Ends a run right after the model and optimizer are built (no training needed)."""


def _first_orders(monkeypatch, camvid_tiny, tmp_path, runs: dict[str, list[str]]) -> dict[str, tuple]:
    """Start each run just far enough to see its sequence: (stream, epoch-1 order, first batch, expected orders)."""
    seen = {}
    real = train.make_sequence

    def recording(data, cfg, aug, seed, stream=0):
        seq = real(data, cfg, aug, seed, stream)
        seen["got"] = (stream, seq._order.copy(), seq[0][0],
                       data.epoch_order(np.random.default_rng([seed, 0])),
                       data.epoch_order(np.random.default_rng([seed, stream, 0])))
        return seq

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(train, "make_sequence", recording)
    monkeypatch.setattr(train, "build_and_compile", stop)
    out = {}
    for name, extra in runs.items():
        assert train.main(_args(camvid_tiny, tmp_path / name, "--set", "train.seed=3", *extra)) == 1
        out[name] = seen.pop("got")
    return out


def test_a_run_from_a_checkpoint_draws_frames_and_augmentation_afresh(camvid_tiny, tmp_path, monkeypatch, capsys):
    """Frames are drawn and augmented from (seed, epoch, item): a stage started from another run's checkpoint
    with the same seed would replay that run draw for draw, so the --init-from file's bytes join the key."""
    _source_model(tmp_path / "a.keras")
    keras.utils.set_random_seed(8)
    build_unet(TINY_CFG).save(tmp_path / "b.keras")
    keras.backend.clear_session()
    a, b = str(tmp_path / "a.keras"), str(tmp_path / "b.keras")
    got = _first_orders(monkeypatch, camvid_tiny, tmp_path, {
        "scratch": [], "from_a": ["--init-from", a], "from_a_again": ["--init-from", a], "from_b": ["--init-from", b],
        "missing": ["--init-from", str(tmp_path / "gone.keras")]})
    stream_a = data_stream(a)
    assert stream_a == int(hashlib.sha256((tmp_path / "a.keras").read_bytes()).hexdigest()[:8], 16) != 0
    assert got["scratch"][0] == 0 and got["from_a"][0] == stream_a and got["from_b"][0] == data_stream(b) != stream_a
    assert got["missing"][0] == 0  # no file, no stream (loading it is what fails, naming it)
    np.testing.assert_array_equal(got["scratch"][1], got["scratch"][3])  # without a stream: the key as it was
    np.testing.assert_array_equal(got["from_a"][1], got["from_a"][4])  # with one: (seed, stream, epoch)
    assert not np.array_equal(got["from_a"][1], got["scratch"][1])  # another order of the frames ...
    assert not np.array_equal(got["from_a"][2], got["scratch"][2])  # ... and other draws
    np.testing.assert_array_equal(got["from_a"][2], got["from_a_again"][2])  # an A/B from one file: the same draws
    assert "augmentation stream" in capsys.readouterr().out


def test_the_stream_is_kept_in_state_and_on_resume(camvid_tiny, tmp_path, monkeypatch, capsys):
    _source_model(tmp_path / "src.keras")
    keras.backend.clear_session()
    run_dir = tmp_path / "run"
    assert train.main(_args(camvid_tiny, run_dir, "--set", "train.epochs=1", "--set", "output.onnx=false",
                            "--init-from", str(tmp_path / "src.keras"))) == 0
    stream = data_stream(tmp_path / "src.keras")
    assert json.loads((run_dir / "state.json").read_text())["data_stream"] == stream
    assert f"augmentation stream {stream:08x}" in capsys.readouterr().out
    keras.backend.clear_session()
    seen = []
    real = train.make_sequence
    monkeypatch.setattr(train, "make_sequence", lambda *a: seen.append(a[4]) or real(*a))
    assert train.main(["--resume", str(run_dir), "--set", "train.epochs=2"]) == 0
    assert seen == [stream]
    assert json.loads((run_dir / "state.json").read_text())["data_stream"] == stream
    assert train.data_stream(None) == 0


@pytest.mark.parametrize(("mode", "scale"), [("scratch", 1.0), ("fine-tune", 0.1), ("feature-extraction", 1.0)])
def test_learning_rate_per_transfer_mode(camvid_tiny, tmp_path, monkeypatch, mode, scale):
    """Fine-tuning (--init-from, all trainable) starts at lr * finetune_lr_scale; the others at lr."""
    _source_model(tmp_path / "src.keras")
    keras.backend.clear_session()
    extra = {"scratch": [], "fine-tune": ["--init-from", str(tmp_path / "src.keras")],
             "feature-extraction": ["--init-from", str(tmp_path / "src.keras"), "--freeze", "encoder"]}[mode]
    seen = {}
    real = train.build_and_compile

    def capturing(*args, **kwargs):
        model, opt, loss = real(*args, **kwargs)
        seen["lr"] = float(np.asarray(opt.learning_rate))  # the schedule's value at step 0
        raise _Stop

    monkeypatch.setattr(train, "build_and_compile", capturing)
    assert train.main(_args(camvid_tiny, tmp_path / "run", "--set", "train.lr=0.004",
                            "--set", "train.finetune_lr_scale=0.1", *extra)) == 1
    assert seen["lr"] == pytest.approx(0.004 * scale, rel=1e-6)


def test_corrupt_image_is_named(camvid_tiny, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(camvid_tiny, root)
    bad = root / "train" / "0006R0_000002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run_dir = tmp_path / "run"
    assert train.main(_args(root, run_dir, "--set", "train.epochs=1")) == 2
    err = capsys.readouterr().err
    assert "road-seg-train: error:" in err and f"cannot read image {bad}" in err
    assert not (run_dir / "model.keras").exists()


def test_max_image_pixels_refuses_dataset_images_from_the_header(camvid_tiny, tmp_path, capsys, monkeypatch):
    """``--max-image-pixels`` as on road-seg-predict: a 96x64 frame over a limit of 6143 is named, not decoded."""
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda *a: pytest.fail("decoded an image over the limit"))
    run_dir = tmp_path / "run"
    assert train.main(_args(camvid_tiny, run_dir, "--max-image-pixels", "6143")) == 2
    err = capsys.readouterr().err
    assert "road-seg-train: error:" in err and "is 96x64 (6144 pixels), over the limit of 6143 pixels" in err
    assert str(camvid_tiny / "train") in err or str(camvid_tiny / "val") in err
    assert not run_dir.exists()
    assert imageio.max_image_pixels() == imageio.DEFAULT_MAX_IMAGE_PIXELS  # the process-wide limit is put back
    assert train.parse_args(["--config", "c"]).max_image_pixels == imageio.DEFAULT_MAX_IMAGE_PIXELS
    with pytest.raises(SystemExit):
        train.parse_args(["--config", "c", "--max-image-pixels", "0"])


def test_missing_data_root_and_bad_key(camvid_tiny, tmp_path, capsys):
    assert train.main(_args(camvid_tiny, tmp_path / "run", "--set", f"data.root={tmp_path / 'nowhere'}")) == 2
    assert f"data.root {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert train.main(_args(camvid_tiny, tmp_path / "run", "--set", "train.epochz=3")) == 2
    assert "unknown config key 'train.epochz'" in capsys.readouterr().err


def test_bad_model_and_augment_settings_fail_before_data_is_read(camvid_tiny, tmp_path, capsys):
    """A bad setting is reported even when the data root is missing too: it is checked first, and no run
    directory is left behind."""
    nowhere = f"data.root={tmp_path / 'nowhere'}"
    for bad, message in ((["model.input_hw=[36, 64]"], "model.input_hw (36, 64) must be positive and divisible"),
                         (["model.input_norm=batch"], "model.input_norm must be one of"),
                         (["augment.gamma=[2.0, 1.0]"], "augment.gamma must be 0 < low <= high")):
        sets = [x for b in bad for x in ("--set", b)]
        assert train.main(_args(camvid_tiny, tmp_path / "run", "--set", nowhere, *sets)) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("select", "kept"), [("", 1), ("last", 3)])
def test_checkpoint_selection_best_or_last(tmp_path, monkeypatch, select, kept):
    """``select_split: last`` keeps the final epoch even when an earlier one scored higher."""
    from types import SimpleNamespace

    from road_seg_perception.training import loop

    ious = iter([0.9, 0.5, 0.7])
    monkeypatch.setattr(loop, "score_splits", lambda *a, **k: {"a": {"iou": next(ious), "f1": 0.0,
                                                                      "precision": 0.0, "recall": 0.0}})
    saved: list[str] = []
    monkeypatch.setattr(loop, "atomic_save", lambda model, path: saved.append(path.name))
    state = {"epoch": 0, "best_iou": -1.0, "best_epoch": 0, "wait": 0, "history": []}
    cfg = {"model": {"input_hw": [32, 64]},
           "train": {"threshold": 0.5, "early_stopping_patience": 0, "select_split": select}}
    cb = loop.build_callback(tmp_path, {"a": None}, cfg, state)
    cb.set_model(SimpleNamespace(optimizer=SimpleNamespace(learning_rate=0.01), layers=[]))  # no auxiliary head
    for epoch in range(3):
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, {"loss": 0.1})
    assert state["best_epoch"] == kept and state["epoch"] == 3
    # model.keras is written at every epoch that is kept, last.keras at every epoch
    per_epoch = [["model.keras", "last.keras"], ["model.keras", "last.keras"] if select else ["last.keras"],
                 ["model.keras", "last.keras"] if select else ["last.keras"]]
    assert saved == [name for names in per_epoch for name in names]
    assert json.loads((tmp_path / "state.json").read_text())["best_epoch"] == kept


def test_done_line_names_every_split_and_their_mean():
    from road_seg_perception.training.cli import done_scores

    one = {"val": {"iou": 0.9, "f1": 0.95, "precision": 0.96, "recall": 0.94}}
    assert done_scores(one) == "val IoU 0.9000  F1 0.9500  P 0.9600  R 0.9400"
    three = {"camvid_0001TP": {"iou": 0.9262}, "camvid_val": {"iou": 0.9711}, "idd_val": {"iou": 0.9350}}
    assert done_scores(three) == "mean val IoU 0.9441  [camvid_0001TP 0.9262  camvid_val 0.9711  idd_val 0.9350]"


def test_metrics_val_pools_every_split_and_each_split_keeps_its_own_scores(tmp_path, tiny_model):
    """With several validation splits, ``val`` and the confusion matrix count all their pixels, not the first's."""
    import shutil

    from road_seg_perception.core.segmenter import PostConfig, RoadSegmenter
    from road_seg_perception.training import artifacts
    from road_seg_perception.training.data import Arrays

    shutil.copy(tiny_model["keras"], tmp_path / "model.keras")
    rng = np.random.default_rng(5)

    def split(n: int, road_from: int) -> Arrays:
        pairs = []
        for _ in range(n):
            label = np.zeros((32, 64), np.uint8)
            label[road_from:] = 1
            label[0, :5] = 255
            pairs.append((rng.integers(0, 255, (32, 64, 3), dtype=np.uint8), label))
        return Arrays(pairs, [f"f{i}" for i in range(n)])

    val = {"a": split(2, 10), "b": split(3, 20)}
    seg = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime", post=PostConfig(threshold=0.5))
    threshold = float(np.median([seg.segment(im, with_probability=True).probability for im in val["a"].images]))
    cfg = {"model": {"input_hw": [32, 64]}, "train": {"threshold": threshold}, "output": {"onnx": False, "samples": 1}}
    state = {"best_epoch": 1, "epoch": 1, "history": [{"epoch": 1, "loss": 0.5, "val_iou": 0.5, "val_f1": 0.6}]}
    m = artifacts.finish(tmp_path, cfg, val, {}, state)

    seg.post = PostConfig(threshold=threshold)
    each = {k: sum((confusion(seg.segment(im).mask, lab) for im, lab in zip(v.images, v.labels, strict=True)),
                   Confusion()) for k, v in val.items()}
    pooled = each["a"] + each["b"]
    assert 0 < pooled.tp and 0 < pooled.fp + pooled.fn  # both kinds of pixels, so the pooling shows
    total = pooled.tp + pooled.fp + pooled.fn + pooled.tn
    got = m["confusion_matrix"]["matrix"]
    assert total == sum(map(sum, got)) == sum(int((lab != 255).sum()) for v in val.values() for lab in v.labels)
    for a, b in zip([[pooled.tn, pooled.fp], [pooled.fn, pooled.tp]], got, strict=True):
        assert np.abs(np.subtract(a, b)).max() <= 0.002 * total  # Keras here, ONNX there: 1e-4 at the threshold
    assert m["val"]["iou"] == pytest.approx(pooled.iou, abs=0.005)
    for k in val:
        assert m["splits"][k]["frames"] == len(val[k])
        assert m["splits"][k]["iou"] == pytest.approx(each[k].iou, abs=0.005)
    assert m["splits"]["a"]["iou"] != pytest.approx(m["splits"]["b"]["iou"], abs=1e-3)  # the splits differ


def test_weight_averages_score_and_ship_while_last_keras_keeps_the_raw_weights(camvid_tiny, tmp_path, monkeypatch):
    """``train.ema_momentum``: model.keras holds the moving averages, last.keras the raw weights (and the averages
    in its optimizer), so that a resumed run continues the same trajectory."""
    run_dir = tmp_path / "run"
    real_build_callback = train.build_callback
    seen: dict = {}

    def recording_callback(*args, **kwargs):
        cb = real_build_callback(*args, **kwargs)
        end = cb.on_epoch_end

        def on_epoch_end(epoch, logs=None):
            end(epoch, logs)
            seen["raw"] = {v.path: np.array(v) for v in cb.model.trainable_variables}
            seen["avg"] = {v.path: np.array(moving_average(cb.model.optimizer, v))
                           for v in cb.model.trainable_variables}

        cb.on_epoch_end = on_epoch_end
        return cb

    monkeypatch.setattr(train, "build_callback", recording_callback)
    assert train.main(_args(camvid_tiny, run_dir, "--set", "train.epochs=2", "--set", "train.ema_momentum=0.5",
                            "--set", "train.select_split=last", "--set", "output.onnx=false")) == 0
    raw, avg = seen["raw"], seen["avg"]
    assert any(not np.allclose(raw[k], avg[k]) for k in raw)  # averaging changed something
    last = load_keras_model(run_dir / "last.keras", compile=True)
    assert last.optimizer.use_ema and last.optimizer.ema_momentum == 0.5
    for v in last.trainable_variables:
        np.testing.assert_array_equal(np.array(v), raw[v.path])
        np.testing.assert_array_equal(np.array(moving_average(last.optimizer, v)), avg[v.path])
    shipped = {v.path: np.array(v) for v in load_keras_model(run_dir / "model.keras").trainable_variables}
    assert shipped.keys() == avg.keys()
    for k, w in shipped.items():
        np.testing.assert_array_equal(w, avg[k])


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_ema_momentum_out_of_range_is_named(camvid_tiny, tmp_path, capsys, value):
    assert train.main(_args(camvid_tiny, tmp_path / "run", "--set", f"train.ema_momentum={value}")) == 2
    assert "train.ema_momentum must be >= 0 and < 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
