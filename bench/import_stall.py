"""How long the first Keras/TensorFlow import of a process keeps the main thread from running (rerunnable).

    .venv/bin/python bench/import_stall.py [--runs 3]

Each run is a fresh process: a thread imports Keras (TensorFlow backend) while the main thread
wakes every 5 ms; a gap between wake-ups is time the import held the interpreter lock, when a
signal handler could not run. ``plain`` is ``import keras``; ``prepared`` is
``core.native_import.import_keras`` (TensorFlow's libraries loaded with the lock released,
``ml_dtypes`` imported first). The gaps of the ``ml_dtypes`` import are reported apart: a node
lets stop signals take their default action during it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import json, sys, threading, time
    prepared = sys.argv[1] == "prepared"
    marks = {}
    done = threading.Event()

    def work():
        t0 = time.monotonic()
        if prepared:
            from road_seg_perception.core import native_import
            native_import.preload_tensorflow_libraries()
            marks["ml_dtypes_from"] = time.monotonic() - t0
            import ml_dtypes  # noqa: F401
            marks["ml_dtypes_to"] = time.monotonic() - t0
            native_import.import_keras()
        else:
            import keras  # noqa: F401
        marks["total"] = time.monotonic() - t0
        done.set()

    start = time.monotonic()
    threading.Thread(target=work, daemon=True).start()
    last, gaps = start, []
    while not done.is_set():
        time.sleep(0.005)
        now = time.monotonic()
        gaps.append((now - last, last - start, now - start))
        last = now
    lo, hi = marks.get("ml_dtypes_from", -1.0) - 0.01, marks.get("ml_dtypes_to", -1.0) + 0.01
    inside = lambda g: lo <= g[1] and g[2] <= hi
    print(json.dumps({"total_s": round(marks["total"], 2),
                      "longest_gap_s": round(max(g[0] for g in gaps if not inside(g)), 3),
                      "ml_dtypes_gap_s": round(max([g[0] for g in gaps if inside(g)], default=0.0), 3)}))
""")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for kind in ("plain", "prepared"):
        for _ in range(args.runs):
            r = subprocess.run([sys.executable, "-c", CHILD, kind], capture_output=True, text=True, env=env,
                               timeout=600, check=True)
            print(kind, json.loads(r.stdout.strip().splitlines()[-1]), flush=True)


if __name__ == "__main__":
    main()
