"""The evaluation options ``road-seg-eval`` takes for one bag and for a fleet of bags: one definition for both."""

from __future__ import annotations

import argparse

from road_seg_perception.bagio.bag import GT_TOPIC
from road_seg_perception.core.temporal import DEFAULT_ALPHA, DEFAULT_RESET_GAP_S, DEFAULT_SMOOTHING
from road_seg_perception.tools.model_args import add_model_args


def add_eval_args(p: argparse.ArgumentParser, several_bags: bool = False) -> None:
    """Add the topic, ground-truth, model, post-processing, sampling, output and temporal smoothing options.

    ``several_bags``: the fleet's wording (options that only work on a single bag say so) and
    ``--gt-topic`` / ``--gt-dir`` not exclusive in the parser (the fleet refuses ``--gt-dir`` itself).
    """
    single = "single bag only: " if several_bags else ""
    p.add_argument("--image-topic", help="Image or CompressedImage topic (default: /camera/image_raw, "
                                         "else /camera/image_raw/compressed)")
    g = p if several_bags else p.add_mutually_exclusive_group()
    g.add_argument("--gt-topic", default=GT_TOPIC, help=f"mono8 ground-truth topic (default: {GT_TOPIC})")
    g.add_argument("--gt-dir", metavar="DIR", help="single bag only: folder of ground-truth masks" if several_bags
                   else "folder of masks, matched to frames in name order")
    p.add_argument("--mask-format", choices=("camvid", "kitti", "binary"), default="camvid",
                   help=f"{single}layout of --gt-dir masks" + ("" if several_bags else " (default: camvid)"))
    add_model_args(p)
    p.add_argument("--every-n", type=int, default=1, metavar="N", help="evaluate every N-th frame (default: 1)")
    p.add_argument("--min-blob-area", type=int, default=0, help="drop road blobs smaller than this (pixels)")
    p.add_argument("--fill-holes-area", type=int, default=0, help="fill non-road holes up to this size (pixels)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="only the first N images of " + ("each bag" if several_bags else "the bag"))
    p.add_argument("--no-video", action="store_true", help=f"{single}skip the overlay video")
    p.add_argument("--no-bag", action="store_true", help=f"{single}skip the output bag")
    p.add_argument("--temporal-smoothing", action=argparse.BooleanOptionalAction, default=DEFAULT_SMOOTHING,
                   help="average the road probability over processed frames, as the node's temporal_smoothing "
                        f"(default: {'on' if DEFAULT_SMOOTHING else 'off'}, as the node)")
    p.add_argument("--temporal-alpha", type=float, default=DEFAULT_ALPHA, metavar="A",
                   help=f"weight of the newest frame in that average, in (0, 1] (default: {DEFAULT_ALPHA})")
    p.add_argument("--temporal-reset-gap", type=float, default=DEFAULT_RESET_GAP_S, metavar="S",
                   help="restart the average after a gap of more than S seconds in the stamps "
                        f"(default: {DEFAULT_RESET_GAP_S})")
