"""Launch-argument parsing and checks shared by the package's launch files (stdlib only, no ``launch``),
and :func:`sigint_to_launch_only`, which they call when they run."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any

#: Bag players of ``rosbag_replay.launch.py``: ``auto`` is ``ros2bag`` when ``ros2 bag`` is installed.
BAG_PLAYERS = ("auto", "ros2bag", "road-seg-replay")


def parse_bool(name: str, text: str) -> bool:
    """``'true'``/``'false'`` (any case) to a bool; anything else is an error naming the argument."""
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name}:={text!r} must be true or false")
    return value == "true"


def parse_float(name: str, text: str, minimum: float) -> float:
    """A float launch argument, at least ``minimum``; an error naming the argument otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"launch argument {name}:={text!r} must be a number") from None
    if value < minimum:
        raise ValueError(f"launch argument {name}:={text!r} must be >= {minimum}")
    return value


def check_bag(text: str) -> str:
    """The ``bag`` argument: required, an existing rosbag2 folder or file."""
    path = text.strip()
    if not path:
        raise ValueError("launch argument bag:=... is required (a rosbag2 folder or file)")
    if not os.path.exists(path):
        raise ValueError(f"launch argument bag:={path!r}: no such file or folder")
    return path


def ros2bag_available() -> bool:
    """Whether ``ros2 bag`` can run here (the ``ros2bag`` package and the ``ros2`` command)."""
    return importlib.util.find_spec("ros2bag") is not None and shutil.which("ros2") is not None


def bag_player(text: str) -> str:
    """The ``player`` argument resolved: ``ros2bag`` or ``road-seg-replay``."""
    choice = text.strip()
    if choice not in BAG_PLAYERS:
        raise ValueError(f"launch argument player:={text!r} must be one of {', '.join(BAG_PLAYERS)}")
    if choice == "auto":
        return "ros2bag" if ros2bag_available() else "road-seg-replay"
    if choice == "ros2bag" and not ros2bag_available():
        raise ValueError("launch argument player:=ros2bag: 'ros2 bag' is not installed (ros2bag)")
    return choice


def default_record_bag() -> str:
    """The name ``ros2 bag record`` gives a recording without ``-o``: ``rosbag2_<date>-<time>``."""
    return time.strftime("rosbag2_%Y_%m_%d-%H_%M_%S")


def sigint_to_launch_only(loop: asyncio.AbstractEventLoop | None) -> bool:
    """While ``loop`` (the launch's event loop) runs, SIGINT raises no ``KeyboardInterrupt`` in this process.

    ``LaunchService`` handles SIGINT itself (``signal.set_wakeup_fd``: Ctrl-C shuts the launch down) and
    swallows ``KeyboardInterrupt``, but Python's default handler still raises one wherever the main thread
    is. Raised inside asyncio's loop between taking a ready callback and running it, it drops that callback
    (a task's wake-up) and ``ros2 launch`` waits forever after its processes have exited. The handler put
    in place here returns quietly while ``loop`` runs in this thread and is the default handler otherwise
    (after the launch, and in a test process around it). It replaces only Python's default handler (or one
    it put in place for an earlier launch in this process), from the main thread, and not once rclpy has
    installed its own (its C handler would be replaced). Returns whether the handler is (now) in place;
    False without a running launch (``loop`` None).
    """
    if loop is None or threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGINT)
    if getattr(current, "launch_loop", None) is loop:
        return True
    ours = hasattr(current, "launch_loop")  # left by an earlier launch in this process
    rclpy_signals = sys.modules.get("rclpy.signals")
    if rclpy_signals is not None and rclpy_signals.get_current_signal_handlers_options() \
            != rclpy_signals.SignalHandlerOptions.NO:
        return False
    if not ours and current is not signal.default_int_handler:
        return False

    def on_sigint(signum: int, frame: Any) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            signal.default_int_handler(signum, frame)

    on_sigint.launch_loop = loop
    signal.signal(signal.SIGINT, on_sigint)
    return True
