"""launch/rosbag_replay.launch.py: its helpers and arguments statically, and ``ros2 launch`` of it with bad
arguments or a failing player (the replay itself: test_rosbag_replay_launch.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from domain_ids import domain_id
from launch_env import installed_env
from launch_helpers import assert_no_side_effects, ros2_launch, run_to_end
from launch_helpers import call_name as _name

from road_seg_perception.ros.launch_args import parse_bool, parse_float

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "rosbag_replay.launch.py"
NODE_LAUNCH_ARGS = {"image", "use_compressed", "params_file", "model_path", "rviz", "lifecycle", "autostart"}
DOMAIN_ID = domain_id("rosbag_launch")


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
    assert NODE_LAUNCH_ARGS | {"bag", "player", "rate", "loop", "record", "record_bag", "exit_when_done"} <= set(args)
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


def test_replay_arguments_for_the_road_seg_replay_player():
    h = helpers()
    h["default_record_bag"] = lambda: "rosbag2_now"
    assert h["replay_arguments"]("b", "2", "false", "", "/camera/image_raw", "false", "", "") == [
        "b", "--rate", "2.0", "--wait-for", "/camera/image_raw"]
    assert h["replay_arguments"]("b", "1", "true", "/camera/image_raw", "/camera/image_raw", "true", "out", "mcap") == [
        "b", "--rate", "1.0", "--loop", "--topics", "/camera/image_raw", "--wait-for", "/camera/image_raw",
        "--record", "out", "--record-topics", "/road_mask", "/road_overlay", "/diagnostics", "--storage", "mcap"]
    assert "rosbag2_now" in h["replay_arguments"]("b", "1", "false", "", "/i", "true", "", "")
    with pytest.raises(ValueError, match="rate:='0' must be >= 0.001"):
        h["replay_arguments"]("b", "0", "false", "", "/i", "false", "", "")
    with pytest.raises(ValueError, match="storage:='rosbag'"):
        h["replay_arguments"]("b", "1", "false", "", "/i", "true", "", "rosbag")


# ----------------------------------------------------------------------------- ros2 launch, for real


@pytest.fixture(scope="module")
def ros_env():
    return installed_env(DOMAIN_ID)


@pytest.mark.parametrize("args,error", [
    (["rate:=0"], "rate:='0' must be >= 0.001"),
    (["loop:=sometimes"], 'Argument "loop" provided value "sometimes" is not valid'),
    (["record:=true", "storage:=rosbag"], "storage:='rosbag'"),
    (["rviz:=true"], "rviz:=true needs the ROS package 'rviz2'"),
])
def test_bad_argument_starts_no_process_and_fails(ros_env, tmp_path, args, error):
    code, out = run_to_end(ros2_launch(ros_env, "rosbag_replay.launch.py", f"bag:={tmp_path}", *args))
    assert code != 0 and "process started" not in out, out
    errors = [line for line in out.splitlines() if "ERROR" in line]
    # one line; launch itself logs a bad choice twice (the argument's own check, then the exception)
    assert 1 <= len(errors) <= (2 if "not valid" in error else 1) and all(error in e for e in errors), out


def test_missing_bag_starts_no_process_and_fails(ros_env, tmp_path):
    code, out = run_to_end(ros2_launch(ros_env, "rosbag_replay.launch.py", f"bag:={tmp_path / 'nope'}"))
    assert code != 0 and "process started" not in out and "no such file or folder" in out, out


def test_failing_player_fails_the_launch(ros_env, tmp_path, tiny_model):
    """A folder that is not a bag: the player exits non-zero, the launch ends non-zero (and stops the node)."""
    (tmp_path / "notes.txt").write_text("not a bag")
    code, out = run_to_end(ros2_launch(ros_env, "rosbag_replay.launch.py", f"bag:={tmp_path}",
                                       f"model_path:={tiny_model['onnx']}", "player:=road-seg-replay"))
    assert code != 0, out
    assert "bag player road-seg-replay" in out and "exited with code" in out, out
