"""ROS 2 layer: message conversions, the node and bag replay. Imports rclpy and message types."""
