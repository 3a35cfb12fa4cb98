"""The node's per-frame work outside ROS (convert, segment, messages, overlay), with an optional cProfile."""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from typing import Any

import numpy as np

from bench.frames import to_encoding
from bench.settings import BenchSettings
from road_seg_perception.bagio.image_codec import image_to_rgb, rgb_to_encoding, validate_image_msg
from road_seg_perception.core.overlay import draw_overlay
from road_seg_perception.core.segmenter import RoadSegmenter
from road_seg_perception.ros.messages import numpy_to_image_msg

# ----------------------------------------------------------------------------- node work outside ROS


def bench_node_work(s: BenchSettings, frames: list[np.ndarray]) -> dict[str, Any]:
    """Median ms of each step of the node's per-frame work (``RoadSegNode._process``) on the stream frames.

    Steps: ``convert`` (validate + ``image_to_rgb``), ``segment`` (pre + infer + post), ``mask_msg``,
    ``overlay`` (``draw_overlay``, only done while someone subscribes) and ``overlay_msg``.
    With ``s.profile`` a cProfile of the same loop is written there (by cumulative, then by own time).
    """

    seg = RoadSegmenter(s.model)
    msgs = [numpy_to_image_msg(to_encoding(f, s.encoding), s.encoding) for f in frames]

    def step(msg: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        enc = validate_image_msg(msg)[0]
        rgb = image_to_rgb(msg)
        t1 = time.perf_counter()
        r = seg.segment(rgb)
        t2 = time.perf_counter()
        numpy_to_image_msg(r.mask, "mono8", msg.header)
        t3 = time.perf_counter()
        ov = draw_overlay(rgb, r.mask, (0, 255, 0), 0.45, boundary=True)
        t4 = time.perf_counter()
        arr, out_enc = rgb_to_encoding(ov, enc)
        numpy_to_image_msg(arr, out_enc, msg.header)
        t5 = time.perf_counter()
        return {"convert": t1 - t0, "segment": t2 - t1, "mask_msg": t3 - t2, "overlay": t4 - t3,
                "overlay_msg": t5 - t4, "total_mask_only": t3 - t0, "total_with_overlay": t5 - t0}

    for i in range(s.warmup):
        step(msgs[i % len(msgs)])
    rows = [step(msgs[i % len(msgs)]) for i in range(s.work_runs)]
    out: dict[str, Any] = {k + "_ms": float(np.median([r[k] for r in rows])) * 1e3 for k in rows[0]}
    out.update({"size": f"{s.stream_size[0]}x{s.stream_size[1]}", "encoding": s.encoding,
                "backend": seg.backend.name, "runs": s.work_runs})
    if s.profile is not None:
        prof = cProfile.Profile()
        prof.enable()
        for i in range(s.work_runs):
            step(msgs[i % len(msgs)])
        prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(20)
        s.profile.parent.mkdir(parents=True, exist_ok=True)
        s.profile.write_text(f"cProfile of {s.work_runs} frames of the node's per-frame work "
                             f"({out['size']} {s.encoding}, backend {out['backend']})\n" + buf.getvalue())
        out["profile"] = str(s.profile)
    return out


