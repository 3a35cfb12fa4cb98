"""rosbag2 files with ``rosbags`` (no ROS installation needed): typestore, message builders, writer, reader.

Bags hold, per frame and at one shared stamp, ``/camera/image_raw`` (``sensor_msgs/Image``) or
``/camera/image_raw/compressed`` (``sensor_msgs/CompressedImage``), ``/camera/camera_info`` and,
when labelled, ``/road_seg/ground_truth`` (mono8: 255 road, 0 not road, 128 void). The bytes
written here deserialise with ``rclpy.serialization.deserialize_message``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from road_seg_perception.bagio.image_codec import DEFAULT_MAX_PIXELS, compressed_to_rgb, image_to_rgb

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
CAMERA_INFO_TOPIC = "/camera/camera_info"
GT_TOPIC = "/road_seg/ground_truth"

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)

STORAGES = ("sqlite3", "mcap")
#: rosbag2 metadata version written: 8 is read by Jazzy and later as is; version 9 (Jazzy's own)
#: stores QoS in a form older distributions fail to parse.
METADATA_VERSION = 8

#: Exit status for bad input (missing folder, missing topic, unreadable bag).
EXIT_USAGE = 2
#: Highest rate whose frames still get distinct nanosecond stamps.
MAX_RATE_HZ = 1e9
#: ``builtin_interfaces/Time.sec`` is an int32: the last second a stamp can hold.
MAX_STAMP_S = 2**31 - 1
#: What ``metadata.yaml``'s ``custom_data`` holds in every bag this package writes.
CREATED_BY = "road_seg_perception"


class BagError(ValueError):
    """A bag problem: unreadable bag, or a topic that is missing or has the wrong type."""


@cache
def typestore():
    """The ROS 2 Jazzy type store used to build and parse messages."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def default_qos(reliable: bool = True, depth: int = 10) -> list:
    """Offered QoS profile stored in the metadata (what ``ros2 bag play`` publishes with).

    Reliable, volatile, keep-last: a reliable publisher serves both reliable and best-effort
    subscribers (the node subscribes best effort), a best-effort one only the latter.
    """
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return [Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
                QosDurability.VOLATILE, zero, zero, QosLiveliness.AUTOMATIC, zero, False)]


# --------------------------------------------------------------------------- message building


def split_stamp(stamp_ns: int) -> tuple[int, int]:
    """``(sec, nanosec)`` of a stamp in nanoseconds."""
    return int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000)


def stamp_ns_of(msg: Any) -> int:
    """Nanoseconds of a message's ``header.stamp`` (rosbags or rclpy message)."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def header(stamp_ns: int, frame_id: str):
    """A ``std_msgs/Header`` (rosbags type)."""
    ts = typestore()
    sec, nsec = split_stamp(stamp_ns)
    return ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                            frame_id=frame_id)


def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    """A ``sensor_msgs/Image`` (rosbags type) for a uint8 ``(H, W)`` mono8 or ``(H, W, 3)`` rgb8/bgr8 array."""
    channels = {"mono8": 1, "rgb8": 3, "bgr8": 3}
    if encoding not in channels:
        raise ValueError(f"encoding must be one of {sorted(channels)}, got {encoding!r}")
    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.shape[2] if a.ndim == 3 else 1) != channels[encoding]:
        raise ValueError(f"array {a.dtype} {a.shape} does not fit encoding {encoding}")
    h, w = a.shape[:2]
    return typestore().types[IMAGE_TYPE](header=header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                                         is_bigendian=0, step=w * channels[encoding], data=a.reshape(-1))


def compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, quality: int = 95):
    """A jpeg ``sensor_msgs/CompressedImage`` (rosbags type) in image_transport's format naming."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("jpeg encoding failed")
    return typestore().types[COMPRESSED_TYPE](header=header(stamp_ns, frame_id), format="rgb8; jpeg compressed bgr8",
                                              data=buf.reshape(-1))


def camera_info_msg(width: int, height: int, stamp_ns: int, frame_id: str):
    """A ``sensor_msgs/CameraInfo`` for an uncalibrated camera (D, K, R, P zero, as the message spec says)."""
    ts = typestore()
    roi = ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return ts.types[CAMERA_INFO_TYPE](header=header(stamp_ns, frame_id), height=height, width=width,
                                      distortion_model="plumb_bob", d=np.zeros(5), k=np.zeros(9), r=np.zeros(9),
                                      p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)


def serialize(msg: Any, msgtype: str) -> bytes:
    """CDR bytes of a rosbags message."""
    return bytes(typestore().serialize_cdr(msg, msgtype))


def deserialize(data: bytes, msgtype: str) -> Any:
    """A rosbags message from CDR bytes."""
    return typestore().deserialize_cdr(data, msgtype)


# --------------------------------------------------------------------------- writing


class BagWriter:
    """A thin rosbags ``Writer`` wrapper: topics by name, typestore definitions, clean close."""

    def __init__(self, path: Path | str, storage: str = "sqlite3", overwrite: bool = False,
                 inputs: Iterable[Path | str] = ()):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise BagError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        prepare_output(self.path, overwrite, inputs)
        plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
        self._writer = Writer(self.path, version=METADATA_VERSION, storage_plugin=plugin)
        # a non-empty map: rosbag2 reads custom_data as a map, and some versions refuse a null there
        self._writer.set_custom_data("created_by", CREATED_BY)
        self._writer.open()
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str, qos: list | None = None) -> None:
        """Register a topic; ``qos`` are rosbags ``Qos`` profiles (default: :func:`default_qos`)."""
        if topic in self._conns:
            return
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore(),
                                                         offered_qos_profiles=default_qos() if qos is None else qos)
        self.counts[topic] = 0

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        """Write already-serialised CDR bytes to a registered topic."""
        self._writer.write(self._conns[topic], int(timestamp_ns), data)
        self.counts[topic] += 1

    def write(self, topic: str, timestamp_ns: int, msg: Any) -> None:
        """Serialise a rosbags message and write it (registers the topic on first use)."""
        msgtype = msg.__msgtype__
        self.add_topic(topic, msgtype)
        self.write_raw(topic, timestamp_ns, serialize(msg, msgtype))

    def flush(self) -> None:
        """Make what is written so far durable (sqlite3: commit), so a killed process loses little."""
        storage = getattr(self._writer, "storage", None)
        conn = getattr(storage, "conn", None)
        if conn is not None:
            conn.commit()

    def close(self) -> None:
        """Close the storage and write ``metadata.yaml``; safe to call twice."""
        if self._writer.storage is not None:
            self._writer.close()

    def abort(self) -> None:
        """Drop a bag whose writing failed: close the storage and remove the folder."""
        if self._writer.storage is not None:
            self._writer.abort()
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def written_by_us(path: Path) -> bool:
    """True if ``path`` is a rosbag2 folder this package wrote: its ``metadata.yaml`` says so and it holds
    nothing but that file, the storage files the metadata lists and sqlite3's side files (no folders, no links)."""
    import yaml

    if path.is_symlink() or not path.is_dir():
        return False
    meta_path = path / "metadata.yaml"
    if meta_path.is_symlink() or not meta_path.is_file():
        return False
    try:
        info = yaml.safe_load(meta_path.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
        created_by = (info.get("custom_data") or {}).get("created_by")
        files = {str(f) for f in info["relative_file_paths"]}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return False
    if created_by != CREATED_BY or not files or any("/" in f or f.startswith(".") for f in files):
        return False
    allowed = {"metadata.yaml"} | files | {f + side for f in files for side in ("-journal", "-wal", "-shm")}
    for entry in path.iterdir():
        if entry.name not in allowed or entry.is_symlink() or not entry.is_file():
            return False
    return all((path / f).is_file() for f in files)


def prepare_output(path: Path, overwrite: bool, inputs: Iterable[Path | str] = ()) -> None:
    """Refuse an existing output unless ``overwrite``; then remove it only if it is a bag this package wrote
    (:func:`written_by_us`) or an empty folder. ``inputs`` are paths the output must not be, hold or lie in."""
    for src in inputs:
        check_not_overlapping(src, path)
    if not path.exists() and not path.is_symlink():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise BagError(f"output {path} exists already (pass --overwrite to replace it)")
    if path.is_symlink():
        raise BagError(f"refusing to overwrite {path}: it is a symbolic link")
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        return
    if written_by_us(path):
        shutil.rmtree(path)
        return
    raise BagError(f"refusing to overwrite {path}: it is not a rosbag2 bag written by road_seg_perception "
                   "(only metadata.yaml and the storage files it lists may be in it); remove it yourself")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_not_overlapping(src: Path | str, out: Path | str) -> None:
    """:class:`BagError` if writing or replacing ``out`` could touch ``src``: the same path (after resolving
    links), the same file, ``src`` inside ``out`` or ``out`` inside ``src``."""
    s, o = Path(src), Path(out)
    rs, ro = s.resolve(), o.resolve()
    if rs == ro or _same_file(s, o):
        raise BagError(f"output {o} is the input {s}; refusing to overwrite an input")
    if ro in rs.parents:
        raise BagError(f"output {o} holds the input {s}; refusing to overwrite an input")
    if rs in ro.parents and rs.is_dir():
        raise BagError(f"output {o} lies inside the input {s}; choose an output outside it")


def check_stamps(rate: float, start_ns: int, n_frames: int | None = None) -> None:
    """:class:`BagError` unless ``rate`` gives distinct nanosecond stamps and every stamp fits a ROS ``Time``."""
    if not (isinstance(rate, int | float) and math.isfinite(rate) and 0 < rate <= MAX_RATE_HZ):
        raise BagError(f"--rate must be a finite rate in (0, {MAX_RATE_HZ:.0e}] Hz (frames need distinct "
                       f"nanosecond stamps), got {rate}")
    if not 0 <= start_ns <= MAX_STAMP_S * 1_000_000_000:
        raise BagError(f"--start must be in [0, {MAX_STAMP_S}] s (a ROS Time stamp), got {start_ns / 1e9:g} s")
    if n_frames is not None and n_frames > 1:
        last = start_ns + round((n_frames - 1) * 1e9 / rate)
        if last > MAX_STAMP_S * 1_000_000_000:
            raise BagError(f"{n_frames} frames at {rate:g} Hz from {start_ns / 1e9:g} s end past the last "
                           f"ROS Time stamp ({MAX_STAMP_S} s); use an earlier --start or a higher --rate")


@dataclass
class Frame:
    """One camera frame to write: RGB uint8 image and optional ground-truth mono8 (255/0/128)."""

    rgb: np.ndarray
    gt: np.ndarray | None = None


@dataclass
class BagSummary:
    """What :func:`write_frames` wrote."""

    path: Path
    frames: int
    stamps_ns: list[int]
    topics: dict[str, int]


def write_frames(out: Path | str, frames: Iterable[Frame], rate: float = 15.0, compressed: bool = False,
                 storage: str = "sqlite3", frame_id: str = "camera", start_ns: int | None = None,
                 jpeg_quality: int = 95, overwrite: bool = False, progress: bool = False,
                 total: int | None = None, inputs: Iterable[Path | str] = ()) -> BagSummary:
    """Write frames as a camera stream at ``rate`` Hz; every frame's messages share one stamp.

    The bag's receive timestamps equal the header stamps, which are distinct and increasing (a
    rate above :data:`MAX_RATE_HZ` is refused). ``start_ns`` defaults to now (whole seconds).
    """
    start = int(time.time()) * 1_000_000_000 if start_ns is None else start_ns
    if not isinstance(start, int):
        raise BagError(f"--start must be a whole number of nanoseconds, got {start!r}")
    check_stamps(rate, start, total)
    image_topic = COMPRESSED_TOPIC if compressed else IMAGE_TOPIC
    stamps: list[int] = []
    it: Iterable[Frame] = frames
    w = BagWriter(out, storage, overwrite, inputs)
    if progress:
        from tqdm import tqdm

        it = tqdm(frames, desc="writing bag", unit="frame", total=total)
    try:
        w.add_topic(image_topic, COMPRESSED_TYPE if compressed else IMAGE_TYPE)
        w.add_topic(CAMERA_INFO_TOPIC, CAMERA_INFO_TYPE)
        for i, f in enumerate(it):
            if f.rgb.ndim != 3 or f.rgb.shape[2] != 3 or f.rgb.dtype != np.uint8:
                raise BagError(f"frame {i}: expected an RGB uint8 image, got {f.rgb.dtype} {f.rgb.shape}")
            t = start + round(i * 1e9 / rate)
            if stamps and t <= stamps[-1] or t > MAX_STAMP_S * 1_000_000_000:
                raise BagError(f"frame {i}: stamp {t} ns is not after {stamps[-1] if stamps else start} ns or "
                               "past the last ROS Time stamp; lower --rate or --start")
            h, w_ = f.rgb.shape[:2]
            w.write(CAMERA_INFO_TOPIC, t, camera_info_msg(w_, h, t, frame_id))
            img = compressed_msg(f.rgb, t, frame_id, jpeg_quality) if compressed else image_msg(f.rgb, "rgb8", t,
                                                                                               frame_id)
            w.write(image_topic, t, img)
            if f.gt is not None:
                if f.gt.shape != (h, w_):
                    raise BagError(f"frame {i}: ground truth {f.gt.shape} does not match image {(h, w_)}")
                w.write(GT_TOPIC, t, image_msg(f.gt, "mono8", t, frame_id))
            stamps.append(t)
        if not stamps:
            raise BagError("no frames to write")
        w.close()
    except BaseException:
        w.abort()
        raise
    return BagSummary(Path(out), len(stamps), stamps, dict(w.counts))


# --------------------------------------------------------------------------- reading


@dataclass
class TopicSummary:
    """One topic of a bag."""

    name: str
    msgtype: str
    count: int


def _open_reader(path: Path | str):
    from rosbags.rosbag2 import Reader

    p = Path(path)
    if not p.exists():
        raise BagError(f"bag {p} does not exist")
    try:
        reader = Reader(p)
        reader.open()
    except Exception as e:  # rosbags raises ReaderError, yaml and sqlite errors for broken bags
        raise BagError(f"cannot open bag {p}: {e}") from e
    return reader


def read_bag_topics(path: Path | str) -> dict[str, TopicSummary]:
    """Topics of a bag: name -> type and message count."""
    reader = _open_reader(path)
    try:
        return {name: TopicSummary(name, info.msgtype or "?", info.msgcount) for name, info in reader.topics.items()}
    finally:
        reader.close()


def format_topics(topics: dict[str, TopicSummary]) -> str:
    """The topic list as ``  name  type  (count msgs)`` lines."""
    if not topics:
        return "  (the bag has no topics)"
    width = max(len(n) for n in topics)
    return "\n".join(f"  {t.name:<{width}}  {t.msgtype}  ({t.count} msgs)" for t in sorted(topics.values(),
                                                                                          key=lambda t: t.name))


def require_topic(bag: Path | str, topics: dict[str, TopicSummary], name: str, types: tuple[str, ...],
                  what: str, option: str) -> TopicSummary:
    """The topic ``name`` if the bag has it with one of ``types``; else a :class:`BagError` listing the topics."""
    t = topics.get(name)
    if t is None:
        raise BagError(f"bag {bag} has no {what} topic {name!r} (set it with {option}). Topics in the bag:\n"
                       + format_topics(topics))
    if t.msgtype not in types:
        raise BagError(f"{what} topic {name!r} in bag {bag} has type {t.msgtype}, expected "
                       f"{' or '.join(types)}. Topics in the bag:\n" + format_topics(topics))
    return t


def default_image_topic(topics: dict[str, TopicSummary]) -> str:
    """``/camera/image_raw`` if present, else ``/camera/image_raw/compressed`` if present, else the former."""
    if IMAGE_TOPIC not in topics and COMPRESSED_TOPIC in topics:
        return COMPRESSED_TOPIC
    return IMAGE_TOPIC


@dataclass
class BagMessage:
    """One message read from a bag (deserialised as a rosbags dataclass)."""

    topic: str
    msgtype: str
    timestamp_ns: int
    msg: Any


def iter_messages(path: Path | str, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Messages of the given topics (all if ``None``) in bag-time order."""
    reader = _open_reader(path)
    try:
        wanted = set(topics) if topics is not None else None
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for conn, t, raw in reader.messages(connections=conns):
            yield BagMessage(conn.topic, conn.msgtype, t, deserialize(raw, conn.msgtype))
    finally:
        reader.close()


def count_messages(path: Path | str, topic: str) -> int:
    """Number of messages on ``topic`` (0 when absent)."""
    t = read_bag_topics(path).get(topic)
    return t.count if t else 0


def mono8_array(msg: Any) -> np.ndarray:
    """A ``(H, W)`` uint8 view of a mono8 ``sensor_msgs/Image``; :class:`BagError` if it is not one."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise BagError(f"expected a mono8 image, got encoding {msg.encoding!r}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, np.uint8)
    if step < w or data.size < h * step:
        raise BagError(f"mono8 image {w}x{h} with step {step} holds only {data.size} bytes")
    return data[: h * step].reshape(h, step)[:, :w]


def decode_image(msg: Any, msgtype: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 array of an ``Image`` or ``CompressedImage`` message (via the ROS conversions).

    ``max_pixels`` is checked from the header (or the message's size fields) before decoding.
    """
    if msgtype == COMPRESSED_TYPE:
        return compressed_to_rgb(msg, max_pixels=max_pixels)
    return image_to_rgb(msg, max_pixels=max_pixels)


@dataclass
class ReadFrame:
    """A camera frame read back from a bag."""

    stamp_ns: int
    timestamp_ns: int
    frame_id: str
    rgb: np.ndarray
    gt: np.ndarray | None


def read_frames(path: Path | str, image_topic: str | None = None, gt_topic: str | None = GT_TOPIC) -> list[ReadFrame]:
    """Decoded image frames with their ground truth (matched by header stamp), in bag order."""
    topics = read_bag_topics(path)
    image_topic = image_topic or default_image_topic(topics)
    img_t = require_topic(path, topics, image_topic, IMAGE_TYPES, "image", "--image-topic")
    gts: dict[int, np.ndarray] = {}
    if gt_topic is not None and gt_topic in topics:
        for m in iter_messages(path, [gt_topic]):
            gts[stamp_ns_of(m.msg)] = mono8_array(m.msg).copy()
    out = []
    for m in iter_messages(path, [image_topic]):
        s = stamp_ns_of(m.msg)
        out.append(ReadFrame(s, m.timestamp_ns, m.msg.header.frame_id, decode_image(m.msg, img_t.msgtype),
                             gts.get(s)))
    return out


def read_camera_infos(path: Path | str, topic: str = CAMERA_INFO_TOPIC) -> list[Any]:
    """The ``CameraInfo`` messages of a bag (rosbags dataclasses)."""
    return [m.msg for m in iter_messages(path, [topic])]


def bag_info(path: Path | str) -> dict[str, Any]:
    """Storage, duration, start, message count and topics of a bag."""
    reader = _open_reader(path)
    try:
        files = sorted(p.name for p in Path(path).iterdir()) if Path(path).is_dir() else [Path(path).name]
        return {"path": str(path), "files": files, "duration_s": reader.duration / 1e9,
                "start_ns": reader.start_time if reader.message_count else 0, "messages": reader.message_count,
                "topics": {n: TopicSummary(n, i.msgtype or "?", i.msgcount) for n, i in reader.topics.items()}}
    finally:
        reader.close()


# --------------------------------------------------------------------------- CLI
