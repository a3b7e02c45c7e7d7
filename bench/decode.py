"""Video decoding throughput: decord vs PyAV, and frame-cache reads vs decoding.

Generates camera-like clips (a panning smooth texture, a moving object, sensor noise) at UCF101's size
(320x240, mpeg4 in .avi, 7 s at 25 fps, key frame every 12 frames, 500 kbit/s: UCF101's average bit rate) and at
1280x720 (H.264 in .mp4, 5 s, key frame every 50 frames, 4 Mbit/s), then measures frames per second through
``permgym.data.video.VideoReader`` (open + decode + conversion to ``[T, 3, H, W]`` uint8) for

* full decode: every frame of the clip;
* sparse: 8 random frames per clip, one per segment (``sample_indices(..., generator=...)``, as training with
  ``temporal_jitter=True`` draws them), reopening the file for every clip as a dataset does; 40 clips per run at
  320x240, 6 at 1280x720;
* frame cache: 16-frame 128x128 clips read from a ``FrameCache`` (warm page cache) vs decoded from the videos.

Each number is the median of ``--repeats`` runs; ratios are against the baseline measured in the same process.
The table is printed and written into BENCHMARKS.md under "## Video decoding (bench/decode.py)", replacing only
that section. Run from the repository root: ``.venv/bin/python bench/decode.py`` (about 2-3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import decord
import numpy as np
import torch
import torch.nn.functional as F
from common import BENCHMARKS, machine_info, write_section

from permgym.data import VideoFolder, VideoReader, build_frame_cache, sample_indices
from permgym.data.video import AUTO_ORDER, write_video

HEADING = "## Video decoding (bench/decode.py)"
CLIPS = {  # name: (height, width, seconds, suffix, key-frame interval, bit rate, clips per sparse-sampling run)
    "320x240 mpeg4 .avi": (240, 320, 7, ".avi", 12, 500_000, 40),
    "1280x720 h264 .mp4": (720, 1280, 5, ".mp4", 50, 4_000_000, 6),
}
CACHE_PASSES = 20  # a cache read is so fast that one pass over the clips would mostly time scheduler noise
FPS = 25


def camera_like(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """``[frames, 3, height, width]`` uint8: a smooth random texture panning, a moving disk, sensor noise."""
    g = torch.Generator().manual_seed(seed)
    pan = 2 * frames
    coarse = torch.rand(1, 3, height // 16 + 2, (width + pan) // 16 + 2, generator=g) * 255
    texture = F.interpolate(coarse, size=(height, width + pan), mode="bicubic", align_corners=False)[0]
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    out = torch.empty(frames, 3, height, width, dtype=torch.uint8)
    for t in range(frames):
        frame = texture[:, :, 2 * t : 2 * t + width].clone()
        cx, cy = width * (0.2 + 0.6 * t / frames), height * (0.5 + 0.2 * np.sin(t / 5))
        disk = ((xx - cx) ** 2 + (yy - cy) ** 2) < (height / 8) ** 2
        frame[:, disk] = torch.tensor([230.0, 40.0, 40.0])[:, None]
        frame += torch.randn(frame.shape, generator=g) * 4
        out[t] = frame.clamp(0, 255).to(torch.uint8)
    return out


def median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each ``fn()`` over ``repeats`` runs, after a warm-up; the functions take turns in every
    run, so a change of machine load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for run in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if run > 0:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def full_decode(path: Path, backend: str) -> int:
    reader = VideoReader(path, backend=backend)  # type: ignore[arg-type]
    return len(reader.get_frames(range(reader.num_frames)))


def sparse_decode(path: Path, backend: str, clips: int, seed: int) -> int:
    generator = torch.Generator().manual_seed(seed)  # same indices for every backend
    for _ in range(clips):
        reader = VideoReader(path, backend=backend)  # type: ignore[arg-type]
        reader.get_frames(sample_indices(reader.num_frames, 8, generator=generator))
    return 8 * clips


def bench_backends(workdir: Path, repeats: int) -> tuple[list[str], dict[str, Path], str]:
    """Table rows, the generated clips, and the backend that was faster for sparse sampling at 320x240."""
    rows, paths, faster = [], {}, ""
    for name, (height, width, seconds, suffix, gop, bit_rate, sparse_clips) in CLIPS.items():
        frames = camera_like(seconds * FPS, height, width)
        path = paths[name] = write_video(workdir / f"clip{suffix}", frames, FPS, gop=gop, bit_rate=bit_rate)
        readers = {
            "full decode": (seconds * FPS, {b: functools.partial(full_decode, path, b) for b in ("pyav", "decord")}),
            f"sparse 8 of {seconds * FPS}": (
                8 * sparse_clips,
                {b: functools.partial(sparse_decode, path, b, sparse_clips, 0) for b in ("pyav", "decord")},
            ),
        }
        for pattern, (count, fns) in readers.items():
            seconds_per_run = median_times(fns, repeats)
            speed = {b: count / t for b, t in seconds_per_run.items()}
            if name.startswith("320x240") and pattern.startswith("sparse"):
                faster = max(speed, key=speed.__getitem__)
            rows.append(
                f"| {name} | {pattern} | {speed['decord']:.0f} | {speed['pyav']:.0f} | "
                f"{speed['decord'] / speed['pyav']:.2f}x |"
            )
            print(rows[-1], flush=True)
    return rows, paths, faster


def bench_cache(workdir: Path, source: Path, repeats: int, videos: int) -> list[str]:
    for i in range(videos):
        (workdir / "folder" / "class").mkdir(parents=True, exist_ok=True)
        os.link(source, workdir / "folder" / "class" / f"v{i}{source.suffix}")
    dataset = VideoFolder(workdir / "folder", frames=16, size=(128, 128))
    cache = build_frame_cache(dataset, workdir / "cache", progress=False)
    count = 16 * videos
    seconds_per_run = median_times(
        {
            "decode": lambda: [dataset.load_clip(i) for i in range(videos)],
            "read": lambda: [cache[i][0].clone() for _ in range(CACHE_PASSES) for i in range(videos)],
        },
        repeats,
    )
    decode, read = count / seconds_per_run["decode"], CACHE_PASSES * count / seconds_per_run["read"]
    rows = [
        f"| decode 16 frames at 128x128 from {source.suffix} (auto = {VideoReader(source).backend}) | "
        f"{decode:.0f} | 1.00x |",
        f"| FrameCache read (memmap, warm page cache) | {read:.0f} | {read / decode:.0f}x |",
    ]
    print(*rows, sep="\n", flush=True)
    return rows


def main(args: argparse.Namespace) -> None:
    command = "python bench/decode.py " + " ".join(sys.argv[1:])
    machine = f"{machine_info()}, decord {decord.__version__}, PyAV {av.__version__}"
    with tempfile.TemporaryDirectory() as tmp:
        backend_rows, paths, faster = bench_backends(Path(tmp), args.repeats)
        cache_rows = bench_cache(Path(tmp), paths["320x240 mpeg4 .avi"], args.repeats, args.cache_videos)
    text = "\n".join(
        [
            HEADING,
            "",
            f"Command: `{command.strip()}`. Machine: {machine}.",
            f"Median of {args.repeats} runs after a warm-up, the compared readers taking turns; frames/s through "
            "`VideoReader` (open, decode, convert to `[T, 3, H, W]` uint8); decord with its default threads, PyAV "
            "with one thread below 640x480 and automatic threading above. Sparse = 8 random frames per clip "
            "(one per segment), file reopened per clip as in a dataset. The machine is shared with other jobs (see "
            "the load average), so absolute numbers are noisy; ratios are steadier since the readers take turns.",
            "",
            "| clip | pattern | decord frames/s | PyAV frames/s | decord / PyAV |",
            "|---|---|---:|---:|---:|",
            *backend_rows,
            "",
            f"Faster for sparse sampling at UCF101's size in this run: {faster}. `backend='auto'` tries "
            f"{' then '.join(AUTO_ORDER)} (`permgym.data.video.AUTO_ORDER`); besides speed, decord 0.6 returns wrong "
            "frames for random access into .avi files with B-frames (see the `permgym.data.video` docstring).",
            "",
            "| source | frames/s | vs decoding |",
            "|---|---:|---:|",
            *cache_rows,
            "",
        ]
    )
    print("\n" + text)
    if args.write:
        write_section(HEADING, text, Path(args.benchmarks))
        print(f"wrote the section into {args.benchmarks}")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="decord vs PyAV throughput, frame cache vs decoding", add_help=add_help
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per number, median reported (default: 5)")
    parser.add_argument("--cache-videos", type=int, default=16, help="videos in the frame-cache test (default: 16)")
    parser.add_argument(
        "--benchmarks", default=BENCHMARKS, help="file to update (default: the repository's BENCHMARKS.md)"
    )
    parser.add_argument("--no-write", dest="write", action="store_false", help="print only, leave BENCHMARKS.md")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
