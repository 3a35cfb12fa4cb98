"""``road-seg-quantize``: an INT8 copy of a float ONNX road model, checked split by split.

    road-seg-quantize runs/road_mnv2_hires/model.onnx out/road_int8.onnx --config config/train_road.yaml

ONNX Runtime static quantisation (QDQ, per-channel INT8 weights, UINT8 activations), calibrated on
training frames of the config's datasets put through the same ``preprocess`` as inference. Then the
float and INT8 models are scored on every validation split of the config (published masks at full
resolution, as the model card scores them); the INT8 file is written only if no split's road IoU
drops by more than ``--max-iou-drop`` (default 0.005), so a quantised model never silently loses
accuracy. Input and output stay float32: the node, ``road-seg-predict`` and the evaluation tools
run the INT8 file unchanged.

``--float-nodes N`` keeps the first N nodes of the graph (topological order, after ONNX Runtime's
pre-processing: the input scaling and the first, full- and half-resolution layers) in float and
the rest INT8. For the shipped model the accuracy lost to INT8 is lost there (docs/training.md
has the scan); the file records the names of the nodes it kept in float.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from road_seg_perception.core.cli_errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, fail
from road_seg_perception.core.fileio import write_atomically
from road_seg_perception.core.model_io import ONNX_WEIGHTS_KEY, ModelFileError, check_model_path
from road_seg_perception.core.preprocessing import preprocess
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.tools.model_card import config_splits, score_split
from road_seg_perception.training.config import dataset_configs, load_config
from road_seg_perception.training.data import dataset_samples, evenly_spaced
from road_seg_perception.training.datasets import read_image

#: ONNX metadata key marking a quantised file (its value: the scheme).
QUANTIZED_KEY = "road_seg.quantized"
#: ONNX metadata key holding the names of the nodes kept in float, comma-separated.
FLOAT_NODES_KEY = "road_seg.float_nodes"
MAX_IOU_DROP = 0.005


class AccuracyLossError(RuntimeError):
    """The quantised model lost more road IoU than allowed on some split; ``report`` has every split."""

    def __init__(self, message: str, report: dict[str, dict[str, float]]):
        super().__init__(message)
        self.report = report


def onnx_input(path: Path) -> tuple[str, tuple[int, int]]:
    """The input name and (height, width) of an NHWC ONNX model."""
    import onnxruntime as ort

    inp = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0]
    h, w = inp.shape[1:3]
    if not (isinstance(h, int) and isinstance(w, int)):
        raise ModelFileError(f"{path}: input {inp.name} has no fixed height and width ({inp.shape})")
    return inp.name, (h, w)


def calibration_images(cfg: dict, count: int) -> list[Path]:
    """``count`` training images of the config, spread evenly over each trained dataset and within it."""
    trained = [ds for ds in dataset_configs(cfg) if ds.train]
    if not trained:
        raise ValueError("the config trains on no dataset: nothing to calibrate on")
    out: list[Path] = []
    for i, ds in enumerate(trained):
        samples, _ = dataset_samples(ds)
        want = count // len(trained) + (1 if i < count % len(trained) else 0)
        out += [sample.image for sample in evenly_spaced(samples, want)]
    if not out:
        raise ValueError("the config's datasets have no training images to calibrate on")
    return out


def _batches(images: list[Path], hw: tuple[int, int]) -> Iterator[np.ndarray]:
    from tqdm import tqdm

    for path in tqdm(images, desc="calibrating", unit="frame"):
        yield preprocess(read_image(path), hw)[None]


def quantize_int8(src: Path, out: Path, images: list[Path], float_nodes: int = 0) -> list[str]:
    """Write the INT8 (QDQ) version of ``src`` to ``out``, calibrated on ``images``; the file is marked int8.

    The first ``float_nodes`` nodes of the pre-processed graph stay float; returns their names.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name, hw = onnx_input(src)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = _batches(images, hw)

        def get_next(self) -> dict | None:
            batch = next(self.it, None)
            return None if batch is None else {name: batch}

    with tempfile.TemporaryDirectory() as d:
        pre = Path(d) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        nodes = onnx.load(str(pre)).graph.node
        if float_nodes > len(nodes):
            raise ValueError(f"float_nodes {float_nodes} > the {len(nodes)} nodes of {src}")
        keep = [n.name for n in nodes[:float_nodes]]
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep)
    proto = onnx.load(str(out))
    # not the float weights any more: backend "auto" must not run this file for the float .keras
    kept = [p for p in proto.metadata_props if p.key not in (ONNX_WEIGHTS_KEY, QUANTIZED_KEY, FLOAT_NODES_KEY)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=QUANTIZED_KEY, value="int8-qdq")
    proto.metadata_props.add(key=FLOAT_NODES_KEY, value=",".join(keep))
    onnx.save(proto, str(out))
    return keep


def compare_splits(float_path: Path, int8_path: Path, splits: dict) -> dict[str, dict[str, float]]:
    """Road IoU of both models on each split: ``{split: {"float", "int8", "drop"}}``."""
    segs = {k: RoadSegmenter(p, backend="onnxruntime") for k, p in (("float", float_path), ("int8", int8_path))}
    out = {}
    for name, pairs in splits.items():
        r = {k: score_split(s, pairs)["iou"] for k, s in segs.items()}
        out[name] = {**r, "drop": round(r["float"] - r["int8"], 4)}
    return out


def quantize_checked(src: Path, out: Path, cfg: dict, frames: int = 120, max_drop: float = MAX_IOU_DROP,
                     float_nodes: int = 0) -> dict[str, dict[str, float]]:
    """Quantise ``src`` to ``out`` if no validation split of ``cfg`` loses more than ``max_drop`` road IoU.

    Raises :class:`AccuracyLossError` (and leaves ``out`` untouched) otherwise. Returns the comparison.
    """
    splits = config_splits(cfg)
    if not splits:
        raise ValueError("the config has no validation split to check the quantised model on")
    images = calibration_images(cfg, frames)

    def write(tmp: Path) -> dict[str, dict[str, float]]:
        quantize_int8(src, tmp, images, float_nodes)
        report = compare_splits(src, tmp, splits)
        worst = max(report, key=lambda k: report[k]["drop"])
        if report[worst]["drop"] > max_drop:
            raise AccuracyLossError(f"INT8 loses {report[worst]['drop']:.4f} road IoU on {worst} "
                                    f"(> {max_drop}); {out} not written", report)
        return report

    return write_atomically(out, write, suffix=".tmp.onnx")


def _print_report(report: dict[str, dict[str, float]]) -> None:
    for name, r in report.items():
        print(f"{name}: float {r['float']:.4f}  int8 {r['int8']:.4f}  drop {r['drop']:+.4f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="road-seg-quantize", description=__doc__.splitlines()[0])
    p.add_argument("model", help="float .onnx model (as road-seg-export writes it)")
    p.add_argument("output", help="INT8 .onnx to write")
    p.add_argument("--config", required=True, help="training config: calibration frames and validation splits")
    p.add_argument("--frames", type=int, default=120, help="calibration frames (default 120)")
    p.add_argument("--max-iou-drop", type=float, default=MAX_IOU_DROP,
                   help=f"refuse if any split loses more road IoU (default {MAX_IOU_DROP})")
    p.add_argument("--float-nodes", type=int, default=0, metavar="N",
                   help="keep the graph's first N nodes (the input stem) in float (default 0: all INT8)")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    a = p.parse_args(argv)
    src, out = Path(a.model), Path(a.output)
    try:
        if a.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {a.frames}")
        if a.float_nodes < 0:
            raise ValueError(f"--float-nodes must be >= 0, got {a.float_nodes}")
        if src.suffix != ".onnx" or out.suffix != ".onnx":
            raise ValueError(f"model and output must be .onnx files, got {src} and {out}")
        check_model_path(src)
        if out.exists() and out.resolve() == src.resolve():
            raise ValueError(f"output {out} is the input model; refusing to overwrite it")
        if not out.parent.is_dir():
            raise ValueError(f"output {out}: folder {out.parent} does not exist")
        cfg = load_config(a.config)
    except (ModelFileError, ValueError, KeyError, OSError) as e:
        return fail("road-seg-quantize", e, EXIT_USAGE, a.debug)
    try:
        report = quantize_checked(src, out, cfg, a.frames, a.max_iou_drop, a.float_nodes)
    except KeyboardInterrupt:
        print("road-seg-quantize: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except AccuracyLossError as e:
        _print_report(e.report)
        return fail("road-seg-quantize", e, EXIT_RUNTIME, a.debug)
    except Exception as e:  # noqa: BLE001 - one line, the traceback only with --debug
        return fail("road-seg-quantize", e, EXIT_RUNTIME, a.debug)
    _print_report(report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
