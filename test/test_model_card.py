"""The model card renders every measured split, and its reproduce commands name each held-out run."""

from __future__ import annotations

import json

import yaml

from road_seg_perception.tools import model_card as MC

SPLIT = {"iou": 0.9, "mean_frame_iou": 0.89, "f1": 0.95, "precision": 0.96, "recall": 0.94, "frames": 10}


def card(holdouts: list[dict]) -> dict:
    return {"val": SPLIT, "holdout": holdouts, "holdout_note": "Dusk is hard.", "input_hw": [192, 256],
            "threshold": 0.5, "parameters": 1000, "macs": 2e6, "levels": 4,
            "train": {"train_frames": 5, "train_drives": ["A", "B"], "epochs_run": 3, "best_epoch": 2},
            "cpu": "x86_64", "threads": 2, "runs": 5, "latency": [{"path": "onnxruntime", "total": 7.0}],
            "tradeoff": "t", "note": "", "commands": ["cmd"]}


def test_render_has_a_row_per_held_out_drive():
    md = MC.render(card([{**SPLIT, "iou": 0.93, "drive": "0006R0", "frames": 101, "epochs_run": 16},
                         {**SPLIT, "iou": 0.76, "drive": "0001TP", "frames": 62, "epochs_run": 16}]))
    assert "| held-out drive 0006R0 (a model trained without it, same settings, best of 16 epochs) | 101 | " \
           "**0.9300** |" in md
    assert "| held-out drive 0001TP" in md and "**0.7600**" in md
    assert "Dusk is hard." in md
    assert md.count("| held-out drive") == 2


def test_drive_of_reads_the_run_config(tmp_path):
    run = tmp_path / "road_unet_holdout_X"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"holdout_drive": "0006R0"}}))
    assert MC._drive_of(str(run)) == "0006R0"
    json.dumps(card([]))  # the card stays JSON-serialisable
