"""BASELINE ONLY - the road segmentation node a tutorial would write. Do not deploy it.

It exists so ``bench/run_bench.py`` can show what ``road_seg_node`` gains. Everything happens inside the
subscription callback on the executor thread: convert the message, ``model.predict`` on the Keras
model, threshold, resize back and publish. The subscription uses the default QoS (reliable,
KEEP_LAST depth 10), so when frames arrive faster than they are processed they queue and the
latency grows; nothing is dropped on purpose and nothing is counted.

    python bench/naive_node.py --ros-args -p model_path:=models/road_unet_camvid.keras -r image:=/cam

``model_path`` may name the ``.onnx`` file: its ``.keras`` sibling is used. Publishes ``road_mask``
(mono8 0/255, the input's header, the input's size), like the real node.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import ExternalShutdownException  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from road_seg_perception.core.backends import resolve_model_files  # noqa: E402

NODE_NAME = "naive_road_seg_node"


def keras_path(model_path: str) -> Path:
    """The ``.keras`` file for a model path (an ``.onnx`` path maps to its float sibling)."""
    p = Path(model_path)
    return (resolve_model_files(p)[1] or p.with_suffix(".keras")) if p.suffix == ".onnx" else p


class NaiveRoadSegNode(Node):
    """Tutorial-style node: conversion and ``model.predict`` in the image callback, default QoS depth 10."""

    def __init__(self, **node_kwargs: Any):
        super().__init__(NODE_NAME, **node_kwargs)  # node_kwargs (context, parameter_overrides): for tests
        import keras

        path = keras_path(self.declare_parameter("model_path", "").value)
        self.threshold = float(self.declare_parameter("threshold", 0.5).value)
        self.model = keras.saving.load_model(path, compile=False)
        self.input_hw = tuple(int(s) for s in self.model.input_shape[1:3])
        self.publisher = self.create_publisher(Image, "road_mask", 10)
        self.subscription = self.create_subscription(Image, "image", self.on_image, 10)
        self.processed = 0
        self.get_logger().info(f"BASELINE naive node: model {path}, predict in the callback, QoS depth 10")

    def on_image(self, msg: Image) -> None:
        # what cv_bridge.imgmsg_to_cv2 + the usual tutorial lines do
        img = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
        img = img.reshape(msg.height, msg.width, 3)
        if msg.encoding.lower() == "bgr8":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        h, w = self.input_hw
        x = cv2.resize(img, (w, h)).astype(np.float32) / 255.0
        prob = self.model.predict(np.expand_dims(x, 0), verbose=0)[0, :, :, 0]
        prob = cv2.resize(prob, (msg.width, msg.height))
        mask = ((prob >= self.threshold) * 255).astype(np.uint8)
        out = Image(header=msg.header, height=msg.height, width=msg.width, encoding="mono8",
                    is_bigendian=False, step=msg.width)
        out.data = mask.tobytes()
        self.publisher.publish(out)
        self.processed += 1


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = NaiveRoadSegNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # rclpy's SIGINT handler shuts the context down under the executor, which may then fail to build
        # its wait set (RCLError): that is the stop signal, not an error; anything else is re-raised
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.get_logger().info(f"processed {node.processed} frames")
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
