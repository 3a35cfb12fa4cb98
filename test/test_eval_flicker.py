"""road-seg-eval's flicker metric and temporal smoothing, on bags whose predictions are known exactly."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from road_seg_perception.bagio import bag as B
from road_seg_perception.core.segmenter import PostConfig, SegmentationResult
from road_seg_perception.tools import evaluate as E

START_NS = 1_700_000_000_000_000_000


class RedSegmenter:
    """Road probability = the red channel / 255, thresholded at 0.5: predictions known exactly."""

    post = PostConfig()
    info = {"backend": "test", "device": "cpu", "model": "red", "input_size": "any"}

    def segment(self, rgb, with_probability=False, smooth=None):
        p = rgb[..., 0].astype(np.float32) / 255.0
        if smooth is not None:
            p = smooth(p)
        mask = np.where(p >= 0.5, 255, 0).astype(np.uint8)
        return SegmentationResult(mask, p, p, {"pre": 0.1, "infer": 0.1, "post": 0.1})


def flicker_bag(tmp_path):
    """Frames 8x10 at 10 Hz; frame 1 lights the top-left 4x5 block (red 200), the rest are dark.

    The ground truth's top 2 rows are void, so frames 0->1 and 1->2 each change 10 of 60 valid pixels.
    """
    gt = np.zeros((8, 10), np.uint8)
    gt[:2] = 128
    reds = []
    for k in range(4):
        rgb = np.zeros((8, 10, 3), np.uint8)
        if k == 1:
            rgb[:4, :5, 0] = 200
        reds.append(B.Frame(rgb, gt))
    bag = tmp_path / "bag"
    B.write_frames(bag, reds, rate=10.0, start_ns=START_NS)
    return bag


def test_flicker_without_and_with_smoothing(tmp_path):
    bag = flicker_bag(tmp_path)
    assert E.EvalConfig().temporal_smoothing is True  # the node's default
    cfg = E.EvalConfig(progress=False, video=False, output_bag=False, temporal_smoothing=False)
    r = E.evaluate_bag(bag, tmp_path / "plain", segmenter=RedSegmenter(), cfg=cfg)
    assert [f.flicker for f in r.frames] == [None, pytest.approx(1 / 6), pytest.approx(1 / 6), 0.0]
    fl = r.metrics["flicker"]
    assert fl["pairs"] == 3 and fl["mean"] == pytest.approx(1 / 9)
    assert fl["p95"] == pytest.approx(float(np.percentile([1 / 6, 1 / 6, 0.0], 95)))
    assert r.metrics["temporal_smoothing"]["enabled"] is False
    rows = list(csv.DictReader((tmp_path / "plain" / "frames.csv").open()))
    assert [row["flicker"] for row in rows] == ["", "0.166667", "0.166667", "0.000000"]
    html = (tmp_path / "plain" / "report.html").read_text()
    assert "Flicker over time" in html and "11.11 % / 16.67 % over 3 frame pairs" in html

    # alpha 0.5: frame 1's 200/255 = 0.78 averages to 0.39 with frame 0's 0 and never crosses 0.5
    cfg.temporal_smoothing, cfg.temporal_alpha = True, 0.5
    s = E.evaluate_bag(bag, tmp_path / "smooth", segmenter=RedSegmenter(), cfg=cfg)
    assert [f.flicker for f in s.frames] == [None, 0.0, 0.0, 0.0]
    assert s.metrics["flicker"]["mean"] == 0.0 and s.metrics["temporal_smoothing"]["alpha"] == 0.5
    # a reset gap shorter than the frame spacing: every frame starts afresh, as without smoothing
    cfg.temporal_reset_gap_s = 0.05
    g = E.evaluate_bag(bag, tmp_path / "gap", segmenter=RedSegmenter(), cfg=cfg)
    assert [f.flicker for f in g.frames] == [f.flicker for f in r.frames]


def test_cli_prints_flicker_and_takes_smoothing_options(tiny_model, tmp_path, capsys):
    bag = flicker_bag(tmp_path)
    args = [str(bag), "--model", str(tiny_model["onnx"]), "--no-video", "--no-bag"]
    assert E.main([*args, "--report", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert f"flicker mean {100 * m['flicker']['mean']:.2f} %" in out and "temporal smoothing on (alpha 0.6)" in out
    assert E.main([*args, "--report", str(tmp_path / "b"), "--temporal-alpha", "0.3"]) == 0
    assert "temporal smoothing on (alpha 0.3)" in capsys.readouterr().out
    assert E.main([*args, "--report", str(tmp_path / "d"), "--no-temporal-smoothing"]) == 0
    assert "temporal smoothing off" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["temporal_smoothing"]["alpha"] == 0.3
    assert E.main([*args, "--report", str(tmp_path / "c"), "--temporal-smoothing", "--temporal-alpha", "0"]) == 2
    assert "alpha" in capsys.readouterr().err
