"""The training loop's parts: model build and compile, per-epoch validation and checkpoints, weight transfer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from road_seg_perception.core.fileio import atomic_save, atomic_write_text
from road_seg_perception.core.metrics import Confusion, SplitScore
from road_seg_perception.core.postprocess import probability_to_mask
from road_seg_perception.core.preprocessing import preprocess
from road_seg_perception.training.config import UNetConfig
from road_seg_perception.training.data import Arrays


def predict_probs(model, images: list[np.ndarray], hw: tuple[int, int], batch: int = 8) -> list[np.ndarray]:
    """Low-resolution road probabilities for full-resolution RGB images."""
    out: list[np.ndarray] = []
    for i in range(0, len(images), batch):
        x = np.stack([preprocess(im, hw) for im in images[i:i + batch]])
        # [:len(x)]: under MultiWorkerMirroredStrategy every worker predicts the whole batch and Keras
        # concatenates the workers' copies
        p = np.asarray(model.predict_on_batch(x))[: len(x)]
        out.extend(p[..., 0].astype(np.float32))
    return out


def evaluate(model, data: Arrays, hw: tuple[int, int], threshold: float) -> tuple[Confusion, list[float]]:
    """Full-resolution confusion over a split (void ignored) and per-frame IoUs."""
    score = SplitScore()
    for prob, label in zip(predict_probs(model, data.images, hw), data.labels, strict=True):
        score.add(probability_to_mask(prob, label.shape[:2], threshold), label)
    return score.total, score.frame_ious


def score_splits(model, val: dict[str, Arrays], hw: tuple[int, int], threshold: float) -> dict[str, dict]:
    """Pooled full-resolution scores of every validation split, by name."""
    return {name: evaluate(model, arr, hw, threshold)[0].scores() for name, arr in val.items()}


def selection_score(split_scores: dict[str, dict], select: str = "") -> float:
    """The checkpoint-selection score: one split's IoU (``select``) or the mean IoU over all splits.

    ``select == "last"`` keeps the final epoch (the callback saves every one); the score is then the mean.
    """
    if select and select != "last":
        if select not in split_scores:
            raise ValueError(f"train.select_split {select!r} is not a validation split ({', '.join(split_scores)})")
        return split_scores[select]["iou"]
    return float(np.mean([s["iou"] for s in split_scores.values()]))


def build_callback(run_dir: Path, val: Arrays | dict[str, Arrays], cfg: dict, state: dict):
    """Validation, best/last checkpoints, resumable state and early stopping in one callback.

    ``last.keras`` is the whole training model (an auxiliary head included) with its optimizer;
    ``model.keras`` is the road output only. With ``train.ema_momentum`` the epoch is scored and
    ``model.keras`` saved with the moving averages of the weights; ``last.keras`` keeps the raw
    weights (and the averages in its optimizer), so a resumed run goes on where it stopped.

    With several validation splits the best checkpoint is chosen by :func:`selection_score`.
    """
    import keras

    from road_seg_perception.training.model import road_only
    from road_seg_perception.training.optimizer import averaged_weights

    hw = tuple(cfg["model"]["input_hw"])
    thr = float(cfg["train"]["threshold"])
    patience = int(cfg["train"]["early_stopping_patience"])
    splits = val if isinstance(val, dict) else {"val": val}
    select = str(cfg["train"].get("select_split", ""))

    class RunCallback(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._t0 = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            with averaged_weights(self.model):
                self._score_and_save_best(epoch, logs)
            state["epoch"] = epoch + 1
            atomic_save(self.model, run_dir / "last.keras")
            atomic_write_text(run_dir / "state.json", json.dumps(state, indent=1))
            if patience > 0 and state["wait"] >= patience:
                print(f"early stopping: no val IoU gain in {patience} epochs", flush=True)
                self.model.stop_training = True

        def _score_and_save_best(self, epoch, logs):
            logs = logs if logs is not None else {}
            per_split = score_splits(self.model, splits, hw, thr)
            scores = dict(next(iter(per_split.values())))
            scores["iou"] = selection_score(per_split, select)
            for k, v in scores.items():
                logs[f"val_{k}"] = v
            lr = self.model.optimizer.learning_rate
            row = {"epoch": epoch + 1, "loss": float(logs.get("loss", float("nan"))),
                   "seconds": round(time.time() - self._t0, 1), "lr": float(np.asarray(lr)),
                   **{f"val_{k}": round(v, 5) for k, v in scores.items()}}
            if len(per_split) > 1:
                row.update({f"val_{n}_iou": round(v["iou"], 5) for n, v in per_split.items()})
            state["history"].append(row)
            improved = select == "last" or scores["iou"] > state["best_iou"]
            if improved:
                state.update(best_iou=scores["iou"], best_epoch=epoch + 1, wait=0)
                atomic_save(road_only(self.model), run_dir / "model.keras")
            else:
                state["wait"] += 1
            detail = ("  [" + "  ".join(f"{n} {v['iou']:.4f}" for n, v in per_split.items()) + "]"
                      if len(per_split) > 1 else "")
            print(f"epoch {epoch + 1}: loss {row['loss']:.4f}  val IoU {scores['iou']:.4f}  F1 {scores['f1']:.4f}"
                  f"  P {scores['precision']:.4f}  R {scores['recall']:.4f}{detail}  ({row['seconds']} s)"
                  + ("  * best" if improved else ""), flush=True)

    return RunCallback()


def progress_callback(steps: int):
    """A tqdm bar per epoch (steps, loss); refreshed at most every 20 s when the output is not a terminal."""
    import sys

    import keras
    from tqdm import tqdm

    interactive = sys.stderr.isatty()

    class Progress(keras.callbacks.Callback):
        bar = None

        def on_epoch_begin(self, epoch, logs=None):
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", unit="step",
                            mininterval=0.5 if interactive else 20.0, leave=interactive)

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

        def on_epoch_end(self, epoch, logs=None):
            self.bar.close()

    return Progress()


def unet_config(cfg: dict):
    """The ``model`` section as a validated ``UNetConfig`` (``ValueError`` names the bad key)."""
    return UNetConfig.from_dict(cfg["model"])


def build_and_compile(cfg: dict, steps_per_epoch: int, lr_scale: float = 1.0):
    import keras

    from road_seg_perception.training.losses import parse_loss
    from road_seg_perception.training.model import build_model
    from road_seg_perception.training.optimizer import make_optimizer

    model = build_model(unet_config(cfg))
    t = cfg["train"]
    lr = float(t["lr"]) * lr_scale
    warm = int(round(float(t["warmup_epochs"]) * steps_per_epoch))
    total = max(1, steps_per_epoch * int(t["epochs"]))
    if warm > 0:  # linear warm-up from lr/10 to lr, then cosine decay over the remaining steps
        schedule = keras.optimizers.schedules.CosineDecay(
            lr / 10.0, decay_steps=max(1, total - warm), alpha=float(t["min_lr_fraction"]),
            warmup_target=lr, warmup_steps=warm)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=float(t["min_lr_fraction"]))
    opt = make_optimizer(model, schedule, float(t["weight_decay"]), float(t["encoder_lr_scale"]),
                         float(t["ema_momentum"]))
    return model, opt, parse_loss(str(t["loss"]), float(t["distill_weight"]), float(t["aux_weight"]))


def transfer_weights(src, dst, only_encoder: bool = False) -> tuple[int, list[str]]:
    """Copy weights layer by layer where names and shapes match.

    Returns how many layers were copied and the names of ``dst``'s other weighted layers (within the
    encoder with ``only_encoder``), which keep their initial weights: e.g. an auxiliary head that a
    road-only ``model.keras`` does not have.
    """
    from road_seg_perception.training.model import ENCODER_PREFIXES

    by_name = {lyr.name: lyr for lyr in src.layers}
    n, kept = 0, []
    for lyr in dst.layers:
        if (only_encoder and not lyr.name.startswith(ENCODER_PREFIXES)) or not lyr.weights:
            continue
        s = by_name.get(lyr.name)
        if s is not None and [tuple(w.shape) for w in s.weights] == [tuple(w.shape) for w in lyr.weights]:
            lyr.set_weights(s.get_weights())
            n += 1
        else:
            kept.append(lyr.name)
    return n, kept


def fit_schedule_to_epochs(optimizer, total_steps: int) -> None:
    """Stretch or shrink a resumed cosine schedule so it ends after ``total_steps`` steps.

    This lets ``--resume RUN --set train.epochs=N`` change the length of a run; the optimizer's
    step counter (and so the position on the schedule) is kept.
    """
    import keras

    sched = optimizer._learning_rate
    if not isinstance(sched, keras.optimizers.schedules.CosineDecay):
        return
    warm = int(sched.warmup_steps or 0)
    decay = max(1, total_steps - warm)
    if sched.decay_steps != decay:
        optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(
            sched.initial_learning_rate, decay_steps=decay, alpha=sched.alpha,
            warmup_target=sched.warmup_target, warmup_steps=warm)


def strategy_scope(kind: str):
    """The scope to build and fit the model in: ``none``, ``mirrored`` (local GPUs) or ``multiworker`` (TF_CONFIG)."""
    import contextlib

    if kind == "none":
        return contextlib.nullcontext()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(f"--distribute {kind} needs KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    if kind == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads the cluster and this task from TF_CONFIG
        _reduce_nests_per_value(strategy)
        chief, index = worker_role()
        print(f"MultiWorkerMirroredStrategy over {strategy.num_replicas_in_sync} replica(s); this is worker "
              f"{index}{' (chief)' if chief else ''}", flush=True)
        return strategy.scope()
    strategy = tf.distribute.MirroredStrategy()
    print(f"MirroredStrategy over {strategy.num_replicas_in_sync} replica(s)", flush=True)
    return strategy.scope()


def _reduce_nests_per_value(strategy) -> None:
    """Let ``strategy.reduce`` take what Keras 3's ``fit`` hands it under MultiWorkerMirroredStrategy.

    Keras reduces the first ``(x, y)`` batch as one nest and the scalar loss with ``axis=0``;
    the collective strategy takes one value at a time and needs ``axis=None`` for scalars.
    """
    import tensorflow as tf

    plain = strategy.reduce

    def reduce(reduce_op, value, axis=None):
        def one(v):
            rank = strategy.experimental_local_results(v)[0].shape.rank
            return plain(reduce_op, v, axis=axis if rank else None)

        return tf.nest.map_structure(one, value)

    strategy.reduce = reduce


def worker_role() -> tuple[bool, int]:
    """``(is_chief, index)`` of this process from ``TF_CONFIG`` (no TF_CONFIG: a lone chief).

    The chief is the ``chief`` task, or worker 0 when the cluster has no ``chief`` entry, as
    TensorFlow's multi-worker guide defines it.
    """
    import os

    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in tf_config.get("cluster", {}))
    return chief, index


def writer_run_dir(run_dir: Path, kind: str) -> Path:
    """Where this process writes its run folder: ``run_dir``, or a scratch folder on a non-chief worker.

    Every worker saves (saving may take part in collective ops), but only the chief's files are kept.
    """
    if kind != "multiworker" or worker_role()[0]:
        return run_dir
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"road_seg_worker{worker_role()[1]}_"))


def weights_file_model(cfg: dict, path: str):
    model, _, _ = build_and_compile(cfg, 1)
    model.load_weights(path)
    return model
