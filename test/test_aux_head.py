"""The auxiliary class head: datasets' class ids mapped onto common classes, cached and augmented with the
label, its loss term, the head itself, and runs whose saved and exported models keep the road output only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import REPO
from sample_data import two_datasets_config

from road_seg_perception.core.model_io import load_keras_model
from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.training import cli as train
from road_seg_perception.training.augment import AugmentConfig, augment_sample, augment_with_soft
from road_seg_perception.training.config import DatasetConfig, check_aux_head, load_config
from road_seg_perception.training.data import make_sequence, read_data
from road_seg_perception.training.loop import transfer_weights
from road_seg_perception.training.losses import RoadLoss, masked_class_ce, parse_loss
from road_seg_perception.training.model import UNetConfig, build_model, road_only

pytestmark = pytest.mark.usefixtures("fresh_keras_session")

#: CamVid ids onto the shipped config's seven classes (road, pavement, people, vehicles, road-side, far, sky).
CAMVID_AUX = [[3], [4], [9, 10], [8], [2, 6, 7], [1, 5], [0]]
IDD_AUX = [[0], [1], [2], [3], [4], [5], [6]]
TINY_MODEL = {"input_hw": [32, 64], "base_filters": 4, "levels": 2, "stem_stride": 2, "aux_classes": 7}


def _aux_config(tmp_path, camvid_aux=CAMVID_AUX) -> dict:
    cfg = load_config(None)
    two = two_datasets_config(tmp_path)
    cfg["datasets"] = [{**two["datasets"][0], "aux_classes": camvid_aux},
                       {**two["datasets"][1], "aux_classes": IDD_AUX}]
    cfg["model"].update(TINY_MODEL)
    cfg["train"].update(cache_dir=str(tmp_path / "cache"), aux_weight=0.5, batch_size=4, workers=1)
    return cfg


def _np_ce(ids, probs, k):
    valid = (ids >= 0) & (ids < k)
    picked = np.take_along_axis(probs, np.clip(ids, 0, k - 1)[..., None].astype(int), axis=-1)[..., 0]
    return float((-np.log(picked) * valid).sum() / valid.sum())


def test_class_cross_entropy_skips_ids_the_head_does_not_have():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), (2, 4, 5)).astype(np.float32)
    ids = rng.integers(0, 3, (2, 4, 5)).astype(np.float32)
    ids[0, 0, :3] = VOID
    ids[1, 2, 1] = 3  # no such class: ignored like void
    assert float(masked_class_ce(ids, probs)) == pytest.approx(_np_ce(ids, probs, 3), rel=1e-5)
    assert float(masked_class_ce(np.full((1, 2, 2), VOID, np.float32), probs[:1, :2, :2])) == 0.0


def test_road_loss_adds_the_weighted_class_term_and_scores_the_road_channel_alone():
    rng = np.random.default_rng(1)
    label = (rng.random((2, 4, 4, 1)) > 0.5).astype(np.float32)
    soft = np.full((2, 4, 4, 1), -1.0, np.float32)
    ids = rng.integers(0, 3, (2, 4, 4, 1)).astype(np.float32)
    road = rng.uniform(0.05, 0.95, (2, 4, 4, 1)).astype(np.float32)
    probs = rng.dirichlet(np.ones(3), (2, 4, 4)).astype(np.float32)
    y_true = np.concatenate([label, soft, ids], axis=-1)
    y_pred = np.concatenate([road, probs], axis=-1)
    road_alone = float(RoadLoss()(label, road))
    got = float(parse_loss("bce+dice", aux=0.5)(y_true, y_pred))
    assert got == pytest.approx(road_alone + 0.5 * _np_ce(ids[..., 0], probs, 3), rel=1e-5)
    assert RoadLoss(aux=0.5).get_config()["aux"] == 0.5
    with pytest.raises(ValueError, match="aux_weight"):
        parse_loss("bce", aux=-1.0)


def test_aux_settings_are_checked_with_the_key_to_fix(tmp_path):
    cfg = _aux_config(tmp_path)
    check_aux_head(cfg)
    for key, value, match in (("train", {"aux_weight": 0.0}, "go together"),
                              ("model", {"aux_classes": 5}, "lists 7 classes, model.aux_classes is 5")):
        bad = json.loads(json.dumps(cfg))
        bad[key].update(value)
        with pytest.raises(ValueError, match=match):
            check_aux_head(bad)
    bad = json.loads(json.dumps(cfg))
    for ds in bad["datasets"]:
        ds["aux_classes"] = []
    with pytest.raises(ValueError, match="no dataset gives aux_classes"):
        check_aux_head(bad)
    with pytest.raises(ValueError, match="may appear once"):
        DatasetConfig.from_dict({**cfg["datasets"][0], "aux_classes": [[3], [3, 4]]})
    with pytest.raises(ValueError, match="format camvid or idd"):
        DatasetConfig.from_dict({"name": "k", "format": "kitti", "root": "x", "aux_classes": [[1], [2]]})
    with pytest.raises(ValueError, match="list of lists"):
        DatasetConfig.from_dict({**cfg["datasets"][0], "aux_classes": [3, 4]})
    with pytest.raises(ValueError, match="model.aux_classes must be 0"):
        UNetConfig(aux_classes=1).validate()


def test_class_ids_are_mapped_cached_and_batched_beside_the_label(tmp_path, monkeypatch):
    from road_seg_perception.training import datasets

    decoded = []
    read = datasets._read_mask
    monkeypatch.setattr(datasets, "_read_mask", lambda path, *a: decoded.append(path) or read(path, *a))
    cfg = _aux_config(tmp_path)
    cfg["augment"]["enabled"] = False
    data, val, _ = read_data(cfg)
    n = len(data.labels) + sum(len(v) for v in val.values())
    assert len(decoded) == len(set(decoded)) == n  # each mask decoded once, training and validation
    groups = np.asarray(data.groups)
    for j in np.flatnonzero(groups == 0):  # camvid
        c, lab = data.classes[j], data.labels[j]
        assert set(np.unique(c)) == {0, 5, VOID}  # road -> 0, building -> 5, void 11 -> ignored
        np.testing.assert_array_equal(c == 0, lab == 1)  # the road class is the road label
        np.testing.assert_array_equal(c == VOID, lab == VOID)
    idd = data.classes[np.flatnonzero(groups == 1)[0]]
    assert idd[-1, 0] == 1 and idd[-1, -1] == 0 and idd[2, 30] == 6  # sidewalk, drivable, sky
    again, _, _ = read_data(cfg)  # from the cache: the same class ids; only the validation masks read again
    assert len(decoded) == n + n - len(data.labels)
    np.testing.assert_array_equal(np.stack(again.classes), np.stack(data.classes))
    assert any("classes" in np.load(p).files for p in (tmp_path / "cache").glob("*.npz"))
    x, y = make_sequence(data, cfg, AugmentConfig.from_dict(cfg["augment"]), 0)[0]
    assert x.shape == (4, 32, 64, 3) and y.shape == (4, 32, 64, 3)
    assert set(np.unique(y[..., 2])) <= {0, 1, 5, 6, VOID} and np.all(y[..., 1] == -1.0)  # no teacher: -1
    np.testing.assert_array_equal(y[..., 2] == 0, y[..., 0] == 1)  # in both datasets road is class 0


def test_a_dataset_without_class_ids_gives_void_ones(tmp_path):
    cfg = _aux_config(tmp_path, camvid_aux=[])
    cfg["augment"]["enabled"] = False
    data, _, _ = read_data(cfg)
    seq = make_sequence(data, cfg, AugmentConfig.from_dict(cfg["augment"]), 0)
    seen = set()
    for b in range(len(seq)):
        _, y = seq[b]
        for row, j in zip(y, seq._order[b * 4:(b + 1) * 4], strict=True):
            seen.add(data.groups[j])
            if data.groups[j] == 0:  # camvid: no aux_classes
                assert np.all(row[..., 2] == VOID)
            else:
                assert np.any(row[..., 2] == 1)
    assert seen == {0, 1}


def test_class_ids_take_the_label_geometry():
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 4, (24, 40)).astype(np.uint8)
    label = (classes == 0).astype(np.uint8)
    image = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    aug = AugmentConfig(scale=(0.7, 1.4), rotate_deg=10.0)
    _, lab, _, cls = augment_sample(image, label, None, classes, np.random.default_rng(9), aug)
    np.testing.assert_array_equal(cls == VOID, lab == VOID)
    assert (lab == VOID).any() or (lab != label).any()  # the warp moved something
    np.testing.assert_array_equal(cls[lab != VOID] == 0, lab[lab != VOID] == 1)
    im2, lab2, _ = augment_with_soft(image, label, None, np.random.default_rng(9), aug)
    np.testing.assert_array_equal(lab2, lab)  # the same draws as without class ids


@pytest.mark.parametrize("encoder", ["unet", "mobilenet_v2"])
def test_the_head_outputs_class_probabilities_and_road_only_drops_it(encoder):
    cfg = UNetConfig(input_hw=(64, 96), base_filters=4, levels=2, encoder=encoder, encoder_weights="",
                     decoder_filters=8, aux_classes=4)
    model = build_model(cfg)
    x = np.random.default_rng(0).random((2, 64, 96, 3)).astype(np.float32)
    out = np.asarray(model(x, training=False))
    assert out.shape == (2, 64, 96, 5)
    np.testing.assert_allclose(out[..., 1:].sum(-1), 1.0, atol=1e-5)
    road = road_only(model)
    assert road.output_shape == (None, 64, 96, 1) and "aux" not in {lyr.name for lyr in road.layers}
    np.testing.assert_allclose(np.asarray(road(x, training=False)), out[..., :1], atol=1e-6)
    plain = build_model(UNetConfig(input_hw=(64, 96), base_filters=4, levels=2, encoder=encoder, encoder_weights="",
                                   decoder_filters=8))
    assert road_only(plain) is plain and plain.output_shape == (None, 64, 96, 1)


def test_a_run_with_the_head_saves_and_exports_the_road_output_and_resumes(tmp_path, capsys):
    cfg = _aux_config(tmp_path)
    cfg["train"].update(epochs=1, steps_per_epoch=2)
    cfg["output"].update(samples=1)
    path = tmp_path / "aux.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"
    assert train.main(["--config", str(path), "--run-dir", str(run_dir)]) == 0
    assert load_keras_model(run_dir / "model.keras").output_shape == (None, 32, 64, 1)
    assert load_keras_model(run_dir / "last.keras").output_shape == (None, 32, 64, 8)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_outputs()[0].shape[-1] == 1
    assert train.main(["--resume", str(run_dir), "--set", "train.epochs=2"]) == 0
    state = json.loads((run_dir / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert "aux_weight: 0.5" in (run_dir / "config.yaml").read_text()
    capsys.readouterr()


def test_the_aux_config_is_the_shipped_recipe_plus_the_head():
    """docs/training.md compares config/train_road_aux.yaml with the shipped recipe: only the head may differ."""
    shipped = load_config(REPO / "config" / "train_road.yaml")
    aux = load_config(REPO / "config" / "train_road_aux.yaml")
    check_aux_head(aux)
    assert aux["model"] == {**shipped["model"], "aux_classes": 7} and aux["augment"] == shipped["augment"]
    assert aux["train"] == {**shipped["train"], "aux_weight": 0.5}
    assert [{k: v for k, v in d.items() if k != "aux_classes"} for d in aux["datasets"]] == shipped["datasets"]
    assert [d["aux_classes"] for d in aux["datasets"]] == [CAMVID_AUX, IDD_AUX]
    assert aux["output"]["name"] not in (shipped["output"]["name"], "road_mnv2_long5")


def test_initialising_from_a_road_only_model_names_the_head_it_leaves_at_its_initial_weights():
    cfg = UNetConfig(input_hw=(64, 96), base_filters=4, levels=2, encoder="mobilenet_v2", encoder_weights="",
                     decoder_filters=8, aux_classes=4)
    src, dst = build_model(cfg), build_model(cfg)
    n_all, kept_all = transfer_weights(src, dst)
    assert kept_all == [] and n_all == sum(1 for lyr in dst.layers if lyr.weights)
    head = dst.get_layer("aux_logits").get_weights()
    n, kept = transfer_weights(road_only(src), dst)
    assert kept == ["aux_logits"] and n == n_all - 1
    for a, b in zip(dst.get_layer("aux_logits").get_weights(), head, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(dst.get_layer("head_logits").get_weights(), src.get_layer("head_logits").get_weights(),
                    strict=True):
        np.testing.assert_array_equal(a, b)
