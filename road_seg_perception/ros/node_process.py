"""Run one node as a process: start-up failures, SIGINT/SIGTERM and an orderly shutdown.

The signal handlers are the process's own, not rclpy's. rclpy's handlers shut the context down
from the signal, while the executor, the intake thread and the parameter services still use it
(``RCLError: failed to initialize wait set``, "publisher's context is invalid" on rosout), and
Python's SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread is, also inside the
clean-up when a terminal's Ctrl-C and ``ros2 launch`` both deliver one. Here a signal only sets a
flag: the spin loop notices it within :data:`SIGNAL_POLL_S`, the node is destroyed (threads joined)
and only then is the context shut down. Further signals during the clean-up change nothing.

A process's clean-up is bounded: if it (or the interpreter's exit after it) has not ended within
:data:`CLEANUP_LIMIT_S`, ``faulthandler`` prints every thread's stack to stderr and ends the process
with status 1. Its own waits are bounded well below that; what is left is native code (DDS entities
torn down while a service call is in flight, daemon threads at interpreter exit), which no Python
timeout reaches. ``faulthandler``'s watchdog is a native thread, so it fires even then.
"""

from __future__ import annotations

import faulthandler
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from road_seg_perception.core.allocator import keep_large_buffers
from road_seg_perception.core.native_import import set_signals_end_native_imports
from road_seg_perception.ros.model_loader import exit_now_if_loading

#: Longest wait of one spin step: how late a signal can be noticed.
SIGNAL_POLL_S = 0.1
#: Longest clean-up of a node process (:func:`run_node` with ``process_exits_after``), exit included:
#: after it, the stacks are printed and the process exits 1. The clean-up's own waits add up to 11.5 s.
CLEANUP_LIMIT_S = 15.0
#: Signals that end the node cleanly (exit 0).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STOP = threading.Event()


def stop_requested() -> bool:
    """Whether a stop signal arrived since :func:`run_node` began (model loads poll this)."""
    return _STOP.is_set()


def run_node(make_node: Callable[[], Any], logger_name: str, args: list[str] | None = None, *,
             expected_errors: tuple[type[Exception], ...] = (),
             finished: Callable[[Any], bool] | None = None, linger_s: float = 0.0,
             process_exits_after: bool = False) -> int:
    """Create the node with ``make_node()`` and spin it until a stop signal or ``finished(node)``.

    Returns 0 after a signal or when ``finished``; 1 when the node cannot be created (one ``cannot
    start`` line; a traceback only for errors not in ``expected_errors`` or rclpy's parameter
    errors). ``linger_s``: keep spinning this long after ``finished`` (so a last service response
    goes out). The previous signal handlers are put back at the end; with ``process_exits_after`` (a
    process's ``main``) the stop signals stay ignored instead, so a late Ctrl-C (a terminal's repeated
    ones) cannot kill the process while it exits (Python's own default handler would, with -SIGINT).
    """
    tuned = keep_large_buffers()  # before any image buffer is allocated
    stop = _STOP
    stop.clear()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    set_signals_end_native_imports(True)  # a signal during TensorFlow's first import ends the process
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    log = rclpy.logging.get_logger(logger_name)
    node = None
    executor = None
    try:
        try:
            node = make_node()
        except expected_errors as e:
            log.fatal(f"cannot start: {e}")
            return 1
        except ExternalShutdownException:  # a stop signal during a model load in the constructor
            log.info("shutting down: a stop signal came during start-up")
            return 0
        except Exception as e:  # a parameter rclpy refused at declaration, or anything unexpected
            log.fatal(f"cannot start: {type(e).__name__}: {e}")
            if not isinstance(e, ParameterException):
                log.fatal(traceback.format_exc())
            return 1
        if tuned:
            log.debug("large buffers kept in the heap (mallopt); set ROAD_SEG_NO_MALLOC_TUNING=1 to turn off")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.is_set():
                executor.spin_once(timeout_sec=SIGNAL_POLL_S)
                if finished is not None and finished(node):
                    _linger(executor, stop, linger_s)
                    break
        except ExternalShutdownException:
            pass
        node.get_logger().info("shutting down")
        return 0
    finally:
        if process_exits_after:
            _arm_cleanup_watchdog(log)
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        set_signals_end_native_imports(False)
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if process_exits_after else handler)
        exit_now_if_loading(0)  # a stop signal during a model load: do not wait for the load's thread


def _arm_cleanup_watchdog(log: Any) -> None:
    """Print every stack and exit 1 if the process is still here :data:`CLEANUP_LIMIT_S` from now."""
    try:
        faulthandler.dump_traceback_later(CLEANUP_LIMIT_S, exit=True)
    except (ValueError, OSError, AttributeError, RuntimeError) as e:  # stderr missing or without a descriptor
        log.warning(f"clean-up watchdog not armed ({type(e).__name__}: {e}); a hung clean-up will not be ended")


def _linger(executor: SingleThreadedExecutor, stop: threading.Event, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < end:
        executor.spin_once(timeout_sec=min(SIGNAL_POLL_S, max(0.0, end - time.monotonic())))
