#!/usr/bin/env python3
"""Round trip of image-sized messages between two rclpy processes, with and without the allocator setting.

    python bench/transport.py [--sizes-kb 1,100,518,1000,2765] [--runs 40] [--json out/bench/transport.json]

The measuring process publishes a ``sensor_msgs/Image`` of each size (518 kB = a 480x360 rgb8
frame), an echo process answers each with a 480x360 mono8 image carrying the same header (what the
node sends back), and the round trip is timed from just before ``publish`` to the answer's callback.
Each size is measured with glibc's default allocator thresholds (``ROAD_SEG_NO_MALLOC_TUNING=1``)
and with ``road_seg_perception.allocator.keep_large_buffers()`` in both processes, which the node,
``road-seg-replay`` and ``bench/run_bench.py`` apply. Speed is reported, never asserted.
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

from road_seg_perception.core.allocator import ENV_DISABLE, keep_large_buffers  # noqa: E402

MASK_BYTES = 480 * 360


def _qos():
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def echo() -> None:
    """Answer every ``ping`` with a mono8 480x360 ``pong`` with the same header."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    keep_large_buffers()
    rclpy.init()
    node = Node("transport_echo")
    pub = node.create_publisher(Image, "pong", _qos())
    mask = np.zeros(MASK_BYTES, np.uint8)

    def answer(msg: Image) -> None:
        pub.publish(Image(header=msg.header, height=360, width=480, encoding="mono8", step=480,
                          data=mask.tobytes()))

    node.create_subscription(Image, "ping", answer, _qos())
    rclpy.spin(node)


def measure(sizes_kb: list[int], runs: int, rate_hz: float) -> dict[str, float]:
    """Median round trip in ms per size, for this process's allocator setting."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    keep_large_buffers()
    child = subprocess.Popen([sys.executable, __file__, "--echo"], env=os.environ.copy())
    rclpy.init()
    node = Node("transport_ping")
    pub = node.create_publisher(Image, "ping", _qos())
    got = threading.Event()
    node.create_subscription(Image, "pong", lambda _m: got.set(), _qos())
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    out: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 or node.count_publishers("pong") == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the echo process did not connect within 30 s")
            time.sleep(0.05)
        for kb in sizes_kb:
            data = np.zeros(kb * 1000, np.uint8).tobytes()
            times = []
            for i in range(runs + 3):
                msg = Image(height=1, width=kb * 1000, encoding="mono8", step=kb * 1000, data=data)
                got.clear()
                t = time.perf_counter()
                pub.publish(msg)
                if not got.wait(2.0):
                    raise RuntimeError(f"no answer within 2 s ({kb} kB)")
                if i >= 3:  # the first few connect buffers
                    times.append((time.perf_counter() - t) * 1e3)
                time.sleep(1.0 / rate_hz)
            out[str(kb)] = float(np.median(times))
    finally:
        child.kill()
        child.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes-kb", default="1,100,518,1000,2765")
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--rate-hz", type=float, default=30.0, help="pace of the pings (idle gaps as a camera has)")
    p.add_argument("--json", type=Path, default=Path("out/bench/transport.json"))
    p.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.echo:
        echo()
        return 0
    sizes = [int(s) for s in a.sizes_kb.split(",") if s]
    if a.child:
        print(json.dumps(measure(sizes, a.runs, a.rate_hz)), flush=True)
        os._exit(0)  # the executor thread is still spinning: skip interpreter teardown
    # Each setting in fresh processes (the thresholds are per process), on a private domain.
    results = {}
    domain = str(100 + os.getpid() % 100)
    for label, extra in (("default", {ENV_DISABLE: "1"}), ("keep_large_buffers", {})):
        env = {k: v for k, v in os.environ.items() if k != ENV_DISABLE}
        env.update(extra, ROS_DOMAIN_ID=domain)
        proc = subprocess.run([sys.executable, __file__, "--child", "--sizes-kb", a.sizes_kb, "--runs", str(a.runs),
                               "--rate-hz", str(a.rate_hz)], env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("| message | round trip, default allocator | with keep_large_buffers |")
    print("| --- | --- | --- |")
    for kb in sizes:
        print(f"| {kb} kB | {results['default'][str(kb)]:.2f} ms | {results['keep_large_buffers'][str(kb)]:.2f} ms |")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"round_trip_ms": results, "runs": a.runs, "rate_hz": a.rate_hz,
                                  "fastdds_profile": os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", ""),
                                  "loadavg": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
