"""Write ``models/MODEL_CARD.md`` from measurements made now, so every number is reproducible.

    python -m road_seg_perception.tools.model_card \
        --run runs/road_unet_camvid --holdout-run runs/road_unet_holdout_0006R0 \
        --holdout-run runs/road_unet_holdout_0001TP

It scores the shipped model on CamVid val through ``RoadSegmenter`` (full resolution, void
ignored, pixels summed over the split), times each backend on a 480x360 frame, and copies the
training history and the held-out-drive result from the run directories.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
from tqdm import tqdm

from road_seg_perception.core.metrics import SplitScore
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.core.timing import time_keras_predict, time_segmenter
from road_seg_perception.training.datasets import LabelSpec, default_camvid_root, load_samples, pair_samples


def score_split(seg: RoadSegmenter, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Aggregate and mean per-frame scores of the published masks on a split."""
    score = SplitScore()
    for image, label in tqdm(pairs, desc="scoring val", unit="frame"):
        score.add(seg.segment(image).mask, label)
    return {**{k: round(v, 4) for k, v in score.total.scores().items()},
            "mean_frame_iou": round(score.mean_frame_iou, 4), "frames": len(pairs)}


def latency_table(model: Path, frame: np.ndarray, runs: int) -> list[dict]:
    rows = []
    for backend in ("onnxruntime", "keras"):
        seg = RoadSegmenter(model, backend=backend)
        t = time_segmenter(seg, frame, runs=runs)
        rows.append({"path": f"{seg.backend.name} ({'compiled call' if backend == 'keras' else 'session.run'})",
                     **{k: round(v, 1) for k, v in t.items()}})
        if backend == "keras":
            predict_ms = round(time_keras_predict(seg, frame), 1)
            rows.append({"path": f"{seg.backend.name} model.predict", "infer": predict_ms})
    return rows


def tradeoff_table(rows: list[dict] | None) -> list[str]:
    """Markdown rows from ``bench/arch_tradeoff.py``'s JSON."""
    if not rows:
        return []
    out = ["Speed of the candidates (`bench/arch_tradeoff.py`, one run; untrained weights, speed does not "
           "depend on them):", "",
           "| candidate | parameters | MACs / frame | ONNX Runtime pre+infer+post, 480x360 | fps | "
           "training step (batch 8) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['model']} | {r['parameters']:,} | {r['mmacs']:.0f} M | {r['ort_total_ms']:.1f} ms | "
                   f"{r['fps']:.0f} | {r['train_step_s']:.2f} s |")
    return [*out, ""]


def _drive_of(run_dir: str) -> str:
    """The held-out drive a run directory validated on (from its config.yaml)."""
    import yaml

    cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    return str(cfg["data"]["holdout_drive"])


def render(card: dict) -> str:
    v, holdouts = card["val"], card.get("holdout", [])
    lines = [
        "# Model card: road_unet_camvid",
        "",
        "Binary road (drivable-area) segmenter for 480x360-class camera frames: CamVid class 3 (road,",
        "lane markings included) against everything else. Shipped as `road_unet_camvid.keras` (Keras 3, safe-mode",
        "loadable, no custom code) and `road_unet_camvid.onnx` (same weights; what the node runs by default).",
        "",
        "Every number below was produced by the command at the end of this card; rerun it to check them.",
        "",
        "## Architecture",
        f"- Light U-Net (`road_seg_perception/training/model.py`): a stride-2 stem, {card['levels']} more levels of "
        "depthwise-separable",
        "  convolutions (base width 24), a dilated bottleneck, bilinear upsampling with skip connections, BatchNorm",
        "  + ReLU, and a sigmoid head after a final 2x bilinear upsampling.",
        f"- Input {card['input_hw'][1]}x{card['input_hw'][0]} RGB in [0, 1]; frames are resized with "
        "`preprocessing.preprocess` (the",
        "  same function training uses) and the probability is resized back bilinearly, then thresholded at "
        f"{card['threshold']}.",
        f"- Parameters: {card['parameters']:,}; multiply-accumulates per frame: {card['macs'] / 1e6:.0f} M "
        f"({2 * card['macs'] / 1e9:.2f} GFLOPs).",
        "",
        "## Data and training",
        f"- CamVid (SegNet 11-class preparation), train split: {card['train']['train_frames']} frames of drives "
        f"{', '.join(card['train']['train_drives'])}; model selected by full-resolution val IoU after each epoch.",
        f"- {card['train']['epochs_run']} epochs run, best at epoch {card['train']['best_epoch']}; "
        "loss BCE + Dice with void (id 11) masked out;",
        "  AdamW with cosine decay; flip, scale/crop, rotation and colour jitter augmentation.",
        "- Training curves and validation overlays of the run: `docs/curves.png`, `docs/samples_val.png`.",
        *([f"- {card['note']}"] if card.get("note") else []),
        "",
        "## Accuracy (road IoU = TP / (TP + FP + FN) summed over every pixel of the split, void excluded,",
        "prediction = the published 0/255 mask at 480x360)",
        "",
        "| split | frames | road IoU | mean per-frame IoU | F1 | precision | recall |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| CamVid val (drive 0016E5, this model) | {v['frames']} | **{v['iou']:.4f}** | {v['mean_frame_iou']:.4f} | "
        f"{v['f1']:.4f} | {v['precision']:.4f} | {v['recall']:.4f} |",
    ]
    for h in holdouts:
        lines.append(
            f"| held-out drive {h['drive']} (a model trained without it, same settings, best of "
            f"{h['epochs_run']} epochs) | {h['frames']} | **{h['iou']:.4f}** | {h['mean_frame_iou']:.4f} | "
            f"{h['f1']:.4f} | {h['precision']:.4f} | {h['recall']:.4f} |")
    lines += [
        "",
        "Val shares drive 0016E5 with training (204 train frames), so it overstates accuracy on a new drive;",
        "the held-out-drive rows are the honest estimates for unseen roads. The reference prior that calls the",
        "bottom 38% of every frame road scores 0.69 on val.",
        *(["", card["holdout_note"]] if card.get("holdout_note") else []),
        "",
        f"## CPU latency per 480x360 frame ({card['cpu']}, {card['threads']} threads; median of "
        f"{card['runs']} runs, ms)",
        "",
        "| path | pre | infer | post | total | p95 total | fps |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in card["latency"]:
        lines.append(f"| {r['path']} | {r.get('pre', '')} | {r.get('infer', '')} | {r.get('post', '')} | "
                     f"{r.get('total', '')} | {r.get('p95_total', '')} | {r.get('fps', '')} |")
    lines += [
        "",
        "## Trade-off",
        card["tradeoff"],
        "",
        *tradeoff_table(card.get("arch_tradeoff")),
        "## Reproduce",
        "```",
        *card["commands"],
        "```",
        "",
        "## Limits",
        "- Trained on 367 frames of Cambridge streets (daylight, one dusk drive): expect worse results at night,",
        "  in rain, off-road or with a very different camera height. Fine-tune with `road-seg-train --init-from`",
        "  on your own data.",
        "- The independent CamVid test split was not used for training or selection.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="model_card", description="Write models/MODEL_CARD.md from measurements.")
    p.add_argument("--model", default="models/road_unet_camvid.onnx")
    p.add_argument("--run", required=True, help="run directory of the shipped model (metrics.json)")
    p.add_argument("--holdout-run", action="append", default=[],
                   help="run directory of a held-out-drive model (repeatable: one row each)")
    p.add_argument("--holdout-note", default="", help="a paragraph under the accuracy table (what the rows show)")
    p.add_argument("--data", default=None, help="CamVid folder (default $ROAD_SEG_CAMVID or ../shared/...)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--tradeoff", default="", help="text for the trade-off section (measured alternatives)")
    p.add_argument("--tradeoff-json", help="bench/arch_tradeoff.py output to tabulate")
    p.add_argument("--note", default="", help="a line about how the run went (interruptions, resumes)")
    p.add_argument("--out", default="models/MODEL_CARD.md")
    a = p.parse_args(argv)
    root = Path(a.data) if a.data else default_camvid_root()
    spec = LabelSpec()
    pairs = load_samples(pair_samples(root / "val", root / "valannot", spec), spec)
    seg = RoadSegmenter(a.model, backend="onnxruntime")
    run = json.loads((Path(a.run) / "metrics.json").read_text())
    card = {
        "val": score_split(seg, pairs), "input_hw": run["input_hw"], "threshold": seg.post.threshold,
        "parameters": run["parameters"], "macs": run["macs"], "levels": 4,
        "train": {**run["data"], "epochs_run": run["epochs_run"], "best_epoch": run["best_epoch"]},
        "cpu": platform.processor() or platform.machine(), "threads": os.cpu_count(), "runs": a.runs,
        "latency": latency_table(Path(a.model), pairs[0][0], a.runs), "tradeoff": a.tradeoff, "note": a.note,
        "commands": [
            "road-seg-train --config config/train_camvid.yaml            # -> runs/road_unet_camvid",
            *(line for h in a.holdout_run for line in (
                "road-seg-train --config config/train_camvid.yaml --set train.epochs=16 \\",
                f"    --set data.holdout_drive={_drive_of(h)} --set output.name={Path(h).name}")),
            "road-seg-export runs/road_unet_camvid/model.keras models/road_unet_camvid.onnx \\",
            "    --keras-copy models/road_unet_camvid.keras",
            "python bench/arch_tradeoff.py --json out/bench/arch_tradeoff.json",
            "python -m road_seg_perception.tools.model_card --run runs/road_unet_camvid \\",
            *(f"    --holdout-run {h} \\" for h in a.holdout_run),
            "    --tradeoff-json out/bench/arch_tradeoff.json --tradeoff \"...\" --holdout-note \"...\"",
        ],
    }
    if a.tradeoff_json:
        card["arch_tradeoff"] = json.loads(Path(a.tradeoff_json).read_text())
    card["holdout"] = []
    for h in a.holdout_run:
        hm = json.loads((Path(h) / "metrics.json").read_text())
        card["holdout"].append({**hm["val"], "drive": ",".join(hm["data"]["val_drives"]),
                                "frames": hm["data"]["val_frames"], "epochs_run": hm["epochs_run"]})
    card["holdout_note"] = a.holdout_note
    Path(a.out).write_text(render(card))
    Path(a.out).with_suffix(".json").write_text(json.dumps(card, indent=1))
    print(f"wrote {a.out}: val IoU {card['val']['iou']:.4f}"
          + "".join(f", held-out drive {h['drive']} IoU {h['iou']:.4f}" for h in card["holdout"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
