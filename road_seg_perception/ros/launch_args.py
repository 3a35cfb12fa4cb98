"""Launch-argument parsing and checks shared by the package's launch files (stdlib only, no ``launch``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time

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
