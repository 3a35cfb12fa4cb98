"""What an offline evaluation writes: error panels of the worst frames, the overlay video, the output bag, CSV."""

from __future__ import annotations

import csv
import heapq
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from road_seg_perception.bagio.bag import IMAGE_TYPE, BagWriter, image_msg
from road_seg_perception.core.metrics import Confusion
from road_seg_perception.core.overlay import draw_overlay, side_by_side
from road_seg_perception.core.preprocessing import VOID
from road_seg_perception.tools.eval_scoring import CSV_FIELDS, FrameRow
from road_seg_perception.tools.report import WorstFrame

MASK_TOPIC = "/road_mask"
OVERLAY_TOPIC = "/road_overlay"
PRED_COLOR = (0, 200, 0)
GT_COLOR = (40, 90, 255)


def error_image(mask: np.ndarray, label: np.ndarray) -> np.ndarray:
    """RGB error map: green TP, red FP, blue FN, grey void, black TN."""
    pred = mask > 0
    out = np.zeros((*mask.shape, 3), np.uint8)
    out[pred & (label == 1)] = (0, 200, 0)
    out[pred & (label == 0)] = (230, 0, 0)
    out[~pred & (label == 1)] = (40, 90, 255)
    out[label == VOID] = (128, 128, 128)
    return out


def worst_panel(rgb: np.ndarray, mask: np.ndarray, label: np.ndarray, max_width: int = 1200) -> np.ndarray:
    """Prediction overlay | ground-truth overlay | error map, scaled to at most ``max_width``."""
    gt_vis = draw_overlay(rgb, (label == 1).astype(np.uint8) * 255, GT_COLOR, boundary=False)
    gt_vis[label == VOID] = (gt_vis[label == VOID] // 2 + 64).astype(np.uint8)
    panel = side_by_side([draw_overlay(rgb, mask, PRED_COLOR), gt_vis, error_image(mask, label)])
    if panel.shape[1] > max_width:
        s = max_width / panel.shape[1]
        panel = cv2.resize(panel, (max_width, round(panel.shape[0] * s)), interpolation=cv2.INTER_AREA)
    return panel


class VideoSink:
    """Overlay video: mp4 (OpenCV 'mp4v') or, where that cannot be opened, an animated gif."""

    def __init__(self, stem: Path, fps: float):
        self.stem, self.fps = stem, max(fps, 1.0)
        self.size: tuple[int, int] | None = None
        self.writer = None
        self.gif_frames: list[Any] = []
        self.path: Path | None = None

    def add(self, rgb: np.ndarray) -> None:
        if self.size is None:
            self.size = (rgb.shape[1], rgb.shape[0])
            p = self.stem.with_suffix(".mp4")
            w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if w.isOpened():
                self.writer, self.path = w, p
            else:
                w.release()
                p.unlink(missing_ok=True)
                self.path = self.stem.with_suffix(".gif")
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        if self.writer is not None:
            self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        else:
            from PIL import Image

            small = cv2.resize(rgb, (self.size[0] // 2, self.size[1] // 2), interpolation=cv2.INTER_AREA)
            self.gif_frames.append(Image.fromarray(small))

    def close(self) -> Path | None:
        if self.writer is not None:
            self.writer.release()
        elif self.gif_frames and self.path is not None:
            self.gif_frames[0].save(self.path, save_all=True, append_images=self.gif_frames[1:],
                                    duration=round(1000 / self.fps), loop=0)
        return self.path


class WorstFrames:
    """The ``k`` lowest-IoU frames, with their panels (built only for frames that enter the list)."""

    def __init__(self, k: int):
        self.k = k
        self._heap: list[tuple[float, int, WorstFrame]] = []

    def add(self, index: int, stamp_ns: int, time_s: float, c: Confusion, rgb: np.ndarray, mask: np.ndarray,
            label: np.ndarray) -> None:
        key = (-c.iou, -index)
        if self.k <= 0 or (len(self._heap) >= self.k and key <= self._heap[0][:2]):
            return
        entry = (*key, WorstFrame(index, stamp_ns, time_s, c.iou, worst_panel(rgb, mask, label)))
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def sorted(self) -> list[WorstFrame]:
        """Worst first (ties: lower index first)."""
        return [e[2] for e in sorted(self._heap, key=lambda e: (e[2].iou, e[2].index))]


class OutputStreams:
    """The overlay video and the output bag (``/road_mask`` mono8, ``/road_overlay`` rgb8, input headers)."""

    def __init__(self, out: Path, fps: float, storage: str, video: bool, bag: bool):
        self.video = VideoSink(out / "overlay", fps) if video else None
        self.writer = BagWriter(out / "output_bag", storage, overwrite=True) if bag else None
        if self.writer is not None:
            self.writer.add_topic(MASK_TOPIC, IMAGE_TYPE)
            self.writer.add_topic(OVERLAY_TOPIC, IMAGE_TYPE)
        self.video_path: Path | None = None

    def add(self, receive_ns: int, stamp_ns: int, frame_id: str, rgb: np.ndarray, mask: np.ndarray) -> None:
        if self.video is None and self.writer is None:
            return
        overlay = draw_overlay(rgb, mask, PRED_COLOR)
        if self.video is not None:
            self.video.add(overlay)
        if self.writer is not None:
            self.writer.write(MASK_TOPIC, receive_ns, image_msg(mask, "mono8", stamp_ns, frame_id))
            self.writer.write(OVERLAY_TOPIC, receive_ns, image_msg(overlay, "rgb8", stamp_ns, frame_id))

    def close(self) -> None:
        if self.video is not None:
            self.video_path = self.video.close()
        if self.writer is not None:
            self.writer.close()


def write_frames_csv(path: Path, rows: list[FrameRow]) -> None:
    """One row per processed frame (:data:`CSV_FIELDS`)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow(r.csv_row())
