"""Live replay: a bag replayed through ``road_seg_node`` running as its own process.

The replay is lock-step (each image is published once the previous mask came back), so nothing is
dropped whatever the machine's load and the run is deterministic. Also here: the replay/record
library on its own, and ``road-seg-replay --record`` surviving SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from domain_ids import domain_id

pytest.importorskip("rclpy", reason="rclpy is not installed")

from conftest import camvid_root  # noqa: E402

from road_seg_perception.bagio import bag as B  # noqa: E402
from road_seg_perception.tools import bag as bag_cli  # noqa: E402
from road_seg_perception.tools.evaluate import EvalConfig, evaluate_bag, score_masks  # noqa: E402
from road_seg_perception.tools.live import LiveRun, run_live  # noqa: E402

pytestmark = pytest.mark.slow
START_NS = 1_650_000_000_000_000_000


def synthetic_bag(path, segmenter, n: int = 8, hw: tuple[int, int] = (90, 120)):
    """Road-like frames whose ground truth is the model's own offline prediction (checks plumbing, not accuracy)."""
    rng = np.random.default_rng(1)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for k in range(n):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[:] = (120 + 2 * k, 170, 230)  # sky
        road = (yy > h * 0.55) & (np.abs(xx - w / 2) < (yy - h * 0.45) * 1.2)
        rgb[road] = (90, 90, 95)
        rgb = np.clip(rgb.astype(int) + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
        frames.append(B.Frame(rgb, segmenter.segment(rgb).mask.copy()))
    B.write_frames(path, frames, rate=15.0, start_ns=START_NS, frame_id="synthetic_cam")
    return path


def check_live_run(run: LiveRun, bag) -> None:
    """Outputs carry input stamps and frame_ids, sizes match, and the node's frame accounting adds up."""
    images = list(B.iter_messages(bag, [run.image_topic]))
    inputs = {B.stamp_ns_of(m.msg): m.msg.header.frame_id for m in images}
    assert len(run.published) == len(images), "the replayer published every image once"
    assert run.lockstep_timeouts == 0, run.node_log[-2000:]
    stamps = [o.stamp_ns for o in run.outputs]
    assert len(stamps) == len(set(stamps)), "one mask per frame"
    assert set(stamps) == set(inputs), "lock-step: every published frame produced a mask"
    for o in run.outputs:
        assert o.frame_id == inputs[o.stamp_ns]
        assert (o.width, o.height) == run.input_sizes[o.stamp_ns] == (o.mask.shape[1], o.mask.shape[0])
        assert o.encoding == "mono8"
        assert set(np.unique(o.mask)) <= {0, 255}
    assert run.overlays, "overlays were recorded"
    for stamp, frame_id, w, h, enc in run.overlays:
        assert frame_id == inputs[stamp] and (w, h) == run.input_sizes[stamp] and enc in ("rgb8", "bgr8")
    c = run.node_counts
    assert c is not None, "no /diagnostics with frame counters recorded"
    assert c["received"] == len(images)
    assert c["received"] == c["processed"] + c["skipped"] + c["dropped_stale"] + c["bad"] + c["pending"]
    assert c["pending"] == 0 and c["bad"] == 0
    assert c["processed"] == len(run.outputs)
    assert run.accounting_problem() is None  # what the demo checks: one recorded mask per processed frame
    assert run.node_returncode == 0, run.node_log[-2000:]


def per_frame_iou(run: LiveRun, bag) -> dict[int, float]:
    return {s: c.iou for s, c in score_masks(run.masks(), bag).items()}


# --------------------------------------------------------------------------- node + tiny model (always runs)


def test_live_replay_through_node_tiny_model(tiny_model, tmp_path):
    """The whole live path with a real (tiny) model: ground truth = offline prediction, so live IoU must be ~1."""
    from road_seg_perception.core.segmenter import RoadSegmenter

    seg = RoadSegmenter(tiny_model["onnx"])
    bag = synthetic_bag(tmp_path / "bag", seg, n=6)
    run = run_live(bag, tmp_path / "live", tiny_model["onnx"], rate=0, lockstep=True)
    check_live_run(run, bag)
    ious = per_frame_iou(run, bag)
    assert len(ious) == 6
    assert min(ious.values()) >= 0.99, ious


# --------------------------------------------------------------------------- node + shipped model on CamVid val


@pytest.fixture(scope="module")
def live_camvid(shipped_model, tmp_path_factory):
    """CamVid val (or, without CamVid, a synthetic bag) evaluated offline and replayed live, once."""
    d = tmp_path_factory.mktemp("live_shipped")
    root = camvid_root()
    if (root / "val").is_dir():
        bag = bag_cli.make_bag(root / "val", d / "bag", root / "valannot", start_ns=START_NS, rate=15.0).path
        source = "camvid"
    else:
        from road_seg_perception.core.segmenter import RoadSegmenter

        bag = synthetic_bag(d / "bag", RoadSegmenter(shipped_model), n=20, hw=(360, 480))
        source = "synthetic"
    offline = evaluate_bag(bag, d / "offline", model=shipped_model,
                           cfg=EvalConfig(progress=False, video=False, output_bag=False))
    run = run_live(bag, d / "live", shipped_model, rate=0, lockstep=True)
    return bag, source, offline, run


def test_live_replay_shipped_model_outputs_and_accounting(live_camvid):
    bag, _, _, run = live_camvid
    check_live_run(run, bag)


def test_live_replay_shipped_model_iou(live_camvid):
    bag, source, _, run = live_camvid
    ious = per_frame_iou(run, bag)
    assert len(ious) == len(run.outputs) > 0
    mean_iou = float(np.mean(list(ious.values())))
    assert mean_iou >= 0.85, f"mean per-frame IoU {mean_iou:.4f} on {source} bag"


def test_offline_and_live_agree_per_frame(live_camvid):
    """Per-frame IoU of the offline evaluation and of the live replay within 0.01."""
    bag, _, offline, run = live_camvid
    live = per_frame_iou(run, bag)
    off = offline.frame_ious()
    common = sorted(set(live) & set(off))
    assert len(common) == len(off) == len(live)
    diffs = {s: abs(live[s] - off[s]) for s in common}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= 0.01, f"frame stamp {worst}: offline {off[worst]:.4f}, live {live[worst]:.4f}"


# --------------------------------------------------------------------------- replay/record library and CLI


@pytest.fixture()
def small_bag(tmp_path):
    rng = np.random.default_rng(2)
    frames = [B.Frame(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8),
                      rng.choice(np.array([0, 128, 255], np.uint8), size=(16, 20))) for _ in range(5)]
    return B.write_frames(tmp_path / "small", frames, rate=15.0, start_ns=START_NS, frame_id="f")


def test_replayer_timing_and_recorder_round_trip(small_bag, tmp_path):
    """Published bytes arrive unchanged, at the recorded timing scaled by the rate."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from road_seg_perception.ros.replay import Recorder, Replayer

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id("replay_live"))
    node = Node("test_replay", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin)
    try:
        rep = Replayer(node, small_bag.path, topics=[B.IMAGE_TOPIC, B.GT_TOPIC], rate=0.5)
        rec = Recorder(node, tmp_path / "rec", [B.IMAGE_TOPIC, B.GT_TOPIC])
        spinner.start()
        end = time.monotonic() + 10
        while set(rec.subscribed) != {B.IMAGE_TOPIC, B.GT_TOPIC} and time.monotonic() < end:
            time.sleep(0.05)
        assert rep.wait_for_subscribers([B.IMAGE_TOPIC, B.GT_TOPIC], timeout_s=10)
        time.sleep(0.5)
        stats = rep.run()
        time.sleep(0.5)
        rec.close()
    finally:
        stop.set()
        spinner.join(2)
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert stats.published == {B.IMAGE_TOPIC: 5, B.GT_TOPIC: 5} and stats.passes == 1
    span = (small_bag.stamps_ns[-1] - small_bag.stamps_ns[0]) / 1e9 / 0.5  # 4 frame periods at half speed
    assert span - 0.01 <= stats.wall_s < span + 3.0
    original = B.read_frames(small_bag.path)
    recorded = B.read_frames(tmp_path / "rec")
    assert [r.stamp_ns for r in recorded] == [o.stamp_ns for o in original]
    for o, r in zip(original, recorded, strict=True):
        assert r.frame_id == "f"
        np.testing.assert_array_equal(r.rgb, o.rgb)
        np.testing.assert_array_equal(r.gt, o.gt)
    t = [m.timestamp_ns for m in B.iter_messages(tmp_path / "rec", [B.IMAGE_TOPIC])]
    assert (t[-1] - t[0]) / 1e9 >= span - 0.05  # receive times follow the scaled timing


def test_replay_cli_record_survives_sigterm(small_bag, tmp_path):
    """road-seg-replay --record: SIGTERM mid-stream exits within 2 s and leaves a readable bag."""
    out = tmp_path / "rec"
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id("replay_live_cli"))}
    proc = subprocess.Popen([sys.executable, "-m", "road_seg_perception.ros.replay", str(small_bag.path), "--loop",
                             "--record", str(out), "--record-topics", B.IMAGE_TOPIC, B.CAMERA_INFO_TOPIC],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and proc.poll() is None:  # until the recording has some frames
            db = out / "rec.db3"
            if db.is_file() and db.stat().st_size > 40_000:  # the empty schema alone is 28 KiB
                break
            time.sleep(0.2)
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()[0]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    assert took < 2.0, f"exit took {took:.2f} s"
    assert (out / "metadata.yaml").is_file()
    topics = B.read_bag_topics(out)
    n = topics[B.IMAGE_TOPIC].count
    assert n > 5 and abs(topics[B.CAMERA_INFO_TOPIC].count - n) <= 2
    frames = B.read_frames(out, gt_topic=None)
    assert len(frames) == n
    originals = {f.stamp_ns: f.rgb for f in B.read_frames(small_bag.path)}
    for f in frames:  # looped replay: every recorded frame is one of the bag's, unchanged
        np.testing.assert_array_equal(f.rgb, originals[f.stamp_ns])
    assert f"recorded {out}" in log


def test_replay_cli_unknown_topic_lists_bag_topics(small_bag):
    r = subprocess.run([sys.executable, "-m", "road_seg_perception.ros.replay", str(small_bag.path), "--topics",
                        "/camera/image"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no topic '/camera/image'" in r.stderr
    assert "/camera/image_raw" in r.stderr and "/camera/camera_info" in r.stderr
