"""ONNX Runtime backend settings and the segment timer's pacing."""

from __future__ import annotations

import time

import numpy as np
import pytest

from road_seg_perception.core.backends import SPINNING_MODES, OnnxBackend
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
