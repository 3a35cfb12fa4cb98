"""Atomic file writes: a path is either its old content or its complete new content, never half-written."""

from __future__ import annotations

import os
from pathlib import Path


def _replace_atomically(path: Path, tmp: Path, write) -> None:
    """``write(tmp)``, then rename ``tmp`` over ``path``; a failure leaves ``path`` as it was and no temp file."""
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(model, path: Path) -> None:
    """Save a Keras model so that ``path`` is never left half-written (a failed save leaves no temp file)."""
    _replace_atomically(path, path.with_name(f".{path.stem}.tmp.keras"), model.save)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that ``path`` is never left half-written."""
    _replace_atomically(path, path.with_name(f".{path.name}.tmp"), lambda tmp: tmp.write_text(text))
