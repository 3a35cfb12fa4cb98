"""Image message <-> numpy conversions, written here because the PyPI cv_bridge is a broken ROS 1 build.

The readers are duck-typed on the message attributes (``encoding, height, width, step,
is_bigendian, data`` for ``sensor_msgs/Image``; ``format, data`` for ``CompressedImage``), so they
work on rclpy messages and on messages deserialised by the ``rosbags`` library alike; ``data``
may be ``bytes``, ``array.array``, a list of ints or a numpy array.

Every bad input raises :class:`ImageConversionError` with a message that says what is wrong.
"""

from __future__ import annotations

import array
from typing import Any

import cv2
import numpy as np

#: Default bound on ``height * width`` of one frame (16 MP, e.g. 4096 x 4096).
DEFAULT_MAX_PIXELS = 16_777_216
#: Default bound on the byte size of one message's ``data`` (64 MiB: a 16 MP rgba8 frame).
DEFAULT_MAX_BYTES = 67_108_864

#: Bytes per pixel of every supported raw encoding.
BYTES_PER_PIXEL: dict[str, int] = {
    "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2,
    "bayer_rggb8": 1, "bayer_bggr8": 1, "bayer_gbrg8": 1, "bayer_grbg8": 1,
    "yuv422": 2, "uyvy": 2, "yuyv": 2, "yuv422_yuy2": 2,
}
SUPPORTED_ENCODINGS = tuple(BYTES_PER_PIXEL)

_BAYER_TO_RGB = {
    "bayer_rggb8": cv2.COLOR_BayerRGGB2RGB, "bayer_bggr8": cv2.COLOR_BayerBGGR2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGBRG2RGB, "bayer_grbg8": cv2.COLOR_BayerGRBG2RGB,
}
_YUV_TO_RGB = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuyv": cv2.COLOR_YUV2RGB_YUYV, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
}
_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB}
#: Encodings :func:`numpy_to_image_msg` writes: (channels, numpy dtype).
OUTPUT_LAYOUT: dict[str, tuple[int, np.dtype]] = {
    "mono8": (1, np.dtype(np.uint8)), "mono16": (1, np.dtype(np.uint16)), "32FC1": (1, np.dtype(np.float32)),
    "rgb8": (3, np.dtype(np.uint8)), "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)), "bgra8": (4, np.dtype(np.uint8)),
}

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ImageConversionError(ValueError):
    """A message cannot be turned into an image: bad encoding, sizes, data or compression."""


# ----------------------------------------------------------------------------- helpers


def _int_field(msg: Any, name: str) -> int:
    value = getattr(msg, name, None)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ImageConversionError(f"field {name!r} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < 0:
        raise ImageConversionError(f"field {name!r} is negative ({value})")
    return value


def _data_len(data: Any) -> int:
    """Byte length of a message's ``data`` without copying it."""
    if data is None or isinstance(data, str):
        raise ImageConversionError(f"data must be a byte sequence, got {type(data).__name__}")
    if isinstance(data, np.ndarray):
        return int(data.nbytes) if data.dtype.itemsize == 1 else int(data.size)
    if isinstance(data, list | tuple):
        return len(data)
    try:
        return memoryview(data).nbytes
    except TypeError as e:
        raise ImageConversionError(f"data must be a byte sequence, got {type(data).__name__}") from e


def _data_bytes(data: Any) -> np.ndarray:
    """A 1-D uint8 view (or, for lists, a copy) of a message's ``data``."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageConversionError(f"data array must be uint8, got {data.dtype}")
        return data.reshape(-1)
    if isinstance(data, list | tuple):
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError) as e:
            raise ImageConversionError(f"data list is not a list of bytes: {e}") from e
        if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 255):
            raise ImageConversionError("data list must hold integers in [0, 255]")
        return arr.astype(np.uint8).reshape(-1)
    if isinstance(data, array.array) and data.itemsize != 1:
        raise ImageConversionError(f"data array.array must have 1-byte items, got typecode {data.typecode!r}")
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except (TypeError, ValueError) as e:
        raise ImageConversionError(f"data must be a byte sequence, got {type(data).__name__}") from e


def _check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height == 0 or width == 0:
        raise ImageConversionError(f"image has zero size ({width}x{height})")
    if height * width > max_pixels:
        raise ImageConversionError(
            f"image of {width}x{height} = {height * width} pixels exceeds max_image_pixels ({max_pixels})")


def _check_bytes(n: int, max_bytes: int) -> None:
    if n > max_bytes:
        raise ImageConversionError(f"message data of {n} bytes exceeds max_message_bytes ({max_bytes})")


# ----------------------------------------------------------------------------- raw Image


def validate_image_msg(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS,
                       max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[str, int, int, int]:
    """Cheap checks of a ``sensor_msgs/Image`` without touching its pixels.

    Returns ``(encoding, height, width, step)``; raises :class:`ImageConversionError`.
    """
    encoding = getattr(msg, "encoding", None)
    if not isinstance(encoding, str):
        raise ImageConversionError(f"encoding must be a string, got {type(encoding).__name__}")
    enc = encoding.strip().lower()
    if enc not in BYTES_PER_PIXEL:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    height, width, step = (_int_field(msg, n) for n in ("height", "width", "step"))
    _check_pixels(height, width, max_pixels)
    bpp = BYTES_PER_PIXEL[enc]
    if step < width * bpp:
        raise ImageConversionError(f"step {step} is smaller than width * {bpp} = {width * bpp} for {enc}")
    n = _data_len(getattr(msg, "data", None))
    _check_bytes(n, max_bytes)
    if n != step * height:
        raise ImageConversionError(f"data size {n} differs from step * height = {step} * {height} = {step * height}")
    if enc in _YUV_TO_RGB and width % 2:
        raise ImageConversionError(f"{enc} needs an even width, got {width}")
    if enc in _BAYER_TO_RGB and (width < 2 or height < 2):
        raise ImageConversionError(f"{enc} needs at least 2x2 pixels, got {width}x{height}")
    return enc, height, width, step


def image_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` (or a duck-typed equivalent) to an RGB uint8 ``(H, W, 3)`` array.

    ``mono16`` is scaled to 8 bits (the high byte); ``is_bigendian`` is honoured for it. The
    result owns its memory (it never aliases the message buffer).
    """
    enc, height, width, step = validate_image_msg(msg, max_pixels, max_bytes)
    bpp = BYTES_PER_PIXEL[enc]
    rows = _data_bytes(msg.data).reshape(height, step)[:, : width * bpp]
    try:
        if enc in ("rgb8", "bgr8", "rgba8", "bgra8"):
            px = rows.reshape(height, width, bpp)
            if enc == "rgb8":
                return px.copy()  # never alias the message buffer
            # OpenCV swaps/drops channels into a new array about 10x faster than numpy's strided copy
            return cv2.cvtColor(px, _TO_RGB[enc])
        if enc == "mono8":
            return cv2.cvtColor(np.ascontiguousarray(rows), cv2.COLOR_GRAY2RGB)
        if enc == "mono16":
            big = bool(getattr(msg, "is_bigendian", False))
            grey16 = np.ascontiguousarray(rows).view(">u2" if big else "<u2").reshape(height, width)
            return cv2.cvtColor((grey16 >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB)
        if enc in _BAYER_TO_RGB:
            return cv2.cvtColor(np.ascontiguousarray(rows), _BAYER_TO_RGB[enc])
        return cv2.cvtColor(np.ascontiguousarray(rows).reshape(height, width, 2), _YUV_TO_RGB[enc])
    except cv2.error as e:  # defensive: every shape OpenCV refuses is caught by validation above
        raise ImageConversionError(f"OpenCV could not convert {enc} {width}x{height}: {e}") from e


# ----------------------------------------------------------------------------- CompressedImage


def _jpeg_header(buf: bytes) -> tuple[int, int]:
    """``(height, width)`` from a JPEG's start-of-frame; checks that a scan and an end marker follow."""
    i, n = 2, len(buf)
    size: tuple[int, int] | None = None
    while i + 4 <= n:
        if buf[i] != 0xFF:
            raise ImageConversionError(f"corrupt jpeg: expected a marker at byte {i}")
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker == 0xD9:
            break
        seg_len = int.from_bytes(buf[i + 2: i + 4], "big")
        if seg_len < 2 or i + 2 + seg_len > n:
            raise ImageConversionError(f"corrupt jpeg: segment at byte {i} has bad length {seg_len}")
        if marker in _JPEG_SOF:
            if seg_len < 7:
                raise ImageConversionError("corrupt jpeg: start-of-frame segment too short")
            size = (int.from_bytes(buf[i + 5: i + 7], "big"), int.from_bytes(buf[i + 7: i + 9], "big"))
        if marker == 0xDA:  # start of scan: entropy-coded data follows, up to the end-of-image marker
            if size is None:
                raise ImageConversionError("corrupt jpeg: scan before any start-of-frame")
            if buf.rfind(b"\xff\xd9") < i + 2 + seg_len:
                raise ImageConversionError("corrupt jpeg: truncated (no end-of-image marker after the scan)")
            return size
        i += 2 + seg_len
    raise ImageConversionError("corrupt jpeg: no start-of-frame and scan found")


def _png_header(buf: bytes) -> tuple[int, int]:
    if len(buf) < 33 or buf[12:16] != b"IHDR":
        raise ImageConversionError("corrupt png: missing IHDR header")
    if b"IEND" not in buf[-12:]:
        raise ImageConversionError("corrupt png: truncated (no IEND chunk at the end)")
    return int.from_bytes(buf[20:24], "big"), int.from_bytes(buf[16:20], "big")


def compressed_header(msg: Any, max_bytes: int = DEFAULT_MAX_BYTES,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Cheap checks of a ``CompressedImage`` without decoding it: ``(kind, height, width)``.

    ``kind`` is ``"jpeg"`` or ``"png"``, told by the data's signature (the ``format`` string is
    free text); ``compressedDepth`` payloads are refused.
    """
    fmt = getattr(msg, "format", "")
    if not isinstance(fmt, str):
        raise ImageConversionError(f"format must be a string, got {type(fmt).__name__}")
    if "compresseddepth" in fmt.lower():
        raise ImageConversionError(f"format {fmt!r} is a depth image; only colour/mono jpeg and png are supported")
    data = getattr(msg, "data", None)
    n = _data_len(data)
    if n == 0:
        raise ImageConversionError("compressed image has no data")
    _check_bytes(n, max_bytes)
    buf = _data_bytes(data).tobytes()
    if buf.startswith(_JPEG_MAGIC):
        kind, (height, width) = "jpeg", _jpeg_header(buf)
    elif buf.startswith(_PNG_MAGIC):
        kind, (height, width) = "png", _png_header(buf)
    else:
        raise ImageConversionError(f"compressed data (format {fmt!r}) is neither jpeg nor png")
    _check_pixels(height, width, max_pixels)
    return kind, height, width


def decode_jpeg_strict(buf: np.ndarray | bytes) -> np.ndarray:
    """Decode a JPEG to RGB uint8, refusing what libjpeg only warns about (corrupt or truncated data).

    OpenCV and Pillow decode a JPEG cut short (even with an end marker appended) or with damaged
    entropy-coded data without a word, filling the rest with grey; libjpeg-turbo, called through
    ``simplejpeg`` with ``strict=True``, turns those warnings into errors.
    """
    import simplejpeg

    try:
        return simplejpeg.decode_jpeg(buf, colorspace="RGB", strict=True)
    except ValueError as e:
        raise ImageConversionError(f"corrupt jpeg: {e}") from e


def compressed_to_rgb(msg: Any, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a jpeg or png ``CompressedImage`` to an RGB uint8 ``(H, W, 3)`` array.

    The size in the header is checked against ``max_pixels`` before anything is decoded; a JPEG
    that libjpeg finds corrupt (even one it could decode with a warning) is refused.
    """
    kind, height, width = compressed_header(msg, max_bytes, max_pixels)
    if kind == "jpeg":
        rgb = decode_jpeg_strict(_data_bytes(msg.data))
        if rgb.shape[:2] != (height, width):
            raise ImageConversionError(
                f"corrupt jpeg: header says {width}x{height}, decoded {rgb.shape[1]}x{rgb.shape[0]}")
        return rgb
    try:
        bgr = cv2.imdecode(_data_bytes(msg.data), cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise ImageConversionError(f"corrupt {kind}: {e}") from e
    if bgr is None:
        raise ImageConversionError(f"corrupt {kind}: OpenCV could not decode it")
    if bgr.shape[:2] != (height, width):
        raise ImageConversionError(
            f"corrupt {kind}: header says {width}x{height}, decoded {bgr.shape[1]}x{bgr.shape[0]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def compressed_source_encoding(fmt: str) -> str:
    """The raw encoding a ``CompressedImage`` was made from (``"rgb8; jpeg compressed bgr8"`` -> rgb8).

    Plain ``"jpeg"``/``"png"`` formats come from bgr8 images (what image_transport compresses).
    """
    head = fmt.split(";", 1)[0].strip().lower() if ";" in fmt else ""
    return head if head in BYTES_PER_PIXEL else "bgr8"


# ----------------------------------------------------------------------------- output


def overlay_encoding(input_encoding: str) -> str:
    """The encoding of an overlay for an input: bgr8 for bgr-ordered inputs, rgb8 for all others."""
    return "bgr8" if input_encoding.strip().lower() in ("bgr8", "bgra8") else "rgb8"


def rgb_to_encoding(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, str]:
    """Turn an RGB uint8 image into the encoding family of an input: ``(array, encoding name)``.

    rgb8/rgba8 -> rgb8, bgr8/bgra8 -> bgr8, and mono, bayer and yuv inputs -> rgb8.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageConversionError(f"expected an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")
    target = overlay_encoding(encoding)
    if target == "bgr8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), target
    return rgb, target


def probability_image(probability: np.ndarray, encoding: str) -> np.ndarray:
    """A road probability map as the array of a ``mono8`` (0-255) or ``32FC1`` (0.0-1.0) image."""
    p = np.asarray(probability, dtype=np.float32)
    if p.ndim != 2:
        raise ImageConversionError(f"probability must be a 2-D array, got shape {p.shape}")
    if encoding == "32FC1":
        return np.ascontiguousarray(p)
    if encoding == "mono8":
        return np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8)
    raise ImageConversionError(f"probability encoding must be mono8 or 32FC1, got {encoding!r}")
