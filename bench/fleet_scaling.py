#!/usr/bin/env python3
"""Wall time of ``road-seg-eval`` over the CamVid bags for several worker counts.

    python bench/fleet_scaling.py [--workers 0,1,2,4] [--chunk 51] [--model M] [--out out/bench/fleet]

Builds one bag per stretch of at most ``--chunk`` frames of each CamVid drive (train and val, with
ground truth; 10 bags of 31-51 frames at 480x360 by default), then times
``road-seg-eval BAGS_DIR --workers N`` in a fresh process for each N (0: in process, no Ray, the
backend's default threads; N >= 1: a local Ray with N workers of one inference thread each). Wall
time includes Ray's start-up and the report. Speed is reported, never asserted; the results land in
``OUT/fleet_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from road_seg_perception.bagio.bag import read_bag_topics  # noqa: E402
from road_seg_perception.tools.bag import make_bag  # noqa: E402
from road_seg_perception.tools.fleet import is_bag  # noqa: E402
from road_seg_perception.training.datasets import default_camvid_root  # noqa: E402


def build_bags(camvid: Path, out: Path, chunk: int) -> list[Path]:
    """One bag per stretch of at most ``chunk`` frames of each drive of train and val (reused if present)."""
    out.mkdir(parents=True, exist_ok=True)
    bags = []
    for split in ("train", "val"):
        names = sorted(p.name for p in (camvid / split).iterdir() if p.suffix == ".png")
        drives = sorted({n.split("_")[0] for n in names})
        for drive in drives:
            frames = [n for n in names if n.startswith(drive + "_")]
            parts = math.ceil(len(frames) / chunk)
            size = math.ceil(len(frames) / parts)
            for k in range(parts):
                bag = out / f"{split}_{drive}_{k}"
                if not is_bag(bag):
                    sel = out.parent / "frames" / bag.name
                    for sub, src in (("images", split), ("masks", split + "annot")):
                        (sel / sub).mkdir(parents=True, exist_ok=True)
                        for n in frames[k * size:(k + 1) * size]:
                            dst = sel / sub / n
                            if not dst.exists():
                                dst.symlink_to(camvid / src / n)
                    make_bag(sel / "images", bag, sel / "masks", rate=15.0)
                bags.append(bag)
    return bags


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="0,1,2,4", help="comma-separated worker counts (0: in process)")
    p.add_argument("--chunk", type=int, default=51, help="frames per bag at most (default: 51)")
    p.add_argument("--model", help="model file (default: the shipped model)")
    p.add_argument("--camvid", type=Path, default=None, help="CamVid folder (default: the usual location)")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "fleet")
    args = p.parse_args(argv)
    camvid = (args.camvid or default_camvid_root()).resolve()
    bags = build_bags(camvid, args.out / "bags", args.chunk)
    frames = sum(read_bag_topics(b)["/camera/image_raw"].count for b in bags)
    print(f"{len(bags)} bags, {frames} frames, {os.cpu_count()} CPUs", flush=True)
    results = []
    for n in (int(w) for w in args.workers.split(",")):
        report = args.out / f"report_w{n}"
        cmd = [sys.executable, "-m", "road_seg_perception.tools.fleet", str(args.out / "bags"), "--report",
               str(report), "--workers", str(n), "--no-progress", *(["--model", args.model] if args.model else [])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
            return r.returncode
        m = json.loads((report / "metrics.json").read_text())
        row = {"workers": n, "wall_s": round(wall, 2), "run_s": round(m["run"]["wall_s"], 2),
               "frames_per_s": round(frames / wall, 2), "task_s_sum": m["task_seconds"]["sum"],
               "iou": m["aggregate"]["iou"], "confusion": m["aggregate"]["confusion"]}
        results.append(row)
        print(f"workers {n}: wall {wall:.1f} s (run {row['run_s']:.1f} s), {row['frames_per_s']:.1f} frames/s, "
              f"IoU {row['iou']:.4f}", flush=True)
    same = all(r["confusion"] == results[0]["confusion"] for r in results)
    print(f"confusion counts identical across worker counts: {same}")
    out = {"bags": len(bags), "frames": frames, "cpus": os.cpu_count(), "results": results,
           "identical_confusion": same}
    (args.out / "fleet_scaling.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
