"""The shipped model card: measure it, then write its paragraphs from what was measured.

    python scripts/model_card.py              # INT8 copies, score and time every model below, then the text
    python scripts/model_card.py --text-only  # only rewrite the paragraphs from models/MODEL_CARD.json
    python scripts/model_card.py --times-from HEAD  # score anew, keep the committed card's times (busy machine)
    python scripts/model_card.py --ship       # only put RUN's model into models/: its operating point baked in,
                                              # float pair + INT8 copy (make ship)

The measuring step is ``python -m road_seg_perception.tools.model_card`` with the shipped run, the
two cross-dataset runs and the candidates below (each a run of ``road-seg-train`` whose command is
in its run folder, so in the card's "Reproduce" list). A candidate, cross run or earlier stage that
is not on the machine keeps its row from the card committed at HEAD, marked "(carried)". The
paragraphs (note, targets, trade-off) are computed from the card's JSON only, so ``--text-only``
gives the same text again; the tests check that the committed card is what this script makes of its committed numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from road_seg_perception.tools.card_carry import stage_labels  # noqa: E402
from road_seg_perception.tools.model_card import main as measure  # noqa: E402
from road_seg_perception.tools.model_card import render  # noqa: E402
from road_seg_perception.tools.quantize import main as quantize  # noqa: E402
from road_seg_perception.tools.threshold import main as choose_threshold  # noqa: E402
from road_seg_perception.training.export import main as export  # noqa: E402

#: The shipped run: the weight soup of stage 6's runs (its model.soup.json names them); each of them started from
#: stage 5 (runs/road_mnv2_long5), whose command names stage 4, and so on back to stage 1 (--init-from).
RUN = "runs/road_mnv2_soup"
STAGE5 = "runs/road_mnv2_long5"
#: Stage 6: fine-tunes of stage 5, one per seed, whose mean is the shipped model (road-seg-soup).
SOUP_SEEDS = (1, 2, 3)
#: The model shipped before the soup, stage 5 with its operating point (``git show
#: 73b9bda:models/road_unet_camvid.onnx``), and the commands that make it again from stage 5.
STAGE5_SHIPPED = "runs/stage5_shipped/road_unet_camvid.onnx"
STAGE5_SHIPPED_CMDS = (f"road-seg-threshold --config config/train_road.yaml --model {STAGE5}/model.keras "
                       f"--write {STAGE5}/model_operating.keras",
                       f"road-seg-export {STAGE5}/model_operating.keras {STAGE5_SHIPPED}")
#: The soup's own export (``road-seg-soup`` writes the .keras only), scored at 0.5 among the candidates.
SOUP_EXPORT = f"road-seg-export {RUN}/model.keras"
CROSS_NAMES = {"no_camvid": "CamVid", "no_idd": "IDD-Lite"}
#: Both stages of the shipped recipe without one dataset (stage 1 shortened to 4 epochs).
CROSS_RUNS = [f"runs/road_mnv2_{x}_hires" for x in CROSS_NAMES]
#: The cross runs trained again with these seeds (``--set train.seed=S``, both stages; the configs' seed is 42):
#: one run of a cross row moves by several hundredths with the seed, so the targets are judged on the mean.
#: The run without CamVid on the teacher's road is trained with them too.
CROSS_SEEDS = (1, 2)
#: The shipped files are RUN's model with the threshold road-seg-threshold chooses on training frames baked
#: into its logit bias (training/operating_point.py), so 0.5 on their output is that threshold on RUN's.
OPERATING = f"{RUN}/model_operating.keras"
OPERATING_CMD = f"road-seg-threshold --config config/train_road.yaml --model {RUN}/model.keras --write {OPERATING}"
OPERATING_THRESHOLD = 0.35  # what OPERATING_CMD chooses for RUN (checked by --ship)
FLOAT = "models/road_unet_camvid.onnx"  # and its .keras twin: the shipped float pair
INT8 = "models/road_unet_camvid_int8.onnx"  # the node's default: checked, refused if a split loses > 0.005
FLOAT_NODES = 8  # the input scaling, Conv1 and the first inverted-residual block (docs/training.md: the scan)
QUANTIZE = (f"road-seg-quantize {FLOAT} {INT8} --config config/train_road.yaml "
            f"--float-nodes {FLOAT_NODES}")
INT8_ALL = "runs/int8/road_unet_camvid_int8_all.onnx"
#: every node INT8; --max-iou-drop 1: written and scored whatever it loses (the card says what it loses)
QUANTIZE_ALL = (f"road-seg-quantize {FLOAT} {INT8_ALL} --config config/train_road.yaml "
                "--max-iou-drop 1")
#: The shipped weights exported for smaller inputs (road-seg-export --input-hw; no retraining): key -> (H, W).
INPUT_SIZES = {"hw224x320": (224, 320), "hw192x256": (192, 256)}


def input_size_export(hw: tuple[int, int]) -> str:
    """The command that writes the shipped float weights exported for input ``hw``."""
    return (f"road-seg-export {Path(FLOAT).with_suffix('.keras')} runs/input_hw/road_unet_camvid_{hw[0]}x{hw[1]}.onnx "
            f"--input-hw {hw[0]} {hw[1]}")


#: The robustness augmentations measured one at a time (augment key -> value).
ROBUST_OPTIONS = {"blur": "0.3", "noise": "4", "jpeg": "0.3", "vshift": "0.08"}
#: key -> (label in the card, model file). Earlier shipped models come from git: ``git show
#: COMMIT:models/road_unet_camvid.onnx > PATH`` (commits bd35435, dedfaaa, 3367e46; see the trade-off text).
CANDIDATES: dict[str, tuple[str, str]] = {
    "int8_all": ("the shipped model with every node INT8 (`road-seg-quantize`, no `--float-nodes`)", INT8_ALL),
    "stage5_shipped": ("stage 5 at its operating point (shipped before the soup of stage 6)", STAGE5_SHIPPED),
    "soup": ("the soup without its operating point, thresholded at 0.5", f"{RUN}/model.onnx"),
    **{f"soup_run{s}": (f"stage 6, run {s} alone (`road_mnv2_idd2s{s}`, seed {s}), thresholded at 0.5",
                        f"runs/road_mnv2_idd2s{s}/model.onnx") for s in SOUP_SEEDS},
    "stage5": ("stage 5 without its operating point, thresholded at 0.5 (shipped before it was added)",
               f"{STAGE5}/model.onnx"),
    "stage4": ("stages 1-4 (shipped before stage 5 was added)", "runs/road_mnv2_long4/model.onnx"),
    "stage3": ("stages 1-3 (shipped before stage 4 was added)", "runs/road_mnv2_linear3/model.onnx"),
    "stage2": ("stages 1 + 2, trained on area-resized frames (shipped before stage 3 was added)",
               "runs/road_mnv2_hires/model.onnx"),
    **{k: (f"the shipped weights at {h}x{w} input (`road-seg-export --input-hw {h} {w}`)",
           f"runs/input_hw/road_unet_camvid_{h}x{w}.onnx") for k, (h, w) in INPUT_SIZES.items()},
    "fast192": ("stage 5 + 2 epochs at 192x256, lr x0.1 (trained for the smaller input)",
                "runs/road_mnv2_fast192/model.onnx"),
    "mnv3s": ("MobileNetV3-Small encoder, stages 1 + 2 (`config/train_road_mnv3s.yaml`, 10 + 2 epochs)",
              "runs/road_mnv3s_hires/model.onnx"),
    "mnv3s_s1": ("MobileNetV3-Small encoder, stage 1 alone: 10 epochs at 192x256", "runs/road_mnv3s/model.onnx"),
    "area3": ("stage 3 control: the same 2 epochs on area-resized frames", "runs/road_mnv2_area3/model.onnx"),
    "stage1": ("stage 1 alone: 10 epochs at 192x256, trained on area-resized frames", "runs/road_mnv2/model.onnx"),
    "ft2_control": ("stage 1 + 2 epochs at 192x256, lr x0.1 (control for stage 2's resolution)",
                    "runs/ft2_control/model.onnx"),
    "eight": ("8-epoch recipe at 192x256 without exposure augmentation (shipped before that)",
              "runs/road_mnv2_8ep/model.onnx"),
    "three": ("8-epoch recipe without exposure augmentation, stopped at 3 epochs",
              "runs/mnv2_3ep/road_unet_camvid.onnx"),
    "previous": ("previous U-Net (trained on all CamVid train drives incl. 0001TP)",
                 "runs/previous/road_unet_camvid.onnx"),
    "ab_base": ("A/B baseline: 8-epoch recipe, 150 steps", "runs/ab_base/model.onnx"),
    "ab_distill": ("A/B distillation: 150 steps, teacher term 0.5 on CamVid frames", "runs/ab_distill/model.onnx"),
    "ab_robust": ("A/B robustness augmentation, 150 steps", "runs/ab_robust/model.onnx"),
    "ft_control": ("fine-tune control: 8-epoch model + 1 epoch at lr x0.1", "runs/ft_control/model.onnx"),
    "ft_exposure": ("fine-tune with exposure augmentation: + 1 epoch at lr x0.1, gamma 0.6-1.8, white balance 0.1",
                    "runs/ft_exposure/model.onnx"),
    "x_camvid_s1": ("without CamVid, stage 1 alone: 4 epochs at 192x256", "runs/road_mnv2_no_camvid/model.onnx"),
    "x_idd_s1": ("without IDD-Lite, stage 1 alone: 4 epochs at 192x256", "runs/road_mnv2_no_idd/model.onnx"),
    "x_camvid_ctl": ("cross control: without CamVid, 4 epochs at 192x256, no exposure augmentation",
                     "runs/road_mnv2_no_camvid_8ep/model.onnx"),
    "x_idd_ctl": ("cross control: without IDD-Lite, 4 epochs at 192x256, no exposure augmentation",
                  "runs/road_mnv2_no_idd_8ep/model.onnx"),
    "x_teacher": ("without CamVid, stage 1 + teacher term 0.5 on IDD-Lite frames",
                  "runs/road_mnv2_no_camvid_teacher/model.onnx"),
    "x_teacher_labels": ("without CamVid, stage 1 with the teacher's road in place of IDD-Lite's labels",
                         "runs/road_mnv2_no_camvid_teacher_labels/model.onnx"),
    "x_teacher_labels_hires": ("without CamVid, both stages with the teacher's road in place of IDD-Lite's labels",
                               "runs/road_mnv2_no_camvid_teacher_labels_hires/model.onnx"),
    **{f"x_teacher_labels_seed{s}": (f"without CamVid, both stages with the teacher's road, seed {s}",
                                     f"runs/road_mnv2_no_camvid_teacher_labels_seed{s}_hires/model.onnx")
       for s in CROSS_SEEDS},
    **{f"x_teacher_labels_seed{s}_s1": (f"without CamVid, stage 1 with the teacher's road, seed {s}",
                                        f"runs/road_mnv2_no_camvid_teacher_labels_seed{s}/model.onnx")
       for s in CROSS_SEEDS},
    **{f"x_{x}_seed{s}": (f"cross run without {n}, seed {s} (both stages)",
                         f"runs/road_mnv2_{x}_seed{s}_hires/model.onnx")
       for x, n in CROSS_NAMES.items() for s in CROSS_SEEDS},
    **{f"x_{x}_seed{s}_s1": (f"cross run without {n}, seed {s}, stage 1 alone",
                            f"runs/road_mnv2_{x}_seed{s}/model.onnx")
       for x, n in CROSS_NAMES.items() for s in CROSS_SEEDS},
    # each robustness option alone: road-seg-train --config config/train_road_no_camvid.yaml --set augment.K=V
    **{f"x_{k}": (f"without CamVid, stage 1 + {k} {v}", f"runs/road_mnv2_no_camvid_{k}/model.onnx")
       for k, v in ROBUST_OPTIONS.items()},
}
TEACHER_CACHE = "python -m road_seg_perception.training.teacher --config config/train_road.yaml    # the teacher cache"
#: IDD-Lite's frames (the shipped config leaves them out of the teacher term), for the no-CamVid teacher runs
TEACHER_CACHE_IDD = ("python -m road_seg_perception.training.teacher --config config/train_road_no_camvid_teacher.yaml"
                     "    # the teacher cache of IDD-Lite frames")
TEACHER_CACHE_IDD_HIRES = ("python -m road_seg_perception.training.teacher --config "
                           "config/train_road_no_camvid_teacher_labels.yaml --set 'model.input_hw=[256, 352]'"
                           "    # the same at 256x352")
#: a model whose file is missing here (a run not trained again) keeps the row of the card committed at HEAD,
#: marked (carried), instead of stopping the card
PREVIOUS = "HEAD"
MEASURE = "python scripts/model_card.py    # this card: every model above scored and timed, then these paragraphs"
TARGETS = {"camvid_val": 0.97, "camvid_0001TP": 0.90, "idd_val": 0.94}
#: The last commit whose pre-processing shrank frames with area interpolation, and its card's scores
#: of stages 1 + 2 (models/MODEL_CARD.json of that commit, scored with that resize).
AREA_COMMIT = "accbf8a"
AREA_SCORED_STAGE2 = {"camvid_val": 0.9696, "camvid_0001TP": 0.9238, "idd_val": 0.9297}
CROSS_TARGETS = {"camvid_val": 0.90, "idd_val": 0.82}
SPLIT_NAMES = {"camvid_val": "CamVid val", "camvid_0001TP": "0001TP", "idd_val": "IDD-Lite val"}
#: The stage-1 cross runs as the card of this commit scored them: trained on area-resized frames, like the
#: controls, robustness and teacher runs compared with them below (rows carried from that card).
CROSS_AREA_COMMIT = "e02311c"
AREA_SCORED_CROSS = {"camvid_val": 0.8258, "idd_val": 0.8378}  # the two cross rows (stage 2) of that card
AREA_SCORED_CROSS_S1 = {"x_camvid_s1": {"camvid_0001TP": 0.8170, "camvid_val": 0.8530, "idd_val": 0.9197},
                        "x_idd_s1": {"camvid_0001TP": 0.8892, "camvid_val": 0.9584, "idd_val": 0.8521}}


#: The last commit whose road-seg-train replayed, in a stage started from a checkpoint, the draws of the stage before.
REPLAY_COMMIT = "29513ce"


def paragraphs(card: dict) -> dict[str, str]:
    """The card's note, targets and trade-off paragraphs, from its measured numbers only."""
    t = {k: v["model"]["iou"] for k, v in card["splits"].items()}
    i8t = {k: v["int8"]["iou"] for k, v in card["splits"].items()}
    cand = {c["name"]: c for c in card["candidates"]}

    def c(key: str) -> dict:
        return cand[CANDIDATES[key][0]]["splits"]

    def fps_of(key: str) -> float:
        return cand[CANDIDATES[key][0]]["fps"]

    def ms(key: str) -> float:
        return cand[{"shipped": "shipped", "int8": "shipped INT8 copy"}.get(key) or CANDIDATES[key][0]]["total_ms"]

    def per_epoch(hist: list[dict], split: str) -> str:
        return " / ".join(f"{h[f'val_{split}_iou']:.3f}" for h in hist)

    def d(a: dict, b: dict, split: str) -> str:
        v = b[split] - a[split]
        return f"{0.0 if abs(v) < 0.0005 else v:+.3f}"  # no "-0.000"

    def deltas(a: dict, b: dict) -> str:
        return (f"CamVid val {d(a, b, 'camvid_val')}, 0001TP {d(a, b, 'camvid_0001TP')}, "
                f"IDD-Lite val {d(a, b, 'idd_val')}")

    def met(v: float, goal: float) -> str:
        return "met" if v >= goal else "not met"

    def size(hw: list[int]) -> str:
        return f"{hw[0]}x{hw[1]}"

    stages = card["stages"]
    note = " ".join(
        f"{label} ({size(st['input_hw'])}, {len(st['history'])} epochs): per-epoch validation (Keras, full "
        f"resolution) 0001TP {per_epoch(st['history'], 'camvid_0001TP')}, CamVid val "
        f"{per_epoch(st['history'], 'camvid_val')}, IDD-Lite val {per_epoch(st['history'], 'idd_val')}; "
        f"epoch {st['best_epoch']} kept." for label, st in zip(stage_labels(stages), stages, strict=True))
    note += (" Stage 3 repeats stage 2's settings on frames that the shared pre-processing resizes bilinearly; "
             "stage 4 trains 6 more epochs at 256x352 from stage 3 at three tenths of the learning rate (cosine "
             "decay), and stage 5 6 more from stage 4 at 0.15 of it. Stage 6 is "
             f"{len(SOUP_SEEDS)} runs of 3 epochs from stage 5 at 0.15 of the learning rate with IDD-Lite's frames "
             "drawn twice per epoch, one per seed; the shipped model is the mean of their weights (docs/training.md, "
             "\"Weight soups\"). Stages 1 and 2, and every candidate below but "
             "stages 3 to 6, the soup, the two cross runs (both of their stages) and the MobileNetV3-Small runs, were "
             "trained when it shrank frames with area "
             f"interpolation (up to commit {AREA_COMMIT}), and every model here is scored through today's bilinear "
             "resize. An epoch is 264 steps of 8 frames (415 in stage 6, which draws IDD-Lite's frames twice); on "
             "the 2-core x86-64 machines these runs were trained on, a step took about 1.1-1.9 s at 192x256 and "
             "0.9-3.4 s at 256x352, by CPU (the progress bar of "
             "`road-seg-train` shows it). Checkpoints are "
             "chosen by the mean over the three splits, so drive 0001TP took part in that choice. Stages 1 to 5 "
             f"were trained by the `road-seg-train` of commit {REPLAY_COMMIT} or earlier, each stage with the seed "
             "of the stage before it (42), and a stage started from a checkpoint then replayed "
             "the draws of the stage before it (epoch k drew the same frames, in the same order, and its "
             "augmentation from the same random streams as that stage's epoch k); `road-seg-train` now draws "
             "such a stage afresh (docs/training.md, \"Stages drew the same frames\"), as it drew stage 6's runs, so "
             "the commands below train stages 2 to 5 on other draws than these runs' (`git checkout "
             f"{REPLAY_COMMIT}` replays them).")
    cross = {r["split"]: r for r in card["cross"]}
    s1x, s1i = c("x_camvid_s1"), c("x_idd_s1")
    cc, ci = cross["camvid_val"], cross["idd_val"]
    # every seed's score of each cross row: the row above (the configs' seed) first
    seeded = {split: [row["iou"], *(c(f"x_{x}_seed{s}")[split] for s in CROSS_SEEDS)]
              for x, split, row in (("no_camvid", "camvid_val", cc), ("no_idd", "idd_val", ci))}
    mean = {k: sum(v) / len(v) for k, v in seeded.items()}

    # no-CamVid runs on the teacher's road, both stages: seed 42 first
    taught_seeds = [c(k)["camvid_val"] for k in ("x_teacher_labels_hires",
                                                  *(f"x_teacher_labels_seed{s}" for s in CROSS_SEEDS))]
    taught = sum(taught_seeds) / len(taught_seeds)
    taught_met = taught >= CROSS_TARGETS["camvid_val"]

    def cross_verdict(split: str) -> str:
        return (f"{seeded[split][0]:.4f}; mean over {len(seeded[split])} seeds {mean[split]:.4f}, "
                f"{min(seeded[split]):.4f} to {max(seeded[split]):.4f}; {met(mean[split], CROSS_TARGETS[split])}")

    targets = (
        f"Targets set for this model: CamVid val >= {TARGETS['camvid_val']:.2f} ({t['camvid_val']:.4f}, "
        f"{met(t['camvid_val'], TARGETS['camvid_val'])}; the teacher itself scores "
        f"{card['splits']['camvid_val']['teacher']['iou']:.4f}), 0001TP >= {TARGETS['camvid_0001TP']:.2f} "
        f"({t['camvid_0001TP']:.4f}, {met(t['camvid_0001TP'], TARGETS['camvid_0001TP'])}), IDD-Lite val >= "
        f"{TARGETS['idd_val']:.2f} ({t['idd_val']:.4f}, {met(t['idd_val'], TARGETS['idd_val'])}), cross rows >= "
        f"{CROSS_TARGETS['camvid_val']:.2f} for CamVid val without CamVid ({cross_verdict('camvid_val')}; "
        f"the same two stages learning the teacher's road on IDD-Lite's frames: mean over {len(taught_seeds)} "
        f"seeds {taught:.4f}, {met(taught, CROSS_TARGETS['camvid_val'])}, see below) and >= "
        f"{CROSS_TARGETS['idd_val']:.2f} for IDD-Lite without IDD-Lite ({cross_verdict('idd_val')}); the cross "
        f"rows above are seed 42 (the configs'), the others are the same two stages with `--set train.seed=S` for "
        f"S in {', '.join(map(str, CROSS_SEEDS))} (candidates below). "
        f"The INT8 copy scores {i8t['camvid_val']:.4f} / {i8t['camvid_0001TP']:.4f} / "
        f"{i8t['idd_val']:.4f} (CamVid val / 0001TP / IDD-Lite val), {deltas(t, i8t)} against the float model. "
        "The cross-dataset runs are the first two stages of the shipped recipe with stage 1 shortened to 4 epochs "
        "(on bilinear frames), scored at 0.5 of their own output; their "
        f"stage 1 alone scored {s1x['camvid_val']:.4f} (CamVid val without CamVid) and {s1i['idd_val']:.4f} "
        f"(IDD-Lite val without IDD-Lite), so the 256x352 stage moves these rows by "
        f"{cc['iou'] - s1x['camvid_val']:+.3f} and {ci['iou'] - s1i['idd_val']:+.3f}. The same two runs trained on "
        f"area-resized frames (the card of commit {CROSS_AREA_COMMIT}) scored {AREA_SCORED_CROSS['camvid_val']:.4f} "
        f"and {AREA_SCORED_CROSS['idd_val']:.4f}: one run of a cross row moves by several hundredths with the seed "
        "and the resize (the seeds' range above), so these rows compare recipes only when the gap is larger than "
        "that. Without CamVid the model "
        "learns IDD-Lite's \"drivable\", which includes shoulders, parking and kerb-side dirt that CamVid calls "
        f"pavement: its precision on CamVid val is {cc['precision']:.4f} against a recall of {cc['recall']:.4f}"
        + (f"; {cc['false_road_share']:.1%} of its false road there is CamVid's {cc['false_road_class']}, and with "
           f"that class left out of scoring it would score {cc['iou_without_class']:.4f} "
           "(`python -m road_seg_perception.tools.error_classes`, docs/training.md)"
           if "false_road_class" in cc else "")
        + ", so the gap there is as much one of definitions as of generalisation.")
    onnx = next(r for r in card["latency"] if r["path"] == "onnxruntime (session.run)")
    q = next(r for r in card["latency"] if "INT8" in r["path"])
    s1, i8 = c("stage1"), c("int8_all")
    # the stage-1 cross runs on area-resized frames, against the controls below trained the same way
    no_camvid, no_idd = AREA_SCORED_CROSS_S1["x_camvid_s1"], AREA_SCORED_CROSS_S1["x_idd_s1"]
    xc, xi = c("x_camvid_ctl"), c("x_idd_ctl")
    robust = "; ".join(f"{k[2:]} {d(no_camvid, c(k), 'camvid_val')} / {d(no_camvid, c(k), 'camvid_0001TP')} / "
                       f"{d(no_camvid, c(k), 'idd_val')}" for k in (f"x_{o}" for o in ROBUST_OPTIONS))
    no_camvid_both = cand[f"cross run {cc['run']}"]["splits"]  # the cross row's run, on every split
    worst = max(t[k] - i8[k] for k in t)
    int8_verdict = (f": it loses up to {worst:.3f}, more than the 0.005 `road-seg-quantize` allows, so it is "
                    "refused by default" if worst > 0.005 else ", within the 0.005 `road-seg-quantize` allows")

    def input_sizes() -> str:
        """The shipped weights at smaller inputs: what they lose and what they save."""
        parts = []
        for k, (h, w) in INPUT_SIZES.items():
            parts.append(f"{h}x{w} {deltas(t, c(k))} for {ms(k) / ms('shipped'):.2f}x the time a frame "
                         f"({fps_of(k)} frames/s, which {budget(fps_of(k))})")
        fast = c("fast192")
        return ("Input size, a speed option that needs no training: the shipped weights exported for a smaller "
                "input (`road-seg-export models/road_unet_camvid.keras OUT.onnx --input-hw H W`) score, against "
                f"256x352: {'; '.join(parts)}; the recipe's scale augmentation (0.8-1.3) covers the first, "
                "192x256 is 0.75 of the trained size. Trained for that size instead (stage 5 and 2 more epochs at "
                f"192x256, lr x0.1, thresholded at 0.5), a model scores {deltas(t, fast)} against the shipped one "
                f"and {deltas(c('hw192x256'), fast)} against the 192x256 export, at the same time a frame"
                + (": the export is the better of the two. " if all(fast[k] < c("hw192x256")[k] for k in fast)
                   else ". "))

    def encoder_ab() -> str:
        """The encoder comparison: MobileNetV3-Small against MobileNetV2 stage for stage, and against the
        shipped weights at the input size that runs as fast."""
        v3, fast = c("mnv3s"), c("hw192x256")
        ahead = [k for k in v3 if v3[k] > fast[k]]
        verdict = ("so the smaller input is the faster option and MobileNetV3-Small stays a candidate" if not ahead else
                   f"MobileNetV3-Small is ahead on {', '.join(SPLIT_NAMES[k] for k in ahead)}")
        return ("Encoder: MobileNetV3-Small in place of MobileNetV2 (`config/train_road_mnv3s.yaml`, the same data, "
                "augmentation, decoder and first two stages on bilinear frames) scores "
                f"{deltas(c('stage2'), v3)} against MobileNetV2's stages 1 + 2 for {ms('mnv3s') / ms('shipped'):.2f}x "
                f"the time a frame of MobileNetV2 at the same input size (the shipped model; {fps_of('mnv3s')} "
                f"frames/s, which {budget(fps_of('mnv3s'))}); stage 1 alone against MobileNetV2's stage 1: "
                f"{deltas(s1, c('mnv3s_s1'))} (MobileNetV2's two stages trained on area-resized frames, which the "
                "resize comparison below puts within 0.001 of bilinear ones). At about the same time a frame "
                f"({ms('mnv3s')} against {ms('hw192x256')} ms), the shipped weights at 192x256 score "
                f"{deltas(v3, fast)} against it: {verdict}. ")

    def soup_text() -> str:
        """The soup against the model shipped before it and against the runs it averages."""
        runs = [c(f"soup_run{s}") for s in SOUP_SEEDS]
        mean_run = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
        best = {k: max(r[k] for r in runs) for k in runs[0]}
        return (f"Soup: the shipped model scores {deltas(c('stage5_shipped'), t)} against stage 5 at its operating "
                "point (the model shipped before it); thresholded at 0.5, the soup scores "
                f"{deltas(mean_run, c('soup'))} against the mean of its {len(runs)} runs alone and "
                f"{deltas(best, c('soup'))} against the best of them on each split: averaging evens out what one "
                "seed gets wrong, at the time a frame of one model. ")

    def budget(fps: float) -> str:
        return "meets the 60 frames/s budget" if fps >= 60 else "misses the 60 frames/s budget"

    tradeoff = (
        f"Speed (latency table above, pre + infer + post): the INT8 copy, {q['fps']} frames/s bare "
        f"with ONNX Runtime, {budget(q['fps'])} in this run; the float model, {onnx['fps']} frames/s, "
        f"{budget(onnx['fps'])}; on this card's CPU the node runs "
        + ("the INT8 copy (VNNI instructions)" if card.get("int8_pays", True) else
           "the float model (an x86-64 CPU without VNNI instructions)") + " by default. In the candidates table "
        "(timed in interleaved rounds, to compare with each other) "
        f"the float model takes {ms('shipped')} ms a frame, its INT8 copy {ms('int8')} ms, the copy "
        f"with every node INT8 {ms('int8_all')} ms"
        + (f" and stage 1's 192x256 model {ms('stage1')} ms" if ms("stage1") else "") + ". The copy with "
        f"every node INT8 scores {deltas(t, i8)} against the float model{int8_verdict}; keeping the first "
        f"{FLOAT_NODES} nodes (the input scaling, `Conv1` and the first inverted-residual block) in float keeps the "
        "INT8 copy within "
        f"0.005 ({deltas(t, i8t)}) for {ms('int8') / ms('int8_all'):.2f}x the all-INT8 time. "
        + input_sizes()
        + (f"The 256x352 stage costs {ms('shipped') / ms('stage1'):.2f}x the 192x256 model's time per frame in "
           "float; these" if ms("stage1") else "These") + " ratios, not "
        "the absolute figures, carry from one run or machine to another. "
        + soup_text() +
        f"Operating point: the shipped files are the soup with the threshold `road-seg-threshold` chooses on "
        f"training frames ({OPERATING_THRESHOLD}, validation splits unused) baked into the bias of its logit, so "
        f"the default 0.5 on their output is {OPERATING_THRESHOLD} on the soup's; against the soup at 0.5: "
        f"{deltas(c('soup'), t)}. Every other model here but the one shipped before it is thresholded at 0.5 of its "
        "own output. "
        f"Length: stage 5 (6 epochs at 256x352, lr x0.15) against stage 4: {deltas(c('stage4'), c('stage5'))}; "
        "stage 4 "
        f"(6 epochs at 256x352, lr x0.3) against stage 3: {deltas(c('stage3'), c('stage4'))}. "
        + encoder_ab() +
        "Resize: stage 3, trained and scored on bilinear frames, against the same 2 epochs on area-resized "
        f"frames: {deltas(c('area3'), c('stage3'))}, and against stages 1 + 2 as the card of commit {AREA_COMMIT} "
        f"scored them, with the area resize they were trained on: {deltas(AREA_SCORED_STAGE2, c('stage3'))}; the "
        "same stages 1 + 2 "
        f"scored through the bilinear resize score {deltas(AREA_SCORED_STAGE2, c('stage2'))} against that, "
        "which is what stage 3 wins back. Bilinear resizing is several times cheaper than area resizing "
        "(`python bench/resize_ab.py`), which the pre column of the latency table shows. "
        "Resolution: stage 2 against the same two epochs at lr x0.1 kept at 192x256: "
        f"{deltas(c('ft2_control'), c('stage2'))}; against stage 1 alone: {deltas(s1, c('stage2'))} (all three "
        "trained on area-resized frames). "
        "Exposure augmentation (`gamma` 0.6-1.8, `white_balance` 0.1) from the first epoch and 10 epochs, against the "
        f"8-epoch recipe without it: {deltas(c('eight'), s1)} on the trained-on domains, but on a domain it never "
        "trained on it carries much further: the 4-epoch cross runs (stage 1, on area-resized frames as the card of "
        f"commit {CROSS_AREA_COMMIT} scored them) with and without it give CamVid val "
        f"without CamVid {no_camvid['camvid_val']:.3f} against {xc['camvid_val']:.3f}, IDD-Lite val without IDD-Lite "
        f"{no_idd['idd_val']:.3f} against {xi['idd_val']:.3f}, and the dusk drive 0001TP for the model trained "
        f"without IDD-Lite (CamVid only) {no_idd['camvid_0001TP']:.3f} against {xi['camvid_0001TP']:.3f}. "
        "Each other robustness option alone, added to stage 1 of the run without CamVid (so scored on a camera it "
        "never saw; CamVid val / 0001TP / IDD-Lite val against that area-resized stage 1, one seed each): "
        f"{robust}; none is switched on. "
        f"Training length (the earlier recipe, 3 against 8 epochs): {deltas(c('three'), c('eight'))}. "
        "Distillation (teacher term 0.5 on CamVid frames only, the teacher's road being narrower than IDD-Lite's "
        f"drivable), two 150-step runs of the earlier recipe: {deltas(c('ab_base'), c('ab_distill'))}; the teacher "
        "on IDD-Lite frames for the run without CamVid (`config/train_road_no_camvid_teacher.yaml`, meant to teach "
        f"CamVid's narrower road without CamVid): {deltas(no_camvid, c('x_teacher'))} against that area-resized "
        "stage 1; "
        "IDD-Lite's frames learning the teacher's road in place of their own labels "
        "(`config/train_road_no_camvid_teacher_labels.yaml`, `ground_truth: false`, each stage's last epoch kept, "
        f"still no CamVid frame): stage 1 {deltas(s1x, c('x_teacher_labels'))} against the plain run's stage 1 "
        f"(both on bilinear frames), both stages {deltas(no_camvid_both, c('x_teacher_labels_hires'))} against the "
        f"plain run's (seed 42; IDD-Lite val scores the labels it no longer learns); CamVid val over "
        f"{len(taught_seeds)} seeds (42, {', '.join(map(str, CROSS_SEEDS))}) {taught:.4f}, "
        f"{min(taught_seeds):.4f} to {max(taught_seeds):.4f}, against the plain row's mean "
        f"{mean['camvid_val']:.4f}: {'above' if taught_met else 'still below'} the "
        f"{CROSS_TARGETS['camvid_val']:.2f} cross target, so IDD-Lite's broader \"drivable\" is "
        f"{'most' if taught_met else 'only part'} of that "
        "row's gap. The shipped model keeps IDD-Lite's labels, which its IDD-Lite val target scores and on which "
        f"this run loses {no_camvid_both['idd_val'] - c('x_teacher_labels_hires')['idd_val']:.3f}, so "
        "distillation stays off there. "
        "Robustness options together (150 steps, white balance, blur, noise, JPEG, "
        f"vertical shift and gamma): {deltas(c('ab_base'), c('ab_robust'))}. Exposure A/B on the earlier model (two "
        "one-epoch fine-tunes at a tenth of the learning rate, the second with gamma 0.6-1.8 and white balance 0.1): "
        f"{deltas(c('ft_control'), c('ft_exposure'))}. "
        "The previous U-Net is `models/road_unet_camvid.onnx` of commit bd35435; its 0001TP score is not a "
        "hold-out, it was trained on that drive. The 8-epoch and 3-epoch models are `models/road_unet_camvid.onnx` "
        "of commits 3367e46 and dedfaaa; the 150-step A/B runs were made at commit dedfaaa.")
    return {"note": note, "targets": targets, "tradeoff": tradeoff}


def _run_name(command: str) -> str | None:
    """The run folder name a ``road-seg-train`` command writes: its ``output.name`` override or its config's."""
    if not command.startswith("road-seg-train "):
        return None
    if m := re.search(r"output\.name=(\S+)", command):
        return m.group(1)
    cfg = re.search(r"--config (\S+)", command)
    path = ROOT / cfg.group(1) if cfg else None
    return yaml.safe_load(path.read_text())["output"]["name"] if path and path.is_file() else None


def producers_first(commands: list[str]) -> list[str]:
    """``commands`` with each run's training command moved before the first command that starts from it
    (``--init-from runs/NAME/...``), so that the list runs top to bottom."""
    out = list(commands)
    for cmd in commands:
        m = re.search(r"--init-from runs/([^/\s]+)/", cmd)
        if not m:
            continue
        prod = next((c for c in out if c != cmd and _run_name(c) == m.group(1)), None)
        if prod is not None and out.index(prod) > out.index(cmd):
            out.remove(prod)
            out.insert(out.index(cmd), prod)
    return out


def measure_command(card: dict) -> str:
    """The command that measured ``card``: :data:`MEASURE`, with ``--times-from`` if its times are an earlier card's."""
    if not card.get("times_from"):
        return MEASURE
    return (f"python scripts/model_card.py --times-from {card['times_from']}    # this card: every model above "
            f"scored, its times those of the card of commit {card['times_from']}")


def write_text(card_json: Path) -> dict:
    """Fill the paragraphs of the card in ``card_json`` and render its Markdown twin again (no re-measurement)."""
    card = json.loads(card_json.read_text())
    card.update(paragraphs(card))
    commands = [c for c in card["commands"] if "tools.model_card" not in c and "scripts/model_card.py" not in c]
    # the distillation runs read the teacher's cache, made once before them
    for cache, marker in ((TEACHER_CACHE, "distill_weight"), (TEACHER_CACHE_IDD, "train_road_no_camvid_teacher"),
                          (TEACHER_CACHE_IDD_HIRES, "output.name=road_mnv2_no_camvid_teacher_labels_hires")):
        if cache not in commands:
            commands.insert(next((i for i, c in enumerate(commands) if marker in c), len(commands)), cache)
    # the shipped pair is exported from the copy with the operating point, made just before
    export = f"road-seg-export {RUN}/model.keras "
    commands = [c.replace(export, f"road-seg-export {OPERATING} ") for c in commands
                if c not in (OPERATING_CMD, SOUP_EXPORT, *STAGE5_SHIPPED_CMDS)]
    at = next((i for i, c in enumerate(commands) if c.startswith(f"road-seg-export {OPERATING} ")), len(commands))
    commands[at:at] = [*STAGE5_SHIPPED_CMDS, OPERATING_CMD]
    # the soup's export follows the soup
    at = next((i + 1 for i, c in enumerate(commands) if c.startswith("road-seg-soup ")), len(commands))
    commands.insert(at, SOUP_EXPORT)
    sizes = [input_size_export(hw) for hw in INPUT_SIZES.values()]
    commands = producers_first([c for c in commands if c not in (QUANTIZE, QUANTIZE_ALL, *sizes)])
    card["commands"] = [*commands, QUANTIZE, QUANTIZE_ALL, *sizes, measure_command(card)]
    card_json.write_text(json.dumps(card, indent=1))
    card_json.with_suffix(".md").write_text(render(card))
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text-only", action="store_true", help="only rewrite the paragraphs from the card's JSON")
    p.add_argument("--runs", type=int, default=100, help="timing runs per model")
    p.add_argument("--out", default="models/MODEL_CARD.md")
    p.add_argument("--times-from", default="", metavar="GIT_REF",
                   help="score anew but keep every time from the card committed at GIT_REF (a machine too busy to "
                        "time on)")
    p.add_argument("--ship", action="store_true",
                   help=f"only export {RUN}'s model into models/ and write its INT8 copy (no measuring)")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.ship:
        scan = Path("out/operating_threshold.json")
        scan.parent.mkdir(parents=True, exist_ok=True)
        if choose_threshold([*OPERATING_CMD.split()[1:], "--json", str(scan)]) != 0:
            return 1
        if (chosen := json.loads(scan.read_text())["chosen"]) != OPERATING_THRESHOLD:
            print(f"road-seg-threshold chose {chosen}, not OPERATING_THRESHOLD {OPERATING_THRESHOLD}: update it")
            return 1
        if export([OPERATING, FLOAT, "--keras-copy", str(Path(FLOAT).with_suffix(".keras"))]) != 0:
            return 1
        return quantize(QUANTIZE.split()[1:])
    if not a.text_only:
        Path(INT8_ALL).parent.mkdir(parents=True, exist_ok=True)
        if quantize(QUANTIZE.split()[1:]) != 0 or quantize(QUANTIZE_ALL.split()[1:]) != 0:
            return 1
        Path("runs/input_hw").mkdir(parents=True, exist_ok=True)
        if any(export(input_size_export(hw).split()[1:]) != 0 for hw in INPUT_SIZES.values()):
            return 1
        args = ["--run", RUN, "--int8", INT8, "--runs", str(a.runs), "--out", str(out), "--previous", PREVIOUS,
                *(["--times-from", a.times_from] if a.times_from else [])]
        for run in CROSS_RUNS:
            args += ["--cross-run", run]
        for label, path in CANDIDATES.values():
            args += ["--candidate", f"{label}={path}"]
        if measure(args) != 0:
            return 1
    card = write_text(out.with_suffix(".json"))
    print("\n\n".join(card[k] for k in ("note", "targets", "tradeoff")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
