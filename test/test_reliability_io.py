"""Run and report folders, bags and decoding: nothing overwritten that a tool does not own, no silent mis-pairing.

Covers: distinct stamps (bag make) and duplicate stamps (eval); strict JPEG decoding; bag
--overwrite only for this package's bags; no tool replacing its own input; eval outputs staged
and moved into place; planted symlinks replaced, not followed; empty bags refused by the replay;
malformed images counted as bad frames by the evaluator.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from domain_ids import domain_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from road_seg_perception.bagio import bag as B
from road_seg_perception.bagio.image_codec import ImageConversionError, compressed_to_rgb
from road_seg_perception.core import fileio
from road_seg_perception.core.imageio import ImageReadError, read_image_file, read_rgb
from road_seg_perception.core.metrics import label_from_gt_image
from road_seg_perception.tools import bag as bag_cli
from road_seg_perception.tools import evaluate as E
from road_seg_perception.tools import predict
from road_seg_perception.tools.eval_scoring import EvalConfig
from road_seg_perception.training.datasets import DatasetError, LabelSpec, read_image, read_label

START_NS = 1_700_000_000_000_000_000
REPO = Path(__file__).resolve().parent.parent
QUIET = EvalConfig(progress=False, video=False)
HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


class StubSegmenter:
    """Road = red channel > 127: a deterministic stand-in for a model (scoring and plumbing only)."""

    post = SimpleNamespace(threshold=0.5, min_blob_area=0, fill_holes_area=0)
    info = {"model": "stub", "backend": "stub", "device": "cpu", "input_size": [0, 0]}

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

    def segment(self, rgb: np.ndarray, with_probability: bool = False, **_temporal):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("stub model failed")
        prob = (rgb[..., 0] > 127).astype(np.float32)
        return SimpleNamespace(mask=(prob * 255).astype(np.uint8), probability=prob,
                               timings_ms={"pre": 0.1, "infer": 0.1, "post": 0.1})


def frames(n: int, seed: int = 0, hw: tuple[int, int] = (12, 16)) -> list[B.Frame]:
    """Random frames whose ground truth is the stub's prediction (IoU 1 when paired right)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rgb = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        out.append(B.Frame(rgb, np.where(rgb[..., 0] > 127, 255, 0).astype(np.uint8)))
    return out


def bag_with_stamps(path: Path, stamps: list[int], fr: list[B.Frame]) -> Path:
    """A bag whose i-th image and ground truth carry ``stamps[i]`` (duplicates allowed), written in order."""
    with B.BagWriter(path) as w:
        for t, f in zip(stamps, fr, strict=True):
            w.write(B.IMAGE_TOPIC, t, B.image_msg(f.rgb, "rgb8", t, "cam"))
            w.write(B.GT_TOPIC, t, B.image_msg(f.gt, "mono8", t, "cam"))
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- 2: stamps


@settings(max_examples=25, deadline=None, suppress_health_check=HEALTH)
@given(rate=st.one_of(st.sampled_from([float("inf"), float("nan"), 0.0, -1.0, 1e10, 2e9]),
                      st.floats(min_value=1.0000001e9, max_value=1e300)))
def test_rates_without_distinct_stamps_are_refused(tmp_path, rate):
    out = tmp_path / f"bag_{abs(hash(rate))}"
    with pytest.raises(B.BagError, match="--rate"):
        B.write_frames(out, frames(3), rate=rate, start_ns=START_NS)
    assert not out.exists()


@settings(max_examples=15, deadline=None, suppress_health_check=HEALTH)
@given(rate=st.floats(min_value=0.01, max_value=1e9), n=st.integers(2, 6))
def test_accepted_rates_give_strictly_increasing_stamps(tmp_path, rate, n):
    out = tmp_path / f"bag_{abs(hash((rate, n)))}"
    s = B.write_frames(out, frames(n), rate=rate, start_ns=START_NS, overwrite=True)
    assert all(b > a for a, b in zip(s.stamps_ns, s.stamps_ns[1:], strict=False))
    assert [r.stamp_ns for r in B.read_frames(out)] == s.stamps_ns


@pytest.mark.parametrize(("flag", "value"), [("--start", "1e12"), ("--start", "nan"), ("--start", "-5"),
                                             ("--rate", "inf"), ("--rate", "1e10")])
def test_bag_make_bad_start_or_rate_is_one_line_exit_2(tmp_path, capsys, flag, value):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert bag_cli.main(["make", "--images", str(images), "--out", str(tmp_path / "bag"), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("road-seg-bag: error:") and flag in err
    assert not (tmp_path / "bag").exists()


@settings(max_examples=12, deadline=None, suppress_health_check=HEALTH)
@given(steps=st.lists(st.sampled_from([0, 0, 1]), min_size=3, max_size=7).filter(lambda s: 0 in s))
def test_eval_pairs_frames_with_duplicate_stamps_by_message_order(tmp_path_factory, steps):
    """Ground truth is never matched to the wrong frame: IoU is exactly 1 when every frame meets its own."""
    d = tmp_path_factory.mktemp("dup")
    stamps = list(np.cumsum([0, *steps]) * 1_000_000 + START_NS)
    fr = frames(len(stamps), seed=len(steps))
    bag = bag_with_stamps(d / "bag", [int(s) for s in stamps], fr)
    r = E.evaluate_bag(bag, d / "report", segmenter=StubSegmenter(), cfg=QUIET)
    assert r.metrics["aggregate"]["iou"] == 1.0
    assert r.metrics["frames"]["scored"] == len(stamps)
    assert "message order" in r.metrics["ground_truth"]


def test_eval_refuses_duplicate_stamps_it_cannot_pair(tmp_path):
    fr = frames(4)
    with B.BagWriter(tmp_path / "bag") as w:
        for i, f in enumerate(fr):
            t = START_NS + (i // 2) * 1_000_000
            w.write(B.IMAGE_TOPIC, t, B.image_msg(f.rgb, "rgb8", t, "cam"))
            if i != 1:  # one ground truth missing: order pairing would shift every later frame
                w.write(B.GT_TOPIC, t, B.image_msg(f.gt, "mono8", t, "cam"))
    with pytest.raises(B.BagError, match="duplicate header stamps"):
        E.evaluate_bag(tmp_path / "bag", tmp_path / "report", segmenter=StubSegmenter(), cfg=QUIET)
    assert not (tmp_path / "report" / "metrics.json").exists()


# ----------------------------------------------------------------------------- 3: corrupt JPEG


def _jpeg(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (192, 256, 3), dtype=np.uint8), (9, 9), 3)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def _msg(data: bytes):
    return SimpleNamespace(format="jpeg", data=data)


@settings(max_examples=40, deadline=None)
@given(cut=st.floats(0.3, 0.9), seed=st.integers(0, 3))
def test_truncated_jpeg_with_end_marker_is_bad(cut, seed):
    good = _jpeg(seed)
    data = good[: int(len(good) * cut)] + b"\xff\xd9"
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV decodes it
    with pytest.raises(ImageConversionError, match="corrupt jpeg"):
        compressed_to_rgb(_msg(data))


@settings(max_examples=30, deadline=None)
@given(positions=st.lists(st.floats(0.3, 0.95), min_size=3, max_size=8), seed=st.integers(0, 3))
def test_jpeg_with_marker_bytes_in_its_scan_is_bad(positions, seed):
    """Bytes flipped to 0xFF inside the entropy-coded data: libjpeg warns (corrupt data), the frame is bad."""
    data = bytearray(_jpeg(seed))
    for p in positions:
        i = int(len(data) * p) - 4
        data[i], data[i + 1] = 0xFF, 0xD5  # a restart marker where none belongs
    with pytest.raises(ImageConversionError, match="corrupt jpeg"):
        compressed_to_rgb(_msg(bytes(data)))


def test_intact_jpeg_decodes_as_opencv_does():
    good = _jpeg(1)
    ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(compressed_to_rgb(_msg(good)), ref)


#: Ways a JPEG file goes bad that OpenCV decodes without a word (grey where data is missing or damaged).
CORRUPT_JPEG = {
    "truncated": lambda good: good[: len(good) * 2 // 3],
    "truncated, end marker appended": lambda good: good[: len(good) * 2 // 3] + b"\xff\xd9",
    "bytes flipped in the scan": lambda good: _flip_scan(good, (0.4, 0.6, 0.8)),
}


def _flip_scan(good: bytes, positions: tuple[float, ...]) -> bytes:
    data = bytearray(good)
    for p in positions:
        i = int(len(data) * p)
        data[i], data[i + 1] = 0xFF, 0xD5  # a restart marker where none belongs
    return bytes(data)


@pytest.mark.parametrize("kind", sorted(CORRUPT_JPEG))
def test_corrupt_jpeg_files_are_refused_naming_the_file(tmp_path, kind):
    """``core.imageio`` (predict, the dataset readers) decodes JPEG files as strictly as frames."""
    path = tmp_path / "frame.jpg"
    path.write_bytes(CORRUPT_JPEG[kind](_jpeg(1)))
    assert cv2.imread(str(path)) is not None  # OpenCV decodes it, filling in grey
    message = f"cannot read image {path}: corrupt jpeg"
    with pytest.raises(ImageReadError, match=re.escape(message)):
        read_rgb(path)
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_image(path)
    with pytest.raises(DatasetError, match=re.escape(f"cannot read mask {path} ({message}")):
        read_label(path, LabelSpec(format="binary"))


@settings(max_examples=25, deadline=None, suppress_health_check=HEALTH)
@given(cut=st.floats(0.3, 0.95), marker=st.booleans(), seed=st.integers(0, 3))
def test_cut_jpeg_files_are_refused_wherever_cut(tmp_path_factory, cut, marker, seed):
    good = _jpeg(seed)
    path = tmp_path_factory.mktemp("jpeg") / "cut.jpg"
    path.write_bytes(good[: int(len(good) * cut)] + (b"\xff\xd9" if marker else b""))
    with pytest.raises(ImageReadError, match="corrupt jpeg"):
        read_rgb(path)


def test_intact_jpeg_files_read_as_opencv_reads_them(tmp_path):
    colour, grey = tmp_path / "colour.jpg", tmp_path / "grey.jpg"
    colour.write_bytes(_jpeg(2))
    cv2.imwrite(str(grey), cv2.cvtColor(cv2.imread(str(colour)), cv2.COLOR_BGR2GRAY))
    for path, flags in ((colour, cv2.IMREAD_COLOR), (colour, cv2.IMREAD_UNCHANGED), (grey, cv2.IMREAD_UNCHANGED),
                        (grey, cv2.IMREAD_COLOR)):
        np.testing.assert_array_equal(read_image_file(path, flags), cv2.imread(str(path), flags))
    np.testing.assert_array_equal(read_rgb(colour), cv2.cvtColor(cv2.imread(str(colour)), cv2.COLOR_BGR2RGB))


def test_predict_names_corrupt_jpeg_files_and_writes_the_others(tmp_path, tiny_model, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "good.jpg").write_bytes(_jpeg(0))
    for i, kind in enumerate(sorted(CORRUPT_JPEG)):
        (images / f"bad{i}.jpg").write_bytes(CORRUPT_JPEG[kind](_jpeg(0)))
    out = tmp_path / "out"
    rc = predict.main(["--model", str(tiny_model["onnx"]), "--output-dir", str(out), str(images)])
    err = capsys.readouterr().err
    assert rc == predict.EXIT_SOME_FAILED
    assert sorted(p.name for p in out.iterdir()) == ["good_mask.png", "good_overlay.png"]
    assert f"{len(CORRUPT_JPEG)} input(s) failed" in err
    for i in range(len(CORRUPT_JPEG)):
        bad = images / f"bad{i}.jpg"
        assert f"{bad}: cannot read image {bad}: corrupt jpeg" in err


# ----------------------------------------------------------------------------- 18: bad frames in eval


def _raw_image(t: int, **fields):
    ts = B.typestore()
    base = {"height": 12, "width": 16, "encoding": "rgb8", "is_bigendian": 0, "step": 48,
            "data": np.zeros(12 * 48, np.uint8)}
    base.update(fields)
    return ts.types[B.IMAGE_TYPE](header=B.header(t, "cam"), **base)


def test_eval_counts_malformed_and_corrupt_images_as_bad_frames(tmp_path):
    fr = frames(6)
    bad = {1: {"step": 20}, 3: {"encoding": "8UC3"}}
    with B.BagWriter(tmp_path / "bag") as w:
        for i, f in enumerate(fr):
            t = START_NS + i * 100_000_000
            msg = _raw_image(t, **bad[i]) if i in bad else B.image_msg(f.rgb, "rgb8", t, "cam")
            w.write(B.IMAGE_TOPIC, t, msg)
            w.write(B.GT_TOPIC, t, B.image_msg(f.gt, "mono8", t, "cam"))
    r = E.evaluate_bag(tmp_path / "bag", tmp_path / "report", segmenter=StubSegmenter(), cfg=QUIET)
    f = r.metrics["frames"]
    assert (f["bad"], f["processed"], f["scored"]) == (2, 4, 4)
    assert f["considered"] == f["processed"] + f["bad"] + f["skipped_every_n"]
    assert [b["index"] for b in r.metrics["bad_frames"]] == [1, 3]
    assert "step 20" in r.metrics["bad_frames"][0]["reason"] and "8UC3" in r.metrics["bad_frames"][1]["reason"]
    assert r.metrics["aggregate"]["iou"] == 1.0  # the good frames met their own ground truth
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["frames"] == f


def test_eval_counts_truncated_jpeg_frames_as_bad(tmp_path):
    fr = frames(4, hw=(32, 48))
    with B.BagWriter(tmp_path / "bag") as w:
        for i, f in enumerate(fr):
            t = START_NS + i * 100_000_000
            msg = B.compressed_msg(f.rgb, t, "cam")
            if i == 2:
                msg.data = np.concatenate([msg.data[: len(msg.data) // 2], np.array([0xFF, 0xD9], np.uint8)])
            w.write(B.COMPRESSED_TOPIC, t, msg)
            w.write(B.GT_TOPIC, t, B.image_msg(f.gt, "mono8", t, "cam"))
    r = E.evaluate_bag(tmp_path / "bag", tmp_path / "report", segmenter=StubSegmenter(), cfg=QUIET)
    assert (r.metrics["frames"]["bad"], r.metrics["frames"]["processed"]) == (1, 3)
    assert r.metrics["bad_frames"][0]["index"] == 2 and "corrupt jpeg" in r.metrics["bad_frames"][0]["reason"]


# ----------------------------------------------------------------------------- 8: bag --overwrite


def _our_bag(path: Path) -> Path:
    return B.write_frames(path, frames(2), rate=10.0, start_ns=START_NS).path


@settings(max_examples=25, deadline=None, suppress_health_check=HEALTH)
@given(names=st.lists(st.tuples(st.sampled_from(["a", "b", "bag", "x.yaml", "metadata"]),
                                st.sampled_from([".yaml", ".db3", ".mcap", ".db3-journal", ""]),
                                st.booleans()), min_size=1, max_size=4, unique_by=lambda t: t[0] + t[1]))
def test_overwrite_never_deletes_a_folder_that_is_not_our_bag(tmp_path_factory, names):
    out = tmp_path_factory.mktemp("notabag")
    for stem, suffix, is_dir in names:
        p = out / f"{stem}{suffix}"
        if is_dir:
            p.mkdir()
            (p / "keep.txt").write_text("precious")
        else:
            p.write_text("precious: 1\n")
    before = tree_bytes(out)
    with pytest.raises(B.BagError, match="not a rosbag2 bag written by road_seg_perception"):
        B.write_frames(out, frames(1), start_ns=START_NS, overwrite=True)
    assert tree_bytes(out) == before


def test_overwrite_replaces_our_bag_and_refuses_a_foreign_or_linked_one(tmp_path):
    ours = _our_bag(tmp_path / "ours")
    s = B.write_frames(ours, frames(3, seed=5), rate=10.0, start_ns=START_NS + 1, overwrite=True)
    assert s.frames == 3 and len(B.read_frames(ours)) == 3

    foreign = _our_bag(tmp_path / "foreign")
    meta = foreign / "metadata.yaml"
    meta.write_text(meta.read_text().replace("road_seg_perception", "someone_else"))
    with pytest.raises(B.BagError, match="not a rosbag2 bag written by"):
        B.write_frames(foreign, frames(1), start_ns=START_NS, overwrite=True)
    assert (foreign / "foreign.db3").is_file()

    extra = _our_bag(tmp_path / "extra")
    (extra / "notes.txt").write_text("mine")
    with pytest.raises(B.BagError, match="not a rosbag2 bag written by"):
        B.write_frames(extra, frames(1), start_ns=START_NS, overwrite=True)
    assert (extra / "notes.txt").read_text() == "mine"

    link = tmp_path / "link"
    link.symlink_to(ours)
    with pytest.raises(B.BagError, match="symbolic link"):
        B.write_frames(link, frames(1), start_ns=START_NS, overwrite=True)
    assert len(B.read_frames(ours)) == 3

    empty = tmp_path / "empty"
    empty.mkdir()
    assert B.write_frames(empty, frames(1), start_ns=START_NS, overwrite=True).frames == 1


# ----------------------------------------------------------------------------- 7: own input


def test_eval_refuses_to_replace_its_input_bag(tmp_path, capsys):
    report = tmp_path / "report"
    bag = B.write_frames(report / "output_bag", frames(3), rate=10.0, start_ns=START_NS).path
    before = tree_bytes(bag)
    with pytest.raises(B.BagError, match="is the input"):
        E.evaluate_bag(bag, report, segmenter=StubSegmenter(), cfg=QUIET)
    assert tree_bytes(bag) == before
    assert E.main([str(bag), "--report", str(report), "--model", "none.onnx"]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert tree_bytes(bag) == before
    with pytest.raises(B.BagError, match="inside the input"):
        E.evaluate_bag(bag, bag / "report", segmenter=StubSegmenter(), cfg=QUIET)


def test_bag_make_output_may_not_overlap_its_inputs(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((8, 8, 3), np.uint8))
    for out in (images, images / "bag", tmp_path):
        with pytest.raises(B.BagError, match="input"):
            bag_cli.make_bag(images, out, overwrite=True, start_ns=START_NS)
    assert sorted(p.name for p in images.iterdir()) == ["a.png"]


def test_replay_refuses_to_record_over_its_input(tmp_path):
    bag = _our_bag(tmp_path / "in")
    before = tree_bytes(bag)
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id("reliability_io_record")), "PYTHONPATH": str(REPO)}
    for target in (bag, tmp_path / "in" / ".." / "in", tmp_path):
        r = subprocess.run([sys.executable, "-m", "road_seg_perception.ros.replay", str(bag), "--record", str(target),
                            "--overwrite"], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 2, r.stderr
        assert "input" in r.stderr and "Traceback" not in r.stderr
    assert tree_bytes(bag) == before


def test_predict_never_overwrites_an_input(tmp_path, tiny_model):
    from road_seg_perception.tools import predict

    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), np.full((32, 64, 3), 90, np.uint8))
    cv2.imwrite(str(d / "a_mask.png"), np.full((32, 64, 3), 200, np.uint8))  # an input named like a's output
    before = (d / "a_mask.png").read_bytes()
    rc = predict.main([str(d / "a.png"), str(d / "a_mask.png"), "--output-dir", str(d), "--model",
                       str(tiny_model["onnx"])])
    assert rc == 1
    assert (d / "a_mask.png").read_bytes() == before
    assert (d / "a_mask_mask.png").is_file()


# ----------------------------------------------------------------------------- 9: eval staging


def test_failed_eval_leaves_previous_report_untouched(tmp_path):
    bag = B.write_frames(tmp_path / "bag", frames(5), rate=10.0, start_ns=START_NS).path
    report = tmp_path / "report"
    E.evaluate_bag(bag, report, segmenter=StubSegmenter(), cfg=EvalConfig(progress=False))
    before = tree_bytes(report)
    assert {"metrics.json", "frames.csv", "report.html", "output_bag/metadata.yaml"} <= set(before)
    other = B.write_frames(tmp_path / "other", frames(5, seed=9), rate=10.0, start_ns=START_NS).path
    with pytest.raises(RuntimeError, match="stub model failed"):
        E.evaluate_bag(other, report, segmenter=StubSegmenter(fail_after=3), cfg=EvalConfig(progress=False))
    assert tree_bytes(report) == before, "a failed run changed the previous outputs"
    assert sorted(p.name for p in report.iterdir()) == sorted({k.split("/")[0] for k in before})


def test_complete_eval_replaces_every_output_and_drops_stale_ones(tmp_path):
    bag = B.write_frames(tmp_path / "bag", frames(4), rate=10.0, start_ns=START_NS).path
    report = tmp_path / "report"
    E.evaluate_bag(bag, report, segmenter=StubSegmenter(), cfg=EvalConfig(progress=False))
    (report / "live_metrics.json").write_text("{}")  # from an earlier live run
    (report / "notes.txt").write_text("mine")  # not an output: left alone
    other = B.write_frames(tmp_path / "other", frames(3, seed=4), rate=10.0, start_ns=START_NS).path
    E.evaluate_bag(other, report, segmenter=StubSegmenter(), cfg=EvalConfig(progress=False, output_bag=False))
    m = json.loads((report / "metrics.json").read_text())
    assert m["bag"] == str(other) and m["frames"]["processed"] == 3
    assert not (report / "live_metrics.json").exists() and not (report / "output_bag").exists()
    assert (report / "notes.txt").read_text() == "mine"
    assert not [p for p in report.iterdir() if p.name.startswith(".")], "staging folder left behind"


# ----------------------------------------------------------------------------- 10: planted links


def test_eval_replaces_planted_links_instead_of_writing_through_them(tmp_path):
    bag = B.write_frames(tmp_path / "bag", frames(3), rate=10.0, start_ns=START_NS).path
    report = tmp_path / "report"
    report.mkdir()
    victims = {}
    for name in ("metrics.json", "report.html", "frames.csv"):
        victim = tmp_path / f"victim_{name}"
        victim.write_text("precious")
        (report / name).symlink_to(victim)
        victims[name] = victim
    E.evaluate_bag(bag, report, segmenter=StubSegmenter(), cfg=QUIET)
    for name, victim in victims.items():
        assert victim.read_text() == "precious", name
        assert not (report / name).is_symlink() and (report / name).stat().st_size > 0


def test_predict_replaces_planted_links(tmp_path, tiny_model):
    from road_seg_perception.tools import predict

    cv2.imwrite(str(tmp_path / "x.png"), np.full((32, 64, 3), 90, np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "x_mask.png").symlink_to(victim)
    assert predict.main([str(tmp_path / "x.png"), "--output-dir", str(out), "--model", str(tiny_model["onnx"])]) == 0
    assert victim.read_text() == "precious"
    assert not (out / "x_mask.png").is_symlink()
    assert cv2.imread(str(out / "x_mask.png"), cv2.IMREAD_UNCHANGED).shape == (32, 64)


def test_atomic_writes_replace_links_and_leave_no_temp_files(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "state.json").symlink_to(victim)
    fileio.atomic_write_text(tmp_path / "state.json", "{}")
    fileio.atomic_write_bytes(tmp_path / "blob", b"\x00\x01")
    assert victim.read_text() == "precious"
    assert (tmp_path / "state.json").read_text() == "{}" and not (tmp_path / "state.json").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "state.json", "victim"]


def test_write_atomically_returns_the_writers_result_and_a_refused_result_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("old")

    def check(limit: int):
        def write(tmp: Path) -> int:
            tmp.write_text("new")
            size = tmp.stat().st_size
            if size > limit:  # a writer refuses what it wrote by raising, as the exporter does on a parity miss
                raise RuntimeError(f"{size} > {limit}")
            return size
        return write

    with pytest.raises(RuntimeError, match="3 > 2"):
        fileio.write_atomically(path, check(2), suffix=".tmp.onnx")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    assert fileio.write_atomically(path, check(3), suffix=".tmp.onnx") == 3
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


# ----------------------------------------------------------------------------- 13 + 17: empty inputs


def _empty_bag(path: Path) -> Path:
    with B.BagWriter(path) as w:
        w.add_topic(B.IMAGE_TOPIC, B.IMAGE_TYPE)
    return path


def test_replay_refuses_an_empty_bag_instead_of_spinning(tmp_path):
    bag = _empty_bag(tmp_path / "empty")
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id("reliability_io_replay")), "PYTHONPATH": str(REPO)}
    for extra in (["--loop"], ["--loop", "--topics", B.IMAGE_TOPIC]):
        r = subprocess.run([sys.executable, "-m", "road_seg_perception.ros.replay", str(bag), *extra],
                           capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 2
        assert r.stderr.strip().splitlines() == [f"road-seg-replay: error: bag {bag} has no messages on "
                                                 f"{B.IMAGE_TOPIC}; nothing to replay"]


def test_eval_names_an_empty_bag_and_a_bad_limit(tmp_path, capsys):
    bag = _empty_bag(tmp_path / "empty")
    with pytest.raises(B.BagError, match="no messages on the image topic"):
        E.evaluate_bag(bag, tmp_path / "r", segmenter=StubSegmenter(), cfg=QUIET)
    full = B.write_frames(tmp_path / "full", frames(2), rate=10.0, start_ns=START_NS).path
    assert E.main([str(full), "--report", str(tmp_path / "r"), "--limit", "-1", "--model", "x.onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "road-seg-eval: error: --limit must be >= 1, got -1"


def test_eval_report_dir_that_is_a_file_is_named(tmp_path):
    bag = B.write_frames(tmp_path / "bag", frames(2), rate=10.0, start_ns=START_NS).path
    (tmp_path / "r").write_text("x")
    with pytest.raises(B.BagError, match="is not a folder"):
        E.evaluate_bag(bag, tmp_path / "r", segmenter=StubSegmenter(), cfg=QUIET)


def test_live_scoring_refuses_ground_truth_with_duplicate_stamps(tmp_path):
    fr = frames(2)
    bag = bag_with_stamps(tmp_path / "bag", [START_NS, START_NS], fr)
    with pytest.raises(B.BagError, match="duplicate header stamp"):
        E.score_masks({START_NS: fr[0].gt}, bag)


def test_label_pairs_in_stub_are_the_stub_prediction():
    """The stub and its ground truth agree (what the pairing tests above rely on)."""
    f = frames(1)[0]
    np.testing.assert_array_equal(StubSegmenter().segment(f.rgb).mask, f.gt)
    assert set(np.unique(label_from_gt_image(f.gt))) <= {0, 1}
