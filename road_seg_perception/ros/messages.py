"""Building ``sensor_msgs`` messages from arrays (imports the message types)."""

from __future__ import annotations

import array
import sys
from typing import Any

import numpy as np

from road_seg_perception.bagio.image_codec import OUTPUT_LAYOUT, ImageConversionError


def numpy_to_image_msg(image: np.ndarray, encoding: str, header: Any = None):
    """Build a ``sensor_msgs/Image`` from an array (mono8, mono16, 32FC1, rgb8, bgr8, rgba8, bgra8).

    ``header`` is used as it is (stamp and frame_id unchanged).
    """
    from sensor_msgs.msg import Image

    if encoding not in OUTPUT_LAYOUT:
        raise ImageConversionError(f"cannot write encoding {encoding!r}; supported: {', '.join(OUTPUT_LAYOUT)}")
    channels, dtype = OUTPUT_LAYOUT[encoding]
    shape_ok = image.ndim == 2 if channels == 1 else (image.ndim == 3 and image.shape[2] == channels)
    if not shape_ok or image.dtype != dtype:
        raise ImageConversionError(
            f"encoding {encoding} needs a {dtype} array with {channels} channel(s), got {image.dtype} {image.shape}")
    a = np.ascontiguousarray(image)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = dtype.itemsize > 1 and sys.byteorder == "big"
    msg.step = int(a.shape[1]) * channels * dtype.itemsize
    buf = array.array("B")
    buf.frombytes(memoryview(a).cast("B"))
    msg.data = buf
    return msg
