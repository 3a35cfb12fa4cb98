"""Image message conversions: every encoding against a known RGB image, bad input, fuzzing."""

from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from road_seg_perception.bagio.image_codec import (
    BYTES_PER_PIXEL,
    ImageConversionError,
    compressed_header,
    compressed_source_encoding,
    compressed_to_rgb,
    image_to_rgb,
    overlay_encoding,
    probability_image,
    rgb_to_encoding,
)
from road_seg_perception.ros.messages import numpy_to_image_msg

RNG = np.random.default_rng(7)
KNOWN = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)
CONTAINERS = ("bytes", "array", "list", "numpy", "rclpy")


def _wrap(data: bytes, container: str):
    if container == "bytes":
        return data
    if container == "array":
        return array.array("B", data)
    if container == "list":
        return list(data)
    return np.frombuffer(data, np.uint8).copy()


def make_msg(encoding: str, pixels: np.ndarray, container: str = "rclpy", pad: int = 0, big: bool = False):
    """An Image message of ``pixels`` (H, W[, C]) with ``pad`` junk bytes at the end of every row."""
    h, w = pixels.shape[:2]
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if big else "<u2")
    rows = pixels.reshape(h, -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    data = rows.tobytes()
    fields = dict(encoding=encoding, height=h, width=w, step=rows.shape[1], is_bigendian=int(big))
    if container == "rclpy":
        return Image(data=array.array("B", data), **fields)
    return SimpleNamespace(data=_wrap(data, container), **fields)


# ----------------------------------------------------------------------------- colour encodings


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_exact(encoding, container):
    alpha = RNG.integers(0, 256, KNOWN.shape[:2] + (1,), dtype=np.uint8)
    pixels = {"rgb8": KNOWN, "bgr8": KNOWN[..., ::-1],
              "rgba8": np.concatenate([KNOWN, alpha], 2),
              "bgra8": np.concatenate([KNOWN[..., ::-1], alpha], 2)}[encoding]
    out = image_to_rgb(make_msg(encoding, np.ascontiguousarray(pixels), container))
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, KNOWN)


@pytest.mark.parametrize("pad", [0, 1, 7])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "bgra8", "mono8"])
def test_row_padding_is_ignored(encoding, pad):
    grey = KNOWN[..., 1]
    pixels = {"rgb8": KNOWN, "bgr8": KNOWN[..., ::-1], "mono8": grey,
              "bgra8": np.concatenate([KNOWN[..., ::-1], np.zeros_like(grey)[..., None]], 2)}[encoding]
    out = image_to_rgb(make_msg(encoding, np.ascontiguousarray(pixels), pad=pad))
    expected = np.repeat(grey[..., None], 3, 2) if encoding == "mono8" else KNOWN
    np.testing.assert_array_equal(out, expected)


def test_result_does_not_alias_the_message():
    msg = make_msg("rgb8", KNOWN, "numpy")
    out = image_to_rgb(msg)
    msg.data[:] = 0
    np.testing.assert_array_equal(out, KNOWN)


def test_mono8_is_grey_in_every_channel():
    grey = KNOWN[..., 0]
    out = image_to_rgb(make_msg("mono8", grey))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


@pytest.mark.parametrize("pad", [0, 2])
@pytest.mark.parametrize("big", [False, True])
def test_mono16_endianness_and_scaling(big, pad):
    grey = KNOWN[..., 2]
    low = RNG.integers(0, 256, grey.shape, dtype=np.uint16)
    pixels = grey.astype(np.uint16) * 256 + low  # high byte is the 8-bit value
    msg = make_msg("mono16", pixels, "bytes", pad=pad, big=big)
    out = image_to_rgb(msg)
    np.testing.assert_array_equal(out[..., 0], grey)
    np.testing.assert_array_equal(out[..., 2], grey)
    msg.is_bigendian = int(not big)  # the other byte order reads other values: the flag is honoured
    assert not np.array_equal(image_to_rgb(msg)[..., 0], grey)


def _blocks() -> np.ndarray:
    """A 16x24 RGB image of six flat 8x8 colour blocks."""
    colours = [(220, 20, 30), (20, 200, 40), (30, 40, 210), (50, 100, 200), (240, 240, 240), (120, 60, 10)]
    img = np.zeros((16, 24, 3), np.uint8)
    for i, c in enumerate(colours):
        r, col = divmod(i, 3)
        img[r * 8:(r + 1) * 8, col * 8:(col + 1) * 8] = c
    return img


def _interior(img: np.ndarray) -> np.ndarray:
    """The pixels at least 2 away from any block edge (demosaicing blurs edges)."""
    keep = np.zeros(img.shape[:2], bool)
    for r in range(2):
        for c in range(3):
            keep[r * 8 + 2:r * 8 + 6, c * 8 + 2:c * 8 + 6] = True
    return img[keep]


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_patterns(pattern):
    rgb = _blocks()
    index = {"r": 0, "g": 1, "b": 2}
    mosaic = np.zeros(rgb.shape[:2], np.uint8)
    for k, ch in enumerate(pattern):
        dy, dx = divmod(k, 2)
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, index[ch]]
    out = image_to_rgb(make_msg(f"bayer_{pattern}8", mosaic, pad=3))
    err = np.abs(_interior(out).astype(int) - _interior(rgb).astype(int))
    assert err.max() <= 3, f"bayer_{pattern}8 demosaiced wrongly, max error {err.max()}"


def _yuv(rgb: np.ndarray):
    """BT.601 limited-range Y, U, V of an RGB image (the convention of ROS yuv422 cameras)."""
    r, g, b = (rgb[..., i].astype(float) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return [np.clip(np.rint(a), 0, 255).astype(np.uint8) for a in (y, u, v)]


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuyv", "yuv422_yuy2"])
def test_yuv422(encoding):
    rgb = np.repeat(RNG.integers(16, 240, (5, 6, 3), dtype=np.uint8), 2, axis=1)  # pairs share chroma
    y, u, v = _yuv(rgb)
    packed = np.zeros(rgb.shape[:2] + (2,), np.uint8)
    chroma = np.zeros(rgb.shape[:2], np.uint8)
    chroma[:, 0::2], chroma[:, 1::2] = u[:, 0::2], v[:, 0::2]
    if encoding in ("yuv422", "uyvy"):
        packed[..., 0], packed[..., 1] = chroma, y
    else:
        packed[..., 0], packed[..., 1] = y, chroma
    out = image_to_rgb(make_msg(encoding, packed, "numpy", pad=4))
    err = np.abs(out.astype(int) - rgb.astype(int))
    assert err.max() <= 3, f"{encoding}: max error {err.max()}"


def test_encoding_name_is_case_insensitive():
    np.testing.assert_array_equal(image_to_rgb(make_msg("RGB8", KNOWN)), KNOWN)


# ----------------------------------------------------------------------------- compressed


def _smooth(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1).astype(np.uint8)


def _encode(rgb: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("container", CONTAINERS)
def test_png_is_exact(container):
    data = _encode(KNOWN, ".png")
    msg = (CompressedImage(format="png", data=array.array("B", data)) if container == "rclpy"
           else SimpleNamespace(format="png", data=_wrap(data, container)))
    np.testing.assert_array_equal(compressed_to_rgb(msg), KNOWN)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8"])
def test_jpeg_decodes_close_to_the_original(fmt):
    rgb = _smooth()
    out = compressed_to_rgb(CompressedImage(format=fmt, data=array.array("B", _encode(rgb, ".jpg"))))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3.0
    # channel order: the red ramp runs along x, the green one along y
    assert out[24, 60, 0] > 200 and out[24, 2, 0] < 30 and out[45, 30, 1] > 200


def test_grey_jpeg_gives_three_equal_channels():
    ok, buf = cv2.imencode(".jpg", KNOWN[..., 0])
    out = compressed_to_rgb(SimpleNamespace(format="mono8; jpeg compressed mono8", data=buf.tobytes()))
    assert out.shape == KNOWN.shape
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_compressed_header_reads_size_without_decoding():
    assert compressed_header(SimpleNamespace(format="jpeg", data=_encode(_smooth(), ".jpg"))) == ("jpeg", 48, 64)
    assert compressed_header(SimpleNamespace(format="png", data=_encode(KNOWN, ".png"))) == ("png", 6, 10)


def test_compressed_source_encoding():
    assert compressed_source_encoding("rgb8; jpeg compressed bgr8") == "rgb8"
    assert compressed_source_encoding("bgr8; png compressed bgr8") == "bgr8"
    assert compressed_source_encoding("jpeg") == "bgr8"
    assert compressed_source_encoding("weird; jpeg") == "bgr8"


# ----------------------------------------------------------------------------- bad input


def _bad_image_cases():
    good = make_msg("rgb8", KNOWN, "bytes")
    base = dict(encoding="rgb8", height=6, width=10, step=30, is_bigendian=0, data=good.data)
    yield "unsupported encoding", dict(base, encoding="32FC1"), "unsupported encoding"
    yield "unknown encoding", dict(base, encoding="rgb9"), "unsupported encoding"
    yield "encoding not a string", dict(base, encoding=None), "encoding must be a string"
    yield "data too short", dict(base, data=good.data[:-1]), "differs from step"
    yield "data too long", dict(base, data=good.data + b"\0"), "differs from step"
    yield "step too small", dict(base, step=29, data=good.data[:174]), "step 29 is smaller"
    yield "zero height", dict(base, height=0, data=b""), "zero size"
    yield "zero width", dict(base, width=0, step=0, data=b""), "zero size"
    yield "negative width", dict(base, width=-10), "negative"
    yield "height not an int", dict(base, height=6.0), "must be an integer"
    yield "data is None", dict(base, data=None), "byte sequence"
    yield "data is a str", dict(base, data="x" * 180), "byte sequence"
    yield "list value out of range", dict(base, data=[300] * 180), "[0, 255]"
    yield "int16 numpy data", dict(base, data=np.zeros(180, np.int16)), "uint8"
    yield "array of ints", dict(base, data=array.array("i", [0] * 45)), "1-byte items"
    yield "huge dimensions", dict(base, height=1 << 20, width=1 << 20, step=3 << 20), "max_image_pixels"
    yield "odd width yuv", dict(base, encoding="yuyv", width=5, step=10, height=2, data=b"\0" * 20), "even width"
    yield "one-row bayer", dict(base, encoding="bayer_rggb8", height=1, step=10, data=b"\0" * 10), "2x2"


@pytest.mark.parametrize("fields,match", [(c[1], c[2]) for c in _bad_image_cases()],
                         ids=[c[0] for c in _bad_image_cases()])
def test_bad_images_raise_conversion_error(fields, match):
    with pytest.raises(ImageConversionError, match=match.replace("[", r"\[").replace("]", r"\]")):
        image_to_rgb(SimpleNamespace(**fields))


def test_pixel_and_byte_bounds():
    msg = make_msg("rgb8", KNOWN)
    assert image_to_rgb(msg, max_pixels=60).shape == (6, 10, 3)
    with pytest.raises(ImageConversionError, match="max_image_pixels"):
        image_to_rgb(msg, max_pixels=59)
    with pytest.raises(ImageConversionError, match="max_message_bytes"):
        image_to_rgb(msg, max_bytes=179)
    jpg = SimpleNamespace(format="jpeg", data=_encode(_smooth(), ".jpg"))
    with pytest.raises(ImageConversionError, match="max_image_pixels"):
        compressed_to_rgb(jpg, max_pixels=48 * 64 - 1)
    with pytest.raises(ImageConversionError, match="max_message_bytes"):
        compressed_to_rgb(jpg, max_bytes=len(jpg.data) - 1)


def _bad_compressed_cases():
    jpg = _encode(_smooth(), ".jpg")
    png = _encode(KNOWN, ".png")
    yield "empty", b"", "no data"
    yield "not an image", b"hello world, not an image", "neither jpeg nor png"
    yield "truncated jpeg", jpg[: len(jpg) // 2], "corrupt jpeg"
    yield "jpeg header only", jpg[:20], "corrupt jpeg"
    yield "jpeg bad segment length", jpg[:4] + b"\x00\x01" + jpg[6:], "corrupt jpeg"
    yield "jpeg without frame", b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 6 + b"\xff\xd9", "corrupt jpeg"
    yield "truncated png", png[:-20], "corrupt png"
    yield "png without IHDR", png[:8] + b"\0" * 40, "corrupt png"
    yield "png with zeroed body", png[:33] + b"\0" * (len(png) - 45) + png[-12:], "corrupt png"


@pytest.mark.parametrize("data,match", [(c[1], c[2]) for c in _bad_compressed_cases()],
                         ids=[c[0] for c in _bad_compressed_cases()])
def test_bad_compressed_raise_conversion_error(data, match):
    with pytest.raises(ImageConversionError, match=match):
        compressed_to_rgb(CompressedImage(format="jpeg", data=array.array("B", data)))


def test_compressed_depth_is_refused():
    msg = SimpleNamespace(format="16UC1; compressedDepth png", data=_encode(KNOWN, ".png"))
    with pytest.raises(ImageConversionError, match="depth"):
        compressed_to_rgb(msg)


def test_jpeg_with_corrupt_scan_data_raises_or_keeps_size():
    """libjpeg may decode damaged scan data with warnings; then the size must still be right."""
    jpg = bytearray(_encode(_smooth(), ".jpg"))
    sos = jpg.find(b"\xff\xda")
    for i in range(sos + 20, len(jpg) - 2, 7):
        jpg[i] = 0xFF if jpg[i] != 0xFF else 0x00
    try:
        out = compressed_to_rgb(SimpleNamespace(format="jpeg", data=bytes(jpg)))
    except ImageConversionError:
        return
    assert out.shape == (48, 64, 3)


# ----------------------------------------------------------------------------- output side


def test_rgb_to_encoding_families():
    arr, enc = rgb_to_encoding(KNOWN, "bgr8")
    assert enc == "bgr8"
    np.testing.assert_array_equal(arr, KNOWN[..., ::-1])
    assert rgb_to_encoding(KNOWN, "bgra8")[1] == "bgr8"
    for e in ("rgb8", "rgba8", "mono8", "mono16", "bayer_grbg8", "yuv422", "yuyv"):
        arr, enc = rgb_to_encoding(KNOWN, e)
        assert enc == "rgb8" and overlay_encoding(e) == "rgb8"
        np.testing.assert_array_equal(arr, KNOWN)
    with pytest.raises(ImageConversionError):
        rgb_to_encoding(KNOWN[..., 0], "rgb8")


def test_numpy_to_image_msg_round_trips_with_header():
    header = Header(frame_id="cam_front")
    header.stamp.sec, header.stamp.nanosec = 123, 456
    for enc, arr in (("rgb8", KNOWN), ("bgr8", KNOWN[..., ::-1]), ("mono8", KNOWN[..., 0])):
        msg = numpy_to_image_msg(np.ascontiguousarray(arr), enc, header)
        assert (msg.encoding, msg.height, msg.width) == (enc, 6, 10)
        assert msg.step == 10 * (1 if enc == "mono8" else 3)
        assert msg.header.frame_id == "cam_front" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (123, 456)
        back = image_to_rgb(msg)
        np.testing.assert_array_equal(back, KNOWN if enc != "mono8" else np.repeat(KNOWN[..., :1], 3, 2))
    prob = RNG.random((6, 10), dtype=np.float32)
    msg = numpy_to_image_msg(prob, "32FC1", header)
    assert msg.step == 40
    dt = ">f4" if msg.is_bigendian else "<f4"
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), dt).reshape(6, 10), prob)
    with pytest.raises(ImageConversionError):
        numpy_to_image_msg(KNOWN, "mono8", header)
    with pytest.raises(ImageConversionError):
        numpy_to_image_msg(prob, "mono8", header)
    with pytest.raises(ImageConversionError):
        numpy_to_image_msg(KNOWN, "yuv422", header)


def test_probability_image():
    p = np.array([[0.0, 0.5, 1.0, 0.25]], np.float32)
    np.testing.assert_array_equal(probability_image(p, "mono8"), [[0, 128, 255, 64]])
    assert probability_image(p, "32FC1").dtype == np.float32
    with pytest.raises(ImageConversionError):
        probability_image(p, "mono16")


# ----------------------------------------------------------------------------- property tests

ENCODINGS = sorted(BYTES_PER_PIXEL)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _expected_valid(enc: str, h: int, w: int, step: int, n: int, max_pixels: int) -> bool:
    e = enc.lower()
    if e not in BYTES_PER_PIXEL or h == 0 or w == 0 or h * w > max_pixels:
        return False
    if step < w * BYTES_PER_PIXEL[e] or n != step * h:
        return False
    if e in ("yuv422", "uyvy", "yuyv", "yuv422_yuy2") and w % 2:
        return False
    return not (e.startswith("bayer") and (h < 2 or w < 2))


@FUZZ
@given(enc=st.sampled_from(ENCODINGS), h=st.integers(1, 12), w=st.integers(1, 12), pad=st.integers(0, 5),
       big=st.booleans(), container=st.sampled_from(CONTAINERS), seed=st.integers(0, 2**32 - 1))
def test_valid_messages_convert(enc, h, w, pad, big, container, seed):
    """Every well-formed message converts to (H, W, 3) uint8; rgb-family ones exactly."""
    bpp = BYTES_PER_PIXEL[enc]
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (h, w * bpp + pad), dtype=np.uint8)
    data = rows.tobytes()
    fields = dict(encoding=enc, height=h, width=w, step=w * bpp + pad, is_bigendian=int(big))
    msg = (Image(data=array.array("B", data), **fields) if container == "rclpy"
           else SimpleNamespace(data=_wrap(data, container), **fields))
    if not _expected_valid(enc, h, w, w * bpp + pad, len(data), 1 << 24):
        with pytest.raises(ImageConversionError):
            image_to_rgb(msg)
        return
    out = image_to_rgb(msg)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    px = rows[:, : w * bpp].reshape(h, w, bpp)
    if enc == "rgb8":
        np.testing.assert_array_equal(out, px)
    elif enc in ("bgr8", "bgra8"):
        np.testing.assert_array_equal(out, px[..., 2::-1])
    elif enc == "rgba8":
        np.testing.assert_array_equal(out, px[..., :3])
    elif enc == "mono8":
        np.testing.assert_array_equal(out[..., 1], px[..., 0])
    elif enc == "mono16":
        hi = px[..., 0] if big else px[..., 1]
        np.testing.assert_array_equal(out[..., 0], hi)


@FUZZ
@given(enc=st.one_of(st.sampled_from(ENCODINGS + ["RGB8", "32FC1", "", "16UC1", "jpeg"]), st.text(max_size=8)),
       h=st.one_of(st.integers(0, 16), st.integers(0, 1 << 40)),
       w=st.one_of(st.integers(0, 16), st.integers(0, 1 << 40)),
       step=st.one_of(st.integers(0, 64), st.integers(0, 1 << 42)),
       n=st.integers(0, 600), big=st.booleans(), container=st.sampled_from(CONTAINERS[:-1]))
def test_malformed_messages_raise_only_conversion_error(enc, h, w, step, n, big, container):
    """Random encodings, sizes, steps and data lengths: a correct image or ImageConversionError, nothing else."""
    msg = SimpleNamespace(encoding=enc, height=h, width=w, step=step, is_bigendian=big,
                          data=_wrap((bytes(range(256)) * 3)[:n], container))
    valid = _expected_valid(enc, h, w, step, len(msg.data), 1 << 20)
    try:
        out = image_to_rgb(msg, max_pixels=1 << 20)
    except ImageConversionError:
        assert not valid
        return
    assert valid
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


_JPG = _encode(_smooth(), ".jpg")
_PNG = _encode(KNOWN, ".png")


@FUZZ
@given(base=st.sampled_from([_JPG, _PNG]), cut=st.integers(0, len(_JPG)),
       flips=st.lists(st.tuples(st.integers(0, len(_JPG) - 1), st.integers(0, 255)), max_size=6),
       fmt=st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "", "tiff"]))
def test_mutated_compressed_never_crash(base, cut, flips, fmt):
    """Truncated or byte-flipped jpeg/png: decoded at the header's size, or ImageConversionError."""
    data = bytearray(base[: max(cut, 1)] if cut < len(base) else base)
    for i, v in flips:
        if i < len(data):
            data[i] = v
    msg = SimpleNamespace(format=fmt, data=bytes(data))
    try:
        out = compressed_to_rgb(msg, max_pixels=1 << 20)
    except ImageConversionError:
        return
    _, h, w = compressed_header(msg, max_pixels=1 << 20)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


@FUZZ
@given(data=st.binary(max_size=300), fmt=st.text(max_size=10))
def test_random_bytes_as_compressed(data, fmt):
    try:
        out = compressed_to_rgb(SimpleNamespace(format=fmt, data=data))
    except ImageConversionError:
        return
    assert out.ndim == 3 and out.shape[2] == 3


def test_rosbags_messages_convert():
    """Messages as the ``rosbags`` library deserialises them from a bag (numpy data) convert alike."""
    typesys = pytest.importorskip("rosbags.typesys", reason="rosbags is not installed")
    from rclpy.serialization import serialize_message

    store = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
    raw = make_msg("bgr8", np.ascontiguousarray(KNOWN[..., ::-1]), pad=2)
    msg = store.deserialize_cdr(serialize_message(raw), "sensor_msgs/msg/Image")
    assert isinstance(msg.data, np.ndarray)
    np.testing.assert_array_equal(image_to_rgb(msg), KNOWN)
    comp = CompressedImage(format="png", data=array.array("B", _encode(KNOWN, ".png")))
    cmsg = store.deserialize_cdr(serialize_message(comp), "sensor_msgs/msg/CompressedImage")
    np.testing.assert_array_equal(compressed_to_rgb(cmsg), KNOWN)
