"""Launch file and config: they name only parameters the node declares, defaults agree, no side effects."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.signals import SignalHandlerOptions

from road_seg_perception.ros.launch_args import parse_bool
from road_seg_perception.ros.node import NODE_NAME, PARAMETERS, RoadSegNode

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "road_segmentation.launch.py"
PARAMS_FILE = REPO / "config" / "road_seg.yaml"
RVIZ_FILE = REPO / "config" / "road_seg.rviz"
LAUNCH_ARGUMENTS = {"image", "use_compressed", "params_file", "model_path", "rviz"}
DOMAIN_ID = 1 + (os.getpid() + 97) % 200


def yaml_parameters() -> dict:
    return yaml.safe_load(PARAMS_FILE.read_text())[NODE_NAME]["ros__parameters"]


def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


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
        if isinstance(n, ast.Call) and _call_name(n) == "DeclareLaunchArgument":
            name = n.args[0].value
            default = next((k.value for k in n.keywords if k.arg == "default_value"), None)
            declared_args[name] = default
        if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "overrides" \
                and isinstance(n.slice, ast.Constant):
            node_param_keys.add(n.slice.value)
        if isinstance(n, ast.Dict):
            node_param_keys |= {k.value for k in n.keys if isinstance(k, ast.Constant)}
    assert set(declared_args) == LAUNCH_ARGUMENTS
    assert node_param_keys, "expected the node parameter overrides to be found"
    assert node_param_keys <= set(PARAMETERS), node_param_keys - set(PARAMETERS)
    # launch arguments that set node parameters default to "" = "as in the YAML": one source of defaults
    for name in LAUNCH_ARGUMENTS & set(PARAMETERS):
        assert isinstance(declared_args[name], ast.Constant) and declared_args[name].value == "", name
    text = LAUNCH_FILE.read_text()
    assert '"road_seg.yaml"' in text and '"road_seg.rviz"' in text
    assert PARAMS_FILE.is_file() and RVIZ_FILE.is_file()


SIDE_EFFECT_CALLS = {"eval", "exec", "system", "popen", "run", "check_call", "check_output", "ExecuteProcess",
                     "open", "remove", "unlink", "mkdir", "makedirs", "rmtree", "write_text"}


def assert_no_side_effects(tree: ast.Module, allowed_calls: frozenset[str] = frozenset()) -> None:
    """A launch file calls nothing with side effects, imports only launch, launch_ros and the package's
    argument parsers, and holds only imports, constants, functions and its docstring at module level."""
    banned = SIDE_EFFECT_CALLS - allowed_calls
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            assert _call_name(n) not in banned, f"line {n.lineno}: {_call_name(n)}()"
        if isinstance(n, ast.Import | ast.ImportFrom):
            mods = [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]
            for m in mods:
                assert m.split(".")[0] in {"launch", "launch_ros"} or m == "road_seg_perception.ros.launch_args", \
                    f"line {n.lineno}: imports {m}"
    for n in tree.body:
        assert isinstance(n, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.Assign | ast.Expr), ast.dump(n)[:80]
        if isinstance(n, ast.Expr):
            assert isinstance(n.value, ast.Constant), "only the docstring may be a bare expression"


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


def _require_launch():
    try:
        from launch import LaunchContext, LaunchDescription  # noqa: F401
        from launch_ros.actions import Node  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the ROS 2 'launch'/'launch_ros' Python modules are not importable here ({e}); "
                    "this test runs on a ROS 2 installation")


def _load_launch_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("road_segmentation_launch", LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_launch_description_builds():
    _require_launch()
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    mod = _load_launch_module()
    ld = mod.generate_launch_description()
    args = {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    assert set(args) == LAUNCH_ARGUMENTS
    context = LaunchContext()
    context.launch_configurations.update({"image": "/cam/image_raw", "use_compressed": "", "model_path": "",
                                          "params_file": str(PARAMS_FILE), "rviz": "false"})
    actions = mod._node_action(context)
    assert len(actions) == 1 and isinstance(actions[0], Node)
    assert actions[0].node_package == "road_seg_perception"
    assert actions[0].node_executable == "road_seg_node"


def test_launch_runs_the_node(tiny_model):
    """Launch the installed package and see the node come up (needs launch and an installed package)."""
    _require_launch()
    try:
        from ament_index_python.packages import get_package_share_directory

        get_package_share_directory("road_seg_perception")
    except Exception as e:  # PackageNotFoundError or a missing ament index
        pytest.skip(f"road_seg_perception is not installed in an ament index ({e}); build it with colcon")
    ns = "/lt" + uuid.uuid4().hex[:8]
    script = textwrap.dedent(f"""
        from launch import LaunchDescription, LaunchService
        from launch.actions import GroupAction, IncludeLaunchDescription
        from launch.launch_description_sources import PythonLaunchDescriptionSource
        from launch_ros.actions import PushRosNamespace
        ls = LaunchService()
        ls.include_launch_description(LaunchDescription([GroupAction([
            PushRosNamespace({ns[1:]!r}),
            IncludeLaunchDescription(PythonLaunchDescriptionSource({str(LAUNCH_FILE)!r}),
                                     launch_arguments={{"image": "image", "model_path": {str(tiny_model['onnx'])!r},
                                                       "params_file": {str(PARAMS_FILE)!r}}}.items()),
        ])]))
        raise SystemExit(ls.run())
    """)
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
    probe = rclpy.create_node("launch_probe", context=ctx)
    try:
        end = time.monotonic() + 60
        found = False
        while time.monotonic() < end and proc.poll() is None and not found:
            topics = dict(probe.get_topic_names_and_types())
            found = topics.get(f"{ns}/road_mask") == ["sensor_msgs/msg/Image"]
            time.sleep(0.2)
        assert found, f"{ns}/road_mask never appeared"
    finally:
        probe.destroy_node()
        rclpy.try_shutdown(context=ctx)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert "cannot start" not in out, out


def test_launch_args_module_is_side_effect_free_and_parses():
    """The helpers both launch files import: plain functions, no imports beyond __future__."""
    import road_seg_perception.ros.launch_args as la
    from road_seg_perception.ros.launch_args import parse_float

    tree = ast.parse(Path(la.__file__).read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in imports)
    assert parse_bool("x", " TRUE ") is True and parse_bool("x", "false") is False
    with pytest.raises(ValueError, match="x:='yes' must be true or false"):
        parse_bool("x", "yes")
    assert parse_float("rate", "2.5", 1e-3) == 2.5
    with pytest.raises(ValueError, match="rate:='0' must be >= 0.001"):
        parse_float("rate", "0", 1e-3)
