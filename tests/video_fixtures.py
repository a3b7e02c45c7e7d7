"""Generators of small real video files and official dataset layouts, for tests (no downloads).

Every frame carries its own index: the top quarter of frame ``t`` is a flat grey level ``frame_code(t, T)``,
which survives lossy compression, so ``decoded_index(frame, T)`` tells which frame a decoder returned. The rest of
the frame is a moving gradient and square, so codecs see real motion.

Functions:
    pattern_frames: ``[T, 3, H, W]`` uint8 frames.
    write_clip: ``permgym.data.video.write_video``: encode frames with PyAV (mpeg4 in .avi like UCF101, libx264
        in .mp4, VP9 in .mkv, VP8 in .webm).
    write_bad_video: an empty, random-bytes or truncated file.
    make_ucf101_tree / make_hmdb51_tree / make_folder_tree: dataset layouts with split files in official format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from permgym.data.video import write_video

UCF_CLASSES = ("ApplyEyeMakeup", "Archery", "HandStandPushups")
HMDB_CLASSES = ("brush_hair", "cartwheel", "shoot_ball")
write_clip = write_video  # encode [T, 3, H, W] uint8 frames; codec by suffix (mpeg4 in .avi like UCF101, ...)


def frame_code(t: int | np.ndarray, num_frames: int) -> np.ndarray:
    """Grey level of the top band of frame ``t``: evenly spread over [16, 240]."""
    return np.round(16 + 224 * np.asarray(t) / max(num_frames - 1, 1))


def decoded_index(frame: torch.Tensor, num_frames: int) -> int:
    """Index of the frame whose code is nearest to the top band of ``frame`` (``[3, H, W]`` uint8)."""
    band = frame[:, 2 : frame.shape[1] // 4 - 2, 2:-2].float().mean().item()
    return int(np.argmin(np.abs(frame_code(np.arange(num_frames), num_frames) - band)))


def pattern_frames(num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    """``[num_frames, 3, height, width]`` uint8 frames: index code on top, moving content below."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    colour = rng.integers(60, 200, size=3)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        body = np.stack([(xx * 3 + t * 4) % 256, (yy * 4 + t * 2) % 256, np.full_like(xx, colour[2])], axis=-1)
        x0 = (t * 3) % max(width - 12, 1)
        body[height // 2 : height // 2 + 10, x0 : x0 + 10] = colour
        body[: height // 4] = frame_code(t, num_frames)
        frames[t] = body
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


def write_bad_video(path: str | Path, kind: str, seed: int = 0) -> Path:
    """Write a broken video: ``"empty"`` (0 bytes), ``"random"`` (4 KiB of random bytes) or ``"truncated"``.

    ``"truncated"`` encodes a valid clip for ``path``'s suffix and keeps only its first 40 %.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        data = write_clip(path, pattern_frames(20)).read_bytes()
        path.write_bytes(data[: int(len(data) * 0.4)])
    else:
        raise ValueError(f"kind must be 'empty', 'random' or 'truncated', got {kind!r}")
    return path


def _write_lines(path: Path, lines: Sequence[str], line_end: str) -> None:
    path.write_bytes("".join(line + line_end for line in lines).encode())


def make_ucf101_tree(
    tmp_path: str | Path,
    classes: Sequence[str] = UCF_CLASSES,
    groups: Sequence[int] = (1, 8, 15),
    clips_per_group: int = 1,
    frames: int = 30,
    height: int = 48,
    width: int = 64,
    line_end: str = "\r\n",
) -> tuple[Path, Path]:
    """Write a tiny UCF101: ``UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` (mpeg4) and ``ucfTrainTestlist/``.

    The split files follow the official rule and format: split ``n`` tests groups ``7n-6 .. 7n`` and trains on the
    others; ``classInd.txt`` lines ``1 <Class>``, train lines ``<Class>/<file>.avi <label>`` (1-based), test lines
    without label, CRLF line endings. With the default groups each split has one test group per class.

    Returns:
        ``(video_root, annotation_path)``.
    """
    root, annotations = Path(tmp_path) / "UCF-101", Path(tmp_path) / "ucfTrainTestlist"
    annotations.mkdir(parents=True, exist_ok=True)
    _write_lines(annotations / "classInd.txt", [f"{i + 1} {name}" for i, name in enumerate(classes)], line_end)
    videos = []
    for label, name in enumerate(classes):
        for g in groups:
            for c in range(1, clips_per_group + 1):
                relative = f"{name}/v_{name}_g{g:02d}_c{c:02d}.avi"
                seed = len(videos)
                write_clip(root / relative, pattern_frames(frames, height, width, seed=seed))
                videos.append((relative, label, g))
    for split in (1, 2, 3):
        test_groups = range(7 * split - 6, 7 * split + 1)
        train = [f"{rel} {label + 1}" for rel, label, g in videos if g not in test_groups]
        test = [rel for rel, _, g in videos if g in test_groups]
        _write_lines(annotations / f"trainlist0{split}.txt", train, line_end)
        _write_lines(annotations / f"testlist0{split}.txt", test, line_end)
    return root, annotations


def make_hmdb51_tree(
    tmp_path: str | Path,
    classes: Sequence[str] = HMDB_CLASSES,
    videos_per_class: int = 3,
    frames: int = 30,
    height: int = 48,
    width: int = 64,
) -> tuple[Path, Path]:
    """Write a tiny HMDB51: ``hmdb51/<class>/<video>.avi`` and ``testTrainMulti_7030_splits/``.

    Each ``<class>_test_split<N>.txt`` lists every video of the class as ``<video>.avi <tag> `` (trailing space, as
    distributed) with tags cycling 1 (train), 2 (test), 0 (unused), shifted by the split number.

    Returns:
        ``(video_root, annotation_path)``.
    """
    root, annotations = Path(tmp_path) / "hmdb51", Path(tmp_path) / "testTrainMulti_7030_splits"
    annotations.mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(classes):
        names = [f"{name}_clip_{name}_f_nm_np1_fr_med_{i}.avi" for i in range(videos_per_class)]
        for i, video in enumerate(names):
            write_clip(root / name / video, pattern_frames(frames, height, width, seed=100 + c * 10 + i))
        for split in (1, 2, 3):
            lines = [f"{video} {'120'[(i + split - 1) % 3]} " for i, video in enumerate(names)]
            _write_lines(annotations / f"{name}_test_split{split}.txt", lines, "\n")
    return root, annotations


def make_folder_tree(
    tmp_path: str | Path, suffixes: Sequence[str] = (".avi", ".mp4", ".mkv", ".webm", ".mov"), frames: int = 30
) -> Path:
    """Write ``videos/<class>/clip<suffix>`` for two classes (``a``, ``b``), one clip per suffix each."""
    root = Path(tmp_path) / "videos"
    for c, name in enumerate(("b", "a")):
        for i, suffix in enumerate(suffixes):
            write_clip(root / name / f"clip{i}{suffix}", pattern_frames(frames, seed=200 + 10 * c + i))
    return root
