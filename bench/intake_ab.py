#!/usr/bin/env python3
"""Interleaved A/B: camera frames taken by the executor or by an intake thread, round trip in ms.

    python bench/intake_ab.py [--rounds 4] [--pings 60] [--rate-hz 15] [--json out/bench/intake_ab.json]

An echo process stands in for ``road_seg_node`` without the model: an rclpy node with the node's
parameter services and two timers, a best-effort depth-1 ``sensor_msgs/Image`` subscription, a
worker thread that answers each frame with a 480x360 mono8 mask carrying the same header. Its
subscription is either run by the executor (``rclpy.spin``) or taken by
:class:`road_seg_perception.ros.intake.SubscriptionIntake` (the node's ``intake_thread``). The
measuring side publishes 480x360 rgb8 frames at a camera's pace and takes the masks with an intake
thread in both cases. The two settings alternate round by round in fresh processes. Speed is
reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from road_seg_perception.core.allocator import keep_large_buffers  # noqa: E402

FRAME_HW = (360, 480)
SETTINGS = ("executor", "intake")


def _qos(depth: int, reliable: bool):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


def echo(setting: str) -> None:
    """The stand-in node: answer each frame from a worker thread, frames taken as ``setting`` says."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from road_seg_perception.ros.intake import NoExecutorGroup, SubscriptionIntake

    keep_large_buffers()
    rclpy.init()
    node = Node("intake_ab_echo")
    pub = node.create_publisher(Image, "mask", _qos(5, True))
    mask = np.zeros(FRAME_HW, np.uint8).tobytes()
    ready = threading.Condition()
    slot: list = []

    def offer(msg: Image) -> None:
        with ready:
            slot[:] = [msg]
            ready.notify()

    def worker() -> None:
        while True:
            with ready:
                while not slot:
                    ready.wait(0.1)
                msg = slot.pop()
            pub.publish(Image(header=msg.header, height=FRAME_HW[0], width=FRAME_HW[1], encoding="mono8",
                              step=FRAME_HW[1], data=mask))

    threading.Thread(target=worker, daemon=True).start()
    node.create_timer(1.0, lambda: None)  # the node's diagnostics and stale-check timers
    node.create_timer(0.1, lambda: None)
    group = NoExecutorGroup() if setting == "intake" else None
    sub = node.create_subscription(Image, "image", offer, _qos(1, False), callback_group=group)
    if setting == "intake":
        SubscriptionIntake(sub, offer, node.context).start()
    rclpy.spin(node)


def measure(setting: str, pings: int, rate_hz: float) -> list[float]:
    """Round trips (ms) of ``pings`` frames through an echo process with ``setting``."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from road_seg_perception.ros.intake import NoExecutorGroup, SubscriptionIntake

    keep_large_buffers()
    child = subprocess.Popen([sys.executable, __file__, "--echo", setting], env=os.environ.copy())
    rclpy.init()
    node = Node("intake_ab_ping")
    pub = node.create_publisher(Image, "image", _qos(10, True))
    got = threading.Event()
    sub = node.create_subscription(Image, "mask", lambda _m: got.set(), _qos(5, True),
                                   callback_group=NoExecutorGroup())
    intake = SubscriptionIntake(sub, lambda _m: got.set(), node.context).start()
    frame = np.zeros((*FRAME_HW, 3), np.uint8).tobytes()
    times: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 or sub.get_publisher_count() == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the echo process did not connect within 30 s")
            time.sleep(0.05)
        sent = 0
        while len(times) < pings:
            if sent > pings * 2:
                raise RuntimeError(f"half the frames went unanswered ({setting})")
            msg = Image(height=FRAME_HW[0], width=FRAME_HW[1], encoding="rgb8", step=FRAME_HW[1] * 3, data=frame)
            got.clear()
            t = time.perf_counter()
            pub.publish(msg)
            answered = got.wait(1.0)
            sent += 1
            if answered and sent > 3:  # the first few connect buffers
                times.append((time.perf_counter() - t) * 1e3)
            time.sleep(1.0 / rate_hz)
    finally:
        intake.stop()
        child.kill()
        child.wait()
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4, help="rounds; each runs both settings (order alternates)")
    p.add_argument("--pings", type=int, default=60, help="timed frames per setting and round")
    p.add_argument("--rate-hz", type=float, default=15.0, help="pace of the frames")
    p.add_argument("--json", type=Path, default=Path("out/bench/intake_ab.json"))
    p.add_argument("--echo", choices=SETTINGS, help=argparse.SUPPRESS)
    p.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.echo:
        echo(a.echo)
        return 0
    if a.child:
        print(json.dumps(measure(a.child, a.pings, a.rate_hz)), flush=True)
        os._exit(0)  # the intake thread may still be in a wait: skip interpreter teardown
    env = {**os.environ, "ROS_DOMAIN_ID": str(100 + os.getpid() % 100)}
    samples: dict[str, list[float]] = {s: [] for s in SETTINGS}
    medians: dict[str, list[float]] = {s: [] for s in SETTINGS}
    for r in range(a.rounds):
        for setting in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
            proc = subprocess.run([sys.executable, __file__, "--child", setting, "--pings", str(a.pings),
                                   "--rate-hz", str(a.rate_hz)], env=env, capture_output=True, text=True,
                                  timeout=300)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            times = json.loads(proc.stdout.strip().splitlines()[-1])
            samples[setting] += times
            medians[setting].append(float(np.median(times)))
            print(f"round {r + 1}/{a.rounds} {setting:8s} p50 {medians[setting][-1]:.2f} ms", flush=True)
    print("\n| frames taken by | p50 ms | p95 ms | per-round p50 ms |")
    print("| --- | --- | --- | --- |")
    for s in SETTINGS:
        rounds = ", ".join(f"{m:.2f}" for m in medians[s])
        print(f"| {s} | {np.median(samples[s]):.2f} | {np.percentile(samples[s], 95):.2f} | {rounds} |")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({
        "p50_ms": {s: float(np.median(v)) for s, v in samples.items()},
        "p95_ms": {s: float(np.percentile(v, 95)) for s, v in samples.items()},
        "round_p50_ms": medians, "pings": a.pings, "rate_hz": a.rate_hz, "loadavg": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
