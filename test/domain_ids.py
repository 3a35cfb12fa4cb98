"""The one rule for the ROS domain ids the tests use: ``domain_id(purpose)``.

An id is ``FIRST + (pid + crc32(purpose) + index) % SPAN``: stable for a purpose within one pytest run, apart
for different purposes (their crc32 offsets differ; ``test_architecture`` checks the purposes in use), apart
from another pytest run on the machine (the pid), never 0 (the default domain of anything else running) and
inside ROS's valid 0..232 (here 1..200). ``index`` spreads runs of one purpose that go in parallel over
consecutive ids. Subprocesses a test starts get the test's id through ``ROS_DOMAIN_ID``.
"""

from __future__ import annotations

import os
import zlib

FIRST = 1
SPAN = 200


def offset(purpose: str) -> int:
    """The stable per-purpose offset, ``crc32(purpose) % SPAN``."""
    return zlib.crc32(purpose.encode()) % SPAN


def domain_id(purpose: str, index: int = 0) -> int:
    """The ROS domain id of ``purpose`` in this process (``index``: one of several parallel runs of it)."""
    if not purpose:
        raise ValueError("domain_id: purpose must be a non-empty name")
    return FIRST + (os.getpid() + offset(purpose) + index) % SPAN
