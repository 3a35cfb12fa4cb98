"""Speed side of the architecture trade-off in models/MODEL_CARD.md (rerunnable).

    .venv/bin/python bench/arch_tradeoff.py [--json out/bench/arch_tradeoff.json]
    .venv/bin/python bench/arch_tradeoff.py --family encoders   # the pretrained encoders at 256x352

For each candidate (untrained weights: speed does not depend on them) it reports
parameters, multiply-accumulates, ONNX Runtime latency of pre + infer + post on a 480x360 frame
and the time of one training step (batch 8) on this machine, all measured in one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.core.timing import time_segmenter
from road_seg_perception.training.export import export_onnx
from road_seg_perception.training.model import UNetConfig, build_model, count_flops

CANDIDATES = {
    "base 16, full-resolution stem": UNetConfig(base_filters=16, stem_stride=1),
    "base 24, stride-2 stem (shipped)": UNetConfig(base_filters=24, stem_stride=2),
    "base 32, stride-2 stem": UNetConfig(base_filters=32, stem_stride=2),
    "base 24, full-resolution stem": UNetConfig(base_filters=24, stem_stride=1),
}
#: The pretrained encoders with the shipped decoder (32 channels) at the shipped input size.
ENCODERS = {
    name: UNetConfig(input_hw=(256, 352), encoder=enc, encoder_weights="", decoder_filters=32)
    for name, enc in (("MobileNetV2 (shipped)", "mobilenet_v2"), ("MobileNetV3-Small", "mobilenet_v3_small"),
                      ("EfficientNet-Lite0", "efficientnet_lite0"))
}
FAMILIES = {"unet": CANDIDATES, "encoders": ENCODERS}


def main() -> int:
    import keras

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default="out/bench/arch_tradeoff.json")
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--family", choices=sorted(FAMILIES), default="unet",
                   help="unet: the light U-Nets; encoders: the pretrained encoders at 256x352")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, cfg in FAMILIES[a.family].items():
            keras.utils.set_random_seed(0)
            model = build_model(cfg)
            onnx = Path(d) / "m.onnx"
            export_onnx(model, onnx, [rng.random((*cfg.input_hw, 3), dtype=np.float32)])
            t = time_segmenter(RoadSegmenter(onnx, backend="onnxruntime"), frame, runs=a.runs)
            model.compile(optimizer="adam", loss="binary_crossentropy")
            x = rng.random((8, *cfg.input_hw, 3), dtype=np.float32)
            y = (rng.random((8, *cfg.input_hw, 1)) > 0.5).astype(np.float32)
            model.train_on_batch(x, y)
            t0 = time.perf_counter()
            for _ in range(3):
                model.train_on_batch(x, y)
            step = (time.perf_counter() - t0) / 3
            rows.append({"model": name, "parameters": model.count_params(), "mmacs": count_flops(model) / 1e6,
                         "ort_total_ms": t["total"], "fps": t["fps"], "train_step_s": step})
            keras.backend.clear_session()
            r = rows[-1]
            print(f"{name:36s} params {r['parameters']:>9,}  MACs {r['mmacs']:6.0f} M  "
                  f"ORT total {r['ort_total_ms']:5.1f} ms ({r['fps']:5.1f} fps)  train step {r['train_step_s']:.2f} s",
                  flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
