"""Parsing of launch-argument strings, shared by the package's launch files (no ``launch`` import)."""

from __future__ import annotations


def parse_bool(name: str, text: str) -> bool:
    """``'true'``/``'false'`` (any case) to a bool; anything else is an error naming the argument."""
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name}:={text!r} must be true or false")
    return value == "true"


def parse_float(name: str, text: str, minimum: float) -> float:
    """A float launch argument, at least ``minimum``; an error naming the argument otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"launch argument {name}:={text!r} must be a number") from None
    if value < minimum:
        raise ValueError(f"launch argument {name}:={text!r} must be >= {minimum}")
    return value
