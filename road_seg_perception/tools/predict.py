"""``road-seg-predict``: segment image files or folders with a road model.

    road-seg-predict [--model PATH] [--backend auto|onnxruntime|keras] [--threshold T] \\
        --output-dir DIR INPUT...

For each image it writes ``DIR/<stem>_mask.png`` (mono8: 255 road, 0 not road, the input's
width and height) and ``DIR/<stem>_overlay.png``. Unreadable inputs are listed by name at the
end and make the exit status non-zero; the readable ones are still written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2

from road_seg_perception.core.fileio import atomic_write_bytes
from road_seg_perception.core.imageio import ImageReadError, add_max_pixels_argument, read_rgb
from road_seg_perception.core.model_io import ModelFileError
from road_seg_perception.core.overlay import draw_overlay
from road_seg_perception.core.segmenter import PostConfig, RoadSegmenter
from road_seg_perception.tools.model_args import add_model_args

INPUT_EXTS = (".png", ".jpg", ".jpeg")

#: Exit status when some inputs could not be read or written (the others were).
EXIT_SOME_FAILED = 1
#: Exit status for a bad command line, no inputs or an unusable model.
EXIT_USAGE = 2


def collect_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Expand files and folders (non-recursive, png/jpg) into image paths; return (paths, problems)."""
    paths: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in INPUT_EXTS)
            if not found:
                problems.append(f"{p}: folder holds no {'/'.join(INPUT_EXTS)} images")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    return paths, problems


def prepare_output_dir(out_dir: Path) -> None:
    """Make ``out_dir`` (and its parents); ``ValueError`` naming it if it exists and is not a folder."""
    if (out_dir.exists() or out_dir.is_symlink()) and not out_dir.is_dir():
        raise ValueError(f"--output-dir {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)


def output_paths(out_dir: Path, image: Path) -> tuple[Path, Path]:
    """``(mask, overlay)`` paths written for ``image``."""
    return out_dir / f"{image.stem}_mask.png", out_dir / f"{image.stem}_overlay.png"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_png(path: Path, image) -> None:
    """Encode ``image`` (mono or BGR) as PNG and write it atomically: a link at ``path`` is replaced, not followed."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("png encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="road-seg-predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (png/jpg) or folders of them")
    p.add_argument("--output-dir", required=True, metavar="DIR", help="where <stem>_mask.png and _overlay.png go")
    add_model_args(p)
    add_max_pixels_argument(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    paths, problems = collect_inputs(args.inputs)
    if not paths:
        for msg in problems:
            print(f"road-seg-predict: {msg}", file=sys.stderr)
        print("road-seg-predict: error: no input images", file=sys.stderr)
        return EXIT_USAGE
    out_dir = Path(args.output_dir)
    try:
        prepare_output_dir(out_dir)
    except OSError as e:
        print(f"road-seg-predict: error: --output-dir {out_dir}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:
        print(f"road-seg-predict: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        seg = RoadSegmenter(args.model, backend=args.backend, device=args.device,
                            post=PostConfig(threshold=args.threshold), flip_average=args.flip_average)
    except (ModelFileError, ValueError) as e:
        print(f"road-seg-predict: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    info = seg.info
    print(f"model {info['model']} ({info['backend']}, {info['device']}, input {info['input_size']})", flush=True)

    written: dict[str, Path] = {}
    inputs = {p.resolve() for p in paths}
    for path in tqdm(paths, desc="segmenting", unit="img"):
        if path.stem in written:
            problems.append(f"{path}: same stem as {written[path.stem]}; not written (would overwrite its mask)")
            continue
        targets = output_paths(out_dir, path)
        clash = [t for t in targets if t.resolve() in inputs or any(_same_file(t, p) for p in paths)]
        if clash:
            problems.append(f"{path}: not written: {clash[0]} is one of the inputs")
            continue
        try:
            rgb = read_rgb(path, args.max_image_pixels)
        except ImageReadError as e:
            problems.append(f"{path}: {e}")
            continue
        mask = seg.segment(rgb).mask
        overlay = draw_overlay(rgb, mask)
        try:
            write_png(targets[0], mask)
            write_png(targets[1], cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        except (OSError, ValueError) as e:
            problems.append(f"{path}: cannot write outputs to {out_dir} ({e})")
            continue
        written[path.stem] = path

    print(f"wrote masks and overlays of {len(written)} image(s) to {out_dir}", flush=True)
    if problems:
        print(f"road-seg-predict: {len(problems)} input(s) failed:", file=sys.stderr)
        for msg in problems:
            print(f"  {msg}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
