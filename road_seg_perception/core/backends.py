"""Inference backends behind one small interface: ONNX Runtime and Keras (TF, JAX or torch).

A backend takes an ``(N, H, W, 3)`` float32 batch and returns ``(N, H, W)`` float32 road
probabilities. ``open_backend`` picks one and reports the backend, the device and the file it loaded.

The file named is the file that runs, with one documented exception: backend ``auto`` given
``X.keras`` runs ``X.onnx`` from the same folder when, and only when, that ONNX file's metadata
holds the weights hash of ``X.keras`` (written by ``road-seg-export``); otherwise ``X.keras``
itself runs. Backend ``onnxruntime`` needs an ``.onnx`` file and ``keras`` a ``.keras`` file.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Protocol

import numpy as np

from road_seg_perception.core.model_io import (
    ONNX_WEIGHTS_KEY,
    ModelFileError,
    check_keras_file,
    check_model_path,
    check_onnx_structure,
    keras_weights_digest,
    load_keras_model,
)

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "keras")
DEVICES = ("auto", "cpu", "gpu")
SPINNING_MODES = ("off", "run", "always")


class Backend(Protocol):
    name: str
    device: str
    input_hw: tuple[int, int]
    path: Path  # the file actually loaded

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


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
        if spinning not in SPINNING_MODES:
            raise ValueError(f"spinning must be one of {SPINNING_MODES}, got {spinning!r}")
        self.path = check_model_path(Path(path))
        import onnxruntime as ort

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
        if len(shape) != 4 or shape[3] != 3:
            raise ModelFileError(f"model file {path} has input shape {shape}; expected (N, H, W, 3)")
        if not all(isinstance(s, int) and s > 0 for s in shape[1:3]):  # ONNX Runtime shows a negative size as None
            raise ModelFileError(f"model file {path} has input size {shape[1]}x{shape[2]} (height x width); "
                                 "both must be fixed positive numbers")
        self.input_hw = (int(shape[1]), int(shape[2]))
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: batch})[0][..., 0]

    def close(self) -> None:
        self.__dict__.pop("session", None)


class KerasBackend:
    """A ``.keras`` model through a compiled call on whichever Keras backend is active."""

    name = "keras"

    def __init__(self, path: Path, device: str = "auto", allow_unsafe: bool = False, compiled: bool = True):
        self.path = Path(path)
        self.model = load_keras_model(path, allow_unsafe=allow_unsafe)  # checks the file before importing keras
        import keras

        shape = tuple(self.model.input_shape)
        if len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape[1:3]) or shape[3] != 3:
            self.close()
            raise ModelFileError(f"model file {path} has input shape {shape}; expected (N, H, W, 3) with "
                                 "positive H and W")
        self.input_hw = (int(shape[1]), int(shape[2]))
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

    def close(self) -> None:
        """Drop the model and its compiled function and clear Keras' global state, so swaps do not leak."""
        import keras

        self._fn = None
        self.__dict__.pop("model", None)
        keras.backend.clear_session()  # also runs the garbage collector


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


#: File-name suffix of an INT8 copy of a float model (``road_unet_camvid_int8.onnx``).
INT8_SUFFIX = "_int8"


def onnx_gpu_available() -> bool:
    """Whether ONNX Runtime offers a GPU provider (what :class:`OnnxBackend` would use on ``device`` auto)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return any(p in ort.get_available_providers() for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider"))


#: x86-64 CPU flags of the integer dot-product instructions that make ONNX Runtime's INT8 kernels pay.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})


def cpu_int8_pays(cpuinfo: str | None = None, machine: str | None = None) -> bool:
    """Whether the shipped INT8 copy should beat the float model on this CPU (``cpuinfo``: /proc/cpuinfo's text).

    False only on an x86-64 CPU whose flags lack VNNI: there ONNX Runtime ran the INT8 copy slower than
    the float model (docs/training.md, "INT8"). Other CPUs, and any whose flags cannot be read, keep it.
    """
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return True
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return True
    flags = next((line.partition(":")[2].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return not flags or bool(VNNI_FLAGS.intersection(flags))


def resolve_model_files(path: Path) -> tuple[Path | None, Path | None]:
    """``(onnx, keras)`` files for a model path: the file itself plus a same-stem sibling.

    An INT8 copy ``<stem>_int8.onnx`` (``road-seg-quantize``) maps to the float ``<stem>.keras`` it
    was made from. For tools that compare both backends of one model on purpose
    (``bench/run_bench.py``); loading goes through :func:`open_backend`, which runs the file it is given.
    """
    if path.suffix == ".onnx":
        k = path.with_suffix(".keras")
        if not k.is_file() and path.stem.endswith(INT8_SUFFIX):
            k = path.with_name(path.stem[: -len(INT8_SUFFIX)] + ".keras")
        return path, (k if k.is_file() else None)
    if path.suffix == ".keras":
        o = path.with_suffix(".onnx")
        return (o if o.is_file() else None), path
    raise ModelFileError(f"model file {path} must end in .onnx or .keras")


def verified_onnx_sibling(keras_path: Path, device: str = "auto", threads: int = 0,
                          spinning: str = "off") -> tuple[OnnxBackend | None, str]:
    """Open ``X.onnx`` beside ``X.keras`` if its metadata holds the Keras file's weights hash.

    Returns ``(backend, "")`` or ``(None, why the sibling was not used)``. Call only after the
    ``.keras`` file passed :func:`check_keras_file`.
    """
    onnx_path = keras_path.with_suffix(".onnx")
    if not onnx_path.exists():
        return None, f"no {onnx_path.name} beside it"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None, "onnxruntime is not installed"
    digest = keras_weights_digest(keras_path)
    if digest is None:
        return None, "its weights hash cannot be computed (no model.weights.h5, or h5py missing)"
    try:
        sibling = OnnxBackend(onnx_path, device, threads, spinning)
    except ModelFileError as e:
        return None, f"{onnx_path.name} is unusable ({e})"
    stored = sibling.metadata.get(ONNX_WEIGHTS_KEY)
    if stored != digest:
        sibling.close()
        why = "carries no Keras weights hash" if stored is None else "was exported from other weights"
        return None, f"{onnx_path.name} {why}"
    return sibling, ""


def precheck_model(model_path: str | Path, backend: str = "auto", device: str = "auto",
                   allow_unsafe: bool = False) -> Path:
    """The cheap checks :func:`open_backend` makes before loading anything; return the path.

    Settings, file kind and size, suffix against backend, ``.keras`` archive sizes and safety,
    ``.onnx`` protobuf structure. Nothing is imported or decoded in full: the node runs these
    on the executor thread and the load itself on a thread of its own.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    path = check_model_path(Path(model_path))
    if path.suffix not in (".onnx", ".keras"):
        raise ModelFileError(f"model file {path} must end in .onnx or .keras")
    if path.suffix == ".onnx":
        if backend == "keras":
            raise ModelFileError(f"model file {path} is an ONNX file; backend keras runs .keras files "
                                 "(name the .keras file, or use backend auto or onnxruntime)")
        check_onnx_structure(path)
    else:
        if backend == "onnxruntime":
            raise ModelFileError(f"model file {path} is a .keras file; backend onnxruntime runs .onnx files "
                                 "(name the .onnx file, or use backend auto or keras)")
        check_keras_file(path, allow_unsafe)
    return path


def open_backend(model_path: str | Path, backend: str = "auto", device: str = "auto",
                 allow_unsafe: bool = False, threads: int = 0, spinning: str = "off") -> Backend:
    """Open ``model_path`` with the requested backend; the returned backend's ``path`` is the file loaded.

    ``auto`` runs an ``.onnx`` file with ONNX Runtime and a ``.keras`` file with Keras, except
    that a ``.keras`` file's verified ONNX sibling (see the module doc) runs instead, for speed.
    ``threads`` (0 = ``min(4, cores)``) and ``spinning`` set ONNX Runtime's CPU thread pool.
    """
    path = precheck_model(model_path, backend, device, allow_unsafe)
    if path.suffix == ".onnx":
        try:
            return OnnxBackend(path, device, threads, spinning)
        except ImportError:
            raise ModelFileError(f"model file {path} needs onnxruntime, which is not installed") from None
    if backend == "auto":
        sibling, why = verified_onnx_sibling(path, device, threads, spinning)
        if sibling is not None:
            log.info("running %s for %s: its metadata holds the same Keras weights hash", sibling.path, path)
            return sibling
        log.info("running %s with Keras: %s", path, why)
    return KerasBackend(path, device, allow_unsafe)
