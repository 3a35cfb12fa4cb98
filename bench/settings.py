"""The benchmark's settings, topics and the backend names it measures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_JSON = Path("out/bench/bench.json")
NAIVE_SCRIPT = Path(__file__).resolve().parent / "naive_node.py"
IMAGE_TOPIC = "/bench/image"
MASK_TOPIC = "/road_mask"
FRAME_ID = "bench_camera"
SECTIONS = ("bare", "work", "node", "naive")
#: ONNX Runtime variants that the product does not use, kept so each run shows what its choices cost
#: or gain: ``onnxruntime-runspin`` (threads spin-wait during a run only), ``onnxruntime-spinning``
#: (threads spin-wait, also between frames: ONNX Runtime's own default) and ``onnxruntime-1thread``
#: (one intra-op thread instead of ``min(4, cores)``). The product's threads never spin. ``onnxruntime-flip``:
#: the node's ``flip_average`` (off by default), each frame and its mirror image in one batch of two.
ORT_VARIANTS = {"onnxruntime-runspin": {"spinning": "run"}, "onnxruntime-spinning": {"spinning": "always"},
                "onnxruntime-1thread": {"threads": 1}, "onnxruntime-flip": {"flip_average": True}}
BARE_BACKENDS = ("onnxruntime", *ORT_VARIANTS, "keras-compiled", "keras-predict")
#: Node backend name (from /diagnostics) -> bare row that it is compared with.
NODE_BACKEND_ROW = {"onnxruntime": "onnxruntime", "keras-tensorflow": "keras-compiled",
                    "keras-jax": "keras-compiled", "keras-torch": "keras-compiled"}


# ----------------------------------------------------------------------------- settings


@dataclass
class BenchSettings:
    """Everything a run measures, and for how long."""

    model: Path
    sections: tuple[str, ...] = SECTIONS
    backends: tuple[str, ...] = BARE_BACKENDS
    sizes: tuple[tuple[int, int], ...] = ((480, 360), (1280, 720))  # (width, height)
    stream_size: tuple[int, int] = (480, 360)
    runs: dict[str, int] = field(default_factory=lambda: {"onnxruntime": 50, "onnxruntime-runspin": 50,
                                                          "onnxruntime-spinning": 50, "onnxruntime-1thread": 50,
                                                          "onnxruntime-flip": 50,
                                                          "keras-compiled": 30, "keras-predict": 10})
    paced_runs: int = 45  # ONNX Runtime rows at the stream size, started at each stream rate
    warmup: int = 5
    work_runs: int = 40
    rates_hz: tuple[float, ...] = (15.0, 30.0)
    flood_hz: float = 100.0
    phase_s: float = 12.0
    encoding: str = "rgb8"
    frames_dir: Path | None = None
    n_frames: int = 8
    startup_timeout_s: float = 180.0
    settle_max_s: float = 30.0
    quick: bool = False
    node_params: dict[str, str] = field(default_factory=dict)
    naive_script: Path = NAIVE_SCRIPT
    log_dir: Path = Path("out/bench")
    profile: Path | None = None
    node_profile: Path | None = None
    domain_id: int | None = None

    @classmethod
    def quick_settings(cls, model: Path, **kw: Any) -> BenchSettings:
        """A short run for development and tests (numbers are indicative only)."""
        base = {"runs": {"onnxruntime": 5, "onnxruntime-runspin": 5, "onnxruntime-spinning": 5,
                         "onnxruntime-1thread": 5, "onnxruntime-flip": 5, "keras-compiled": 3, "keras-predict": 2},
                "paced_runs": 4,
                "warmup": 1, "work_runs": 5,
                "phase_s": 2.5, "n_frames": 3, "settle_max_s": 15.0, "quick": True}
        return cls(model=model, **{**base, **kw})


