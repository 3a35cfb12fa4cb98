"""``road-seg-predict`` on files and folders: mask size, encoding and values, overlays, failures."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from road_seg_perception.core.segmenter import PostConfig, RoadSegmenter
from road_seg_perception.tools import predict

SIZES_HW = [(32, 64), (75, 101), (120, 90)]


def _scene(h: int, w: int, seed: int) -> np.ndarray:
    """A BGR image with structure (grey road-like bottom, textured top) so the model's output varies."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[h // 2:] = (90, 90, 90) + rng.integers(0, 30, (h - h // 2, w, 1), dtype=np.uint8)
    return img


@pytest.fixture
def images(tmp_path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for i, (h, w) in enumerate(SIZES_HW):
        p = folder / f"frame_{i}{'.jpg' if i == 1 else '.png'}"
        assert cv2.imwrite(str(p), _scene(h, w, i))
        paths.append(p)
    return paths


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _median_threshold(model: Path, backend: str, paths: list[Path]) -> float:
    """A threshold that splits the untrained model's output, so masks hold both 0 and 255."""
    seg = RoadSegmenter(model, backend=backend)
    probs = np.concatenate([seg.segment(_rgb(p), with_probability=True).probability.ravel() for p in paths])
    return float(np.median(probs))


@pytest.mark.parametrize("kind", ["onnx", "keras"])
def test_masks_match_segmenter(tiny_model, images, tmp_path, kind):
    model = tiny_model[kind]
    backend = "onnxruntime" if kind == "onnx" else "keras"
    thr = _median_threshold(model, backend, images)
    out = tmp_path / "out"
    rc = predict.main(["--model", str(model), "--backend", backend, "--threshold", repr(thr),
                       "--output-dir", str(out), *map(str, images)])
    assert rc == 0
    seg = RoadSegmenter(model, backend=backend, post=PostConfig(threshold=thr))
    both_values = 0
    for path, (h, w) in zip(images, SIZES_HW, strict=True):
        mask = cv2.imread(str(out / f"{path.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == (h, w)  # mono8, the input's size
        assert set(np.unique(mask)) <= {0, 255}
        both_values += set(np.unique(mask)) == {0, 255}
        rgb = _rgb(path)
        np.testing.assert_array_equal(mask, seg.segment(rgb).mask)

        overlay = cv2.imread(str(out / f"{path.stem}_overlay.png"), cv2.IMREAD_UNCHANGED)
        assert overlay.dtype == np.uint8 and overlay.shape == (h, w, 3)
        overlay_rgb = cv2.cvtColor(overlay, cv2.COLOR_BGR2RGB)
        far_from_road = cv2.dilate(mask, np.ones((7, 7), np.uint8)) == 0
        np.testing.assert_array_equal(overlay_rgb[far_from_road], rgb[far_from_road])  # untouched
        road = mask == 255
        assert np.all(overlay_rgb[road][:, 1].astype(int) >= rgb[road][:, 1].astype(int) - 1)  # tinted green
        assert not np.array_equal(overlay_rgb[road], rgb[road])
    assert both_values >= 2  # the median threshold makes the value checks meaningful


def test_folder_input_and_mixed_inputs(tiny_model, images, tmp_path):
    extra = tmp_path / "extra.png"
    cv2.imwrite(str(extra), _scene(40, 50, 9))
    (images[0].parent / "notes.txt").write_text("not an image, ignored")
    out = tmp_path / "out"
    rc = predict.main(["--model", str(tiny_model["onnx"]), "--output-dir", str(out),
                       str(images[0].parent), str(extra)])
    assert rc == 0
    written = sorted(p.name for p in out.iterdir())
    stems = sorted([p.stem for p in images] + ["extra"])
    assert written == sorted([f"{s}_mask.png" for s in stems] + [f"{s}_overlay.png" for s in stems])
    assert cv2.imread(str(out / "extra_mask.png"), cv2.IMREAD_UNCHANGED).shape == (40, 50)


def test_unreadable_input_named_and_others_written(tiny_model, images, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    rc = predict.main(["--model", str(tiny_model["onnx"]), "--output-dir", str(out),
                       str(images[0]), str(bad), str(missing), str(images[2])])
    assert rc != 0
    err = capsys.readouterr().err
    assert f"{bad}: cannot read image" in err
    assert f"{missing}: no such file or folder" in err
    assert "2 input(s) failed" in err
    assert str(images[0]) not in err
    for p in (images[0], images[2]):
        assert (out / f"{p.stem}_mask.png").is_file() and (out / f"{p.stem}_overlay.png").is_file()
    assert not (out / "broken_mask.png").exists()


def test_duplicate_stems_not_overwritten(tiny_model, images, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    dup = other / f"{images[0].stem}.jpg"
    cv2.imwrite(str(dup), _scene(20, 30, 5))
    out = tmp_path / "out"
    rc = predict.main(["--model", str(tiny_model["onnx"]), "--output-dir", str(out), str(images[0]), str(dup)])
    assert rc != 0
    assert f"{dup}: same stem as {images[0]}" in capsys.readouterr().err
    assert cv2.imread(str(out / f"{images[0].stem}_mask.png"), cv2.IMREAD_UNCHANGED).shape == SIZES_HW[0]


def test_bad_model_and_no_inputs(tmp_path, images, capsys):
    out = tmp_path / "out"
    assert predict.main(["--model", str(tmp_path / "nope.onnx"), "--output-dir", str(out), str(images[0])]) == 2
    assert "nope.onnx does not exist" in capsys.readouterr().err
    assert predict.main(["--output-dir", str(out), str(tmp_path / "empty_missing")]) == 2
    assert "no input images" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        predict.main([str(images[0])])  # --output-dir is required
    assert e.value.code == 2
