"""``RoadSegmenter``: the ROS-free core shared by the node, the evaluator and ``road-seg-predict``.

    seg = RoadSegmenter("models/road_unet_camvid_int8.onnx")
    result = seg.segment(rgb)          # result.mask: uint8 0/255 at the input's size

Pre-processing is :func:`road_seg_perception.preprocessing.preprocess`, the same function the
training pipeline uses.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from road_seg_perception.core.backends import Backend, cpu_int8_pays, open_backend
from road_seg_perception.core.model_io import ModelFileError
from road_seg_perception.core.postprocess import probability_to_mask
from road_seg_perception.core.preprocessing import preprocess, upsample_probability

#: Where the shipped default model lives inside the source tree.
PACKAGE_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
#: The INT8 copy (``road-seg-quantize``): the default on a CPU where INT8 pays (:func:`cpu_int8_pays`).
DEFAULT_MODEL_NAME = "road_unet_camvid_int8.onnx"
#: The float export (same weights as ``road_unet_camvid.keras``): the default on a GPU, for Keras, and on
#: x86-64 CPUs without VNNI.
FLOAT_MODEL_NAME = "road_unet_camvid.onnx"


def installed_share_dir(package: str = "road_seg_perception") -> Path | None:
    """``<prefix>/share/<package>`` of the first ``$AMENT_PREFIX_PATH`` prefix whose ament index lists the package.

    This is what ``ament_index_python.get_package_share_directory`` finds, read from the index files.
    """
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        if (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / package).is_file():
            return Path(prefix) / "share" / package
    return None


def default_model_path(float_model: bool = False) -> Path:
    """The shipped model: the installed ``share/road_seg_perception/models`` copy, else the source tree's.

    The INT8 copy, or the float export with ``float_model`` (INT8 pays on a CPU, not on a GPU) or on a
    CPU where INT8 does not pay (:func:`~road_seg_perception.core.backends.cpu_int8_pays`).
    """
    name = FLOAT_MODEL_NAME if float_model or not cpu_int8_pays() else DEFAULT_MODEL_NAME
    share = installed_share_dir()
    if share is not None and (share / "models" / name).is_file():
        return share / "models" / name
    return PACKAGE_MODELS_DIR / name


@dataclass
class SegmentationResult:
    """One frame's output: ``mask`` uint8 0/255 at input size; ``probability`` float32 if asked."""

    mask: np.ndarray
    probability: np.ndarray | None = None
    low_res_probability: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class PostConfig:
    """Post-processing settings, changeable at run time."""

    threshold: float = 0.5
    min_blob_area: int = 0
    fill_holes_area: int = 0

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.min_blob_area < 0 or self.fill_holes_area < 0:
            raise ValueError("min_blob_area and fill_holes_area must be >= 0")


def probe_frame(input_hw: tuple[int, int]) -> np.ndarray:
    """A fixed textured RGB frame (seeded noise over a vertical gradient) for the load-time output check."""
    h, w = input_hw
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    return np.clip(ramp * 0.6 + rng.integers(0, 100, (h, w, 3)), 0, 255).astype(np.uint8)


def check_outputs(backend: Backend, label: str) -> None:
    """Run a probe frame and a black frame; raise :class:`ModelFileError` unless the outputs are finite
    probabilities in [0, 1] of shape ``(N, H, W)``."""
    h, w = backend.input_hw
    frames = (preprocess(probe_frame((h, w)), (h, w)), np.zeros((h, w, 3), np.float32))
    try:  # one frame per call, the batch size frames come in (a compiled Keras call traces once)
        out = np.concatenate([np.asarray(backend.infer(f[None])) for f in frames])
    except Exception as e:  # a runtime error on the probe means the model cannot serve frames
        raise ModelFileError(f"model file {label} fails on a probe frame: {type(e).__name__}: {e}") from e
    if out.shape != (2, h, w):
        raise ModelFileError(f"model file {label} gives outputs of shape {out.shape[1:]} for input {h}x{w}; "
                             f"expected ({h}, {w}) road probabilities")
    bad = ~np.isfinite(out)
    if bad.any():
        raise ModelFileError(f"model file {label} gives NaN or infinite outputs on a probe frame "
                             f"({int(bad.sum())} of {out.size} values); refused")
    lo, hi = float(out.min()), float(out.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ModelFileError(f"model file {label} gives outputs in [{lo:.3g}, {hi:.3g}] on a probe frame; "
                             "expected road probabilities in [0, 1] (a sigmoid output)")


class RoadSegmenter:
    """Pre-process, infer and post-process camera frames on numpy arrays.

    At load the model's outputs on a probe frame are checked (:func:`check_outputs`): a model that
    gives NaN, infinite or out-of-range values is refused with :class:`ModelFileError`.

    ``flip_average`` (changeable at any time): the probability is the mean of the model's on the frame
    and, mirrored back, on its left-right mirror image (one batch of two), at twice the inference work.
    """

    def __init__(self, model_path: str | Path | None = None, backend: str = "auto", device: str = "auto",
                 post: PostConfig | None = None, allow_unsafe: bool = False, threads: int = 0,
                 spinning: str = "off", warmup: int = 2, flip_average: bool = False):
        self.model_path = Path(model_path) if model_path else default_model_path()
        self.post = post or PostConfig()
        self.flip_average = bool(flip_average)
        self.post.validate()
        self.backend: Backend = open_backend(self.model_path, backend, device, allow_unsafe, threads, spinning)
        self.input_hw = self.backend.input_hw
        label = str(self.backend.path) + ("" if self.backend.path == self.model_path
                                          else f" (run for {self.model_path})")
        try:
            check_outputs(self.backend, label)
            for _ in range(max(0, warmup - 1)):  # the probe was the first warm-up run
                self.backend.infer(np.zeros((1, *self.input_hw, 3), np.float32))
        except BaseException:
            self.close()
            raise

    @property
    def info(self) -> dict[str, str]:
        """Backend, device, the file loaded (``model``), the file named and input size, for logs and diagnostics."""
        return {"backend": self.backend.name, "device": self.backend.device,
                "model": str(self.backend.path), "requested_model": str(self.model_path),
                "input_size": f"{self.input_hw[1]}x{self.input_hw[0]}"}

    def close(self) -> None:
        """Release the model (a Keras model also clears Keras' global state). The segmenter is unusable after."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """The model's probability ``(h, w)`` for one pre-processed frame ``(H, W, 3)``."""
        if not self.flip_average:
            return self.backend.infer(x[None])[0]
        both = self.backend.infer(np.stack([x, x[:, ::-1]]))
        return 0.5 * (both[0] + both[1][:, ::-1])

    def probability(self, image_rgb: np.ndarray) -> np.ndarray:
        """Low-resolution road probability ``(h, w)`` float32 for one RGB uint8 image."""
        return self._infer(preprocess(image_rgb, self.input_hw))

    def segment(self, image_rgb: np.ndarray, with_probability: bool = False,
                smooth: Callable[[np.ndarray], np.ndarray] | None = None) -> SegmentationResult:
        """Segment one RGB uint8 ``(H, W, 3)`` image; the mask has the same ``H, W``.

        ``smooth`` (e.g. :class:`~road_seg_perception.core.temporal.ProbabilityEMA`'s ``update``) maps the
        model's low-resolution probability to the one the mask is made from; its time counts as post.
        """
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
        t0 = time.perf_counter()
        x = preprocess(image_rgb, self.input_hw)
        t1 = time.perf_counter()
        prob = self._infer(x)
        t2 = time.perf_counter()
        if smooth is not None:
            prob = smooth(prob)
        out_hw = image_rgb.shape[:2]
        p = self.post
        full = upsample_probability(prob, out_hw)
        mask = probability_to_mask(full, out_hw, p.threshold, p.min_blob_area, p.fill_holes_area)
        t3 = time.perf_counter()
        timings = {"pre": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3}
        return SegmentationResult(mask, full if with_probability else None, prob, timings)
