"""rosbag2 reading and writing with ``rosbags``, and image codecs for bag and camera messages (no rclpy)."""
