"""The one rule for the ROS domain ids the tests use: ``domain_id(purpose)``.

Each id is held by one process at a time on the machine: taking it means taking an exclusive
``flock`` on ``<temp dir>/road_seg_ros_domain_ids/<id>.lock``, kept until the process ends (the
kernel drops the lock then, however the process ends). So two pytest runs on one machine never
share a domain (they could when ids were derived from the pid alone), and within one run every
``(purpose, index)`` has its own id.

The first id tried is ``FIRST + (pid + crc32(purpose) + index) % SPAN`` (``test_architecture``
checks that the purposes in use have distinct offsets); when another process holds it, the next
ones are tried in turn. An id is stable for a ``(purpose, index)`` within a process, never 0 (the
default domain of anything else running) and inside ROS's valid 0..232 (here 1..200). ``index``
spreads runs of one purpose that go in parallel over several ids. Subprocesses a test starts get
the test's id through ``ROS_DOMAIN_ID``.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import zlib
from pathlib import Path

FIRST = 1
SPAN = 200

_taken: dict[tuple[str, int], int] = {}
_fds: list[int] = []  # open for the life of the process: closing one would release its lock
_lock = threading.Lock()


def lock_dir() -> Path:
    """The folder of the per-id lock files (shared by every user's test runs on the machine)."""
    return Path(tempfile.gettempdir()) / "road_seg_ros_domain_ids"


def offset(purpose: str) -> int:
    """The stable per-purpose offset, ``crc32(purpose) % SPAN``."""
    return zlib.crc32(purpose.encode()) % SPAN


def _try_take(dom: int) -> bool:
    folder = lock_dir()
    try:
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            os.chmod(folder, 0o1777)  # like the temp dir itself: every user's runs take ids here
        fd = os.open(folder / f"{dom}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError:  # e.g. a lock file another user made and we may not read: treat the id as taken
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _fds.append(fd)
    return True


def domain_id(purpose: str, index: int = 0) -> int:
    """The ROS domain id of ``purpose`` in this process (``index``: one of several parallel runs of it)."""
    if not purpose:
        raise ValueError("domain_id: purpose must be a non-empty name")
    key = (purpose, index)
    with _lock:
        if key in _taken:
            return _taken[key]
        start = (os.getpid() + offset(purpose) + index) % SPAN
        for k in range(SPAN):
            dom = FIRST + (start + k) % SPAN
            if _try_take(dom):
                _taken[key] = dom
                return dom
    raise RuntimeError(f"domain_id({purpose!r}, {index}): all {SPAN} ROS domain ids are held by test processes "
                       f"(lock files in {lock_dir()})")
