"""Frame sampling and accounting for a live camera stream (ROS-free).

The node's subscription callback hands every frame to a :class:`FrameScheduler`; a worker thread
takes frames from its single latest-frame slot. Every received frame ends as exactly one of:

- ``processed``: segmented and published;
- ``skipped``: left out by sampling (``process_every_n``, ``max_rate_hz``);
- ``dropped``: replaced in the slot by a newer frame before the worker took it (stale);
- ``bad``: malformed input (or a frame whose processing failed).

While a frame waits in the slot or is being processed it is ``pending``; so at any moment
``received == processed + skipped + dropped + bad + pending``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class FrameSampler:
    """Decides which frames to process: every n-th frame, then at most ``max_rate_hz`` (0 = no limit).

    The rate limit keeps a schedule (``next_due += period``) rather than measuring from the last
    accepted frame, so camera jitter does not lower the achieved rate below ``max_rate_hz``.
    """

    def __init__(self, process_every_n: int = 1, max_rate_hz: float = 0.0):
        self._lock = threading.Lock()
        self.process_every_n = 1
        self.max_rate_hz = 0.0
        self._index = 0
        self._next_due: float | None = None
        self.configure(process_every_n, max_rate_hz)

    @staticmethod
    def validate(process_every_n: int, max_rate_hz: float) -> None:
        if isinstance(process_every_n, bool) or not isinstance(process_every_n, int) or process_every_n < 1:
            raise ValueError(f"process_every_n must be an integer >= 1, got {process_every_n!r}")
        if not max_rate_hz >= 0.0 or max_rate_hz == float("inf"):
            raise ValueError(f"max_rate_hz must be >= 0 (0 = unlimited), got {max_rate_hz!r}")

    def configure(self, process_every_n: int | None = None, max_rate_hz: float | None = None) -> None:
        """Change the settings (validated); the frame count and rate schedule restart."""
        n = self.process_every_n if process_every_n is None else process_every_n
        r = self.max_rate_hz if max_rate_hz is None else float(max_rate_hz)
        self.validate(n, r)
        with self._lock:
            self.process_every_n, self.max_rate_hz = n, r
            self._index = 0
            self._next_due = None

    def accept(self, now: float) -> bool:
        """Count one frame received at ``now`` (seconds, monotonic); True if it should be processed."""
        with self._lock:
            index = self._index
            self._index += 1
            if index % self.process_every_n:
                return False
            if self.max_rate_hz <= 0.0:
                return True
            period = 1.0 / self.max_rate_hz
            if self._next_due is not None and now < self._next_due:
                return False
            # Keep the schedule across jitter, but never build up credit after a pause.
            due = now if self._next_due is None or now - self._next_due > period else self._next_due
            self._next_due = due + period
            return True


class LatestSlot:
    """A one-item, drop-oldest hand-over between a producer and one consumer thread."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store ``item``; True if it replaced an older item that was waiting (a stale frame)."""
        with self._cond:
            replaced = self._full
            self._item, self._full = item, True
            self._cond.notify()
        return replaced

    def take(self, timeout: float | None = None) -> Any | None:
        """Wait up to ``timeout`` s for an item and remove it; None on timeout or when closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self._closed, timeout):
                return None
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wake the consumer for good; later ``take`` calls return what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def full(self) -> bool:
        with self._cond:
            return self._full


@dataclass(frozen=True)
class FrameCounts:
    """A consistent snapshot of the frame accounting."""

    received: int = 0
    processed: int = 0
    skipped: int = 0
    dropped: int = 0
    bad: int = 0
    pending: int = 0

    @property
    def settled(self) -> int:
        return self.processed + self.skipped + self.dropped + self.bad


class FrameScheduler:
    """Sampler + latest-frame slot + counters, thread-safe; see the module docstring."""

    def __init__(self, sampler: FrameSampler | None = None):
        self.sampler = sampler or FrameSampler()
        self._slot = LatestSlot()
        self._lock = threading.Lock()
        self._c = {"received": 0, "processed": 0, "skipped": 0, "dropped": 0, "bad": 0, "pending": 0}

    def _add(self, **deltas: int) -> None:
        with self._lock:
            for k, v in deltas.items():
                self._c[k] += v

    def reject_bad(self) -> None:
        """Count a received frame that failed validation."""
        self._add(received=1, bad=1)

    def skip(self) -> None:
        """Count a received frame that is not processed (e.g. a managed node that is inactive)."""
        self._add(received=1, skipped=1)

    def discard(self) -> None:
        """A taken frame the worker will not process after all: counted as skipped."""
        self._add(pending=-1, skipped=1)

    def offer(self, frame: Any, now: float | None = None) -> str:
        """Count a received valid frame; queue it if sampling accepts it.

        Returns ``"skipped"``, ``"queued"`` or ``"queued_replacing"`` (an older waiting frame was
        dropped as stale).
        """
        now = time.monotonic() if now is None else now
        if not self.sampler.accept(now):
            self._add(received=1, skipped=1)
            return "skipped"
        self._add(received=1, pending=1)  # counted before the worker can take and finish it
        if self._slot.put(frame):  # atomic: the replaced frame was never taken
            self._add(dropped=1, pending=-1)
            return "queued_replacing"
        return "queued"

    def take(self, timeout: float | None = None) -> Any | None:
        """The latest waiting frame for the worker (it stays ``pending`` until :meth:`finish`)."""
        return self._slot.take(timeout)

    def finish(self, ok: bool) -> None:
        """The worker is done with a taken frame: processed (``ok``) or bad."""
        with self._lock:
            self._c["pending"] -= 1
            self._c["processed" if ok else "bad"] += 1

    def close(self) -> None:
        self._slot.close()

    def counts(self) -> FrameCounts:
        with self._lock:
            return FrameCounts(**self._c)


class LatencyTracker:
    """Percentiles of the last ``window`` latencies (seconds), thread-safe."""

    def __init__(self, window: int = 300):
        if window < 1:
            raise ValueError("window must be >= 1")
        self._values: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(float(seconds))

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100, nearest rank) of the window, None when empty."""
        with self._lock:
            values = sorted(self._values)
        if not values:
            return None
        rank = max(1, min(len(values), int(-(-q * len(values) // 100))))  # ceil(q/100 * n)
        return values[rank - 1]


class RateMeter:
    """Events per second over the last ``window_s`` seconds (0 when none), thread-safe."""

    def __init__(self, window_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self._clock = clock
        self._start = clock()
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        with self._lock:
            self._times.append(now)
            self._prune(now)

    def _prune(self, now: float) -> None:
        cut = now - self.window_s
        while self._times and self._times[0] <= cut:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        with self._lock:
            self._prune(now)
            span = min(self.window_s, now - self._start)
            n = len(self._times)
        return n / span if span > 0 else 0.0


def stale_status(now: float, last_received: float | None, started: float, timeout_s: float) -> tuple[bool, float]:
    """``(stale, seconds since the last frame or since start)``: stale once that exceeds ``timeout_s``."""
    since = now - (started if last_received is None else last_received)
    return since > timeout_s, since


__all__ = ["FrameCounts", "FrameSampler", "FrameScheduler", "LatencyTracker", "LatestSlot", "RateMeter",
           "stale_status"]
