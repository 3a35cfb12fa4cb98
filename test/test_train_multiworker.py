"""``road-seg-train --distribute multiworker`` for real: two worker processes on localhost (TF_CONFIG).

A 32x64 U-Net with 4 base filters trains one epoch of one step on 4 images (global batch 4, two
per worker). Both workers must finish; only the chief writes the run folder; the chief's weights
must agree with a one-process run of the same global batch within TOLERANCE.

The 4 training images are copies of one image. With distinct images the two runs differ by design:
each worker's BatchNormalization normalises its own two images where the one-process run
normalises all four (MultiWorkerMirroredStrategy does not synchronise batch statistics), and after
AdamW's first, sign-like step about a third of the weights then sit two learning rates apart. With
equal images every worker's batch statistics equal the global ones, so the step is the same up to
the order in which floats are summed; that order still matters where a gradient is close to zero,
since AdamW's first step is about lr * sign(gradient): in the run that set TOLERANCE, 2495 of 2521
weights agreed within 0.01 x lr, 2 were one full step (2 x lr) apart.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from sample_data import train_args, write_train_config

REPO = Path(__file__).resolve().parent.parent
ROAD, SKY, VOID_ID = 3, 1, 11
LR = 0.003
#: weights after the step, |w_multiworker - w_single| per trainable weight: at least CLOSE_FRACTION of them
#: within CLOSE x LR, none more than one AdamW step (2 x LR) apart. Distinct images in the two workers'
#: halves (BatchNormalization statistics per worker) leave only about 63% within 0.1 x LR.
CLOSE, CLOSE_FRACTION = 0.01, 0.97
ARGS = ["--set", "model.input_hw=[32,64]", "--set", "model.base_filters=4", "--set", "model.levels=2",
        "--set", "model.stem_stride=2", "--set", "model.dropout=0.0", "--set", "train.batch_size=4",
        "--set", "train.epochs=1", "--set", f"train.lr={LR}", "--set", "train.workers=1",
        "--set", "augment.enabled=false", "--set", "output.onnx=false", "--set", "output.samples=1"]


def _write_split(root: Path, split: str, n: int, seed: int, copies: bool = False) -> None:
    """``n`` 64x96 road scenes (with ``copies``: ``n`` copies of one scene)."""
    (root / split).mkdir(parents=True)
    (root / f"{split}annot").mkdir(parents=True)
    for i in range(n):
        rng = np.random.default_rng(seed if copies else [seed, i])
        horizon = int(rng.integers(24, 40))
        ids = np.full((64, 96), SKY, np.uint8)
        ids[horizon:] = ROAD
        ids[horizon:horizon + 2, :10] = VOID_ID
        img = np.where((ids == ROAD)[..., None], 110, 200).astype(np.uint8).repeat(3, axis=2)
        img = np.clip(img.astype(int) + rng.integers(-30, 30, img.shape), 0, 255).astype(np.uint8)
        name = f"0001TP_{i:06d}.png"
        assert cv2.imwrite(str(root / split / name), img)
        assert cv2.imwrite(str(root / f"{split}annot" / name), ids)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _train(root: Path, run_dir: Path, distribute: str, tf_config: dict | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    cmd = [sys.executable, "-m", "road_seg_perception.training.cli",
           *train_args(root, run_dir, "--distribute", distribute, *ARGS)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    from road_seg_perception.core.model_io import load_keras_model

    model = load_keras_model(path)
    out = [np.asarray(v) for v in model.trainable_weights]
    keras.backend.clear_session()
    return out


@pytest.mark.slow
def test_two_workers_on_localhost_match_one_process(tmp_path):
    root = tmp_path / "data"
    _write_split(root, "train", 4, 0, copies=True)
    _write_split(root, "val", 2, 1)
    write_train_config(root)
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    shared_run = tmp_path / "run_multiworker"  # both workers are given the same run folder, as on shared storage
    procs = [_train(root, shared_run, "multiworker", {"cluster": cluster, "task": {"type": "worker", "index": i}})
             for i in range(2)]
    single = _train(root, tmp_path / "run_single", "none", None)
    logs = []
    for p in [*procs, single]:
        try:
            out, _ = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for q in [*procs, single]:
                q.kill()
            raise
        logs.append(out)
        assert p.returncode == 0, out[-3000:]
    assert "MultiWorkerMirroredStrategy over 2 replica(s); this is worker 0 (chief)" in logs[0]
    assert "this is worker 1\n" in logs[1]

    # the chief wrote the run folder; the other worker's copy went to a scratch folder, since removed
    m = json.loads((shared_run / "metrics.json").read_text())
    assert m["epochs_run"] == 1 and len(m["history"]) == 1
    for name in ("model.keras", "last.keras", "state.json", "config.yaml", "versions.json"):
        assert (shared_run / name).is_file(), name
    assert f"done: {shared_run}/model.keras" in logs[1]
    assert not list(Path(tempfile.gettempdir()).glob("road_seg_worker1_*/state.json"))

    multi = _weights(shared_run / "model.keras")
    one = _weights(tmp_path / "run_single" / "model.keras")
    assert [w.shape for w in multi] == [w.shape for w in one]
    diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(multi, one, strict=True)])
    close = float((diff <= CLOSE * LR).mean())
    assert close >= CLOSE_FRACTION, f"only {close:.1%} of the weights within {CLOSE} x lr of the one-process run"
    assert diff.max() <= 2.05 * LR, f"a weight {diff.max() / LR:.2f} x lr away from the one-process run"
