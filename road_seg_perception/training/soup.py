"""Weight soups: one model whose weights are the mean of several fine-tunes of one network.

Runs fine-tuned from the same checkpoint (other seeds, other draws, other lengths) stay close enough
in weight space that the mean of their weights is itself a good model, often better than each of
them (Wortsman et al., "Model soups", ICML 2022), at the inference cost of one. Every variable is
averaged, the batch-normalisation statistics too. Beside ``OUT.keras`` the tool writes
``OUT.soup.json``, the record of what was averaged (the model card reads it to trace a soup back to
its runs).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from road_seg_perception.core.cli_errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, fail
from road_seg_perception.core.fileio import atomic_save
from road_seg_perception.core.model_io import ModelFileError, load_keras_model
from road_seg_perception.training.export import check_output_path


def weight_layout(model) -> list[tuple[str, tuple[int, ...]]]:
    """Each variable's path and shape, in the model's order."""
    return [(w.path, tuple(w.shape)) for w in model.weights]


def check_same_network(models: list, names: list[str]) -> None:
    """``ValueError`` naming the first model whose variables (paths or shapes) differ from the first one's."""
    want = weight_layout(models[0])
    for model, name in zip(models[1:], names[1:], strict=True):
        got = weight_layout(model)
        if got == want:
            continue
        if len(got) != len(want):
            why = f"{len(got)} variables against {len(want)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
            why = f"variable {i} is {got[i][0]} {got[i][1]} against {want[i][0]} {want[i][1]}"
        raise ValueError(f"{name} is not the same network as {names[0]} ({why}); a soup needs fine-tunes "
                         "of one network")


def check_count(n: int) -> None:
    """``ValueError`` unless there are at least two models to average."""
    if n < 2:
        raise ValueError(f"a soup needs at least two models, got {n}")


def average_weights(models: list, names: list[str] | None = None):
    """Set the first model's variables to the mean of every model's (accumulated in float64); return it.

    Models match by their variables' paths and shapes; the soup keeps the first model's layers and input size.
    """
    check_count(len(models))
    names = names or [f"model {i}" for i in range(len(models))]
    check_same_network(models, names)
    variables = [model.weights for model in models]
    for i, var in enumerate(variables[0]):
        total = np.zeros(tuple(var.shape), np.float64)
        for own in variables:
            total += np.asarray(own[i].numpy(), np.float64)
        var.assign((total / len(models)).astype(var.dtype))
    return models[0]


def record_path(out: Path) -> Path:
    """Where the record of the soup written to ``out`` goes: ``OUT.soup.json`` beside it."""
    return out.with_suffix(".soup.json")


def read_record(out: Path) -> dict | None:
    """The record of the soup at ``out``, or None if it has none: ``models``, its inputs (paths relative to
    ``out``'s folder, so the record holds wherever it is read from) and ``command``, as it was given."""
    path = record_path(out)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not (isinstance(record["models"], list) and isinstance(record["command"], str)):
            raise TypeError("models must be a list, command a string")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"soup record {path} is not one road-seg-soup writes ({e})") from e
    return record


def record_models(out: Path) -> list[Path] | None:
    """The input files of the soup at ``out`` (as paths from the current folder, normalised), or None."""
    record = read_record(out)
    if record is None:
        return None
    return [Path(os.path.relpath(os.path.normpath(out.parent.absolute() / m))) for m in record["models"]]


def write_record(out: Path, models: list[str], argv: list[str]) -> None:
    """Write the soup's record: its inputs (relative to ``out``'s folder) and the command that made it."""
    rel = [os.path.relpath(Path(m).absolute(), out.parent.absolute()) for m in models]
    record = {"models": rel, "command": shlex.join(["road-seg-soup", *argv])}
    tmp = record_path(out).with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(record_path(out))


def main(argv: list[str] | None = None) -> int:
    """``road-seg-soup OUT.keras IN.keras IN.keras [...]``: write the uniform weight soup of the inputs."""
    import argparse

    p = argparse.ArgumentParser(prog="road-seg-soup", description="Average the weights of fine-tunes of one "
                                "road model into one .keras model (export it with road-seg-export); its record, "
                                "the inputs and this command, goes beside it as OUT.soup.json.")
    p.add_argument("output", metavar="OUT.keras")
    p.add_argument("models", nargs="+", metavar="IN.keras", help="two or more .keras files of one network")
    p.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    a = p.parse_args(argv)
    out = Path(a.output)
    try:
        check_count(len(a.models))  # before any model is loaded
        if out.suffix != ".keras":
            raise ValueError(f"output {out} must end in .keras")
        check_output_path(out, "output", [Path(m) for m in a.models])
        models = [load_keras_model(m) for m in a.models]
        average_weights(models, a.models)
    except (ModelFileError, ValueError, OSError) as e:
        return fail("road-seg-soup", e, EXIT_USAGE, a.debug)
    try:
        record_path(out).unlink(missing_ok=True)  # never a record of an earlier soup beside this one
        atomic_save(models[0], out)
        write_record(out, a.models, [a.output, *a.models])
        print(f"wrote {out}: the mean of {len(models)} models' weights")
    except KeyboardInterrupt:
        print("road-seg-soup: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a runtime failure: one line, the traceback only with --debug
        return fail("road-seg-soup", e, EXIT_RUNTIME, a.debug)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
