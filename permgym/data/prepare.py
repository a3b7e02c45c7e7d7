"""Decode a video dataset once into a frame cache (see ``permgym.data.cache``).

Example::

    python -m permgym.data.prepare ucf101 --root data/UCF-101 --annotations data/ucfTrainTestlist \\
        --split 1 --subset train --out cache/ucf101_s1_train --size 128 --frames 32 --workers 8
"""

from __future__ import annotations

import argparse

from permgym.data.build import VIDEO_DATASETS, build_video_dataset
from permgym.data.cache import load_or_build_cache
from permgym.data.video import BACKENDS
from permgym.data.video_dataset import VideoClipDataset
from permgym.run import require_apart, require_at_least, require_finite, require_positive, run_cli


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m permgym.data.prepare",
        description="Decode a video dataset once into a uint8 memory-mapped frame cache (clips.u8 + index.json).",
        add_help=add_help,
    )
    parser.add_argument("dataset", choices=VIDEO_DATASETS, help="dataset layout")
    parser.add_argument("--root", required=True, help="video root folder (one sub-folder per class)")
    parser.add_argument(
        "--annotations",
        help="official split folder: ucfTrainTestlist (ucf101) or testTrainMulti_7030_splits (hmdb51); "
        "not used by folder",
    )
    parser.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="official split (default: 1)")
    parser.add_argument("--subset", default="train", choices=("train", "test"), help="which videos (default: train)")
    parser.add_argument(
        "--out",
        required=True,
        help="cache folder to write: a new or empty folder, or a frame cache to reuse if its config matches "
        "(a folder holding anything else is refused, never overwritten)",
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=[128],
        metavar="PX",
        help="frame size in pixels: one value for square frames, or HEIGHT WIDTH (default: 128); "
        "frames are resized to it without keeping the aspect ratio",
    )
    parser.add_argument("--frames", type=int, default=32, help="frames per clip (default: 32)")
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        help="sampling rate in frames per second (default: none, frames spread uniformly over each video)",
    )
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="decoder (default: auto)")
    parser.add_argument("-j", "--workers", type=int, default=0, help="decoding processes, 0 = this one (default: 0)")
    parser.add_argument(
        "--rebuild", action="store_true", help="replace an existing frame cache in --out even if its config matches"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    return parser


def make_dataset(args: argparse.Namespace) -> VideoClipDataset:
    """The dataset described by parsed ``args`` (deterministic sampling, exact size, no transform)."""
    require_apart(args.out, args.root, "video", "cache")
    if len(args.size) not in (1, 2) or min(args.size) < 1:
        raise ValueError(f"--size takes one value (square) or two (HEIGHT WIDTH), each >= 1, got {args.size}")
    require_at_least(args, 1, "frames")
    require_at_least(args, 0, "workers")
    require_positive(args, "fps")
    require_finite(args, "fps")
    return build_video_dataset(args.dataset, args.root, args.annotations, split=args.split,
                               train=args.subset == "train", frames=args.frames, size=(args.size[0], args.size[-1]),
                               target_fps=args.fps, backend=args.backend)  # fmt: skip


def main(args: argparse.Namespace) -> None:
    """Build (or reuse) the frame cache ``args`` describe and print what was cached and skipped.

    Raises:
        ValueError: a bad option, an ``--out`` that overlaps ``--root`` or holds something that is not a frame cache.
        FileNotFoundError: missing videos or split files (the message names the path).
    """
    dataset = make_dataset(args)
    print(dataset)
    cache = load_or_build_cache(dataset, args.out, workers=args.workers, rebuild=args.rebuild, progress=args.progress)
    counts = cache.index["counts"]
    print(f"{cache}\ncached {counts['cached']} of {counts['listed']} listed videos, skipped {counts['skipped']}")
    for path, reason in list(cache.skipped.items())[:10]:
        print(f"  skipped {path}: {reason}")
    if len(cache.skipped) > 10:
        print(f"  ... and {len(cache.skipped) - 10} more, all listed in {args.out}/index.json")


if __name__ == "__main__":
    run_cli(main, get_args_parser())
