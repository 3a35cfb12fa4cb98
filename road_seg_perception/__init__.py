"""Road (drivable-area) segmentation for ROS 2: a ROS-free core, a node, training and tools."""

__version__ = "0.1.0"
