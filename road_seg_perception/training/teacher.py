"""A teacher road model (ONNX) and the cache of its probabilities over training frames.

    python -m road_seg_perception.training.teacher --config config/train_road.yaml \
        [--teacher ../shared/models/teachers/road-segmentation-adas-0001.onnx]
    python -m road_seg_perception.training.teacher --config config/train_road.yaml \
        --road-models models/road_unet_camvid.onnx runs/other/model.onnx --flip-average

The teacher (Intel's ``road-segmentation-adas-0001``) takes BGR 0-255 ``1x3x512x896`` and gives
softmax over background, road, curb and lane mark; road probability = road + lane mark (CamVid's
"road" includes the markings). It is slow (about 130 ms a frame on two cores), so it runs once
over every training frame of the config's datasets (those with ``distill`` > 0) and the road
probabilities, resized to the model input, are cached where training reads them
(``<train.cache_dir>/teacher/<dataset>-<H>x<W>.npz``).

``--road-models`` makes the teacher an ensemble of this package's own road models instead (any file
``RoadSegmenter`` opens): the mean of their probabilities, each optionally averaged with its mirror
image's (``--flip-average``), so one model can learn what several models and flips give together.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from road_seg_perception.core.preprocessing import resize_image
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.training.config import dataset_configs, load_config
from road_seg_perception.training.data import dataset_samples, sample_name, save_npz, teacher_file
from road_seg_perception.training.datasets import DatasetError, read_image

DEFAULT_TEACHER = "../shared/models/teachers/road-segmentation-adas-0001.onnx"
TEACHER_HW = (512, 896)
ROAD_CHANNELS = (1, 3)  # road, lane mark


class Teacher:
    """ONNX Runtime session of the teacher; road probabilities and masks for RGB uint8 frames."""

    def __init__(self, path: str | Path = DEFAULT_TEACHER, threads: int = 0):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher model {path} does not exist")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def road_probability(self, image_rgb: np.ndarray) -> np.ndarray:
        """Road probability ``(512, 896)`` float32 for one RGB uint8 frame of any size."""
        h, w = TEACHER_HW
        bgr = cv2.resize(image_rgb[..., ::-1], (w, h), interpolation=cv2.INTER_LINEAR)
        x = np.ascontiguousarray(bgr.transpose(2, 0, 1)[None], dtype=np.float32)
        out = self.session.run(None, {self.input_name: x})[0][0]
        return out[list(ROAD_CHANNELS)].sum(axis=0).astype(np.float32)

    def mask(self, image_rgb: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """The 0/255 road mask at the frame's own size."""
        prob = cv2.resize(self.road_probability(image_rgb), (image_rgb.shape[1], image_rgb.shape[0]),
                          interpolation=cv2.INTER_LINEAR)
        return np.where(prob > threshold, 255, 0).astype(np.uint8)


class EnsembleTeacher:
    """Road probability of several road models of this package: their mean, each optionally flip-averaged."""

    def __init__(self, paths: list[str | Path], flip_average: bool = False, threads: int = 0):
        if not paths:
            raise ValueError("--road-models needs at least one model file")
        self.segmenters = [RoadSegmenter(p, threads=threads, flip_average=flip_average, warmup=1) for p in paths]

    def road_probability(self, image_rgb: np.ndarray) -> np.ndarray:
        """Mean road probability at the first model's input size, float32, for one RGB uint8 frame."""
        hw = self.segmenters[0].input_hw
        probs = [resize_image(seg.probability(image_rgb), hw) for seg in self.segmenters]
        return np.mean(probs, axis=0, dtype=np.float32)


def cache_probabilities(teacher: Teacher | EnsembleTeacher, images: list[Path], names: list[str], hw: tuple[int, int],
                        out: Path, desc: str = "teacher") -> int:
    """Run the teacher over ``images`` and write their road probabilities at ``hw`` (float16) to ``out``."""
    probs = np.empty((len(images), *hw), np.float16)
    for i, p in enumerate(tqdm(images, desc=desc, unit="img")):
        probs[i] = resize_image(teacher.road_probability(read_image(p)), hw)
    save_npz(out, names=np.asarray(names), probs=probs)
    return len(images)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="road-seg-teacher", description="Cache a teacher's road probabilities "
                                "over the training frames of a config (for train.distill_weight > 0).")
    p.add_argument("--config", required=True, help="training config (its datasets, model.input_hw, cache_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--teacher", default=DEFAULT_TEACHER, help="teacher ONNX model")
    p.add_argument("--road-models", nargs="+", metavar="MODEL",
                   help="teach with the mean of these road models of this package instead of --teacher")
    p.add_argument("--flip-average", action="store_true",
                   help="with --road-models: average each model's probability with its mirror image's")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config, a.set)
        hw = tuple(cfg["model"]["input_hw"])
        cache_dir = Path(cfg["train"]["cache_dir"] or ".")
        if a.flip_average and not a.road_models:
            raise ValueError("--flip-average applies to --road-models only")
        teacher = EnsembleTeacher(a.road_models, a.flip_average, a.threads) if a.road_models else Teacher(
            a.teacher, a.threads)
        for ds in dataset_configs(cfg):
            if not ds.train or ds.distill <= 0:
                continue
            samples, _ = dataset_samples(ds)
            out = teacher_file(cache_dir, ds.name, hw)
            n = cache_probabilities(teacher, [s.image for s in samples], [sample_name(s) for s in samples], hw,
                                    out, desc=f"teacher on {ds.name}")
            print(f"wrote {out}: {n} frames", flush=True)
    except (DatasetError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"road-seg-teacher: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
