"""Readers for labelled road datasets, returning RGB images and 0/1/void labels.

Four layouts are supported, chosen by ``format``:

* ``camvid``: class-id masks with the same file names as the images; ``positive_ids`` are road,
  ``void_ids`` are ignored. The drive is the part of the file name before the first underscore.
* ``idd``: IDD-Lite's level-1 class-id masks, ``images/<seq>/<id>_image.jpg`` paired with
  ``labels/<seq>/<id>_label.png``; the drive is the sequence folder.
* ``kitti``: KITTI-road colour masks named ``<cat>_road_<id>.png`` for ``<cat>_<id>.png``;
  magenta (255, 0, 255) is road, black is void, every other colour is not road.
* ``binary``: image/mask folder pairs as Kaggle road sets ship them; masks are matched by
  stem plus ``mask_suffix``, hold 0/1 or 0/255 (png or jpg), and have no void.
* ``images``: unlabelled frames (a folder of images, or of sequence folders of images); every
  pixel is void, so they train only through a teacher's soft labels (distillation).

Every pair is checked before training starts; problems raise one :class:`DatasetError` that
names the files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from road_seg_perception.core.imageio import ImageReadError, check_image_file, read_image_file, read_rgb
from road_seg_perception.core.preprocessing import VOID

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
KITTI_ROAD_BGR = (255, 0, 255)
FORMATS = ("camvid", "idd", "kitti", "binary", "images")


class DatasetError(ValueError):
    """A dataset problem; the message names the offending files."""


@dataclass(frozen=True)
class Sample:
    """One image and its mask file (for unlabelled ``images`` frames, the image itself)."""

    image: Path
    mask: Path
    sequence: str = ""

    @property
    def drive(self) -> str:
        """Drive (sequence) id: the sequence folder if known, else the stem before the first underscore."""
        return self.sequence or self.image.stem.split("_")[0]


@dataclass
class LabelSpec:
    """How a mask file becomes a 0/1/void label."""

    format: str = "camvid"
    positive_ids: list[int] = field(default_factory=lambda: [3])
    void_ids: list[int] = field(default_factory=lambda: [11])
    mask_suffix: str = "_mask"

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"data.format must be one of {', '.join(FORMATS)}, got {self.format!r}")


def default_camvid_root() -> Path:
    """The CamVid folder: ``$ROAD_SEG_CAMVID`` or ``../shared/datasets/camvid``."""
    return Path(os.environ.get("ROAD_SEG_CAMVID", "../shared/datasets/camvid")).expanduser()


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _mask_for(image: Path, mask_dir: Path, spec: LabelSpec, masks_by_stem: dict[str, Path]) -> Path | None:
    if spec.format == "camvid":
        stem = image.stem
    elif spec.format == "kitti":
        cat, _, idx = image.stem.partition("_")
        stem = f"{cat}_road_{idx}"
    else:
        stem = image.stem + spec.mask_suffix
    return masks_by_stem.get(stem)


def pair_samples(image_dir: Path, mask_dir: Path, spec: LabelSpec, max_listed: int = 10) -> list[Sample]:
    """Match every image in ``image_dir`` to its mask in ``mask_dir``; raise on any unmatched file."""
    spec.validate()
    if spec.format == "idd":
        return pair_idd(image_dir, mask_dir, max_listed)
    if spec.format == "images":
        return unlabelled_samples(image_dir)
    for d, what in ((image_dir, "image"), (mask_dir, "mask")):
        if not d.is_dir():
            raise DatasetError(f"{what} folder {d} does not exist")
    images = _images_in(image_dir)
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTS)}) in {image_dir}")
    masks = _images_in(mask_dir)
    masks_by_stem: dict[str, Path] = {}
    for m in masks:
        if m.stem in masks_by_stem:
            raise DatasetError(f"two masks share the stem {m.stem!r}: {masks_by_stem[m.stem]} and {m}")
        masks_by_stem[m.stem] = m
    samples, unmatched = [], []
    used: set[Path] = set()
    for im in images:
        m = _mask_for(im, mask_dir, spec, masks_by_stem)
        if m is None:
            unmatched.append(str(im))
        else:
            samples.append(Sample(im, m))
            used.add(m)
    problems = [f"no mask for image {p}" for p in unmatched]
    problems += [f"no image for mask {m}" for m in masks if m not in used]
    if problems:
        raise DatasetError(_summarise(problems, max_listed, f"{image_dir} / {mask_dir}"))
    return samples


def unlabelled_samples(image_dir: Path) -> list[Sample]:
    """Images of ``image_dir`` and of its sub-folders (one level: a sub-folder is a drive), without labels."""
    if not image_dir.is_dir():
        raise DatasetError(f"image folder {image_dir} does not exist")
    samples = [Sample(im, im) for im in _images_in(image_dir)]
    for seq in sorted((p for p in image_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        samples += [Sample(im, im, seq.name) for im in _images_in(seq)]
    if not samples:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTS)}) in {image_dir} or its sub-folders")
    return samples


def pair_idd(image_dir: Path, mask_dir: Path, max_listed: int = 10) -> list[Sample]:
    """Pair IDD-Lite's ``<seq>/<id>_image.jpg`` with ``<seq>/<id>_label.png``; the drive is ``<seq>``."""
    for d, what in ((image_dir, "image"), (mask_dir, "mask")):
        if not d.is_dir():
            raise DatasetError(f"{what} folder {d} does not exist")
    seqs = sorted((p for p in image_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name))
    samples, problems = [], []
    for seq in seqs:
        for im in _images_in(seq):
            stem = im.stem[: -len("_image")] if im.stem.endswith("_image") else im.stem
            m = mask_dir / seq.name / f"{stem}_label.png"
            if m.is_file():
                samples.append(Sample(im, m, seq.name))
            else:
                problems.append(f"no mask {m} for image {im}")
    if not samples and not problems:
        raise DatasetError(f"no images in sequence folders of {image_dir}")
    if problems:
        raise DatasetError(_summarise(problems, max_listed, f"{image_dir} / {mask_dir}"))
    return samples


def _summarise(problems: list[str], max_listed: int, where: str) -> str:
    head = "\n  ".join(problems[:max_listed])
    more = f"\n  ... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
    return f"{len(problems)} dataset problem(s) in {where}:\n  {head}{more}"


def read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8; raise :class:`DatasetError` naming the file if unreadable or larger
    than ``max_pixels`` (default: the process-wide ``--max-image-pixels`` limit, checked from the header)."""
    try:
        return read_rgb(path, max_pixels)
    except ImageReadError as e:
        raise DatasetError(str(e)) from e


def _read_mask(path: Path, flags: int, max_pixels: int | None) -> np.ndarray:
    try:
        return read_image_file(path, flags, max_pixels)  # checks the header's size against --max-image-pixels first
    except ImageReadError as e:
        raise DatasetError(f"cannot read mask {path} ({e})") from e


def read_class_ids(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Read a mask file's pixel values as a 2-D array (class ids for id-mask formats; limit as :func:`read_image`)."""
    raw = _read_mask(path, cv2.IMREAD_UNCHANGED, max_pixels)
    return raw[..., 0] if raw.ndim == 3 else raw


def size_mismatch(s: Sample, image: np.ndarray, mask: np.ndarray) -> str | None:
    """The problem to report when a sample's image and mask differ in size (naming both files), else None."""
    if image.shape[:2] == mask.shape[:2]:
        return None
    return (f"size mismatch: image {s.image} is {image.shape[1]}x{image.shape[0]}, "
            f"mask {s.mask} is {mask.shape[1]}x{mask.shape[0]}")


def label_from_ids(ids: np.ndarray, spec: LabelSpec) -> np.ndarray:
    """Class ids -> uint8 label: 1 for ``spec.positive_ids``, :data:`VOID` for ``spec.void_ids``, else 0."""
    label = np.isin(ids, spec.positive_ids).astype(np.uint8)
    label[np.isin(ids, spec.void_ids)] = VOID
    return label


def read_label(path: Path, spec: LabelSpec, max_pixels: int | None = None) -> np.ndarray:
    """Read a mask file as a uint8 label: 1 road, 0 not road, :data:`VOID` ignored (limit as :func:`read_image`).

    For ``images`` (unlabelled) frames the "mask" is the image itself and the label is all void, sized from
    the file's header (the image is decoded once, by :func:`read_image`).
    """
    if spec.format == "images":
        try:
            return np.full(check_image_file(path, max_pixels), VOID, np.uint8)
        except ImageReadError as e:
            raise DatasetError(str(e)) from e
    if spec.format == "kitti":
        bgr = _read_mask(path, cv2.IMREAD_COLOR, max_pixels)
        road = np.all(bgr == KITTI_ROAD_BGR, axis=2)
        void = np.all(bgr == 0, axis=2)
        label = road.astype(np.uint8)
        label[void] = VOID
        return label
    raw = read_class_ids(path, max_pixels)
    if spec.format in ("camvid", "idd"):
        return label_from_ids(raw, spec)
    # binary: 0/1 or 0/255 (jpg masks carry compression noise, hence the mid threshold)
    thresh = 0 if raw.max(initial=0) <= 1 else 127
    return (raw > thresh).astype(np.uint8)


def read_pair(s: Sample, spec: LabelSpec) -> tuple[np.ndarray, np.ndarray]:
    """A sample's image and label; :class:`DatasetError` when either is unreadable or their sizes differ."""
    image, label = read_image(s.image), read_label(s.mask, spec)
    if problem := size_mismatch(s, image, label):
        raise DatasetError(problem)
    return image, label


def load_samples(samples: list[Sample], spec: LabelSpec, max_listed: int = 10,
                 progress: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read every pair, checking readability and matching sizes; one error lists all problems."""
    out, problems = [], []
    it = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc="reading dataset", unit="img")
    for s in it:
        try:
            out.append(read_pair(s, spec))
        except DatasetError as e:
            problems.append(str(e))
    if problems:
        raise DatasetError(_summarise(problems, max_listed, "the dataset"))
    return out


def split_by_drive(samples: list[Sample], drive: str | list[str], key: str = "data.holdout_drive"
                   ) -> tuple[list[Sample], list[Sample]]:
    """Split samples into (others, the given drive(s)); raise if a drive has no frames."""
    wanted = [drive] if isinstance(drive, str) else [str(d) for d in drive]
    present = {s.drive for s in samples}
    missing = [d for d in wanted if d not in present]
    if missing:
        shown = sorted(present)[:20]
        what = repr(missing[0]) if isinstance(drive, str) else str(missing)
        raise DatasetError(f"{key} {what} has no frames; drives present: {shown}"
                           + (" ..." if len(present) > 20 else ""))
    keep = set(wanted)
    return [s for s in samples if s.drive not in keep], [s for s in samples if s.drive in keep]


def every_nth_drive(samples: list[Sample], n: int) -> list[str]:
    """Every ``n``-th drive in natural sort order (the first included): a fixed, frame-free validation pick."""
    drives = sorted({s.drive for s in samples}, key=lambda d: (len(d), d))
    return drives[::n] if n > 0 else []
