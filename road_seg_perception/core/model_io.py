"""Safe loading of ``.keras`` model files: no Lambda layers, no custom code, no pickle."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from road_seg_perception.core.layers import custom_layers

#: Modules whose classes a road model may use: ``keras`` itself and its submodules. Anything else
#: (custom classes, look-alike packages such as ``keras_evil``) is refused, and so are Lambda layers.
ALLOWED_PACKAGE = "keras"
#: This package's own registered classes: the file names them, the code comes from the installed package.
ALLOWED_REGISTERED = ("road_seg>RoadLoss", "road_seg_perception>ExposureNorm")


class ModelFileError(ValueError):
    """A model file is missing, corrupt or unsafe; the message names the file."""


def _walk(obj, found: list[str]) -> None:
    if isinstance(obj, dict):
        cls = obj.get("class_name")
        module = obj.get("module")
        registered = obj.get("registered_name")
        if cls == "Lambda" or cls == "TFOpLambda":
            config = obj.get("config")
            name = config.get("name", "?") if isinstance(config, dict) else "?"
            found.append(f"a {cls} layer ({name}) holds arbitrary code")
        elif isinstance(module, str) and module and module.split(".")[0] != ALLOWED_PACKAGE:
            if registered not in ALLOWED_REGISTERED:
                found.append(f"class {cls!r} from module {module!r} is custom code")
        if cls == "__lambda__" or "function_type" in obj and obj.get("function_type") == "lambda":
            found.append("a serialised Python lambda")
        for v in obj.values():
            _walk(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _walk(v, found)


def inspect_keras_file(path: Path) -> list[str]:
    """Return the reasons a ``.keras`` archive is unsafe (empty if it is safe); raise if unreadable."""
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    reasons: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "config.json" in names:
                _walk(json.loads(zf.read("config.json")), reasons)
    except Exception as e:  # zip, zlib, json, unicode, recursion depth...: any parse failure means corrupt
        raise ModelFileError(f"model file {path} is corrupt or not a .keras archive: {type(e).__name__}: {e}") from e
    if "config.json" not in names:
        raise ModelFileError(f"model file {path} is not a Keras 3 .keras archive (no config.json)")
    for n in names:
        if n.endswith((".pkl", ".pickle", ".npy")) and n != "model.weights.npz":
            reasons.append(f"archive member {n} may hold pickled data")
    return reasons


def load_keras_model(path: str | Path, allow_unsafe: bool = False, compile: bool = False):
    """Load a ``.keras`` model in safe mode after checking it holds no code.

    ``allow_unsafe=True`` (the node's ``allow_unsafe_model``) must be set explicitly to load a
    model with Lambda layers or custom classes.
    """
    import keras

    custom_layers()  # registers ExposureNorm

    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(f"model file {path} must end in .keras")
    reasons = inspect_keras_file(path)
    if reasons and not allow_unsafe:
        raise ModelFileError(
            f"model file {path} is unsafe and was refused: " + "; ".join(reasons)
            + ". Set allow_unsafe_model: true only for files you trust.")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=not allow_unsafe)
    except Exception as e:  # keras raises many types for corrupt archives
        raise ModelFileError(f"model file {path} could not be loaded: {type(e).__name__}: {e}") from e
