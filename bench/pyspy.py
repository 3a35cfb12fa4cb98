"""py-spy handling: find it, sample a process, summarise the stacks it wrote."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def py_spy_path() -> str | None:
    """The ``py-spy`` executable beside this interpreter, else on PATH (None when absent)."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def start_py_spy(pid: int, out: Path, duration_s: float, log: Any = print) -> subprocess.Popen | None:
    """Sample process ``pid`` (every thread, native frames off) for ``duration_s`` into ``out``.

    The suffix picks the format: ``.json`` speedscope, ``.txt`` collapsed stacks, anything else a flame graph.
    """
    exe = py_spy_path()
    if exe is None:
        log("  py-spy is not installed (pip install -r requirements-dev.txt): no node profile")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = "speedscope" if out.suffix == ".json" else "raw" if out.suffix == ".txt" else "flamegraph"
    # argv[0] is the bare name: py-spy writes its command line into the profile
    cmd = ["py-spy", "record", "--pid", str(pid), "--duration", str(max(1, round(duration_s))), "--rate", "200",
           "--threads", "--nonblocking", "--format", fmt, "--output", str(out)]
    return subprocess.Popen(cmd, executable=exe, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_py_spy(spy: subprocess.Popen, out: Path, log: Any = print) -> str | None:
    """Wait for ``py-spy record``; the profile's path, or None (and the reason logged) when it failed."""
    try:
        text, _ = spy.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        text, _ = spy.communicate()
    if spy.returncode != 0 or not out.is_file():
        log(f"  py-spy failed (status {spy.returncode}): {(text or '').strip()[-500:]}")
        return None
    log(f"  node profile of the flood phase: {out}")
    if out.suffix == ".txt":
        for line in summarize_stacks(out):
            log("    " + line)
    return str(out)


def summarize_stacks(path: Path, top: int = 12) -> list[str]:
    """Share of py-spy's samples (collapsed ``frame;frame;... count`` lines) per thread and per innermost frame."""
    per_thread: dict[str, int] = {}
    per_frame: dict[tuple[str, str], int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]  # "thread (1234): name" -> name
        per_thread[thread] = per_thread.get(thread, 0) + int(count)
        per_frame[(thread, frames[-1])] = per_frame.get((thread, frames[-1]), 0) + int(count)
    total = sum(per_thread.values())
    if not total:
        return ["no samples"]
    lines = [f"{total} samples of running (not waiting) threads; by thread: "
             + ", ".join(f"{t} {100 * n / total:.1f}%" for t, n in sorted(per_thread.items(), key=lambda kv: -kv[1]))]
    lines += [f"{100 * n / total:5.1f}%  {t}: {f}"
              for (t, f), n in sorted(per_frame.items(), key=lambda kv: -kv[1])[:top]]
    return lines


