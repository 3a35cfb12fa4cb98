"""The ``road_grid`` output's ROS side: ``camera_info`` -> intrinsics, grid -> ``nav_msgs/OccupancyGrid``,
road boundary -> ``geometry_msgs/PolygonStamped``, and the camera pose from tf where ``tf2_ros`` is
importable. The geometry is :mod:`road_seg_perception.core.ground_grid` and
:mod:`road_seg_perception.core.road_boundary`."""

from __future__ import annotations

import array
from typing import Any

import numpy as np

from road_seg_perception.core.ground_grid import CameraPose, GridConfigError, GridSpec, Intrinsics


def intrinsics_from_camera_info(msg: Any) -> Intrinsics:
    """Validated :class:`Intrinsics` of a ``sensor_msgs/CameraInfo``; :class:`GridConfigError` says what is wrong."""
    return Intrinsics(int(msg.width), int(msg.height), tuple(float(v) for v in msg.k),
                      tuple(float(v) for v in msg.d), str(msg.distortion_model)).validate()


def occupancy_grid_msg(grid: np.ndarray, spec: GridSpec, stamp: Any, frame_id: str) -> Any:
    """``nav_msgs/OccupancyGrid`` of an int8 ``(rows, cols)`` grid: ``stamp`` and ``frame_id`` in the header,
    ``info.origin`` at the grid's corner in ``frame_id`` (identity orientation)."""
    from nav_msgs.msg import OccupancyGrid

    if grid.shape != (spec.rows, spec.cols) or grid.dtype != np.int8:
        raise ValueError(f"grid is {grid.dtype} {grid.shape}, expected int8 ({spec.rows}, {spec.cols})")
    msg = OccupancyGrid()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.info.map_load_time = stamp
    msg.info.resolution = float(spec.resolution)
    msg.info.width, msg.info.height = spec.cols, spec.rows
    msg.info.origin.position.x, msg.info.origin.position.y = spec.origin
    data = array.array("b")
    data.frombytes(np.ascontiguousarray(grid).tobytes())
    msg.data = data
    return msg


def polygon_msg(points: np.ndarray, stamp: Any, frame_id: str) -> Any:
    """``geometry_msgs/PolygonStamped`` of ``(N, 2)`` (x, y) points in metres (z = 0), ``stamp`` and ``frame_id``
    in the header; no points when ``points`` is empty."""
    from geometry_msgs.msg import Point32, PolygonStamped

    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"polygon points must be (N, 2), got {points.shape}")
    msg = PolygonStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.polygon.points = [Point32(x=float(x), y=float(y), z=0.0) for x, y in points]
    return msg


def tf_available() -> bool:
    """Whether ``tf2_ros`` can be imported (a sourced ROS 2 installation; not the PyPI wheels)."""
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


class TfPoseSource:
    """The camera's optical frame in the grid frame, looked up from tf (latest transform).

    Needs ``tf2_ros``; the transform's child is the image's ``header.frame_id``, which by ROS
    convention is the optical frame (z forward, x right, y down), as ``camera_info`` assumes.
    """

    def __init__(self, node: Any):
        import tf2_ros

        self._tf2 = tf2_ros
        self.buffer = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)

    def pose(self, grid_frame: str, camera_frame: str) -> CameraPose:
        from rclpy.time import Time

        try:
            t = self.buffer.lookup_transform(grid_frame, camera_frame, Time()).transform
        except self._tf2.TransformException as e:
            raise GridConfigError(f"no transform {grid_frame} <- {camera_frame}: {e}") from e
        return CameraPose.from_transform((t.translation.x, t.translation.y, t.translation.z),
                                         (t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w))
