"""Export a Keras road model to ONNX and check that both agree."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from road_seg_perception.core.fileio import atomic_save
from road_seg_perception.core.model_io import load_keras_model
from road_seg_perception.core.preprocessing import preprocess

ONNX_TOLERANCE = 1e-4


def export_onnx(model, path: str | Path, samples: list[np.ndarray], tolerance: float = ONNX_TOLERANCE) -> float:
    """Write ``model`` to ``path`` as ONNX; return the max abs difference to Keras on ``samples``.

    The model is called once first (Keras refuses to export a never-called model). Raises
    ``RuntimeError`` if the outputs differ by more than ``tolerance``; the file is written
    atomically, so a failed export leaves no half-written model behind.
    """
    import onnxruntime as ort

    path = Path(path)
    x = np.stack(samples).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    tmp = path.with_name(f".{path.stem}.tmp.onnx")
    model.export(str(tmp), format="onnx", verbose=False)
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
