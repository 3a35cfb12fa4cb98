"""Model-file checks and safe loading of ``.keras`` files: no Lambda layers, no custom code, no pickle.

Everything here runs before Keras or TensorFlow is imported: a refused file costs no import.
Archive sizes are checked from the zip directory before any member is read (zip bombs), and the
weights hash that ties an ``.onnx`` export to its ``.keras`` source is computed here.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from pathlib import Path

from road_seg_perception.core.layers import custom_layers
from road_seg_perception.core.native_import import import_keras

#: Modules whose classes a road model may use: ``keras`` itself and its submodules. Anything else
#: (custom classes, look-alike packages such as ``keras_evil``) is refused, and so are Lambda layers.
ALLOWED_PACKAGE = "keras"
#: This package's own registered classes: the file names them, the code comes from the installed package.
ALLOWED_REGISTERED = ("road_seg>RoadLoss", "road_seg_perception>ExposureNorm", "road_seg_perception>EncoderScaledAdamW")


#: Limits on a ``.keras`` archive, checked from its zip directory before any member is read.
MAX_ARCHIVE_MEMBERS = 1000
MAX_CONFIG_BYTES = 64 * 2**20
MAX_ARCHIVE_BYTES = 2 * 2**30
#: Largest model file of either kind (ONNX Runtime cannot parse a protobuf over 2 GiB anyway).
MAX_MODEL_FILE_BYTES = 2 * 2**30
#: ONNX metadata key holding :func:`keras_weights_digest` of the ``.keras`` file it was exported from.
ONNX_WEIGHTS_KEY = "road_seg.keras_weights_sha256"
WEIGHTS_MEMBER = "model.weights.h5"


class ModelFileError(ValueError):
    """A model file is missing, corrupt or unsafe; the message names the file."""


def check_model_path(path: Path) -> Path:
    """Return ``path`` if it is a regular file of at most :data:`MAX_MODEL_FILE_BYTES`; else raise saying what it is."""
    try:
        st = path.stat()  # follows links: a link to /dev/zero is judged by its target
    except FileNotFoundError:
        raise ModelFileError(f"model file {path} does not exist") from None
    except OSError as e:
        raise ModelFileError(f"model file {path} cannot be read: {e.strerror or e}") from None
    mode = st.st_mode
    if not stat.S_ISREG(mode):
        what = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        link = f" (a link to {path.resolve()})" if path.is_symlink() else ""
        raise ModelFileError(f"model file {path}{link} is {what}, not a regular file; refused")
    if st.st_size > MAX_MODEL_FILE_BYTES:
        raise ModelFileError(f"model file {path} is {st.st_size} bytes, over the {MAX_MODEL_FILE_BYTES}-byte limit")
    return path


def _varint(f) -> int | None:
    shift = value = 0
    while True:
        b = f.read(1)
        if not b:
            return None
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def check_onnx_structure(path: Path) -> None:
    """Walk the top-level protobuf fields of an ``.onnx`` file (cheap: it seeks over the graph).

    Refuses a file that is not a protobuf, is truncated (a field runs past the end) or holds no
    graph, before ONNX Runtime parses it.
    """
    size = path.stat().st_size
    fields: set[int] = set()
    try:
        with open(path, "rb") as f:
            while f.tell() < size:
                key = _varint(f)
                if key is None or key >> 3 == 0:
                    raise ValueError(f"bad field key at byte {f.tell()}")
                wire = key & 7
                if wire == 0:
                    if _varint(f) is None:
                        raise ValueError("truncated")
                elif wire == 2:
                    n = _varint(f)
                    if n is None or f.tell() + n > size:
                        raise ValueError(f"truncated: field {key >> 3} runs past the end of the file")
                    f.seek(n, 1)
                elif wire in (1, 5):
                    f.seek(8 if wire == 1 else 4, 1)
                else:
                    raise ValueError(f"bad wire type {wire} at byte {f.tell()}")
                fields.add(key >> 3)
            if f.tell() != size:
                raise ValueError("truncated")
    except (OSError, ValueError) as e:
        raise ModelFileError(f"model file {path} is not a valid ONNX model: {e}") from None
    if 7 not in fields:  # ModelProto.graph
        raise ModelFileError(f"model file {path} is not a valid ONNX model: it holds no graph")


def check_archive_sizes(path: Path, zf: zipfile.ZipFile) -> None:
    """Refuse an archive whose directory declares too many members or too many uncompressed bytes.

    Python's zip reader never returns more than a member's declared size, so these limits bound
    what reading the archive can cost.
    """
    infos = zf.infolist()
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise ModelFileError(f"model file {path} has {len(infos)} archive members, over the limit of "
                             f"{MAX_ARCHIVE_MEMBERS}; refused")
    total = 0
    for info in infos:
        total += info.file_size
        if info.filename == "config.json" and info.file_size > MAX_CONFIG_BYTES:
            raise ModelFileError(f"model file {path}: config.json unpacks to {info.file_size} bytes, over the "
                                 f"limit of {MAX_CONFIG_BYTES}; refused (a zip bomb?)")
    if total > MAX_ARCHIVE_BYTES:
        raise ModelFileError(f"model file {path} unpacks to {total} bytes, over the limit of {MAX_ARCHIVE_BYTES}; "
                             "refused (a zip bomb?)")


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
    check_model_path(path)
    reasons: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            check_archive_sizes(path, zf)
            names = zf.namelist()
            if "config.json" in names:
                with zf.open("config.json") as f:
                    _walk(json.loads(f.read(MAX_CONFIG_BYTES + 1)), reasons)
    except ModelFileError:
        raise
    except Exception as e:  # zip, zlib, json, unicode, recursion depth...: any parse failure means corrupt
        raise ModelFileError(f"model file {path} is corrupt or not a .keras archive: {type(e).__name__}: {e}") from e
    if "config.json" not in names:
        raise ModelFileError(f"model file {path} is not a Keras 3 .keras archive (no config.json)")
    for n in names:
        if n.endswith((".pkl", ".pickle", ".npy")) and n != "model.weights.npz":
            reasons.append(f"archive member {n} may hold pickled data")
    return reasons


def check_keras_file(path: Path, allow_unsafe: bool = False) -> None:
    """Raise :class:`ModelFileError` unless ``path`` is a readable, size-bounded and (unless allowed) safe archive."""
    reasons = inspect_keras_file(path)
    if reasons and not allow_unsafe:
        raise ModelFileError(
            f"model file {path} is unsafe and was refused: " + "; ".join(reasons)
            + ". Set allow_unsafe_model: true only for files you trust.")


def keras_weights_digest(path: Path) -> str | None:
    """SHA-256 of the layer weights in a ``.keras`` archive (names, dtypes, shapes and values).

    Optimizer state is left out, so a training checkpoint and its inference-only copy give the
    same digest. ``None`` when the archive holds no ``model.weights.h5`` or h5py is missing.
    Call :func:`inspect_keras_file` first: it bounds the sizes read here.
    """
    try:
        import h5py
    except ImportError:
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            check_archive_sizes(path, zf)
            if WEIGHTS_MEMBER not in zf.namelist():
                return None
            data = zf.read(WEIGHTS_MEMBER)
        digest = hashlib.sha256()
        with h5py.File(io.BytesIO(data), "r") as h5:
            found: list[tuple[str, object]] = []
            h5.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
            for name, ds in sorted(found, key=lambda t: t[0]):
                if name.split("/")[0] == "optimizer":
                    continue
                arr = ds[()]
                digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
                digest.update(memoryview(arr.tobytes()))
        return digest.hexdigest()
    except ModelFileError:
        raise
    except Exception as e:  # zip, h5py or numpy errors all mean the weights cannot be read
        raise ModelFileError(f"model file {path}: its weights cannot be read: {type(e).__name__}: {e}") from e


def load_keras_model(path: str | Path, allow_unsafe: bool = False, compile: bool = False):
    """Load a ``.keras`` model in safe mode after checking it holds no code.

    ``allow_unsafe=True`` (the node's ``allow_unsafe_model``) must be set explicitly to load a
    model with Lambda layers or custom classes. The file is checked before Keras is imported.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(f"model file {path} must end in .keras")
    check_keras_file(path, allow_unsafe)
    keras = import_keras()  # a stop signal still ends a node during TensorFlow's first import

    custom_layers()  # registers ExposureNorm

    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=not allow_unsafe)
    except Exception as e:  # keras raises many types for corrupt archives
        raise ModelFileError(f"model file {path} could not be loaded: {type(e).__name__}: {e}") from e
