"""Atomic file writes: a path is either its old content or its complete new content, never half-written.

The new content goes to a fresh temporary file in the same folder (created exclusively, so a
planted link at a guessable name is never followed), which ``os.replace`` then renames over the
path: a symbolic link at the path is replaced, its target left alone.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def exclusive_temp(path: Path, suffix: str = ".tmp") -> Path:
    """A new empty file beside ``path`` (``.<name>.<random><suffix>``), made with ``O_EXCL`` so an existing
    file or link is never opened; its mode follows the umask, as a plain new file's would."""
    path = Path(path)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot make a temporary file beside {path}")


def write_atomically(path: Path, write: Callable[[Path], T], suffix: str = ".tmp") -> T:
    """``write(tmp)`` to a new temp file (unique to this call) beside ``path``, then rename it over ``path``
    and return what ``write`` returned; a failure (``write`` raising, to refuse its result) leaves ``path`` as
    it was and no temp file."""
    path = Path(path)
    tmp = exclusive_temp(path, suffix)
    try:
        result = write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def atomic_save(model, path: Path) -> None:
    """Save a Keras model so that ``path`` is never left half-written (a failed save leaves no temp file)."""
    write_atomically(path, model.save, suffix=".tmp.keras")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that ``path`` is never left half-written."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file so that ``path`` is never left half-written."""
    write_atomically(path, lambda tmp: tmp.write_bytes(data))
