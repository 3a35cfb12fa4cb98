"""An ensemble of this package's own road models as the distillation teacher (``--road-models``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from sample_data import two_datasets_config

from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.training.data import teacher_file
from road_seg_perception.training.teacher import EnsembleTeacher, main


@pytest.fixture(scope="module")
def second_model(tmp_path_factory) -> Path:
    """Another tiny U-Net (other random weights) exported to ONNX."""
    import keras

    from road_seg_perception.training.export import export_onnx
    from road_seg_perception.training.model import UNetConfig, build_unet

    keras.utils.set_random_seed(7)
    model = build_unet(UNetConfig(input_hw=(32, 64), base_filters=4, levels=2, dropout=0.0))
    path = tmp_path_factory.mktemp("second") / "b.onnx"
    export_onnx(model, path, [np.random.default_rng(1).random((32, 64, 3), dtype=np.float32)])
    keras.backend.clear_session()
    return path


def _frame() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)


def test_ensemble_probability_is_the_mean_of_its_models_each_flip_averaged(tiny_model, second_model):
    image = _frame()
    paths = [tiny_model["onnx"], second_model]
    got = EnsembleTeacher(paths, flip_average=True, threads=1).road_probability(image)
    parts = [RoadSegmenter(p, backend="onnxruntime", threads=1, flip_average=True).probability(image) for p in paths]
    assert got.shape == (32, 64) and got.dtype == np.float32
    np.testing.assert_allclose(got, (parts[0] + parts[1]) / 2, atol=1e-7)
    assert np.max(np.abs(parts[0] - parts[1])) > 1e-6  # the two models differ, so the mean is not either one
    plain = EnsembleTeacher(paths, threads=1).road_probability(image)
    assert np.max(np.abs(plain - got)) > 1e-6  # flip averaging changed it


def test_cli_caches_the_ensemble_probabilities_for_training(tiny_model, second_model, tmp_path):
    two = two_datasets_config(tmp_path)
    cfg = {**two, "datasets": [{**d, "distill": 1.0} for d in two["datasets"]]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path), "--road-models", str(tiny_model["onnx"]), str(second_model),
                 "--flip-average", "--threads", "1"]) == 0
    out = teacher_file(Path(cfg["train"]["cache_dir"]), "idd", (32, 64))
    with np.load(out) as z:
        probs, names = z["probs"], list(z["names"])
    assert probs.shape == (len(names), 32, 64) and len(names) == 5  # IDD's training frames (3 held out)
    assert 0.0 <= float(probs.min()) and float(probs.max()) <= 1.0


def test_cli_refuses_a_missing_model_and_flip_without_models(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(two_datasets_config(tmp_path)))
    assert main(["--config", str(path), "--road-models", str(tmp_path / "nope.onnx")]) == 2
    err = capsys.readouterr().err
    assert "model file" in err and "nope.onnx does not exist" in err  # RoadSegmenter's check names the file
    assert main(["--config", str(path), "--flip-average"]) == 2
    assert "--flip-average applies to --road-models only" in capsys.readouterr().err
