"""Replay a rosbag2 through ``road_seg_node`` on a ROS 2 installation: ``ros2 bag play`` + the node
(+ rviz2, + ``ros2 bag record`` of the outputs).

    ros2 launch road_seg_perception rosbag_replay.launch.py bag:=out/demo/camvid_val_bag
    ros2 launch road_seg_perception rosbag_replay.launch.py bag:=drive.mcap rate:=0.5 rviz:=true \\
        record:=true record_bag:=drive_road_seg exit_when_done:=true

The node comes from ``road_segmentation.launch.py`` (same parameters file, same remappings); its
defaults live in ``config/road_seg.yaml``. Without ros2cli (pip-only set-ups) use
``road-seg-replay`` instead. This file has no side effects.
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from road_seg_perception.ros.launch_args import parse_bool, parse_float

PACKAGE = "road_seg_perception"
OUTPUT_TOPICS = ["/road_mask", "/road_overlay", "/diagnostics"]


def play_command(bag, rate, loop, delay, topics):
    """``ros2 bag play`` command line; ``topics`` is a space-separated list (empty: all of the bag's)."""
    if not bag.strip():
        raise ValueError("launch argument bag:=... is required (a rosbag2 folder or file)")
    cmd = ["ros2", "bag", "play", bag.strip(), "--rate", str(parse_float("rate", rate, 1e-3)),
           "--delay", str(parse_float("play_delay", delay, 0.0))]
    if parse_bool("loop", loop):
        cmd.append("--loop")
    if topics.split():
        cmd += ["--topics", *topics.split()]
    return cmd


def record_command(record_bag, storage):
    """``ros2 bag record`` of the node's outputs; ``record_bag`` empty: ros2 bag's timestamped name."""
    cmd = ["ros2", "bag", "record"]
    if record_bag.strip():
        cmd += ["-o", record_bag.strip()]
    if storage.strip():
        cmd += ["--storage", storage.strip()]
    return cmd + OUTPUT_TOPICS


def _bag_actions(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    play = ExecuteProcess(cmd=play_command(arg("bag"), arg("rate"), arg("loop"), arg("play_delay"), arg("topics")),
                          name="ros2_bag_play", output="screen")
    actions = [play]
    if parse_bool("record", arg("record")):
        actions.append(ExecuteProcess(cmd=record_command(arg("record_bag"), arg("storage")),
                                      name="ros2_bag_record", output="screen"))
    if parse_bool("exit_when_done", arg("exit_when_done")):
        actions.append(RegisterEventHandler(OnProcessExit(
            target_action=play, on_exit=[EmitEvent(event=Shutdown(reason="bag replay finished"))])))
    return actions


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 to replay (e.g. one made by road-seg-bag make)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate factor"),
        DeclareLaunchArgument("loop", default_value="false", choices=["true", "false"],
                              description="Replay the bag again and again"),
        DeclareLaunchArgument("play_delay", default_value="3.0",
                              description="Seconds ros2 bag play waits before publishing (the node loads its model)"),
        DeclareLaunchArgument("topics", default_value="",
                              description="Space-separated topics to play; empty: every topic of the bag"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="Camera image topic in the bag (road-seg-bag writes /camera/image_raw)"),
        DeclareLaunchArgument("use_compressed", default_value="",
                              description="true: the node reads <image>/compressed; empty: as in params_file"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "road_seg.yaml"]),
                              description="Node parameters (YAML); every default lives there"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Model file (.onnx or .keras); empty: as in params_file"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="Also start rviz2 with config/road_seg.rviz"),
        DeclareLaunchArgument("record", default_value="false", choices=["true", "false"],
                              description="Record " + " ".join(OUTPUT_TOPICS) + " with ros2 bag record"),
        DeclareLaunchArgument("record_bag", default_value="",
                              description="Output bag of record:=true; empty: ros2 bag's rosbag2_<date> name"),
        DeclareLaunchArgument("storage", default_value="",
                              description="Storage of the recorded bag (sqlite3, mcap); empty: ros2 bag's default"),
        DeclareLaunchArgument("exit_when_done", default_value="false", choices=["true", "false"],
                              description="Shut everything down (closing the recording) when the replay ends"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "road_segmentation.launch.py"])),
            launch_arguments={name: LaunchConfiguration(name) for name in
                              ("image", "use_compressed", "params_file", "model_path", "rviz")}.items(),
        ),
        OpaqueFunction(function=_bag_actions),
    ])
