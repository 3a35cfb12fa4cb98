"""The model card renders every validation split with its prior and teacher, the cross-dataset rows and candidates."""

from __future__ import annotations

import json

import numpy as np
from conftest import REPO
from sample_data import S, sample_card

from road_seg_perception.tools import model_card as MC


def test_render_has_a_row_per_split_with_prior_and_teacher():
    md = MC.render(sample_card())
    assert "| CamVid val (drive 0016E5) | 10 | **0.9000** | 0.9600 | 0.9400 | 0.8900 | 0.6000 | 0.9700 |" in md
    assert "| CamVid drive 0001TP (dusk, held out) | 10 | **0.9100** |" in md
    assert "| IDD-Lite validation sequences | 10 | **0.9000** | 0.9600 | 0.9400 | 0.8900 | 0.7000 | - |" in md
    assert "| `r_no_camvid` | idd | CamVid val (drive 0016E5) | **0.8800** |" in md
    assert "| shipped | 0.9000 | 0.9100 | 0.9000 | 8.0 | 125.0 |" in md
    assert "Targets: met." in md and "trained on 5 frames of 2 drive(s), drawn x3.0" in md
    assert "INT8" not in md.split("## Accuracy")[1].split("## CPU")[0]  # no INT8 column without INT8 scores
    json.dumps(sample_card())  # the card stays JSON-serialisable


def test_cross_rows_name_the_class_holding_most_of_their_false_road():
    c = sample_card()
    md = MC.render(c)
    assert "| most false road on (share) | road IoU without that class |" in md
    assert "| **0.8800** | 0.9600 | 0.9400 | 0.6000 | 0.9700 | - | - |" in md  # a row measured without it
    c["cross"][0].update(false_road_class="pavement", false_road_share=0.938, iou_without_class=0.9696)
    assert "| **0.8800** | 0.9600 | 0.9400 | 0.6000 | 0.9700 | pavement (93.8%) | 0.9696 |" in MC.render(c)


def test_render_adds_the_int8_column_when_every_split_has_it():
    c = sample_card()
    for i, s in enumerate(c["splits"].values()):
        s["int8"] = {**S, "iou": 0.8 + i / 100}
    md = MC.render(c)
    assert "| teacher IoU | INT8 copy IoU |" in md
    assert "| CamVid val (drive 0016E5) | 10 | **0.9000** | 0.9600 | 0.9400 | 0.8900 | 0.6000 | 0.9700 | **0.8000** |" \
        in md
    assert "| IDD-Lite validation sequences | 10 | **0.9000** | 0.9600 | 0.9400 | 0.8900 | 0.7000 | - | **0.8200** |" \
        in md


def test_prior_is_the_bottom_of_the_frame():
    m = MC.prior_mask(np.zeros((100, 40, 3), np.uint8))
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
    assert (m[:, 0] == 255).sum() == 38 and np.all(m[-38:] == 255) and np.all(m[:62] == 0)


def test_score_masks_pools_pixels_over_frames():
    label = np.zeros((10, 10), np.uint8)
    label[5:] = 1
    label[0, 0] = 255
    pairs = [(np.zeros((10, 10, 3), np.uint8), label)] * 2
    r = MC.score_masks(lambda im: np.where(np.arange(10)[:, None] >= 4, 255, 0).repeat(10, 1).astype(np.uint8),
                       pairs, "t")
    assert r["frames"] == 2 and r["iou"] == round(50 / 60, 4) and r["recall"] == 1.0


def test_latency_table_times_the_onnx_file_and_its_keras_twin(tiny_model):
    frame = np.random.default_rng(0).integers(0, 256, (36, 48, 3), dtype=np.uint8)
    rows = MC.latency_table(tiny_model["onnx"], frame, runs=3)
    assert [r["path"].split(" ")[0] for r in rows] == ["onnxruntime", "keras-tensorflow", "keras-tensorflow"]
    assert rows[0]["total"] > 0 and rows[1]["total"] > 0 and rows[2]["infer"] > 0
    rows = MC.latency_table(tiny_model["onnx"], frame, runs=3, keras=False, int8=tiny_model["onnx"])
    assert [r["path"].split(" ")[:2] for r in rows] == [["onnxruntime", "INT8"], ["onnxruntime", "(session.run)"]]
    assert all(r["total"] > 0 for r in rows)


def test_recipe_names_the_exposure_augmentation_only_when_on():
    from road_seg_perception.training.config import load_config

    _, recipe = MC._cfg_summary(load_config(REPO / "config" / "train_road.yaml"))
    assert "gamma [0.6, 1.8]" in recipe and "white_balance 0.1" in recipe
    _, plain = MC._cfg_summary(load_config(None))
    assert "gamma" not in plain and "white_balance" not in plain


def test_architecture_names_the_context_gate_and_full_res_head_only_when_on():
    from road_seg_perception.training.config import load_config

    arch, _ = MC._cfg_summary(load_config(REPO / "config" / "train_road.yaml"))
    gated, _ = MC._cfg_summary(load_config(REPO / "config" / "train_road.yaml", ["model.global_context=true"]))
    assert "(32 channels at the finest), a 1x1 sigmoid head" in arch and "LR-ASPP" not in arch
    assert "(32 channels at the finest), its coarsest level gated channel by channel by the globally pooled " \
           "encoder features (LR-ASPP), a 1x1 sigmoid head" in gated
    full, _ = MC._cfg_summary(load_config(REPO / "config" / "train_road.yaml", ["model.full_res_head=true"]))
    assert "a 1x1 sigmoid head (`road_seg" in arch and "full resolution" not in arch
    assert "a 1x1 sigmoid head at half the input's resolution, corrected at full resolution from a 3x3 " \
           "convolution of the image and the decoder's last features (`road_seg" in full



def test_a_run_started_from_another_lists_both_stages(tmp_path):
    """A shipped run made with --init-from another run's model: the card names both stages and both commands."""
    first, second = tmp_path / "road_a", tmp_path / "road_a_hires"
    for d, hw, cmd in ((first, [192, 256], "road-seg-train --config c.yaml"),
                       (second, [256, 352], f"road-seg-train --config c.yaml --init-from {first}/model.keras "
                                             "--set train.epochs=2")):
        d.mkdir()
        (d / "command.txt").write_text(cmd + "\n")
        (d / "metrics.json").write_text(json.dumps({"input_hw": hw, "epochs_run": 2, "best_epoch": 1, "history": [
            {"epoch": 1, "seconds": 3.0, "val_iou": 0.9, "val_camvid_val_iou": 0.9, "val_f1": 0.95}]}))
    assert MC.run_stages(second) == [first, second]
    assert MC.run_stages(first) == [first]
    stage = MC._stage(second)
    assert stage["input_hw"] == [256, 352] and stage["history"] == [
        {"epoch": 1, "seconds": 3.0, "val_camvid_val_iou": 0.9}]
    md = MC.render({**sample_card(), "stages": [MC._stage(first), stage]})
    assert "- Stage 1 (`road_a`): 2 epochs at 192x256, checkpoint chosen at epoch 1" in md
    assert "- Stage 2 (`road_a_hires`, from the model of the stage before): 2 epochs at 256x352" in md


def test_interleaved_totals_time_each_model_once_per_round(tiny_model, monkeypatch):
    from road_seg_perception.core.segmenter import RoadSegmenter

    calls = []
    real = MC.time_segmenter
    monkeypatch.setattr(MC, "time_segmenter", lambda seg, frame, runs, warmup: calls.append(seg) or real(
        seg, frame, runs=runs, warmup=warmup))
    segs = [RoadSegmenter(tiny_model["onnx"], backend="onnxruntime") for _ in range(2)]
    frame = np.random.default_rng(0).integers(0, 256, (36, 48, 3), dtype=np.uint8)
    totals = MC.interleaved_totals(segs, frame, runs=6, rounds=3)
    assert len(totals) == 2 and all(t > 0 for t in totals)
    assert calls == [segs[0], segs[1]] * 3  # in turn, round after round
