"""Replay a rosbag2 through ``road_seg_node``: a bag player + the node (+ rviz2, + a recording of the outputs).

    ros2 launch road_seg_perception rosbag_replay.launch.py bag:=out/demo/camvid_val_bag
    ros2 launch road_seg_perception rosbag_replay.launch.py bag:=drive.mcap rate:=0.5 rviz:=true \\
        record:=true record_bag:=drive_road_seg exit_when_done:=true

The player is ``ros2 bag play`` (and ``ros2 bag record``) where ``ros2 bag`` is installed; without it
(``player:=auto``, e.g. a pip-only set-up) the package's own ``road-seg-replay`` plays the bag and
records the outputs: it publishes once the node subscribes to the image topic, so ``play_delay``
is not used. ``player:=ros2bag|road-seg-replay`` chooses explicitly.

The node comes from ``road_segmentation.launch.py`` (same parameters file, same remappings); its
defaults live in ``config/road_seg.yaml``. Every argument is checked before any process starts; a
player or node that fails ends the launch with a non-zero exit. Importing this file has no side effects;
running it keeps SIGINT from raising KeyboardInterrupt inside launch's event loop (``sigint_to_launch_only``).
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
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from road_seg_perception.ros.launch_args import (
    bag_player,
    check_bag,
    default_record_bag,
    parse_bool,
    parse_float,
    sigint_to_launch_only,
)

PACKAGE = "road_seg_perception"
OUTPUT_TOPICS = ["/road_mask", "/road_overlay", "/diagnostics"]
NODE_LAUNCH_ARGS = ("image", "use_compressed", "params_file", "model_path", "rviz", "lifecycle", "autostart")


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


def replay_arguments(bag, rate, loop, topics, wait_for, record, record_bag, storage):
    """``road-seg-replay`` arguments doing what ``ros2 bag play`` (+ ``record``) would.

    ``wait_for``: the node's input topic; replay starts once the node subscribes to it.
    """
    if not bag.strip():
        raise ValueError("launch argument bag:=... is required (a rosbag2 folder or file)")
    args = [bag.strip(), "--rate", str(parse_float("rate", rate, 1e-3))]
    if parse_bool("loop", loop):
        args.append("--loop")
    if topics.split():
        args += ["--topics", *topics.split()]
    args += ["--wait-for", wait_for]
    if parse_bool("record", record):
        if storage.strip() not in ("", "sqlite3", "mcap"):
            raise ValueError(f"launch argument storage:={storage!r} must be sqlite3 or mcap with road-seg-replay")
        args += ["--record", record_bag.strip() or default_record_bag(), "--record-topics", *OUTPUT_TOPICS,
                 "--storage", storage.strip() or "sqlite3"]
    return args


def player_exit(exit_when_done):
    """What happens when the player ends: an error (launch exit 1) unless it exited 0; then, with
    ``exit_when_done``, the launch shuts down (closing a ``ros2 bag record`` recording)."""
    def on_exit(event, context):
        if event.returncode != 0:
            raise RuntimeError(f"bag player {event.action.name} exited with code {event.returncode}")
        return [EmitEvent(event=Shutdown(reason="bag replay finished"))] if exit_when_done else []
    return on_exit


def _actions(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    sigint_to_launch_only(context.asyncio_loop)  # see docs/ros.md: Ctrl-C and launch

    # Every check first: nothing has started when one fails.
    bag = check_bag(arg("bag"))
    record = parse_bool("record", arg("record"))
    exit_when_done = parse_bool("exit_when_done", arg("exit_when_done"))
    compressed = parse_bool("use_compressed", arg("use_compressed") or "false")
    if bag_player(arg("player")) == "ros2bag":
        play = ExecuteProcess(cmd=play_command(bag, arg("rate"), arg("loop"), arg("play_delay"), arg("topics")),
                              name="ros2_bag_play", output="screen")
        players = [play]
        if record:
            players.append(ExecuteProcess(cmd=record_command(arg("record_bag"), arg("storage")),
                                          name="ros2_bag_record", output="screen"))
    else:
        image = arg("image").rstrip("/") + ("/compressed" if compressed else "")
        play = Node(package=PACKAGE, executable="road-seg-replay", name="road_seg_replay", output="screen",
                    arguments=replay_arguments(bag, arg("rate"), arg("loop"), arg("topics"), image, arg("record"),
                                               arg("record_bag"), arg("storage")))
        players = [play]
    handler = RegisterEventHandler(OnProcessExit(target_action=play, on_exit=player_exit(exit_when_done)))
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare(PACKAGE), "launch",
                                                            "road_segmentation.launch.py"])),
        launch_arguments={name: LaunchConfiguration(name) for name in NODE_LAUNCH_ARGS}.items(),
    )
    return [handler, node, *players]


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 to replay (e.g. one made by road-seg-bag make)"),
        DeclareLaunchArgument("player", default_value="auto", choices=["auto", "ros2bag", "road-seg-replay"],
                              description="Bag player; auto: ros2 bag where installed, else road-seg-replay"),
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
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false"],
                              description="Start the managed (lifecycle) node"),
        DeclareLaunchArgument("autostart", default_value="false", choices=["true", "false"],
                              description="With lifecycle:=true: configure and activate it at launch"),
        DeclareLaunchArgument("record", default_value="false", choices=["true", "false"],
                              description="Record " + " ".join(OUTPUT_TOPICS) + " (with the player)"),
        DeclareLaunchArgument("record_bag", default_value="",
                              description="Output bag of record:=true; empty: a rosbag2_<date>-<time> name"),
        DeclareLaunchArgument("storage", default_value="",
                              description="Storage of the recorded bag (sqlite3, mcap); empty: the player's default"),
        DeclareLaunchArgument("exit_when_done", default_value="false", choices=["true", "false"],
                              description="Shut everything down (closing the recording) when the replay ends"),
        OpaqueFunction(function=_actions),
    ])
