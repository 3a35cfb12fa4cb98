"""Start ``road_seg_node`` (plain or managed) and, with ``rviz:=true``, rviz2 showing the overlay and the mask.

    ros2 launch road_seg_perception road_segmentation.launch.py image:=/camera/image_raw
    ros2 launch road_seg_perception road_segmentation.launch.py image:=/camera/image_raw use_compressed:=true rviz:=true
    ros2 launch road_seg_perception road_segmentation.launch.py lifecycle:=true autostart:=true

Node parameter defaults live in ``config/road_seg.yaml`` (``params_file``). ``use_compressed`` and
``model_path`` override the YAML only when given. ``lifecycle:=true`` starts the managed node
(``road_seg_lifecycle_node``, unconfigured until a lifecycle manager drives it); ``autostart:=true``
configures and activates it from here. Every argument is checked, and rviz2 looked up, before any
process starts; the launch ends with the node, non-zero when the node failed (or, managed with
autostart, when configure failed). Importing this file has no side effects; running it keeps SIGINT
from raising KeyboardInterrupt inside launch's event loop (``sigint_to_launch_only``).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown, matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackagePrefix, FindPackageShare
from lifecycle_msgs.msg import Transition

from road_seg_perception.ros.launch_args import parse_bool, sigint_to_launch_only

PACKAGE = "road_seg_perception"
NODE_NAME = "road_seg_node"


def node_parameters(params_file, use_compressed, model_path):
    """The node's ``parameters``: the YAML, then only the overrides that were given (non-empty)."""
    overrides = {}
    if use_compressed.strip():
        overrides["use_compressed"] = parse_bool("use_compressed", use_compressed)
    if model_path.strip():
        overrides["model_path"] = model_path.strip()
    return [params_file, overrides] if overrides else [params_file]


def remappings(image):
    """Map the node's ``image``, ``image/compressed`` and ``camera_info`` onto the camera's topics."""
    image = image.rstrip("/")
    camera_info = image.rsplit("/", 1)[0] + "/camera_info" if "/" in image else "camera_info"
    return [("image", image), ("image/compressed", image + "/compressed"), ("camera_info", camera_info)]


def require_package(package, why, context):
    """Fail (one line) unless ``package`` is installed; called before any process starts."""
    try:
        FindPackagePrefix(package).perform(context)
    except Exception:  # ament_index_python's PackageNotFoundError
        raise RuntimeError(f"{why} needs the ROS package '{package}', which is not installed") from None


def end_with_process(event, context):
    """A required process ended: shut the launch down, with an error (exit 1) unless it exited 0."""
    if event.returncode != 0:
        raise RuntimeError(f"{event.action.name} exited with code {event.returncode}")
    return [EmitEvent(event=Shutdown(reason=f"{event.action.name} exited"))]


def configure_failed(context):
    raise RuntimeError(f"{NODE_NAME}: configure failed (its log says why)")


def _actions(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    sigint_to_launch_only(context.asyncio_loop)  # see docs/ros.md: Ctrl-C and launch
    managed = parse_bool("lifecycle", arg("lifecycle"))
    autostart = parse_bool("autostart", arg("autostart"))
    rviz = parse_bool("rviz", arg("rviz"))
    if autostart and not managed:
        raise ValueError("launch argument autostart:=true needs lifecycle:=true")
    if rviz:
        require_package("rviz2", "rviz:=true", context)
    common = {"package": PACKAGE, "name": NODE_NAME, "output": "screen",
              "parameters": node_parameters(arg("params_file"), arg("use_compressed"), arg("model_path")),
              "remappings": remappings(arg("image"))}
    actions = []
    if managed:
        node = LifecycleNode(executable="road_seg_lifecycle_node", namespace="", **common)
        if autostart:
            actions += [
                # activate once configured (not again after a later deactivate)
                RegisterEventHandler(OnStateTransition(
                    target_lifecycle_node=node, start_state="configuring", goal_state="inactive", entities=[
                        EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                    transition_id=Transition.TRANSITION_ACTIVATE))])),
                RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                                       goal_state="unconfigured",
                                                       entities=[OpaqueFunction(function=configure_failed)])),
            ]
        actions.append(node)
        if autostart:
            actions.append(EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                       transition_id=Transition.TRANSITION_CONFIGURE)))
    else:
        node = Node(executable="road_seg_node", **common)
        actions.append(node)
    actions.append(RegisterEventHandler(OnProcessExit(target_action=node, on_exit=end_with_process)))
    if rviz:
        actions.append(Node(package="rviz2", executable="rviz2", name="road_seg_rviz", output="screen",
                            arguments=["-d", PathJoinSubstitution([FindPackageShare(PACKAGE), "config",
                                                                   "road_seg.rviz"])]))
    return actions


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="Camera image topic (the compressed one is <image>/compressed, "
                                          "camera info <image's namespace>/camera_info)"),
        DeclareLaunchArgument("use_compressed", default_value="",
                              description="true: subscribe to <image>/compressed; empty: as in params_file"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "road_seg.yaml"]),
                              description="Node parameters (YAML); every default lives there"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Model file (.onnx or .keras); empty: as in params_file"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="Also start rviz2 with config/road_seg.rviz"),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false"],
                              description="Start the managed (lifecycle) node road_seg_lifecycle_node"),
        DeclareLaunchArgument("autostart", default_value="false", choices=["true", "false"],
                              description="With lifecycle:=true: configure and activate it at launch"),
        OpaqueFunction(function=_actions),
    ])
