"""Export a Keras road model to ONNX and check that both agree."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from road_seg_perception.core.cli_errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, fail
from road_seg_perception.core.fileio import atomic_save, write_atomically
from road_seg_perception.core.model_io import ONNX_WEIGHTS_KEY, ModelFileError, keras_weights_digest, load_keras_model
from road_seg_perception.core.preprocessing import preprocess

ONNX_TOLERANCE = 1e-4


def model_weights_digest(model) -> str:
    """:func:`keras_weights_digest` of ``model`` as it would be saved (the hash any ``.keras`` save of it gives)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.keras"
        model.save(path)
        digest = keras_weights_digest(path)
    if digest is None:
        raise RuntimeError("cannot hash the model's weights (h5py missing?)")
    return digest


def stamp_weights_digest(onnx_path: Path, digest: str) -> None:
    """Store ``digest`` under :data:`ONNX_WEIGHTS_KEY` in the ONNX file's metadata (in place)."""
    import onnx

    proto = onnx.load(str(onnx_path))
    kept = [p for p in proto.metadata_props if p.key != ONNX_WEIGHTS_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=ONNX_WEIGHTS_KEY, value=digest)
    onnx.save(proto, str(onnx_path))


def export_onnx(model, path: str | Path, samples: list[np.ndarray], tolerance: float = ONNX_TOLERANCE) -> float:
    """Write ``model`` to ``path`` as ONNX; return the max abs difference to Keras on ``samples``.

    The model is called once first (Keras refuses to export a never-called model). Raises
    ``RuntimeError`` if the outputs differ by more than ``tolerance``; the file is written
    atomically, so a failed export leaves no half-written model behind. The ONNX metadata key
    :data:`ONNX_WEIGHTS_KEY` holds the hash of the Keras weights, which lets backend ``auto``
    run this file for a ``.keras`` file of the same weights (see ``core.backends``).
    """
    import onnxruntime as ort

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"ONNX output {path} is a folder; give a file path such as {path / 'model.onnx'}")
    x = np.stack(samples).astype(np.float32)
    ref = np.asarray(model(x, training=False))

    def write(tmp: Path) -> float:
        model.export(str(tmp), format="onnx", verbose=False)
        stamp_weights_digest(tmp, model_weights_digest(model))
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        diff = float(np.max(np.abs(got - ref)))
        if diff > tolerance:
            raise RuntimeError(f"ONNX export {path} differs from Keras by {diff:.2e} (> {tolerance:.0e})")
        return diff

    return write_atomically(path, write, suffix=".tmp.onnx")  # a link at ``path`` is replaced, not followed


def with_input_hw(model, hw: tuple[int, int]):
    """The same network and weights built for ``hw`` (height, width) input: every input layer whose shape
    is the model's input size (the model's own and a nested encoder's) gets ``hw``. ``ValueError`` if the
    network cannot take that size (its layers' strides do not divide it)."""
    import keras

    old = tuple(model.input_shape[1:3])

    def patch(o):
        if isinstance(o, dict):
            if o.get("class_name") == "InputLayer":
                shape = list(o["config"]["batch_shape"])
                if tuple(shape[1:3]) == old:
                    o["config"]["batch_shape"] = [shape[0], *hw, *shape[3:]]
            for v in o.values():
                patch(v)
        elif isinstance(o, list):
            for v in o:
                patch(v)

    config = model.get_config()
    patch(config)
    try:
        resized = model.__class__.from_config(config, custom_objects=keras.saving.get_custom_objects())
        resized.set_weights(model.get_weights())
        out = np.asarray(resized(np.zeros((1, *hw, model.input_shape[3]), np.float32), training=False))
        if out.shape[1:3] != tuple(hw):
            raise ValueError(f"output {out.shape[1]}x{out.shape[2]} differs from the input")
    except Exception as e:  # Keras raises backend-specific errors for sizes its strides do not divide
        raise ValueError(f"--input-hw {hw[0]} {hw[1]}: the model (trained at {old[0]}x{old[1]}) cannot take this "
                         f"size ({str(e).splitlines()[0]}); give sizes divisible by its stride (32 for MobileNet "
                         "encoders)") from e
    return resized


def main(argv: list[str] | None = None) -> int:
    """``road-seg-export MODEL.keras [OUT.onnx] [--keras-copy OUT.keras] [--input-hw H W]``: export a model.

    ``--keras-copy`` also writes an inference-only ``.keras`` (no optimizer state), as shipped in ``models/``;
    ``--input-hw`` exports the same weights for another input size (a smaller one runs faster).
    """
    import argparse

    p = argparse.ArgumentParser(prog="road-seg-export", description="Export a .keras road model to ONNX.")
    p.add_argument("model")
    p.add_argument("output", nargs="?")
    p.add_argument("--keras-copy", metavar="OUT.keras", help="also save an inference-only .keras copy")
    p.add_argument("--input-hw", type=int, nargs=2, metavar=("H", "W"),
                   help="export the same weights for this input size instead of the trained one (e.g. 192 256 "
                        "for a slower CPU; the model card scores the shipped model at such sizes)")
    p.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    a = p.parse_args(argv)
    if a.input_hw and min(a.input_hw) < 1:
        p.error(f"--input-hw must be positive, got {a.input_hw[0]} {a.input_hw[1]}")
    out = a.output or str(Path(a.model).with_suffix(".onnx"))
    try:
        check_outputs(Path(a.model), Path(out), Path(a.keras_copy) if a.keras_copy else None)
        model = load_keras_model(a.model)
        if a.input_hw and tuple(a.input_hw) != tuple(model.input_shape[1:3]):
            model = with_input_hw(model, tuple(a.input_hw))
    except (ModelFileError, ValueError, OSError) as e:
        return fail("road-seg-export", e, EXIT_USAGE, a.debug)
    try:
        hw = tuple(model.input_shape[1:3])
        rng = np.random.default_rng(0)
        sample = preprocess(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), hw)
        diff = export_onnx(model, out, [sample])
        print(f"wrote {out} (max abs diff to Keras {diff:.2e})")
        if a.keras_copy:
            atomic_save(model, Path(a.keras_copy))  # loaded without compile: no optimizer state is saved
            print(f"wrote {a.keras_copy}")
    except KeyboardInterrupt:
        print("road-seg-export: interrupted; nothing was replaced", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a runtime failure: one line, the traceback only with --debug
        return fail("road-seg-export", e, EXIT_RUNTIME, a.debug)
    return 0


def check_output_path(out: Path, what: str, inputs: list[Path]) -> None:
    """``ValueError`` naming ``out`` (``what``) if it is a folder, lies in no folder, or is one of ``inputs``
    (the same path, a link to it or a hard link of it); a missing input is left to the model loader."""
    if out.is_dir():
        raise ValueError(f"{what} {out} is a folder; give a file path")
    if not out.parent.is_dir():
        raise ValueError(f"{what} {out}: folder {out.parent} does not exist; give a file path in an existing folder")
    for src in inputs:
        if out.resolve() == src.resolve() or (out.exists() and src.exists() and os.path.samefile(out, src)):
            which = "the input model" if len(inputs) == 1 else "one of the input models"
            raise ValueError(f"{what} {out} is {which}; refusing to overwrite it")


def check_outputs(model: Path, onnx_out: Path, keras_copy: Path | None) -> None:
    """``ValueError`` naming the path if an output is a folder, lies in no folder, or is the input model."""
    for out, what in ((onnx_out, "ONNX output"), (keras_copy, "--keras-copy")):
        if out is not None:
            check_output_path(out, what, [model])
    if keras_copy is not None and keras_copy.suffix != ".keras":
        raise ValueError(f"--keras-copy {keras_copy} must end in .keras")


if __name__ == "__main__":
    raise SystemExit(main())
