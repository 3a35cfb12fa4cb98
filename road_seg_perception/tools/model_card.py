"""Write ``models/MODEL_CARD.md`` (and ``.json``) from measurements made now, so every number is reproducible.

    python -m road_seg_perception.tools.model_card --run runs/road_mnv2 \
        --cross-run runs/road_mnv2_no_camvid --cross-run runs/road_mnv2_no_idd \
        --candidate "previous U-Net=runs/previous/road_unet_camvid.onnx"

It reads the validation splits from the shipped run's config (CamVid val, the held-out drive
0001TP, the IDD-Lite validation sequences) and scores on each, through ``RoadSegmenter`` with
ONNX Runtime (full resolution, void ignored, pixels summed over the split): the shipped model,
the trivial prior (bottom of the frame = road), the teacher, each cross-dataset run's model and
each candidate (the cross-dataset runs' models are candidates too, scored on every split). It times
every backend on a 480x360 frame and copies the recipe and per-epoch history from the run directory.
``scripts/model_card.py`` runs it with the candidates of the shipped card and writes the card's
paragraphs from the numbers it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from road_seg_perception.core.backends import cpu_int8_pays
from road_seg_perception.core.metrics import SplitScore
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.core.timing import time_keras_predict, time_segmenter
from road_seg_perception.tools import card_carry
from road_seg_perception.tools.card_carry import stage_labels, stage_number
from road_seg_perception.tools.error_classes import config_errors, largest_false_class
from road_seg_perception.training.config import dataset_configs, load_config
from road_seg_perception.training.data import dataset_samples, label_spec
from road_seg_perception.training.datasets import load_samples
from road_seg_perception.training.soup import read_record as read_soup_record
from road_seg_perception.training.soup import record_models
from road_seg_perception.training.teacher import Teacher

#: The trivial prior calls the bottom 38% of every frame road (0.69 on CamVid val, docs/design.md).
PRIOR_FRACTION = 0.38
SPLIT_TITLES = {"camvid_val": "CamVid val (drive 0016E5)", "camvid_0001TP": "CamVid drive 0001TP (dusk, held out)",
                "idd_val": "IDD-Lite validation sequences"}

Pairs = list[tuple[np.ndarray, np.ndarray]]


def prior_mask(image: np.ndarray, fraction: float = PRIOR_FRACTION) -> np.ndarray:
    """The trivial prior: the bottom ``fraction`` of the frame is road (0/255)."""
    h = image.shape[0]
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[h - int(round(h * fraction)):] = 255
    return mask


def score_masks(masker: Callable[[np.ndarray], np.ndarray], pairs: Pairs, desc: str) -> dict:
    """Pooled and mean per-frame scores of ``masker``'s 0/255 masks on a split."""
    score = SplitScore()
    for image, label in tqdm(pairs, desc=desc, unit="frame", leave=False):
        score.add(masker(image), label)
    return {**{k: round(v, 4) for k, v in score.total.scores().items()},
            "mean_frame_iou": round(score.mean_frame_iou, 4), "frames": len(pairs)}


def score_split(seg: RoadSegmenter, pairs: Pairs) -> dict:
    """Scores of a segmenter's published masks on a split."""
    return score_masks(lambda im: seg.segment(im).mask, pairs, "scoring")


def read_splits(run_dir: Path) -> dict[str, Pairs]:
    """The validation splits of a run (from its config.yaml), at full resolution."""
    return config_splits(load_config(run_dir / "config.yaml"))


def split_names(cfg: dict) -> list[str]:
    """The names of a training config's validation splits (files listed, none read)."""
    return [name for ds in dataset_configs(cfg) for name in dataset_samples(ds)[1]]


def config_splits(cfg: dict) -> dict[str, Pairs]:
    """The validation splits of a training config, at full resolution."""
    out: dict[str, Pairs] = {}
    for ds in dataset_configs(cfg):
        _, splits = dataset_samples(ds)
        for name, samples in splits.items():
            out[name] = load_samples(samples, label_spec(ds))
    return out


def teacher_scores(teacher, teacher_path: str, split: str, pairs: Pairs, cache: str) -> dict:
    """The teacher's scores on a split; kept in ``cache`` (JSON, keyed by teacher file and split) as it is slow."""
    key = f"{Path(teacher_path).name}:{split}:{len(pairs)}"
    path = Path(cache) if cache else None
    known = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    if key not in known:
        known[key] = score_masks(teacher.mask, pairs, f"teacher on {split}")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(known, indent=1))
    return known[key]


def latency_table(model: Path, frame: np.ndarray, runs: int, keras: bool = True,
                  int8: Path | None = None) -> list[dict]:
    """Latency rows of ``model`` (``.onnx``) on ONNX Runtime, of its ``int8`` copy, and of its ``.keras`` twin."""
    rows = []
    if int8 is not None:
        t = time_segmenter(RoadSegmenter(int8, backend="onnxruntime"), frame, runs=runs)
        rows.append({"path": "onnxruntime INT8 copy (session.run; the node's default where INT8 pays)",
                     **{k: round(v, 1) for k, v in t.items()}})
    for backend in ("onnxruntime", "keras") if keras else ("onnxruntime",):
        seg = RoadSegmenter(model.with_suffix(".keras") if backend == "keras" else model, backend=backend)
        t = time_segmenter(seg, frame, runs=runs)
        rows.append({"path": f"{seg.backend.name} ({'compiled call' if backend == 'keras' else 'session.run'})",
                     **{k: round(v, 1) for k, v in t.items()}})
        if backend == "keras":
            predict_ms = round(time_keras_predict(seg, frame), 1)
            rows.append({"path": f"{seg.backend.name} model.predict", "infer": predict_ms})
    return rows


def interleaved_totals(segs: list[RoadSegmenter], frame: np.ndarray, runs: int, rounds: int = 5) -> list[float]:
    """Median total ms of each segmenter over ``rounds`` rounds that take them in turn.

    A machine whose speed drifts during the measurement then slows every model alike, so their
    ratios hold; timing one model after the other would credit the drift to the models.
    """
    per = max(1, runs // rounds)
    totals: list[list[float]] = [[] for _ in segs]
    for _ in range(rounds):
        for i, seg in enumerate(segs):
            totals[i].append(time_segmenter(seg, frame, runs=per, warmup=2)["total"])
    return [float(np.median(t)) for t in totals]


#: What ``--times-from`` takes from an earlier card: the latency table and the machine it was timed on.
TIME_KEYS = ("cpu", "threads", "runs", "int8_pays", "latency")


def earlier_time(prev: dict, name: str) -> dict:
    """A candidate's time in an earlier card (``total_ms``/``fps``, None where that card did not time it)."""
    row = next((c for c in prev.get("candidates", []) if c["name"] == name), {})
    return {"total_ms": row.get("total_ms"), "fps": row.get("fps")}


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    import time

    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def _command(run_dir: Path) -> str:
    """The command that trained a run (``command.txt``, written by road-seg-train)."""
    f = run_dir / "command.txt"
    return f.read_text().strip() if f.is_file() else f"road-seg-train --config {run_dir / 'config.yaml'}"


def _init_dir(run_dir: Path) -> Path | None:
    """The folder of the model this run started from (``--init-from`` in its command), if any."""
    words = shlex.split(_command(run_dir))
    if "--init-from" not in words[:-1]:
        return None
    return Path(words[words.index("--init-from") + 1]).parent


def _init_from(run_dir: Path) -> Path | None:
    """The run folder whose ``model.keras`` this run started from, if it is a run (has ``metrics.json``)."""
    parent = _init_dir(run_dir)
    return parent if parent is not None and (parent / "metrics.json").is_file() else None


def run_stages(run_dir: Path) -> list[Path]:
    """The runs that made a model, first to last: each started from the model of the one before (``--init-from``)."""
    stages = [run_dir]
    while (parent := _init_from(stages[0])) is not None and parent not in stages:
        stages.insert(0, parent)
    return stages


def soup_runs(run_dir: Path) -> list[Path]:
    """The runs whose models the soup in ``run_dir`` averaged (its ``model.soup.json``); [] if it is no soup."""
    try:
        models = record_models(run_dir / "model.keras")
    except ValueError as e:
        raise card_carry.CarryError(str(e)) from e
    return [m.parent for m in models] if models else []


def _check_soup(run_dir: Path, runs: list[Path]) -> None:
    """``CarryError`` unless every run of the soup is here and all of them started from one model."""
    for d in runs:
        if not (d / "metrics.json").is_file():
            raise card_carry.CarryError(f"soup {run_dir}: the run {d} it averaged has no metrics.json")
    starts = {str(_init_dir(d)) for d in runs}
    if len(starts) != 1:
        raise card_carry.CarryError(f"soup {run_dir}: its runs start from different models ({sorted(starts)}); "
                                    "the card describes a soup of fine-tunes of one stage")


def _stage_comment(label: str, total: int) -> str:
    """A stage's comment in the card's commands: 'stage 3 of 6', or 'stage 6 of 6, run 1 of 3' for a soup's run."""
    stage, _, run = label.lower().partition(", ")
    return f"{stage} of {total}" + (f", {run}" if run else "")


def _soup_at(stages: list[dict]) -> int | None:
    """The index of the last run of the stages' soup, after which the soup itself comes; None without one."""
    return max((i for i, st in enumerate(stages) if "soup" in st), default=None)


def _soup_words(card: dict) -> str:
    """What the card's soup is: 'the mean of stage 6's runs' weights', and the stage that starts from it if any."""
    stages, labels = card["stages"], stage_labels(card["stages"])
    at = _soup_at(stages)
    n = stage_number(labels[at])
    return f"the mean of stage {n}'s runs' weights" + ("" if at == len(stages) - 1 else
                                                         f", which stage {n + 1} starts from")


def _stage(run_dir: Path) -> dict:
    run = json.loads((run_dir / "metrics.json").read_text())
    return {"run": run_dir.name, "input_hw": run["input_hw"], "epochs_run": run["epochs_run"],
            "best_epoch": run["best_epoch"], "history": _history(run)}


def _history(run: dict) -> list[dict]:
    """A run's per-epoch validation IoUs (``epoch``, ``seconds``, ``val_<split>_iou``) from its ``metrics.json``."""
    return [{k: v for k, v in h.items() if k in ("epoch", "seconds") or (k.startswith("val_") and k.endswith("_iou")
                                                                        and k != "val_iou")}
            for h in run.get("history", [])]


def _carried(row: dict) -> str:
    return " (carried)" if row.get("carried_from") else ""


def _or_dash(v) -> str:
    return "-" if v is None else str(v)


def _f(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


def _stage_lines(card: dict) -> list[str]:
    stages = card.get("stages", [])
    if len(stages) <= 1:
        return [f"- {card['epochs_run']} epochs run, checkpoint chosen at epoch {card['best_epoch']} by the mean IoU "
                "over the validation splits."]
    lines = [f"- {label} (`{st['run']}`{', from the model of the stage before' if i > 0 else ''}): "
             f"{st['epochs_run']} epochs at {st['input_hw'][0]}x{st['input_hw'][1]}, checkpoint chosen at epoch "
             f"{st['best_epoch']} by the mean IoU over the validation splits."
             for i, (label, st) in enumerate(zip(stage_labels(stages), stages, strict=True))]
    if (soup := card.get("soup")) and (at := _soup_at(stages)) is not None:
        shipped = ", the shipped model" if at == len(stages) - 1 else ""
        lines.insert(at + 1, f"- Weight soup (`{soup['run']}`{shipped}): {_soup_words(card)} "
                             "(`road-seg-soup`; docs/training.md, \"Weight soups\").")
    return lines


def render(card: dict) -> str:
    splits = card["splits"]
    has_int8 = all("int8" in s for s in splits.values()) and bool(splits)
    lines = [
        "# Model card: road_unet_camvid",
        "",
        "Binary road segmenter for 480x360-class camera frames. Shipped as `road_unet_camvid.keras` (Keras 3,",
        "safe-mode loadable, no custom code), `road_unet_camvid.onnx` (same weights) and, when the card has an",
        "INT8 column, `road_unet_camvid_int8.onnx` (its INT8 copy from `road-seg-quantize`: what the node runs",
        "by default on a CPU, but for x86-64 CPUs without VNNI instructions, where it runs the float `.onnx`). The",
        "file names are kept from the first model; the network inside is described below.",
        "",
        "Every number below was produced by the commands at the end of this card; rerun them to check.",
        "",
        "## Architecture",
        f"- {card['architecture']}",
        f"- Input {card['input_hw'][0]}x{card['input_hw'][1]} (height x width) RGB in [0, 1] "
        "(`preprocessing.preprocess`, as in training); the model scales it to the encoder's",
        "  own range itself. The probability is resized back bilinearly and thresholded at "
        f"{card['threshold']}.",
        f"- Parameters: {card['parameters']:,}; multiply-accumulates per frame: {card['macs'] / 1e6:.0f} M.",
        "",
        "## Data and training",
    ]
    for name, d in card["datasets"].items():
        sp = "; ".join(f"`{k}`: {v['frames']} frames of {len(v['drives'])} drive(s)" for k, v in d["splits"].items())
        lines.append(f"- **{name}** ({d['format']}, road = ids {d['positive_ids']}): trained on {d['train_frames']} "
                     f"frames of {d['train_drives']} drive(s), drawn x{d['weight']} per epoch; validation "
                     f"{sp or 'none'}.")
    lines += [
        f"- {card['recipe']}",
        *_stage_lines(card),
        *([f"- {card['note']}"] if card.get("note") else []),
        "",
        "## Accuracy",
        "",
        "Road IoU = TP / (TP + FP + FN) summed over every pixel of the split, void excluded; the prediction",
        "is the published 0/255 mask at the frame's full size (ONNX Runtime through `RoadSegmenter`). "
        f"Prior: the bottom {PRIOR_FRACTION:.0%}",
        "of every frame is road. Teacher: `road-segmentation-adas-0001` (road + lane mark), 512x896 input.",
        "",
        "| split | frames | road IoU | precision | recall | mean per-frame IoU | prior IoU | teacher IoU |"
        + (" INT8 copy IoU |" if has_int8 else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if has_int8 else ""),
    ]
    for name, s in splits.items():
        m, pr, te = s["model"], s["prior"], s.get("teacher")
        lines.append(f"| {SPLIT_TITLES.get(name, name)} | {m['frames']} | **{m['iou']:.4f}** | {m['precision']:.4f} | "
                     f"{m['recall']:.4f} | {m['mean_frame_iou']:.4f} | {pr['iou']:.4f} | "
                     f"{_f(te['iou']) if te else '-'} |" + (f" **{s['int8']['iou']:.4f}** |" if has_int8 else ""))
    if card.get("cross"):
        lines += ["", "Cross-dataset (a model trained without the dataset it is scored on, by its "
                  "`config/train_road_no_*.yaml`; its checkpoint chosen on a split of its own training data):", "",
                  "| model | trained on | split | road IoU | precision | recall | prior IoU | teacher IoU | "
                  "most false road on (share) | road IoU without that class |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in card["cross"]:
            s = splits.get(r["split"], {})
            te = s.get("teacher")
            title = SPLIT_TITLES.get(r["split"], r["split"])
            cls = (f"{r['false_road_class']} ({r['false_road_share']:.1%}) | {r['iou_without_class']:.4f}"
                   if "false_road_class" in r else "- | -")
            lines.append(f"| `{r['run']}`{_carried(r)} | {', '.join(r['trained_on'])} | {title} | "
                         f"**{r['iou']:.4f}** | {r['precision']:.4f} | {r['recall']:.4f} | "
                         f"{_f(s['prior']['iou']) if s else '-'} | {_f(te['iou']) if te else '-'} | {cls} |")
    if card.get("targets"):
        lines += ["", card["targets"]]
    lines += [
        "",
        f"## CPU latency per 480x360 frame ({card['cpu']}, {card['threads']} threads"
        + ("" if "int8_pays" not in card else "; VNNI: yes, the node runs the INT8 copy" if card["int8_pays"]
           else "; no VNNI: the node runs the float model")
        + f"; median of {card['runs']} runs, ms)",
        *(["", f"Every time on this card (this table and the candidates' times) is from the run of the card of commit "
                f"{card['times_from']} (`--times-from`): the scores were measured again, the times were not."]
          if card.get("times_from") else []),
        "",
        "| path | pre | infer | post | total | p95 total | fps |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in card["latency"]:
        lines.append(f"| {r['path']} | {r.get('pre', '')} | {r.get('infer', '')} | {r.get('post', '')} | "
                     f"{r.get('total', '')} | {r.get('p95_total', '')} | {r.get('fps', '')} |")
    if card.get("candidates"):
        names = list(splits)
        lines += ["", "## Candidates: speed and accuracy", "",
                  "| candidate | " + " | ".join(f"{n} IoU" for n in names) + " | ONNX Runtime total ms | fps |",
                  "| --- | " + " | ".join("---" for _ in names) + " | --- | --- |"]
        for c in card["candidates"]:
            lines.append(f"| {c['name']}{_carried(c)} | " + " | ".join(_f(c['splits'].get(n)) for n in names)
                         + f" | {_or_dash(c['total_ms'])} | {_or_dash(c['fps'])} |")
    origins = sorted({r["carried_from"] for r in [*card.get("cross", []), *card.get("candidates", [])]
                      if r.get("carried_from")})
    if origins:
        lines += ["", "(carried): the model's file was not at hand when this card was measured, so its row is the one "
                  f"in the card of commit {', '.join(origins)} (`--previous`), not scored or timed again."]
    if card.get("tradeoff"):
        lines += ["", card["tradeoff"]]
    lines += [
        "",
        "## Reproduce",
        "```",
        *card["commands"],
        "```",
        "",
        "## Limits",
        "- Trained on Cambridge (CamVid) and Indian (IDD-Lite) roads in daylight (the dusk drive 0001TP is only",
        "  scored); expect worse results at night, in rain, off-road or with a very different camera. Fine-tune with",
        "  `road-seg-train --init-from` on your own data (docs/training.md).",
        "- IDD-Lite's \"drivable\" includes unpaved shoulders and parking: on such roads the model marks them too.",
        "- CamVid val shares drive 0016E5 with training; drive 0001TP and the IDD-Lite validation sequences do not.",
        "",
    ]
    return "\n".join(lines)


ENCODER_NAMES = {"mobilenet_v2": "MobileNetV2", "mobilenet_v3_small": "MobileNetV3-Small",
                 "efficientnet_lite0": "EfficientNet-Lite0"}
#: Where each encoder's layout comes from.
ENCODER_LAYOUTS = {"efficientnet_lite0": "`road_seg_perception/training/efficientnet_lite.py`"}


def _cfg_summary(cfg: dict) -> tuple[str, str]:
    m, t, a = cfg["model"], cfg["train"], cfg["augment"]
    if m["encoder"] in ENCODER_NAMES:
        layout = ENCODER_LAYOUTS.get(m["encoder"], "`keras.applications`")
        arch = (f"{ENCODER_NAMES[m['encoder']]} encoder (ImageNet weights, {layout} layout) tapped at "
                "strides 2-32, and a light decoder: 1x1 projections of the skips, bilinear upsampling and one "
                "depthwise-separable "
                f"convolution per level ({m['decoder_filters']} channels at the finest), "
                + ("its coarsest level gated channel by channel by the globally pooled encoder features "
                   "(LR-ASPP), " if m.get("global_context") else "")
                + "a 1x1 sigmoid head"
                + (" at half the input's resolution, corrected at full resolution from a 3x3 convolution of the "
                   "image and the decoder's last features" if m.get("full_res_head") else "")
                + " (`road_seg_perception/training/model.py`).")
    else:
        arch = (f"Light U-Net: {m['levels']} levels of {'separable ' if m['separable'] else ''}convolutions, base "
                f"width {m['base_filters']}, stem stride {m['stem_stride']} (`road_seg_perception/training/model.py`).")
    augs = [f"flip {a['hflip']}", f"scale {a['scale']}", f"rotation +-{a['rotate_deg']} deg",
            f"brightness/contrast +-{a['brightness']}/{a['contrast']}", f"saturation +-{a['saturation']}",
            f"hue +-{a['hue_deg']} deg"]
    if list(a.get("gamma", [1.0, 1.0])) != [1.0, 1.0]:
        augs.append(f"gamma {list(a['gamma'])}")
    for k in ("white_balance", "blur", "noise", "jpeg", "vshift"):
        if a.get(k):
            augs.append(f"{k} {a[k]}")
    recipe = (f"Loss {t['loss']}" + (f" + {t['distill_weight']} x teacher cross-entropy" if t["distill_weight"] else
                                     "") + f" (void masked out); AdamW, lr {t['lr']}, weight decay {t['weight_decay']},"
              f" cosine decay{' after a ' + str(t['warmup_epochs']) + '-epoch warm-up' if t['warmup_epochs'] else ''};"
              f" batch {t['batch_size']}; augmentation: {', '.join(augs)}.")
    return arch, recipe


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="model_card", description="Write models/MODEL_CARD.md from measurements.")
    p.add_argument("--model", default="models/road_unet_camvid.onnx")
    p.add_argument("--int8", default="", help="the model's INT8 copy (road-seg-quantize): scored and timed beside it")
    p.add_argument("--run", required=True, help="run directory of the shipped model (config.yaml, metrics.json; "
                   "with --previous, a missing one keeps the earlier card's training record)")
    p.add_argument("--cross-run", action="append", default=[],
                   help="run directory of a model trained without one dataset (repeatable): scored on its splits")
    p.add_argument("--candidate", action="append", default=[], metavar="NAME=MODEL.onnx",
                   help="another model to score and time (repeatable)")
    p.add_argument("--teacher", default="../shared/models/teachers/road-segmentation-adas-0001.onnx",
                   help="teacher ONNX to score on the same splits ('' to skip)")
    p.add_argument("--teacher-cache", default="runs/teacher_scores.json",
                   help="JSON where the teacher's split scores are kept between runs ('' = always recompute)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--tradeoff", default="", help="a paragraph for the trade-off section")
    p.add_argument("--targets", default="", help="a paragraph under the accuracy table (targets met or not)")
    p.add_argument("--note", default="", help="a line about how the run went (interruptions, resumes)")
    p.add_argument("--out", default="models/MODEL_CARD.md")
    p.add_argument("--config", default="config/train_road.yaml",
                   help="training config whose validation splits are scored when the --run folder is missing")
    p.add_argument("--previous", default="", metavar="GIT_REF",
                   help="carry the rows of models whose files are missing (candidates, cross runs, earlier stages) "
                        "from the card committed at this git ref, marked as carried ('' = a missing file is an error)")
    p.add_argument("--times-from", default="", metavar="GIT_REF",
                   help="score every model anew but take every time (latency table, candidates' times, the CPU "
                        "they were measured on) from the card committed at this git ref: for a machine too busy "
                        "or too different to time on; times still all come from one run")
    a = p.parse_args(argv)
    try:
        return _measure(a)
    except card_carry.CarryError as e:
        print(f"model_card: error: {e}")
        return 2


def _stage_sentence(run_dir: Path) -> str:
    """'Then N epochs at HxW from the stage before's checkpoint ...' for one fine-tuning stage."""
    c = load_config(run_dir / "config.yaml")
    h, w = c["model"]["input_hw"]
    extra = card_carry.extra_settings(_command(run_dir))
    return (f" Then {c['train']['epochs']} epochs at {h}x{w} from the stage before's checkpoint (`--init-from`), "
            f"learning rate x{c['train']['finetune_lr_scale']}, "
            + (f"with `{'`, `'.join(extra)}`." if extra else "same data and augmentation."))


def _soup_sentence(runs: list[Path]) -> str:
    """'Then N runs of ... ; the shipped model is the mean of their weights' for the runs of a soup."""
    sets = [card_carry.extra_settings(_command(d)) for d in runs]
    common = [s for s in sets[0] if all(s in other for other in sets[1:])]
    own = [", ".join(f"`{s}`" for s in settings if s not in common) or "the config's settings" for settings in sets]
    sizes = []
    for d in runs:
        c = load_config(d / "config.yaml")
        h, w = c["model"]["input_hw"]
        sizes.append(f"{c['train']['epochs']} epochs at {h}x{w} "
                     + (f"from the stage before's checkpoint, learning rate x{c['train']['finetune_lr_scale']}"
                        if _init_dir(d) is not None else "from scratch"))
    what = (f"{len(runs)} runs of {sizes[0]}" if len(set(sizes)) == 1 else
            f"{len(runs)} runs ({'; '.join(sizes)})")
    return (f" Then {what}" + (f", with `{'`, `'.join(common)}`" if common else "")
            + f", one with each of {'; '.join(own)}; the shipped model is the mean of their weights (a weight soup, "
            "`road-seg-soup`).")


def _measure(a: argparse.Namespace) -> int:
    run_dir = Path(a.run)
    prev, origin = card_carry.previous_card(a.previous) if a.previous else ({}, "")
    soup = soup_runs(run_dir)
    if soup:
        _check_soup(run_dir, soup)
    first = soup[0] if soup else run_dir  # a soup's record is its first run's (same network, data and splits)
    timed_prev = card_carry.previous_card(a.times_from)[0] if a.times_from else {}
    # the commit whose card holds these times (carried twice: still that one), so --times-from it reproduces them
    times_origin = (timed_prev.get("times_from") or card_carry.card_commit(a.times_from)) if timed_prev else ""
    have_run = (first / "metrics.json").is_file()
    if not have_run and not prev:
        raise card_carry.CarryError(f"shipped run {run_dir} has no metrics.json (--previous GIT_REF carries its "
                                    "training record from an earlier card)")
    run = json.loads((first / "metrics.json").read_text()) if have_run else None
    data = read_splits(first) if have_run else config_splits(load_config(a.config))
    seg = RoadSegmenter(a.model, backend="onnxruntime")
    int8_seg = RoadSegmenter(a.int8, backend="onnxruntime") if a.int8 else None
    teacher = None
    if a.teacher:
        teacher = Teacher(a.teacher)
    splits = {}
    for name, pairs in data.items():
        splits[name] = {"model": score_split(seg, pairs), "prior": score_masks(prior_mask, pairs, "prior")}
        if int8_seg is not None:
            splits[name]["int8"] = score_split(int8_seg, pairs)
        if teacher is not None:
            splits[name]["teacher"] = teacher_scores(teacher, a.teacher, name, pairs, a.teacher_cache)
        print(f"{name}: model {splits[name]['model']['iou']:.4f}  prior {splits[name]['prior']['iou']:.4f}"
              + (f"  teacher {splits[name]['teacher']['iou']:.4f}" if teacher else ""), flush=True)
    frame = data[next(iter(data))][0][0]
    stages = run_stages(first) if have_run else []
    chain = stages[:-1] if soup else stages  # the stages before the soup's; its runs are one stage, listed apart
    carried, carried_cmds = [], []
    if not have_run:  # the shipped run's folder is not here: its stages, record and commands are the earlier card's
        carried, carried_cmds = card_carry.carry_stages(prev, origin, run_dir.name)
    elif prev and (start := _init_dir(stages[0])) is not None:  # the first stage began from an earlier card's
        carried, carried_cmds = card_carry.carry_stages(prev, origin, start.name)
    if carried:
        arch, recipe = prev["architecture"], card_carry.carry_recipe(prev, carried)
        recipe += "".join(_stage_sentence(d) for d in chain)
    else:
        arch, recipe = _cfg_summary(load_config(stages[0] / "config.yaml"))
        recipe += "".join(_stage_sentence(d) for d in chain[1:])
    if soup:
        recipe += _soup_sentence(soup)
    record = run if have_run else prev
    # the data of the recipe's first stage; a later stage's other settings are in its sentence of the recipe
    first_stage_datasets = (prev["datasets"] if carried else
                            json.loads((stages[0] / "metrics.json").read_text())["data"]["datasets"])
    card = {
        "splits": splits, "input_hw": record["input_hw"], "threshold": seg.post.threshold,
        "parameters": record["parameters"], "macs": record["macs"], "architecture": arch, "recipe": recipe,
        "datasets": first_stage_datasets, "epochs_run": record["epochs_run"],
        "best_epoch": record["best_epoch"],
        **({k: timed_prev[k] for k in TIME_KEYS if k in timed_prev} if timed_prev else {
            "cpu": platform.processor() or platform.machine(), "threads": os.cpu_count(), "runs": a.runs,
            "int8_pays": cpu_int8_pays(),
            "latency": latency_table(Path(a.model), frame, a.runs, int8=Path(a.int8) if a.int8 else None)}),
        **({"times_from": times_origin} if timed_prev else {}),
        "tradeoff": a.tradeoff, "targets": a.targets,
        "note": a.note, "cross": [], "candidates": [],
        "stages": [*carried, *(_stage(d) for d in chain), *({**_stage(d), "soup": k} for k, d in enumerate(soup, 1))],
        **({"soup": {"run": run_dir.name, "command": read_soup_record(run_dir / "model.keras")["command"]}} if soup
           else {"soup": prev["soup"]} if prev.get("soup") and any("soup" in st for st in carried) else {}),
        "measured_at": card_carry.head_commit(),
    }
    memo: dict[tuple[str, str], dict] = {}

    def scored(model: RoadSegmenter, split: str) -> dict:
        """``score_split`` of one model file on one split, once per card (cross rows and candidates share it)."""
        key = (str(model.model_path), split)
        if key not in memo:
            memo[key] = score_split(model, data[split])
        return memo[key]

    missing_cross = set()
    for cr in a.cross_run:
        cdir = Path(cr)
        if not ((cdir / "config.yaml").is_file() and (cdir / "model.onnx").is_file()):
            if not prev:
                raise card_carry.CarryError(f"cross-dataset run {cdir} has no config.yaml or model.onnx "
                                            "(--previous GIT_REF carries its rows from an earlier card)")
            card["cross"] += card_carry.carry_cross(prev, origin, cdir.name)
            missing_cross.add(str(cdir / "model.onnx"))
            continue
        ccfg = load_config(cdir / "config.yaml")
        trained = [d.name for d in dataset_configs(ccfg) if d.train]
        cseg = RoadSegmenter(cdir / "model.onnx", backend="onnxruntime")
        unseen = [n for n in split_names(ccfg) if n in data and not any(n.startswith(t + "_") for t in trained)]
        classes = config_errors(cseg, ccfg, log=lambda _: None, only=set(unseen))
        for name in unseen:
            r = scored(cseg, name)
            card["cross"].append({"run": cdir.name, "trained_on": trained, "split": name, **r,
                                  **(largest_false_class(*classes[name]) if name in classes else {})})
            print(f"cross {cdir.name} on {name}: {r['iou']:.4f}", flush=True)
    cross_models = [f"cross run {Path(c).name}={Path(c) / 'model.onnx'}" for c in a.cross_run]
    shipped = [f"shipped={a.model}", *([f"shipped INT8 copy={a.int8}"] if a.int8 else [])]
    segs, timed = [], []
    for item in [*shipped, *cross_models, *a.candidate]:
        name, _, path = item.partition("=")
        kind = {"shipped": "model", "shipped INT8 copy": "int8"}.get(name, "")  # already scored above
        if not kind and (path in missing_cross or not Path(path).is_file()):
            if not prev:
                raise card_carry.CarryError(f"candidate model {path} does not exist (--previous GIT_REF carries "
                                            "its row from an earlier card)")
            card["candidates"].append(card_carry.carry_candidate(prev, origin, name, path))
            continue
        cseg = RoadSegmenter(path, backend="onnxruntime")
        segs.append(cseg)
        card["candidates"].append({"name": name, "model": path,
                                   "splits": {n: s[kind]["iou"] for n, s in splits.items()} if kind
                                   else {n: scored(cseg, n)["iou"] for n in data}})
        timed.append(card["candidates"][-1])
    teacher_name = "teacher road-segmentation-adas-0001 (reference, not shippable)"
    if timed_prev:  # every time is that card's, carried rows' too
        for c in card["candidates"]:
            c.update(earlier_time(timed_prev, c["name"]))
    else:
        for c, ms in zip(timed, interleaved_totals(segs, frame, a.runs), strict=True):
            c.update(total_ms=round(ms, 1), fps=round(1000.0 / ms, 1))
    if teacher is not None:
        if timed_prev:
            t = earlier_time(timed_prev, teacher_name)
        else:
            ms = _median_ms(lambda: teacher.mask(frame), runs=max(3, a.runs // 10))
            t = {"total_ms": round(ms, 1), "fps": round(1000.0 / ms, 1)}
        card["candidates"].append({"name": teacher_name, "model": a.teacher, **t,
                                   "splits": {n: s["teacher"]["iou"] for n, s in splits.items()}})
    stage_runs = [*((run_dir.parent / st["run"], cmd) for st, cmd in zip(carried, carried_cmds, strict=True)),
                  *((d, _command(d)) for d in [*chain, *soup])]
    labels = stage_labels(card["stages"])
    total = stage_number(labels[-1]) if labels else 0
    stage_lines = [cmd + f"    # {_stage_comment(label, total)}{' (the shipped run)' if d == run_dir else ''}; "
                   f"resumable: road-seg-train --resume {d}"
                   for label, (d, cmd) in zip(labels, stage_runs, strict=True)]
    if card.get("soup") and (at := _soup_at(card["stages"])) is not None:
        shipped = "the shipped run: " if card["soup"]["run"] == run_dir.name else ""
        stage_lines.insert(at + 1, f"{card['soup']['command']}    # {shipped}{_soup_words(card)}")
    card["commands"] = [
        *stage_lines,
        *dict.fromkeys([
            *(_command(Path(c)) for c in a.cross_run if str(Path(c) / "model.onnx") not in missing_cross),
            *card_carry.other_commands(prev),  # the earlier card's, for what is carried
            *(_command(Path(c.partition("=")[2]).parent) for c in a.candidate  # once, and not
              if (Path(c.partition("=")[2]).parent / "command.txt").is_file()  # a stage again
              and Path(c.partition("=")[2]).parent not in [*stages, *soup])]),
        f"road-seg-export {run_dir / 'model.keras'} {a.model} --keras-copy {Path(a.model).with_suffix('.keras')}",
        f"python -m road_seg_perception.tools.model_card --run {run_dir} "
        + (f"--int8 {a.int8} " if a.int8 else "")
        + " ".join(f"--cross-run {c}" for c in a.cross_run)
        + "".join(f" --candidate \"{c}\"" for c in a.candidate)
        + (f" --runs {a.runs}" if a.runs != 50 else "")
        + (f" --previous {a.previous}" if a.previous else "")
        + (f" --times-from {a.times_from}" if a.times_from else "")
        + "".join(f" --{k} \"...\"" for k in ("note", "targets", "tradeoff") if getattr(a, k)),
    ]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(card))
    out.with_suffix(".json").write_text(json.dumps(card, indent=1))
    print(f"wrote {out}: " + ", ".join(f"{n} {s['model']['iou']:.4f}" for n, s in splits.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
