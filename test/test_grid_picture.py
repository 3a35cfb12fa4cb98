"""``tools/grid_picture``: the overlay-and-grid picture is written, its grid half matches the core."""

from __future__ import annotations

import cv2
import numpy as np

from road_seg_perception.core.ground_grid import CameraPose, GridSpec, Intrinsics, grid_image, project_mask
from road_seg_perception.tools import grid_picture


def test_picture_from_a_frame(tiny_model, tmp_path, capsys):
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[70:] = 90
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), rgb)
    out = tmp_path / "pic.png"
    args = ["--image", str(frame), "--model", str(tiny_model["onnx"]), "--out", str(out), "--fx", "150",
            "--fy", "150", "--height", "1.2", "--pitch", "0.1", "--resolution", "0.25", "--forward", "12",
            "--lateral", "8", "--max-range", "12"]
    assert grid_picture.main(args) == 0
    pic = cv2.imread(str(out))
    # 160 px overlay + 4 px gap + the 8 m x 12 m grid scaled to 120 px high (2 px per cell: 64 x 96 -> 80 x 120)
    assert pic.shape == (120, 160 + 4 + 80, 3)
    assert "grid 48x32 cells of 0.25 m" in capsys.readouterr().out
    assert grid_picture.main([*args[:-8], "--height", "0"]) == 2  # a bad mount is refused with a reason
    assert "height" in capsys.readouterr().err


def test_make_picture_grid_is_the_core_grid():
    rgb = np.zeros((120, 160, 3), np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    mask[80:, 40:120] = 255
    intr = Intrinsics(160, 120, (150.0, 0.0, 79.5, 0.0, 150.0, 59.5, 0.0, 0.0, 1.0), (), "none")
    pose, spec = CameraPose.from_mount(1.2, pitch=0.1), GridSpec(0.25, 12.0, 8.0, 12.0)
    _, grid = grid_picture.make_picture(rgb, mask, intr, pose, spec)
    assert np.array_equal(grid, project_mask(mask, intr, pose, spec))
    assert (grid == 0).sum() > 20 and grid_image(grid).shape == (2 * 48, 2 * 32, 3)
