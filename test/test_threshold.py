"""road-seg-threshold: IoU per threshold on a config's training frames, the choice, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from sample_data import threshold_config

from road_seg_perception.core.metrics import Confusion, confusion
from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.core.segmenter import PostConfig, RoadSegmenter
from road_seg_perception.tools import threshold as tool


@pytest.mark.parametrize("flip", [False, True])
def test_curves_match_pooled_confusion_and_the_choice_is_their_best(tmp_path, tiny_model, capsys, flip):
    cfg = threshold_config(tmp_path)
    out = tmp_path / "scan.json"
    thresholds = [0.3, 0.45, 0.5, 0.55, 0.7]
    assert tool.main(["--config", str(cfg), "--model", str(tiny_model["onnx"]), "--frames", "4", "--val",
                      "--thresholds", *map(str, thresholds), "--json", str(out)]
                     + (["--flip-average"] if flip else [])) == 0
    scan = json.loads(out.read_text())
    assert scan["flip_average"] is flip
    # sequence folder 0 is the validation split (every 3rd), so 6 training frames, 4 of them spread evenly
    assert scan["frames"] == {"idd": 4} and list(scan["val_iou"]) == ["idd_val"]
    # reference: the published mask at each threshold, scored with every pixel of the 4 frames pooled
    pairs = tool.training_pairs(tool.load_config(cfg), 4)["idd"]
    assert len(pairs) == 4 and all(lab.shape == (40, 56) and (lab == VOID).sum() == 3 for _, lab in pairs)
    for i, t in enumerate(thresholds):
        seg = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime", post=PostConfig(threshold=t),
                            flip_average=flip)
        pooled = sum((confusion(seg.segment(im).mask, lab) for im, lab in pairs), Confusion())
        assert scan["train_iou"]["idd"][i] == pytest.approx(pooled.iou, abs=1e-12)
        seg.flip_average = not flip
        other = sum((confusion(seg.segment(im).mask, lab) for im, lab in pairs), Confusion())
        if t == 0.5:  # the untrained model's outputs straddle 0.5 only: there the two ways differ
            assert other.iou != pytest.approx(pooled.iou, abs=1e-9)
    best = int(np.argmax(scan["train_iou"]["idd"]))
    assert scan["chosen"] == thresholds[best]
    printed = capsys.readouterr().out
    assert f"| {thresholds[best]:.2f} (chosen) |" in printed and "validation splits (not used" in printed


def test_choose_takes_the_best_mean_over_datasets():
    thresholds = np.array([0.3, 0.4, 0.5])
    curves = {"a": [0.90, 0.95, 0.96], "b": [0.80, 0.85, 0.82]}  # means 0.85, 0.90, 0.89
    assert tool.choose(curves, thresholds) == (0.4, np.mean([0.95, 0.85]))


def test_bad_options_and_configs_fail_with_a_clear_error(tmp_path, tiny_model, capsys):
    cfg = threshold_config(tmp_path)
    assert tool.main(["--config", str(cfg), "--model", str(tiny_model["onnx"]), "--thresholds", "0.5", "1.2"]) == 2
    assert "--thresholds must lie in (0, 1)" in capsys.readouterr().err
    assert tool.main(["--config", str(cfg), "--model", str(tiny_model["onnx"]), "--frames", "0"]) == 2
    assert "--frames must be >= 1" in capsys.readouterr().err
    assert tool.main(["--config", str(cfg), "--model", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err
    unlabelled = yaml.safe_load(cfg.read_text())
    unlabelled["datasets"][0]["train"] = False
    cfg.write_text(yaml.safe_dump(unlabelled))
    assert tool.main(["--config", str(cfg), "--model", str(tiny_model["onnx"])]) == 2
    assert "needs train: true" in capsys.readouterr().err  # the config is refused, naming the key
