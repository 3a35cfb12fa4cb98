"""Discriminative learning rates: the encoder steps at ``train.encoder_lr_scale`` x the decoder's rate."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from road_seg_perception.core.model_io import inspect_keras_file, load_keras_model
from road_seg_perception.training.config import UNetConfig
from road_seg_perception.training.losses import parse_loss
from road_seg_perception.training.model import build_model, encoder_layers
from road_seg_perception.training.optimizer import EncoderScaledAdamW, make_optimizer

TINY = UNetConfig(input_hw=(32, 64), encoder="mobilenet_v2", encoder_weights="", decoder_filters=8, dropout=0.0)


@pytest.fixture(autouse=True)
def _clear_session():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


def _steps(scale: float, n: int = 3) -> tuple[float, float, keras.Model]:
    """Mean absolute change of encoder and of head weights after ``n`` AdamW steps."""
    keras.utils.set_random_seed(0)
    model = build_model(TINY)
    opt = make_optimizer(model, 1e-2, 0.0, scale)
    model.compile(optimizer=opt, loss=parse_loss("bce+dice"))
    enc = model.get_layer("enc_mobilenet_v2").get_layer("Conv1")
    head = model.get_layer("head_logits")
    e0, h0 = enc.get_weights()[0].copy(), head.get_weights()[0].copy()
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 64, 3), dtype=np.float32)
    y = (rng.random((4, 32, 64, 1)) > 0.5).astype(np.float32)
    for _ in range(n):
        model.train_on_batch(x, y)
    return (float(np.abs(enc.get_weights()[0] - e0).mean()), float(np.abs(head.get_weights()[0] - h0).mean()),
            model)


def test_encoder_moves_at_the_scaled_rate_and_the_head_at_the_full_rate():
    enc_full, head_full, _ = _steps(1.0)
    enc_slow, head_slow, model = _steps(0.1)
    assert isinstance(model.optimizer, EncoderScaledAdamW)
    n_enc = sum(len(lyr.trainable_variables) for lyr in encoder_layers(model))
    assert model.optimizer.scaled_count == n_enc > 0
    assert enc_full > 0 and head_full > 0
    # Adam's step is about lr per weight, so a tenth of the rate gives about a tenth of the change
    assert 0.05 < enc_slow / enc_full < 0.2
    assert 0.5 < head_slow / head_full < 2.0


def test_scale_one_is_plain_adamw_and_bad_scales_are_refused():
    model = build_model(TINY)
    assert type(make_optimizer(model, 1e-3, 1e-4, 1.0)) is keras.optimizers.AdamW
    with pytest.raises(ValueError, match="encoder_lr_scale must be > 0"):
        make_optimizer(model, 1e-3, 1e-4, 0.0)


def test_saved_model_with_the_optimizer_is_safe_and_resumes_with_its_scale(tmp_path):
    _, _, model = _steps(0.25, n=1)
    path = tmp_path / "last.keras"
    model.save(path)
    assert inspect_keras_file(path) == []  # registered under the package: not refused as custom code
    back = load_keras_model(path, compile=True)
    assert isinstance(back.optimizer, EncoderScaledAdamW)
    assert back.optimizer.encoder_lr_scale == 0.25
    assert back.optimizer.encoder_paths == model.optimizer.encoder_paths
