"""ROS 2 layer: the node, its parameters, frame intake, message building, bag replay and launch helpers."""
