"""error_classes: a model's false road counted under the labels' own classes, per validation split."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml
from sample_data import write_idd

from road_seg_perception.core.metrics import confusion
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.tools import error_classes as tool
from road_seg_perception.training.config import load_config
from road_seg_perception.training.datasets import DatasetError, LabelSpec, label_from_ids

IDD = LabelSpec(format="camvid", positive_ids=[0], void_ids=[255])


class BandSegmenter:
    """Calls the bottom 25 rows of every 40-row frame road."""

    def segment(self, image: np.ndarray) -> SimpleNamespace:
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[15:] = 255
        return SimpleNamespace(mask=mask)


def idd_config(tmp_path, seqs: dict[str, int]) -> dict:
    write_idd(tmp_path / "idd", seqs)  # sky (6) above row 20, drivable (0) below, sidewalk (1) in columns 0-7
    cfg = {"datasets": [{"name": "idd", "format": "idd", "root": str(tmp_path / "idd"), "train_images": "images",
                         "train_masks": "labels", "positive_ids": [0], "void_ids": [255], "holdout_every": 2,
                         "holdout_name": "idd_val"}]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


def test_false_road_is_counted_under_its_labelled_class():
    ids = np.full((4, 5), 6, np.uint8)  # sky
    ids[2:] = 0  # drivable
    ids[2:, :2] = 1  # non-drivable
    ids[0, 1] = 255  # void, inside the mask: never counted
    mask = np.zeros((4, 5), np.uint8)
    mask[:, 1:] = 255  # road everywhere but column 0
    e = tool.ClassErrors()
    e.add(mask, ids, IDD)
    e.add(mask, ids, IDD)
    assert e.frames == 2
    # a frame: drivable rows 2-3, columns 2-4 (6 px) found; sky rows 0-1, columns 1-4 but the void one (7 px)
    # and non-drivable rows 2-3, column 1 (2 px) called road; nothing missed
    assert (e.counts.tp, e.counts.fp, e.counts.fn) == (2 * 6, 2 * (7 + 2), 0)
    assert e.counts == confusion(mask, label_from_ids(ids, IDD)) + confusion(mask, label_from_ids(ids, IDD))
    assert dict(e.false_road) == {6: 14, 1: 4}
    assert e.share(6) == pytest.approx(14 / 18) and e.share(1) == pytest.approx(4 / 18) and e.share(3) == 0
    assert e.iou_without(6) == pytest.approx(12 / (12 + 4)) and e.iou_without(1) == pytest.approx(12 / (12 + 14))
    assert e.missed_share == 0
    assert tool.largest_false_class("idd", e) == {"false_road_class": "sky", "false_road_share": round(14 / 18, 4),
                                                  "iou_without_class": 0.75}
    assert tool.largest_false_class("idd", tool.ClassErrors()) == {}  # no false road: nothing to name
    assert tool.ClassErrors().iou_without(1) == 1.0 and tool.ClassErrors().share(1) == 0.0


def test_edge_distance_counts_from_the_other_class_and_not_from_void():
    label = np.zeros((3, 7), np.uint8)
    label[:, 4:] = 1  # road in columns 4-6
    label[:, 3] = 255  # a void column between them: no edge there (void's own distance is to the road)
    label[0, 0] = 1  # one road pixel inside the non-road
    d = tool.edge_distance(label)
    assert d.tolist() == [[1, 1, 2, 1, 2, 3, 4],
                          [1, 1, 2, 1, 2, 3, 4],
                          [2, 2, 2, 1, 2, 3, 4]]
    assert (tool.edge_distance(np.ones((3, 4), np.uint8)) == 3 + 4).all()  # one class: no edge
    assert (tool.edge_distance(np.full((2, 2), 255, np.uint8)) == 2 + 2).all()
    with pytest.raises(ValueError, match="2-D"):
        tool.edge_distance(np.zeros((2, 2, 1), np.uint8))


def test_wrong_pixels_along_the_edge_are_told_from_wrong_regions():
    ids = np.full((10, 12), 1, np.uint8)  # non-drivable
    ids[:, 6:] = 0  # drivable in columns 6-11
    mask = np.zeros((10, 12), np.uint8)
    mask[:, 5:] = 255  # the edge one column off: column 5 is false road, 1 px from the edge
    mask[8:, 10:] = 0  # a missed region in columns 10-11, 5 and 6 px from the edge
    # band: (false road, missed road, found road within it); road column 6 + k is k + 1 px from the edge
    for band, near_fp, near_fn, near_tp in ((1, 10, 0, 10), (5, 10, 2, 48), (6, 10, 4, 56)):
        e = tool.ClassErrors(edge_band=band)
        e.add(mask, ids, IDD)
        assert (e.counts.tp, e.counts.fp, e.counts.fn) == (56, 10, 4)
        assert (e.near_edge.fp, e.near_edge.fn, e.near_edge.tp) == (near_fp, near_fn, near_tp)
        assert e.edge_share == pytest.approx((near_fp + near_fn) / 14)
        off = (56 - near_tp) / (56 - near_tp + 14 - near_fp - near_fn) if 56 - near_tp else 1.0
        assert e.iou_off_edge == pytest.approx(off)
    assert tool.ClassErrors().edge_share == 0.0 and tool.ClassErrors().iou_off_edge == 1.0


def test_every_validation_split_is_scored(tmp_path):
    cfg = idd_config(tmp_path, {"0": 2, "1": 1, "2": 1, "3": 1})  # folders 0 and 2 validate (every 2nd)
    found = tool.config_errors(BandSegmenter(), cfg, log=pytest.fail)
    assert list(found) == ["idd_val"]
    assert tool.config_errors(BandSegmenter(), cfg, log=pytest.fail, only={"camvid_val"}) == {}
    fmt, e = found["idd_val"]
    assert fmt == "idd" and e.frames == 3
    # per frame: road rows 15-39; sky rows 15-19 (5 x 56) and sidewalk rows 20-39, columns 0-7 (20 x 8) are false
    assert (e.counts.tp, e.counts.fp, e.counts.fn) == (3 * 20 * 48, 3 * (280 + 160), 0)
    assert dict(e.false_road) == {6: 3 * 280, 1: 3 * 160}
    text = tool.table("idd_val", fmt, e, top=5)
    assert "idd_val: 3 frames, road IoU 0.6857" in text
    rows = [r for r in text.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert rows == ["| sky (6) | 63.6% | 0.8571 |", "| non-drivable (1) | 36.4% | 0.7742 |"]
    assert tool.table("idd_val", fmt, e, top=1).splitlines()[-1] == rows[0]
    # within 2 px of the road edge (road rows 20-39, columns 8-55), per frame: sky rows 18-19, columns 6-55
    # (100 px) and sidewalk columns 6-7, rows 20-39 (40 px) are false; road rows 20-21 and columns 8-9 are true
    assert e.near_edge.to_dict() == {"tp": 3 * (2 * 48 + 2 * 18), "fp": 3 * 140, "fn": 0, "tn": 0}
    assert e.edge_share == pytest.approx(140 / 440)
    assert e.iou_off_edge == pytest.approx((960 - 132) / (960 - 132 + 440 - 140))
    assert "31.8% of the wrong pixels lie within 2 px of the labelled road edge, road IoU with them left out " \
           "0.7340" in text.splitlines()[0]


def test_formats_without_class_ids_are_named_and_skipped(tmp_path):
    for sub in ("img", "msk"):
        (tmp_path / "bin" / sub).mkdir(parents=True)
    assert cv2.imwrite(str(tmp_path / "bin" / "img" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert cv2.imwrite(str(tmp_path / "bin" / "msk" / "a_mask.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"datasets": [{
        "name": "road", "format": "binary", "root": str(tmp_path / "bin"), "train_images": "img",
        "train_masks": "msk", "val_images": "img", "val_masks": "msk", "mask_suffix": "_mask"}]}))
    lines = []
    assert tool.config_errors(BandSegmenter(), load_config(tmp_path / "cfg.yaml"), log=lines.append) == {}
    assert lines == ["skipped road_val: format binary has no class ids"]


def test_the_command_scores_the_published_masks_and_writes_json(tmp_path, tiny_model, capsys):
    idd_config(tmp_path, {"0": 2, "1": 1})
    out = tmp_path / "errors.json"
    assert tool.main(["--config", str(tmp_path / "cfg.yaml"), "--model", str(tiny_model["onnx"]),
                      "--json", str(out)]) == 0
    seg = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime")
    fp, tp = {}, 0
    for i in range(2):
        image = cv2.cvtColor(cv2.imread(str(tmp_path / "idd" / "images" / "0" / f"{i:06d}_image.jpg")),
                             cv2.COLOR_BGR2RGB)
        ids = cv2.imread(str(tmp_path / "idd" / "labels" / "0" / f"{i:06d}_label.png"), cv2.IMREAD_UNCHANGED)
        road = seg.segment(image).mask > 0
        tp += int((road & (ids == 0)).sum())
        for c in (1, 6):
            fp[str(c)] = fp.get(str(c), 0) + int((road & (ids == c)).sum())
    report = json.loads(out.read_text())["splits"]["idd_val"]
    assert report["frames"] == 2 and report["tp"] == tp
    assert report["false_road_by_class"] == {k: v for k, v in fp.items() if v}
    assert report["fp"] == sum(fp.values()) > 0  # the untrained model's road falls on both classes
    assert report["edge_band_px"] == 2 and set(report["near_edge"]) == {"tp", "fp", "fn", "tn"}
    assert 0 <= report["near_edge"]["fp"] <= report["fp"] and report["near_edge"]["tp"] <= tp
    printed = capsys.readouterr().out
    assert f"idd_val: 2 frames, road IoU {tp / (tp + report['fp'] + report['fn']):.4f}" in printed


def test_bad_arguments_are_named(tmp_path, tiny_model, capsys):
    idd_config(tmp_path, {"0": 1, "1": 1})
    cfg = str(tmp_path / "cfg.yaml")
    for args, msg in ((["--top", "0"], "--top must be >= 1"),
                      (["--edge-band", "0"], "--edge-band must be >= 1"),
                      (["--json", str(tmp_path)], "is a folder"),
                      (["--model", str(tmp_path / "gone.onnx")], "gone.onnx")):
        assert tool.main(["--config", cfg, "--model", str(tiny_model["onnx"]), *args]) == 2
        assert msg in capsys.readouterr().err
    (tmp_path / "none.yaml").write_text(yaml.safe_dump({"datasets": [{
        "name": "idd", "format": "idd", "root": str(tmp_path / "idd"), "train_images": "images",
        "train_masks": "labels", "positive_ids": [0], "void_ids": [255]}]}))
    assert tool.main(["--config", str(tmp_path / "none.yaml"), "--model", str(tiny_model["onnx"])]) == 2
    assert "has no validation split with class ids" in capsys.readouterr().err


def test_a_mask_of_another_size_is_refused_naming_both_files(tmp_path):
    cfg = idd_config(tmp_path, {"0": 1, "1": 1})  # folder 0 validates
    label = tmp_path / "idd" / "labels" / "0" / "000000_label.png"
    assert cv2.imwrite(str(label), np.zeros((30, 56), np.uint8))
    with pytest.raises(DatasetError, match=r"size mismatch: image .*000000_image.jpg is 56x40, mask .*"
                                           r"000000_label.png is 56x30"):
        tool.config_errors(BandSegmenter(), cfg, log=pytest.fail)
