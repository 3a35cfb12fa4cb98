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
import sys
from pathlib import Path

import yaml

from road_seg_perception.core.fileio import atomic_write_text
from road_seg_perception.core.model_io import load_keras_model
from road_seg_perception.training.artifacts import finish, versions
from road_seg_perception.training.augment import AugmentConfig
from road_seg_perception.training.config import load_config
from road_seg_perception.training.data import make_sequence, read_split
from road_seg_perception.training.datasets import (
    DatasetError,
)
from road_seg_perception.training.loop import (
    build_and_compile,
    build_callback,
    fit_schedule_to_epochs,
    strategy_scope,
    transfer_weights,
    unet_config,
    weights_file_model,
)


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


def run(args: argparse.Namespace) -> dict:
    import keras

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
    with strategy_scope(args.distribute):
        if args.resume:
            from road_seg_perception.training import losses  # noqa: F401  registers RoadLoss for the compiled model

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
                       else weights_file_model(cfg, args.encoder_weights))
                n = transfer_weights(src, model, only_encoder=True)
                print(f"initialised {n} encoder layers from {args.encoder_weights}", flush=True)
            if args.freeze == "encoder":
                from road_seg_perception.training.model import encoder_layers

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
