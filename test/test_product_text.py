"""The tracked text files speak of the product only: no absolute paths of a machine, no work-log phrases."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".py", ".md", ".txt", ".yaml", ".yml", ".xml", ".cfg", ".toml", ".sh", ".svg", ".html", ".json",
                 ".rviz", ".in", ""}
# written in pieces so that this file does not match itself
MACHINE_PATH = re.compile(r"(?<![\w.$~-])/(?:" + "|".join(["ho" + "me", "wo" + "rk", "t" + "mp", "ro" + "ot",
                                                             "Us" + "ers"]) + r")/")
WORK_LOG = re.compile(r"\b(?:" + "|".join(["this se" + "ssion", "last se" + "ssion", "previous se" + "ssion",
                                           r"issue #?\d+"]) + r")\b", re.IGNORECASE)


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    files = [REPO / p for p in out.decode().split("\0") if p]
    return [f for f in files if f.suffix in TEXT_SUFFIXES and f.is_file() and b"\0" not in f.read_bytes()[:4096]]


def offending_lines(pattern: re.Pattern, files: list[Path]) -> list[str]:
    hits = []
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            m = pattern.search(line)
            if m:
                hits.append(f"{f.relative_to(REPO)}:{n}: {m.group(0)!r}")
    return hits


def test_no_absolute_machine_paths_in_tracked_files():
    hits = offending_lines(MACHINE_PATH, tracked_text_files())
    assert hits == [], "absolute paths of a machine:\n" + "\n".join(hits)


def test_no_work_log_phrases_in_tracked_files():
    hits = offending_lines(WORK_LOG, tracked_text_files())
    assert hits == [], "say what the product does, not how the work went:\n" + "\n".join(hits)


@pytest.mark.parametrize("line, pattern, found", [
    ("model " + "/wo" + "rk/main/models/x.onnx", MACHINE_PATH, True),
    ("SITE=$HOME/.cache/x", MACHINE_PATH, False),
    ("see docs/" + "t" + "mp/x", MACHINE_PATH, False),
    ("fixed in " + "iss" + "ue 7", WORK_LOG, True),
    ("as measured this " + "session", WORK_LOG, True),
    ("the tiss" + "ue 7 sample", WORK_LOG, False),
])
def test_patterns(line, pattern, found):
    assert bool(pattern.search(line)) is found
