"""Importing Keras (and TensorFlow) so that a stop signal still ends a node promptly during the import.

Python runs signal handlers on the main thread, and only when that thread gets the interpreter
lock. A model load runs on a loader thread, so the main thread can notice a signal while the
model loads, except while the loader thread holds the lock in one long native call. The first
TensorFlow import of a process has two such calls (measured with ``python bench/import_stall.py``):

* loading TensorFlow's native libraries (``libtensorflow_framework``, ``libtensorflow_cc``: their
  static initialisers). :func:`import_keras` loads them first through ``ctypes`` (``dlopen``),
  which releases the lock, so TensorFlow's own import finds them loaded;
* initialising ``ml_dtypes``' extension, which registers its number types with NumPy, all under
  the lock. Nothing can release it there, so when :func:`set_signals_end_native_imports` is on,
  SIGINT and SIGTERM are set to their default action (end the process, killed by the signal)
  for the length of that import, then set back exactly as they were.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import signal
import sys
import threading
from types import ModuleType

#: Signals that take their default action during an import in :data:`LOCK_HOLDING_IMPORTS`.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Native libraries of TensorFlow (relative to its package folder) loaded with the lock released.
TENSORFLOW_LIBRARIES = ("libtensorflow_framework.so.2", "libtensorflow_cc.so.2")
#: Imports whose native initialisation holds the interpreter lock for a long time (about 1 s).
LOCK_HOLDING_IMPORTS = ("ml_dtypes",)
#: Bytes for a C ``struct sigaction`` (152 on x86-64 and aarch64 glibc); all zeros means ``SIG_DFL``.
_SIGACTION_BYTES = 512

_state = {"signals_end_imports": False}
_lock = threading.Lock()


def set_signals_end_native_imports(enabled: bool) -> None:
    """Let SIGINT/SIGTERM end the process by their default action during lock-holding imports.

    A node process turns this on: a stop signal must end it within its deadline even while the
    loader thread imports TensorFlow. Off by default, so that command-line tools keep their own
    Ctrl-C handling.
    """
    _state["signals_end_imports"] = bool(enabled)


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.dlopen.restype = ctypes.c_void_p
    libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.sigaction.restype = ctypes.c_int
    libc.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    return libc


def preload_tensorflow_libraries() -> list[str]:
    """``dlopen`` TensorFlow's large native libraries with the interpreter lock released.

    Returns the libraries loaded; nothing when TensorFlow is already imported, not installed, or
    Keras is set to another backend. A library that fails to load is left to TensorFlow's own
    import, which reports the error.
    """
    if "tensorflow" in sys.modules or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return []
    try:
        spec = importlib.util.find_spec("tensorflow")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = list(spec.submodule_search_locations)[0]
    libc = _libc()
    loaded = []
    for name in TENSORFLOW_LIBRARIES:
        path = os.path.join(folder, name)
        # the flags TensorFlow's own import uses, so that its dlopen finds this handle
        if os.path.isfile(path) and libc.dlopen(path.encode(), os.RTLD_NOW | os.RTLD_LOCAL):
            loaded.append(path)
    return loaded


def import_with_default_stop_signals(name: str) -> ModuleType:
    """Import ``name`` with SIGINT and SIGTERM at their default action, then restore their handlers.

    Works from any thread (``sigaction`` through ``ctypes``, not :func:`signal.signal`, which only
    the main thread may call); the previous actions are saved and restored byte for byte.
    """
    libc = _libc()
    default = ctypes.create_string_buffer(_SIGACTION_BYTES)
    saved = {}
    with _lock:
        try:
            for sig in STOP_SIGNALS:
                old = ctypes.create_string_buffer(_SIGACTION_BYTES)
                if libc.sigaction(int(sig), default, old) != 0:
                    raise OSError(ctypes.get_errno(), f"sigaction({sig.name}) failed")
                saved[sig] = old
            return importlib.import_module(name)
        finally:
            for sig, old in saved.items():
                libc.sigaction(int(sig), old, None)


def import_keras() -> ModuleType:
    """``import keras``, its first import prepared as the module docstring says."""
    if "keras" not in sys.modules:
        preload_tensorflow_libraries()
        for name in LOCK_HOLDING_IMPORTS:
            if name in sys.modules or importlib.util.find_spec(name) is None:
                continue
            if _state["signals_end_imports"]:
                import_with_default_stop_signals(name)
            else:
                importlib.import_module(name)
    import keras

    return keras
