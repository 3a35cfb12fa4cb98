"""What a finished run writes beside its model: metrics, ONNX export, curves, sample overlays, versions."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from road_seg_perception.core.fileio import atomic_write_text
from road_seg_perception.core.metrics import Confusion, confusion
from road_seg_perception.core.model_io import load_keras_model
from road_seg_perception.core.overlay import compare_panel, stack_rows
from road_seg_perception.core.postprocess import probability_to_mask
from road_seg_perception.core.preprocessing import VOID, preprocess
from road_seg_perception.training.data import Arrays
from road_seg_perception.training.export import export_onnx
from road_seg_perception.training.loop import evaluate, predict_probs


def versions() -> dict:
    import cv2
    import keras

    out = {"python": platform.python_version(), "numpy": np.__version__, "keras": keras.__version__,
           "keras_backend": keras.backend.backend(), "opencv": cv2.__version__}
    for mod in ("tensorflow", "onnxruntime", "onnx", "tf2onnx"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def write_plots(run_dir: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(ep, [h["loss"] for h in history], "o-", ms=3)
    ax[0].set(title="training loss", xlabel="epoch")
    ax[1].plot(ep, [h["val_iou"] for h in history], "o-", ms=3, label="IoU")
    ax[1].plot(ep, [h["val_f1"] for h in history], "s-", ms=3, label="F1")
    ax[1].set(title="validation (full resolution, void ignored)", xlabel="epoch")
    ax[1].legend()
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)


def write_samples(run_dir: Path, model, val: Arrays, hw, threshold: float, n: int) -> None:
    import cv2

    idx = np.linspace(0, len(val) - 1, num=min(n, len(val))).astype(int)
    rows = []
    probs = predict_probs(model, [val.images[i] for i in idx], hw)
    for i, prob in zip(idx, probs, strict=True):
        image, label = val.images[i], val.labels[i]
        pred = probability_to_mask(prob, label.shape[:2], threshold)
        iou = confusion(pred, label).iou
        rows.append((f"{val.names[i]}  IoU {iou:.3f}  (left: prediction, right: ground truth)",
                     compare_panel(image, pred, label, VOID)))
    grid = stack_rows(rows, int(rows[0][1].shape[1] * 0.6))
    cv2.imwrite(str(run_dir / "samples.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def _mixed_samples(val: dict[str, Arrays], n: int) -> Arrays:
    """Up to ``n`` frames spread over all validation splits, for the sample sheet."""
    per = max(1, -(-n // len(val)))
    pairs, names = [], []
    for name, arr in val.items():
        for i in np.linspace(0, len(arr) - 1, num=min(per, len(arr))).astype(int):
            pairs.append((arr.images[i], arr.labels[i]))
            names.append(f"{name}: {arr.names[i]}" if len(val) > 1 else arr.names[i])
    return Arrays(pairs[:max(n, len(val))], names[:max(n, len(val))])


def finish(run_dir: Path, cfg: dict, val: Arrays | dict[str, Arrays], info: dict, state: dict) -> dict:
    """Score the best model on every validation split, write metrics, plots and the ONNX export."""
    from road_seg_perception.training.model import count_flops

    splits = val if isinstance(val, dict) else {"val": val}
    hw = tuple(cfg["model"]["input_hw"])
    thr = float(cfg["train"]["threshold"])
    best = load_keras_model(run_dir / "model.keras")
    scored = {}
    c = Confusion()  # every split's pixels pooled: "val" and the confusion matrix
    for name, arr in splits.items():
        split, per_frame = evaluate(best, arr, hw, thr)
        c += split
        scored[name] = {**{k: round(v, 5) for k, v in split.scores().items()},
                        "mean_frame_iou": round(float(np.mean(per_frame)), 5), "frames": len(arr)}
    metrics = {
        "data": info, "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
        "threshold": thr, "input_hw": list(hw), "parameters": int(best.count_params()),
        "macs": count_flops(best),
        "val": {k: round(v, 5) for k, v in c.scores().items()},  # the validation splits' pixels pooled
        "splits": scored,
        "confusion_matrix": {"rows": "truth [not road, road]", "cols": "prediction [not road, road]",
                             "matrix": [[c.tn, c.fp], [c.fn, c.tp]]},
        "history": state["history"],
    }
    first = next(iter(splits.values()))
    if cfg["output"]["onnx"]:

        diff = export_onnx(best, run_dir / "model.onnx", [preprocess(first.images[0], hw)])
        metrics["onnx_max_abs_diff"] = diff
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    write_plots(run_dir, state["history"])
    write_samples(run_dir, best, _mixed_samples(splits, int(cfg["output"]["samples"])), hw, thr,
                  int(cfg["output"]["samples"]))
    return metrics
