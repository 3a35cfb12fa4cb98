"""Loading models off the executor thread, file identity for reloads, and unknown-parameter warnings.

The node runs the cheap file checks (``core.backends.precheck_model``) in its parameter callback
and hands the load itself to a :class:`ModelLoader` thread, so ``/diagnostics`` and the parameter
services stay live while a model loads. At start-up :func:`load_until_shutdown` waits for the
first load while watching for a stop signal, so SIGINT/SIGTERM end a start-up load at once.
"""

from __future__ import annotations

import difflib
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.executors import ExternalShutdownException

#: How often a waiting start-up checks the rclpy context.
POLL_S = 0.05
_running = {"loads": 0}
_running_lock = threading.Lock()


def _count_load(delta: int) -> None:
    with _running_lock:
        _running["loads"] += delta


def loads_running() -> int:
    """How many model loads are running on loader threads of this process (abandoned ones included)."""
    with _running_lock:
        return _running["loads"]


def exit_now_if_loading(code: int) -> None:
    """Leave the process with ``code`` at once if a model load still runs on a loader thread.

    Python's exit waits for the interpreter lock, which an import or a model parse can hold for
    seconds; ``os._exit`` (after flushing the standard streams) does not, so a signal ends the
    process promptly even during a load. Call it last, after rclpy is shut down.
    """
    if loads_running():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed stream cannot be flushed; exit anyway
                pass
        os._exit(code)


def file_identity(path: str | Path) -> tuple[int, int, int, int] | None:
    """``(device, inode, size, mtime_ns)`` of a file (links followed), or None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def model_files_identity(path: str | Path) -> tuple:
    """Identity of a model path and of the ``.onnx`` sibling that backend ``auto`` may run for a ``.keras`` file."""
    p = Path(path)
    sibling = file_identity(p.with_suffix(".onnx")) if p.suffix == ".keras" else None
    return file_identity(p), sibling


@dataclass(frozen=True)
class LoadRequest:
    """One model load: the settings it was asked with and its place in the order of requests."""

    config: Any
    generation: int


class ModelLoader:
    """A thread that runs ``load(config)`` for the latest request and reports to ``done``.

    ``done(request, result, error)`` runs on the loader thread; :meth:`is_latest` tells whether a
    newer request superseded ``request`` while it loaded. A request not yet started is replaced by
    a newer one (only the latest settings are loaded).
    """

    def __init__(self, load: Callable[[Any], Any], done: Callable[[LoadRequest, Any, BaseException | None], None],
                 name: str = "road_seg_model_loader"):
        self._load, self._done, self._name = load, done, name
        self._cv = threading.Condition()
        self._pending: LoadRequest | None = None
        self._active: LoadRequest | None = None
        self._generation = 0
        self._stopped = False
        self._thread: threading.Thread | None = None

    def submit(self, config: Any) -> LoadRequest:
        """Queue a load of ``config`` (replacing any queued one) and return its request."""
        with self._cv:
            if self._stopped:
                raise RuntimeError("the model loader is stopped")
            self._generation += 1
            self._pending = LoadRequest(config, self._generation)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cv.notify_all()
            return self._pending

    def is_latest(self, request: LoadRequest) -> bool:
        with self._cv:
            return request.generation == self._generation

    def busy(self) -> bool:
        """Whether a load is queued or running."""
        with self._cv:
            return self._pending is not None or self._active is not None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no load is queued or running; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._pending is None and self._active is None, timeout)

    def stop(self, timeout: float = 1.0) -> None:
        """Drop queued loads and wait up to ``timeout`` for a running one (the thread is a daemon)."""
        with self._cv:
            self._stopped = True
            self._pending = None
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending is not None or self._stopped)
                if self._stopped:
                    return
                request, self._pending, self._active = self._pending, None, self._pending
            result, error = None, None
            _count_load(1)
            try:
                result = self._load(request.config)
            except BaseException as e:  # every load failure is reported, never raised on this thread
                error = e
            finally:
                _count_load(-1)
            try:
                self._done(request, result, error)
            finally:
                with self._cv:
                    self._active = None
                    self._cv.notify_all()


def load_until_shutdown(load: Callable[[], Any], stopping: Callable[[], bool],
                        name: str = "road_seg_model_loader") -> Any:
    """Run ``load()`` on a daemon thread and return its result, re-raising its error.

    While it runs, ``stopping()`` is polled (a stop signal, a context shut down): when it turns
    true this raises ``ExternalShutdownException`` at once and the load is abandoned.
    """
    box: dict[str, Any] = {}
    finished = threading.Event()

    def run() -> None:
        try:
            box["result"] = load()
        except BaseException as e:  # handed to the waiting thread
            box["error"] = e
        finally:
            _count_load(-1)
            finished.set()

    _count_load(1)
    threading.Thread(target=run, name=name, daemon=True).start()
    while not finished.wait(POLL_S):
        if stopping():
            raise ExternalShutdownException("shut down while the model was loading")
    if "error" in box:
        raise box["error"]
    return box["result"]


def unknown_overrides(overrides: Iterable[str], declared: Iterable[str]) -> list[str]:
    """One warning line per override that names no declared parameter, with the closest declared name."""
    declared = sorted(declared)
    lines = []
    for name in sorted(set(overrides) - set(declared)):
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        lines.append(f"parameter {name!r} from the parameter overrides (params file or -p) is not a parameter "
                     f"of this node and is ignored{hint}")
    return lines
