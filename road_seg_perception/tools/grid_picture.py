"""A camera frame's road overlay beside its drivable-area grid (``road_grid``), as one picture.

    python -m road_seg_perception.tools.grid_picture [--image PATH] [--model M] [--out docs/grid_overlay.png]
        [--fx F --fy F --cx X --cy Y] [--height H --pitch P --roll R --yaw Y]
        [--resolution 0.1 --forward 25 --lateral 16 --max-range 25]

Default: CamVid val frame ``0016E5_08159.png`` (``$ROAD_SEG_CAMVID`` or ``../shared/datasets/camvid``)
with intrinsics and a mount that fit CamVid's 480x360 frames (no calibration ships with the
SegNet copy of CamVid: fx = fy = 450 px, a lens of about 56 degrees across, the horizon near row 177, a
camera 1.4 m above the road). Left: the mask over the frame, with the grid's 5 m range rings
projected into it. Right: the grid seen from above, forward up, 5 m rings around the camera's
foot point, road green, not road dark, unseen light grey.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from road_seg_perception.core.ground_grid import (
    CameraPose,
    GridConfigError,
    GridSpec,
    Intrinsics,
    grid_image,
    project_ground_points,
    project_mask,
)
from road_seg_perception.core.imageio import read_rgb
from road_seg_perception.core.overlay import draw_overlay, side_by_side
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.training.datasets import default_camvid_root

DEFAULT_FRAME = "0016E5_08159.png"
RING_STEP_M = 5.0
RING_COLOUR = (255, 220, 0)


def range_rings_on_image(rgb: np.ndarray, intr: Intrinsics, pose: CameraPose, max_range: float) -> None:
    """Draw the ground circles at every :data:`RING_STEP_M` metres around the camera's foot point."""
    a = np.linspace(-math.pi, math.pi, 721)
    r = RING_STEP_M
    while r <= max_range + 1e-9:
        uv, seen = project_ground_points(pose.position[0] + r * np.cos(a), pose.position[1] + r * np.sin(a), intr, pose)
        for run in np.split(np.arange(len(a)), np.nonzero(np.diff(seen.astype(np.int8)))[0] + 1):
            if seen[run[0]] and len(run) > 1:
                cv2.polylines(rgb, [np.round(uv[run]).astype(np.int32)], False, RING_COLOUR, 1, cv2.LINE_AA)
        r += RING_STEP_M


def range_rings_on_grid(img: np.ndarray, spec: GridSpec, pose: CameraPose, cell_px: int) -> None:
    """The same rings on :func:`grid_image`'s picture (forward up, left on the left)."""
    x0, y0 = spec.origin
    px_per_m = cell_px / spec.resolution
    col = (spec.rows * spec.resolution - (pose.position[1] - y0)) * px_per_m
    row = (spec.cols * spec.resolution - (pose.position[0] - x0)) * px_per_m
    r = RING_STEP_M
    while r <= spec.max_range_m + 1e-9:
        cv2.circle(img, (round(col), round(row)), round(r * px_per_m), RING_COLOUR, 1, cv2.LINE_AA)
        cv2.putText(img, f"{r:g} m", (round(col) + 3, round(row - r * px_per_m) + 12), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35, RING_COLOUR, 1, cv2.LINE_AA)
        r += RING_STEP_M


def make_picture(rgb: np.ndarray, mask: np.ndarray, intr: Intrinsics, pose: CameraPose, spec: GridSpec
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(picture, grid): the overlay with range rings beside the grid from above, scaled to the frame's height."""
    grid = project_mask(mask, intr, pose, spec)
    left = draw_overlay(rgb, mask, (0, 255, 0), 0.45)
    range_rings_on_image(left, intr.scaled_to(rgb.shape[1], rgb.shape[0]), pose, spec.max_range_m)
    cell_px = max(1, round(rgb.shape[0] / spec.cols))
    right = grid_image(grid, cell_px)
    range_rings_on_grid(right, spec, pose, cell_px)
    if right.shape[0] != rgb.shape[0]:
        s = rgb.shape[0] / right.shape[0]
        right = cv2.resize(right, (round(right.shape[1] * s), rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    return side_by_side([left, right]), grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="grid_picture", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", type=Path, default=None,
                   help=f"camera frame (default: CamVid val/{DEFAULT_FRAME})")
    p.add_argument("--model", type=Path, default=None, help="model .onnx or .keras (default: the shipped model)")
    p.add_argument("--out", type=Path, default=Path("docs/grid_overlay.png"), help="picture to write")
    for name, default, unit in (("fx", 450.0, "px"), ("fy", 450.0, "px"), ("cx", None, "px, default (W-1)/2"),
                                ("cy", None, "px, default (H-1)/2"), ("height", 1.4, "m"), ("pitch", 0.006, "rad"),
                                ("roll", 0.0, "rad"), ("yaw", 0.0, "rad"), ("resolution", 0.1, "m"),
                                ("forward", 25.0, "m"), ("lateral", 16.0, "m"), ("max-range", 25.0, "m")):
        p.add_argument(f"--{name}", type=float, default=default, help=f"{unit} (default {default})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    image = a.image or Path(default_camvid_root()) / "val" / DEFAULT_FRAME
    if not image.is_file():
        print(f"grid_picture: error: image {image} does not exist (pass --image or set ROAD_SEG_CAMVID)",
              file=sys.stderr)
        return 2
    rgb = read_rgb(image)
    h, w = rgb.shape[:2]
    cx = (w - 1) / 2 if a.cx is None else a.cx
    cy = (h - 1) / 2 if a.cy is None else a.cy
    try:
        intr = Intrinsics(w, h, (a.fx, 0.0, cx, 0.0, a.fy, cy, 0.0, 0.0, 1.0), (), "none").validate()
        pose = CameraPose.from_mount(a.height, a.roll, a.pitch, a.yaw)
        spec = GridSpec(a.resolution, a.forward, a.lateral, a.max_range).validate()
    except GridConfigError as e:
        print(f"grid_picture: error: {e}", file=sys.stderr)
        return 2
    mask = RoadSegmenter(a.model).segment(rgb).mask
    picture, grid = make_picture(rgb, mask, intr, pose, spec)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(a.out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    seen = grid != -1
    print(f"wrote {a.out} ({picture.shape[1]}x{picture.shape[0]}): grid {spec.cols}x{spec.rows} cells of "
          f"{spec.resolution:g} m, {seen.mean():.1%} seen, {(grid == 0).sum() / max(1, seen.sum()):.1%} of those road")
    return 0


if __name__ == "__main__":
    sys.exit(main())
