"""Inference backends behind one small interface: ONNX Runtime and Keras (TF, JAX or torch).

A backend takes an ``(N, H, W, 3)`` float32 batch and returns ``(N, H, W)`` float32 road
probabilities. ``open_backend`` picks one and reports the backend and device it chose.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from road_seg_perception.core.model_io import ModelFileError, load_keras_model

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "keras")
DEVICES = ("auto", "cpu", "gpu")
SPINNING_MODES = ("off", "run", "always")


class Backend(Protocol):
    name: str
    device: str
    input_hw: tuple[int, int]

    def infer(self, batch: np.ndarray) -> np.ndarray: ...


class OnnxBackend:
    """ONNX Runtime with TensorRT/CUDA providers when present and allowed, else CPU.

    ``spinning`` sets how the CPU thread pool waits for work:

    - ``"off"`` (default): threads sleep whenever they have no work, so nothing spins between
      frames, when the ROS executor and the camera driver need the cores;
    - ``"run"``: threads spin-wait between the operators of one inference and stop when it ends
      (``session.force_spinning_stop``). Measured on the 2-core machine with the shipped model, it
      was no faster back to back and slower at a camera's 15 Hz pace than ``"off"``;
    - ``"always"``: ONNX Runtime's own default; threads keep spinning after a run and burn CPU
      between frames.

    docs/performance.md has the measurements.
    """

    name = "onnxruntime"

    def __init__(self, path: Path, device: str = "auto", threads: int = 0, spinning: str = "off"):
        import onnxruntime as ort

        if spinning not in SPINNING_MODES:
            raise ValueError(f"spinning must be one of {SPINNING_MODES}, got {spinning!r}")

        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        available = ort.get_available_providers()
        providers = []
        if device in ("auto", "gpu"):
            providers += [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
            if device == "gpu" and not providers:
                log.warning("device 'gpu' requested but ONNX Runtime has no GPU provider; using CPU")
        providers.append("CPUExecutionProvider")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0" if spinning == "off" else "1")
        if spinning == "run":
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelFileError(f"model file {path} could not be loaded by ONNX Runtime: {e}") from e
        used = self.session.get_providers()[0]
        self.device = "cpu" if used == "CPUExecutionProvider" else f"gpu ({used})"
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        shape = inp.shape
        if len(shape) != 4 or not all(isinstance(s, int) for s in shape[1:3]) or shape[3] != 3:
            raise ModelFileError(f"model file {path} has input shape {shape}; expected (N, H, W, 3)")
        self.input_hw = (int(shape[1]), int(shape[2]))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: batch})[0][..., 0]


class KerasBackend:
    """A ``.keras`` model through a compiled call on whichever Keras backend is active."""

    name = "keras"

    def __init__(self, path: Path, device: str = "auto", allow_unsafe: bool = False, compiled: bool = True):
        import keras

        self.model = load_keras_model(path, allow_unsafe=allow_unsafe)
        self.input_hw = tuple(int(s) for s in self.model.input_shape[1:3])
        self.keras_backend = keras.backend.backend()
        gpus = _keras_gpus(self.keras_backend)
        if device == "gpu" and not gpus:
            log.warning("device 'gpu' requested but no GPU is visible to Keras (%s); using CPU", self.keras_backend)
        self.device = f"gpu ({gpus[0]})" if gpus and device != "cpu" else "cpu"
        self.name = f"keras-{self.keras_backend}"
        self._fn = self._compile() if compiled else None

    def _compile(self):
        if self.keras_backend == "tensorflow":
            import tensorflow as tf

            return tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        return None  # predict_on_batch is compiled (jit) on JAX and no-grad on torch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._fn is not None:
            out = self._fn(batch)
        else:
            out = self.model.predict_on_batch(batch)
        return np.asarray(out)[..., 0]


def _keras_gpus(backend: str) -> list[str]:
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return [d.name for d in tf.config.list_physical_devices("GPU")]
        if backend == "jax":
            import jax

            return [str(d) for d in jax.devices() if d.platform == "gpu"]
        if backend == "torch":
            import torch

            return [torch.cuda.get_device_name(0)] if torch.cuda.is_available() else []
    except Exception:  # a broken GPU stack means CPU
        return []
    return []


def resolve_model_files(path: Path) -> tuple[Path | None, Path | None]:
    """``(onnx, keras)`` files for a model path: the file itself plus a same-stem sibling."""
    if path.suffix == ".onnx":
        k = path.with_suffix(".keras")
        return path, (k if k.is_file() else None)
    if path.suffix == ".keras":
        o = path.with_suffix(".onnx")
        return (o if o.is_file() else None), path
    raise ModelFileError(f"model file {path} must end in .onnx or .keras")


def open_backend(model_path: str | Path, backend: str = "auto", device: str = "auto",
                 allow_unsafe: bool = False, threads: int = 0, spinning: str = "off") -> Backend:
    """Open ``model_path`` with the requested backend; ``auto`` prefers ONNX Runtime (fastest here).

    ``threads`` (0 = ``min(4, cores)``) and ``spinning`` set ONNX Runtime's CPU thread pool.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    path = Path(model_path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    onnx_path, keras_path = resolve_model_files(path)
    if backend == "onnxruntime":
        if onnx_path is None:
            raise ModelFileError(f"backend onnxruntime needs an .onnx file; none found for {path}")
        return OnnxBackend(onnx_path, device, threads, spinning)
    if backend == "keras":
        if keras_path is None:
            raise ModelFileError(f"backend keras needs a .keras file; none found for {path}")
        return KerasBackend(keras_path, device, allow_unsafe)
    if onnx_path is not None:
        try:
            import onnxruntime  # noqa: F401

            return OnnxBackend(onnx_path, device, threads, spinning)
        except ImportError:
            log.info("onnxruntime not installed; using Keras")
    if keras_path is None:
        raise ModelFileError(f"no usable model for {path}: onnxruntime is missing and there is no .keras file")
    return KerasBackend(keras_path, device, allow_unsafe)
