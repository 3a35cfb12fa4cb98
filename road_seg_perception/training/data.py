"""Training data: the datasets of a config read (and cached) into memory, and the augmented batch sequence.

Training frames are decoded once, resized to the model input and cached to
``train.cache_dir`` (one ``.npz`` per dataset, keyed by the files, label ids and size), so later
runs and epochs skip JPEG/PNG decoding. Validation splits stay at full resolution: they are
scored on the published full-size mask.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from road_seg_perception.core.fileio import write_atomically
from road_seg_perception.core.preprocessing import VOID, preprocess, resize_image, resize_label
from road_seg_perception.training.augment import AugmentConfig, augment_sample
from road_seg_perception.training.config import DatasetConfig, dataset_configs
from road_seg_perception.training.datasets import (
    DatasetError,
    LabelSpec,
    Sample,
    every_nth_drive,
    label_from_ids,
    load_samples,
    pair_samples,
    read_class_ids,
    read_image,
    read_pair,
    size_mismatch,
    split_by_drive,
)


class Arrays:
    """Images and labels held in memory (``soft``: optional teacher road probabilities, -1 = none;
    ``classes``: optional auxiliary-head class ids, :data:`VOID` = none)."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], names: list[str],
                 soft: list[np.ndarray] | None = None, classes: list[np.ndarray] | None = None):
        self.images = [p[0] for p in pairs]
        self.labels = [p[1] for p in pairs]
        self.names = names
        self.soft = soft
        self.classes = classes

    def __len__(self) -> int:
        return len(self.images)


class TrainData(Arrays):
    """Training frames of several datasets; ``groups`` gives each frame's dataset, ``weights`` their draw rates."""

    def __init__(self, parts: list[tuple[DatasetConfig, Arrays]]):
        super().__init__([], [])
        self.groups: list[int] = []
        self.weights: list[float] = []
        self.dataset_names: list[str] = []
        soft: list[np.ndarray] = []
        classes: list[np.ndarray | None] = []
        for g, (ds, arr) in enumerate(parts):
            self.images += arr.images
            self.labels += arr.labels
            self.names += arr.names
            self.groups += [g] * len(arr)
            self.weights.append(ds.weight)
            self.dataset_names.append(ds.name)
            if arr.soft is not None:
                soft += arr.soft
            else:
                soft += [None] * len(arr)
            classes += arr.classes if arr.classes is not None else [None] * len(arr)
        self.soft = soft if any(s is not None for s in soft) else None
        self.classes = classes if any(c is not None for c in classes) else None

    def epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        """Frame indices for one epoch: each dataset drawn ``round(frames * weight)`` times, shuffled."""
        groups = np.asarray(self.groups)
        picks = []
        for g, w in enumerate(self.weights):
            idx = np.flatnonzero(groups == g)
            count = int(round(len(idx) * w))
            if count <= 0 or len(idx) == 0:
                continue
            reps = -(-count // len(idx))
            picks.append(np.concatenate([rng.permutation(idx) for _ in range(reps)])[:count])
        order = np.concatenate(picks) if picks else np.arange(len(self))
        return rng.permutation(order)


def label_spec(ds: DatasetConfig) -> LabelSpec:
    return LabelSpec(format="camvid" if ds.format == "idd" else ds.format, positive_ids=list(ds.positive_ids),
                     void_ids=list(ds.void_ids), mask_suffix=ds.mask_suffix)


def dataset_samples(ds: DatasetConfig) -> tuple[list[Sample], dict[str, list[Sample]]]:
    """(training samples, {split name: validation samples}) of one dataset, split by drive."""
    root = Path(ds.root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset {ds.name}: root {root} does not exist")
    spec = LabelSpec(format=ds.format, positive_ids=list(ds.positive_ids), void_ids=list(ds.void_ids),
                     mask_suffix=ds.mask_suffix)
    train = pair_samples(root / ds.train_images, root / ds.train_masks, spec)
    splits: dict[str, list[Sample]] = {}
    held = list(ds.holdout_drives) + [d for d in every_nth_drive(train, ds.holdout_every)
                                      if d not in ds.holdout_drives]
    if held:
        train, splits[ds.holdout_split] = split_by_drive(train, held, f"dataset {ds.name} holdout_drives")
    if ds.val_images:
        splits[f"{ds.name}_val" if ds.holdout_name != "val" else "val"] = pair_samples(
            root / ds.val_images, root / ds.val_masks, spec)
    if ds.limit > 0:
        train = train[: ds.limit]
        splits = {k: v[: max(2, ds.limit // 4)] for k, v in splits.items()}
    return train, splits


#: How ``resize_image`` resizes frames: part of the cache key, so a cache from another resize is not reused.
RESIZE = "bilinear"


def evenly_spaced(samples: list[Sample], count: int) -> list[Sample]:
    """Up to ``count`` of ``samples``, spread evenly from the first to the last (drives stay in their order)."""
    if not samples or count < 1:
        return []
    idx = np.linspace(0, len(samples) - 1, min(count, len(samples))).round().astype(int)
    return [samples[j] for j in dict.fromkeys(idx.tolist())]


def _cache_key(ds: DatasetConfig, samples: list[Sample], hw: tuple[int, int]) -> str:
    h = hashlib.sha1()
    key = [ds.format, list(ds.positive_ids), list(ds.void_ids), list(hw), RESIZE]
    if ds.aux_classes:  # an older cache (no class ids) keeps its key
        key.append([list(ids) for ids in ds.aux_classes])
    h.update(json.dumps(key).encode())
    for s in samples:
        st = s.mask.stat()
        h.update(f"{s.image}|{s.image.stat().st_size}|{s.mask}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` atomically (a temporary file of its own, then a rename): processes that write the
    same cache at once (the workers of one run) each leave a complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    write_atomically(path, write, suffix=".tmp.npz")


def sample_name(s: Sample) -> str:
    """A frame's name in caches and reports: ``<drive>/<image stem>``."""
    return f"{s.drive}/{s.image.stem}"


def aux_class_lut(ds: DatasetConfig) -> np.ndarray:
    """A 256-entry table from the dataset's class ids to auxiliary-head classes (:data:`VOID`: ignored)."""
    lut = np.full(256, VOID, np.uint8)
    for k, ids in enumerate(ds.aux_classes):
        lut[list(ids)] = k
    return lut


def read_with_classes(s: Sample, spec: LabelSpec, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sample's image, label and auxiliary-head class ids (ids above 255 ignored), its mask decoded once."""
    image, ids = read_image(s.image), read_class_ids(s.mask)
    if problem := size_mismatch(s, image, ids):
        raise DatasetError(problem)
    return image, label_from_ids(ids, spec), lut[np.where(ids > 255, 255, ids).astype(np.intp)]


def load_resized(ds: DatasetConfig, samples: list[Sample], hw: tuple[int, int], cache_dir: Path | None) -> Arrays:
    """Training frames decoded and resized to ``hw`` (bilinear / nearest), through an on-disk cache.

    With ``ds.aux_classes`` the frames' auxiliary class ids are read and cached as well.
    """
    names = [sample_name(s) for s in samples]
    path = cache_dir / f"{ds.name}-{hw[0]}x{hw[1]}-{_cache_key(ds, samples, hw)}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            images, labels = z["images"], z["labels"]
            classes = list(z["classes"]) if "classes" in z.files else None
        print(f"dataset {ds.name}: {len(samples)} training frames from cache {path}", flush=True)
        return Arrays(list(zip(images, labels, strict=True)), names, classes=classes)
    from tqdm import tqdm

    spec = label_spec(ds)
    lut = aux_class_lut(ds) if ds.aux_classes else None
    images = np.empty((len(samples), *hw, 3), np.uint8)
    labels = np.empty((len(samples), *hw), np.uint8)
    classes = np.empty((len(samples), *hw), np.uint8) if lut is not None else None
    problems = []
    for i, s in enumerate(tqdm(samples, desc=f"caching {ds.name}", unit="img")):
        try:
            if lut is None:
                im, lab = read_pair(s, spec)
            else:
                im, lab, cls = read_with_classes(s, spec, lut)
                classes[i] = resize_label(cls, hw)
        except DatasetError as e:
            problems.append(str(e))
            continue
        images[i], labels[i] = resize_image(im, hw), resize_label(lab, hw)
    if problems:
        raise DatasetError(f"{len(problems)} dataset problem(s) in {ds.name}:\n  " + "\n  ".join(problems[:10]))
    if path is not None:
        save_npz(path, images=images, labels=labels, **({"classes": classes} if classes is not None else {}))
    return Arrays(list(zip(images, labels, strict=True)), names, classes=None if classes is None else list(classes))


def teacher_file(cache_dir: Path, ds_name: str, hw: tuple[int, int]) -> Path:
    """Where ``road-seg-teacher`` caches a dataset's teacher probabilities at the model input size."""
    return cache_dir / "teacher" / f"{ds_name}-{hw[0]}x{hw[1]}.npz"


def attach_teacher(arr: Arrays, path: Path) -> int:
    """Give ``arr`` the cached teacher probabilities by frame name; frames without one get -1. Return hits."""
    if not path.is_file():
        raise DatasetError(f"train.distill_weight > 0 but there is no teacher cache {path} "
                           "(run python -m road_seg_perception.training.teacher with the same config first)")
    with np.load(path) as z:
        by_name = dict(zip(z["names"].tolist(), z["probs"], strict=True))
    hw = arr.labels[0].shape[:2] if len(arr) else (0, 0)
    none = np.full(hw, -1.0, np.float16)
    arr.soft = [by_name.get(n, none) for n in arr.names]
    return sum(n in by_name for n in arr.names)


def read_data(cfg: dict) -> tuple[TrainData, dict[str, Arrays], dict]:
    """Read every dataset of the config: cached resized training frames and full-size validation splits."""
    hw = tuple(cfg["model"]["input_hw"])
    t = cfg["train"]
    cache_dir = Path(t["cache_dir"]) if t["cache_dir"] else None
    distill = float(t["distill_weight"]) > 0
    parts: list[tuple[DatasetConfig, Arrays]] = []
    val: dict[str, Arrays] = {}
    info: dict = {"datasets": {}}
    for ds in dataset_configs(cfg):
        train_s, splits = dataset_samples(ds)
        entry = {"root": ds.root, "format": ds.format, "positive_ids": list(ds.positive_ids),
                 "weight": ds.weight if ds.train else 0.0,
                 "train_frames": len(train_s) if ds.train else 0,
                 "train_drives": len({s.drive for s in train_s}) if ds.train else 0,
                 "splits": {k: {"frames": len(v), "drives": sorted({s.drive for s in v}, key=lambda d: (len(d), d))}
                            for k, v in splits.items()}}
        info["datasets"][ds.name] = entry
        teacher_only = ds.format == "images" or not ds.ground_truth
        if teacher_only and not distill:
            why = "unlabelled (format: images)" if ds.format == "images" else "set to ground_truth: false"
            raise DatasetError(f"dataset {ds.name} is {why}: it trains only through "
                               "the teacher term; set train.distill_weight > 0 or remove it")
        if ds.train:
            arr = load_resized(ds, train_s, hw, cache_dir)
            if distill and ds.distill > 0:
                entry["teacher_frames"] = attach_teacher(arr, teacher_file(cache_dir or Path("."), ds.name, hw))
                if teacher_only and entry["teacher_frames"] < len(arr):
                    raise DatasetError(f"dataset {ds.name}: {len(arr) - entry['teacher_frames']} of its {len(arr)} "
                                       "teacher-only frames have no teacher probabilities (rerun "
                                       "python -m road_seg_perception.training.teacher with this config)")
            if not ds.ground_truth:  # its labels score its splits but do not train
                arr.labels = [np.full_like(lab, VOID) for lab in arr.labels]
                entry["ground_truth"] = False
            parts.append((ds, arr))
        spec = label_spec(ds)
        for name, samples in splits.items():
            if name in val:
                raise DatasetError(f"two validation splits are named {name!r}")
            val[name] = Arrays(load_samples(samples, spec, progress=True), [sample_name(s) for s in samples])
    if not val:
        raise DatasetError("no validation split: give a dataset val_images/val_masks or holdout_drives")
    info["val_splits"] = list(val)
    first = next(iter(val))
    drive_sort = {"key": lambda d: (len(d), d)}
    info.update(train_frames=sum(len(a) for _, a in parts),
                train_drives=sorted({n.split("/")[0] for _, a in parts for n in a.names}, **drive_sort),
                val=first, val_frames=len(val[first]),
                val_drives=sorted({n.split("/")[0] for n in val[first].names}, **drive_sort))
    return TrainData(parts), val, info


def read_split(cfg: dict) -> tuple[TrainData, Arrays, dict]:
    """The first validation split only (single-dataset configs)."""
    train, val, info = read_data(cfg)
    return train, next(iter(val.values())), info


def data_stream(init_from: str | Path | None) -> int:
    """The augmentation stream of a run started from the model file ``init_from``: 0 without one.

    Frames are drawn and augmented from ``(seed, epoch, item)``, so a run started from the checkpoint of
    another with the same seed would replay that run's epochs frame for frame and draw for draw. A non-zero
    stream (32 bits of the file's SHA-256) joins the key, so a stage sees new draws, while two runs from the
    same file (an A/B) still see the same ones. A path that is not a file gives 0 (its load names it).
    """
    if not init_from or not Path(init_from).is_file():
        return 0
    digest = hashlib.sha256()
    with open(init_from, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return int(digest.hexdigest()[:8], 16) or 1


def make_sequence(data: TrainData, cfg: dict, aug: AugmentConfig, seed: int, stream: int = 0):
    """A ``keras.utils.PyDataset`` of augmented, pre-processed batches (seeded per epoch and item, and by
    ``stream`` when it is not 0: :func:`data_stream`).

    Targets are ``(N, H, W, 1)`` labels, or ``(N, H, W, 2)`` with the teacher's road probability
    (-1 = none) as the second channel when ``train.distill_weight`` > 0. With ``train.aux_weight`` > 0
    they are ``(N, H, W, 3)``: label, teacher probability (-1 = none) and auxiliary class id
    (:data:`VOID` = none).
    """
    import keras

    hw = tuple(cfg["model"]["input_hw"])
    bs = int(cfg["train"]["batch_size"])
    steps_cap = int(cfg["train"]["steps_per_epoch"])
    with_aux = float(cfg["train"]["aux_weight"]) > 0
    with_soft = float(cfg["train"]["distill_weight"]) > 0 or with_aux
    key = [seed, stream] if stream else [seed]

    class RoadSequence(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=int(cfg["train"]["workers"]), use_multiprocessing=False)
            self.epoch = 0
            self._order = self._shuffle()

        def _shuffle(self) -> np.ndarray:
            return data.epoch_order(np.random.default_rng([*key, self.epoch]))

        def __len__(self) -> int:
            n = max(1, len(self._order) // bs)
            return min(n, steps_cap) if steps_cap > 0 else n

        def __getitem__(self, idx: int):
            xs, ys = [], []
            for k, j in enumerate(self._order[idx * bs:(idx + 1) * bs]):
                rng = np.random.default_rng([*key, self.epoch, idx * bs + k])
                shape = data.labels[j].shape[:2]
                soft = data.soft[j] if with_soft and data.soft is not None else None
                if with_soft and soft is None:
                    soft = np.full(shape, -1.0, np.float32)
                classes = data.classes[j] if with_aux and data.classes is not None else None
                if with_aux and classes is None:
                    classes = np.full(shape, VOID, np.uint8)
                image, label, soft, classes = augment_sample(data.images[j], data.labels[j], soft, classes, rng, aug)
                xs.append(preprocess(image, hw))
                channels = [resize_label(label, hw).astype(np.float32)]
                if with_soft:
                    channels.append(resize_label(np.asarray(soft, np.float32), hw))
                if with_aux:
                    channels.append(resize_label(classes, hw).astype(np.float32))
                ys.append(np.stack(channels, axis=-1))
            return np.stack(xs), np.stack(ys)

        def on_epoch_end(self):
            self.epoch += 1
            self._order = self._shuffle()

    return RoadSequence()
