"""Atomic file writes: a path is either its old content or its complete new content, never half-written.

The new content goes to a fresh temporary file in the same folder (created exclusively, so a
planted link at a guessable name is never followed), which ``os.replace`` then renames over the
path: a symbolic link at the path is replaced, its target left alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _replace_atomically(path: Path, write, suffix: str = ".tmp") -> None:
    """``write(tmp)`` to a new temp file beside ``path``, then rename it over ``path``; a failure leaves
    ``path`` as it was and no temp file."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(model, path: Path) -> None:
    """Save a Keras model so that ``path`` is never left half-written (a failed save leaves no temp file)."""
    _replace_atomically(path, model.save, suffix=".tmp.keras")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that ``path`` is never left half-written."""
    _replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file so that ``path`` is never left half-written."""
    _replace_atomically(path, lambda tmp: tmp.write_bytes(data))
