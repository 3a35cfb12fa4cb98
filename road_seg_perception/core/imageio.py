"""Reading image files: the one reader that the predict tool, dataset readers and bag builder share.

Every read checks the pixel count in the file's header against a limit before anything is
decoded, so a small file that claims a huge image (a decompression bomb) costs no memory. JPEG
files are decoded strictly: one that libjpeg finds corrupt is refused, not filled with grey. The
limit is ``max_pixels`` when given, else the process-wide one the CLIs set from
``--max-image-pixels`` (:func:`set_max_image_pixels`), by default :data:`DEFAULT_MAX_IMAGE_PIXELS`.
"""

from __future__ import annotations

import argparse
import contextlib
import struct
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

#: Default pixel limit (width * height): 4096 x 4096, the node's ``max_image_pixels`` default.
DEFAULT_MAX_IMAGE_PIXELS = 16_777_216
_limit = {"max_pixels": DEFAULT_MAX_IMAGE_PIXELS}
#: JPEG start-of-frame markers (baseline, progressive, lossless...), which carry the image size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageReadError(ValueError):
    """An image file that cannot be read; the message names the file."""


def set_max_image_pixels(max_pixels: int) -> None:
    """Set the process-wide pixel limit for reads that pass no ``max_pixels`` (CLIs call this once)."""
    if max_pixels < 1:
        raise ValueError(f"max image pixels must be >= 1, got {max_pixels}")
    _limit["max_pixels"] = int(max_pixels)


@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Set the process-wide pixel limit for a block and put the previous one back after it."""
    previous = _limit["max_pixels"]
    set_max_image_pixels(max_pixels)
    try:
        yield
    finally:
        _limit["max_pixels"] = previous


def add_max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-image-pixels N`` (default :data:`DEFAULT_MAX_IMAGE_PIXELS`) to a CLI."""
    def positive(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
        return value

    parser.add_argument("--max-image-pixels", type=positive, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
                        help="refuse images whose header claims more than N pixels (width * height), before "
                             f"decoding them (default: {DEFAULT_MAX_IMAGE_PIXELS}, 4096x4096)")


def max_image_pixels() -> int:
    """The process-wide pixel limit."""
    return _limit["max_pixels"]


def _jpeg_size(f) -> tuple[int, int]:
    f.seek(2)
    while True:
        if f.read(1) != b"\xff":
            raise ValueError("corrupt jpeg: expected a marker")
        b = f.read(1)
        while b == b"\xff":  # fill bytes
            b = f.read(1)
        if not b:
            raise ValueError("corrupt jpeg: no start-of-frame")
        marker = b[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("corrupt jpeg: no start-of-frame before the scan")
        seg = f.read(2)
        if len(seg) < 2 or int.from_bytes(seg, "big") < 2:
            raise ValueError("corrupt jpeg: bad segment length")
        n = int.from_bytes(seg, "big")
        if marker in _JPEG_SOF:
            sof = f.read(5)
            if len(sof) < 5:
                raise ValueError("corrupt jpeg: start-of-frame too short")
            return int.from_bytes(sof[1:3], "big"), int.from_bytes(sof[3:5], "big")
        f.seek(n - 2, 1)


def image_file_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` from a png, jpeg or bmp file's header, without decoding it."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            if len(head) < 24 or head[12:16] != b"IHDR":
                raise ValueError("corrupt png: no IHDR header")
            return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(f)
        if head.startswith(b"BM") and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            return abs(height), abs(width)
    raise ValueError("not a png, jpeg or bmp file")


def check_image_file(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """Return ``(height, width)`` from the header; raise :class:`ImageReadError` if unreadable or too large."""
    limit = max_image_pixels() if max_pixels is None else max_pixels
    try:
        height, width = image_file_size(path)
    except (OSError, ValueError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from e
    if height * width > limit:
        raise ImageReadError(f"image {path} is {width}x{height} ({width * height} pixels), over the limit of "
                             f"{limit} pixels (--max-image-pixels); not decoded")
    if height == 0 or width == 0:
        raise ImageReadError(f"cannot read image {path}: its header says {width}x{height}")
    return height, width


def check_jpeg_strict(data: bytes, path: str | Path) -> None:
    """Refuse a JPEG that libjpeg finds corrupt, even where it would decode it with only a warning.

    OpenCV decodes a JPEG cut short (with or without an end marker appended) or with marker bytes
    in its entropy-coded data without a word, filling the rest with grey. libjpeg-turbo in strict
    mode (``simplejpeg``, ``strict=True``, as the node and ``road-seg-eval`` decode frames) turns
    those warnings into errors.
    """
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as e:
        raise ImageReadError(f"cannot read image {path}: corrupt jpeg: {e}") from e


def read_image_file(path: str | Path, flags: int = cv2.IMREAD_COLOR, max_pixels: int | None = None) -> np.ndarray:
    """``cv2.imread(path, flags)`` after :func:`check_image_file`; raise :class:`ImageReadError` naming the file.

    A JPEG is also decoded strictly first (:func:`check_jpeg_strict`): a corrupt one is refused.
    """
    check_image_file(path, max_pixels)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageReadError(f"cannot read image {path}: {e.strerror or e}") from e
    if data.startswith(b"\xff\xd8"):
        check_jpeg_strict(data, path)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None:
        raise ImageReadError(f"cannot read image {path}")
    return img


def read_rgb(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); raise :class:`ImageReadError` naming the file."""
    return cv2.cvtColor(read_image_file(path, cv2.IMREAD_COLOR, max_pixels), cv2.COLOR_BGR2RGB)
