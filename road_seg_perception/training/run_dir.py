"""The run folder of ``road-seg-train``: claimed by exactly one run, resumed only by a matching checkpoint.

* A new run never writes into a folder that holds anything: it is refused with a message that
  says how to continue that run (``--resume``) or pick another folder.
* A run that fails or is interrupted before its first epoch completed leaves no folder behind
  (only files this run wrote are removed, and the folder only if this run made it).
* ``--resume`` checks that the checkpoint ``last.keras`` is the model the folder's configuration
  (with the ``--set`` overrides of the resume) builds: same weights, same shapes.
"""

from __future__ import annotations

from pathlib import Path

#: Files a run writes before its first epoch completes (removed if it fails then).
EARLY_FILES = ("config.yaml", "versions.json", "command.txt")
#: Files that make a run folder resumable.
RESUME_FILES = ("state.json", "last.keras")


class RunDirError(ValueError):
    """A run folder that cannot be used as asked; the message names it and says what to do."""


class RunFolder:
    """The folder one training run writes into; :meth:`abandon` undoes a run that saved no epoch."""

    def __init__(self, path: Path, created: bool, resumed: bool):
        self.path, self.created, self.resumed = path, created, resumed

    @property
    def has_epoch(self) -> bool:
        """True once a completed epoch is saved (a resumable checkpoint)."""
        return all((self.path / f).is_file() for f in RESUME_FILES)

    def abandon(self) -> bool:
        """After a failure: if no epoch was saved by a new run, remove what it wrote; True if the folder is gone."""
        if self.resumed or self.has_epoch:
            return False
        for name in EARLY_FILES:
            (self.path / name).unlink(missing_ok=True)
        for tmp in self.path.glob(".*.tmp*"):  # temp files of atomic writes cut short
            tmp.unlink(missing_ok=True)
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()
            return True
        return False


def claim_new(path: Path) -> RunFolder:
    """The folder for a new run: made here, or an existing empty folder; :class:`RunDirError` otherwise."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise RunDirError(f"run folder {path} exists and is not a folder")
    if path.is_dir():
        held = sorted(p.name for p in path.iterdir())
        if held:
            shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
            hint = (f"continue it with --resume {path}, or " if all((path / f).is_file() for f in RESUME_FILES)
                    else "")
            raise RunDirError(f"run folder {path} is not empty ({shown}); a new run never writes into an existing "
                              f"run folder: {hint}choose another with --run-dir DIR or --set output.name=NAME")
        return RunFolder(path, created=False, resumed=False)
    path.mkdir(parents=True)
    return RunFolder(path, created=True, resumed=False)


def open_for_resume(path: Path) -> RunFolder:
    """The folder of an interrupted run; :class:`RunDirError` unless it holds ``state.json`` and ``last.keras``."""
    missing = [f for f in (*RESUME_FILES, "config.yaml") if not (path / f).is_file()]
    if missing:
        raise RunDirError(f"--resume {path}: no {'/'.join(missing)} there; nothing to resume")
    return RunFolder(path, created=False, resumed=True)


def weight_signature(model) -> list[tuple[str, tuple[int, ...]]]:
    """``(path, shape)`` of every weight of a Keras model, in order."""
    return [(str(getattr(w, "path", w.name)), tuple(int(d) for d in w.shape)) for w in model.weights]


def check_checkpoint_matches(path: Path, checkpoint, expected) -> None:
    """:class:`RunDirError` unless ``checkpoint`` (``last.keras``) has the weights of ``expected`` (the model
    the folder's configuration builds)."""
    got, want = weight_signature(checkpoint), weight_signature(expected)
    if [g[1] for g in got] == [w[1] for w in want]:  # shapes, in order (auto-made names may differ)
        return
    diff = next((f"{g[0]} {g[1]} in the checkpoint, {w[0]} {w[1]} from the config"
                 for g, w in zip(got, want, strict=False) if g[1] != w[1]),
                f"{len(got)} weights in the checkpoint, {len(want)} from the config")
    raise RunDirError(f"--resume {path}: last.keras does not match the folder's config.yaml (with the --set "
                      f"overrides given): {diff}; resume with the model settings the run was started with")
