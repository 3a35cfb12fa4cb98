"""Datasets as configuration: IDD-Lite pairing, drive/sequence hold-outs, sampling weights, the frame cache,
and the teacher cache that distillation reads."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO
from sample_data import two_datasets_config, write_idd

from road_seg_perception.core.metrics import confusion
from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.training.config import (
    DEFAULTS,
    DatasetConfig,
    TrainingConfig,
    UNetConfig,
    dataset_configs,
    load_config,
)
from road_seg_perception.training.data import (
    attach_teacher,
    dataset_samples,
    load_resized,
    read_data,
    sample_name,
    teacher_file,
)
from road_seg_perception.training.datasets import (
    DatasetError,
    LabelSpec,
    every_nth_drive,
    pair_samples,
    read_image,
    read_label,
)
from road_seg_perception.training.teacher import DEFAULT_TEACHER, Teacher, cache_probabilities


@pytest.fixture()
def two_datasets(tmp_path) -> dict:
    return two_datasets_config(tmp_path)


def test_idd_pairs_by_sequence_folder_and_reads_level1_ids(tmp_path):
    write_idd(tmp_path, {"0": 2, "10": 1, "2": 1})
    samples = pair_samples(tmp_path / "images", tmp_path / "labels", LabelSpec(format="idd", positive_ids=[0],
                                                                              void_ids=[255]))
    assert [s.drive for s in samples] == ["0", "0", "2", "10"]  # natural order of the sequence folders
    assert samples[0].mask == tmp_path / "labels" / "0" / "000000_label.png"
    label = read_label(samples[0].mask, LabelSpec(format="idd", positive_ids=[0], void_ids=[255]))
    assert label[30, 20] == 1 and label[30, 2] == 0 and label[5, 20] == 0 and label[0, 0] == VOID


def test_idd_image_without_label_is_named(tmp_path):
    write_idd(tmp_path, {"3": 1})
    (tmp_path / "labels" / "3" / "000000_label.png").unlink()
    with pytest.raises(DatasetError, match="000000_image.jpg"):
        pair_samples(tmp_path / "images", tmp_path / "labels", LabelSpec(format="idd"))


def test_holdouts_split_by_drive_never_by_frame(two_datasets):
    cv, idd = (DatasetConfig.from_dict(d, i) for i, d in enumerate(two_datasets["datasets"]))
    train, splits = dataset_samples(cv)
    assert {s.drive for s in train} == {"0006R0"} and list(splits) == ["camvid_0001TP"]
    assert len(splits["camvid_0001TP"]) == 2
    train, splits = dataset_samples(idd)
    # sequence folders in natural order 0, 1, 2, 10: every 3rd from the first = 0 and 10
    assert sorted({s.drive for s in splits["idd_val"]}) == ["0", "10"]
    assert {s.drive for s in train} == {"1", "2"}
    assert every_nth_drive(train, 0) == []


def test_dataset_entries_are_checked_with_their_index():
    with pytest.raises(KeyError, match=r"datasets\[0\]\.colour"):
        DatasetConfig.from_dict({"name": "a", "root": "x", "colour": 1})
    with pytest.raises(ValueError, match=r"datasets\[1\] \(b\)\.format"):
        DatasetConfig.from_dict({"name": "b", "root": "x", "format": "coco"}, 1)
    with pytest.raises(ValueError, match="val_masks"):
        DatasetConfig.from_dict({"name": "c", "root": "x", "val_images": "val"})


def test_set_reaches_a_dataset_by_name():
    cfg = load_config(REPO / "config/train_road.yaml", ["datasets.idd.weight=2.5", "datasets.camvid.limit=7"])
    by_name = {d.name: d for d in dataset_configs(cfg)}
    assert (by_name["idd"].weight, by_name["camvid"].weight) == (2.5, 3.0)
    assert (by_name["camvid"].limit, by_name["idd"].limit) == (7, 0)
    assert by_name["idd"].positive_ids == (0,)  # the rest of the entry is kept
    with pytest.raises(KeyError, match="no entry named 'kitti'.*camvid.*idd"):
        load_config(REPO / "config/train_road.yaml", ["datasets.kitti.weight=2"])
    with pytest.raises(KeyError, match=r"datasets\[1\]\.wieght"):
        dataset_configs(load_config(REPO / "config/train_road.yaml", ["datasets.idd.wieght=2"]))
    with pytest.raises(KeyError, match="datasets.idd must be a mapping"):
        load_config(REPO / "config/train_road.yaml", ["datasets.idd=2"])


def test_missing_holdout_drive_lists_the_drives(two_datasets):
    bad = DatasetConfig.from_dict({**two_datasets["datasets"][0], "holdout_drives": ["9999XX"]})
    with pytest.raises(DatasetError, match=r"9999XX.*0001TP"):
        dataset_samples(bad)


def test_read_data_weights_cache_and_splits(two_datasets, tmp_path):
    cfg = load_config(None)
    cfg["datasets"] = two_datasets["datasets"]
    cfg["model"]["input_hw"] = [32, 64]
    cfg["train"]["cache_dir"] = str(tmp_path / "cache")
    train, val, info = read_data(cfg)
    assert list(val) == ["camvid_0001TP", "idd_val"]
    assert val["camvid_0001TP"].labels[0].shape == (36, 48)  # validation stays at full resolution
    assert train.images[0].shape == (32, 64, 3) and train.labels[0].shape == (32, 64)  # training frames resized
    assert info["datasets"]["camvid"]["train_frames"] == 3 and info["datasets"]["idd"]["train_frames"] == 5
    order = train.epoch_order(np.random.default_rng(0))
    groups = np.asarray(train.groups)[order]
    assert (groups == 0).sum() == 6 and (groups == 1).sum() == 5  # camvid drawn twice (weight 2)
    caches = sorted(p.name for p in (tmp_path / "cache").glob("*.npz"))
    assert len(caches) == 2 and caches[0].startswith("camvid-32x64-")
    again, _, _ = read_data(cfg)  # from the cache: same arrays
    np.testing.assert_array_equal(np.stack(again.images), np.stack(train.images))
    np.testing.assert_array_equal(np.stack(again.labels), np.stack(train.labels))


def test_train_false_dataset_is_only_scored(two_datasets, tmp_path):
    cfg = load_config(None)
    cfg["datasets"] = [two_datasets["datasets"][0], {**two_datasets["datasets"][1], "train": False}]
    cfg["model"]["input_hw"] = [32, 64]
    cfg["train"]["cache_dir"] = str(tmp_path / "cache")
    train, val, info = read_data(cfg)
    assert set(train.dataset_names) == {"camvid"} and len(train) == 3
    assert "idd_val" in val and info["datasets"]["idd"]["train_frames"] == 0


def test_legacy_data_section_is_one_dataset(tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path}", "data.holdout_drive=0001TP"])
    (ds,) = TrainingConfig.from_dict(cfg).datasets
    assert ds.name == "camvid" and ds.holdout_drives == ("0001TP",) and ds.holdout_split == "val"
    assert not ds.val_images


def test_model_defaults_agree_with_the_builder():
    built = UNetConfig()
    for k, v in DEFAULTS["model"].items():
        assert (tuple(v) if isinstance(v, list) else v) == getattr(built, k), k
    assert UNetConfig.from_dict(DEFAULTS["model"]) == built


class _FakeTeacher:
    """Road probability = the image's red channel / 255, at a fixed 20x28 size."""

    def road_probability(self, image_rgb):
        return cv2.resize(image_rgb[..., 0].astype(np.float32) / 255.0, (28, 20))


def test_teacher_cache_is_attached_by_frame_name(two_datasets, tmp_path):
    ds = DatasetConfig.from_dict(two_datasets["datasets"][1], 1)
    samples, _ = dataset_samples(ds)
    out = teacher_file(tmp_path / "cache", ds.name, (32, 64))
    n = cache_probabilities(_FakeTeacher(), [s.image for s in samples[:3]], [sample_name(s) for s in samples[:3]],
                            (32, 64), out)
    assert n == 3 and out.is_file()
    arr = load_resized(ds, samples, (32, 64), None)
    assert attach_teacher(arr, out) == 3
    expected = cv2.resize(cv2.resize(arr.images[0][..., 0].astype(np.float32) / 255.0, (28, 20)), (64, 32))
    assert arr.soft[0].shape == (32, 64) and arr.soft[0].dtype == np.float16
    # the cached map is the teacher's (from the full-size frame; JPEG-decoded, so compare coarsely)
    assert abs(float(arr.soft[0].mean()) - float(expected.mean())) < 0.05
    assert np.all(arr.soft[len(samples) - 1] == -1)  # a frame the teacher did not see: no soft label


def test_missing_teacher_cache_is_a_clear_error(tmp_path, two_datasets):
    ds = DatasetConfig.from_dict(two_datasets["datasets"][1], 1)
    samples, _ = dataset_samples(ds)
    arr = load_resized(ds, samples, (32, 64), None)
    with pytest.raises(DatasetError, match="training.teacher"):
        attach_teacher(arr, tmp_path / "nope.npz")


def _unlabelled(root: Path) -> dict:
    """Unlabelled frames: two flat ones and a sequence folder of three."""
    (root / "seq7").mkdir(parents=True)
    for i, p in enumerate([root / "a_000.png", root / "b_000.jpg", *(root / "seq7" / f"{k}.png" for k in range(3))]):
        assert cv2.imwrite(str(p), np.full((30, 40, 3), 40 * i, np.uint8))
    return {"name": "frames", "format": "images", "root": str(root), "train_images": "."}


def test_unlabelled_images_are_all_void_and_train_only_through_the_teacher(two_datasets, tmp_path):
    entry = _unlabelled(tmp_path / "frames")
    ds = DatasetConfig.from_dict(entry, 2)
    samples, splits = dataset_samples(ds)
    assert not splits and len(samples) == 5
    assert sorted({s.drive for s in samples}) == ["a", "b", "seq7"]  # sub-folder = drive, else the name's prefix
    label = read_label(samples[0].mask, LabelSpec(format="images"))
    assert label.shape == (30, 40) and np.all(label == VOID)
    cfg = load_config(None)
    cfg["datasets"] = [{**two_datasets["datasets"][0], "distill": 0}, entry]  # labelled frames: ground truth only
    cfg["model"]["input_hw"] = [32, 64]
    cfg["train"]["cache_dir"] = str(tmp_path / "cache")
    with pytest.raises(DatasetError, match="distill_weight"):
        read_data(cfg)  # no teacher term: nothing to learn from them
    cfg["train"]["distill_weight"] = 0.5
    hw = (32, 64)
    out = teacher_file(tmp_path / "cache", "frames", hw)
    cache_probabilities(_FakeTeacher(), [s.image for s in samples[:4]], [sample_name(s) for s in samples[:4]], hw, out)
    with pytest.raises(DatasetError, match="1 of its 5 teacher-only frames have no teacher"):
        read_data(cfg)
    cache_probabilities(_FakeTeacher(), [s.image for s in samples], [sample_name(s) for s in samples], hw, out)
    train, val, info = read_data(cfg)
    assert list(val) == ["camvid_0001TP"] and info["datasets"]["frames"]["teacher_frames"] == 5
    frames = [i for i, g in enumerate(train.groups) if train.dataset_names[g] == "frames"]
    assert len(frames) == 5 and all(np.all(train.labels[i] == VOID) for i in frames)
    assert all(float(train.soft[i].min()) >= 0 for i in frames)  # every one has the teacher's map


@pytest.mark.parametrize("bad", [{"holdout_every": 2}, {"val_images": "v", "val_masks": "v"}, {"distill": 0},
                                 {"train": False}])
def test_unlabelled_images_cannot_be_scored_or_skip_the_teacher(tmp_path, bad):
    with pytest.raises(ValueError, match=r"datasets\[0\] \(frames\).*teacher"):
        DatasetConfig.from_dict({**_unlabelled(tmp_path / "frames"), **bad}, 0)


def test_ground_truth_false_trains_through_the_teacher_only_and_still_scores_its_splits(two_datasets, tmp_path):
    cfg = load_config(None)
    camvid, idd = two_datasets["datasets"]
    cfg["datasets"] = [{**camvid, "distill": 0}, {**idd, "ground_truth": False}]
    cfg["model"]["input_hw"] = [32, 64]
    cfg["train"]["cache_dir"] = str(tmp_path / "cache")
    with pytest.raises(DatasetError, match=r"idd is set to ground_truth: false.*distill_weight"):
        read_data(cfg)
    cfg["train"]["distill_weight"] = 1.0
    ds = DatasetConfig.from_dict(cfg["datasets"][1], 1)
    samples, _ = dataset_samples(ds)
    out = teacher_file(tmp_path / "cache", "idd", (32, 64))
    cache_probabilities(_FakeTeacher(), [s.image for s in samples[:-1]], [sample_name(s) for s in samples[:-1]],
                        (32, 64), out)
    with pytest.raises(DatasetError, match=f"1 of its {len(samples)} teacher-only frames have no teacher"):
        read_data(cfg)
    cache_probabilities(_FakeTeacher(), [s.image for s in samples], [sample_name(s) for s in samples], (32, 64), out)
    train, val, info = read_data(cfg)
    assert info["datasets"]["idd"]["ground_truth"] is False and info["datasets"]["idd"]["teacher_frames"] == 5
    rows = [i for i, g in enumerate(train.groups) if train.dataset_names[g] == "idd"]
    assert len(rows) == 5 and all(np.all(train.labels[i] == VOID) for i in rows)
    assert all(float(train.soft[i].min()) >= 0 for i in rows)  # the teacher's map is what they learn
    others = [i for i in range(len(train)) if i not in rows]
    assert others and all(np.isin(train.labels[i], [0, 1, VOID]).all() and (train.labels[i] == 1).any()
                          for i in others)  # CamVid keeps its labels
    # the validation split still carries IDD-Lite's own labels: drivable bottom half, sidewalk not
    lab = val["idd_val"].labels[0]
    assert lab.shape == (40, 56) and np.all(lab[20:, 8:] == 1) and np.all(lab[20:, :8] == 0) and lab[0, 0] == VOID


@pytest.mark.parametrize("bad", [{"distill": 0}, {"train": False}])
def test_ground_truth_false_needs_the_teacher(two_datasets, bad):
    with pytest.raises(ValueError, match=r"datasets\[1\] \(idd\)\.ground_truth"):
        DatasetConfig.from_dict({**two_datasets["datasets"][1], "ground_truth": False, **bad}, 1)


def test_teacher_road_probability_on_a_camvid_frame(camvid):
    path = REPO / DEFAULT_TEACHER
    if not path.is_file():
        pytest.skip(f"teacher model {path} is missing")
    teacher = Teacher(path, threads=1)
    frame = camvid / "val" / "0016E5_07965.png"
    image = read_image(frame)
    prob = teacher.road_probability(image)
    assert prob.shape == (512, 896) and prob.dtype == np.float32 and 0.0 <= prob.min() and prob.max() <= 1.0 + 1e-5
    mask = teacher.mask(image)
    label = read_label(camvid / "valannot" / frame.name, LabelSpec())
    assert mask.shape == label.shape and confusion(mask, label).iou > 0.9


@pytest.mark.parametrize(("cross", "left_out"), [("train_road_no_camvid.yaml", "camvid"),
                                                 ("train_road_no_idd.yaml", "idd")])
def test_cross_dataset_configs_are_the_shipped_recipe_without_one_dataset(cross, left_out):
    """The model card's cross-dataset rows compare like with like: only training data, length and name differ."""
    shipped = load_config(REPO / "config" / "train_road.yaml")
    other = load_config(REPO / "config" / cross)
    assert other["model"] == shipped["model"] and other["augment"] == shipped["augment"]
    same_train = {k: v for k, v in shipped["train"].items() if k not in ("epochs", "select_split")}
    assert {k: v for k, v in other["train"].items() if k not in ("epochs", "select_split")} == same_train
    # the checkpoint is chosen on a split of the data it trained on, never on the split it is scored on
    chosen = other["train"]["select_split"]
    assert chosen and not chosen.startswith(left_out)
    assert other["output"]["name"] != shipped["output"]["name"]
    for mine, theirs in zip(other["datasets"], shipped["datasets"], strict=True):
        assert mine.get("train", True) is (mine["name"] != left_out)
        assert {k: v for k, v in mine.items() if k != "train"} == \
            {k: v for k, v in theirs.items() if k != "train"}


def test_teacher_cross_config_only_adds_the_teacher_term_on_idd_frames():
    """The with-teacher no-CamVid run differs from the plain one only by the teacher term on IDD-Lite frames."""
    plain = load_config(REPO / "config" / "train_road_no_camvid.yaml")
    taught = load_config(REPO / "config" / "train_road_no_camvid_teacher.yaml")
    assert plain["train"]["distill_weight"] == 0 and taught["train"]["distill_weight"] == 0.5
    assert {k: v for k, v in taught["train"].items() if k != "distill_weight"} == \
        {k: v for k, v in plain["train"].items() if k != "distill_weight"}
    assert taught["model"] == plain["model"] and taught["augment"] == plain["augment"]
    camvid, idd = taught["datasets"]
    assert camvid["name"] == "camvid" and camvid["train"] is False  # CamVid is only scored
    assert idd["name"] == "idd" and idd["distill"] == 1.0
    assert [{k: v for k, v in d.items() if k != "distill"} for d in taught["datasets"]] == \
        [{k: v for k, v in d.items() if k != "distill"} for d in plain["datasets"]]
    assert taught["output"]["name"] not in (plain["output"]["name"], "road_mnv2")


def test_teacher_labels_cross_config_swaps_idd_labels_for_the_teacher():
    """The teacher-labelled no-CamVid run differs from the plain one only in what IDD-Lite's frames learn."""
    plain = load_config(REPO / "config" / "train_road_no_camvid.yaml")
    taught = load_config(REPO / "config" / "train_road_no_camvid_teacher_labels.yaml")
    assert taught["train"]["distill_weight"] == 1.0
    assert {k: v for k, v in taught["train"].items() if k not in ("distill_weight", "select_split")} == \
        {k: v for k, v in plain["train"].items() if k not in ("distill_weight", "select_split")}
    assert taught["model"] == plain["model"] and taught["augment"] == plain["augment"]
    camvid, idd = (DatasetConfig.from_dict(d, i) for i, d in enumerate(taught["datasets"]))
    assert not camvid.train and idd.train and not idd.ground_truth and idd.distill == 1.0
    # idd_val scores IDD-Lite's labels, which this run does not learn: no split chooses its checkpoint
    assert idd.holdout_split == "idd_val" and taught["train"]["select_split"] == "last"
    assert [{k: v for k, v in d.items() if k not in ("distill", "ground_truth")} for d in taught["datasets"]] == \
        [{k: v for k, v in d.items() if k != "distill"} for d in plain["datasets"]]
    assert taught["output"]["name"] == "road_mnv2_no_camvid_teacher_labels"


def test_evenly_spaced_spreads_from_first_to_last():
    from road_seg_perception.training.data import evenly_spaced

    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spaced(list(range(3)), 5) == [0, 1, 2]  # never more than there are, none twice
    assert evenly_spaced(list(range(3)), 0) == [] and evenly_spaced([], 4) == []


def test_cache_writers_at_once_each_leave_a_complete_file(tmp_path):
    """Workers of one run write the same cache file together: every write lands whole, no temp file stays."""
    from concurrent.futures import ThreadPoolExecutor

    from road_seg_perception.training.data import save_npz

    path = tmp_path / "cache" / "camvid-32x64-x.npz"
    arrays = [np.full((50, 32, 64), i, np.uint8) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda a: save_npz(path, images=a), arrays))
    with np.load(path) as z:
        assert z["images"].shape == (50, 32, 64) and len(np.unique(z["images"])) == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]
