"""launch/rosbag_replay.launch.py, checked statically (launch and launch_ros are not installable here)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_launch import _call_name as _name
from test_launch import assert_no_side_effects

from road_seg_perception.ros.launch_args import parse_bool, parse_float

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "rosbag_replay.launch.py"
NODE_LAUNCH_ARGS = {"image", "use_compressed", "params_file", "model_path", "rviz"}


def tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def helpers() -> dict:
    """The pure helper functions and constants, compiled without importing ``launch``."""
    body = [n for n in tree().body if (isinstance(n, ast.FunctionDef) and not n.name.startswith(("_", "generate")))
            or isinstance(n, ast.Assign)]
    ns: dict = {"parse_bool": parse_bool, "parse_float": parse_float}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(LAUNCH_FILE), "exec"), ns)  # noqa: S102
    return ns


def test_arguments_and_included_node_launch():
    args = {n.args[0].value: n for n in ast.walk(tree()) if isinstance(n, ast.Call)
            and _name(n) == "DeclareLaunchArgument"}
    assert NODE_LAUNCH_ARGS | {"bag", "rate", "loop", "record", "record_bag", "exit_when_done"} <= set(args)
    # node-parameter arguments default to "" = "as in config/road_seg.yaml", as in road_segmentation.launch.py
    for name in ("use_compressed", "model_path"):
        default = next(k.value for k in args[name].keywords if k.arg == "default_value")
        assert isinstance(default, ast.Constant) and default.value == ""
    text = LAUNCH_FILE.read_text()
    assert '"road_segmentation.launch.py"' in text and (REPO / "launch" / "road_segmentation.launch.py").is_file()
    for name in NODE_LAUNCH_ARGS:
        assert f'"{name}"' in text


def test_no_side_effects_at_import():
    assert_no_side_effects(tree(), allowed_calls=frozenset({"ExecuteProcess"}))  # it starts ros2 bag play/record


def test_command_lines():
    h = helpers()
    assert h["play_command"]("bags/drive", "0.5", "false", "3.0", "") == [
        "ros2", "bag", "play", "bags/drive", "--rate", "0.5", "--delay", "3.0"]
    assert h["play_command"]("b", "1", "True", "0", "/camera/image_raw /camera/camera_info") == [
        "ros2", "bag", "play", "b", "--rate", "1.0", "--delay", "0.0", "--loop",
        "--topics", "/camera/image_raw", "/camera/camera_info"]
    assert h["record_command"]("", "") == ["ros2", "bag", "record", "/road_mask", "/road_overlay", "/diagnostics"]
    assert h["record_command"]("out", "mcap")[:7] == ["ros2", "bag", "record", "-o", "out", "--storage", "mcap"]
    with pytest.raises(ValueError, match="bag:=... is required"):
        h["play_command"]("", "1", "false", "0", "")
    with pytest.raises(ValueError, match="rate:='fast' must be a number"):
        h["play_command"]("b", "fast", "false", "0", "")
    with pytest.raises(ValueError, match="loop:='yes' must be true or false"):
        h["play_command"]("b", "1", "yes", "0", "")
    with pytest.raises(ValueError, match="play_delay"):
        h["play_command"]("b", "1", "false", "-1", "")
