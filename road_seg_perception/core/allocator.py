"""Keep large buffers in the heap, so per-frame image buffers do not page-fault on every frame.

glibc serves allocations above ``M_MMAP_THRESHOLD`` (128 kB at start) with fresh ``mmap`` pages and
returns them on ``free``; a 480x360 RGB image (518 kB) and its copies in DDS, rclpy and numpy then
fault in about 130 new pages each, every frame. Raising the threshold lets the heap reuse those
buffers: ``python bench/transport.py`` times a 480x360 image and its mask round trip between two
rclpy processes with and without this setting (the README's Performance section has the last run).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
ENV_DISABLE = "ROAD_SEG_NO_MALLOC_TUNING"


def keep_large_buffers(mmap_threshold: int = 64 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Raise glibc's mmap and trim thresholds for this process.

    Returns True when applied; False off glibc or when ``$ROAD_SEG_NO_MALLOC_TUNING`` is set (to 1).
    """
    if os.environ.get(ENV_DISABLE, "") not in ("", "0"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
