"""ONNX Runtime backend settings and the segment timer's pacing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from road_seg_perception.core.backends import SPINNING_MODES, OnnxBackend, resolve_model_files
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.core.timing import time_segmenter


@pytest.mark.parametrize(("mode", "allow", "force_stop"), [("run", "1", "1"), ("off", "0", ""), ("always", "1", "")])
def test_spinning_modes_set_the_session_entries(tiny_model, mode, allow, force_stop):
    backend = OnnxBackend(tiny_model["onnx"], device="cpu", spinning=mode)
    opts = backend.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == allow
    if force_stop:
        assert opts.get_session_config_entry("session.force_spinning_stop") == force_stop
    else:
        with pytest.raises(Exception):  # noqa: B017 - onnxruntime raises its own error type for a missing key
            opts.get_session_config_entry("session.force_spinning_stop")
    probs = backend.infer(np.zeros((1, *backend.input_hw, 3), np.float32))
    assert probs.shape == (1, *backend.input_hw) and np.all((probs >= 0) & (probs <= 1))


def test_default_threads_do_not_spin(tiny_model):
    assert SPINNING_MODES[0] == "off"
    opts = OnnxBackend(tiny_model["onnx"], device="cpu").session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_bad_spinning_mode_names_the_setting(tiny_model):
    with pytest.raises(ValueError, match="spinning must be one of"):
        OnnxBackend(tiny_model["onnx"], spinning="yes")


def test_paced_timing_starts_calls_at_the_rate(tiny_model):
    seg = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime")
    frame = np.zeros((36, 48, 3), np.uint8)
    t = time.perf_counter()
    out = time_segmenter(seg, frame, runs=4, warmup=0, rate_hz=20.0)
    assert time.perf_counter() - t >= 4 / 20.0 - 0.01  # four calls, each started 50 ms after the last
    assert out["total"] > 0 and out["fps"] == pytest.approx(1000.0 / out["total"])


def test_keep_large_buffers_applies_on_glibc_and_can_be_turned_off(monkeypatch):
    import platform

    from road_seg_perception.core.allocator import ENV_DISABLE, keep_large_buffers

    monkeypatch.setenv(ENV_DISABLE, "1")
    assert keep_large_buffers() is False
    monkeypatch.delenv(ENV_DISABLE)
    applied = keep_large_buffers()
    if platform.libc_ver()[0] == "glibc":
        assert applied is True
        big = np.ones(8 << 20, np.uint8)  # allocations still work with the raised thresholds
        assert int(big.sum()) == 8 << 20


def test_model_files_pair_an_int8_copy_with_the_float_keras_it_came_from(tmp_path):
    for name in ("m.onnx", "m.keras", "m_int8.onnx", "x_int8.onnx"):
        (tmp_path / name).write_bytes(b"")
    assert resolve_model_files(tmp_path / "m.onnx") == (tmp_path / "m.onnx", tmp_path / "m.keras")
    assert resolve_model_files(tmp_path / "m.keras") == (tmp_path / "m.onnx", tmp_path / "m.keras")
    assert resolve_model_files(tmp_path / "m_int8.onnx") == (tmp_path / "m_int8.onnx", tmp_path / "m.keras")
    assert resolve_model_files(tmp_path / "x_int8.onnx") == (tmp_path / "x_int8.onnx", None)


@pytest.mark.parametrize(("backend", "device", "gpu", "vnni", "name"), [
    ("auto", "auto", False, True, "road_unet_camvid_int8.onnx"),    # CPU with VNNI: the INT8 copy
    ("auto", "auto", False, False, "road_unet_camvid.onnx"),        # x86-64 CPU without VNNI: float
    ("onnxruntime", "auto", True, True, "road_unet_camvid.onnx"),   # ONNX Runtime with a GPU: float
    ("onnxruntime", "cpu", True, True, "road_unet_camvid_int8.onnx"),
    ("onnxruntime", "cpu", True, False, "road_unet_camvid.onnx"),
    ("keras", "auto", False, True, "road_unet_camvid.onnx"),        # Keras runs the float .keras beside it
])
def test_the_default_model_is_int8_on_a_cpu_where_it_pays_and_float_elsewhere(monkeypatch, backend, device, gpu,
                                                                               vnni, name):
    from types import SimpleNamespace

    from road_seg_perception.core import segmenter
    from road_seg_perception.ros import node

    monkeypatch.setattr(node, "onnx_gpu_available", lambda: gpu)
    monkeypatch.setattr(segmenter, "cpu_int8_pays", lambda: vnni)
    cfg = SimpleNamespace(model_path="", backend=backend, device=device)
    assert Path(node.RoadSegmentation._model_file(cfg)).name == name
    assert node.RoadSegmentation._model_file(SimpleNamespace(model_path="m.onnx", backend=backend,
                                                             device=device)) == "m.onnx"


CPUINFO = "processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu sse2 avx2 fma {extra}\nbogomips\t: 4000\n"


@pytest.mark.parametrize(("cpuinfo", "machine", "pays"), [
    (CPUINFO.format(vendor="AuthenticAMD", extra=""), "x86_64", False),            # AVX2 only: float is faster
    (CPUINFO.format(vendor="GenuineIntel", extra="avx512f avx512_vnni"), "x86_64", True),
    (CPUINFO.format(vendor="GenuineIntel", extra="avx_vnni"), "AMD64", True),      # AVX-VNNI without AVX-512
    ("processor\t: 0\nmodel name\t: unknown\n", "x86_64", True),             # no flags to read: keep INT8
    (CPUINFO.format(vendor="x", extra=""), "aarch64", True),                     # not x86-64: keep INT8
])
def test_int8_pays_on_x86_only_with_vnni(cpuinfo, machine, pays):
    from road_seg_perception.core.backends import cpu_int8_pays

    assert cpu_int8_pays(cpuinfo, machine) is pays
