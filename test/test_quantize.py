"""INT8 quantisation: calibrated on training frames, checked split by split, refused when it costs accuracy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from road_seg_perception.core.model_io import ONNX_WEIGHTS_KEY
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.tools import quantize as Q


def _write_camvid(root: Path, names: list[str]) -> None:
    rng = np.random.default_rng(0)
    for sub in ("train", "trainannot"):
        (root / sub).mkdir(parents=True)
    for n in names:
        ids = np.full((36, 48), 1, np.uint8)
        ids[18:] = 3
        img = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
        img[18:] //= 3  # a darker road
        assert cv2.imwrite(str(root / "train" / f"{n}.png"), img)
        assert cv2.imwrite(str(root / "trainannot" / f"{n}.png"), ids)


@pytest.fixture()
def cfg(tmp_path) -> dict:
    _write_camvid(tmp_path / "cv", [f"0001TP_{i:06d}" for i in range(3)] + [f"0006R0_{i:06d}" for i in range(5)])
    return {"datasets": [{"name": "camvid", "format": "camvid", "root": str(tmp_path / "cv"),
                          "holdout_drives": ["0001TP"], "holdout_name": "camvid_0001TP"}],
            "model": {"input_hw": [32, 64]}}


def _load(cfg: dict) -> dict:
    from road_seg_perception.training.config import DEFAULTS, deep_update

    return deep_update(DEFAULTS, cfg)


def test_calibration_frames_are_training_frames_spread_over_the_drive(cfg):
    images = Q.calibration_images(_load(cfg), 3)
    assert [p.name for p in images] == ["0006R0_000000.png", "0006R0_000002.png", "0006R0_000004.png"]
    assert len(Q.calibration_images(_load(cfg), 50)) == 5  # never more than there are, never the held-out drive


def test_int8_model_is_written_marked_and_runs_like_the_float_one(cfg, tiny_model, tmp_path):
    out = tmp_path / "tiny_int8.onnx"
    report = Q.quantize_checked(tiny_model["onnx"], out, _load(cfg), frames=4, max_drop=1.0)
    assert set(report) == {"camvid_0001TP"}
    r = report["camvid_0001TP"]
    assert 0.0 <= r["int8"] <= 1.0 and r["drop"] == pytest.approx(r["float"] - r["int8"], abs=1e-4)
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[Q.QUANTIZED_KEY] == "int8-qdq" and ONNX_WEIGHTS_KEY not in meta
    frame = np.random.default_rng(1).integers(0, 256, (36, 48, 3), dtype=np.uint8)
    a = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime").segment(frame, with_probability=True)
    b = RoadSegmenter(out, backend="onnxruntime").segment(frame, with_probability=True)
    assert b.mask.shape == (36, 48) and b.mask.dtype == np.uint8
    assert np.abs(a.probability - b.probability).max() < 0.1  # INT8 rounding, not a different model


def test_float_nodes_keep_the_graphs_first_nodes_out_of_int8(cfg, tiny_model, tmp_path):
    out = tmp_path / "mixed.onnx"
    Q.quantize_checked(tiny_model["onnx"], out, _load(cfg), frames=2, max_drop=1.0, float_nodes=3)
    proto = onnx.load(str(out))
    kept = {p.key: p.value for p in proto.metadata_props}[Q.FLOAT_NODES_KEY].split(",")
    assert len(kept) == 3
    dequantized = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    by_name = {n.name: n for n in proto.graph.node}
    assert all(name in by_name and not set(by_name[name].input) & dequantized for name in kept)
    # the rest is INT8: some node after them reads dequantized tensors
    assert any(set(n.input) & dequantized for n in proto.graph.node if n.name not in kept)
    with pytest.raises(ValueError, match="float_nodes 100000"):
        Q.quantize_int8(tiny_model["onnx"], tmp_path / "x.onnx", Q.calibration_images(_load(cfg), 1), 100000)


def test_int8_that_loses_accuracy_is_refused_and_nothing_is_written(cfg, tiny_model, tmp_path):
    out = tmp_path / "refused.onnx"
    with pytest.raises(Q.AccuracyLossError, match="road IoU on camvid_0001TP") as err:
        Q.quantize_checked(tiny_model["onnx"], out, _load(cfg), frames=2, max_drop=-1.0)
    assert set(err.value.report) == {"camvid_0001TP"}
    assert not out.exists() and list(tmp_path.glob("*.tmp.onnx")) == []


def test_cli_refuses_bad_inputs_naming_them(tiny_model, tmp_path, capsys):
    assert Q.main([str(tiny_model["onnx"]), str(tmp_path / "o.onnx"), "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert Q.main([str(tiny_model["onnx"]), str(tiny_model["onnx"]), "--config", "config/train_road.yaml"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert Q.main([str(tmp_path / "missing.onnx"), str(tmp_path / "o.onnx"), "--config", "x.yaml"]) == 2
    assert "missing.onnx" in capsys.readouterr().err
    bad = [str(tiny_model["onnx"]), str(tmp_path / "o.onnx"), "--config", "config/train_road.yaml",
           "--float-nodes", "-1"]
    assert Q.main(bad) == 2
    assert "--float-nodes" in capsys.readouterr().err
