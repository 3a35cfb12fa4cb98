"""Rows of an earlier model card carried for models that are missing, marked and never re-timed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sample_data import sample_card, two_datasets_config, write_camvid, write_idd

from road_seg_perception.tools import card_carry as CC
from road_seg_perception.tools import model_card as MC

PREV = {
    "measured_at": "abc1234",
    "architecture": "arch", "recipe": "Loss bce.",
    "candidates": [{"name": "stages 1-2 (shipped)", "model": "runs/b/model.onnx", "total_ms": 9.5, "fps": 105.3,
                    "splits": {"camvid_val": 0.95}},
                   {"name": "old label", "model": "runs/x/model.onnx", "total_ms": 7.0, "fps": 142.9,
                    "splits": {"camvid_val": 0.9}, "carried_from": "0000001"}],
    "cross": [{"run": "x_hires", "trained_on": ["idd"], "split": "camvid_val", "iou": 0.8, "precision": 0.81,
               "recall": 0.95},
              {"run": "y_hires", "trained_on": ["camvid"], "split": "idd_val", "iou": 0.83, "precision": 0.9,
               "recall": 0.85}],
    "stages": [{"run": "a", "history": []}, {"run": "b", "history": []}],
    "commands": ["road-seg-train --config c.yaml    # stage 1 of 2; resumable: road-seg-train --resume runs/a",
                 "road-seg-train --config c.yaml --init-from runs/a/model.keras --set train.epochs=2"
                 "    # stage 2 of 2 (the shipped run); resumable: road-seg-train --resume runs/b",
                 "road-seg-train --config x.yaml", "python -m road_seg_perception.training.teacher --config c.yaml",
                 "road-seg-export runs/b/model.keras models/m.onnx --keras-copy models/m.keras",
                 "python -m road_seg_perception.tools.model_card --run runs/b"],
}


def test_candidate_rows_are_found_by_file_then_name_and_lose_their_times():
    row = CC.carry_candidate(PREV, "def5678", "stages 1-2 (shipped before stage 3)", "runs/b/model.onnx")
    assert row["name"] == "stages 1-2 (shipped before stage 3)" and row["splits"] == {"camvid_val": 0.95}
    assert row["total_ms"] is None and row["fps"] is None and row["carried_from"] == "def5678"
    by_name = CC.carry_candidate(PREV, "def5678", "old label", "runs/moved/model.onnx")
    assert by_name["carried_from"] == "0000001"  # carried twice: still the commit that measured it
    with pytest.raises(CC.CarryError, match="runs/z/model.onnx"):
        CC.carry_candidate(PREV, "def5678", "new", "runs/z/model.onnx")


def test_cross_rows_and_stages_are_carried_with_their_commands():
    rows = CC.carry_cross(PREV, "abc1234", "x_hires")
    assert [(r["split"], r["iou"], r["carried_from"]) for r in rows] == [("camvid_val", 0.8, "abc1234")]
    with pytest.raises(CC.CarryError, match="no_such"):
        CC.carry_cross(PREV, "abc1234", "no_such")
    stages, cmds = CC.carry_stages(PREV, "abc1234", "b")
    assert [s["run"] for s in stages] == ["a", "b"] and all(s["carried_from"] == "abc1234" for s in stages)
    assert cmds == ["road-seg-train --config c.yaml",
                    "road-seg-train --config c.yaml --init-from runs/a/model.keras --set train.epochs=2"]
    assert [s["run"] for s in CC.carry_stages(PREV, "abc1234", "a")[0]] == ["a"]
    with pytest.raises(CC.CarryError, match=r"stages: \['a', 'b'\]"):
        CC.carry_stages(PREV, "abc1234", "c")
    assert CC.other_commands(PREV) == ["road-seg-train --config x.yaml",
                                       "python -m road_seg_perception.training.teacher --config c.yaml"]


def test_extra_settings_are_the_sets_a_stage_sentence_does_not_state():
    cmd = ("road-seg-train --config c.yaml --init-from runs/b/model.keras --set 'model.input_hw=[256, 352]' "
           "--set train.epochs=3 --set train.finetune_lr_scale=0.15 --set datasets.idd.weight=2.0 "
           "--set output.name=c --set train.cache_dir=runs/x")
    assert CC.extra_settings(cmd) == ["datasets.idd.weight=2.0"]
    assert CC.extra_settings("road-seg-train --config c.yaml") == []


def test_previous_card_reads_the_committed_card(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "MODEL_CARD.json").write_text(json.dumps({k: v for k, v in PREV.items()
                                                                      if k != "measured_at"}))
    git("add", "-A")
    git("commit", "-qm", "card")
    card_commit = CC.head_commit(tmp_path)
    (tmp_path / "other.txt").write_text("a later commit that leaves the card alone")
    git("add", "-A")
    git("commit", "-qm", "other")
    got, origin = CC.previous_card("HEAD", tmp_path)
    assert got["stages"] == PREV["stages"] and origin == card_commit != CC.head_commit(tmp_path)
    measured = {**PREV, "measured_at": "1234abc"}
    (tmp_path / "models" / "MODEL_CARD.json").write_text(json.dumps(measured))
    git("commit", "-qam", "card 2")
    assert CC.previous_card("HEAD", tmp_path)[1] == "1234abc"  # the commit it was measured at, when recorded
    with pytest.raises(CC.CarryError, match="nope"):
        CC.previous_card("nope", tmp_path)


def test_render_marks_carried_rows_and_names_their_commit():
    c = sample_card()
    c["candidates"].append(CC.carry_candidate(PREV, "abc1234", "stage 2", "runs/b/model.onnx"))
    c["cross"] += CC.carry_cross(PREV, "abc1234", "y_hires")
    md = MC.render(c)
    assert "| stage 2 (carried) | 0.9500 | - | - | - | - |" in md  # splits, then ms and fps
    assert "| `y_hires` (carried) | camvid | IDD-Lite validation sequences | **0.8300** |" in md
    assert "the card of commit abc1234 (`--previous`), not scored or timed again" in md
    assert "(carried)" not in MC.render(sample_card())


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def _timed_card(candidates: list[dict]) -> dict:
    """An earlier card with every record a new card carries (stages, times, datasets) and ``candidates``."""
    return {**PREV, "candidates": candidates,
            "cpu": "an earlier CPU", "threads": 7, "runs": 9, "int8_pays": False,
            "latency": [{"path": "onnxruntime (session.run)", "pre": 1.0, "infer": 10.0, "post": 1.5, "total": 12.5,
                         "fps": 80.0}],
            "stages": [{"run": "a", "input_hw": [32, 64], "epochs_run": 1, "best_epoch": 1, "history": []},
                       {"run": "b", "input_hw": [32, 64], "epochs_run": 1, "best_epoch": 1, "history": []}],
            "input_hw": [32, 64], "parameters": 10, "macs": 1e6, "epochs_run": 1, "best_epoch": 1,
            "datasets": {"camvid": {"format": "camvid", "positive_ids": [3], "train_frames": 2, "train_drives": 1,
                                    "weight": 1.0, "splits": {}}}}


def _small_config(root) -> dict:
    """A config of two small datasets written under ``root``: CamVid (drive 0001TP held out, 2 frames, 2 trained)
    and IDD-Lite (sequence folders 0-3, every 3rd held out: 3 frames), input 32x64."""
    write_idd(root / "idd", {"0": 2, "1": 1, "2": 1, "3": 1})
    write_camvid(root / "cv", [f"0001TP_{i:06d}" for i in range(2)] + [f"0006R0_{i:06d}" for i in range(2)])
    return {"datasets": [
        {"name": "camvid", "format": "camvid", "root": str(root / "cv"), "holdout_drives": ["0001TP"],
         "holdout_name": "camvid_0001TP"},
        {"name": "idd", "format": "idd", "root": str(root / "idd"), "train_images": "images",
         "train_masks": "labels", "positive_ids": [0], "void_ids": [255], "holdout_every": 3,
         "holdout_name": "idd_val"}], "model": {"input_hw": [32, 64]}}


def test_card_of_a_machine_without_the_runs_scores_the_shipped_model_and_carries_the_rest(tmp_path, tiny_model,
                                                                                           monkeypatch):
    """The shipped run, a cross run and a candidate are all missing: the card still comes out, marked."""
    import yaml

    cfg = _small_config(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cross_row = {"name": "cross run x_hires", "model": "runs/x_hires/model.onnx", "total_ms": 5.0, "fps": 200.0,
                 "splits": {"camvid_val": 0.8}}
    shipped_row = {"name": "shipped", "model": "models/m.onnx", "total_ms": 12.5, "fps": 80.0, "splits": {}}
    prev = _timed_card([*PREV["candidates"], cross_row, shipped_row])
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "MODEL_CARD.json").write_text(json.dumps(prev))
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "card")
    monkeypatch.chdir(tmp_path)
    args = ["--run", "runs/b", "--model", str(tiny_model["onnx"]), "--config", "c.yaml", "--teacher", "",
            "--runs", "2", "--cross-run", "runs/x_hires", "--candidate", "old label=runs/x/model.onnx",
            "--out", "out/MODEL_CARD.md"]
    assert MC.main(args) == 2  # no earlier card to carry from: the missing run is named
    assert MC.main([*args, "--previous", "HEAD"]) == 0
    got = json.loads((tmp_path / "out" / "MODEL_CARD.json").read_text())
    assert set(got["splits"]) == {"camvid_0001TP", "idd_val"} and got["splits"]["idd_val"]["model"]["frames"] == 3
    assert [s["run"] for s in got["stages"]] == ["a", "b"] and got["recipe"] == "Loss bce."
    assert got["measured_at"] == CC.head_commit(tmp_path)
    rows = {c["name"]: c for c in got["candidates"]}
    assert rows["shipped"]["total_ms"] > 0 and "carried_from" not in rows["shipped"]
    assert rows["old label"]["carried_from"] == "0000001" and rows["old label"]["fps"] is None
    assert rows["cross run x_hires"]["carried_from"] == "abc1234"  # the earlier card's measured_at
    assert [(r["run"], r["iou"]) for r in got["cross"]] == [("x_hires", 0.8)]
    assert got["commands"][:2] == [
        "road-seg-train --config c.yaml    # stage 1 of 2; resumable: road-seg-train --resume runs/a",
        "road-seg-train --config c.yaml --init-from runs/a/model.keras --set train.epochs=2"
        "    # stage 2 of 2 (the shipped run); resumable: road-seg-train --resume runs/b"]
    assert "road-seg-train --config x.yaml" in got["commands"]
    md = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "| old label (carried) |" in md and "`x_hires` (carried)" in md

    # --times-from: every model scored again, every time the earlier card's
    assert MC.main([*args, "--previous", "HEAD", "--times-from", "HEAD"]) == 0
    again = json.loads((tmp_path / "out" / "MODEL_CARD.json").read_text())
    assert again["splits"] == got["splits"]  # scored anew: the same scores
    assert {k: again[k] for k in MC.TIME_KEYS} == {k: prev[k] for k in MC.TIME_KEYS}
    assert again["times_from"] == CC.card_commit("HEAD", tmp_path)  # the commit holding those times
    rows = {c["name"]: c for c in again["candidates"]}
    assert (rows["shipped"]["total_ms"], rows["shipped"]["fps"]) == (12.5, 80.0)
    assert rows["old label"]["fps"] == 142.9  # carried, with the time the card of --times-from gave it
    assert again["commands"][-1].endswith("--previous HEAD --times-from HEAD")
    md = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "CPU latency per 480x360 frame (an earlier CPU, 7 threads; no VNNI" in md
    assert "| onnxruntime (session.run) | 1.0 | 10.0 | 1.5 | 12.5 |  | 80.0 |" in md
    assert f"is from the run of the card of commit {again['times_from']} (`--times-from`)" in md


def test_a_present_cross_run_is_scored_once_per_split_for_its_row_and_its_candidate_row(tmp_path, tiny_model,
                                                                                          monkeypatch):
    """The cross run's rows and its candidate row share one scoring of each split; its split names are listed,
    not read."""
    import shutil

    import yaml

    cfg = two_datasets_config(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cross = tmp_path / "runs" / "x_hires"
    cross.mkdir(parents=True)
    no_camvid = {**cfg, "datasets": [{**cfg["datasets"][0], "train": False}, cfg["datasets"][1]]}
    (cross / "config.yaml").write_text(yaml.safe_dump(no_camvid))
    shutil.copy(tiny_model["onnx"], cross / "model.onnx")
    assert MC.split_names(no_camvid) == list(MC.config_splits(no_camvid))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "MODEL_CARD.json").write_text(json.dumps(_timed_card(PREV["candidates"])))
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "card")
    monkeypatch.chdir(tmp_path)
    calls = []
    score = MC.score_split

    def counted(seg, pairs):
        calls.append((str(seg.model_path), len(pairs)))
        return score(seg, pairs)

    monkeypatch.setattr(MC, "score_split", counted)
    assert MC.main(["--run", "runs/b", "--model", str(tiny_model["onnx"]), "--config", "c.yaml", "--teacher", "",
                    "--runs", "2", "--cross-run", "runs/x_hires", "--previous", "HEAD", "--times-from", "HEAD",
                    "--out", "out/MODEL_CARD.md"]) == 0
    got = json.loads((tmp_path / "out" / "MODEL_CARD.json").read_text())
    cross_path = str(cross / "model.onnx")
    assert sorted(calls) == sorted({*calls})  # no (model, split) scored twice
    assert sum(p.endswith("x_hires/model.onnx") for p, _ in calls) == 2  # its two splits, once each
    assert [r["split"] for r in got["cross"]] == ["camvid_0001TP"]  # the split of the dataset it never trained on
    row = next(c for c in got["candidates"] if c["name"] == "cross run x_hires")
    assert row["splits"]["camvid_0001TP"] == got["cross"][0]["iou"] and 0 <= got["cross"][0]["iou"] <= 1
    assert set(row["splits"]) == set(got["splits"]) and cross_path.endswith(row["model"])


def test_card_of_a_soup_lists_its_runs_as_one_stage_and_carries_it_whole(tmp_path, tiny_model, monkeypatch):
    """A shipped soup (model.soup.json) of three runs from carried stage b: one stage of three runs, the soup's
    command last; a later card without any run folder carries the stages and the soup as they were."""
    import yaml

    from road_seg_perception.training.soup import write_record

    cfg = {**_small_config(tmp_path), "train": {"epochs": 2, "finetune_lr_scale": 0.15}}
    prev = {**_timed_card([{"name": "shipped", "model": "models/m.onnx", "total_ms": 12.5, "fps": 80.0,
                            "splits": {}}]), "recipe": "Loss bce. Then 2 epochs more."}  # stages a and b
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "MODEL_CARD.json").write_text(json.dumps(prev))
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "card")
    monkeypatch.chdir(tmp_path)
    runs = [f"runs/r{k}" for k in (1, 2, 3)]
    for k, r in enumerate(runs, 1):
        Path(r).mkdir(parents=True)
        (Path(r) / "config.yaml").write_text(yaml.safe_dump(cfg))
        (Path(r) / "command.txt").write_text(f"road-seg-train --config c.yaml --init-from runs/b/model.keras "
                                             f"--set datasets.idd.weight=2.0 --set train.seed={k}\n")
        (Path(r) / "metrics.json").write_text(json.dumps({
            "input_hw": [32, 64], "epochs_run": 2, "best_epoch": k % 2 + 1, "parameters": 10, "macs": 1e6,
            "data": {"datasets": {"camvid": {**prev["datasets"]["camvid"], "weight": 2.0}}},
            "history": [{"epoch": 1, "seconds": 1.0, "val_idd_val_iou": 0.9, "val_iou": 0.9}]}))
    Path("runs/s").mkdir()
    soup_cmd = "road-seg-soup runs/s/model.keras " + " ".join(f"{r}/model.keras" for r in runs)
    write_record(Path("runs/s/model.keras"), [f"{r}/model.keras" for r in runs], soup_cmd.split()[1:])
    assert MC.soup_runs(Path("runs/s")) == [Path(r) for r in runs] and MC.soup_runs(Path("runs/r1")) == []
    args = ["--run", "runs/s", "--model", str(tiny_model["onnx"]), "--teacher", "", "--runs", "2",
            "--out", "out/MODEL_CARD.md", "--previous", "HEAD"]
    assert MC.main(args) == 0
    got = json.loads((tmp_path / "out" / "MODEL_CARD.json").read_text())
    assert [(s["run"], s.get("soup")) for s in got["stages"]] == [("a", None), ("b", None), ("r1", 1), ("r2", 2),
                                                                    ("r3", 3)]
    assert got["soup"] == {"run": "s", "command": soup_cmd}
    assert got["datasets"] == prev["datasets"]  # the recipe's first stage's data; stage 3's own in its sentence
    assert got["recipe"] == ("Loss bce. Then 2 epochs more. Then 3 runs of 2 epochs at 32x64 from the stage "
                             "before's checkpoint, learning rate x0.15, with `datasets.idd.weight=2.0`, one with each "
                             "of `train.seed=1`; `train.seed=2`; `train.seed=3`; the shipped model is the mean of "
                             "their weights (a weight soup, `road-seg-soup`).")
    assert got["commands"][:6] == [
        "road-seg-train --config c.yaml    # stage 1 of 3; resumable: road-seg-train --resume runs/a",
        "road-seg-train --config c.yaml --init-from runs/a/model.keras --set train.epochs=2"
        "    # stage 2 of 3; resumable: road-seg-train --resume runs/b",
        *(f"road-seg-train --config c.yaml --init-from runs/b/model.keras --set datasets.idd.weight=2.0 "
          f"--set train.seed={k}    # stage 3 of 3, run {k} of 3; resumable: road-seg-train --resume runs/r{k}"
          for k in (1, 2, 3)),
        f"{soup_cmd}    # the shipped run: the mean of stage 3's runs' weights"]
    md = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "- Stage 3, run 2 of 3 (`r2`, from the model of the stage before): 2 epochs at 32x64, checkpoint " \
           "chosen at epoch 1" in md
    assert "- Weight soup (`s`, the shipped model): the mean of stage 3's runs' weights (`road-seg-soup`" in md

    # a soup whose runs started from different models, or one of whose runs is missing, is refused, named
    (Path("runs/r3") / "command.txt").write_text("road-seg-train --config c.yaml --init-from runs/a/model.keras\n")
    assert MC.main([*args, "--out", "out/bad.md"]) == 2 and not Path("out/bad.md").exists()
    with pytest.raises(CC.CarryError, match="start from different models"):
        MC._check_soup(Path("runs/s"), MC.soup_runs(Path("runs/s")))
    with pytest.raises(CC.CarryError, match="the run runs/r4 it averaged has no metrics.json"):
        MC._check_soup(Path("runs/s"), [Path("runs/r1"), Path("runs/r4")])
    (Path("runs/r3") / "command.txt").write_text("road-seg-train --config c.yaml --init-from runs/b/model.keras "
                                                 "--set datasets.idd.weight=2.0 --set train.seed=3\n")

    # that card committed, then a machine without the runs: every stage and the soup carried as they were
    Path("models/MODEL_CARD.json").write_text(json.dumps(got))
    _git(tmp_path, "add", "models")
    _git(tmp_path, "commit", "-qm", "soup card")
    assert MC.main(args) == 0  # made again from that card: its stages and recipe carried as far as stage 2 only
    remade = json.loads((tmp_path / "out" / "MODEL_CARD.json").read_text())
    assert remade["recipe"] == got["recipe"] and remade["stages"] == got["stages"]
    assert remade["commands"][:6] == got["commands"][:6]
    for r in [*runs, "runs/s"]:
        for f in Path(r).iterdir():
            f.unlink()
        Path(r).rmdir()
    Path("c.yaml").write_text(yaml.safe_dump(cfg))
    assert MC.main([*args[:-2], "--config", "c.yaml", "--previous", "HEAD"]) == 0
    again = json.loads((tmp_path / "out" / "MODEL_CARD.json").read_text())
    assert [(s["run"], s.get("soup")) for s in again["stages"]] == [(s["run"], s.get("soup")) for s in got["stages"]]
    assert again["soup"] == got["soup"] and again["recipe"] == got["recipe"]
    assert again["commands"][:6] == got["commands"][:6]

    # a run fine-tuned from that soup: the soup and its runs carried as stage 3, the new run stage 4
    Path("runs/t").mkdir()
    (Path("runs/t") / "config.yaml").write_text(yaml.safe_dump(cfg))
    (Path("runs/t") / "command.txt").write_text("road-seg-train --config c.yaml --init-from runs/s/model.keras\n")
    (Path("runs/t") / "metrics.json").write_text(json.dumps({
        "input_hw": [32, 64], "epochs_run": 2, "best_epoch": 2, "parameters": 10, "macs": 1e6,
        "data": {"datasets": prev["datasets"]}, "history": []}))
    assert MC.main(["--run", "runs/t", *args[2:]]) == 0
    tuned = json.loads((tmp_path / "out" / "MODEL_CARD.json").read_text())
    assert [(s["run"], s.get("soup")) for s in tuned["stages"]] == [
        *[(s["run"], s.get("soup")) for s in got["stages"]], ("t", None)]
    assert tuned["soup"] == got["soup"]
    assert tuned["recipe"] == got["recipe"] + (" Then 2 epochs at 32x64 from the stage before's checkpoint "
                                               "(`--init-from`), learning rate x0.15, same data and augmentation.")
    assert tuned["commands"][5:7] == [
        f"{soup_cmd}    # the mean of stage 3's runs' weights, which stage 4 starts from",
        "road-seg-train --config c.yaml --init-from runs/s/model.keras"
        "    # stage 4 of 4 (the shipped run); resumable: road-seg-train --resume runs/t"]
    md = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "- Weight soup (`s`): the mean of stage 3's runs' weights, which stage 4 starts from" in md
    assert "- Stage 4 (`t`, from the model of the stage before)" in md


def test_stage_labels_number_a_soup_as_one_stage_and_carried_commands_must_match_them():
    stages = [{"run": "a"}, {"run": "b"}, {"run": "r1", "soup": 1}, {"run": "r2", "soup": 2}, {"run": "t"}]
    assert CC.stage_labels(stages) == ["Stage 1", "Stage 2", "Stage 3, run 1 of 2", "Stage 3, run 2 of 2",
                                       "Stage 4"]
    cmds = [f"cmd {s['run']}    # {c}; resumable: road-seg-train --resume runs/{s['run']}" for s, c in zip(
        stages, ["stage 1 of 4", "stage 2 of 4", "stage 3 of 4, run 1 of 2", "stage 3 of 4, run 2 of 2",
                 "stage 4 of 4 (the shipped run)"], strict=True)]
    prev = {"stages": stages, "commands": cmds, "soup": {"run": "s", "command": "road-seg-soup x"}}
    carried, got = CC.carry_stages(prev, "abc1234", "t")
    assert [s["run"] for s in carried] == ["a", "b", "r1", "r2", "t"] and got == [f"cmd {s['run']}" for s in stages]
    carried, got = CC.carry_stages(prev, "abc1234", "s")  # the soup: the stages up to it, its runs included
    assert [s["run"] for s in carried] == ["a", "b", "r1", "r2"] and got == ["cmd a", "cmd b", "cmd r1", "cmd r2"]
    carried, got = CC.carry_stages(prev, "abc1234", "r2")  # one run of the soup: a stage of its own
    assert [(s["run"], s.get("soup")) for s in carried] == [("a", None), ("b", None), ("r2", None)]
    assert got == ["cmd a", "cmd b", "cmd r2"]
    with pytest.raises(CC.CarryError, match="do not match its stages"):  # commands out of order
        CC.carry_stages({**prev, "commands": [cmds[1], cmds[0], *cmds[2:]]}, "abc1234", "t")
    with pytest.raises(CC.CarryError, match="do not match its stages"):  # one missing
        CC.carry_stages({**prev, "commands": cmds[:-1]}, "abc1234", "b")
