"""The live sections: ``road_seg_node`` or the naive baseline as a process, fed every stream phase."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.client import StreamClient, stream_phase
from bench.pyspy import finish_py_spy, start_py_spy
from bench.settings import IMAGE_TOPIC, BenchSettings
from road_seg_perception.tools.live import (
    log_tail,
    node_command,
    node_counts,
    private_domain_id,
    stop_process,
    subprocess_env,
)


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (all threads); None where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _float(text: str | None) -> float | None:
    try:
        v = float(text) if text is not None else None
    except ValueError:
        return None
    return v if v is not None and np.isfinite(v) else None


def _counts(values: dict[str, str] | None) -> dict[str, int] | None:

    return node_counts(values) if values else None


def run_streams(s: BenchSettings, kind: str, frames: list[np.ndarray], log: Any = print,
                client_factory: Any = None) -> dict[str, Any]:
    """Start ``road_seg_node`` (``kind="node"``) or the naive baseline as a process and run every stream phase.

    ``client_factory(domain_id, frames, encoding)`` makes the measuring side (default :class:`StreamClient`).
    """

    domain = s.domain_id if s.domain_id is not None else private_domain_id()
    if kind == "node":
        cmd = node_command(s.model, IMAGE_TOPIC, False, s.node_params)
    else:
        if not s.naive_script.is_file():
            return {"skipped": f"naive baseline script {s.naive_script} not found (it lives in the source tree)"}
        cmd = [sys.executable, str(s.naive_script), "--ros-args", "-r", f"image:={IMAGE_TOPIC}",
               "-p", f"model_path:={s.model}"]
    s.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = s.log_dir / f"{kind}.log"
    result: dict[str, Any] = {"command": cmd, "log": str(log_path), "domain_id": domain, "phases": {}}
    client = (client_factory or StreamClient)(domain, frames, s.encoding)
    proc = None
    with log_path.open("w") as log_file:
        try:
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, env=subprocess_env(domain), stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            while not client.matched():
                if proc.poll() is not None:
                    raise RuntimeError(f"{kind} exited with status {proc.returncode} at start-up:\n"
                                       + log_tail(log_path))
                if time.monotonic() - t0 > s.startup_timeout_s:
                    raise RuntimeError(f"{kind} not ready after {s.startup_timeout_s} s:\n" + log_tail(log_path))
                time.sleep(0.1)
            time.sleep(0.5)
            # warm-up: a few frames answered end to end (first inference, DDS matching)
            warm_end = time.monotonic() + 90.0
            while client.n_arrivals() < 3 and time.monotonic() < warm_end and proc.poll() is None:
                client.publish()
                time.sleep(0.2)
            if client.n_arrivals() == 0:
                raise RuntimeError(f"{kind} answered no warm-up frame:\n" + log_tail(log_path))
            result["startup_s"] = time.monotonic() - t0
            time.sleep(1.0)
            before = _counts(client.fresh_diag(time.monotonic())) if kind == "node" else None
            if kind == "node" and client.diag is not None:
                result["info"] = {k: client.diag[1].get(k, "") for k in ("backend", "device", "model",
                                                                         "model_input_size")}
            phases = [(f"{r:g}hz", r) for r in s.rates_hz] + [("flood", s.flood_hz)]
            for name, rate in phases:
                log(f"  {kind}: {name} stream for {s.phase_s:g} s")
                spy = (start_py_spy(proc.pid, s.node_profile, s.phase_s, log)
                       if kind == "node" and name == "flood" and s.node_profile is not None else None)
                cpu0, own0, wall0 = process_cpu_s(proc.pid), time.process_time(), time.monotonic()
                ph = stream_phase(client, name, rate, s.phase_s, s.settle_max_s, s.stream_size)
                if spy is not None:
                    result["node_profile"] = finish_py_spy(spy, s.node_profile, log)
                cpu1, own1, wall = process_cpu_s(proc.pid), time.process_time(), time.monotonic() - wall0
                # CPU use over the phase including its settle time, in % of one core
                ph["process_cpu_pct"] = 100 * (cpu1 - cpu0) / wall if cpu0 is not None and cpu1 is not None else None
                ph["bench_client_cpu_pct"] = 100 * (own1 - own0) / wall
                if kind == "node":
                    values = client.fresh_diag(time.monotonic())
                    after = _counts(values)
                    if values:  # the node's own latency (frame received -> outputs published), last 300 frames
                        ph["node_internal_latency_p50_ms"] = _float(values.get("latency_p50_ms"))
                        ph["node_internal_latency_p95_ms"] = _float(values.get("latency_p95_ms"))
                    if before is not None and after is not None:
                        ph["node_counts"] = {k: after[k] - before.get(k, 0) for k in after if k != "pending"}
                        ph["node_counts"]["pending"] = after.get("pending", 0)
                    before = after
                result["phases"][name] = ph
        finally:
            client.close()
            result["returncode"] = stop_process(proc)
    return result


