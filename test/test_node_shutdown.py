"""The node process ends cleanly on SIGTERM and SIGINT, every time, also while its parameter services are busy.

Each run starts ``road_seg_node`` (and ``road_seg_lifecycle_node``), waits until it publishes, keeps its
parameter services under load from this process, then signals it: exit 0, a "shutting down" line and
no error (``RCLError``, rosout "context is invalid", a traceback) on the way out.

One exception, bounded and reported: Fast DDS deletes its participant inside rclpy's ``Node.destroy_node``
(the last node of a context), and under load that native tear-down can block for good (a rare event, seen
once in hundreds of runs). The process's clean-up watchdog then prints the stacks and exits 1 within
``CLEANUP_LIMIT_S`` (docs/ros.md). A batch tolerates one such run, recognised by its stack, with a warning;
a second one, or any other failure, fails the test.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest
import rclpy
from domain_ids import domain_id
from rcl_interfaces.srv import GetParameters, ListParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

REPO = Path(__file__).resolve().parent.parent
DOMAIN_ID = domain_id("node_shutdown")
SHUTDOWN_ERRORS = ("Failed to publish log message to rosout", "Traceback", "terminate called", "RCLError",
                   "KeyboardInterrupt", "Exception")
RUNS = 30
PARALLEL = 5
#: Runs per batch that may end by the watchdog in the DDS tear-down (see the module docstring).
TEARDOWN_HANGS_TOLERATED = 1


def ended_in_dds_teardown(code: int | str, out: str) -> bool:
    """Whether the clean-up watchdog ended the run with the main thread inside rclpy's ``Node.destroy_node``,
    after the node had logged "shutting down" and with no other error in the output."""
    if code != 1 or "shutting down" not in out or "Timeout (0:00:" not in out:
        return False
    if any(e in out for e in SHUTDOWN_ERRORS):
        return False
    for stack in out.split("(most recent call first):")[1:]:
        frames = [ln.strip() for ln in stack.splitlines() if ln.strip().startswith("File ")]
        if any(" in run_node" in f for f in frames):  # the main thread
            return bool(frames) and "rclpy/node.py" in frames[0] and frames[0].endswith(" in destroy_node")
    return False


def check_runs(results: list[tuple[int | str, str]], tail: int = 6000) -> None:
    """Every run exited 0, logged "shutting down" and no error; at most :data:`TEARDOWN_HANGS_TOLERATED`
    runs ended by the watchdog in the DDS tear-down instead (a warning names them)."""
    teardown = [ended_in_dds_teardown(code, out) for code, out in results]
    hangs = [out for (_, out), t in zip(results, teardown, strict=True) if t]
    failures = [(code, out[-tail:]) for (code, out), t in zip(results, teardown, strict=True) if not t
                and (code != 0 or "shutting down" not in out or any(e in out for e in SHUTDOWN_ERRORS))]
    assert not failures, f"{len(failures)} of {len(results)} runs failed; first: {failures[0]}"
    assert len(hangs) <= TEARDOWN_HANGS_TOLERATED, f"{len(hangs)} runs hung in the DDS tear-down; first: {hangs[0]}"
    if hangs:
        warnings.warn(f"{len(hangs)} of {len(results)} runs ended by the clean-up watchdog in the DDS tear-down "
                      f"(rclpy Node.destroy_node): {hangs[0][-1500:]}", stacklevel=2)


class ParameterLoad:
    """Calls ``list_parameters`` and ``get_parameters`` of the given nodes back to back, from one thread."""

    def __init__(self):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("parameter_load", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.targets: dict[str, tuple] = {}
        self.lock = threading.Lock()
        self.calls = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def add(self, fqn: str) -> None:
        with self.lock:
            self.targets[fqn] = (self.node.create_client(ListParameters, f"{fqn}/list_parameters"),
                                 self.node.create_client(GetParameters, f"{fqn}/get_parameters"))

    def ready(self, fqn: str) -> bool:
        with self.lock:
            clients = self.targets.get(fqn)
        return clients is not None and all(c.service_is_ready() for c in clients)

    def remove(self, fqn: str) -> None:
        with self.lock:
            self.targets.pop(fqn, None)  # clients are left to the node: destroying one mid-spin is racy

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                clients = list(self.targets.values())
            for lst, get in clients:
                if lst.service_is_ready():
                    lst.call_async(ListParameters.Request())
                    get.call_async(GetParameters.Request(names=["threshold", "model_path", "backend"]))
                    self.calls += 2
            self.executor.spin_once(timeout_sec=0.005)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def stop_hung(proc: subprocess.Popen) -> None:
    """End a hung node with SIGABRT, so its fault handler prints every thread's stack into the output."""
    proc.send_signal(signal.SIGABRT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def signal_run(module: str, model: Path, sig: int, load: ParameterLoad) -> tuple[int | str, str]:
    ns = "/s" + uuid.uuid4().hex[:8]
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0",
               PYTHONFAULTHANDLER="1")
    ros_args = ["-r", f"__ns:={ns}", "-p", f"model_path:={model}"]
    proc = subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    fqn = f"{ns}/road_seg_node"
    load.add(fqn)
    try:
        end = time.monotonic() + 120
        while not load.ready(fqn) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        if not load.ready(fqn):
            proc.kill()
            proc.wait()
            return "never ready", "".join(lines)
        time.sleep(0.3)  # the parameter services are being called now
        proc.send_signal(sig)
        try:
            code: int | str = proc.wait(20)
        except subprocess.TimeoutExpired:
            code = "hung after the signal"
            stop_hung(proc)
    finally:
        load.remove(fqn)
    reader.join(10)
    return code, "".join(lines)


@pytest.fixture(scope="module")
def load():
    pl = ParameterLoad()
    yield pl
    pl.close()


@pytest.mark.parametrize("module", ["road_seg_perception.ros.node", "road_seg_perception.ros.lifecycle_node"])
def test_sigterm_and_sigint_always_exit_0(load, tiny_model, module):
    """30 runs (SIGTERM and SIGINT alternately, 5 at a time) of the plain node; fewer of the managed one."""
    runs = RUNS if module.endswith(".node") else 6
    sigs = [signal.SIGTERM if k % 2 == 0 else signal.SIGINT for k in range(runs)]
    calls_before = load.calls
    with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        results = list(pool.map(lambda s: signal_run(module, tiny_model["onnx"], s, load), sigs))
    check_runs(results)
    assert load.calls > calls_before, "the parameter services were never called"


def test_second_sigint_during_clean_up_is_harmless(tiny_model, load):
    """Ctrl-C in a terminal under ros2 launch: two SIGINTs, the second during the clean-up."""
    results = []
    for _ in range(3):
        code, out = signal_run_twice(tiny_model["onnx"], load)
        results.append((code, out))
    check_runs(results, tail=1500)


def signal_run_twice(model: Path, load: ParameterLoad) -> tuple[int | str, str]:
    ns = "/d" + uuid.uuid4().hex[:8]
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0",
               PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen([sys.executable, "-m", "road_seg_perception.ros.node", "--ros-args", "-r",
                             f"__ns:={ns}", "-p", f"model_path:={model}"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()
    shutting = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "publishing " in line:
                ready.set()
            if "shutting down" in line:
                shutting.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        proc.wait()
        return "never ready", "".join(lines)
    proc.send_signal(signal.SIGINT)
    shutting.wait(10)
    proc.send_signal(signal.SIGINT)  # lands while the node is being destroyed
    try:
        code: int | str = proc.wait(20)
    except subprocess.TimeoutExpired:
        code = "hung"
        stop_hung(proc)
    time.sleep(0.1)
    return code, "".join(lines)


def test_hung_clean_up_ends_with_the_stacks():
    """A clean-up that never returns: the watchdog prints every thread's stack and the process exits 1."""
    code = ("import threading, time\n"
            "import rclpy.logging\n"
            "from road_seg_perception.ros import node_process as p\n"
            "p.CLEANUP_LIMIT_S = 1.0\n"
            "threading.Thread(target=time.sleep, args=(60,), name='stuck_helper', daemon=True).start()\n"
            "p._arm_cleanup_watchdog(rclpy.logging.get_logger('t'))\n"
            "time.sleep(60)\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=50)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert elapsed < 30, elapsed
    assert "Timeout (0:00:01)!" in proc.stderr
    assert proc.stderr.count("most recent call first") >= 2, proc.stderr  # the main thread and the helper
    assert 'line 7 in <module>' in proc.stderr  # where the main thread hung


HUNG_IN_TEARDOWN = """[INFO] [1796464647.394603294] [s48fe286d.road_seg_node]: shutting down
Timeout (0:00:15)!
Thread 0x00007fb4c0a97600 (most recent call first):
  File "/v/lib/python3.11/site-packages/rclpy/node.py", line 1965 in destroy_node
  File "/r/road_seg_perception/ros/node.py", line 912 in destroy_node
  File "/r/road_seg_perception/ros/node_process.py", line 112 in run_node
  File "/r/road_seg_perception/ros/node.py", line 917 in main
  File "<frozen runpy>", line 88 in _run_code
"""


def test_only_a_watchdog_exit_inside_rclpy_destroy_node_counts_as_the_dds_teardown_hang():
    assert ended_in_dds_teardown(1, HUNG_IN_TEARDOWN)
    assert not ended_in_dds_teardown(0, HUNG_IN_TEARDOWN)
    assert not ended_in_dds_teardown(1, HUNG_IN_TEARDOWN.replace("shutting down", "cannot start"))
    assert not ended_in_dds_teardown(1, HUNG_IN_TEARDOWN + "Traceback (most recent call last):\n")
    worker_join = HUNG_IN_TEARDOWN.replace('rclpy/node.py", line 1965 in destroy_node',
                                           'threading.py", line 1119 in join')  # our own clean-up stuck
    assert not ended_in_dds_teardown(1, worker_join)
    with pytest.warns(UserWarning, match="1 of 2 runs ended by the clean-up watchdog in the DDS tear-down"):
        check_runs([(0, "shutting down\n"), (1, HUNG_IN_TEARDOWN)])  # one is tolerated, with a warning ...
    with pytest.raises(AssertionError, match="2 runs hung in the DDS tear-down"):
        check_runs([(1, HUNG_IN_TEARDOWN), (1, HUNG_IN_TEARDOWN)])  # ... two are not
    with pytest.raises(AssertionError, match="1 of 2 runs failed"):
        check_runs([(1, HUNG_IN_TEARDOWN), (1, worker_join)])
