"""``road-seg-train``: train, validate and export the road U-Net.

    road-seg-train --config config/train_camvid.yaml [--set train.epochs=5 ...]
    road-seg-train --resume runs/road_unet            # continue an interrupted run
    road-seg-train --config ... --init-from models/road_unet_camvid.keras [--freeze encoder]

The run directory holds ``model.keras`` (best by validation IoU), ``model.onnx``,
``metrics.json``, ``curves.png``, ``samples.png``, ``config.yaml`` and ``versions.json``;
``last.keras`` and ``state.json`` make the run resumable after every completed epoch. A new run
never writes into a folder that holds anything; ``--resume`` checks that the checkpoint is the
model the folder's config builds.

Errors are one line naming the bad input: exit status 2 for a bad setting, file or folder, 1 for
a failure while training, 130 after Ctrl-C (the last completed epoch stays saved; the message says
how to resume). ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

import yaml

from road_seg_perception.core.cli_errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, fail
from road_seg_perception.core.fileio import atomic_write_text
from road_seg_perception.core.imageio import add_max_pixels_argument, pixel_limit
from road_seg_perception.core.model_io import load_keras_model
from road_seg_perception.training.artifacts import finish, versions
from road_seg_perception.training.augment import AugmentConfig
from road_seg_perception.training.config import DEFAULTS, check_aux_head, load_config, parse_set
from road_seg_perception.training.data import data_stream, make_sequence, read_data
from road_seg_perception.training.datasets import (
    DatasetError,
)
from road_seg_perception.training.loop import (
    build_and_compile,
    build_callback,
    fit_schedule_to_epochs,
    progress_callback,
    strategy_scope,
    transfer_weights,
    unet_config,
    weights_file_model,
    writer_run_dir,
)
from road_seg_perception.training.run_dir import (
    RunFolder,
    check_checkpoint_matches,
    claim_new,
    open_for_resume,
)

#: Settings that count things and must be at least 1.
AT_LEAST_ONE = ("train.batch_size", "train.epochs")
#: Settings that scale something and must be above 0.
ABOVE_ZERO = ("train.lr", "train.encoder_lr_scale", "train.finetune_lr_scale")
#: Settings that must be in [0, 1).
FRACTIONS = ("train.ema_momentum",)


class SettingsError(ValueError):
    """A configuration value of the wrong type or range; the message names the key."""


def _type_name(v) -> str:
    return "a list" if isinstance(v, list) else {bool: "true or false", int: "an integer", float: "a number",
                                                  str: "a string", dict: "a mapping"}.get(type(v), type(v).__name__)


def _fits(value, default) -> bool:
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list) and (not default or all(_fits(v, default[0]) for v in value))
    return isinstance(value, type(default))


def check_settings(cfg: dict, defaults: dict = DEFAULTS, prefix: str = "") -> None:
    """:class:`SettingsError` naming the first key whose value has another type than its default's
    (an int where a list is expected, text where a number is), or a count below 1."""
    for key, default in defaults.items():
        name = f"{prefix}{key}"
        if key not in cfg:
            continue
        value = cfg[key]
        if isinstance(default, dict):
            if isinstance(value, dict):
                check_settings(value, default, name + ".")
            continue
        if not _fits(value, default):
            want = _type_name(default)
            if isinstance(default, list) and default:
                want += f" of {_type_name(default[0]).split(' ', 1)[-1]}s"
            raise SettingsError(f"config key {name} must be {want} (like {default!r}), got {value!r}")
        if name in AT_LEAST_ONE and value < 1:
            raise SettingsError(f"config key {name} must be >= 1, got {value!r}")
        if name in ABOVE_ZERO and not value > 0:
            raise SettingsError(f"config key {name} must be > 0, got {value!r}")
        if name in FRACTIONS and not 0 <= value < 1:
            raise SettingsError(f"config key {name} must be >= 0 and < 1, got {value!r}")


def load_settings(path: Path | str | None, overrides: list[str]) -> dict:
    """:func:`load_config` whose YAML errors name the file or the ``--set`` item, then :func:`check_settings`."""
    for item in overrides:
        try:
            parse_set(item)
        except yaml.YAMLError as e:
            raise SettingsError(f"--set {item!r}: not valid YAML ({_yaml_problem(e)})") from e
    try:
        cfg = load_config(path, overrides)
    except yaml.YAMLError as e:
        raise SettingsError(f"config file {path}: not valid YAML ({_yaml_problem(e)})") from e
    except UnicodeDecodeError as e:
        raise SettingsError(f"config file {path}: not UTF-8 text ({e.reason})") from e
    except IsADirectoryError as e:
        raise SettingsError(f"config file {path} is a folder") from e
    check_settings(cfg)
    return cfg


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + str(getattr(e, "problem", None) or e).strip()


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
    p.add_argument("--distribute", choices=["none", "mirrored", "multiworker"], default="none",
                   help="'mirrored': tf.distribute.MirroredStrategy over all local GPUs; 'multiworker': "
                        "MultiWorkerMirroredStrategy over the workers in TF_CONFIG (the chief writes the run "
                        "folder; train.batch_size is the global batch)")
    add_max_pixels_argument(p)  # dataset images and masks, checked from their headers before decoding
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return p.parse_args(argv)


def _kept(names: list[str]) -> str:
    """The part of an ``initialised ...`` line naming the layers that kept their initial weights."""
    if not names:
        return ""
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"; {len(names)} kept their initial weights (no layer of that name and shape there): {shown}"


def run(args: argparse.Namespace, folder: list[RunFolder] | None = None, argv: list[str] | None = None) -> dict:
    """Train (or resume) as ``args`` say; the run folder, once claimed, is appended to ``folder``.

    ``argv`` (the command line) is kept in the run folder's ``command.txt``.
    """
    import keras

    if args.resume:
        run_dir = Path(args.resume)
        rf = open_for_resume(run_dir)
        cfg = load_settings(run_dir / "config.yaml", args.set)
        state = json.loads((run_dir / "state.json").read_text())
    else:
        cfg = load_settings(args.config, args.set)
        run_dir = Path(args.run_dir or Path(cfg["output"]["runs_dir"]) / cfg["output"]["name"])
        state = {"epoch": 0, "best_iou": -1.0, "best_epoch": 0, "wait": 0, "history": [],
                 "data_stream": data_stream(args.init_from)}
    # Settings are checked before any data is read or any run directory is made.
    aug = AugmentConfig.from_dict(cfg["augment"])
    unet_config(cfg)
    check_aux_head(cfg)
    if args.distribute == "multiworker" and args.resume:
        raise SystemExit("--resume with --distribute multiworker is not supported; resume on one worker")
    kept_dir, run_dir = run_dir, writer_run_dir(run_dir, args.distribute)
    if args.resume:  # before any data is read: the checkpoint must be the model this config builds
        from road_seg_perception.training.model import build_model

        check_checkpoint_matches(run_dir, load_keras_model(run_dir / "last.keras"), build_model(unet_config(cfg)))
        keras.backend.clear_session()
    else:
        rf = claim_new(run_dir)
    if folder is not None:
        folder.append(rf)
    seed = int(cfg["train"]["seed"])
    keras.utils.set_random_seed(seed)
    train, val, info = read_data(cfg)
    for name, d in info["datasets"].items():
        splits = ", ".join(f"{k}: {v['frames']} frames of {len(v['drives'])} drive(s)" for k, v in d["splits"].items())
        print(f"dataset {name}: train {d['train_frames']} frames of {d['train_drives']} drive(s) x{d['weight']}; "
              f"val {splits or '-'}", flush=True)
    stream = int(state.get("data_stream", 0))  # runs from before streams resume with none
    seq = make_sequence(train, cfg, aug, seed, stream)
    if stream:
        print(f"augmentation stream {stream:08x} (from the --init-from file): frames are drawn and augmented "
              "afresh, not as in the run that wrote it", flush=True)
    print(f"epoch: {len(seq)} steps of {cfg['train']['batch_size']}", flush=True)
    epochs = int(cfg["train"]["epochs"])
    # rewritten on resume too, so that --set overrides given then (e.g. more epochs) survive a later resume
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    if not args.resume:
        atomic_write_text(run_dir / "versions.json", json.dumps(versions(), indent=1))
        atomic_write_text(run_dir / "command.txt", shlex.join(["road-seg-train", *(argv or [])]) + "\n")
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
                n, kept = transfer_weights(load_keras_model(args.init_from), model)
                print(f"initialised {n} layers from {args.init_from}" + _kept(kept), flush=True)
            if args.encoder_weights:
                src = (load_keras_model(args.encoder_weights) if args.encoder_weights.endswith(".keras")
                       else weights_file_model(cfg, args.encoder_weights))
                n, kept = transfer_weights(src, model, only_encoder=True)
                print(f"initialised {n} encoder layers from {args.encoder_weights}" + _kept(kept), flush=True)
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
            model.fit(seq, epochs=epochs, initial_epoch=state["epoch"], callbacks=[progress_callback(len(seq)), cb],
                      verbose=0)
    metrics = finish(run_dir, cfg, val, info, state)
    if run_dir != kept_dir:  # a non-chief worker: its copy of the run is not kept
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"done: {kept_dir}/model.keras  best epoch {metrics['best_epoch']}  {done_scores(metrics['splits'])}",
          flush=True)
    return metrics


def done_scores(splits: dict[str, dict]) -> str:
    """The closing line's scores: IoU, F1, precision and recall of one split, or every split's IoU and their mean."""
    if len(splits) == 1:
        v = next(iter(splits.values()))
        return f"val IoU {v['iou']:.4f}  F1 {v['f1']:.4f}  P {v['precision']:.4f}  R {v['recall']:.4f}"
    ious = {name: v["iou"] for name, v in splits.items()}
    return (f"mean val IoU {sum(ious.values()) / len(ious):.4f}  ["
            + "  ".join(f"{name} {iou:.4f}" for name, iou in ious.items()) + "]")


def _pretrained_encoder(args: argparse.Namespace) -> bool:
    """Whether the config's model has an encoder with ImageNet weights (then freezing it makes sense)."""
    try:
        m = load_config(args.config, args.set)["model"]
    except (FileNotFoundError, KeyError, ValueError):
        return False
    return m["encoder"] != "unet" and bool(m["encoder_weights"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.config and not args.resume:
        print("road-seg-train: error: give --config FILE or --resume RUN_DIR", file=sys.stderr)
        return EXIT_USAGE
    if args.freeze == "encoder" and not (args.init_from or args.encoder_weights or args.resume
                                         or _pretrained_encoder(args)):
        print("road-seg-train: error: --freeze encoder needs --init-from MODEL, --encoder-weights FILE or a "
              "pretrained model.encoder (freezing a randomly initialised encoder trains nothing useful)",
              file=sys.stderr)
        return EXIT_USAGE
    folder: list[RunFolder] = []
    try:
        with pixel_limit(args.max_image_pixels):  # every dataset and teacher read checks it
            run(args, folder, sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        return _interrupted(folder)
    except (DatasetError, FileNotFoundError, KeyError, ValueError) as e:
        _abandon(folder)
        return fail("road-seg-train", e, EXIT_USAGE, args.debug)
    except Exception as e:  # a failure while training: one line, the traceback only with --debug
        _abandon(folder)
        return fail("road-seg-train", e, EXIT_RUNTIME, args.debug)
    return 0


def _abandon(folder: list[RunFolder]) -> None:
    if folder and folder[0].abandon():
        print(f"road-seg-train: removed {folder[0].path}: no epoch was completed", file=sys.stderr)


def _interrupted(folder: list[RunFolder]) -> int:
    """Ctrl-C: every completed epoch is already saved (atomically); say how to go on, exit 130."""
    if folder and folder[0].has_epoch:
        rf = folder[0]
        epoch = json.loads((rf.path / "state.json").read_text()).get("epoch", "?")
        print(f"road-seg-train: interrupted; epoch {epoch} is saved in {rf.path} (last.keras, state.json); "
              f"continue with: road-seg-train --resume {rf.path}", file=sys.stderr)
    else:
        _abandon(folder)
        print("road-seg-train: interrupted before the first epoch completed; nothing to resume", file=sys.stderr)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
