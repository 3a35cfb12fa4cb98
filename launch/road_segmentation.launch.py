"""Start ``road_seg_node`` (and, with ``rviz:=true``, rviz2 showing the overlay and the mask).

    ros2 launch road_seg_perception road_segmentation.launch.py image:=/camera/image_raw
    ros2 launch road_seg_perception road_segmentation.launch.py image:=/camera/image_raw use_compressed:=true rviz:=true

Node parameter defaults live in ``config/road_seg.yaml`` (``params_file``). ``use_compressed`` and
``model_path`` override the YAML only when given. This file has no side effects.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from road_seg_perception.ros.launch_args import parse_bool

PACKAGE = "road_seg_perception"


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


def _node_action(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    return [Node(
        package=PACKAGE,
        executable="road_seg_node",
        name="road_seg_node",
        output="screen",
        parameters=node_parameters(arg("params_file"), arg("use_compressed"), arg("model_path")),
        remappings=remappings(arg("image")),
    )]


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
        OpaqueFunction(function=_node_action),
        Node(
            package="rviz2",
            executable="rviz2",
            name="road_seg_rviz",
            output="screen",
            arguments=["-d", PathJoinSubstitution([share, "config", "road_seg.rviz"])],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
