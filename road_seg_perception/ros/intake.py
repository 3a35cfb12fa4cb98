"""Serve one subscription from a thread of its own instead of the executor.

rclpy's executors are Python: every wake-up rebuilds a wait set of all the node's entities (its
parameter services, timers, subscriptions) before a callback runs. For the camera stream that costs
a fraction of a millisecond per frame on a small CPU (``python bench/intake_ab.py`` measures it).
:class:`SubscriptionIntake` waits on the one subscription with a wait set of its own, takes each
message as it arrives and calls the subscription's callback on its thread. A callback group that no
executor may run keeps the executor away from that subscription, so every message is taken once.

The wait set is the one ``rclpy.wait_for_message`` uses (``rclpy_implementation.WaitSet``, in rclpy
since Humble). Where it is missing, :func:`intake_available` says so and callers stay on the executor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rclpy.callback_groups import CallbackGroup


class _NoSuchError(Exception):
    """Stands in for an exception type this rclpy does not have (never raised)."""


try:
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

    _WaitSet = getattr(_rclpy, "WaitSet", None)
    _InvalidHandle: type[Exception] = getattr(_rclpy, "InvalidHandle", _NoSuchError)
except ImportError:  # pragma: no cover - an rclpy without the implementation singleton
    _WaitSet = None
    _InvalidHandle = _NoSuchError

#: How long one wait lasts (ns): how quickly :meth:`SubscriptionIntake.stop` is noticed.
POLL_NS = 100_000_000
#: Pause after a reported error, so a fault that repeats cannot turn the loop into a busy one.
ERROR_PAUSE_S = 0.01


def intake_available() -> bool:
    """Whether this rclpy offers the wait set the intake thread needs."""
    return _WaitSet is not None


class NoExecutorGroup(CallbackGroup):
    """A callback group whose entities no executor runs (they are served by a thread of their own)."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        return None


class SubscriptionIntake:
    """Take the messages of ``subscription`` on a daemon thread and hand each to ``on_message``.

    The subscription must belong to a :class:`NoExecutorGroup`. ``on_error`` gets any exception
    ``on_message`` or the wait raises (the thread goes on); by default it is re-raised, which ends the thread.
    The thread also ends, quietly, when the subscription or its context is destroyed.
    """

    def __init__(self, subscription: Any, on_message: Callable[[Any], None], context: Any,
                 name: str = "subscription_intake", on_error: Callable[[Exception], None] | None = None):
        if _WaitSet is None:
            raise RuntimeError("this rclpy has no rclpy_implementation.WaitSet; use the executor instead")
        if not isinstance(subscription.callback_group, NoExecutorGroup):
            raise ValueError("the subscription must be created with callback_group=NoExecutorGroup(), "
                             "or an executor would take its messages too")
        self._sub = subscription
        self._on_message = on_message
        self._on_error = on_error
        self._context = context
        self._stop = threading.Event()
        self.taken = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> SubscriptionIntake:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end and wait for it (within one wait of ``POLL_NS``)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _take(self, wait_set: Any) -> Any | None:
        sub = self._sub
        with sub.handle:  # keeps the handle valid while it is in use; take returns None after a timeout
            wait_set.clear_entities()
            wait_set.add_subscription(sub.handle)
            wait_set.wait(POLL_NS)
            taken = sub.handle.take_message(sub.msg_type, sub.raw)
        return None if taken is None else taken[0]

    def _run(self) -> None:
        wait_set = _WaitSet(1, 0, 0, 0, 0, 0, self._context.handle)
        while not self._stop.is_set():
            try:
                msg = self._take(wait_set)
            except _InvalidHandle:
                return  # the subscription (or its node) was destroyed: nothing left to take
            except Exception as e:
                if self._report(e):
                    return
                continue
            if msg is None:
                continue
            self.taken += 1
            try:
                self._on_message(msg)
            except Exception as e:
                if self._report(e):
                    return

    def _report(self, error: Exception) -> bool:
        """Hand ``error`` to ``on_error`` (or re-raise it); True when the thread should end instead."""
        if self._stop.is_set() or not self._context.ok():
            return True  # shutting down: the context went away under the wait
        if self._on_error is None:
            raise error
        self._on_error(error)
        self._stop.wait(ERROR_PAUSE_S)
        return False
