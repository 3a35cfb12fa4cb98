"""``road_seg_node`` with real rclpy: values, headers, sampling, overload, parameters, faults, diagnostics."""

from __future__ import annotations

import array
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from ros_helpers import RELIABLE, Harness, as_array, header, image_msg, random_rgb, wait_for
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from road_seg_perception.bagio.image_codec import (
    BYTES_PER_PIXEL,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_encoding,
)
from road_seg_perception.core.overlay import draw_overlay
from road_seg_perception.core.segmenter import PostConfig, RoadSegmenter

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reference(tiny_model):
    """A ``RoadSegmenter`` on the same tiny model, to compare the node's masks with."""
    return RoadSegmenter(tiny_model["onnx"], backend="onnxruntime")


def reference_mask(seg: RoadSegmenter, rgb: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    seg.post = PostConfig(threshold=threshold)
    return seg.segment(rgb).mask


# ----------------------------------------------------------------------------- values


CASES = [("rgb8", 48, 64), ("bgr8", 37, 91), ("rgba8", 60, 80), ("mono8", 30, 40), ("mono16", 20, 30),
         ("bayer_grbg8", 33, 44), ("yuv422", 24, 50), ("yuyv", 61, 32), ("bgr8", 240, 320)]


def test_masks_and_overlays_for_encodings_and_sizes(harness, reference):
    h = harness(reliable_input=True, params={"overlay_color": [255, 0, 0], "overlay_alpha": 0.5})
    for i, (enc, rows, cols) in enumerate(CASES):
        msg = image_msg(random_rgb(rows, cols, i), enc, stamp=1000 + i, pad=3 * (i % 2))
        msg.header.frame_id = f"cam_{i}"
        h.pub.publish(msg)
        mask = h.mask_for(1000 + i)
        assert (mask.encoding, mask.height, mask.width) == ("mono8", rows, cols), enc
        assert (mask.header.stamp.sec, mask.header.stamp.nanosec, mask.header.frame_id) == \
            (1000 + i, 123_456_789, f"cam_{i}")
        rgb = image_to_rgb(msg)
        expected = reference_mask(reference, rgb)
        got = as_array(mask)
        assert set(np.unique(got)) <= {0, 255}
        assert 0 < (expected > 0).mean() < 1, "test image should give a mixed mask"
        np.testing.assert_array_equal(got, expected, err_msg=f"{enc} {rows}x{cols}")

        wait_for(lambda s=1000 + i: any(m.header.stamp.sec == s for m in h.outputs("road_overlay")),
                 what="overlay")
        overlay = next(m for m in h.outputs("road_overlay") if m.header.stamp.sec == 1000 + i)
        assert overlay.header.frame_id == f"cam_{i}"
        assert overlay.encoding == ("bgr8" if enc == "bgr8" else "rgb8")
        want, _ = rgb_to_encoding(draw_overlay(rgb, expected, (255, 0, 0), 0.5, boundary=True), enc)
        np.testing.assert_array_equal(as_array(overlay), want)
    c = h.counts()
    assert (c.received, c.processed, c.bad, c.pending) == (len(CASES), len(CASES), 0, 0)


def test_compressed_path(harness, reference):
    h = harness(compressed=True, reliable_input=True)
    rgb = random_rgb(72, 96, 5)
    for stamp, ext, fmt in ((1, ".jpg", "jpeg"), (2, ".png", "png"), (3, ".jpg", "rgb8; jpeg compressed bgr8")):
        ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        msg = CompressedImage(header=header(stamp), format=fmt, data=array.array("B", buf.tobytes()))
        h.pub.publish(msg)
        mask = h.mask_for(stamp)
        assert (mask.encoding, mask.height, mask.width, mask.header.frame_id) == ("mono8", 72, 96, "camera_optical")
        np.testing.assert_array_equal(as_array(mask), reference_mask(reference, compressed_to_rgb(msg)))
        wait_for(lambda s=stamp: any(m.header.stamp.sec == s for m in h.outputs("road_overlay")), what="overlay")
        overlay = next(m for m in h.outputs("road_overlay") if m.header.stamp.sec == stamp)
        assert overlay.encoding == ("rgb8" if fmt.startswith("rgb8") else "bgr8")
    # a corrupt jpeg is counted as bad and the node keeps going
    h.publish_settled(CompressedImage(header=header(4), format="jpeg", data=array.array("B", buf.tobytes()[:200])))
    assert h.counts().bad == 1
    h.pub.publish(CompressedImage(header=header(5), format="png", data=array.array(
        "B", cv2.imencode(".png", rgb)[1].tobytes())))
    h.mask_for(5)


def test_probability_and_camera_info(harness, reference):
    h = harness(reliable_input=True, params={"publish_probability": True, "probability_encoding": "32FC1",
                                             "publish_camera_info": True},
                outputs=("road_mask", "road_probability", "road_camera_info"))
    info = CameraInfo(header=header(0, "other_frame"), height=40, width=60, distortion_model="plumb_bob")
    info.k[0] = 321.0
    h.info_pub.publish(info)
    wait_for(lambda: h.node._camera_info is not None, what="camera_info")
    rgb = random_rgb(40, 60, 9)
    h.pub.publish(image_msg(rgb, "rgb8", 7))
    h.mask_for(7)
    wait_for(lambda: h.outputs("road_probability") and h.outputs("road_camera_info"), what="probability + info")
    prob = h.outputs("road_probability")[0]
    assert (prob.encoding, prob.height, prob.width, prob.header.stamp.sec) == ("32FC1", 40, 60, 7)
    got = np.frombuffer(bytes(prob.data), ">f4" if prob.is_bigendian else "<f4").reshape(40, 60)
    reference.post = PostConfig()
    np.testing.assert_allclose(got, reference.segment(rgb, with_probability=True).probability, atol=1e-6)
    out_info = h.outputs("road_camera_info")[0]
    assert out_info.header.stamp.sec == 7 and out_info.header.frame_id == "camera_optical"
    assert (out_info.width, out_info.height, out_info.k[0]) == (60, 40, 321.0)
    h.node.set_parameters([Parameter("probability_encoding", value="mono8")])
    h.pub.publish(image_msg(rgb, "rgb8", 8))
    wait_for(lambda: any(m.header.stamp.sec == 8 for m in h.outputs("road_probability")), what="mono8 probability")
    p8 = next(m for m in h.outputs("road_probability") if m.header.stamp.sec == 8)
    assert p8.encoding == "mono8"
    np.testing.assert_array_equal(as_array(p8), np.clip(np.rint(got * 255), 0, 255).astype(np.uint8))


def test_overlay_and_probability_only_while_subscribed(harness):
    h = harness(reliable_input=True, params={"publish_probability": True}, outputs=("road_mask",))
    calls = []
    original = h.node.segmenter.segment
    h.node.segmenter.segment = lambda rgb, with_probability=False, **kw: (calls.append(with_probability),
                                                                          original(rgb, with_probability, **kw))[1]
    h.pub.publish(image_msg(random_rgb(30, 40, 1), "rgb8", 1))
    h.mask_for(1)
    assert calls == [False]  # nobody listens to road_probability
    assert h.node.overlay_pub.get_subscription_count() == 0


# ----------------------------------------------------------------------------- sampling and overload


def test_process_every_3_of_30_frames_gives_10(harness):
    h = harness(reliable_input=True, params={"process_every_n": 3})
    for i in range(30):
        h.publish_settled(image_msg(random_rgb(24, 32, i), "bgr8", 100 + i))
    wait_for(lambda: len(h.outputs("road_mask")) >= 10, what="10 masks")
    time.sleep(0.2)
    assert sorted(m.header.stamp.sec for m in h.outputs("road_mask")) == [100 + i for i in range(0, 30, 3)]
    c = h.counts()
    assert (c.received, c.processed, c.skipped, c.dropped, c.bad) == (30, 10, 20, 0, 0)


class SlowSegmenter(RoadSegmenter):
    """Deterministically slow inference, to overload the node."""

    delay_s = 0.25

    def segment(self, image_rgb, with_probability=False, smooth=None):
        time.sleep(self.delay_s)
        return super().segment(image_rgb, with_probability, smooth)


def test_overload_drops_stale_frames_and_keeps_latency_bounded(harness):
    h = harness(reliable_input=True, factory=SlowSegmenter)
    n = 40
    t0 = time.monotonic()
    for i in range(n):
        h.pub.publish(image_msg(random_rgb(24, 32, i), "rgb8", 200 + i))
        time.sleep(0.01)  # 100 Hz in, 4 Hz of inference
    publish_s = time.monotonic() - t0
    wait_for(lambda: h.counts().received == n and h.counts().pending == 0, 10, "the burst to settle")
    settled_after = time.monotonic() - t0 - publish_s
    c = h.counts()
    assert c.received == c.processed + c.skipped + c.dropped + c.bad == n
    assert c.dropped > 0 and c.skipped == 0 and c.bad == 0
    # no backlog: at most the frame in flight and the latest one are left when publishing stops
    assert c.processed <= publish_s / SlowSegmenter.delay_s + 2
    assert settled_after < 2 * SlowSegmenter.delay_s + 1.0
    stamps = [m.header.stamp.sec for m in h.outputs("road_mask")]
    wait_for(lambda: len(h.outputs("road_mask")) == c.processed, what="all masks")
    assert max(m.header.stamp.sec for m in h.outputs("road_mask")) == 200 + n - 1  # the latest frame wins
    assert stamps == sorted(stamps)
    p95 = h.node.latency.percentile(95)
    assert p95 is not None and p95 < 2 * SlowSegmenter.delay_s + 1.0  # a queue would give seconds
    time.sleep(3 * SlowSegmenter.delay_s)
    assert len(h.outputs("road_mask")) == c.processed  # nothing was queued behind


# ----------------------------------------------------------------------------- parameters


def test_parameter_changes_take_effect_and_invalid_ones_are_refused(harness, reference):
    h = harness(reliable_input=True, params={"overlay_color": [0, 0, 255], "overlay_alpha": 1.0})
    rgb = random_rgb(40, 56, 3)
    h.pub.publish(image_msg(rgb, "rgb8", 1))
    base = as_array(h.mask_for(1))
    np.testing.assert_array_equal(base, reference_mask(reference, rgb, 0.5))

    # through the parameter service, as ``ros2 param set`` does
    client = AsyncParameterClient(h.io, f"{h.ns}/road_seg_node")
    assert client.wait_for_services(5.0)
    future = client.set_parameters([Parameter("threshold", value=0.4999),
                                    Parameter("overlay_color", value=[255, 0, 0])])
    wait_for(future.done, what="set_parameters reply")
    assert all(r.successful for r in future.result().results), future.result().results
    h.pub.publish(image_msg(rgb, "rgb8", 2))
    low = as_array(h.mask_for(2))
    np.testing.assert_array_equal(low, reference_mask(reference, rgb, 0.4999))
    assert (low > 0).sum() > (base > 0).sum()
    wait_for(lambda: any(m.header.stamp.sec == 2 for m in h.outputs("road_overlay")), what="overlay")
    overlay = as_array(next(m for m in h.outputs("road_overlay") if m.header.stamp.sec == 2))
    assert np.all(overlay[low > 0] == [255, 0, 0])  # alpha 1 with the new colour

    before = h.node.config
    refused = {
        "threshold": 1.0, "overlay_color": [1, 2], "probability_encoding": "rgb8", "backend": "tensorrt",
        "device": "tpu", "overlay_alpha": 1.5, "process_every_n": 0, "max_rate_hz": -1.0,
        "use_compressed": True, "max_image_pixels": 0, "inference_threads": -1,
        "inference_spinning": "sometimes",
    }
    for name, value in refused.items():
        result = h.node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful, name
        assert result.reason, name
    assert "threshold" in h.node.set_parameters([Parameter("threshold", value=1.0)])[0].reason
    assert h.node.config == before
    assert h.node.get_parameter("threshold").value == 0.4999
    # also refused through the service, with the reason
    future = client.set_parameters([Parameter("process_every_n", value=0)])
    wait_for(future.done, what="set_parameters reply")
    assert not future.result().results[0].successful

    h.node.set_parameters([Parameter("process_every_n", value=2)])
    for i in range(4):
        h.publish_settled(image_msg(rgb, "rgb8", 10 + i))
    assert h.counts().skipped == 2


def test_inference_thread_settings_reach_onnx_runtime_and_reload_the_model(harness, reference):
    h = harness(reliable_input=True, params={"inference_threads": 1, "inference_spinning": "run"})

    def session_settings() -> tuple[int, str, str]:
        opts = h.node.segmenter.backend.session.get_session_options()
        try:
            stop = opts.get_session_config_entry("session.force_spinning_stop")
        except Exception:  # onnxruntime raises its own error type for an unset key
            stop = ""
        return opts.intra_op_num_threads, opts.get_session_config_entry("session.intra_op.allow_spinning"), stop

    assert session_settings() == (1, "1", "1")
    old = h.node.segmenter
    results = h.node.set_parameters([Parameter("inference_spinning", value="always"),
                                     Parameter("inference_threads", value=2)])
    assert all(r.successful for r in results), results
    assert h.node.wait_for_model(30)  # the load runs on the loader thread
    assert h.node.segmenter is not old  # a new session with the new settings
    assert session_settings() == (2, "1", "")
    rgb = random_rgb(36, 48, 12)
    h.pub.publish(image_msg(rgb, "rgb8", 1))
    np.testing.assert_array_equal(as_array(h.mask_for(1)), reference_mask(reference, rgb))


def test_flip_average_applies_at_run_time_and_survives_a_reload(harness, reference):
    rgb = random_rgb(36, 48, 13)
    try:
        reference.flip_average = True
        thr = float(np.median(reference.segment(rgb, with_probability=True).probability))
        flip_mask = reference_mask(reference, rgb, thr)
    finally:
        reference.flip_average = False
    plain_mask = reference_mask(reference, rgb, thr)
    assert not np.array_equal(flip_mask, plain_mask)  # so the comparisons below tell the two apart
    h = harness(reliable_input=True, params={"flip_average": True, "threshold": thr})
    h.pub.publish(image_msg(rgb, "rgb8", 1))
    np.testing.assert_array_equal(as_array(h.mask_for(1)), flip_mask)

    old = h.node.segmenter
    assert all(r.successful for r in h.node.set_parameters([Parameter("flip_average", value=False)]))
    assert h.node.segmenter is old  # applied to the serving model, no reload
    h.pub.publish(image_msg(rgb, "rgb8", 2))
    np.testing.assert_array_equal(as_array(h.mask_for(2)), plain_mask)

    results = h.node.set_parameters([Parameter("flip_average", value=True), Parameter("model_reload", value=1)])
    assert all(r.successful for r in results), results
    assert h.node.wait_for_model(30)
    assert h.node.segmenter is not old and h.node.segmenter.flip_average  # the new model keeps the setting
    h.pub.publish(image_msg(rgb, "rgb8", 3))
    np.testing.assert_array_equal(as_array(h.mask_for(3)), flip_mask)


def test_model_swap_refused_on_bad_file_and_accepted_on_good(harness, reference, tiny_model, tmp_path):
    h = harness(reliable_input=True)
    rgb = random_rgb(36, 48, 11)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not an onnx model" * 10)
    unsafe = tmp_path / "evil.keras"
    with zipfile.ZipFile(unsafe, "w") as zf:
        zf.writestr("config.json", '{"class_name": "Functional", "config": {"layers": [{"class_name": "Lambda", '
                                   '"config": {"name": "evil"}, "module": "keras.layers"}]}}')
    old_segmenter = h.node.segmenter
    for bad, backend in ((corrupt, "auto"), (tmp_path / "missing.onnx", "auto"), (unsafe, "keras")):
        result = h.node.set_parameters_atomically([Parameter("model_path", value=str(bad)),
                                                   Parameter("backend", value=backend)])
        assert not result.successful and str(bad) in result.reason, result.reason
        assert h.node.segmenter is old_segmenter
        assert h.node.get_parameter("model_path").value == str(tiny_model["onnx"])
    assert "unsafe" in result.reason
    h.pub.publish(image_msg(rgb, "rgb8", 1))
    np.testing.assert_array_equal(as_array(h.mask_for(1)), reference_mask(reference, rgb))

    copy = tmp_path / "swapped.onnx"
    shutil.copy(tiny_model["onnx"], copy)
    assert h.node.set_parameters([Parameter("model_path", value=str(copy))])[0].successful
    assert h.node.wait_for_model(30)
    assert h.node.segmenter is not old_segmenter and h.node.segmenter.info["model"] == str(copy)
    h.pub.publish(image_msg(rgb, "rgb8", 2))
    np.testing.assert_array_equal(as_array(h.mask_for(2)), reference_mask(reference, rgb))
    wait_for(lambda: any(dict((kv.key, kv.value) for kv in s.values)["model"] == str(copy)
                         for s in h.diagnostics), what="diagnostics naming the new model")


def test_gpu_request_falls_back_to_cpu(harness):
    h = harness(params={"device": "gpu"})
    assert h.node.segmenter.info["device"] == "cpu"  # this machine has no GPU provider


# ----------------------------------------------------------------------------- bad input


def bad_messages() -> list[Image]:
    good = image_msg(random_rgb(20, 30, 0), "rgb8", 0)
    out = []
    for change in ({"encoding": "32FC1"}, {"encoding": "nonsense"}, {"step": 10}, {"height": 0},
                   {"data": array.array("B", bytes(good.data)[:-1])},
                   {"height": 1 << 16, "width": 1 << 16, "step": 3 << 16}, {"encoding": "yuyv", "width": 29}):
        m = image_msg(random_rgb(20, 30, 0), "rgb8", 0)
        for k, v in change.items():
            setattr(m, k, v)
        out.append(m)
    return out


def test_bad_messages_are_counted_and_node_keeps_producing(harness, reference):
    h = harness(reliable_input=True, params={"max_image_pixels": 100_000})
    good = 0
    for i, bad in enumerate(bad_messages()):
        bad.header = header(500 + i)
        h.publish_settled(bad)
        rgb = random_rgb(20 + i, 30, i)
        h.pub.publish(image_msg(rgb, "bgr8", 600 + i))
        np.testing.assert_array_equal(as_array(h.mask_for(600 + i)), reference_mask(reference, rgb))
        good += 1
    too_big = image_msg(random_rgb(400, 300, 1), "rgb8", 700)  # 120000 pixels > max_image_pixels
    h.publish_settled(too_big)
    wait_for(lambda: h.counts().pending == 0, what="settle")
    c = h.counts()
    assert c.bad == len(bad_messages()) + 1 and c.processed == good
    assert c.received == c.processed + c.skipped + c.dropped + c.bad
    assert "max_image_pixels" in h.node._last_bad_reason
    assert h.node.set_parameters([Parameter("max_image_pixels", value=200_000)])[0].successful
    too_big.header = header(701)
    h.pub.publish(too_big)
    assert h.mask_for(701).height == 400
    assert h.node.set_parameters([Parameter("max_message_bytes", value=300 * 400 * 3 - 1)])[0].successful
    too_big.header = header(702)
    h.publish_settled(too_big)
    assert h.counts().bad == len(bad_messages()) + 2 and "max_message_bytes" in h.node._last_bad_reason
    assert not any(m.header.stamp.sec >= 500 and m.header.stamp.sec < 600 for m in h.outputs("road_mask"))


_ENCODINGS = sorted(BYTES_PER_PIXEL) + ["32FC1", "rgb16", ""]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(enc=st.sampled_from(_ENCODINGS), hh=st.integers(0, 40), ww=st.integers(0, 40),
       extra_step=st.integers(-3, 3), extra_data=st.integers(-2, 2), seed=st.integers(0, 1000))
def test_fuzz_node_input_path(harness_module, enc, hh, ww, extra_step, extra_data, seed):
    """Random and malformed Images into the node's callback: each is a counted drop or a processed mask."""
    h = harness_module
    bpp = BYTES_PER_PIXEL.get(enc.lower(), 3)
    step = max(0, ww * bpp + extra_step)
    n = max(0, step * hh + extra_data)
    msg = Image(header=header(seed), encoding=enc, height=hh, width=ww, step=step,
                data=array.array("B", np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()))
    before = h.counts()
    try:
        image_to_rgb(msg)
        convertible = True
    except ValueError:
        convertible = False
    h.node._on_image(msg)  # the subscription callback, called directly: no transport in the way
    wait_for(lambda: h.counts().pending == 0, what="the worker")
    after = h.counts()
    assert after.received == before.received + 1
    assert after.received == after.processed + after.skipped + after.dropped + after.bad
    assert (after.processed - before.processed, after.bad - before.bad) == ((1, 0) if convertible else (0, 1))
    assert h.node._worker.is_alive()


@pytest.fixture(scope="module")
def harness_module(ctx, tiny_model):
    h = Harness(ctx, tiny_model["onnx"], outputs=("road_mask",))
    yield h
    h.close()


@pytest.fixture(scope="module")
def compressed_harness_module(ctx, tiny_model):
    h = Harness(ctx, tiny_model["onnx"], compressed=True, outputs=("road_mask",))
    yield h
    h.close()


_JPEG = cv2.imencode(".jpg", random_rgb(30, 40, 3))[1].tobytes()
_PNG = cv2.imencode(".png", random_rgb(30, 40, 4))[1].tobytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(base=st.sampled_from([_JPEG, _PNG]), cut=st.integers(1, len(_JPEG)),
       flips=st.lists(st.tuples(st.integers(0, len(_JPEG) - 1), st.integers(0, 255)), max_size=4))
def test_fuzz_node_compressed_input_path(compressed_harness_module, base, cut, flips):
    """Truncated and byte-flipped jpeg/png into the node: each is a counted drop or a processed mask."""
    h = compressed_harness_module
    data = bytearray(base[:cut])
    for i, v in flips:
        if i < len(data):
            data[i] = v
    msg = CompressedImage(header=header(1), format="jpeg", data=array.array("B", bytes(data)))
    try:
        compressed_to_rgb(msg)
        convertible = True
    except ValueError:
        convertible = False
    before = h.counts()
    h.node._on_compressed(msg)
    wait_for(lambda: h.counts().pending == 0, what="the worker")
    after = h.counts()
    assert after.received == after.processed + after.skipped + after.dropped + after.bad == before.received + 1
    assert (after.processed - before.processed, after.bad - before.bad) == ((1, 0) if convertible else (0, 1))


# ----------------------------------------------------------------------------- diagnostics


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_diagnostics_fields_stale_warn_and_recovery(harness, tiny_model):
    h = harness(params={"stale_timeout_s": 0.6})
    wait_for(lambda: any(s.level == DiagnosticStatus.WARN for s in h.diagnostics), 5, "WARN with no camera")
    warn = next(s for s in h.diagnostics if s.level == DiagnosticStatus.WARN)
    assert "no image" in warn.message and h.ns + "/image" in warn.message
    stop = threading.Event()

    def camera():
        i = 0
        while not stop.is_set():
            h.pub.publish(image_msg(random_rgb(24, 32, i), "rgb8", 300 + i))
            i += 1
            time.sleep(0.05)

    t = threading.Thread(target=camera)
    t.start()
    try:
        n_before = len(h.diagnostics)
        wait_for(lambda: any(s.level == DiagnosticStatus.OK and float(_values(s)["processed_rate_hz"]) > 0
                             for s in h.diagnostics[n_before:]), 10, "OK while frames arrive")
    finally:
        stop.set()
        t.join()
    ok = next(s for s in h.diagnostics[n_before:] if s.level == DiagnosticStatus.OK
              and float(_values(s)["processed_rate_hz"]) > 0)
    v = _values(ok)
    for key in ("input_rate_hz", "processed_rate_hz", "latency_p50_ms", "latency_p95_ms", "frames_received",
                "frames_processed", "frames_skipped", "frames_dropped_stale", "frames_bad", "backend", "device",
                "model", "seconds_since_last_image"):
        assert key in v, key
    assert float(v["input_rate_hz"]) > 0 and int(v["frames_processed"]) > 0
    assert 0 < float(v["latency_p50_ms"]) <= float(v["latency_p95_ms"]) < 5000
    assert (v["backend"], v["device"], v["model"]) == ("onnxruntime", "cpu", str(tiny_model["onnx"]))
    assert int(v["frames_received"]) == sum(int(v[k]) for k in ("frames_processed", "frames_skipped",
                                                                 "frames_dropped_stale", "frames_bad",
                                                                 "frames_pending"))
    n_before = len(h.diagnostics)
    wait_for(lambda: any(s.level == DiagnosticStatus.WARN for s in h.diagnostics[n_before:]), 5,
             "WARN again after the camera stops")


# ----------------------------------------------------------------------------- process level


def _run_node(domain: int, *ros_args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "road_seg_perception.ros.node", "--ros-args", *ros_args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_missing_model_fails_startup_with_message(ros_domain_id):
    proc = _run_node(ros_domain_id, "-p", "model_path:=/nope.onnx")
    assert proc.returncode != 0
    assert "/nope.onnx" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_model_and_bad_parameter_fail_startup(ros_domain_id, tmp_path, tiny_model):
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x08\x01garbage")
    proc = _run_node(ros_domain_id, "-p", f"model_path:={corrupt}")
    assert proc.returncode != 0 and str(corrupt) in proc.stderr
    proc = _run_node(ros_domain_id, "-p", f"model_path:={tiny_model['onnx']}", "-p", "threshold:=1.5")
    assert proc.returncode != 0 and "threshold" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_stream_exits_cleanly(ctx, ros_domain_id, tiny_model, sig):
    ns = "/p" + uuid.uuid4().hex[:8]
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "road_seg_perception.ros.node", "--ros-args",
                             "-r", f"__ns:={ns}", "-p", f"model_path:={tiny_model['onnx']}", "-p", "device:=gpu"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    io = rclpy.create_node("signal_tester", namespace=ns, context=ctx)
    masks = []
    io.create_subscription(Image, "road_mask", masks.append, RELIABLE)
    pub = io.create_publisher(Image, "image", RELIABLE)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(io)
    try:
        end = time.monotonic() + 30
        i = 0
        while not masks and time.monotonic() < end and proc.poll() is None:
            pub.publish(image_msg(random_rgb(24, 32, i), "rgb8", i))
            i += 1
            executor.spin_once(timeout_sec=0.05)
        assert masks, "the node produced no mask"
        for _ in range(5):  # still streaming when the signal arrives
            pub.publish(image_msg(random_rgb(24, 32, i), "rgb8", i))
            executor.spin_once(timeout_sec=0.02)
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        executor.shutdown()
        io.destroy_node()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert took < 2.0, f"took {took:.2f} s from the signal to exit (at most 2 s)"
    assert "falling back to CPU" in err  # device gpu requested, none here: the fallback is logged
    assert "best_effort" in err and "depth=1" in err  # the chosen QoS is logged at start-up


@pytest.mark.parametrize("intake_thread", [True, False])
def test_frames_taken_by_the_intake_thread_or_the_executor(harness, reference, intake_thread):
    h = harness(reliable_input=True, params={"intake_thread": intake_thread})
    assert (h.node._intake is not None and h.node._intake.alive) == intake_thread
    for i in range(5):
        msg = image_msg(random_rgb(48, 64, 40 + i), "rgb8", stamp=2000 + i)
        h.pub.publish(msg)
        np.testing.assert_array_equal(as_array(h.mask_for(2000 + i)), reference_mask(reference, image_to_rgb(msg)))
    c = h.counts()
    assert (c.received, c.processed, c.bad) == (5, 5, 0)
    if intake_thread:
        assert h.node._intake.taken == 5
