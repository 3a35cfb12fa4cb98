"""The model options every tool running the segmenter shares (``--model``, ``--threshold``, ``--flip-average``, ...)."""

from __future__ import annotations

import argparse

from road_seg_perception.core.backends import BACKENDS, DEVICES


def add_model_file_args(p: argparse.ArgumentParser) -> None:
    """Add ``--model`` and ``--backend``: which model file, run how."""
    p.add_argument("--model", metavar="PATH", help="model .onnx or .keras (default: the shipped model)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto)")


def add_flip_average_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--flip-average``, the node's ``flip_average``."""
    p.add_argument("--flip-average", action="store_true",
                   help="average each frame's road probability with its mirror image's, as the node's flip_average "
                        "(twice the inference work)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Add ``--model``, ``--backend``, ``--device``, ``--threshold`` and ``--flip-average``, the same in every tool."""
    add_model_file_args(p)
    p.add_argument("--device", choices=DEVICES, default="auto", help="inference device (default: auto)")
    p.add_argument("--threshold", type=float, default=0.5, help="road probability threshold in (0, 1) (default: 0.5)")
    add_flip_average_arg(p)
