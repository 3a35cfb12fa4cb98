"""The sample sheet: a model's masks beside the ground truth on each validation split, titled with IoU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sample_data import threshold_config

from road_seg_perception.core.metrics import confusion
from road_seg_perception.core.overlay import TITLE_HEIGHT, TRUTH_COLOR, compare_panel, draw_overlay
from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.tools import sample_sheet as tool
from road_seg_perception.training.config import load_config


def test_compare_panel_puts_the_prediction_left_and_the_truth_right_with_void_dimmed():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 255, (60, 80, 3), dtype=np.uint8)
    pred = np.zeros((60, 80), np.uint8)
    pred[30:] = 255
    label = np.zeros((60, 80), np.uint8)
    label[40:] = 1
    label[:5, 70:] = VOID
    panel = compare_panel(image, pred, label, VOID)
    assert panel.shape == (60, 2 * 80 + 4, 3)
    np.testing.assert_array_equal(panel[:, :80], draw_overlay(image, pred))
    truth = panel[:, 84:]
    np.testing.assert_array_equal(truth[:5, 70:], image[:5, 70:] // 3)
    inner = truth[50, 40].astype(float)  # inside the road, away from the drawn boundary
    np.testing.assert_allclose(inner, image[50, 40] * 0.55 + np.array(TRUTH_COLOR) * 0.45, atol=1)
    np.testing.assert_array_equal(truth[20, 40], image[20, 40])  # not road, not void: untouched


def test_sheet_rows_score_the_published_masks_of_every_validation_frame(tmp_path, tiny_model, capsys):
    cfg = threshold_config(tmp_path)  # sequence folder 0 (2 frames, 40x56) validates
    seg = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime")
    rows = tool.sheet_rows(seg, load_config(cfg), per_split=5)
    assert [t.split("  ")[0] for t, *_ in rows] == ["idd_val: 0/000000_image", "idd_val: 0/000001_image"]
    labels = {"000000": 18, "000001": 19}  # road (level-1 id 0) starts at these rows (test/sample_data.py)
    for (title, panel, mask, iou), start in zip(rows, labels.values(), strict=True):
        image = cv2.cvtColor(cv2.imread(str(tmp_path / "idd" / "images" / "0" / f"{title[11:17]}_image.png")),
                             cv2.COLOR_BGR2RGB)
        label = np.zeros((40, 56), np.uint8)
        label[start:] = 1
        label[0, :3] = VOID
        np.testing.assert_array_equal(mask, seg.segment(image).mask)
        assert iou == pytest.approx(confusion(mask, label).iou) and f"IoU {iou:.3f}" in title
        assert panel.shape == (40, 2 * 56 + 4, 3)

    out = tmp_path / "sheet.png"
    assert tool.main(["--config", str(cfg), "--model", str(tiny_model["onnx"]), "--per-split", "1",
                      "--out", str(out)]) == 0
    sheet = cv2.imread(str(out))
    height = TITLE_HEIGHT + int(round(40 * tool.SHEET_WIDTH / (2 * 56 + 4)))  # one row: title and panel
    assert sheet.shape == (height + tool.FOOTER_HEIGHT, tool.SHEET_WIDTH, 3)  # and the command strip
    assert (sheet[:TITLE_HEIGHT, :40] > 128).any() and (sheet[:TITLE_HEIGHT, -7:] == 40).all()  # white on grey
    assert (sheet[height:, :40] < 128).any() and (sheet[height:, -7:] == 255).all()  # dark text, fitted in
    printed = capsys.readouterr().out
    assert "idd_val: 0/000000_image" in printed and "000001" not in printed and "(1 frames)" in printed


def test_bad_arguments_are_named(tmp_path, tiny_model, capsys):
    cfg = threshold_config(tmp_path)
    for args, msg in ((["--model", str(tmp_path / "gone.onnx")], "--model .*gone.onnx does not exist"),
                      (["--model", str(tiny_model["onnx"]), "--per-split", "0"], "--per-split must be >= 1"),
                      (["--model", str(tiny_model["onnx"]), "--out", str(tmp_path / "no" / "x.png")],
                       "--out .*folder .*no does not exist"),
                      (["--model", str(tiny_model["onnx"]), "--pick", "best"], "--pick: invalid choice: 'best'")):
        with pytest.raises(SystemExit) as e:
            tool.main(["--config", str(cfg), "--out", str(tmp_path / "x.png"), *args])
        assert e.value.code == 2
        assert pytest.importorskip("re").search(msg, capsys.readouterr().err)
    assert not (tmp_path / "x.png").exists()


def test_pick_worst_keeps_the_lowest_iou_frames_lowest_first(tmp_path, tiny_model):
    cfg = load_config(threshold_config(tmp_path))  # idd_val: frames 000000 and 000001 of sequence 0
    seg = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime")
    every = {t.split("  ")[0]: (iou, mask) for t, _, mask, iou in tool.sheet_rows(seg, cfg, per_split=5)}
    ious = {k: v[0] for k, v in every.items()}
    assert len(ious) == 2 and len(set(ious.values())) == 2  # two frames that the model scores differently
    ranked = sorted(ious, key=ious.get)
    lines = []
    worst_one = tool.sheet_rows(seg, cfg, per_split=1, pick="worst", log=lines.append)
    assert [t.split("  ")[0] for t, *_ in worst_one] == ranked[:1]
    labels = {"000000": 18, "000001": 19}  # where road starts in each frame (test/sample_data.py)
    counts = {}
    for name, (_, mask) in every.items():
        label = np.zeros((40, 56), np.uint8)
        label[labels[name[-12:-6]]:] = 1
        label[0, :3] = VOID
        counts[name] = confusion(mask, label)
    pooled = counts[ranked[0]] + counts[ranked[1]]
    assert lines == [f"idd_val: road IoU {pooled.iou:.4f} over 2 frames, "
                     f"{counts[ranked[1]].iou:.4f} without the 1 worst"]
    segment, calls = seg.segment, []
    seg.segment = lambda image: calls.append(image.shape) or segment(image)
    both = tool.sheet_rows(seg, cfg, per_split=2, pick="worst", log=lines.append)
    assert len(calls) == 2  # each frame of the split segmented once: the picked ones keep their masks
    assert [t.split("  ")[0] for t, *_ in both] == ranked
    assert [mask.tolist() for *_, mask, _ in both] == [every[k][1].tolist() for k in ranked]
    assert [iou for *_, iou in both] == sorted(ious.values())
    assert lines[-1] == f"idd_val: road IoU {pooled.iou:.4f} over 2 frames"  # none left to score without them
    with pytest.raises(ValueError, match="pick must be one of"):
        tool.sheet_rows(seg, cfg, per_split=1, pick="best")
