"""The benchmark tools: ``bench/run_bench.py``, the naive baseline node, the GPU script on the CPU.

Nothing here asserts a speed: the checks are that every section is measured, that the numbers are
sane (positive, ordered, counts that add up) and that the outputs are right (mask size, header).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from domain_ids import domain_id

pytest.importorskip("rclpy", reason="rclpy is not installed")

import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from bench.pyspy import finish_py_spy, py_spy_path, start_py_spy, summarize_stacks  # noqa: E402
from bench.run_bench import main as bench_main  # noqa: E402
from bench.settings import BARE_BACKENDS, BenchSettings  # noqa: E402
from bench.targets import targets  # noqa: E402
from road_seg_perception.ros.messages import numpy_to_image_msg  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tiny_model, tmp_path_factory):
    """One ``bench/run_bench.py --quick`` run on the tiny model, every section: (exit code, JSON, markdown, stdout)."""
    out = tmp_path_factory.mktemp("bench")
    args = ["--quick", "--model", str(tiny_model["onnx"]), "--json", str(out / "bench.json"),
            "--markdown", str(out / "bench.md"), "--phase-s", "1.2", "--flood-hz", "50",
            "--profile", str(out / "profile.txt")]
    code = bench_main(args)
    return code, json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text(), out


def test_bench_quick_measures_every_section(quick_run):
    code, res, md, out = quick_run
    assert code == 0
    assert {"meta", "bare", "work", "node", "naive", "targets"} <= set(res)
    assert res["meta"]["quick"] is True
    # bare: every backend at both sizes, positive stage times that add up to about the total
    got = {(r["backend"], r["size"]) for r in res["bare"]}
    assert got == {(b, s) for b in BARE_BACKENDS for s in ("480x360", "1280x720")}
    for r in res["bare"]:
        assert r["pre_ms"] > 0 and r["infer_ms"] > 0 and r["post_ms"] > 0
        assert r["total_ms"] >= 0.5 * (r["pre_ms"] + r["infer_ms"] + r["post_ms"])
        assert r["fps"] == pytest.approx(1000.0 / r["total_ms"])
    assert {r["runtime"] for r in res["bare"]} == {"onnxruntime", "onnxruntime-runspin", "onnxruntime-spinning",
                                                   "onnxruntime-1thread", "onnxruntime-flip", "keras-tensorflow",
                                                   "keras-predict"}
    # ONNX Runtime rows at the stream size are also timed at each stream rate
    paced = {r["backend"]: r["paced_total_ms"] for r in res["bare"] if "paced_total_ms" in r}
    assert set(paced) == {"onnxruntime", "onnxruntime-runspin", "onnxruntime-spinning", "onnxruntime-1thread",
                          "onnxruntime-flip"}
    assert all(set(v) == {"15hz", "30hz"} and min(v.values()) > 0 for v in paced.values())
    w = res["work"]
    assert all(w[k + "_ms"] > 0 for k in ("convert", "segment", "mask_msg", "overlay", "overlay_msg"))
    assert w["total_with_overlay_ms"] > w["total_mask_only_ms"]
    profile = (out / "profile.txt").read_text()
    assert "segmenter.py" in profile and "overlay.py" in profile
    # the markdown for the README has the three tables
    for title in ("Bare segmenter", "Live streams", "Targets"):
        assert title in md
    assert md.count("| --- |") >= 3


@pytest.mark.parametrize("kind", ["node", "naive"])
def test_bench_quick_streams_are_sane(quick_run, kind):
    _, res, _, _ = quick_run
    r = res[kind]
    assert "error" not in r, r.get("error")
    assert r["returncode"] == 0, Path(r["log"]).read_text()[-2000:]
    assert set(r["phases"]) == {"15hz", "30hz", "flood"}
    for name, p in r["phases"].items():
        assert p["published"] > 0 and 0 < p["masks"] <= p["published"], (name, p)
        assert p["masks"] + p["unanswered"] == p["published"] and p["duplicates"] == 0
        assert 0 < p["latency_p50_ms"] <= p["latency_p95_ms"] <= p["latency_max_ms"] < 60_000
        assert p["throughput_fps"] > 0
        assert p["mask_size_ok"] and p["mask_sizes"] == ["480x360 mono8"], p["mask_sizes"]
        assert p["frame_id_ok"]
        if kind == "node":
            c = p["node_counts"]
            assert c["pending"] == 0
            assert c["received"] == c["processed"] + c["skipped"] + c["dropped_stale"] + c["bad"]
            assert c["bad"] == 0 and c["skipped"] == 0
            assert p["masks"] <= c["processed"] <= c["received"] <= p["published"]
            assert 0 < p["node_internal_latency_p50_ms"] <= p["node_internal_latency_p95_ms"]
    if kind == "node":
        assert r["info"]["backend"] == "onnxruntime"


def test_bench_quick_targets_are_computed(quick_run):
    _, res, _, _ = quick_run
    t = res["targets"]
    assert len(t) == 4
    for row in t:
        assert row["value"] is not None and row["value"] > 0, row
        assert row["status"] in ("PASS", "FAIL")


def _fake_result(node_p50: float, node_p95: float, node_fps: float, naive_fps: float, bare_ms: float) -> dict:
    def phase(p50, p95, fps):
        return {"masks": 10, "latency_p50_ms": p50, "latency_p95_ms": p95, "throughput_fps": fps,
                "latency_first_quarter_p50_ms": p50, "latency_last_quarter_p50_ms": p95}

    return {"bare": [{"backend": "onnxruntime", "size": "480x360", "total_ms": bare_ms}],
            "node": {"info": {"backend": "onnxruntime"},
                     "phases": {"15hz": phase(node_p50, node_p95, 15), "30hz": phase(node_p50, node_p95, 28),
                                "flood": phase(node_p50, node_p95, node_fps)}},
            "naive": {"phases": {"15hz": phase(500, 2000, 4), "30hz": phase(600, 2500, 4),
                                 "flood": phase(700, 3000, naive_fps)}}}


def test_targets_pass_and_fail_on_the_ratios():
    s = BenchSettings(model=Path("m.onnx"))
    good = {t["name"]: t for t in targets(_fake_result(22.0, 38.0, 40.0, 5.0, 20.0), s)}
    assert [t["status"] for t in good.values()] == ["PASS"] * 4
    assert list(good.values())[0]["value"] == pytest.approx(1.1)
    assert list(good.values())[2]["value"] == pytest.approx(8.0)
    res = _fake_result(22.0, 38.0, 40.0, 5.0, 20.0)
    res["bare"][0]["paced_total_ms"] = {"15hz": 25.0, "30hz": 19.0}
    res["node"]["phases"]["flood"]["latency_p95_ms"] = 45.0
    p95_note = targets(res, s)[1]["note"]
    assert "at 30 Hz: 2.00x" in p95_note and "flooded (over capacity): 2.25x" in p95_note
    assert "naive: 125.0x" in p95_note
    bad = targets(_fake_result(30.0, 50.0, 12.0, 5.0, 20.0), s)
    assert [t["status"] for t in bad] == ["FAIL"] * 4
    missing = targets({"bare": []}, s)
    assert [t["status"] for t in missing] == ["n/a"] * 4


# ----------------------------------------------------------------------------- the naive baseline node


def _load_naive():
    spec = importlib.util.spec_from_file_location("naive_node", REPO / "bench" / "naive_node.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_naive_node_segments_each_frame_with_header_and_size(tiny_model):
    import cv2
    import keras

    naive = _load_naive()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id("bench_naive_node"), signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = naive.NaiveRoadSegNode(context=ctx, namespace="/naive_test", parameter_overrides=[
            Parameter("model_path", value=str(tiny_model["onnx"]))])
        io = rclpy.create_node("tester", namespace="/naive_test", context=ctx)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub = io.create_publisher(Image, "image", qos)
        got: list[Image] = []
        io.create_subscription(Image, "road_mask", got.append, qos)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        ex.add_node(io)
        threading.Thread(target=ex.spin, daemon=True).start()
        end = time.monotonic() + 10
        while pub.get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.02)
        rng = np.random.default_rng(3)
        rgb = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
        pub.publish(numpy_to_image_msg(rgb, "rgb8", Header(frame_id="cam_a", stamp=Time(sec=11))))
        pub.publish(numpy_to_image_msg(np.ascontiguousarray(rgb[..., ::-1]), "bgr8",
                                       Header(frame_id="cam_b", stamp=Time(sec=12))))
        end = time.monotonic() + 20
        while (len(got) < 2 or node.processed < 2) and time.monotonic() < end:
            time.sleep(0.02)
        assert len(got) == 2 and node.processed == 2
        ex.shutdown(timeout_sec=2)
        node.destroy_node()
        io.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
    assert [(m.header.frame_id, m.header.stamp.sec) for m in got] == [("cam_a", 11), ("cam_b", 12)]
    for m in got:
        assert (m.width, m.height, m.encoding, m.step) == (70, 45, "mono8", 70)
    masks = [np.frombuffer(m.data, np.uint8).reshape(45, 70) for m in got]
    # what the tutorial code computes, with the same Keras model
    model = keras.saving.load_model(tiny_model["keras"], compile=False)
    x = cv2.resize(rgb, (64, 32)).astype(np.float32) / 255.0
    prob = cv2.resize(model.predict(x[None], verbose=0)[0, :, :, 0], (70, 45))
    expected = ((prob >= 0.5) * 255).astype(np.uint8)
    assert np.array_equal(masks[0], expected)
    assert np.array_equal(masks[1], expected)  # bgr8 input: channels swapped back before the model
    assert set(np.unique(masks[0])) <= {0, 255}


# ----------------------------------------------------------------------------- the GPU script, on the CPU


def test_gpu_script_runs_on_cpu_and_says_so(tiny_model, tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "ROAD_SEG_GPU_WHEELS": str(tmp_path / "no_wheels"),
           "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run(["bash", str(REPO / "bench" / "gpu" / "run_gpu_bench.sh"), "--quick", "--model",
                        str(tiny_model["onnx"]), "--engines", "onnxruntime", "--json", str(out),
                        "--budget-s", "0.05"], env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "CPU FALLBACK" in p.stdout and "no wheels in" in p.stdout
    res = json.loads(out.read_text())
    ort_res = res["engines"][0]
    assert ort_res["provider"] == "CPUExecutionProvider" and ort_res["gpu"] is False
    rows = ort_res["rows"]
    assert {(r["mode"], r["batch"]) for r in rows} == {(m, b) for m in ("run", "iobinding", "device")
                                                        for b in (1, 2, 4)}
    for r in rows:
        assert "error" not in r, r
        assert r["infer_ms"] > 0 and r["infer_fps"] == pytest.approx(1000 * r["batch"] / r["infer_ms"])
        assert r["device"].startswith("CPU FALLBACK")
        if r["mode"] != "device":
            assert r["e2e_ms"] > 0
    assert ort_res["segmenter"]["device"] == "cpu" and ort_res["segmenter"]["fps"] > 0
    assert res["summary"]["target"]["status"] == "n/a"


def test_gpu_keras_engine_runs_in_process(tiny_model):
    """The Keras engine on whichever backend this process has (TensorFlow here), tiny batches."""
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "bench" / "gpu" / "gpu_bench.py")
    gb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gb)
    frames = [np.full((36, 48, 3), v, np.uint8) for v in (40, 200)]
    res = gb.bench_keras(tiny_model["onnx"], "cpu", frames, (1, 2), 0.02, 2, lambda m: None)
    assert res["gpu"] is False
    rows = [r for r in res["rows"] if r["mode"] == "product"]
    assert [r["batch"] for r in rows] == [1, 2] and all("error" not in r for r in rows)
    assert all(r["e2e_fps"] > 0 for r in rows)
    summary = gb.summarise([res])
    assert summary["target"]["status"] == "n/a" and summary["summary"][0]["best_batch"] in (1, 2)


def test_transport_bench_measures_both_allocator_settings(tmp_path):
    """bench/transport.py: a round trip per size for the default and the tuned allocator."""
    out = tmp_path / "transport.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "transport.py"), "--sizes-kb", "1,518",
                           "--runs", "3", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())["round_trip_ms"]
    assert set(res) == {"default", "keep_large_buffers"}
    assert all(set(v) == {"1", "518"} and min(v.values()) > 0 for v in res.values())
    assert "| 518 kB |" in proc.stdout


def test_node_with_another_thread_setting_is_compared_with_that_bare_row():
    res = _fake_result(22.0, 38.0, 40.0, 5.0, 20.0)
    res["bare"].append({"backend": "onnxruntime-spinning", "size": "480x360", "total_ms": 11.0,
                        "paced_total_ms": {"15hz": 20.0}})
    plain = targets(res, BenchSettings(model=Path("m.onnx")))[0]
    assert plain["value"] == pytest.approx(22.0 / 20.0) and "onnxruntime total" in plain["name"]
    spinning = targets(res, BenchSettings(model=Path("m.onnx"), node_params={"inference_spinning": "always"}))[0]
    assert spinning["value"] == pytest.approx(2.0) and "onnxruntime-spinning" in spinning["name"]
    assert "1.10x" in spinning["note"]  # against that row's total at 15 Hz
    res["bare"].append({"backend": "onnxruntime-flip", "size": "480x360", "total_ms": 44.0,
                        "paced_total_ms": {"15hz": 44.0}})
    assert targets(res, BenchSettings(model=Path("m.onnx")))[0]["value"] == pytest.approx(22.0 / 20.0)
    flip = targets(res, BenchSettings(model=Path("m.onnx"), node_params={"flip_average": "true"}))[0]
    assert flip["value"] == pytest.approx(0.5) and "onnxruntime-flip" in flip["name"]


def test_intake_ab_bench_measures_both_settings(tmp_path):
    """bench/intake_ab.py: round trips with frames taken by the executor and by the intake thread."""
    out = tmp_path / "intake.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "intake_ab.py"), "--rounds", "1", "--pings", "4",
                           "--rate-hz", "30", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["p50_ms"]) == {"executor", "intake"} and min(res["p50_ms"].values()) > 0
    assert all(len(v) == 1 for v in res["round_p50_ms"].values())
    assert "| intake |" in proc.stdout and "| executor |" in proc.stdout


def test_take_cost_bench_times_each_way_of_taking_a_frame(tmp_path):
    """bench/take_cost.py: publish and take times for both frame sizes."""
    out = tmp_path / "take.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "take_cost.py"), "--runs", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ROS_DOMAIN_ID": str(domain_id("bench_take_cost"))})
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())["ms"]
    assert set(res) == {"480x360", "1280x720"}
    assert all(set(v) == {"publish", "take_message", "take_raw", "rosbags_deserialize"} and min(v.values()) > 0
               for v in res.values())
    assert "| 480x360 rgb8 |" in proc.stdout


def test_py_spy_profile_of_a_running_process(tmp_path):
    """--node-profile's sampler: py-spy attached to a live process writes its stacks (collapsed text)."""
    if py_spy_path() is None:
        pytest.skip("py-spy is not installed (requirements-dev.txt)")
    busy = subprocess.Popen([sys.executable, "-c", "import time\ndef spin_here():\n    end = time.time() + 20\n"
                             "    while time.time() < end:\n        pass\nspin_here()\n"])
    try:
        time.sleep(0.5)
        out = tmp_path / "stacks.txt"
        spy = start_py_spy(busy.pid, out, 1.0, log=lambda _m: None)
        assert finish_py_spy(spy, out, log=lambda _m: None) == str(out)
        stacks = out.read_text().splitlines()
        assert stacks and any("spin_here" in line for line in stacks)
        assert all(line.rsplit(" ", 1)[1].isdigit() for line in stacks)  # "frame;frame;... count"
        summary = summarize_stacks(out)
        assert summary[0].startswith(f"{sum(int(x.rsplit(' ', 1)[1]) for x in stacks)} samples")
        in_spin = sum(float(line.split("%")[0]) for line in summary[1:] if "spin_here" in line)
        assert in_spin > 90, summary  # the busy loop, whichever of its lines was sampled
    finally:
        busy.kill()
        busy.wait()
    missing = finish_py_spy(start_py_spy(busy.pid, tmp_path / "gone.txt", 1.0, log=lambda _m: None),
                              tmp_path / "gone.txt", log=lambda _m: None)
    assert missing is None  # the process has exited: reported, no file


def test_resize_ab_times_both_interpolations_for_each_frame_size():
    from bench.resize_ab import MODES, SIZES, measure

    res = measure(rounds=1, runs=2, hw=(32, 48))
    assert set(res) == {f"{w}x{h}" for w, h in SIZES}
    assert all(set(r) == set(MODES) and min(r.values()) > 0 for r in res.values())
