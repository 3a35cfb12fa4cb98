"""Exact accounting between the node and the recorder: one recorded mask per frame the node processed.

A mask can be lost at either end of a recording: published before the recorder's subscription
has matched the node's publisher, or after the recorder stopped. ``run_live`` waits for the match
before the first frame and drains until the recording holds a mask per processed frame, and
``road-seg-replay --record`` does the same; the demo fails when the counts differ.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from domain_ids import domain_id

pytest.importorskip("rclpy", reason="rclpy is not installed")

from road_seg_perception.bagio import bag as B  # noqa: E402
from road_seg_perception.tools.live import LiveOutput, LiveRun, run_live  # noqa: E402

pytestmark = pytest.mark.slow
START_NS = 1_660_000_000_000_000_000
N_FRAMES = 101  # CamVid val's count, as in the demo
REPO = Path(__file__).resolve().parent.parent


def _bag(path: Path, n: int = N_FRAMES, hw: tuple[int, int] = (48, 64)) -> Path:
    rng = np.random.default_rng(3)
    frames = [B.Frame(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)) for _ in range(n)]
    return B.write_frames(path, frames, rate=15.0, start_ns=START_NS, frame_id="cam").path


def test_ten_live_replays_in_a_row_record_every_processed_mask(tiny_model, tmp_path):
    """Lock-step runs (even): 101 published, processed and recorded, every time. Runs at twice real time
    (odd; frames may be dropped on the way in, as the node's best-effort input allows): every processed
    frame's mask and overlay recorded, and the node's counters add up."""
    bag = _bag(tmp_path / "bag")
    for i in range(10):
        lockstep = i % 2 == 0
        run = run_live(bag, tmp_path / f"live{i}", tiny_model["onnx"], rate=0 if lockstep else 2.0,
                       lockstep=lockstep)
        c = run.node_counts or {}
        got = (len(run.published), c.get("processed"), len(run.outputs), len(run.overlays))
        why = f"run {i} ({'lock-step' if lockstep else '2x'}): published/processed/masks/overlays {got}, {c}"
        assert run.accounting_problem() is None, why
        assert len(run.published) == N_FRAMES and c.get("processed") == len(run.outputs) == len(run.overlays), why
        assert c["received"] == c["processed"] + c["skipped"] + c["dropped_stale"] + c["bad"] + c["pending"], why
        assert c["pending"] == 0 and c["bad"] == 0 and run.node_returncode == 0, why
        assert {o.stamp_ns for o in run.outputs} <= set(run.published), why
        if lockstep:
            assert got == (N_FRAMES,) * 4, why + "\n" + run.node_log[-2000:]
            assert run.lockstep_timeouts == 0, why


def _run(processed: int, masks: list[int]) -> LiveRun:
    outputs = [LiveOutput(s, "cam", 2, 2, "mono8", 0, np.zeros((2, 2), np.uint8)) for s in masks]
    return LiveRun(Path("b"), Path("o"), "/camera/image_raw", {s: ("cam", 0) for s in range(3)}, outputs, [], {},
                   {"received": 3, "processed": processed}, None, 1.0, 0, "", 0)


def test_accounting_problem_names_every_mismatch():
    assert _run(3, [0, 1, 2]).accounting_problem() is None
    assert "processed 3 frame(s) but the recording holds 2 mask(s)" in _run(3, [0, 1]).accounting_problem()
    assert "duplicate" in _run(3, [0, 1, 1]).accounting_problem()
    lost = _run(3, [0, 1, 2])
    lost.node_counts = None
    assert "no /diagnostics" in lost.accounting_problem()


def test_replay_cli_records_every_mask_of_a_running_node(tiny_model, tmp_path):
    """``road-seg-replay --record`` against the node in its own process, as fast as lock-step allows: the
    recording holds the first mask (recorder matched before playing) and the last (drained after)."""
    from road_seg_perception.tools.live import node_command, stop_process, subprocess_env

    bag = _bag(tmp_path / "bag", n=20, hw=(32, 64))
    env = subprocess_env(domain_id("live_accounting"))
    cmd = node_command(tiny_model["onnx"], B.IMAGE_TOPIC, False,
                       {f"qos_overrides.{B.IMAGE_TOPIC}.subscription.reliability": "reliable"})
    node = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        for i in range(3):
            out = tmp_path / f"rec{i}"
            r = subprocess.run([sys.executable, "-m", "road_seg_perception.ros.replay", str(bag), "--rate", "0",
                                "--topics", B.IMAGE_TOPIC, "--wait-for", B.IMAGE_TOPIC, "--wait-timeout", "60",
                                "--lockstep", "/road_mask", "--record", str(out), "--record-topics", "/road_mask",
                                "--record-quiet", "0.5"], capture_output=True, text=True, timeout=180, env=env)
            assert r.returncode == 0, r.stderr
            recorded = [f.stamp_ns for f in B.read_frames(out, image_topic="/road_mask", gt_topic=None)]
            assert recorded == [f.stamp_ns for f in B.read_frames(bag)], f"run {i}: {len(recorded)} masks\n{r.stderr}"
    finally:
        assert stop_process(node) == 0
