"""Export a Keras road model to ONNX and check that both agree."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from road_seg_perception.core.fileio import atomic_save
from road_seg_perception.core.model_io import ONNX_WEIGHTS_KEY, keras_weights_digest, load_keras_model
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
    x = np.stack(samples).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    tmp = path.with_name(f".{path.stem}.tmp.onnx")
    model.export(str(tmp), format="onnx", verbose=False)
    stamp_weights_digest(tmp, model_weights_digest(model))
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.max(np.abs(got - ref)))
    if diff > tolerance:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX export {path} differs from Keras by {diff:.2e} (> {tolerance:.0e})")
    os.replace(tmp, path)
    return diff


def main(argv: list[str] | None = None) -> int:
    """``road-seg-export MODEL.keras [OUT.onnx] [--keras-copy OUT.keras]``: export a trained model.

    ``--keras-copy`` also writes an inference-only ``.keras`` (no optimizer state), as shipped in ``models/``.
    """
    import argparse

    p = argparse.ArgumentParser(prog="road-seg-export", description="Export a .keras road model to ONNX.")
    p.add_argument("model")
    p.add_argument("output", nargs="?")
    p.add_argument("--keras-copy", metavar="OUT.keras", help="also save an inference-only .keras copy")
    a = p.parse_args(argv)
    model = load_keras_model(a.model)
    hw = tuple(model.input_shape[1:3])
    rng = np.random.default_rng(0)
    sample = preprocess(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), hw)
    out = a.output or str(Path(a.model).with_suffix(".onnx"))
    diff = export_onnx(model, out, [sample])
    print(f"wrote {out} (max abs diff to Keras {diff:.2e})")
    if a.keras_copy:

        atomic_save(model, Path(a.keras_copy))  # loaded without compile: no optimizer state is saved
        print(f"wrote {a.keras_copy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
