"""Model-file handling and resource limits: the file named is the file run, load-time output checks,
archive and image size limits, loads off the executor thread, reloads, memory over swaps, unknown parameters.

``docs/reliability.md`` (model files) lists the guarantees these tests hold.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from ros_helpers import as_array, image_msg, random_rgb, wait_for
from sample_data import bmp_claiming, jpeg_claiming, png_claiming

from road_seg_perception.bagio.bag import decode_image
from road_seg_perception.bagio.image_codec import ImageConversionError
from road_seg_perception.core import imageio
from road_seg_perception.core.backends import open_backend
from road_seg_perception.core.imageio import ImageReadError, check_image_file, read_rgb
from road_seg_perception.core.model_io import (
    MAX_ARCHIVE_BYTES,
    MAX_ARCHIVE_MEMBERS,
    MAX_CONFIG_BYTES,
    ONNX_WEIGHTS_KEY,
    ModelFileError,
    inspect_keras_file,
    keras_weights_digest,
    load_keras_model,
)
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.ros.model_loader import unknown_overrides
from road_seg_perception.ros.node import PARAMETERS, RoadSegNode
from road_seg_perception.tools import predict
from road_seg_perception.training.datasets import DatasetError, LabelSpec, read_label

REPO = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------- helpers


def onnx_model(path: Path, hw: tuple[int, int] = (32, 64), bias: np.ndarray | None = None,
               input_dims: list | None = None, scale: float = 1.0) -> Path:
    """A small ONNX road model: ``sigmoid(scale * mean over channels) + bias``, input ``(1, H, W, 3)``."""
    h, w = hw
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims or [1, h, w, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "h", "w", 1])
    b = np.zeros((1, max(h, 1), max(w, 1), 1), np.float32) if bias is None else bias.astype(np.float32)
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
             helper.make_node("Mul", ["m", "k"], ["mk"]),
             helper.make_node("Sigmoid", ["mk"], ["s"]),
             helper.make_node("Add", ["s", "b"], ["y"])]
    inits = [numpy_helper.from_array(np.array([3], np.int64), "axes"),
             numpy_helper.from_array(np.array(scale, np.float32), "k"), numpy_helper.from_array(b, "b")]
    model = helper.make_model(helper.make_graph(nodes, "road", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def set_onnx_digest(src: Path, dst: Path, digest: str | None) -> Path:
    """Copy an ONNX file with its weights-hash metadata set to ``digest`` (or removed)."""
    proto = onnx.load(str(src))
    kept = [p for p in proto.metadata_props if p.key != ONNX_WEIGHTS_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    if digest is not None:
        proto.metadata_props.add(key=ONNX_WEIGHTS_KEY, value=digest)
    onnx.save(proto, str(dst))
    return dst


def zip_with_declared_sizes(path: Path, members: dict[str, int]) -> Path:
    """A zip whose directory declares ``members[name]`` uncompressed bytes for tiny real members."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in members:
            zf.writestr(name, b"{}")
    data = bytearray(path.read_bytes())
    for name, size in members.items():
        raw = name.encode()
        pos = 0
        while True:
            central = data.index(b"PK\x01\x02", pos)
            if data[central + 46: central + 46 + len(raw)] == raw:
                break
            pos = central + 4
        data[central + 24: central + 28] = struct.pack("<I", min(size, 0xFFFFFFFF))
    path.write_bytes(bytes(data))
    return path


# ----------------------------------------------------------------------------- the file named is the file run


def test_export_stores_the_keras_weights_hash(tiny_model, tmp_path):
    import keras

    digest = keras_weights_digest(tiny_model["keras"])
    assert digest is not None and len(digest) == 64
    meta = onnx.load(str(tiny_model["onnx"])).metadata_props
    assert {p.key: p.value for p in meta}[ONNX_WEIGHTS_KEY] == digest
    model = keras.saving.load_model(tiny_model["keras"], compile=False)
    model.save(tmp_path / "copy.keras")  # an inference-only copy holds the same weights
    assert keras_weights_digest(tmp_path / "copy.keras") == digest
    w = model.weights[0]
    w.assign(w.numpy() + 1e-3)
    model.save(tmp_path / "changed.keras")
    assert keras_weights_digest(tmp_path / "changed.keras") != digest
    keras.backend.clear_session()


SIBLINGS = ("none", "unstamped", "other weights", "same weights")


def _model_pair(tiny_model, d: Path, sibling: str) -> Path:
    d.mkdir()
    keras_path = d / "m.keras"
    shutil.copy(tiny_model["keras"], keras_path)
    digest = {"unstamped": None, "other weights": "0" * 64,
              "same weights": keras_weights_digest(tiny_model["keras"])}
    if sibling != "none":
        set_onnx_digest(tiny_model["onnx"], d / "m.onnx", digest[sibling])
    return keras_path


@pytest.mark.parametrize("sibling", SIBLINGS)
@pytest.mark.parametrize("backend", ["auto", "keras", "onnxruntime"])
def test_backend_runs_the_named_file(tiny_model, tmp_path, sibling, backend):
    """``X.keras`` runs as Keras unless backend is auto and ``X.onnx`` carries X.keras's weights hash;
    ``X.onnx`` never runs as Keras; backend onnxruntime never runs a ``.keras`` name."""
    keras_path = _model_pair(tiny_model, tmp_path / "m", sibling)
    if backend == "onnxruntime":
        with pytest.raises(ModelFileError, match=f"{keras_path} is a .keras file; backend onnxruntime"):
            open_backend(keras_path, backend)
    else:
        b = open_backend(keras_path, backend)
        use_onnx = backend == "auto" and sibling == "same weights"
        assert (b.path, b.name.split("-")[0]) == ((keras_path.with_suffix(".onnx"), "onnxruntime") if use_onnx
                                                  else (keras_path, "keras"))
        b.close()
    if sibling != "none":
        onnx_path = keras_path.with_suffix(".onnx")
        if backend == "keras":
            with pytest.raises(ModelFileError, match=f"{onnx_path} is an ONNX file; backend keras"):
                open_backend(onnx_path, backend)
        else:
            assert open_backend(onnx_path, backend).path == onnx_path


def test_bad_keras_error_names_the_keras_file(tiny_model, tmp_path):
    """A broken ``text.keras`` beside a working (even matching-looking) ``text.onnx`` is refused, naming text.keras."""
    bad = tmp_path / "text.keras"
    bad.write_text("not a model\n")
    shutil.copy(tiny_model["onnx"], tmp_path / "text.onnx")
    with pytest.raises(ModelFileError) as e:
        RoadSegmenter(bad)
    assert str(bad) in str(e.value) and "text.onnx" not in str(e.value)


def test_segmenter_info_names_the_loaded_file(tiny_model, tmp_path):
    keras_path = _model_pair(tiny_model, tmp_path / "m", "same weights")
    info = RoadSegmenter(keras_path).info
    assert (info["model"], info["requested_model"], info["backend"]) == (
        str(keras_path.with_suffix(".onnx")), str(keras_path), "onnxruntime")
    info = RoadSegmenter(keras_path, backend="keras").info
    assert (info["model"], info["requested_model"], info["backend"]) == (
        str(keras_path), str(keras_path), "keras-tensorflow")


def test_predict_prints_the_file_it_runs(tiny_model, tmp_path, capsys):
    keras_path = _model_pair(tiny_model, tmp_path / "m", "unstamped")
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), random_rgb(20, 30, 1))
    assert predict.main(["--model", str(keras_path), "--output-dir", str(tmp_path / "out"), str(img)]) == 0
    assert f"model {keras_path} (keras-tensorflow" in capsys.readouterr().out


# ----------------------------------------------------------------------------- load-time output checks


@FAST
@given(bad=st.sampled_from([np.nan, np.inf, -np.inf]), row=st.integers(0, 31), col=st.integers(0, 63))
def test_nan_or_infinite_outputs_refused_at_load(tmp_path_factory, bad, row, col):
    bias = np.zeros((1, 32, 64, 1), np.float32)
    bias[0, row, col, 0] = bad
    path = onnx_model(tmp_path_factory.mktemp("nan") / "nan.onnx", bias=bias)
    with pytest.raises(ModelFileError, match=f"{path} gives NaN or infinite outputs on a probe frame"):
        RoadSegmenter(path)


@FAST
@given(scale=st.floats(-50, 50), offset=st.floats(-3, 3))
def test_outputs_outside_0_1_refused_and_probabilities_accepted(tmp_path_factory, scale, offset):
    path = onnx_model(tmp_path_factory.mktemp("range") / "m.onnx", bias=np.full((1, 32, 64, 1), offset), scale=scale)
    probe = 1 / (1 + np.exp(-scale * np.array([0.0, 1.0]))) + offset  # output bounds over any input in [0, 1]
    if probe.min() >= 0 and probe.max() <= 1:
        assert RoadSegmenter(path).input_hw == (32, 64)
    elif offset < -1e-3 or offset > 1 + 1e-3:  # every output is out of range
        with pytest.raises(ModelFileError, match="expected road probabilities in"):
            RoadSegmenter(path)


@FAST
@given(h=st.integers(-3, 40), w=st.integers(-3, 40))
def test_onnx_input_size_must_be_positive(tmp_path_factory, h, w):
    path = onnx_model(tmp_path_factory.mktemp("dims") / "m.onnx", hw=(max(h, 1), max(w, 1)), input_dims=[1, h, w, 3])
    if h > 0 and w > 0:
        assert RoadSegmenter(path).input_hw == (h, w)
    else:
        with pytest.raises(ModelFileError, match=f"{path} has input size .* must be fixed positive numbers"):
            RoadSegmenter(path)


@FAST
@given(cut=st.integers(1, 10**6))
def test_truncated_onnx_refused_before_loading(tiny_model, tmp_path_factory, cut):
    data = tiny_model["onnx"].read_bytes()
    path = tmp_path_factory.mktemp("cut") / "m.onnx"
    path.write_bytes(data[: cut % len(data)] or b"\x08")
    with pytest.raises(ModelFileError, match=f"{path} is not a valid ONNX model"):
        open_backend(path)


# ----------------------------------------------------------------------------- archive and path checks


@FAST
@given(config=st.integers(0, 2 * MAX_CONFIG_BYTES), weights=st.integers(0, MAX_ARCHIVE_BYTES),
       extra=st.integers(0, MAX_ARCHIVE_BYTES))
def test_archive_sizes_checked_before_reading(tmp_path_factory, config, weights, extra):
    """Declared uncompressed sizes over the limits are refused from the zip directory alone."""
    path = zip_with_declared_sizes(tmp_path_factory.mktemp("zip") / "m.keras",
                                   {"config.json": config, "model.weights.h5": weights, "assets/x": extra})
    if config > MAX_CONFIG_BYTES:
        with pytest.raises(ModelFileError, match=f"config.json unpacks to {config} bytes, over the limit"):
            inspect_keras_file(path)
    elif config + weights + extra > MAX_ARCHIVE_BYTES:
        with pytest.raises(ModelFileError, match=f"unpacks to {config + weights + extra} bytes, over the limit"):
            inspect_keras_file(path)
    else:  # within limits: read (the real members are tiny), then refused as not a model or accepted
        try:
            inspect_keras_file(path)
        except ModelFileError as e:
            assert "over the limit" not in str(e)


def test_gigabyte_config_bomb_refused_without_reading(tmp_path):
    """A 1 MB .keras whose config.json inflates to 1 GiB: refused from the directory, nothing inflated."""
    path = tmp_path / "bomb.keras"
    chunk = b" " * (1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("config.json", "w", force_zip64=True) as f:
        for _ in range(1024):
            f.write(chunk)
    assert path.stat().st_size < 2 << 20
    with pytest.raises(ModelFileError, match="config.json unpacks to 1073741824 bytes, over the limit"):
        RoadSegmenter(path, backend="keras")


def test_lying_zip_directory_reads_no_more_than_declared(tmp_path):
    """A member declaring 2 bytes that inflates to 64 MiB is read only up to its declared size (then corrupt)."""
    path = tmp_path / "liar.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", b"[" + b" " * (64 << 20))
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 24: central + 28] = struct.pack("<I", 2)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=f"{path} is corrupt"):
        inspect_keras_file(path)


def test_model_paths_that_are_not_files_say_what_they_are(tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.keras"
    folder.mkdir()
    link = tmp_path / "zero.keras"
    link.symlink_to("/dev/zero")
    for path, what in ((fifo, r"a FIFO \(named pipe\)"), (folder, "a folder"), (link, "a device")):
        for backend in ("auto", "keras", "onnxruntime"):
            with pytest.raises(ModelFileError, match=f"{path}.* is {what}, not a regular file"):
                open_backend(path, backend)
    with pytest.raises(ModelFileError, match=f"{tmp_path / 'missing.onnx'} does not exist"):
        open_backend(tmp_path / "missing.onnx")


def test_refused_keras_files_do_not_import_tensorflow(tmp_path):
    """Unsafe, oversized, corrupt and non-file .keras paths are refused before Keras/TensorFlow is imported."""
    unsafe = tmp_path / "evil.keras"
    with zipfile.ZipFile(unsafe, "w") as zf:
        zf.writestr("config.json", '{"class_name": "Lambda", "config": {"name": "evil"}, "module": "keras.layers"}')
    bomb = zip_with_declared_sizes(tmp_path / "bomb.keras", {"config.json": 2**30})
    many = tmp_path / "many.keras"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(MAX_ARCHIVE_MEMBERS + 1):
            zf.writestr(f"m{i}", b"")
    text = tmp_path / "text.keras"
    text.write_text("hello")
    (tmp_path / "dir.keras").mkdir()
    paths = [unsafe, bomb, many, text, tmp_path / "dir.keras"]
    script = textwrap.dedent(f"""
        import sys
        from road_seg_perception.core.model_io import ModelFileError
        from road_seg_perception.core.segmenter import RoadSegmenter
        for path in {[str(p) for p in paths]!r}:
            for backend in ("auto", "keras"):
                try:
                    RoadSegmenter(path, backend=backend)
                except ModelFileError as e:
                    assert path in str(e), e
                else:
                    raise SystemExit(f"{{path}} was accepted")
        print(sorted(m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ----------------------------------------------------------------------------- image pixel limits


WRITERS = {"png": png_claiming, "jpeg": jpeg_claiming, "bmp": bmp_claiming}


@FAST
@given(kind=st.sampled_from(sorted(WRITERS)), w=st.integers(1, 65_000), h=st.integers(1, 65_000),
       limit=st.integers(1, 10**8))
def test_image_files_checked_from_the_header_before_decoding(tmp_path_factory, monkeypatch, kind, w, h, limit):
    path = tmp_path_factory.mktemp("img") / f"x.{kind}"
    path.write_bytes(WRITERS[kind](w, h))
    assert imageio.image_file_size(path) == (h, w)
    if w * h > limit:
        for name in ("imread", "imdecode"):
            monkeypatch.setattr(imageio.cv2, name, lambda *a: pytest.fail("decoded an image over the limit"))
        monkeypatch.setattr(imageio, "check_jpeg_strict", lambda *a: pytest.fail("decoded an image over the limit"))
        with pytest.raises(ImageReadError, match=f"image {path} is {w}x{h} .* over the limit of {limit} pixels"):
            read_rgb(path, max_pixels=limit)
    else:
        assert check_image_file(path, limit) == (h, w)


@FAST
@given(h=st.integers(1, 40), w=st.integers(1, 40), kind=st.sampled_from([".png", ".jpg", ".bmp"]))
def test_real_images_within_the_limit_read_at_their_size(tmp_path_factory, h, w, kind):
    path = tmp_path_factory.mktemp("img") / f"x{kind}"
    cv2.imwrite(str(path), random_rgb(h, w, 3))
    assert read_rgb(path, max_pixels=h * w).shape == (h, w, 3)
    with pytest.raises(ImageReadError, match="over the limit"):
        read_rgb(path, max_pixels=h * w - 1) if h * w > 1 else read_rgb(path, max_pixels=0)


def test_process_wide_limit_and_dataset_readers(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_claiming(12_000, 12_000))
    with pytest.raises(ImageReadError, match="over the limit of 16777216 pixels"):
        read_rgb(big)  # the default limit
    small = tmp_path / "mask.png"
    cv2.imwrite(str(small), np.zeros((10, 10), np.uint8))
    try:
        imageio.set_max_image_pixels(99)
        with pytest.raises(DatasetError, match=f"cannot read mask {small} .*over the limit of 99"):
            read_label(small, LabelSpec())
    finally:
        imageio.set_max_image_pixels(imageio.DEFAULT_MAX_IMAGE_PIXELS)
    assert read_label(small, LabelSpec()).shape == (10, 10)


def test_predict_max_image_pixels(tiny_model, tmp_path, capsys):
    big, ok = tmp_path / "big.png", tmp_path / "ok.png"
    big.write_bytes(png_claiming(12_000, 12_000))
    cv2.imwrite(str(ok), random_rgb(30, 40, 2))
    out = tmp_path / "out"
    rc = predict.main(["--model", str(tiny_model["onnx"]), "--output-dir", str(out), str(big), str(ok)])
    assert rc == predict.EXIT_SOME_FAILED and (out / "ok_mask.png").is_file() and not (out / "big_mask.png").exists()
    assert f"{big}: image {big} is 12000x12000 (144000000 pixels), over the limit" in capsys.readouterr().err
    rc = predict.main(["--model", str(tiny_model["onnx"]), "--max-image-pixels", "1199",
                       "--output-dir", str(out), str(ok)])
    assert rc == predict.EXIT_SOME_FAILED and "over the limit of 1199 pixels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.parse_args(["--max-image-pixels", "0", "--output-dir", str(out), str(ok)])


def test_bag_make_and_eval_take_max_image_pixels(tmp_path):
    from road_seg_perception.bagio.bag import BagError, compressed_msg
    from road_seg_perception.tools import bag as bag_tool
    from road_seg_perception.tools import evaluate

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), random_rgb(20, 30, 1))
    with pytest.raises(BagError, match="over the limit of 599 pixels"):
        bag_tool.make_bag(images, tmp_path / "bag", max_pixels=599)
    assert bag_tool.main(["make", "--images", str(images), "--out", str(tmp_path / "bag2"),
                          "--max-image-pixels", "599"]) == 2
    assert bag_tool.make_bag(images, tmp_path / "bag3", max_pixels=600).frames == 1
    assert evaluate.parse_args(["b", "--report", "r", "--max-image-pixels", "7"]).max_image_pixels == 7
    msg = compressed_msg(random_rgb(20, 30, 1), 1, "cam")
    assert decode_image(msg, "sensor_msgs/msg/CompressedImage", 600).shape == (20, 30, 3)
    with pytest.raises(ImageConversionError, match="max_image_pixels"):
        decode_image(msg, "sensor_msgs/msg/CompressedImage", 599)


# ----------------------------------------------------------------------------- the node


def _diag(h) -> dict[str, str]:
    return dict((kv.key, kv.value) for kv in h.diagnostics[-1].values)


def test_node_diagnostics_name_the_file_loaded_and_its_backend(harness, tiny_model, tmp_path):
    keras_path = _model_pair(tiny_model, tmp_path / "u", "unstamped")
    h = harness(model=keras_path, outputs=("road_mask",))
    wait_for(lambda: h.diagnostics, what="diagnostics")
    d = _diag(h)
    assert (d["model"], d["requested_model"], d["backend"]) == (str(keras_path), str(keras_path), "keras-tensorflow")
    stamped = _model_pair(tiny_model, tmp_path / "s", "same weights")
    assert h.node.set_parameters([Parameter("model_path", value=str(stamped))])[0].successful
    assert h.node.wait_for_model(60)
    n = len(h.diagnostics)
    wait_for(lambda: len(h.diagnostics) > n, what="new diagnostics")
    d = _diag(h)
    assert (d["model"], d["requested_model"], d["backend"]) == (
        str(stamped.with_suffix(".onnx")), str(stamped), "onnxruntime")


def test_same_path_reloads_when_the_file_changed(harness, tmp_path):
    path = tmp_path / "m.onnx"
    onnx_model(path, scale=4.0)
    h = harness(model=path, reliable_input=True, outputs=("road_mask",))
    rgb = random_rgb(36, 48, 5)
    first = h.node.segmenter
    expected_old = first.segment(rgb).mask

    # unchanged file: nothing reloaded, and the node says so
    assert h.node.set_parameters([Parameter("model_path", value=str(path))])[0].successful
    assert h.node.wait_for_model(30) and h.node.segmenter is first

    # rewritten in place (same inode) with another model: reloaded
    onnx_model(tmp_path / "other.onnx", scale=-4.0)
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write((tmp_path / "other.onnx").read_bytes())
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert h.node.set_parameters([Parameter("model_path", value=str(path))])[0].successful
    assert h.node.wait_for_model(30) and h.node.segmenter is not first
    expected_new = RoadSegmenter(tmp_path / "other.onnx").segment(rgb).mask
    assert not np.array_equal(expected_new, expected_old)
    h.pub.publish(image_msg(rgb, "rgb8", 1))
    np.testing.assert_array_equal(as_array(h.mask_for(1)), expected_new)

    # replaced by a new file (os.replace): reloaded
    second = h.node.segmenter
    onnx_model(tmp_path / "third.onnx", scale=4.0)
    os.replace(tmp_path / "third.onnx", path)
    assert h.node.set_parameters([Parameter("model_path", value=str(path))])[0].successful
    assert h.node.wait_for_model(30) and h.node.segmenter is not second
    h.pub.publish(image_msg(rgb, "rgb8", 2))
    np.testing.assert_array_equal(as_array(h.mask_for(2)), expected_old)

    # model_reload forces a reload of an unchanged file
    third = h.node.segmenter
    assert h.node.set_parameters([Parameter("model_reload", value=1)])[0].successful
    assert h.node.wait_for_model(30) and h.node.segmenter is not third


def test_nan_model_refused_at_start_and_at_run_time(ctx, harness, tiny_model, tmp_path):
    bias = np.zeros((1, 32, 64, 1), np.float32)
    bias[0, 3, 4, 0] = np.nan
    nan = onnx_model(tmp_path / "nan.onnx", bias=bias)
    with pytest.raises(ModelFileError, match=f"{nan} gives NaN or infinite outputs"):
        RoadSegNode(namespace="/nan_start", context=ctx, parameter_overrides=[Parameter("model_path", value=str(nan))])
    h = harness(reliable_input=True, outputs=("road_mask",))
    old = h.node.segmenter
    result = h.node.set_parameters([Parameter("model_path", value=str(nan))])[0]
    assert result.successful  # passes the cheap checks; the load on the loader thread refuses it
    assert h.node.wait_for_model(30)
    wait_for(lambda: h.node.get_parameter("model_path").value == str(tiny_model["onnx"]),
             timeout=30, what="model_path to revert")
    assert h.node.segmenter is old
    wait_for(lambda: "NaN or infinite" in _diag(h)["model_status"] if h.diagnostics else False,
             what="diagnostics naming the failure")
    assert str(nan) in _diag(h)["model_status"] and _diag(h)["model"] == str(tiny_model["onnx"])
    rgb = random_rgb(36, 48, 9)
    h.pub.publish(image_msg(rgb, "rgb8", 1))
    np.testing.assert_array_equal(as_array(h.mask_for(1)), old.segment(rgb).mask)


def test_model_loads_off_the_executor_thread(harness, tiny_model, tmp_path):
    """While a model loads, /diagnostics keep coming and the parameter services answer; then the model swaps."""
    gate = threading.Event()
    slow = tmp_path / "slow.onnx"
    shutil.copy(tiny_model["onnx"], slow)

    def factory(**kw):
        if "slow" in str(kw["model_path"]):
            gate.wait(60)
        return RoadSegmenter(**kw)

    h = harness(factory=factory, outputs=("road_mask",))
    client = AsyncParameterClient(h.io, h.node.get_fully_qualified_name())
    assert client.wait_for_services(10)
    try:
        future = client.set_parameters([Parameter("model_path", value=str(slow))])
        wait_for(future.done, what="the parameter service to answer")
        assert future.result().results[0].successful
        n = len(h.diagnostics)
        wait_for(lambda: len(h.diagnostics) >= n + 3, what="diagnostics during the load")
        assert _diag(h)["model_status"] == f"loading {slow}" and _diag(h)["model"] == str(tiny_model["onnx"])
        got = client.get_parameters(["threshold"])
        wait_for(got.done, what="get_parameters during the load")
        assert got.result().values[0].double_value == 0.5
    finally:
        gate.set()
    assert h.node.wait_for_model(30)
    assert h.node.segmenter.info["model"] == str(slow)


SLOW_START = """
import sys, time
import road_seg_perception.ros.node as node

def slow_factory(**kw):
    print("loading", flush=True)
    time.sleep(120)

node.RoadSegmenter = slow_factory
sys.exit(node.main())
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_model_load_ends_the_node_within_2_s(ros_domain_id, tiny_model, tmp_path, sig):
    script = tmp_path / "slow_start.py"
    script.write_text(SLOW_START)
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(script), "--ros-args", "-p", f"model_path:={tiny_model['onnx']}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "loading"
        proc.send_signal(sig)
        t = time.monotonic()
        rc = proc.wait(timeout=30)
        took = time.monotonic() - t
    finally:
        proc.kill()
        proc.communicate()
    assert rc == 0 and took < 2.0, (rc, took)


ANNOUNCE_IMPORT = """
import importlib.abc, os, sys
import road_seg_perception.ros.node as node

class Announce(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["ANNOUNCE_IMPORT"]:
            print(f"importing {name}", flush=True)
        return None

sys.meta_path.insert(0, Announce())
sys.exit(node.main())
"""


@pytest.mark.parametrize("module, sig, rc", [
    ("ml_dtypes._ml_dtypes_ext", signal.SIGTERM, -signal.SIGTERM),  # its initialisation holds the lock: default action
    ("ml_dtypes._ml_dtypes_ext", signal.SIGINT, -signal.SIGINT),
    ("tensorflow", signal.SIGTERM, 0),  # as its native libraries load (seconds to exit while they held the lock)
    ("keras", signal.SIGTERM, 0),  # TensorFlow's Python import, its libraries already loaded: clean exit
])
def test_signal_during_the_first_tensorflow_import_ends_the_node_within_2_s(ros_domain_id, tiny_model, tmp_path,
                                                                            module, sig, rc):
    """A real ``.keras`` start-up load in a fresh process, signalled as the import reaches ``module``."""
    model = Path(shutil.copy(tiny_model["keras"], tmp_path / "m.keras"))  # no .onnx sibling: Keras must load
    script = tmp_path / "announce.py"
    script.write_text(ANNOUNCE_IMPORT)
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
               KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", ANNOUNCE_IMPORT=module)
    proc = subprocess.Popen([sys.executable, str(script), "--ros-args", "-p", f"model_path:={model}",
                             "-p", "backend:=keras"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killer = threading.Timer(300, proc.kill)
    killer.start()
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == f"importing {module}":
                proc.send_signal(sig)
                t = time.monotonic()
                break
        else:
            pytest.fail("the node never imported " + module + ":\n" + "".join(lines[-20:]))
        got = proc.wait(timeout=30)
        took = time.monotonic() - t
        out = "".join(lines) + proc.stdout.read()
    finally:
        killer.cancel()
        proc.kill()
        proc.communicate()
    assert (got, "Traceback" in out) == (rc, False), out[-3000:]
    assert took < 2.0, (took, out[-3000:])


SIGNAL_WINDOW = """
import os, signal, sys, time
from road_seg_perception.core import native_import

got = []
for sig in native_import.STOP_SIGNALS:
    signal.signal(sig, lambda s, f: got.append(s))
sig = getattr(signal, sys.argv[2])
if sys.argv[1] == "inside":
    native_import.import_with_default_stop_signals("signal_myself")
    print("survived", flush=True)
else:
    native_import.import_with_default_stop_signals("json")
    os.kill(os.getpid(), sig)
    time.sleep(0.2)
    print("handled", got, flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_stop_signals_take_their_default_action_only_inside_the_window(tmp_path, sig):
    """Inside ``import_with_default_stop_signals`` a signal ends the process; after it the handler is back."""
    (tmp_path / "signal_myself.py").write_text(
        f"import os, signal, time\nos.kill(os.getpid(), signal.{sig})\ntime.sleep(5)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    inside = subprocess.run([sys.executable, "-c", SIGNAL_WINDOW, "inside", sig], capture_output=True, text=True,
                            env=env, timeout=60)
    assert (inside.returncode, inside.stdout) == (-getattr(signal, sig), ""), inside.stderr[-2000:]
    after = subprocess.run([sys.executable, "-c", SIGNAL_WINDOW, "after", sig], capture_output=True, text=True,
                           env=env, timeout=60)
    assert (after.returncode, after.stdout.strip()) == (0, f"handled [{int(getattr(signal, sig))}]"), after.stderr


@FAST
@given(name=st.sampled_from(sorted(PARAMETERS)), cut=st.integers(0, 40))
def test_misspelt_override_names_the_closest_parameter(name, cut):
    misspelt = name[: cut % len(name)] + name[cut % len(name) + 1:]  # one letter dropped
    lines = unknown_overrides([misspelt, name, "use_sim_time"], [*PARAMETERS, "use_sim_time"])
    if misspelt in PARAMETERS:
        assert lines == []
    else:
        assert len(lines) == 1 and f"{misspelt!r}" in lines[0] and "is not a parameter of this node" in lines[0]
        assert "did you mean" in lines[0]


def test_node_warns_about_unknown_overrides(ros_domain_id, tmp_path, tiny_model):
    params = tmp_path / "params.yaml"
    params.write_text(textwrap.dedent(f"""
        road_seg_node:
          ros__parameters:
            model_path: {tiny_model['onnx']}
            treshold: 0.3
            proces_every_n: 2
    """))
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "road_seg_perception.ros.node", "--ros-args", "--params-file",
                             str(params)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    killer = threading.Timer(60, proc.kill)  # the warnings come at the end of start-up, or never
    killer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if "'treshold'" in line:  # the last of the sorted warnings
                break
        proc.send_signal(signal.SIGINT)
        lines += proc.communicate(timeout=30)[0].splitlines()
    finally:
        killer.cancel()
        proc.kill()
    text = "".join(lines)
    assert "'treshold' from the parameter overrides" in text and "did you mean 'threshold'?" in text
    assert "'proces_every_n' from the parameter overrides" in text and "did you mean 'process_every_n'?" in text
    assert "'model_path' from the parameter overrides" not in text


@pytest.mark.slow
def test_keras_swaps_do_not_grow_memory(harness, shipped_model, tmp_path):
    """20 swaps between two .keras files: resident memory grows by less than a quarter of the model's weights
    a swap (a node that kept every retired model would grow by at least the weights' size each time).

    Growth is the median resident size of the last 5 swaps minus that of the first 5: a single reading
    moves by +-20 MB from one swap to the next while the trend is flat (the allocator returns and takes
    back whole arenas), so comparing two single readings would fail on noise."""
    import psutil

    a, b = tmp_path / "a.keras", tmp_path / "b.keras"
    shutil.copy(shipped_model.with_suffix(".keras"), a)
    shutil.copy(a, b)
    h = harness(model=a, params={"backend": "keras"}, outputs=("road_mask",))
    proc = psutil.Process()

    def swap(i: int) -> None:
        assert h.node.set_parameters([Parameter("model_path", value=str(b if i % 2 == 0 else a))])[0].successful
        assert h.node.wait_for_model(120)
        wait_for(lambda: not h.node._retired, what="the old model to be freed")

    for i in range(8):  # resident size climbs over the first ~10 swaps (allocator arenas), then stays level
        swap(i)
    rss = []
    for i in range(20):
        swap(i)
        rss.append(proc.memory_info().rss / 2**20)
    growth_mb = float(np.median(rss[-5:]) - np.median(rss[:5]))
    weights_mb = sum(int(np.prod(w.shape)) * 4 for w in load_keras_model(a).weights) / 2**20
    limit_mb = max(20.0, 15 * weights_mb / 4)  # the medians are 15 swaps apart
    assert growth_mb < limit_mb, (f"resident memory grew {growth_mb:.1f} MB over 15 swaps (limit {limit_mb:.1f} MB; "
                                  f"MB after each swap: {[round(r) for r in rss]})")
