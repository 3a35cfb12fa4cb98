"""Small on-disk datasets, image files that lie about their size and a model card dict that several test
files build their cases from."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import yaml

S = {"iou": 0.9, "mean_frame_iou": 0.89, "f1": 0.95, "precision": 0.96, "recall": 0.94, "frames": 10}


def sample_card() -> dict:
    """A small model card with every section render() draws (splits, cross rows, a candidate)."""
    split = {"model": S, "prior": {**S, "iou": 0.6}, "teacher": {**S, "iou": 0.97}}
    return {"splits": {"camvid_val": split, "camvid_0001TP": {**split, "model": {**S, "iou": 0.91}},
                       "idd_val": {"model": S, "prior": {**S, "iou": 0.7}}},
            "input_hw": [192, 256], "threshold": 0.5, "parameters": 1000, "macs": 2e6, "architecture": "arch",
            "recipe": "recipe", "datasets": {"camvid": {"format": "camvid", "positive_ids": [3], "train_frames": 5,
                                                        "train_drives": 2, "weight": 3.0,
                                                        "splits": {"camvid_0001TP": {"frames": 62, "drives": ["x"]}}}},
            "epochs_run": 3, "best_epoch": 2, "cpu": "x86_64", "threads": 2, "runs": 5,
            "latency": [{"path": "onnxruntime", "total": 7.0}], "tradeoff": "t", "targets": "Targets: met.",
            "note": "", "cross": [{"run": "r_no_camvid", "trained_on": ["idd"], "split": "camvid_val", **S,
                                   "iou": 0.88}],
            "candidates": [{"name": "shipped", "total_ms": 8.0, "fps": 125.0,
                            "splits": {"camvid_val": 0.9, "camvid_0001TP": 0.91, "idd_val": 0.9}}],
            "commands": ["cmd"]}


def write_idd(root: Path, seqs: dict[str, int], seed: int = 0) -> None:
    """IDD-Lite layout: images/<seq>/<id>_image.jpg, labels/<seq>/<id>_label.png (0 drivable in the bottom half)."""
    rng = np.random.default_rng(seed)
    for seq, n in seqs.items():
        (root / "images" / seq).mkdir(parents=True)
        (root / "labels" / seq).mkdir(parents=True)
        for i in range(n):
            ids = np.full((40, 56), 6, np.uint8)  # sky
            ids[20:] = 0  # drivable
            ids[20:, :8] = 1  # sidewalk
            ids[0, 0] = 255  # void
            img = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
            assert cv2.imwrite(str(root / "images" / seq / f"{i:06d}_image.jpg"), img)
            assert cv2.imwrite(str(root / "labels" / seq / f"{i:06d}_label.png"), ids)


def write_camvid(root: Path, names: list[str]) -> None:
    for sub in ("train", "trainannot"):
        (root / sub).mkdir(parents=True)
    for n in names:
        ids = np.full((36, 48), 1, np.uint8)
        ids[18:] = 3
        ids[18, :4] = 11
        assert cv2.imwrite(str(root / "train" / f"{n}.png"), np.full((36, 48, 3), 90, np.uint8))
        assert cv2.imwrite(str(root / "trainannot" / f"{n}.png"), ids)


def two_datasets_config(root: Path) -> dict:
    """A config mapping of two small datasets written under ``root``: CamVid (drive 0001TP held out,
    weight 2) and IDD-Lite (sequence folders 0, 1, 2, 10; every 3rd held out), input 32x64."""
    write_idd(root / "idd", {"0": 2, "1": 3, "2": 2, "10": 1})
    write_camvid(root / "cv", [f"0001TP_{i:06d}" for i in range(2)] + [f"0006R0_{i:06d}" for i in range(3)])
    return {"datasets": [
        {"name": "camvid", "format": "camvid", "root": str(root / "cv"), "holdout_drives": ["0001TP"],
         "holdout_name": "camvid_0001TP", "weight": 2.0},
        {"name": "idd", "format": "idd", "root": str(root / "idd"), "train_images": "images",
         "train_masks": "labels", "positive_ids": [0], "void_ids": [255], "holdout_every": 3,
         "holdout_name": "idd_val"},
    ], "model": {"input_hw": [32, 64]}, "train": {"cache_dir": str(root / "cache")}}


def _write_idd_bands(root: Path, seqs: dict[str, int]) -> None:
    """IDD-Lite layout with a textured bottom half that is drivable (level-1 id 0)."""
    rng = np.random.default_rng(1)
    for seq, n in seqs.items():
        (root / "images" / seq).mkdir(parents=True)
        (root / "labels" / seq).mkdir(parents=True)
        for i in range(n):
            ids = np.full((40, 56), 6, np.uint8)
            ids[18 + i:] = 0
            ids[0, :3] = 255  # void
            img = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
            img[18 + i:] //= 3
            assert cv2.imwrite(str(root / "images" / seq / f"{i:06d}_image.png"), img)
            assert cv2.imwrite(str(root / "labels" / seq / f"{i:06d}_label.png"), ids)


def threshold_config(tmp_path: Path) -> Path:
    """A config of one IDD-Lite-like dataset of 8 frames in 3 sequence folders (folder 0 validates)."""
    root = tmp_path / "idd"
    _write_idd_bands(root, {"0": 2, "1": 3, "2": 3})
    cfg = {"datasets": [{"name": "idd", "format": "idd", "root": str(root), "train_images": "images",
                         "train_masks": "labels", "positive_ids": [0], "void_ids": [255],
                         "holdout_every": 3, "holdout_name": "idd_val"}]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _small_image(ext: str) -> bytearray:
    """An 8x8 random image encoded as ``ext``."""
    return bytearray(cv2.imencode(ext, np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))[1])


def png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header (CRC mended) claims ``width`` x ``height`` pixels."""
    png = _small_image(".png")
    png[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    return bytes(png)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small baseline JPEG whose frame header claims ``width`` x ``height`` pixels."""
    jpg = _small_image(".jpg")
    i = jpg.index(b"\xff\xc0")
    jpg[i + 5: i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(jpg)


def bmp_claiming(width: int, height: int) -> bytes:
    """A small BMP whose header claims ``width`` x ``height`` pixels."""
    bmp = _small_image(".bmp")
    bmp[18:26] = struct.pack("<ii", width, height)
    return bytes(bmp)


def write_train_config(root: Path) -> Path:
    """``root/train.yaml``: a single-dataset CamVid config of the tests' own (road id 3, void 11, no held-out
    drive), so training tests do not depend on the shipped configs. ``train_args`` points a run at it."""
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump({"data": {"format": "camvid", "positive_ids": [3], "void_ids": [11],
                                             "holdout_drive": None}}))
    return path


def train_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """``road-seg-train`` arguments for the dataset under ``root`` (config from ``write_train_config``)."""
    return ["--config", str(root / "train.yaml"), "--run-dir", str(run_dir), "--set", f"data.root={root}", *extra]
