"""Rows of an earlier model card for models whose files are not on the machine making the card.

A card scores and times every candidate it lists. Training all of them again takes many hours, so
when a candidate's model file (or a cross-dataset run, or an earlier training stage) is missing,
``model_card --previous REF`` takes its row from the card committed at ``REF`` instead, marked
``carried_from`` with the commit the numbers were measured at: not re-scored and not re-timed.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

CARD_JSON = "models/MODEL_CARD.json"
#: a stage line of a card's "Reproduce" list: ``COMMAND    # stage 2 of 5...`` (``# stage 6 of 6, run 1 of 3`` for
#: each run of a soup)
_STAGE = re.compile(r"^(?P<cmd>.*?)\s+# stage (?P<i>\d+) of \d+(?:, run (?P<k>\d+) of (?P<n>\d+))?")
#: ``--set`` keys that every stage sentence states already (or that do not change the recipe)
_STATED = ("model.input_hw", "train.epochs", "train.finetune_lr_scale", "output.name", "train.cache_dir")


class CarryError(RuntimeError):
    """A model the card lists is missing and no earlier card has its row."""


def _git(repo: Path | str, *args: str) -> str:
    """The output of ``git ARGS`` in ``repo``; OSError or CalledProcessError when git cannot give it."""
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def previous_card(ref: str, repo: Path | str = ".") -> tuple[dict, str]:
    """The card at git ``ref`` and the commit its numbers come from (``measured_at``, else the one that wrote it)."""
    try:
        card = json.loads(_git(repo, "show", f"{ref}:{CARD_JSON}"))
        commit = _git(repo, "log", "-1", "--format=%h", ref, "--", CARD_JSON)  # the commit that wrote that card
    except (OSError, subprocess.CalledProcessError) as e:
        raise CarryError(f"--previous {ref}: cannot read {CARD_JSON} at that commit ({e})") from e
    return card, card.get("measured_at") or commit


def card_commit(ref: str, repo: Path | str = ".") -> str:
    """The commit that wrote the card at git ``ref`` (``git show COMMIT:models/MODEL_CARD.json`` gives that card)."""
    try:
        return _git(repo, "log", "-1", "--format=%h", ref, "--", CARD_JSON)
    except (OSError, subprocess.CalledProcessError) as e:
        raise CarryError(f"cannot find the commit of {CARD_JSON} at {ref} ({e})") from e


def head_commit(repo: Path | str = ".") -> str:
    """The short commit the working tree is at ('' outside git): recorded as the card's ``measured_at``."""
    try:
        return _git(repo, "rev-parse", "--short", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return ""


def carry_candidate(prev: dict, origin: str, name: str, path: str) -> dict:
    """The earlier card's row for model ``path`` (found by file, else by name), renamed ``name``, untimed."""
    rows = prev.get("candidates", [])
    row = next((c for c in rows if c.get("model") == path), None) or next((c for c in rows if c["name"] == name),
                                                                          None)
    if row is None:
        raise CarryError(f"candidate model {path} is missing and the earlier card has no row for it")
    return {**row, "name": name, "model": path, "total_ms": None, "fps": None,
            "carried_from": row.get("carried_from") or origin}


def carry_cross(prev: dict, origin: str, run: str) -> list[dict]:
    """The earlier card's cross-dataset rows of run folder name ``run``."""
    rows = [{**r, "carried_from": r.get("carried_from") or origin} for r in prev.get("cross", []) if r["run"] == run]
    if not rows:
        raise CarryError(f"cross-dataset run {run} is missing and the earlier card has no row for it")
    return rows


def stage_labels(stages: list[dict]) -> list[str]:
    """'Stage 1', 'Stage 2', ... for a chain of stages; the runs of a soup (key ``soup``: k) share one stage:
    'Stage 6, run 1 of 3'."""
    soup_size = sum(1 for st in stages if "soup" in st)
    labels, i, in_soup = [], 0, False
    for st in stages:
        if "soup" in st:
            i += 0 if in_soup else 1
            in_soup = True
            labels.append(f"Stage {i}, run {st['soup']} of {soup_size}")
        else:
            i, in_soup = i + 1, False
            labels.append(f"Stage {i}")
    return labels


def stage_number(label: str) -> int:
    """6 for 'Stage 6' and for 'Stage 6, run 1 of 3'."""
    return int(label.split()[1].rstrip(","))


def _label(m: re.Match) -> str:
    return f"Stage {m['i']}" + (f", run {m['k']} of {m['n']}" if m["k"] else "")


def carry_stages(prev: dict, origin: str, last_run: str) -> tuple[list[dict], list[str]]:
    """The earlier card's training stages up to run ``last_run`` and their commands (stage comments removed).

    ``last_run`` the earlier card's soup: the stages up to it, the runs it averaged included; one run of that
    soup: the stages before the soup's and that run alone."""
    stages = prev.get("stages", [])
    names = [s["run"] for s in stages]
    lines = [m for c in prev.get("commands", []) if (m := _STAGE.match(c))]
    found, want = [_label(m) for m in lines], stage_labels(stages)
    if found != want:
        raise CarryError(f"the earlier card's stage commands ({found}) do not match its stages ({want})")
    soup_runs = [j for j, st in enumerate(stages) if "soup" in st]
    if last_run == prev.get("soup", {}).get("run") and soup_runs:
        keep = list(range(soup_runs[-1] + 1))
    elif last_run in names and (last := names.index(last_run)) in soup_runs:
        keep = [j for j in range(last + 1) if j not in soup_runs or j == last]
    elif last_run in names:
        keep = list(range(names.index(last_run) + 1))
    else:
        raise CarryError(f"the run {last_run} that the first stage starts from has no metrics.json and the earlier "
                         f"card has no stage of that name (its stages: {names})")
    out = [{**stages[j], "carried_from": stages[j].get("carried_from") or origin} for j in keep]
    if last_run in names and "soup" in out[-1]:  # one run of a soup, carried as a stage of its own
        del out[-1]["soup"]
    return out, [lines[j]["cmd"] for j in keep]


def carry_recipe(prev: dict, stages: list[dict]) -> str:
    """The earlier card's recipe as far as the carried ``stages`` go: its first stage's summary and one
    " Then ..." sentence for each later stage (the runs of a soup share one)."""
    n = stage_number(stage_labels(stages)[-1]) if stages else 1
    return " Then ".join(prev["recipe"].split(" Then ")[:n])


def other_commands(prev: dict) -> list[str]:
    """The earlier card's commands for everything but its stages, its soup, its export and its measuring line."""
    return [c for c in prev.get("commands", []) if not _STAGE.match(c) and not c.startswith("road-seg-export ")
            and not c.startswith("road-seg-soup ") and "road_seg_perception.tools.model_card" not in c]


def extra_settings(command: str) -> list[str]:
    """The ``--set`` overrides of a training command beyond those a stage sentence states."""
    words = shlex.split(command)
    sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    return [s for s in sets if s.partition("=")[0].strip() not in _STATED]
