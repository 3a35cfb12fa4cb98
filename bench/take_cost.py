#!/usr/bin/env python3
"""What one received camera frame costs rclpy: publish, take as a message, take as raw CDR bytes.

    python bench/take_cost.py [--runs 30] [--json out/bench/take_cost.json]

One process publishes ``sensor_msgs/Image`` frames (480x360 and 1280x720 rgb8) to two
subscriptions of its own, one taking Python messages (what the node does) and one raw CDR bytes,
and times each ``take_message`` call, plus rosbags' CDR deserialiser on the raw bytes (a candidate
reader that would skip rclpy's conversion). Median milliseconds; reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from road_seg_perception.core.allocator import keep_large_buffers  # noqa: E402

SIZES = ((480, 360), (1280, 720))


def measure(runs: int) -> dict[str, dict[str, float]]:
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from road_seg_perception.bagio.bag import typestore
    from road_seg_perception.ros.intake import NoExecutorGroup

    keep_large_buffers()
    rclpy.init()
    node = rclpy.create_node("take_cost")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    pub = node.create_publisher(Image, "take_cost", qos)
    as_msg = node.create_subscription(Image, "take_cost", lambda _m: None, qos, callback_group=NoExecutorGroup())
    as_raw = node.create_subscription(Image, "take_cost", lambda _m: None, qos, callback_group=NoExecutorGroup(),
                                      raw=True)
    deadline = time.monotonic() + 10
    while pub.get_subscription_count() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    store = typestore()
    out: dict[str, dict[str, float]] = {}
    try:
        for w, h in SIZES:
            data = np.zeros(h * w * 3, np.uint8).tobytes()
            t_pub, t_msg, t_raw, t_rosbags = [], [], [], []
            for _ in range(runs):
                msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=data)
                t = time.perf_counter()
                pub.publish(msg)
                t_pub.append(time.perf_counter() - t)
                time.sleep(0.02)  # delivered by then (one process, shared memory)
                taken = {}
                for sub, times in ((as_msg, t_msg), (as_raw, t_raw)):
                    t = time.perf_counter()
                    with sub.handle:
                        taken[sub.raw] = sub.handle.take_message(sub.msg_type, sub.raw)
                    times.append(time.perf_counter() - t)
                if taken[False] is None or taken[True] is None:
                    raise RuntimeError("a frame was not delivered within 20 ms")
                t = time.perf_counter()
                store.deserialize_cdr(taken[True][0], "sensor_msgs/msg/Image")
                t_rosbags.append(time.perf_counter() - t)
            out[f"{w}x{h}"] = {k: float(np.median(v) * 1e3) for k, v in (
                ("publish", t_pub), ("take_message", t_msg), ("take_raw", t_raw), ("rosbags_deserialize", t_rosbags))}
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json", type=Path, default=Path("out/bench/take_cost.json"))
    a = p.parse_args(argv)
    res = measure(a.runs)
    print("| frame | publish ms | take as message ms | take raw ms | rosbags deserialise ms |")
    print("| --- | --- | --- | --- | --- |")
    for size, r in res.items():
        print(f"| {size} rgb8 | {r['publish']:.2f} | {r['take_message']:.2f} | {r['take_raw']:.2f} | "
              f"{r['rosbags_deserialize']:.2f} |")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"ms": res, "runs": a.runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
