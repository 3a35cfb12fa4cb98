"""``road-seg-eval`` over many bags: one Ray task per bag, one fleet report.

    road-seg-eval BAG_OR_DIR... --report DIR [--workers N] [--ray-address ADDR] [--threads T]
                  [--image-topic T] [--gt-topic T] [--model M] [--backend B] [--device D]
                  [--every-n N] [--threshold T] [--limit N] [--worst-k K] [--no-progress]
                  [--[no-]temporal-smoothing] [--temporal-alpha A] [--temporal-reset-gap S]

``BAG_OR_DIR`` is a bag folder, a folder holding bag folders, a glob (quoted, ``'drives/2026-*'``)
or a text file listing any of these one per line (``#`` starts a comment; relative lines are
relative to the list file). One bag without ``--workers``/``--ray-address`` is the single-bag
evaluation of :mod:`road_seg_perception.tools.evaluate`, with all of its flags.

Each bag is one Ray task (``num_cpus=1``) running the single-bag scoring of ``evaluate_bag`` with
the same ``RoadSegmenter``; the task returns the bag's metrics, per-frame rows and worst frames,
and only the driver writes files. The model file travels through Ray's object store, so workers
need the bags (shared storage) and this package installed, not the model. ``--workers N`` is the
number of bags in flight at once: a local Ray with N CPUs by default, or at most N tasks on the
cluster at ``--ray-address``. ``--workers 0`` runs the bags one after the other in this process,
without Ray.

``DIR`` receives ``metrics.json``, ``frames.csv`` (one row per frame, with its bag) and
``report.html`` (see :mod:`road_seg_perception.tools.fleet_report`), written only once every bag
is done. A bag that fails (corrupt, missing topic, a worker that died) is a row of the report
and the others go on; the exit status is then 1. Ctrl-C stops the workers and writes nothing
(exit status 130).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from road_seg_perception.bagio.bag import (
    EXIT_USAGE,
    BagError,
    default_image_topic,
    read_bag_topics,
)
from road_seg_perception.core.imageio import add_max_pixels_argument
from road_seg_perception.core.model_io import ModelFileError
from road_seg_perception.core.segmenter import PostConfig, default_model_path
from road_seg_perception.core.temporal import ProbabilityEMA
from road_seg_perception.tools import evaluate
from road_seg_perception.tools.eval_args import add_eval_args
from road_seg_perception.tools.eval_scoring import EvalConfig
from road_seg_perception.tools.fleet_report import write_fleet_report
from road_seg_perception.tools.fleet_task import BagOutcome, FleetError, ModelBlob, TaskOptions, evaluate_one

EXIT_FAILED_BAGS = 1
EXIT_INTERRUPTED = 130
GLOB_CHARS = set("*?[")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- finding bags


def is_bag(path: Path) -> bool:
    """A rosbag2 folder: a directory with ``metadata.yaml``."""
    return path.is_dir() and (path / "metadata.yaml").is_file()


def _expand_one(spec: str, base: Path, seen_lists: set[Path]) -> list[Path]:
    if GLOB_CHARS & set(spec):
        pattern = spec if Path(spec).is_absolute() else str(base / spec)
        hits = sorted(Path(p) for p in glob.glob(pattern))
        bags = [p for p in hits if is_bag(p)]
        if not bags:
            raise FleetError(f"glob {spec!r} matches no bag folder")
        return bags
    p = Path(spec) if Path(spec).is_absolute() else base / spec
    if is_bag(p):
        return [p]
    if p.is_dir():
        bags = sorted(c for c in p.iterdir() if is_bag(c))
        if not bags:
            raise FleetError(f"{p} is neither a bag (no metadata.yaml) nor a folder holding bags")
        return bags
    if p.is_file():
        if p.resolve() in seen_lists:
            raise FleetError(f"bag list {p} includes itself")
        seen_lists.add(p.resolve())
        out: list[Path] = []
        for line in p.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out += _expand_one(line, p.parent, seen_lists)
        if not out:
            raise FleetError(f"bag list {p} names no bag")
        return out
    raise FleetError(f"{spec}: no such bag, folder, glob match or list file")


def find_bags(specs: Iterable[str]) -> list[Path]:
    """Every bag named by ``specs`` (bags, folders of bags, globs, list files), in order, without repeats."""
    out: list[Path] = []
    seen: set[Path] = set()
    for spec in specs:
        for bag in _expand_one(str(spec), Path.cwd(), set()):
            key = bag.resolve()
            if key not in seen:
                seen.add(key)
                out.append(bag)
    if not out:
        raise FleetError("no bag given")
    return out


def bag_names(bags: list[Path]) -> list[str]:
    """Short unique names for the report: the folder name, with ``-2``, ``-3``... on repeats."""
    names: list[str] = []
    used: set[str] = set()
    for b in bags:
        name, n = b.name, 1
        while name in used:
            n += 1
            name = f"{b.name}-{n}"
        used.add(name)
        names.append(name)
    return names


def expected_frames(bag: Path, cfg: EvalConfig) -> int:
    """Frames the evaluation will process (0 if the bag cannot be read: its task reports why)."""
    try:
        topics = read_bag_topics(bag)
        t = topics.get(cfg.image_topic or default_image_topic(topics))
    except (BagError, OSError):
        return 0
    if t is None:
        return 0
    n = t.count if cfg.limit is None else min(t.count, cfg.limit)
    return (n + cfg.every_n - 1) // cfg.every_n


# --------------------------------------------------------------------------- running the fleet


class _ActorTick:
    """``tick`` for Ray tasks: adds frames to the driver's counter actor (fire and forget)."""

    def __init__(self, actor):
        self.actor = actor

    def __call__(self, n: int) -> None:
        self.actor.add.remote(n)


class _Bar:
    """A tqdm bar over frames with the bags done/failed as postfix (or nothing when disabled)."""

    def __init__(self, total_frames: int, n_bags: int, enabled: bool):
        self.n_bags, self.done, self.failed = n_bags, 0, 0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total_frames, desc="fleet", unit="frame", dynamic_ncols=True)
            self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"bags {self.done}/{self.n_bags}" + (f", {self.failed} failed"
                                                                         if self.failed else ""))

    def frames(self, n: int) -> None:
        if self.bar is not None and n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def bag_done(self, outcome: BagOutcome) -> None:
        self.done += 1
        self.failed += not outcome.ok
        self._postfix()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def keep_fleet_worst(outcomes: list[BagOutcome], k: int) -> None:
    """Drop the worst-frame panels that can no longer be among the fleet's ``k`` worst (bounded driver memory)."""
    ranked = sorted((w.iou, o.bag, w.index) for o in outcomes for w in o.worst)[:k]  # as fleet_worst ranks
    keep = {(bag, index) for _, bag, index in ranked}
    for o in outcomes:
        o.worst = [w for w in o.worst if (o.bag, w.index) in keep]


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise FleetError("--workers needs Ray: pip install 'road_seg_perception[fleet]' "
                         "(or -r requirements-fleet.txt); --workers 0 runs without it") from e
    return ray


def _run_sequential(bags: list[Path], names: list[str], model: ModelBlob | None, opts: TaskOptions, bar: _Bar,
                    on_done: Callable[[BagOutcome], None] | None) -> list[BagOutcome]:
    outcomes: list[BagOutcome] = []
    count = [0]

    def tick(n: int) -> None:
        count[0] += n
        bar.frames(count[0])

    for bag, name in zip(bags, names, strict=True):
        o = evaluate_one(str(bag), name, model, opts, tick)
        outcomes.append(o)
        keep_fleet_worst(outcomes, opts.cfg.worst_k)
        bar.bag_done(o)
        if on_done is not None:
            on_done(o)
    return outcomes


def _run_ray(bags: list[Path], names: list[str], model: ModelBlob | None, opts: TaskOptions, workers: int,
             ray_address: str | None, bar: _Bar, on_done: Callable[[BagOutcome], None] | None) -> list[BagOutcome]:
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if ray_address is None:
            # local workers import this very package (not another install of it that the venv may hold)
            path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
            ray.init(num_cpus=workers, runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)
        else:
            ray.init(address=ray_address, **kwargs)

    @ray.remote
    class FrameCounter:
        def __init__(self) -> None:
            self.n = 0

        def add(self, k: int) -> None:
            self.n += k

        def total(self) -> int:
            return self.n

    task = ray.remote(num_cpus=1, max_retries=0)(evaluate_one)
    counter = FrameCounter.options(num_cpus=0).remote()
    model_ref = ray.put(model) if model is not None else None
    outcomes: dict[int, BagOutcome] = {}
    pending: dict[Any, int] = {}
    queue = list(range(len(bags)))
    try:
        while queue or pending:
            while queue and len(pending) < workers:
                i = queue.pop(0)
                pending[task.remote(str(bags[i]), names[i], model_ref, opts, _ActorTick(counter))] = i
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            bar.frames(ray.get(counter.total.remote()))
            for ref in done:
                i = pending.pop(ref)
                try:
                    o = ray.get(ref)
                except Exception as e:  # the worker died or the task could not run
                    o = BagOutcome.failed(str(bags[i]), names[i], e)
                outcomes[i] = o
                keep_fleet_worst(list(outcomes.values()), opts.cfg.worst_k)
                bar.bag_done(o)
                if on_done is not None:
                    on_done(o)
        bar.frames(ray.get(counter.total.remote()))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return [outcomes[i] for i in range(len(bags))]


def run_fleet(bags: list[Path], opts: TaskOptions, model: Path | str | None = None, workers: int = 0,
              ray_address: str | None = None, progress: bool = True,
              on_done: Callable[[BagOutcome], None] | None = None) -> list[BagOutcome]:
    """Evaluate every bag, ``workers`` at a time on Ray (0: in this process); outcomes in ``bags`` order.

    ``on_done`` is called in this process as each bag finishes. On Ctrl-C (or any error of the
    driver) the running tasks are cancelled and the Ray started here is shut down.
    """
    if workers < 0:
        raise FleetError(f"--workers must be >= 0, got {workers}")
    if opts.cfg.every_n < 1:
        raise FleetError(f"--every-n must be >= 1, got {opts.cfg.every_n}")
    blob = ModelBlob.read(model) if model is not None else None
    names = bag_names(bags)
    bar = _Bar(sum(expected_frames(b, opts.cfg) for b in bags), len(bags), progress)
    try:
        if workers == 0:
            return _run_sequential(bags, names, blob, opts, bar, on_done)
        return _run_ray(bags, names, blob, opts, workers, ray_address, bar, on_done)
    finally:
        bar.close()


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="road-seg-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("bags", nargs="+", metavar="BAG_OR_DIR",
                   help="bag folder, folder of bags, glob or list file (several allowed)")
    p.add_argument("--report", required=True, metavar="DIR", help="output folder for the report")
    p.add_argument("--workers", type=int, metavar="N",
                   help="bags evaluated at once on Ray (default: this machine's CPUs, or the cluster's); "
                        "0: one after the other in this process")
    p.add_argument("--ray-address", metavar="ADDR", help="connect to this Ray cluster (e.g. 'auto' or "
                                                        "head:6379) instead of starting a local one")
    p.add_argument("--threads", type=int, default=1, help="inference threads per worker (default: 1)")
    p.add_argument("--worst-k", type=int, default=8, help="worst frames shown across the fleet (default: 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_eval_args(p, several_bags=True)
    p.add_argument("--debug", action="store_true", help="single bag only: print the traceback of an unexpected error")
    add_max_pixels_argument(p)
    return p.parse_args(argv)


def is_single_bag_call(args: argparse.Namespace) -> bool:
    """One bag folder and no Ray flag: the single-bag evaluation."""
    return (len(args.bags) == 1 and is_bag(Path(args.bags[0])) and args.workers is None
            and args.ray_address is None)


def _default_workers(ray_address: str | None) -> int:
    if ray_address is None:
        return os.cpu_count() or 1
    ray = _import_ray()
    if not ray.is_initialized():  # the run goes on in this connection; main() closes it
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _close_ray() -> None:
    """Disconnect from a cluster that :func:`_default_workers` connected to (no-op otherwise)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if is_single_bag_call(args):
        return evaluate.main(argv)
    prog = "road-seg-eval"
    try:
        if args.gt_dir is not None:
            raise FleetError("--gt-dir: only for a single bag; several bags need a ground-truth topic")
        if Path(args.report).exists() and not Path(args.report).is_dir():
            raise FleetError(f"--report {args.report} is a file, not a folder")
        if args.threads < 0 or args.worst_k < 1:
            raise FleetError("--threads must be >= 0 and --worst-k >= 1")
        PostConfig(args.threshold, args.min_blob_area, args.fill_holes_area).validate()
        model = Path(args.model) if args.model else default_model_path()
        if not model.is_file():
            raise ModelFileError(f"model {model} is missing; pass --model PATH")
        bags = find_bags(args.bags)
        ProbabilityEMA.validate(args.temporal_alpha, args.temporal_reset_gap)
        cfg = EvalConfig(image_topic=args.image_topic, gt_topic=args.gt_topic, every_n=args.every_n,
                         limit=args.limit, worst_k=args.worst_k, temporal_smoothing=args.temporal_smoothing,
                         temporal_alpha=args.temporal_alpha, temporal_reset_gap_s=args.temporal_reset_gap)
        opts = TaskOptions(cfg, args.backend, args.device, args.threshold, args.min_blob_area,
                           args.fill_holes_area, args.threads, args.max_image_pixels, args.flip_average)
        workers = args.workers if args.workers is not None else _default_workers(args.ray_address)
        print(f"{prog}: {len(bags)} bag(s), {workers or 'no'} worker(s)"
              + (f" on {args.ray_address}" if args.ray_address else " (local)" if workers else " (in process)"),
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        outcomes = run_fleet(bags, opts, model, workers, args.ray_address, progress=not args.no_progress)
        wall = time.perf_counter() - t0
        _close_ray()
    except KeyboardInterrupt:
        _close_ray()
        print(f"{prog}: interrupted; workers stopped, nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FleetError, ModelFileError, ValueError, ConnectionError) as e:  # ConnectionError: --ray-address
        _close_ray()
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    run_info = {"workers": workers, "ray_address": args.ray_address, "threads_per_worker": args.threads,
                "wall_s": wall, "model": str(model), "image_topic": args.image_topic or "auto",
                "gt_topic": args.gt_topic, "every_n": args.every_n, "limit": args.limit,
                "temporal_smoothing": {"enabled": args.temporal_smoothing, "alpha": args.temporal_alpha,
                                       "reset_gap_s": args.temporal_reset_gap},
                "post": {"threshold": args.threshold, "min_blob_area": args.min_blob_area,
                         "fill_holes_area": args.fill_holes_area}}
    metrics = write_fleet_report(Path(args.report), outcomes, run_info, worst_k=args.worst_k)
    agg = metrics["aggregate"]
    failed = metrics["bags_failed"]
    print(f"{len(outcomes) - failed} bag(s) scored, {failed} failed; road IoU (aggregate over "
          f"{metrics['frames']['scored']} frames) {agg['iou']:.4f}, F1 {agg['f1']:.4f}; {wall:.1f} s")
    for o in outcomes:
        if not o.ok:
            print(f"  failed: {o.bag}: {o.error}", file=sys.stderr)
    print(f"report: {Path(args.report) / 'report.html'}")
    return EXIT_FAILED_BAGS if failed else 0


if __name__ == "__main__":
    sys.exit(main())
