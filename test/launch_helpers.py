"""Launch-test tools: static checks of launch files, ``ros2 launch`` as a subprocess, and ``Probe`` (a test-side
node on its own context that feeds camera frames to a launched node and collects its outputs)."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image

REPO = Path(__file__).resolve().parent.parent
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
SHUTDOWN_ERRORS = ("Failed to publish log message to rosout", "Traceback", "terminate called", "RCLError")


def call_name(node: ast.Call) -> str:
    """The called name: ``f`` of ``f(...)`` and of ``x.f(...)``."""
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


SIDE_EFFECT_CALLS = {"eval", "exec", "system", "popen", "run", "check_call", "check_output", "ExecuteProcess",
                     "open", "remove", "unlink", "mkdir", "makedirs", "rmtree", "write_text"}


def assert_no_side_effects(tree: ast.Module, allowed_calls: frozenset[str] = frozenset()) -> None:
    """A launch file calls nothing with side effects, imports only launch, launch_ros, lifecycle_msgs and the
    package's argument parsers, and holds only imports, constants, functions and its docstring at module level."""
    banned = SIDE_EFFECT_CALLS - allowed_calls
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            assert call_name(n) not in banned, f"line {n.lineno}: {call_name(n)}()"
        if isinstance(n, ast.Import | ast.ImportFrom):
            mods = [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]
            for m in mods:
                assert m.split(".")[0] in {"launch", "launch_ros", "lifecycle_msgs"} \
                    or m == "road_seg_perception.ros.launch_args", \
                    f"line {n.lineno}: imports {m}"
    for n in tree.body:
        assert isinstance(n, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.Assign | ast.Expr), ast.dump(n)[:80]
        if isinstance(n, ast.Expr):
            assert isinstance(n.value, ast.Constant), "only the docstring may be a bare expression"


def ros2_launch(env: dict, *args: str, domain_id: int | None = None) -> subprocess.Popen:
    """``ros2 launch road_seg_perception ...`` in a session of its own (a terminal's process group), on
    ``domain_id`` (default: the ``ROS_DOMAIN_ID`` of ``env``)."""
    env = env if domain_id is None else dict(env, ROS_DOMAIN_ID=str(domain_id))
    return subprocess.Popen(["ros2", "launch", "road_seg_perception", *args], cwd=REPO,
                            env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_to_end(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, str]:
    """Exit code and output of a ``ros2_launch`` process; killed (and failing) after ``timeout`` s."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"ros2 launch still running after {timeout} s:\n{out}") from None
    return proc.returncode, out


def image_msg(rgb: np.ndarray, sec: int) -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3,
                data=rgb.tobytes())
    msg.header.frame_id = "front_camera"
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 250
    return msg


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


class Probe:
    """A test-side node on its own context: publishes camera frames, collects the launched node's outputs."""

    def __init__(self, image_topic: str, domain_id: int, namespace: str = "/"):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("launch_probe", namespace=namespace, context=self.ctx)
        self.pub = self.node.create_publisher(Image, image_topic, RELIABLE)
        self.lock = threading.Lock()
        self.got: dict[str, list] = {"road_mask": [], "road_overlay": [], "diagnostics": []}
        for name in ("road_mask", "road_overlay"):
            self.node.create_subscription(Image, "/" + name, self._keep(name), RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._keep("diagnostics"), 50)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _keep(self, name):
        def cb(msg):
            with self.lock:
                self.got[name].append(msg)
        return cb

    def outputs(self, name: str) -> list:
        with self.lock:
            return list(self.got[name])

    def wait(self, pred, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def segment(self, rgb: np.ndarray, sec: int, timeout: float = 60.0) -> tuple[Image, Image | None]:
        """Publish ``rgb`` (again every 0.5 s: the node may still be starting) until its mask arrives."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pub.publish(image_msg(rgb, sec))
            t = time.monotonic() + 0.5
            while time.monotonic() < t:
                mask = next((m for m in self.outputs("road_mask") if m.header.stamp.sec == sec), None)
                if mask is not None:
                    time.sleep(0.2)
                    overlay = next((m for m in self.outputs("road_overlay") if m.header.stamp.sec == sec), None)
                    return mask, overlay
                time.sleep(0.02)
        raise AssertionError(f"no road_mask with stamp {sec} within {timeout} s")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


class LastCall:
    """A service call whose answer ends the launch (e.g. a lifecycle shutdown), made last in an active test.

    Its node spins only in the calling thread, and nothing is torn down until :meth:`close` (call it
    from a post-shutdown test): the active test returns as soon as the answer comes, so launch_testing
    never sees the launch end while the test is still cleaning up.
    """

    def __init__(self, srv_type, name: str, domain_id: int):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("launch_last_call", context=self.ctx)
        self.client = self.node.create_client(srv_type, name)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def call(self, request, timeout: float = 30.0):
        """The response, or ``None`` if the service or its answer did not come within ``timeout`` seconds."""
        if not self.client.wait_for_service(timeout):
            return None
        future = self.client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        return future.result() if future.done() else None

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}
