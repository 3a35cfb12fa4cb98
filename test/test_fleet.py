"""Fleet evaluation: bags found from folders/globs/lists, Ray with 2 workers equal to sequential scoring bit
for bit, a failing bag reported without stopping the others, Ctrl-C writes nothing, the fleet report's sums."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from road_seg_perception.bagio.bag import Frame, write_frames
from road_seg_perception.core.imageio import DEFAULT_MAX_IMAGE_PIXELS, max_image_pixels
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.tools import evaluate
from road_seg_perception.tools import fleet as F
from road_seg_perception.tools.eval_scoring import EvalConfig
from road_seg_perception.tools.evaluate import evaluate_bag
from road_seg_perception.tools.fleet_report import write_fleet_report
from road_seg_perception.tools.fleet_task import FleetError, TaskOptions

N_FRAMES = (3, 4, 5)


def _frames(seed: int, n: int) -> list[Frame]:
    """64x96 frames: grey road below a random horizon, noisy; ground truth 255 road, 0 not, a void strip."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = 64, 96
        horizon = int(rng.integers(20, 44))
        rgb = np.full((h, w, 3), (90, 150, 200), np.uint8)
        rgb[horizon:] = (110, 110, 110)
        rgb = np.clip(rgb.astype(int) + rng.integers(-40, 40, rgb.shape), 0, 255).astype(np.uint8)
        gt = np.zeros((h, w), np.uint8)
        gt[horizon:] = 255
        gt[horizon:horizon + 2, :12] = 128
        out.append(Frame(rgb, gt))
    return out


@pytest.fixture(scope="module")
def drives(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("drives")
    good = []
    for i, n in enumerate(N_FRAMES):
        p = root / "fleet" / f"drive_{i}"
        write_frames(p, _frames(i, n), start_ns=1_700_000_000_000_000_000 + i * 10**9)
        good.append(p)
    no_gt = root / "fleet" / "drive_no_gt"  # a bag without the ground-truth topic
    write_frames(no_gt, [Frame(f.rgb) for f in _frames(9, 2)], start_ns=1_700_000_100_000_000_000)
    corrupt = root / "fleet" / "drive_corrupt"  # metadata that is not a bag's
    corrupt.mkdir()
    (corrupt / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, bag\n")
    return {"good": good, "no_gt": [no_gt], "corrupt": [corrupt], "root": [root]}


@pytest.fixture(scope="module")
def onnx_model(tiny_model) -> Path:
    return tiny_model["onnx"]


def _counts(frames) -> list[tuple[int, int, int, int]]:
    return [(r.confusion.tp, r.confusion.fp, r.confusion.fn, r.confusion.tn) for r in frames]


def test_find_bags_from_folders_globs_and_lists(drives, tmp_path):
    fleet = drives["root"][0] / "fleet"
    all_bags = sorted(p for p in fleet.iterdir())
    assert F.find_bags([str(fleet)]) == all_bags
    assert F.find_bags([str(fleet / "drive_[01]")]) == drives["good"][:2]
    lst = tmp_path / "bags.txt"
    lst.write_text(f"# drives to score\n{drives['good'][2]}\n\n{fleet}/drive_0  # again below\n")
    # list file, then a glob that repeats a listed bag: each bag once, in first-seen order
    assert F.find_bags([str(lst), str(fleet / "drive_*")]) == [drives["good"][2], drives["good"][0],
                                                             drives["good"][1], *drives["corrupt"],
                                                             *drives["no_gt"]]
    assert F.bag_names([Path("a/x"), Path("b/x"), Path("c/y")]) == ["x", "x-2", "y"]
    with pytest.raises(FleetError, match="matches no bag"):
        F.find_bags([str(tmp_path / "nothing_*")])
    with pytest.raises(FleetError, match="no such bag"):
        F.find_bags([str(tmp_path / "missing")])
    with pytest.raises(FleetError, match="neither a bag"):
        F.find_bags([str(tmp_path)])


def test_ray_two_workers_equal_sequential_bit_for_bit(drives, onnx_model, tmp_path):
    bags = [drives["good"][0], *drives["no_gt"], drives["good"][1], *drives["corrupt"], drives["good"][2]]
    opts = TaskOptions(EvalConfig(worst_k=2))
    finished: list[str] = []
    outcomes = F.run_fleet(bags, opts, onnx_model, workers=2, progress=False,
                           on_done=lambda o: finished.append(o.name))
    assert sorted(finished) == sorted(b.name for b in bags)
    assert [o.name for o in outcomes] == [b.name for b in bags]  # bags' order, whatever finished first
    by_name = {o.name: o for o in outcomes}

    # sequential reference: the single-bag evaluation in this process, default inference threads
    seg = RoadSegmenter(onnx_model)
    total = np.zeros(4, np.int64)
    for bag, n in zip(drives["good"], N_FRAMES, strict=True):
        ref = evaluate_bag(bag, tmp_path / bag.name, segmenter=seg, cfg=EvalConfig(progress=False, video=False,
                                                                                   output_bag=False))
        o = by_name[bag.name]
        assert o.ok, o.error
        assert o.metrics["aggregate"]["confusion"] == ref.metrics["aggregate"]["confusion"]
        assert _counts(o.frames) == _counts(ref.frames) and len(o.frames) == n
        assert [r.stamp_ns for r in o.frames] == [r.stamp_ns for r in ref.frames]
        # the driver keeps only panels that can still be among the fleet's 2 worst frames
        assert {(w.index, w.iou) for w in o.worst} <= {(w.index, w.iou) for w in ref.worst[:2]}
        assert o.metrics["model"]["model"] == str(onnx_model)
        total += [ref.metrics["aggregate"]["confusion"][k] for k in ("tp", "fp", "fn", "tn")]
    assert "ground-truth topic" in by_name["drive_no_gt"].error
    assert by_name["drive_corrupt"].error.startswith("BagError: cannot open bag")

    # the fleet report: summed confusion, bags worst first, failed bags listed, one CSV row per frame
    run_info = {"workers": 2, "ray_address": None, "threads_per_worker": 1, "wall_s": 1.0,
                "model": str(onnx_model), "post": {"threshold": 0.5}}
    assert sum(len(o.worst) for o in outcomes) == 2
    m = write_fleet_report(tmp_path / "fleet_report", outcomes, run_info, worst_k=2)
    on_disk = json.loads((tmp_path / "fleet_report" / "metrics.json").read_text())
    assert on_disk["aggregate"]["confusion"] == dict(zip(("tp", "fp", "fn", "tn"), total.tolist(), strict=True))
    tp, fp, fn, _ = total
    assert on_disk["aggregate"]["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert on_disk["bags_failed"] == 2 and on_disk["frames"]["scored"] == sum(N_FRAMES)
    ok_rows = [r for r in on_disk["bags"] if r["status"] == "ok"]
    assert [r["iou"] for r in ok_rows] == sorted(r["iou"] for r in ok_rows)
    assert on_disk["label_next"] == [r["name"] for r in ok_rows]
    assert [r["name"] for r in on_disk["bags"][:2]] == ["drive_no_gt", "drive_corrupt"]
    all_frames = [(o.name, r.index) for o in outcomes if o.ok for r in o.frames]
    worst2 = sorted(r.confusion.iou for o in outcomes if o.ok for r in o.frames)[:2]
    assert [w["iou"] for w in on_disk["worst_frames"]] == worst2
    rows = list(csv.DictReader((tmp_path / "fleet_report" / "frames.csv").open()))
    assert len(rows) == len(all_frames) == sum(N_FRAMES)
    assert {r["bag"] for r in rows} == {b.name for b in drives["good"]}
    html = (tmp_path / "fleet_report" / "report.html").read_text()
    assert html.count("<img alt='drive_") == 2 and "drive_corrupt" in html
    assert m["aggregate"] == on_disk["aggregate"]
    flicker = [r.flicker for o in outcomes if o.ok for r in o.frames if r.flicker is not None]
    assert len(flicker) == sum(n - 1 for n in N_FRAMES)  # one per consecutive pair within each bag
    assert on_disk["flicker"]["mean"] == pytest.approx(np.mean(flicker))
    assert all(r["flicker"]["pairs"] == r["frames"] - 1 for r in ok_rows)


def test_ctrl_c_cancels_workers_and_writes_nothing(drives, onnx_model, tmp_path, monkeypatch, capsys):
    import ray  # requirements-fleet.txt: installed by make setup, so this test always runs in make test


    def interrupt(_outcome):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        F.run_fleet(drives["good"], TaskOptions(), onnx_model, workers=2, progress=False, on_done=interrupt)
    assert not ray.is_initialized()  # the Ray started for the run is shut down

    def interrupted_run(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(F, "run_fleet", interrupted_run)
    report = tmp_path / "report"
    rc = F.main([str(d) for d in drives["good"]] + ["--report", str(report), "--workers", "0",
                                                   "--model", str(onnx_model)])
    assert rc == F.EXIT_INTERRUPTED
    assert "nothing written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_in_process_reports_failed_bag_and_keeps_the_others(drives, onnx_model, tmp_path, capsys):
    report = tmp_path / "report"
    rc = F.main([str(drives["good"][0]), str(drives["good"][1]), *map(str, drives["no_gt"]), "--report",
                 str(report), "--workers", "0", "--model", str(onnx_model), "--no-progress"])
    assert rc == F.EXIT_FAILED_BAGS
    m = json.loads((report / "metrics.json").read_text())
    assert m["bags_total"] == 3 and m["bags_failed"] == 1
    assert m["frames"]["scored"] == N_FRAMES[0] + N_FRAMES[1]
    assert "failed: " in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no staging folder left behind
    # a second run replaces the report whole
    rc = F.main([str(drives["good"][2]), str(drives["good"][0]), "--report", str(report), "--workers", "0",
                 "--model", str(onnx_model), "--no-progress"])
    assert rc == 0
    assert json.loads((report / "metrics.json").read_text())["frames"]["scored"] == N_FRAMES[2] + N_FRAMES[0]


def test_cli_single_bag_is_the_single_bag_evaluation(drives, onnx_model, tmp_path):
    report = tmp_path / "one"
    assert F.main([str(drives["good"][0]), "--report", str(report), "--model", str(onnx_model), "--no-video",
                   "--no-bag"]) == 0
    m = json.loads((report / "metrics.json").read_text())
    assert m["bag"] == str(drives["good"][0]) and m["frames"]["scored"] == N_FRAMES[0]
    assert (report / "frames.csv").is_file() and not (report / "output_bag").exists()


def test_road_seg_eval_takes_debug_and_max_image_pixels_for_one_bag_and_many(drives, onnx_model, tmp_path, capsys):
    one, two = map(str, drives["good"][:2])
    # the console script is fleet.main: a single bag with --debug and a pixel limit goes through it
    assert F.main([one, "--report", str(tmp_path / "a"), "--model", str(onnx_model), "--no-video", "--no-bag",
                   "--debug", "--max-image-pixels", "6144"]) == 0  # the frames are 64x96 = 6144 pixels
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["frames"]["scored"] == N_FRAMES[0]
    # several bags: every worker applies the limit before decoding; one pixel less and no frame decodes
    rc = F.main([one, two, "--report", str(tmp_path / "b"), "--workers", "0", "--model", str(onnx_model),
                 "--no-progress", "--max-image-pixels", "6143"])
    assert rc == F.EXIT_FAILED_BAGS
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m["bags_total"] == 2 and m["bags_failed"] == 2
    err = capsys.readouterr().err
    assert err.count("0 processed, ") == 2 and err.count("could not be decoded") == 2
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS  # each call put the process-wide limit back


def test_cli_bad_flags_fail_with_one_line(drives, tmp_path, capsys):
    base = [str(drives["good"][0]), str(drives["good"][1]), "--report", str(tmp_path / "r")]
    assert F.main([*base, "--gt-dir", str(tmp_path)]) == 2
    assert "--gt-dir: only for a single bag" in capsys.readouterr().err
    assert F.main([*base, "--workers", "-1", "--model", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra", [[], ["--every-n", "3", "--min-blob-area", "5", "--fill-holes-area", "7",
                                     "--limit", "9", "--no-temporal-smoothing", "--temporal-alpha", "0.3",
                                     "--temporal-reset-gap", "2", "--image-topic", "/cam", "--gt-topic", "/gt",
                                     "--mask-format", "kitti", "--threshold", "0.4", "--backend", "onnxruntime",
                                     "--device", "cpu", "--model", "m.onnx", "--no-video", "--no-bag",
                                     "--flip-average"]])
def test_single_bag_and_fleet_parse_the_evaluation_options_alike(extra):
    single = vars(evaluate.parse_args(["bag", "--report", "r", *extra]))
    several = vars(F.parse_args(["bag", "other", "--report", "r", *extra]))
    shared = (set(single) & set(several)) - {"report"}
    assert len(shared) == 20  # the evaluation options, --debug and --max-image-pixels
    assert {k: single[k] for k in shared} == {k: several[k] for k in shared}
    assert (single["temporal_smoothing"], single["every_n"], single["flip_average"]) == (
        (True, 1, False) if not extra else (False, 3, True))


def test_ray_pin_agrees_between_requirements_and_extra():
    repo = Path(__file__).resolve().parent.parent
    pins = [ln for ln in (repo / "requirements-fleet.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert pins == ["ray==2.60.0"]
    assert '"fleet": requirements("requirements-fleet.txt")' in (repo / "setup.py").read_text()


def test_flip_average_option_opens_its_own_segmenter(onnx_model):
    from road_seg_perception.tools.fleet_task import ModelBlob, open_segmenter

    blob = ModelBlob.read(onnx_model)
    plain = open_segmenter(blob, TaskOptions())
    flip = open_segmenter(blob, TaskOptions(flip_average=True))
    assert flip is not plain and flip.flip_average and not plain.flip_average
    assert open_segmenter(blob, TaskOptions(flip_average=True)) is flip  # cached per option set
