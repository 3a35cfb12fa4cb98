"""Reliability checks: safe model loading through the node, no pickle/eval/exec in the
package, atomic saves, training killed with SIGKILL mid-epoch, stale-camera timing, compressed-image bombs.

What the other test files already cover is listed in ``RELIABILITY.md``.
"""

from __future__ import annotations

import array
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.parameter import Parameter
from ros_helpers import as_array, header, image_msg, random_rgb, wait_for
from sample_data import jpeg_claiming, png_claiming
from sensor_msgs.msg import CompressedImage

from road_seg_perception.bagio.image_codec import ImageConversionError, compressed_header
from road_seg_perception.core import fileio
from road_seg_perception.core.model_io import ModelFileError, inspect_keras_file, load_keras_model
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.ros.node import RoadSegNode
from road_seg_perception.ros.replay import message_class
from road_seg_perception.training import cli as train

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- no pickle, eval or exec


FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve",
                     "jsonpickle"}
FORBIDDEN_BUILTINS = {"eval", "exec", "compile"}
FORBIDDEN_ATTRS = {"read_pickle", "unsafe_load", "full_load", "unsafe_load_all", "full_load_all",
                   "enable_unsafe_deserialization"}


def unsafe_constructs(source: str, filename: str = "<source>") -> list[str]:
    """Code-executing deserialisation and dynamic evaluation in ``source``: one line per finding."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in FORBIDDEN_BUILTINS:
                found.append(f"{where}: {f.id}()")
            elif isinstance(f, ast.Attribute):
                owner = f.value.id if isinstance(f.value, ast.Name) else ""
                if f.attr in FORBIDDEN_ATTRS or (owner, f.attr) in {("yaml", "load"), ("yaml", "load_all"),
                                                                    ("torch", "load"), ("builtins", "eval"),
                                                                    ("builtins", "exec")}:
                    found.append(f"{where}: {owner + '.' if owner else ''}{f.attr}()")
            for kw in node.keywords:
                if isinstance(kw.value, ast.Constant) and (kw.arg, kw.value.value) in {("allow_pickle", True),
                                                                                        ("safe_mode", False)}:
                    found.append(f"{where}: {kw.arg}={kw.value.value}")
    return found


def test_unsafe_construct_scanner_finds_each_kind():
    bad = textwrap.dedent("""
        import pickle, os
        from cloudpickle import loads
        import joblib.numpy_pickle
        eval("1")
        exec("x = 1")
        compile("1", "f", "eval")
        yaml.load(text)
        yaml.unsafe_load(text)
        torch.load(path)
        pd.read_pickle(path)
        np.load(path, allow_pickle=True)
        keras.saving.load_model(path, safe_mode=False)
        keras.config.enable_unsafe_deserialization()
    """)
    assert len(unsafe_constructs(bad)) == 13, unsafe_constructs(bad)
    ok = textwrap.dedent("""
        import re, yaml, json
        re.compile("x")
        model.compile(optimizer="adam")
        yaml.safe_load(text)
        np.load(path)
        keras.saving.load_model(path, safe_mode=not allow_unsafe)
        "pickle eval( exec("
    """)
    assert unsafe_constructs(ok) == []


def test_no_pickle_eval_or_exec_in_the_package():
    """The package, launch files and tools never unpickle, eval or exec (AST scan, not a text grep)."""
    files = [*sorted((REPO / "road_seg_perception").rglob("*.py")), *sorted((REPO / "launch").glob("*.py")),
             *sorted((REPO / "bench").glob("*.py")), REPO / "setup.py"]
    assert len(files) > 20
    found = [f for p in files for f in unsafe_constructs(p.read_text(), str(p.relative_to(REPO)))]
    assert found == []


# ----------------------------------------------------------------------------- unsafe .keras files


def _lambda_segmenter(path: Path) -> Path:
    """A working road model (32x64 input, sigmoid output) that ends in a Lambda layer."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((32, 64, 3))
    x = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="head")(inp)
    out = keras.layers.Lambda(lambda t: 1.0 - t, name="invert")(x)
    keras.Model(inp, out).save(path)
    return path


def _with_member(src: Path, dst: Path, name: str, data: bytes) -> Path:
    shutil.copy(src, dst)
    with zipfile.ZipFile(dst, "a") as zf:
        zf.writestr(name, data)
    return dst


@pytest.mark.parametrize("member", ["assets/state.pkl", "extra.pickle", "arrays/x.npy"])
def test_keras_archive_with_pickle_member_refused(tiny_model, tmp_path, member):
    # the opening bytes of a protocol-4 pickle; nothing here ever unpickles it
    path = _with_member(tiny_model["keras"], tmp_path / "m.keras", member, b"\x80\x04\x95\x05\x00\x00\x00\x00")
    assert inspect_keras_file(path) == [f"archive member {member} may hold pickled data"]
    with pytest.raises(ModelFileError) as e:
        load_keras_model(path)
    assert str(path) in str(e.value) and "refused" in str(e.value) and "allow_unsafe_model" in str(e.value)


def test_lookalike_keras_module_is_custom_code(tmp_path):
    """Only the ``keras`` package itself is trusted: ``keras_evil`` or ``kerasx`` are custom code."""
    path = tmp_path / "lookalike.keras"
    layers = [{"module": m, "class_name": "Dense", "config": {"name": f"l{i}"}}
              for i, m in enumerate(["keras_evil.layers", "kerasx", "keras.layers", "keras"])]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps({"module": "keras", "class_name": "Functional",
                                               "config": {"layers": layers}}))
    assert inspect_keras_file(path) == ["class 'Dense' from module 'keras_evil.layers' is custom code",
                                        "class 'Dense' from module 'kerasx' is custom code"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10**6), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                  max_size=8))
def test_corrupt_keras_archives_raise_model_file_error_only(tiny_model, tmp_path_factory, cut, flips):
    """Truncated or byte-flipped .keras files load or raise ModelFileError naming the file, never another
    exception (zlib, unicode, recursion errors included)."""
    data = bytearray(tiny_model["keras"].read_bytes())
    data = data[: max(1, cut % (len(data) + 1))]
    for i, v in flips:
        data[i % len(data)] = v
    path = tmp_path_factory.mktemp("corrupt") / "m.keras"
    path.write_bytes(bytes(data))
    try:
        if inspect_keras_file(path) == []:
            load_keras_model(path)
    except ModelFileError as e:
        assert str(path) in str(e)


@pytest.mark.parametrize("config", [b"\xff\xfe\x00\xd8", b"[" * 100_000, b'{"a": "\xff"}'],
                         ids=["utf-16 garbage", "nested 100k deep", "invalid utf-8"])
def test_unparseable_config_named(tmp_path, config):
    path = tmp_path / "bad.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", config)
    with pytest.raises(ModelFileError, match=f"{path} is corrupt"):
        load_keras_model(path)


def test_node_refuses_unsafe_keras_unless_allowed(ctx, harness, tiny_model, tmp_path):
    """The node parameter path: start-up refused with the reason, run-time change refused, both allowed
    only with ``allow_unsafe_model: true``; the allowance cannot be dropped while an unsafe model serves."""
    lam = _lambda_segmenter(tmp_path / "lam.keras")
    params = [Parameter("model_path", value=str(lam)), Parameter("backend", value="keras")]
    with pytest.raises(ModelFileError) as e:
        RoadSegNode(namespace="/unsafe_start", context=ctx, parameter_overrides=params)
    assert str(lam) in str(e.value) and "Lambda layer (invert)" in str(e.value)
    assert "allow_unsafe_model" in str(e.value)

    rgb = random_rgb(36, 48, 21)
    expected = RoadSegmenter(lam, backend="keras", allow_unsafe=True).segment(rgb).mask
    h = harness(reliable_input=True, model=lam, params={"backend": "keras", "allow_unsafe_model": True})
    h.pub.publish(image_msg(rgb, "rgb8", 1))
    np.testing.assert_array_equal(as_array(h.mask_for(1)), expected)

    h = harness(reliable_input=True)  # safe tiny ONNX model
    safe = h.node.segmenter
    result = h.node.set_parameters_atomically(params)
    assert not result.successful
    assert str(lam) in result.reason and "Lambda layer (invert)" in result.reason
    assert "allow_unsafe_model" in result.reason
    assert h.node.segmenter is safe and h.node.get_parameter("model_path").value == str(tiny_model["onnx"])
    assert h.node.set_parameters_atomically([*params, Parameter("allow_unsafe_model", value=True)]).successful
    assert h.node.wait_for_model(60)
    assert h.node.segmenter is not safe and h.node.segmenter.info["model"] == str(lam)
    h.pub.publish(image_msg(rgb, "rgb8", 2))
    np.testing.assert_array_equal(as_array(h.mask_for(2)), expected)
    unsafe = h.node.segmenter
    result = h.node.set_parameters([Parameter("allow_unsafe_model", value=False)])[0]
    assert not result.successful and "Lambda layer (invert)" in result.reason
    assert h.node.get_parameter("allow_unsafe_model").value is True and h.node.segmenter is unsafe


def test_node_refuses_truncated_models_at_run_time(harness, tiny_model, tmp_path):
    """Half-written .onnx and .keras files (as a crashed copy leaves them) are refused; the old model serves."""
    h = harness(reliable_input=True)
    old = h.node.segmenter
    rgb = random_rgb(30, 40, 4)
    for src, backend in ((tiny_model["onnx"], "onnxruntime"), (tiny_model["keras"], "keras")):
        cut = tmp_path / f"half{src.suffix}"
        cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
        result = h.node.set_parameters_atomically([Parameter("model_path", value=str(cut)),
                                                   Parameter("backend", value=backend)])
        assert not result.successful and str(cut) in result.reason, result.reason
        assert h.node.segmenter is old
    h.pub.publish(image_msg(rgb, "rgb8", 3))
    np.testing.assert_array_equal(as_array(h.mask_for(3)), old.segment(rgb).mask)


# ----------------------------------------------------------------------------- bag message types


def test_bag_message_type_cannot_import_arbitrary_modules(tmp_path, monkeypatch):
    """A bag names its message types; replaying it must not import (run) a module that is not a message package."""
    marker = tmp_path / "imported"
    (tmp_path / "probe_module.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "probe_pkg").mkdir()
    (tmp_path / "probe_pkg" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for msgtype in ("probe_module/msg/X", "probe_pkg/msg/X", "probe_pkg/srv/X", "os/path/join", "a/b"):
        with pytest.raises(RuntimeError, match="not available"):
            message_class(msgtype)
    assert not marker.exists(), "a module named by a message type was imported"
    assert message_class("sensor_msgs/msg/Image").__name__ == "Image"


# ----------------------------------------------------------------------------- atomic saves


def test_atomic_save_failure_leaves_previous_model_intact(tmp_path, monkeypatch):
    from road_seg_perception.training.model import UNetConfig, build_unet

    keras.utils.set_random_seed(1)
    model = build_unet(UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, dropout=0.0))
    target = tmp_path / "model.keras"
    fileio.atomic_save(model, target)
    good = target.read_bytes()
    before = [np.array(w) for w in model.weights]
    for w in model.weights:
        w.assign(w + 1.0)
    real_save = type(model).save

    def save_then_crash(self, filepath, *args, **kwargs):
        real_save(self, filepath, *args, **kwargs)
        data = Path(filepath).read_bytes()
        Path(filepath).write_bytes(data[: len(data) // 2])  # half-written, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(model), "save", save_then_crash)
    with pytest.raises(OSError, match="No space left"):
        fileio.atomic_save(model, target)
    monkeypatch.undo()
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"], "a temp file was left behind"
    loaded = load_keras_model(target)
    for got, want in zip(loaded.weights, before, strict=True):
        np.testing.assert_array_equal(np.array(got), want)

    state = tmp_path / "state.json"
    fileio.atomic_write_text(state, '{"epoch": 1}')

    def write_then_crash(self, text, *args, **kwargs):
        Path.write_bytes(self, text.encode()[:5])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", write_then_crash)
    with pytest.raises(OSError):
        fileio.atomic_write_text(state, '{"epoch": 2}')
    monkeypatch.undo()
    assert json.loads(state.read_text()) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "state.json"]


# ----------------------------------------------------------------------------- training killed mid-epoch


def _tiny_camvid(root: Path) -> Path:
    """8 train frames (two drives) and 2 val frames, 64x96, CamVid ids: sky 1, building 4, road 3."""
    rng = np.random.default_rng(5)
    for split, names in (("train", [f"0001TP_{i:06d}" for i in range(4)] + [f"0006R0_{i:06d}" for i in range(4)]),
                         ("val", ["0016E5_000001", "0016E5_000002"])):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for n in names:
            horizon = int(rng.integers(24, 40))
            ids = np.full((64, 96), 1, np.uint8)
            ids[16:horizon] = 4
            ids[horizon:] = 3
            img = np.select([ids[..., None] == 1, ids[..., None] == 4], [np.array([200, 150, 90]),
                                                                          np.array([60, 80, 120])], 110)
            img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
            assert cv2.imwrite(str(root / split / f"{n}.png"), img)
            assert cv2.imwrite(str(root / f"{split}annot" / f"{n}.png"), ids)
    return root


#: Runs ``road-seg-train`` and, once epoch 2 has trained its first batch, says so and waits to be killed.
_KILLABLE_TRAIN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from road_seg_perception.training import cli as train

    marker, argv = Path(sys.argv[1]), sys.argv[2:]
    real_build_callback = train.build_callback

    def build_callback(*args, **kwargs):
        cb = real_build_callback(*args, **kwargs)
        epoch = [-1]
        epoch_begin = cb.on_epoch_begin

        def on_epoch_begin(e, logs=None):
            epoch[0] = e
            epoch_begin(e, logs)

        def on_train_batch_begin(batch, logs=None):
            if epoch[0] == 1 and batch == 1:
                marker.write_text("mid-epoch 2")
                time.sleep(600)

        cb.on_epoch_begin = on_epoch_begin
        cb.on_train_batch_begin = on_train_batch_begin
        return cb

    train.build_callback = build_callback
    sys.exit(train.main(argv))
""")


def test_training_sigkilled_mid_epoch_resumes(tmp_path):
    """``road-seg-train`` SIGKILLed in the middle of epoch 2 resumes with ``--resume`` from epoch 1's state."""
    root = _tiny_camvid(tmp_path / "data")
    run_dir = tmp_path / "run"
    marker = tmp_path / "mid_epoch"
    args = ["--config", "config/train_camvid.yaml", "--run-dir", str(run_dir), "--set", f"data.root={root}",
            "--set", "model.input_hw=[32,64]", "--set", "model.base_filters=4", "--set", "model.levels=2",
            "--set", "train.batch_size=4", "--set", "train.workers=1", "--set", "train.epochs=2",
            "--set", "output.onnx=false", "--set", "output.samples=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "train.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _KILLABLE_TRAIN, str(marker), *args], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            end = time.monotonic() + 300
            while not marker.exists() and proc.poll() is None and time.monotonic() < end:
                time.sleep(0.1)
            assert marker.exists(), f"training never reached epoch 2:\n{log_path.read_text()[-3000:]}"
            state = json.loads((run_dir / "state.json").read_text())
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert state["epoch"] == 1 and [h["epoch"] for h in state["history"]] == [1]
    assert "epoch 1: loss" in log_path.read_text() and "epoch 2: loss" not in log_path.read_text()
    assert not (run_dir / "metrics.json").exists()

    keras.backend.clear_session()
    assert train.main(["--resume", str(run_dir)]) == 0
    keras.backend.clear_session()
    m = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2] and m["epochs_run"] == 2
    assert m["history"][0] == state["history"][0]  # epoch 1 as the killed run recorded it
    last = load_keras_model(run_dir / "last.keras", compile=True)
    assert int(last.optimizer.iterations.numpy()) == 2 * 2  # 2 steps per epoch: epoch 2 redone from its start
    load_keras_model(run_dir / "model.keras")
    assert not list(run_dir.glob(".*tmp*"))


# ----------------------------------------------------------------------------- camera stops and returns


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_stale_camera_warns_exactly_after_timeout_and_recovers(harness):
    """WARN iff no image for more than stale_timeout_s, in every published status; back to OK with frames."""
    timeout = 1.0
    h = harness(params={"stale_timeout_s": timeout}, diagnostics_period_s=0.1)
    stop = threading.Event()

    def camera() -> None:
        i = 0
        while not stop.is_set():
            h.pub.publish(image_msg(random_rgb(24, 32, i), "rgb8", 100 + i))
            i += 1
            time.sleep(0.05)

    def ok_with_frames(since: int) -> bool:
        return any(s.level == DiagnosticStatus.OK and int(_values(s)["frames_processed"]) > 0
                   for s in h.diagnostics[since:])

    for _ in range(2):  # camera runs, stops, runs again, stops again
        stop.clear()
        t = threading.Thread(target=camera)
        t.start()
        try:
            n = len(h.diagnostics)
            wait_for(lambda n=n: ok_with_frames(n), 15, "OK while frames arrive")
        finally:
            stop.set()
            t.join()
        n = len(h.diagnostics)
        wait_for(lambda n=n: any(s.level == DiagnosticStatus.WARN for s in h.diagnostics[n:]), timeout + 10,
                 "WARN after the camera stopped")
        first_warn = next(s for s in h.diagnostics[n:] if s.level == DiagnosticStatus.WARN)
        # published within one diagnostics period (0.1 s) of the timeout; 2 s of slack for a loaded machine
        assert timeout <= float(_values(first_warn)["seconds_since_last_image"]) + 0.01 <= timeout + 2.0
        assert "no image on" in first_warn.message
    statuses = list(h.diagnostics)
    assert len(statuses) > 20
    for s in statuses:  # the rule holds in every status published, OK and WARN alike
        since = float(_values(s)["seconds_since_last_image"])
        if s.level == DiagnosticStatus.WARN:
            assert since >= timeout - 0.01, (s.message, since)
        else:
            assert s.level == DiagnosticStatus.OK and since <= timeout + 0.01, (s.level, s.message, since)


def test_stale_camera_reported_at_the_timeout_not_at_the_next_tick(harness):
    """With a 5 s diagnostics period, WARN still comes right after stale_timeout_s (the 0.1 s watchdog)."""
    timeout = 0.5
    h = harness(params={"stale_timeout_s": timeout}, diagnostics_period_s=5.0)
    for i in range(3):
        h.pub.publish(image_msg(random_rgb(24, 32, i), "rgb8", 100 + i))
        time.sleep(0.05)
    wait_for(lambda: any(s.level == DiagnosticStatus.WARN for s in h.diagnostics), 4.0, "WARN well before 5 s")
    first_warn = next(s for s in h.diagnostics if s.level == DiagnosticStatus.WARN)
    # 0.1 s watchdog period; 1 s of slack for a loaded machine, still far below the 5 s period
    assert timeout - 0.01 <= float(_values(first_warn)["seconds_since_last_image"]) <= timeout + 1.0


# ----------------------------------------------------------------------------- decompression bombs


@pytest.mark.parametrize("data", [png_claiming(60_000, 60_000), png_claiming(1, 2**31 - 1),
                                  jpeg_claiming(65_000, 65_000)], ids=["png 60k", "png 2^31 rows", "jpeg 65k"])
def test_compressed_bombs_refused_from_the_header(harness, data):
    """A small compressed image whose header claims a huge size is a counted drop: never decoded."""
    msg = CompressedImage(header=header(1), format="png", data=array.array("B", data))
    with pytest.raises(ImageConversionError, match="max_image_pixels"):
        compressed_header(msg)
    h = harness(compressed=True, outputs=("road_mask",))
    before = h.counts()
    h.node._on_compressed(msg)  # the subscription callback: refused before it reaches the worker
    after = h.counts()
    assert (after.received - before.received, after.bad - before.bad, after.pending) == (1, 1, 0)
    assert "max_image_pixels" in h.node._last_bad_reason
