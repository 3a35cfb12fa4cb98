"""Dataset readers and validation on tiny datasets written here with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.training.datasets import (
    DatasetError,
    LabelSpec,
    Sample,
    load_samples,
    pair_samples,
    read_label,
    split_by_drive,
)


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write(path: Path, array: np.ndarray, params: list[int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array, params or [])
    return path


def _garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image file")
    return path


# --------------------------------------------------------------------------- camvid


CAMVID_IDS = np.array([[3, 3, 11, 0],
                       [1, 3, 4, 11],
                       [3, 5, 3, 2]], dtype=np.uint8)


def test_camvid_default_ids(tmp_path):
    _write(tmp_path / "img" / "0001TP_000010.png", _rgb(3, 4))
    _write(tmp_path / "ann" / "0001TP_000010.png", CAMVID_IDS)
    spec = LabelSpec(format="camvid")
    samples = pair_samples(tmp_path / "img", tmp_path / "ann", spec)
    assert samples == [Sample(tmp_path / "img" / "0001TP_000010.png", tmp_path / "ann" / "0001TP_000010.png")]
    [(image, label)] = load_samples(samples, spec)
    expected = np.array([[1, 1, VOID, 0],
                         [0, 1, 0, VOID],
                         [1, 0, 1, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(label, expected)
    assert label.dtype == np.uint8
    # read_image returns RGB: the file was written as BGR
    np.testing.assert_array_equal(image, cv2.cvtColor(_rgb(3, 4), cv2.COLOR_BGR2RGB))


def test_camvid_configured_ids(tmp_path):
    path = _write(tmp_path / "a.png", CAMVID_IDS)
    label = read_label(path, LabelSpec(format="camvid", positive_ids=[3, 4], void_ids=[0, 2]))
    expected = np.array([[1, 1, 0, VOID],
                         [0, 1, 1, 0],
                         [1, 0, 1, VOID]], dtype=np.uint8)
    np.testing.assert_array_equal(label, expected)


# --------------------------------------------------------------------------- kitti


def test_kitti_colours(tmp_path):
    magenta, red, black = (255, 0, 255), (0, 0, 255), (0, 0, 0)  # BGR; KITTI non-road is red
    gt = np.zeros((2, 3, 3), np.uint8)
    gt[0, 0] = gt[1, 2] = magenta
    gt[0, 1] = gt[1, 0] = red
    gt[0, 2] = black
    gt[1, 1] = (255, 0, 254)  # almost magenta: not road
    _write(tmp_path / "image_2" / "um_000007.png", _rgb(2, 3))
    _write(tmp_path / "image_2" / "uu_000001.png", _rgb(2, 3, 1))
    _write(tmp_path / "gt_image_2" / "um_road_000007.png", gt)
    _write(tmp_path / "gt_image_2" / "uu_road_000001.png", np.full((2, 3, 3), magenta, np.uint8))
    spec = LabelSpec(format="kitti")
    samples = pair_samples(tmp_path / "image_2", tmp_path / "gt_image_2", spec)
    assert [(s.image.name, s.mask.name) for s in samples] == [("um_000007.png", "um_road_000007.png"),
                                                              ("uu_000001.png", "uu_road_000001.png")]
    (_, label), (_, label2) = load_samples(samples, spec)
    np.testing.assert_array_equal(label, np.array([[1, 0, VOID], [0, 0, 1]], np.uint8))
    np.testing.assert_array_equal(label2, np.ones((2, 3), np.uint8))


# --------------------------------------------------------------------------- binary


def _binary_truth(h: int = 16, w: int = 24) -> np.ndarray:
    truth = np.zeros((h, w), np.uint8)
    truth[7:, :13] = 1  # edges off the 8x8 JPEG grid: the jpg mask gets ringing noise
    truth[2:5, 17:22] = 1
    return truth


@pytest.mark.parametrize(("scale", "mask_ext", "image_ext"), [
    (1, ".png", ".png"),      # 0/1 png
    (255, ".png", ".jpg"),    # 0/255 png, jpg image
    (255, ".jpg", ".png"),    # 0/255 jpg (compression noise)
])
def test_binary_masks(tmp_path, scale, mask_ext, image_ext):
    truth = _binary_truth()
    _write(tmp_path / "images" / f"road_01{image_ext}", _rgb(16, 24))
    _write(tmp_path / "masks" / f"road_01_mask{mask_ext}", truth * scale, [cv2.IMWRITE_JPEG_QUALITY, 90])
    spec = LabelSpec(format="binary", mask_suffix="_mask")
    samples = pair_samples(tmp_path / "images", tmp_path / "masks", spec)
    assert [(s.image.name, s.mask.name) for s in samples] == [(f"road_01{image_ext}", f"road_01_mask{mask_ext}")]
    [(image, label)] = load_samples(samples, spec)
    assert image.shape == (16, 24, 3)
    np.testing.assert_array_equal(label, truth)
    assert not (label == VOID).any()


def test_binary_jpg_mask_really_is_noisy(tmp_path):
    """Guard for the jpg case above: the decoded mask is not exactly 0/255, so the threshold matters."""
    path = _write(tmp_path / "m.jpg", _binary_truth() * 255, [cv2.IMWRITE_JPEG_QUALITY, 90])
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert not np.isin(raw, [0, 255]).all()


def test_binary_custom_suffix_and_colour_mask(tmp_path):
    truth = _binary_truth()
    _write(tmp_path / "i" / "x.png", _rgb(16, 24))
    _write(tmp_path / "m" / "x_label.png", np.repeat((truth * 255)[..., None], 3, axis=2))
    spec = LabelSpec(format="binary", mask_suffix="_label")
    [(_, label)] = load_samples(pair_samples(tmp_path / "i", tmp_path / "m", spec), spec)
    np.testing.assert_array_equal(label, truth)


# --------------------------------------------------------------------------- validation errors


def test_unmatched_image_and_orphan_mask_named(tmp_path):
    _write(tmp_path / "img" / "a.png", _rgb(4, 4))
    _write(tmp_path / "img" / "b.png", _rgb(4, 4))
    _write(tmp_path / "ann" / "a.png", CAMVID_IDS[:, :4])
    _write(tmp_path / "ann" / "zz.png", CAMVID_IDS[:, :4])
    with pytest.raises(DatasetError) as e:
        pair_samples(tmp_path / "img", tmp_path / "ann", LabelSpec())
    msg = str(e.value)
    assert "2 dataset problem(s)" in msg
    assert f"no mask for image {tmp_path / 'img' / 'b.png'}" in msg
    assert f"no image for mask {tmp_path / 'ann' / 'zz.png'}" in msg
    assert "a.png" not in msg


def test_binary_mask_without_suffix_is_unmatched(tmp_path):
    _write(tmp_path / "i" / "x.png", _rgb(4, 4))
    _write(tmp_path / "m" / "x.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"no mask for image .*x\.png"):
        pair_samples(tmp_path / "i", tmp_path / "m", LabelSpec(format="binary", mask_suffix="_mask"))


def test_missing_or_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "ann").mkdir()
    with pytest.raises(DatasetError, match="image folder .*nowhere does not exist"):
        pair_samples(tmp_path / "nowhere", tmp_path / "ann", LabelSpec())
    with pytest.raises(DatasetError, match="no images .* in .*empty"):
        pair_samples(tmp_path / "empty", tmp_path / "ann", LabelSpec())
    with pytest.raises(ValueError, match="data.format"):
        pair_samples(tmp_path / "empty", tmp_path / "ann", LabelSpec(format="coco"))


def test_unreadable_files_named(tmp_path):
    good_img = _write(tmp_path / "img" / "a.png", _rgb(3, 4))
    good_ann = _write(tmp_path / "ann" / "a.png", CAMVID_IDS)
    bad_img = _garbage(tmp_path / "img" / "b.png")
    _write(tmp_path / "ann" / "b.png", CAMVID_IDS)
    _write(tmp_path / "img" / "c.png", _rgb(3, 4))
    bad_ann = _garbage(tmp_path / "ann" / "c.png")
    spec = LabelSpec()
    samples = pair_samples(tmp_path / "img", tmp_path / "ann", spec)  # names match: pairing succeeds
    assert len(samples) == 3
    with pytest.raises(DatasetError) as e:
        load_samples(samples, spec)
    msg = str(e.value)
    assert "2 dataset problem(s)" in msg
    assert f"cannot read image {bad_img}" in msg
    assert f"cannot read mask {bad_ann}" in msg
    assert str(good_img) not in msg and str(good_ann) not in msg


@pytest.mark.parametrize("fmt", ["kitti", "binary"])
def test_unreadable_mask_other_formats(tmp_path, fmt):
    bad = _garbage(tmp_path / "m.png")
    with pytest.raises(DatasetError, match=f"cannot read mask {bad}"):
        read_label(bad, LabelSpec(format=fmt))


def test_size_mismatch_names_both_files(tmp_path):
    img = _write(tmp_path / "img" / "a.png", _rgb(5, 4))
    ann = _write(tmp_path / "ann" / "a.png", CAMVID_IDS)  # 4x3
    spec = LabelSpec()
    with pytest.raises(DatasetError) as e:
        load_samples(pair_samples(tmp_path / "img", tmp_path / "ann", spec), spec)
    msg = str(e.value)
    assert f"size mismatch: image {img} is 4x5, mask {ann} is 4x3" in msg


def test_problem_list_truncated_to_first_n_plus_count(tmp_path):
    for i in range(15):
        _write(tmp_path / "img" / f"f{i:02d}.png", _rgb(2, 2))
    (tmp_path / "ann").mkdir()
    with pytest.raises(DatasetError) as e:
        pair_samples(tmp_path / "img", tmp_path / "ann", LabelSpec(), max_listed=10)
    msg = str(e.value)
    assert msg.startswith("15 dataset problem(s)")
    for i in range(10):
        assert f"f{i:02d}.png" in msg
    for i in range(10, 15):
        assert f"f{i:02d}.png" not in msg
    assert "... and 5 more" in msg

    samples = [Sample(_garbage(tmp_path / "bad" / f"g{i}.png"), tmp_path / "x.png") for i in range(4)]
    with pytest.raises(DatasetError) as e:
        load_samples(samples, LabelSpec(), max_listed=3)
    msg = str(e.value)
    assert msg.startswith("4 dataset problem(s)") and "... and 1 more" in msg
    assert "g2.png" in msg and "g3.png" not in msg


# --------------------------------------------------------------------------- split by drive


def test_split_by_drive(tmp_path):
    names = ["0001TP_006690", "0006R0_f01860", "0001TP_006720", "Seq05VD_f00000", "0006R0_f01890"]
    samples = [Sample(tmp_path / f"{n}.png", tmp_path / "ann" / f"{n}.png") for n in names]
    assert [s.drive for s in samples] == ["0001TP", "0006R0", "0001TP", "Seq05VD", "0006R0"]
    rest, held = split_by_drive(samples, "0006R0")
    assert [s.image.stem for s in held] == ["0006R0_f01860", "0006R0_f01890"]
    assert [s.image.stem for s in rest] == ["0001TP_006690", "0001TP_006720", "Seq05VD_f00000"]
    present = r"drives present: \['0001TP', '0006R0', 'Seq05VD'\]"
    with pytest.raises(DatasetError, match=r"'0016E5' has no frames; " + present):
        split_by_drive(samples, "0016E5")
