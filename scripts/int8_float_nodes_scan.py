"""Road IoU of INT8 copies of a model that keep its first N graph nodes in float, split by split.

    python scripts/int8_float_nodes_scan.py                      # the shipped model, N = 0 4 8 10 12 20 30
    python scripts/int8_float_nodes_scan.py --nodes 0 10 --out out/int8_scan.md

How the shipped INT8 copy's ``--float-nodes`` was chosen (docs/training.md). Each copy is calibrated
on the same training frames as ``road-seg-quantize`` and scored on the config's validation splits.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from road_seg_perception.core.segmenter import RoadSegmenter  # noqa: E402
from road_seg_perception.tools.model_card import config_splits, score_split  # noqa: E402
from road_seg_perception.tools.quantize import calibration_images, quantize_int8  # noqa: E402
from road_seg_perception.training.config import load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/road_unet_camvid.onnx", help="float ONNX model")
    p.add_argument("--config", default="config/train_road.yaml", help="calibration frames and validation splits")
    p.add_argument("--nodes", type=int, nargs="+", default=[0, 4, 8, 10, 12, 20, 30], help="values of N")
    p.add_argument("--frames", type=int, default=120, help="calibration frames")
    p.add_argument("--out", default="out/int8_scan.md", help="markdown table to write")
    a = p.parse_args(argv)
    cfg = load_config(a.config)
    splits = config_splits(cfg)
    images = calibration_images(cfg, a.frames)
    base = RoadSegmenter(a.model, backend="onnxruntime")
    rows = [("float", {n: score_split(base, pairs)["iou"] for n, pairs in splits.items()})]
    with tempfile.TemporaryDirectory() as d:
        for n in a.nodes:
            path = Path(d) / f"int8_{n}.onnx"
            quantize_int8(Path(a.model), path, images, n)
            seg = RoadSegmenter(path, backend="onnxruntime")
            scores = {s: score_split(seg, pairs)["iou"] for s, pairs in splits.items()}
            rows.append((f"INT8, first {n} nodes float", scores))
            print(rows[-1], flush=True)
    names = list(splits)
    lines = [f"Road IoU by split (`python scripts/int8_float_nodes_scan.py --nodes {' '.join(map(str, a.nodes))}`)",
             "", "| model | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    lines += [f"| {label} | " + " | ".join(f"{r[n]:.4f}" for n in names) + " |" for label, r in rows]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
