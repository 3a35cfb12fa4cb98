"""``road-seg-replay``: publish a rosbag2 into the live ROS graph through rclpy, and record topics.

    road-seg-replay BAG [--rate X] [--loop] [--topics T ...] [--duration S] [--wait-for TOPIC]
                    [--record OUT_BAG [--record-topics T ...] [--storage sqlite3|mcap]]
                    [--ros-args -r /camera/image_raw:=/other ...]

Works without ros2cli or rosbag2_py: bags are read and written with ``rosbags``. Messages are
published as the recorded CDR bytes (no re-serialisation), at their recorded timing scaled by
``--rate`` (0 = as fast as possible), each topic with the QoS its bag metadata offers.
``--record`` writes the given topics (default ``/road_mask /road_overlay /diagnostics``) to a new
bag (never the replayed one); playing starts once the recorder's subscriptions have matched their
publishers, and recording goes on after the last message until the recorded topics are quiet
(``--record-quiet``, at most ``--record-grace``), so neither the first nor the last outputs are
lost. A bag with no messages on the replayed topics is refused. SIGINT and SIGTERM stop replay
and recording and close the bag cleanly, so it stays readable.

Library use (tests, the demo): :class:`Replayer` publishes, :class:`Recorder` records,
:class:`StampWaiter` lets a replay wait for each frame's output (lock-step).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from road_seg_perception.bagio.bag import EXIT_USAGE, BagError, BagWriter, format_topics, read_bag_topics, typestore
from road_seg_perception.core.allocator import keep_large_buffers
from road_seg_perception.core.cli_errors import EXIT_RUNTIME, fail

DEFAULT_RECORD_TOPICS = ("/road_mask", "/road_overlay", "/diagnostics")


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``; a clear error if its package is not installed.

    Type names come from bag files: only an installed package's ``msg``/``srv``/``action``
    subpackage is imported, so a bag cannot make this import (run) an arbitrary module.
    """
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] not in ("msg", "srv", "action") or not all(p.isidentifier() for p in parts):
        raise RuntimeError(f"message type {msgtype!r} is not available to rclpy (expected package/msg/Name)")
    pkg, kind, name = parts
    spec = importlib.util.find_spec(pkg)  # a top-level name: looked up without importing it
    if spec is None or not any((Path(loc) / kind / "__init__.py").is_file()
                               for loc in spec.submodule_search_locations or ()):
        raise RuntimeError(f"message type {msgtype!r} is not available to rclpy (no installed {pkg}.{kind})")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"message type {msgtype!r} is not available to rclpy ({e})") from e


def _absolute(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


def qos_from_bag(profiles: list, depth: int = 10):
    """rclpy ``QoSProfile`` from a bag connection's offered profiles (reliable/volatile keep-last if none)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability, durability = ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE
    if profiles:
        rels = {p.reliability.name for p in profiles}
        durs = {p.durability.name for p in profiles}
        if rels == {"BEST_EFFORT"}:
            reliability = ReliabilityPolicy.BEST_EFFORT
        if durs == {"TRANSIENT_LOCAL"}:
            durability = DurabilityPolicy.TRANSIENT_LOCAL
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=durability)


def _bag_qos_from_rclpy(qos) -> Any:
    """rosbags ``Qos`` (for the bag metadata) from an rclpy ``QoSProfile``."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def enum(cls, value, default):
        try:
            return cls(int(value))
        except ValueError:
            return default

    zero = QosTime(0, 0)
    return Qos(enum(QosHistory, qos.history, QosHistory.KEEP_LAST), int(qos.depth),
               enum(QosReliability, qos.reliability, QosReliability.RELIABLE),
               enum(QosDurability, qos.durability, QosDurability.VOLATILE), zero, zero,
               enum(QosLiveliness, qos.liveliness, QosLiveliness.AUTOMATIC), zero, False)


# --------------------------------------------------------------------------- publishing


@dataclass
class ReplayStats:
    """What a :class:`Replayer` published."""

    published: dict[str, int] = field(default_factory=dict)
    passes: int = 0
    wall_s: float = 0.0
    stopped_early: bool = False


class Replayer:
    """Publishes a bag's messages at their recorded timing (scaled by ``rate``; 0 = no waiting).

    ``on_publish(topic, timestamp_ns, data, wall_ns)`` is called after each message; it may block
    (e.g. :meth:`StampWaiter.wait`), which is how lock-step replay is done.
    """

    def __init__(self, node, bag: Path | str, topics: Iterable[str] | None = None, rate: float = 1.0,
                 loop: bool = False, depth: int = 10):

        if rate < 0:
            raise ValueError(f"rate must be >= 0 (0 = as fast as possible), got {rate}")
        self.node, self.bag, self.rate, self.loop = node, Path(bag), rate, loop
        bag_topics = read_bag_topics(self.bag)
        wanted = list(bag_topics) if topics is None else [_absolute(t) for t in topics]
        missing = [t for t in wanted if t not in bag_topics]
        if missing:
            raise BagError(f"bag {self.bag} has no topic {', '.join(map(repr, missing))}. Topics in the bag:\n"
                           + format_topics(bag_topics))
        n_messages = sum(bag_topics[t].count for t in wanted)
        if n_messages == 0:
            what = f"on {', '.join(wanted)}" if wanted else "(it has no topics)"
            raise BagError(f"bag {self.bag} has no messages {what}; nothing to replay")
        self.topics = wanted
        self.publishers: dict[str, Any] = {}
        self.msgtypes: dict[str, str] = {}
        from rosbags.rosbag2 import Reader

        with Reader(self.bag) as r:
            for c in r.connections:
                if c.topic in wanted and c.topic not in self.publishers:
                    qos = qos_from_bag(list(getattr(c.ext, "offered_qos_profiles", []) or []), depth)
                    self.publishers[c.topic] = node.create_publisher(message_class(c.msgtype), c.topic, qos)
                    self.msgtypes[c.topic] = c.msgtype
        self.stats = ReplayStats({t: 0 for t in wanted})

    def wait_for_subscribers(self, topics: Iterable[str], timeout_s: float = 30.0,
                             stop: threading.Event | None = None) -> bool:
        """Wait until each of ``topics`` (published by this replayer) has a subscriber; False on timeout."""
        unknown = [t for t in topics if _absolute(t) not in self.publishers]
        if unknown:
            raise ValueError(f"cannot wait for {', '.join(unknown)}: not published by this replay "
                             f"(published: {', '.join(self.publishers)})")
        pubs = [self.publishers[_absolute(t)] for t in topics]
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not (stop and stop.is_set()):
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            time.sleep(0.05)
        return False

    def run(self, stop: threading.Event | None = None, duration_s: float | None = None,
            on_publish: Callable[[str, int, bytes, int], None] | None = None) -> ReplayStats:
        """Publish (once, or until stopped/``duration_s`` with ``loop``); returns the stats."""
        from rosbags.rosbag2 import Reader

        stop = stop or threading.Event()
        start = time.monotonic()
        deadline = start + duration_s if duration_s else None

        def done() -> bool:
            return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

        while not done():
            with Reader(self.bag) as r:
                conns = [c for c in r.connections if c.topic in self.publishers]
                pass_start = time.monotonic()
                first: int | None = None
                for conn, ts, data in r.messages(connections=conns):
                    first = ts if first is None else first
                    if self.rate > 0:
                        target = pass_start + (ts - first) / 1e9 / self.rate
                        while not done() and (left := target - time.monotonic()) > 0:
                            time.sleep(min(left, 0.05))
                    if done():
                        break
                    raw = bytes(data)
                    self.publishers[conn.topic].publish(raw)
                    self.stats.published[conn.topic] += 1
                    if on_publish is not None:
                        on_publish(conn.topic, ts, raw, time.time_ns())
                else:
                    self.stats.passes += 1
                    if first is None:  # nothing to publish (a bag whose metadata lied): never spin on it
                        break
            if not self.loop:
                break
        self.stats.stopped_early = stop.is_set()
        self.stats.wall_s = time.monotonic() - start
        return self.stats


# --------------------------------------------------------------------------- recording


class Recorder:
    """Records topics from the live graph into a rosbag2 (rosbags ``Writer``), raw CDR bytes.

    Topics are subscribed once a publisher shows up (checked every ``discovery_period_s``), with
    a QoS compatible with the publishers (best effort if any publisher is). Receive timestamps come
    from the node's clock. One writer thread owns the bag (sqlite3 objects are bound to the thread
    that made them; disk I/O stays off the executor). Call :meth:`close` (or use ``with``) to write
    ``metadata.yaml``; sqlite3 storage is committed every ``flush_period_s`` so a killed process
    loses little.
    """

    def __init__(self, node, out: Path | str, topics: Iterable[str] = DEFAULT_RECORD_TOPICS,
                 storage: str = "sqlite3", overwrite: bool = False, depth: int = 100,
                 discovery_period_s: float = 0.2, flush_period_s: float = 1.0,
                 on_message: Callable[[str, bytes, int], None] | None = None, inputs: Iterable[Path | str] = ()):
        self.node = node
        self.topics = [_absolute(t) for t in topics]
        if not self.topics:
            raise ValueError("no topics to record")
        self.path = Path(out)
        self.depth = depth
        self.on_message = on_message
        self.flush_period_s = flush_period_s
        self.counts: dict[str, int] = {t: 0 for t in self.topics}
        self.skipped: dict[str, str] = {}
        self._subs: dict[str, Any] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.last_message_monotonic = time.monotonic()
        self.last_by_topic: dict[str, float] = {}
        self._thread = threading.Thread(target=self._write_loop, args=(storage, overwrite, list(inputs)),
                                        name="recorder",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        self._timer = node.create_timer(discovery_period_s, self.discover)
        self.discover()

    def _write_loop(self, storage: str, overwrite: bool, inputs: list) -> None:

        try:
            writer = BagWriter(self.path, storage, overwrite, inputs)
        except BaseException as e:  # reported by the constructor
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        last_flush = time.monotonic()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self.flush_period_s)
                except queue.Empty:
                    item = None
                if item is not None:
                    if item[0] == "close":
                        break
                    if item[0] == "topic":
                        writer.add_topic(item[1], item[2], item[3])
                    else:
                        writer.write_raw(item[1], item[2], item[3])
                if time.monotonic() - last_flush >= self.flush_period_s:
                    writer.flush()
                    last_flush = time.monotonic()
        finally:
            writer.close()

    def discover(self) -> None:
        """Subscribe to every wanted topic that now has a publisher with a known type."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        pending = [t for t in self.topics if t not in self._subs and t not in self.skipped]
        if not pending or self._closed:
            return
        types = dict(self.node.get_topic_names_and_types())
        for topic in pending:
            infos = self.node.get_publishers_info_by_topic(topic)
            if topic not in types or not infos:
                continue
            msgtype = types[topic][0]
            if msgtype not in typestore().fielddefs:
                self.skipped[topic] = f"type {msgtype} is unknown to the rosbags type store"
                self.node.get_logger().warning(f"not recording {topic}: {self.skipped[topic]}")
                continue
            best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
            transient = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth,
                             reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE)
            with self._lock:
                if self._closed:
                    return
                self._queue.put(("topic", topic, msgtype, [_bag_qos_from_rclpy(infos[0].qos_profile)]))
            self._subs[topic] = self.node.create_subscription(
                message_class(msgtype), topic, lambda data, t=topic: self._on_data(t, data), qos, raw=True)

    @property
    def subscribed(self) -> list[str]:
        return list(self._subs)

    def unmatched(self, topics: Iterable[str] | None = None) -> list[str]:
        """Topics (default: all recorded ones) not yet subscribed or whose subscription sees no publisher."""
        wanted = self.topics if topics is None else [_absolute(t) for t in topics]
        return [t for t in wanted if t not in self.skipped
                and (t not in self._subs or self._subs[t].get_publisher_count() == 0)]

    def wait_matched(self, topics: Iterable[str] | None = None, timeout_s: float = 30.0,
                     stop: threading.Event | None = None, settle_s: float = 0.5) -> list[str]:
        """Wait until each topic's subscription has matched a publisher (the executor must be spinning).

        Then waits ``settle_s`` more, as the publishers see the new subscription a moment after it
        sees them. Returns the topics still unmatched at ``timeout_s`` (empty list: all matched).
        """
        end = time.monotonic() + timeout_s
        while (left := self.unmatched(topics)) and time.monotonic() < end and not (stop and stop.is_set()):
            time.sleep(0.05)
        if not left:
            time.sleep(settle_s)
        return left

    def _on_data(self, topic: str, data: bytes) -> None:
        now = self.node.get_clock().now().nanoseconds
        with self._lock:
            if self._closed:
                return
            self._queue.put(("msg", topic, now, data))
            self.counts[topic] += 1
            self.last_message_monotonic = self.last_by_topic[topic] = time.monotonic()
        if self.on_message is not None:
            self.on_message(topic, data, now)

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop recording, write what is queued and the bag's metadata; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(("close",))
        self._thread.join(timeout_s)
        self.node.destroy_timer(self._timer)
        for sub in self._subs.values():
            self.node.destroy_subscription(sub)
        self._subs.clear()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StampWaiter:
    """Subscribes to an output topic and lets a publisher wait until an output with a given stamp arrives."""

    def __init__(self, node, topic: str, msgtype: str = "sensor_msgs/msg/Image", depth: int = 100,
                 reliable: bool = False):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self._cond = threading.Condition()
        self._seen: set[int] = set()
        self.timeouts = 0
        policy = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=depth, reliability=policy)
        self._sub = node.create_subscription(message_class(msgtype), _absolute(topic), self._cb, qos)

    def _cb(self, msg) -> None:
        s = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._cond:
            self._seen.add(s)
            self._cond.notify_all()

    def wait(self, stamp_ns: int, timeout_s: float, stop: threading.Event | None = None) -> bool:
        """True once an output with ``stamp_ns`` has arrived; False after ``timeout_s`` (counted)."""
        end = time.monotonic() + timeout_s
        with self._cond:
            while stamp_ns not in self._seen:
                left = end - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    self.timeouts += 1
                    return False
                self._cond.wait(min(left, 0.1))
            return True


def header_stamp_ns(data: bytes, msgtype: str) -> int:
    """Header stamp of a serialised message (via rclpy deserialisation)."""
    from rclpy.serialization import deserialize_message

    m = deserialize_message(data, message_class(msgtype))
    return m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="road-seg-replay", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", metavar="BAG", help="rosbag2 folder (sqlite3 or mcap)")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate factor; 0 = as fast as possible")
    p.add_argument("--loop", action="store_true", help="replay the bag again and again")
    p.add_argument("--topics", nargs="+", metavar="T", help="only these topics of the bag (default: all)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--wait-for", nargs="+", metavar="TOPIC", default=[],
                   help="before starting, wait until these published topics have a subscriber")
    p.add_argument("--wait-timeout", type=float, default=30.0, help="seconds --wait-for waits (default: 30)")
    p.add_argument("--lockstep", metavar="OUTPUT_TOPIC",
                   help="after each message of --lockstep-input, wait for an Image on OUTPUT_TOPIC with its stamp")
    p.add_argument("--lockstep-input", default="/camera/image_raw", help="input topic paced by --lockstep")
    p.add_argument("--lockstep-timeout", type=float, default=5.0, help="seconds to wait per frame (default: 5)")
    p.add_argument("--record", metavar="OUT_BAG", help="record topics to this new bag")
    p.add_argument("--record-topics", nargs="+", metavar="T", default=list(DEFAULT_RECORD_TOPICS),
                   help=f"topics to record (default: {' '.join(DEFAULT_RECORD_TOPICS)})")
    p.add_argument("--record-grace", type=float, default=10.0, metavar="S",
                   help="after the replay ends, record until no message came for --record-quiet seconds, "
                        "at most S seconds (default: 10)")
    p.add_argument("--record-quiet", type=float, default=1.0, metavar="S",
                   help="the recording is drained once no message came for S seconds (default: 1)")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="storage of --record")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --record bag (only a bag this package wrote, never the input)")
    p.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    keep_large_buffers()
    full = sys.argv if argv is None else ["road-seg-replay", *argv]
    args = parse_args(remove_ros_args(full)[1:])
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        stop.set()

    # Our own handlers (not rclpy's), so SIGTERM/SIGINT end the loop and the bag gets closed.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    rclpy.init(args=full, signal_handler_options=SignalHandlerOptions.NO)
    node = Node("road_seg_replay")
    recorder = None
    thread = None
    executor = SingleThreadedExecutor()
    try:
        try:
            replayer = Replayer(node, args.bag, args.topics, args.rate, args.loop)
            for t in [*args.wait_for, *([args.lockstep_input] if args.lockstep else [])]:
                if _absolute(t) not in replayer.publishers:
                    raise ValueError(f"{t} is not among the replayed topics ({', '.join(replayer.publishers)})")
            if args.record:
                recorder = Recorder(node, args.record, args.record_topics, args.storage, args.overwrite,
                                    inputs=[args.bag])
        except (BagError, ValueError, RuntimeError) as e:
            return fail("road-seg-replay", e, EXIT_USAGE, args.debug)
        executor.add_node(node)
        log = node.get_logger()
        for t, pub in replayer.publishers.items():
            q = pub.qos_profile
            log.info(f"publishing {t} [{replayer.msgtypes[t]}] qos {q.reliability.name.lower()}/"
                     f"{q.durability.name.lower()}/depth {q.depth}")
        on_publish = None
        if args.lockstep:
            waiter = StampWaiter(node, args.lockstep)
            paced = _absolute(args.lockstep_input)

            def on_publish(topic: str, _ts: int, data: bytes, _wall: int) -> None:
                if topic == paced:
                    waiter.wait(header_stamp_ns(data, replayer.msgtypes[topic]), args.lockstep_timeout, stop)

        result: dict[str, Any] = {}

        def work() -> None:
            if args.wait_for and not replayer.wait_for_subscribers(args.wait_for, args.wait_timeout, stop):
                log.warning(f"no subscriber on {args.wait_for} after {args.wait_timeout} s; replaying anyway")
            if recorder is not None:  # a message published before the recorder matched would be lost
                left = recorder.wait_matched(timeout_s=args.wait_timeout, stop=stop)
                if left:
                    log.warning(f"recording: no publisher matched {', '.join(left)} after {args.wait_timeout} s; "
                                "replaying anyway (their first messages may be missing)")
                # topics already flowing before the replay (e.g. /diagnostics) say nothing about its drain
                result["periodic"] = {t for t, n in recorder.counts.items() if n > 0}
            result["stats"] = replayer.run(stop, args.duration, on_publish)

        def guarded_work() -> None:
            try:
                work()
            except Exception as e:  # reported by the main thread as one line (exit 1)
                result["error"] = e

        thread = threading.Thread(target=guarded_work, name="replay", daemon=True)
        thread.start()
        grace_end: float | None = None
        replay_end = 0.0
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
            if not thread.is_alive():
                if recorder is None:
                    break
                # drain: outputs of the last frames are still on their way
                if grace_end is None:
                    replay_end, grace_end = time.monotonic(), time.monotonic() + args.record_grace
                periodic = result.get("periodic", set())
                last = max([recorder.last_by_topic.get(t, 0.0) for t in recorder.topics if t not in periodic]
                           + [replay_end])
                quiet = time.monotonic() - last >= args.record_quiet
                if quiet or time.monotonic() >= grace_end:
                    if not quiet:
                        log.warning(f"recording: messages still arriving {args.record_grace} s after the replay "
                                    "ended; stopping (raise --record-grace)")
                    break
        stop.set()
        thread.join(timeout=5.0)
        if "error" in result:
            return fail("road-seg-replay", result["error"], EXIT_RUNTIME, args.debug)
        stats: ReplayStats | None = result.get("stats")
        if stats is not None:
            log.info(f"published {sum(stats.published.values())} messages in {stats.wall_s:.1f} s "
                     f"({stats.passes} full pass(es)): " + ", ".join(f"{t} x{n}" for t, n in stats.published.items()))
        return 0
    finally:
        stop.set()
        if recorder is not None:
            recorder.close()
            print(f"recorded {recorder.path}: " + ", ".join(f"{t} x{n}" for t, n in recorder.counts.items()),
                  flush=True)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
