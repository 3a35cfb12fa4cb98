"""Shared fixtures: a tiny model built and exported once per session, data locations, a live node harness."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from domain_ids import domain_id

REPO = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = REPO / "models" / "road_unet_camvid.onnx"  # float, the .keras file's weights
SHIPPED_INT8 = REPO / "models" / "road_unet_camvid_int8.onnx"  # the node's default on a CPU where INT8 pays


def camvid_root() -> Path:
    return Path(os.environ.get("ROAD_SEG_CAMVID", REPO.parent / "shared" / "datasets" / "camvid"))


@pytest.fixture
def fresh_keras_session():
    """Clear Keras' global state before and after a test, so layer names and memory do not carry over
    (test files that build models use it for every test: ``pytestmark = pytest.mark.usefixtures(...)``)."""
    import keras

    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


@pytest.fixture(scope="session")
def camvid() -> Path:
    """The CamVid folder, or skip with the reason."""
    root = camvid_root()
    if not (root / "val").is_dir():
        pytest.skip(f"CamVid not found at {root} (set ROAD_SEG_CAMVID)")
    return root


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """The shipped default model, or skip with the reason."""
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"shipped model {SHIPPED_MODEL} is missing")
    return SHIPPED_MODEL


@pytest.fixture(scope="session")
def shipped_int8() -> Path:
    """The shipped INT8 copy of the model (the default), or skip with the reason."""
    if not SHIPPED_INT8.is_file():
        pytest.skip(f"shipped model {SHIPPED_INT8} is missing")
    return SHIPPED_INT8


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> dict[str, Path]:
    """A tiny untrained U-Net (input 32x64) saved as .keras and .onnx with the same stem."""
    import keras

    from road_seg_perception.training.export import export_onnx
    from road_seg_perception.training.model import UNetConfig, build_unet

    d = tmp_path_factory.mktemp("tiny_model")
    keras.utils.set_random_seed(0)
    model = build_unet(UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, dropout=0.0))
    keras_path = d / "tiny.keras"
    model.save(keras_path)
    onnx_path = d / "tiny.onnx"
    rng = np.random.default_rng(0)
    export_onnx(model, onnx_path, [rng.random((32, 64, 3), dtype=np.float32)])
    keras.backend.clear_session()
    return {"keras": keras_path, "onnx": onnx_path, "dir": d}


# ----------------------------------------------------------------------------- a live node under test


@pytest.fixture(scope="module")
def ros_domain_id(request) -> int:
    """The ROS domain id of this test module: ``domain_id`` of its name without ``test_`` (subprocesses it
    starts get it as ``ROS_DOMAIN_ID``)."""
    return domain_id(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"))


@pytest.fixture(scope="module")
def ctx(ros_domain_id):
    """A private rclpy context for one test module (on ``ros_domain_id``, no signal handlers)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id, signal_handler_options=SignalHandlerOptions.NO)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture
def harness(ctx, tiny_model):
    """A factory of ``ros_helpers.Harness`` objects (node under test + test-side node), closed afterwards."""
    from ros_helpers import Harness

    made: list[Harness] = []

    def make(**kw) -> Harness:
        h = Harness(ctx, kw.pop("model", tiny_model["onnx"]), **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
