"""Flip averaging (``RoadSegmenter(flip_average=True)``, the node's ``flip_average``, the tools' ``--flip-average``):
the probability is the mean of the model's on the frame and, mirrored back, on its mirror image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from road_seg_perception.core.preprocessing import upsample_probability
from road_seg_perception.core.segmenter import PostConfig, RoadSegmenter
from road_seg_perception.tools import predict


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """An RGB frame whose left and right halves differ (grey road on the left, texture on the right)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[h // 3:, : w // 2] = 100
    return img


def _expected(plain: RoadSegmenter, rgb: np.ndarray) -> np.ndarray:
    """The flip-averaged probability computed from the plain segmenter's outputs on the frame and its mirror."""
    return 0.5 * (plain.probability(rgb) + plain.probability(np.ascontiguousarray(rgb[:, ::-1]))[:, ::-1])


@pytest.mark.parametrize("kind", ["onnx", "keras"])
def test_probability_is_the_mean_with_the_mirrored_frames(tiny_model, kind):
    backend = "onnxruntime" if kind == "onnx" else "keras"
    plain = RoadSegmenter(tiny_model[kind], backend=backend)
    flip = RoadSegmenter(tiny_model[kind], backend=backend, flip_average=True)
    rgb = _image(32, 64, 0)  # the model's input size: no resize between the two ways of mirroring
    got = flip.probability(rgb)
    assert got.dtype == np.float32 and got.shape == (32, 64)
    np.testing.assert_allclose(got, _expected(plain, rgb), rtol=0, atol=1e-7)
    # the untrained model's outputs lie within about 1e-5 of 0.5, and it is not mirror-symmetric
    assert np.abs(got - plain.probability(rgb)).max() > 1e-6
    flip.flip_average = False  # changeable at any time
    np.testing.assert_array_equal(flip.probability(rgb), plain.probability(rgb))


def test_segment_thresholds_the_averaged_probability_at_the_frames_size(tiny_model):
    plain = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime")
    rgb = _image(32, 64, 1)
    expected = _expected(plain, rgb)
    thr = float(np.median(expected))  # masks with both values, so the comparison means something
    flip = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime", post=PostConfig(threshold=thr),
                         flip_average=True)
    big = cv2.resize(rgb, (160, 80), interpolation=cv2.INTER_NEAREST)  # 80x160: resized in and out
    r = flip.segment(big, with_probability=True)
    assert r.mask.shape == (80, 160) and r.mask.dtype == np.uint8
    np.testing.assert_allclose(r.low_res_probability, _expected(plain, big), rtol=0, atol=1e-7)
    np.testing.assert_allclose(r.probability, upsample_probability(r.low_res_probability, (80, 160)), atol=1e-6)
    np.testing.assert_array_equal(r.mask, np.where(r.probability >= thr, 255, 0).astype(np.uint8))
    assert set(np.unique(r.mask)) == {0, 255}


def test_predict_flag_writes_the_flip_averaged_masks(tiny_model, tmp_path):
    rgb = _image(32, 64, 2)
    src = tmp_path / "frame.png"
    assert cv2.imwrite(str(src), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    plain = RoadSegmenter(tiny_model["onnx"], backend="onnxruntime")
    thr = float(np.median(_expected(plain, rgb)))
    out = tmp_path / "out"
    rc = predict.main(["--model", str(tiny_model["onnx"]), "--threshold", repr(thr), "--flip-average",
                       "--output-dir", str(out), str(src)])
    assert rc == 0
    mask = cv2.imread(str(Path(out) / "frame_mask.png"), cv2.IMREAD_UNCHANGED)
    want = RoadSegmenter(tiny_model["onnx"], post=PostConfig(threshold=thr), flip_average=True).segment(rgb).mask
    np.testing.assert_array_equal(mask, want)
    plain.post = PostConfig(threshold=thr)
    assert not np.array_equal(mask, plain.segment(rgb).mask)  # the flag changed the result
