"""The runtime set needs no training stack: the node, ``road-seg-predict`` with an ``.onnx`` model and
``road-seg-eval`` run in processes where TensorFlow, Keras, tf2onnx and onnx cannot be imported.

Each child process gets a ``sitecustomize`` that makes those imports fail as if the packages were
not installed and logs every attempt; the tests check the outputs and that nothing even tried.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from road_seg_perception.bagio.bag import Frame, write_frames
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.tools.live import run_live

REPO = Path(__file__).resolve().parent.parent
TRAINING_ONLY = ("tensorflow", "keras", "tf2onnx", "onnx", "jax", "torch")

BLOCKER = """
import os, sys

class _NotInstalled:
    blocked = {blocked!r}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            with open(os.environ["ROAD_SEG_BLOCK_LOG"], "a") as f:
                f.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: runtime set only)", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


@pytest.fixture
def runtime_env(tmp_path, monkeypatch) -> tuple[dict[str, str], Path]:
    """Environment whose Python processes cannot import the training stack, and the attempt log."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER.format(blocked=TRAINING_ONLY)))
    log = tmp_path / "blocked_imports.log"
    log.write_text("")
    path = os.pathsep.join([str(site), str(REPO)])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("ROAD_SEG_BLOCK_LOG", str(log))
    return dict(os.environ), log


def test_blocker_makes_training_imports_fail(runtime_env):
    env, log = runtime_env
    r = subprocess.run([sys.executable, "-c", "import keras"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "blocked: runtime set only" in r.stderr
    assert log.read_text().split() == ["keras"]


def test_predict_with_onnx_model_runs_without_tensorflow(runtime_env, tiny_model, tmp_path):
    env, log = runtime_env
    rgb = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "frame.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    r = subprocess.run([sys.executable, "-m", "road_seg_perception.tools.predict", "--model", str(tiny_model["onnx"]),
                        "--output-dir", str(tmp_path / "out"), str(tmp_path / "frame.png")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    mask = cv2.imread(str(tmp_path / "out" / "frame_mask.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, RoadSegmenter(tiny_model["onnx"]).segment(rgb).mask)
    assert log.read_text() == ""


def _small_bag(path: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(2)
    frames = []
    for _ in range(n):
        rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
        gt = np.zeros((60, 80), np.uint8)
        gt[30:] = 255
        frames.append(Frame(rgb, gt))
    write_frames(path, frames, rate=10.0)
    return path


def test_eval_runs_without_tensorflow(runtime_env, tiny_model, tmp_path):
    env, log = runtime_env
    bag = _small_bag(tmp_path / "bag")
    r = subprocess.run([sys.executable, "-m", "road_seg_perception.tools.evaluate", str(bag), "--report",
                        str(tmp_path / "report"), "--model", str(tiny_model["onnx"])],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert m["frames"]["scored"] == 4
    assert (tmp_path / "report" / "report.html").is_file()
    assert log.read_text() == ""


def test_node_runs_without_tensorflow(runtime_env, tiny_model, tmp_path):
    _, log = runtime_env
    bag = _small_bag(tmp_path / "bag", n=5)
    run = run_live(bag, tmp_path / "live", tiny_model["onnx"], rate=0, lockstep=True)
    assert run.node_returncode == 0, run.node_log[-2000:]
    assert len(run.outputs) == 5
    assert all(o.mask.shape == (60, 80) for o in run.outputs)
    assert log.read_text() == "", f"the node tried to import: {log.read_text()}"
