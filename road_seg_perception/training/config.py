"""Training configuration: defaults, YAML files and ``--set key=value`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "data": {
        "format": "camvid",          # camvid | kitti | binary
        "root": None,                # null: $ROAD_SEG_CAMVID or ../shared/datasets/camvid
        "train_images": "train",
        "train_masks": "trainannot",
        "val_images": "val",
        "val_masks": "valannot",
        "positive_ids": [3],
        "void_ids": [11],
        "mask_suffix": "_mask",
        "holdout_drive": None,       # e.g. 0001TP: validate on that train drive, train on the rest
        "limit": 0,                  # >0: use only the first N training images (smoke tests)
    },
    "model": {"input_hw": [192, 256], "base_filters": 24, "levels": 4, "separable": True, "dropout": 0.1,
              "stem_stride": 2, "input_norm": "none"},
    "augment": {"enabled": True, "hflip": 0.5, "scale": [0.8, 1.3], "rotate_deg": 6.0,
                "brightness": 0.25, "contrast": 0.25, "saturation": 0.3, "hue_deg": 8.0,
                "gamma": [1.0, 1.0], "noise": 0.0},
    "train": {
        "epochs": 40, "batch_size": 8, "lr": 0.003, "min_lr_fraction": 0.02, "weight_decay": 1e-4,
        "loss": "bce+dice", "early_stopping_patience": 12, "seed": 42, "finetune_lr_scale": 0.1,
        "threshold": 0.5, "workers": 2, "steps_per_epoch": 0,
    },
    "output": {"runs_dir": "runs", "name": "road_unet", "onnx": True, "samples": 6},
}


def deep_update(base: dict, update: dict, path: str = "") -> dict:
    """Merge ``update`` into a copy of ``base``; unknown keys raise ``KeyError`` naming them."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        key = f"{path}{k}"
        if k not in out:
            raise KeyError(f"unknown config key {key!r}")
        if isinstance(out[k], dict):
            if not isinstance(v, dict):
                raise KeyError(f"config key {key!r} must be a mapping")
            out[k] = deep_update(out[k], v, key + ".")
        else:
            out[k] = v
    return out


def parse_set(item: str) -> dict:
    """``"train.epochs=3"`` -> ``{"train": {"epochs": 3}}`` (value parsed as YAML)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set expects key=value, got {item!r}")
    node: dict = {}
    cur = node
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = yaml.safe_load(value)
    return node


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    """Defaults, then the YAML file, then each ``--set`` override."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {p} must hold a mapping")
        cfg = deep_update(cfg, loaded)
    for item in overrides:
        cfg = deep_update(cfg, parse_set(item))
    return cfg
