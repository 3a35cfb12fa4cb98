"""``road-seg-bag``: build rosbag2 files from image folders, and read them back.

    road-seg-bag make --images DIR [--masks DIR --mask-format camvid|kitti|binary] --out BAG \\
        [--rate HZ] [--compressed] [--storage sqlite3|mcap] [--frame-id camera] [--limit N]
    road-seg-bag info BAG

``make`` writes a standard rosbag2 (``metadata.yaml`` plus one ``.db3`` or ``.mcap`` file, as
``ros2 bag info`` and ``ros2 bag play`` read it) holding, per frame and at one shared stamp:

* ``/camera/image_raw`` (``sensor_msgs/Image``, rgb8), or ``/camera/image_raw/compressed``
  (``sensor_msgs/CompressedImage``, jpeg) with ``--compressed``;
* ``/camera/camera_info`` (``sensor_msgs/CameraInfo``; intrinsics zeroed = uncalibrated);
* ``/road_seg/ground_truth`` (``sensor_msgs/Image``, mono8: 255 road, 0 not road, 128 void),
  when ``--masks`` is given.

Bag I/O is done with ``rosbags`` (no ROS installation needed); the bytes it writes deserialise
with ``rclpy.serialization.deserialize_message``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from pathlib import Path

from road_seg_perception.bagio.bag import (
    EXIT_USAGE,
    STORAGES,
    BagError,
    BagSummary,
    Frame,
    bag_info,
    format_topics,
    write_frames,
)
from road_seg_perception.core.cli_errors import EXIT_INTERRUPTED, EXIT_RUNTIME, fail
from road_seg_perception.core.imageio import add_max_pixels_argument
from road_seg_perception.core.metrics import gt_image_from_label
from road_seg_perception.training.datasets import (
    IMAGE_EXTS,
    DatasetError,
    LabelSpec,
    pair_samples,
    read_image,
    read_label,
)


def make_bag(images: Path | str, out: Path | str, masks: Path | str | None = None, mask_format: str = "camvid",
             rate: float = 15.0, compressed: bool = False, storage: str = "sqlite3", frame_id: str = "camera",
             limit: int | None = None, start_ns: int | None = None, overwrite: bool = False,
             progress: bool = False, max_pixels: int | None = None) -> BagSummary:
    """Build a bag from an image folder (sorted by name) and, optionally, its mask folder.

    Files whose header claims more than ``max_pixels`` (default: the process-wide limit) are refused undecoded.
    """

    images = Path(images)
    if limit is not None and limit < 1:
        raise BagError(f"--limit must be >= 1, got {limit}")
    try:
        if masks is not None:
            spec = LabelSpec(format=mask_format)
            pairs = [(s.image, s.mask) for s in pair_samples(images, Path(masks), spec)]
        else:
            spec = None
            if not images.is_dir():
                raise BagError(f"image folder {images} does not exist")
            pairs = [(p, None) for p in sorted(images.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
            if not pairs:
                raise BagError(f"no images ({', '.join(IMAGE_EXTS)}) in {images}")
    except DatasetError as e:
        raise BagError(str(e)) from e
    pairs = pairs[:limit] if limit else pairs

    def frames() -> Iterator[Frame]:
        for image_path, mask_path in pairs:
            try:
                rgb = read_image(image_path, max_pixels)
                gt = None if mask_path is None else gt_image_from_label(read_label(mask_path, spec, max_pixels))
            except DatasetError as e:
                raise BagError(str(e)) from e
            if gt is not None and gt.shape != rgb.shape[:2]:
                raise BagError(f"mask {mask_path} is {gt.shape[1]}x{gt.shape[0]}, image {image_path} is "
                               f"{rgb.shape[1]}x{rgb.shape[0]}")
            yield Frame(rgb, gt)

    inputs = [images] + ([Path(masks)] if masks is not None else [])
    return write_frames(out, frames(), rate, compressed, storage, frame_id, start_ns, overwrite=overwrite,
                        progress=progress, total=len(pairs), inputs=inputs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="road-seg-bag", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="build a bag from an image folder (and masks)")
    m.add_argument("--images", required=True, metavar="DIR", help="folder of RGB frames, sorted by name")
    m.add_argument("--masks", metavar="DIR", help="folder of label masks -> /road_seg/ground_truth")
    m.add_argument("--mask-format", choices=("camvid", "kitti", "binary"), default="camvid",
                   help="mask layout (default: camvid: id 3 road, id 11 void)")
    m.add_argument("--out", required=True, metavar="BAG", help="output bag folder (must not exist)")
    m.add_argument("--rate", type=float, default=15.0, help="frame rate in Hz for the stamps (default: 15)")
    m.add_argument("--compressed", action="store_true", help="write jpeg CompressedImage on .../compressed")
    m.add_argument("--storage", choices=STORAGES, default="sqlite3", help="storage plugin (default: sqlite3)")
    m.add_argument("--frame-id", default="camera", help="header frame_id (default: camera)")
    m.add_argument("--limit", type=int, metavar="N", help="only the first N frames")
    m.add_argument("--start", type=float, metavar="SEC",
                   help="stamp of the first frame in seconds since the epoch (default: now)")
    m.add_argument("--overwrite", action="store_true",
                   help="replace an existing output bag (only a bag this tool wrote, or an empty folder)")
    add_max_pixels_argument(m)
    i = sub.add_parser("info", help="print a bag's topics, types and counts")
    i.add_argument("bag", metavar="BAG")
    for sp in (m, i):
        sp.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    return p.parse_args(argv)


def print_info(path: Path | str) -> None:
    info = bag_info(path)
    print(f"bag:      {info['path']}  ({', '.join(info['files'])})")
    print(f"duration: {info['duration_s']:.3f} s")
    print(f"start:    {info['start_ns'] / 1e9:.9f}")
    print(f"messages: {info['messages']}")
    print("topics:")
    print(format_topics(info["topics"]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.cmd == "info":
            print_info(args.bag)
            return 0
        if args.start is not None and not math.isfinite(args.start):
            raise BagError(f"--start must be a finite number of seconds, got {args.start}")
        start_ns = None if args.start is None else round(args.start * 1e9)
        s = make_bag(args.images, args.out, args.masks, args.mask_format, args.rate, args.compressed, args.storage,
                     args.frame_id, args.limit, start_ns, args.overwrite, progress=True,
                     max_pixels=args.max_image_pixels)
    except BagError as e:
        return fail("road-seg-bag", e, EXIT_USAGE, args.debug)
    except KeyboardInterrupt:
        print("road-seg-bag: interrupted; the partial output bag was removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # anything else is a runtime failure: one line, the traceback only with --debug
        return fail("road-seg-bag", e, EXIT_RUNTIME, args.debug)
    print(f"wrote {s.path}: {s.frames} frames at {args.rate:g} Hz, "
          + ", ".join(f"{t} x{n}" for t, n in s.topics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
