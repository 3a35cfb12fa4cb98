"""Launch file and config (declared parameters, agreeing defaults, no side effects), and `ros2 launch` for real:
Ctrl-C to the process group, bad arguments and missing packages, a node that cannot start."""

from __future__ import annotations

import ast
import concurrent.futures
import os
import signal
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import rclpy
import yaml
from domain_ids import domain_id
from launch_env import installed_env, require_launch_stack
from launch_helpers import assert_no_side_effects, call_name, ros2_launch, run_to_end
from rclpy.signals import SignalHandlerOptions

from road_seg_perception.ros.launch_args import parse_bool
from road_seg_perception.ros.node import NODE_NAME, PARAMETERS, RoadSegNode

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "road_segmentation.launch.py"
PARAMS_FILE = REPO / "config" / "road_seg.yaml"
RVIZ_FILE = REPO / "config" / "road_seg.rviz"
LAUNCH_ARGUMENTS = {"image", "use_compressed", "params_file", "model_path", "rviz", "lifecycle", "autostart"}
DOMAIN_ID = domain_id("launch")


def yaml_parameters() -> dict:
    return yaml.safe_load(PARAMS_FILE.read_text())[NODE_NAME]["ros__parameters"]


def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _pure_helpers() -> dict:
    """The launch file's pure helper functions, compiled without importing ``launch``."""
    tree = launch_tree()
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)
             and n.name in ("node_parameters", "remappings")]
    ns: dict = {"parse_bool": parse_bool}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(LAUNCH_FILE), "exec"), ns)
    return ns


# ----------------------------------------------------------------------------- config YAML


def test_yaml_lists_every_parameter_with_the_node_defaults():
    params = yaml_parameters()
    assert set(params) == set(PARAMETERS), set(params) ^ set(PARAMETERS)
    for name, spec in PARAMETERS.items():
        assert params[name] == spec.default, f"{name}: yaml {params[name]!r} != node default {spec.default!r}"
        assert type(params[name]) is type(spec.default), f"{name}: yaml type differs (rclpy would refuse it)"


def test_yaml_names_only_parameters_a_running_node_declares(tiny_model):
    """rcl parses the YAML (as ``--params-file``) and the node accepts every value in it."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = RoadSegNode(context=ctx, namespace="/l" + uuid.uuid4().hex[:8],
                           cli_args=["--ros-args", "--params-file", str(PARAMS_FILE),
                                     "-p", f"model_path:={tiny_model['onnx']}"])
        declared = {n for n in node.list_parameters([], 0).names if not n.startswith("qos_overrides.")}
        declared -= {"use_sim_time", "start_type_description_service"}
        assert declared == set(yaml_parameters())
        for name, value in yaml_parameters().items():
            if name != "model_path":
                assert node.get_parameter(name).value == value, name
        for name, spec in PARAMETERS.items():
            d = node.describe_parameter(name)
            assert d.description == spec.description and d.description, name
            if spec.float_range:
                assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == spec.float_range
            if spec.int_range:
                assert (d.integer_range[0].from_value, d.integer_range[0].to_value) == spec.int_range
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)


# ----------------------------------------------------------------------------- launch file (static)


def test_launch_arguments_and_node_parameters_are_declared_ones():
    tree = launch_tree()
    declared_args = {}
    node_param_keys = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and call_name(n) == "DeclareLaunchArgument":
            name = n.args[0].value
            default = next((k.value for k in n.keywords if k.arg == "default_value"), None)
            declared_args[name] = default
        if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "overrides" \
                and isinstance(n.slice, ast.Constant):
            node_param_keys.add(n.slice.value)
    assert set(declared_args) == LAUNCH_ARGUMENTS
    assert node_param_keys, "expected the node parameter overrides to be found"
    assert node_param_keys <= set(PARAMETERS), node_param_keys - set(PARAMETERS)
    # launch arguments that set node parameters default to "" = "as in the YAML": one source of defaults
    for name in LAUNCH_ARGUMENTS & set(PARAMETERS):
        assert isinstance(declared_args[name], ast.Constant) and declared_args[name].value == "", name
    text = LAUNCH_FILE.read_text()
    assert '"road_seg.yaml"' in text and '"road_seg.rviz"' in text
    assert PARAMS_FILE.is_file() and RVIZ_FILE.is_file()


def test_launch_file_has_no_side_effects():
    assert_no_side_effects(launch_tree())


def test_launch_helpers():
    h = _pure_helpers()
    assert h["node_parameters"]("/share/road_seg.yaml", "", "") == ["/share/road_seg.yaml"]
    assert h["node_parameters"]("p.yaml", "True", " /m.onnx ") == ["p.yaml", {"use_compressed": True,
                                                                               "model_path": "/m.onnx"}]
    assert h["node_parameters"]("p.yaml", "false", "") == ["p.yaml", {"use_compressed": False}]
    with pytest.raises(ValueError, match="use_compressed"):
        h["node_parameters"]("p.yaml", "yes please", "")
    assert h["remappings"]("/camera/image_raw") == [("image", "/camera/image_raw"),
                                                     ("image/compressed", "/camera/image_raw/compressed"),
                                                     ("camera_info", "/camera/camera_info")]
    assert dict(h["remappings"]("/image"))["camera_info"] == "/camera_info"
    assert dict(h["remappings"]("image"))["camera_info"] == "camera_info"
    assert dict(h["remappings"]("front/image_rect/"))["image/compressed"] == "front/image_rect/compressed"


def test_rviz_config_shows_overlay_and_mask():
    cfg = yaml.safe_load(RVIZ_FILE.read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image"}
    assert topics == {"/road_overlay", "/road_mask"}
    # the node publishes reliable; a reliable rviz subscription matches it
    assert all(d["Topic"]["Reliability Policy"] == "Reliable" for d in displays)


# ----------------------------------------------------------------------------- with the launch module


def _load_launch_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("road_segmentation_launch", LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _context(**overrides):
    from launch import LaunchContext

    context = LaunchContext()
    context.launch_configurations.update({"image": "/cam/image_raw", "use_compressed": "", "model_path": "",
                                          "params_file": str(PARAMS_FILE), "rviz": "false", "lifecycle": "false",
                                          "autostart": "false", **overrides})
    return context


def test_launch_description_builds_plain_and_managed():
    require_launch_stack()
    from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
    from launch_ros.actions import LifecycleNode, Node

    mod = _load_launch_module()
    ld = mod.generate_launch_description()
    args = {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    assert set(args) == LAUNCH_ARGUMENTS
    plain = mod._actions(_context())
    nodes = [a for a in plain if isinstance(a, Node)]
    assert len(nodes) == 1 and not isinstance(nodes[0], LifecycleNode)
    assert (nodes[0].node_package, nodes[0].node_executable) == ("road_seg_perception", "road_seg_node")
    assert sum(isinstance(a, RegisterEventHandler) for a in plain) == 1  # the node's exit ends the launch
    managed = mod._actions(_context(lifecycle="true"))
    assert [a.node_executable for a in managed if isinstance(a, Node)] == ["road_seg_lifecycle_node"]
    assert not any(isinstance(a, EmitEvent) for a in managed)  # left unconfigured for a lifecycle manager
    auto = mod._actions(_context(lifecycle="true", autostart="true"))
    assert sum(isinstance(a, EmitEvent) for a in auto) == 1  # configure; activate follows on "inactive"
    assert sum(isinstance(a, RegisterEventHandler) for a in auto) == 3
    with pytest.raises(ValueError, match="autostart:=true needs lifecycle:=true"):
        mod._actions(_context(autostart="true"))
    with pytest.raises(ValueError, match="use_compressed:='maybe'"):
        mod._actions(_context(use_compressed="maybe"))


# ----------------------------------------------------------------------------- ros2 launch, for real


@pytest.fixture(scope="module")
def ros_env():
    return installed_env(DOMAIN_ID)


def ctrl_c_run(env: dict, model: Path, domain_id: int, *, repeat_to_launch: int = 0) -> tuple[int | str, str]:
    """Launch, wait until the node publishes, then SIGINT the whole process group (a terminal's Ctrl-C).

    ``repeat_to_launch``: then SIGINT ``ros2 launch`` alone again, every 2 ms, until the node says it is
    shutting down (at most this many times): its event loop busy with those while its node exits.
    """
    proc = ros2_launch(env, "road_segmentation.launch.py", f"model_path:={model}", domain_id=domain_id)
    lines: list[str] = []
    ready = threading.Event()
    node_stopping = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "publishing " in line and "road_mask" in line:
                ready.set()
            if line.startswith("[road_seg_node-1]") and "shutting down" in line:
                node_stopping.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(120):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "never ready", "".join(lines)
    os.killpg(proc.pid, signal.SIGINT)
    for _ in range(repeat_to_launch):
        if node_stopping.wait(0.002):
            break
        os.kill(proc.pid, signal.SIGINT)
    try:
        code: int | str = proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = "hung after SIGINT"
    reader.join(10)
    return code, "".join(lines)


CTRL_C_RUNS = 20
SHUTDOWN_ERRORS = ("Failed to publish log message to rosout", "Traceback", "terminate called", "RCLError",
                   "KeyboardInterrupt", "process has died")


def test_ctrl_c_to_the_process_group_exits_cleanly_every_time(ros_env, tiny_model):
    """Node and launch both get SIGINT (terminal + launch's forward): 20 of 20 runs end with exit 0 everywhere."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        runs = list(pool.map(lambda k: ctrl_c_run(ros_env, tiny_model["onnx"], domain_id("launch_ctrl_c", k)),
                             range(CTRL_C_RUNS)))
    failures = [(code, out[-1500:]) for code, out in runs if not ended_cleanly(code, out)]
    assert not failures, f"{len(failures)} of {CTRL_C_RUNS} runs failed; first: {failures[0]}"


def node_lines(out: str) -> str:
    return "\n".join(line for line in out.splitlines() if line.startswith("[road_seg_node-1]"))


def ended_cleanly(code: int | str, out: str) -> bool:
    """Launch and node exited 0, the node shut down without errors, launch logged no error and raised no
    KeyboardInterrupt (``sigint_to_launch_only``: none inside its loop, not even in a weakref callback)."""
    return code == 0 and "process has finished cleanly" in out and "shutting down" in node_lines(out) \
        and not any(e in node_lines(out) for e in SHUTDOWN_ERRORS) and "[ERROR]" not in out \
        and "KeyboardInterrupt" not in out


REPEATED_RUNS = 6


def test_repeated_ctrl_c_while_the_node_exits_never_hangs_the_launch(ros_env, tiny_model):
    """Up to 200 more SIGINTs to ``ros2 launch`` while its node shuts down (a user hammering Ctrl-C).

    Python's default SIGINT handler raised KeyboardInterrupt inside launch's asyncio loop, which can drop a
    task's wake-up: ``ros2 launch`` then never exits or exits broken (4 of 6 runs failed without
    ``sigint_to_launch_only``)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        runs = list(pool.map(lambda k: ctrl_c_run(ros_env, tiny_model["onnx"], domain_id("launch_ctrl_c", k),
                                                  repeat_to_launch=200), range(REPEATED_RUNS)))
    failures = [(code, out[-1500:]) for code, out in runs if not ended_cleanly(code, out)]
    assert not failures, f"{len(failures)} of {REPEATED_RUNS} runs failed; first: {failures[0]}"


def test_missing_optional_package_starts_nothing_and_fails(ros_env, tiny_model):
    code, out = run_to_end(ros2_launch(ros_env, "road_segmentation.launch.py", "rviz:=true",
                                       f"model_path:={tiny_model['onnx']}"))
    assert code != 0
    assert "process started" not in out, out
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "rviz:=true needs the ROS package 'rviz2'" in errors[0], out


def test_bad_argument_starts_nothing_and_fails(ros_env):
    code, out = run_to_end(ros2_launch(ros_env, "road_segmentation.launch.py", "use_compressed:=maybe"))
    assert code != 0 and "process started" not in out, out
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "use_compressed:='maybe' must be true or false" in errors[0], out


def test_node_that_cannot_start_fails_the_launch(ros_env):
    code, out = run_to_end(ros2_launch(ros_env, "road_segmentation.launch.py", "model_path:=/nonexistent.onnx"))
    assert code != 0, out
    assert "cannot start" in out and "/nonexistent.onnx" in out
    assert "road_seg_node-1 exited with code 1" in out


def test_managed_node_whose_configure_fails_fails_the_launch(ros_env):
    code, out = run_to_end(ros2_launch(ros_env, "road_segmentation.launch.py", "lifecycle:=true",
                                       "autostart:=true", "model_path:=/nonexistent.onnx"))
    assert code != 0, out
    assert "configure failed" in out and "/nonexistent.onnx" in out
    assert "Traceback" not in out


def test_launch_args_module_is_stdlib_only_and_parses(tmp_path):
    """The helpers both launch files import: plain functions over the standard library."""
    import sys as _sys

    import road_seg_perception.ros.launch_args as la
    from road_seg_perception.ros.launch_args import bag_player, check_bag, parse_float

    tree = ast.parse(Path(la.__file__).read_text())
    for n in ast.walk(tree):
        if isinstance(n, ast.Import | ast.ImportFrom):
            mods = [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module]
            assert all(m.split(".")[0] in _sys.stdlib_module_names or m == "__future__" for m in mods), mods
    assert parse_bool("x", " TRUE ") is True and parse_bool("x", "false") is False
    with pytest.raises(ValueError, match="x:='yes' must be true or false"):
        parse_bool("x", "yes")
    assert parse_float("rate", "2.5", 1e-3) == 2.5
    with pytest.raises(ValueError, match="rate:='0' must be >= 0.001"):
        parse_float("rate", "0", 1e-3)
    assert check_bag(f" {tmp_path} ") == str(tmp_path)
    with pytest.raises(ValueError, match="bag:=... is required"):
        check_bag(" ")
    with pytest.raises(ValueError, match="no such file or folder"):
        check_bag(str(tmp_path / "nope"))
    assert bag_player("road-seg-replay") == "road-seg-replay"
    assert bag_player("auto") == ("ros2bag" if la.ros2bag_available() else "road-seg-replay")
    with pytest.raises(ValueError, match="player:='vlc'"):
        bag_player("vlc")


def test_sigint_raises_no_keyboard_interrupt_inside_the_launch_loop(monkeypatch):
    """``sigint_to_launch_only``: quiet while the launch's loop runs, the default handler outside it."""
    import asyncio
    import types

    from road_seg_perception.ros.launch_args import sigint_to_launch_only

    previous = signal.getsignal(signal.SIGINT)
    loop, other = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        assert not sigint_to_launch_only(None)  # no running launch: nothing installed
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert sigint_to_launch_only(loop) and sigint_to_launch_only(loop)

        async def interrupted(n: int) -> int:
            for _ in range(n):
                signal.raise_signal(signal.SIGINT)  # its handler runs before this returns
                await asyncio.sleep(0)
            return n

        assert loop.run_until_complete(interrupted(5)) == 5
        with pytest.raises(KeyboardInterrupt):  # outside the loop: Python's default
            signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):  # another loop, unless installed for it
            other.run_until_complete(interrupted(1))
        assert sigint_to_launch_only(other)  # a later launch in the same process takes it over
        assert other.run_until_complete(interrupted(2)) == 2
        # a handler set by someone else, or rclpy's (its C handler would be replaced), is left alone
        custom = lambda signum, frame: None  # noqa: E731
        signal.signal(signal.SIGINT, custom)
        assert not sigint_to_launch_only(loop) and signal.getsignal(signal.SIGINT) is custom
        signal.signal(signal.SIGINT, signal.default_int_handler)
        options = types.SimpleNamespace(NO=0)
        fake = types.SimpleNamespace(SignalHandlerOptions=options, get_current_signal_handlers_options=lambda: 1)
        monkeypatch.setitem(__import__("sys").modules, "rclpy.signals", fake)
        assert not sigint_to_launch_only(loop) and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
        loop.close()
        other.close()
