"""Video decoding: random access to frames by index with PyAV or decord, and fps-aware frame sampling.

``VideoReader(path, backend="auto")`` tries the backends in ``AUTO_ORDER`` and falls back to the next one when a
backend is not installed, cannot open the file or fails while reading it, so one odd file never stops training.
Frames come back as ``[T, 3, H, W]`` uint8 tensors (RGB, channel-first per frame), optionally resized inside the
decoder (PyAV's swscale, decord's ffmpeg scale filter, both bicubic), which is cheaper than resizing afterwards.
``write_video`` encodes frames with PyAV (for tests, benchmarks and visualisations).

Why ``"auto"`` tries PyAV first (measurements by ``bench/decode.py``, see BENCHMARKS.md):

* speed: for the pattern training uses, 8 random frames per clip with the file reopened per clip, PyAV (with its
  timestamp index and key-frame seeking, below) was as fast as decord or faster, at UCF101's 320x240 and at 720p;
* correctness: decord 0.6 returns wrong frames for random access into .avi files with B-frames (e.g. frame 23
  when asked for frame 33; full sequential reads are right), where PyAV maps indices by timestamp
  (``tests/test_video_data.py`` checks this). decord also fails on 16-pixel-wide frames.

decord stays the fallback: it reads some damaged files PyAV rejects.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import av
import numpy as np
import torch

from permgym.data.errors import VideoDecodeError

Backend = Literal["auto", "decord", "pyav"]
Size = int | tuple[int, int] | None
BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav")
CODEC_OF_SUFFIX = {".avi": "mpeg4", ".mp4": "libx264", ".mov": "libx264", ".mkv": "libvpx-vp9", ".webm": "libvpx"}
AUTO_ORDER: tuple[str, ...] = ("pyav", "decord")  # see the module docstring
THREADED_MIN_PIXELS = 640 * 480  # PyAV decodes smaller frames in one thread: threads slow its seeks down there

logger = logging.getLogger(__name__)


def check_backend(backend: str) -> None:
    """Raise ``ValueError`` unless ``backend`` is one of ``BACKENDS``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def check_size(size: Size) -> None:
    """Raise ``ValueError`` unless ``size`` is ``None``, a positive int or a pair of positive ints."""

    def positive_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    ok = size is None or positive_int(size)
    if isinstance(size, tuple | list):
        ok = len(size) == 2 and all(positive_int(s) for s in size)
    if not ok:
        raise ValueError(f"size must be None (native), an int (short side in pixels) or (height, width), got {size!r}")


def resolve_size(size: Size, height: int, width: int) -> tuple[int, int] | None:
    """Output ``(height, width)`` of a ``height`` x ``width`` video for a requested ``size``.

    Args:
        size: ``None`` keeps the native size; an int sets the short side and keeps the aspect ratio
            (320x240 with ``size=128`` gives 171x128); ``(h, w)`` is exact.
        height: native frame height.
        width: native frame width.

    Returns:
        ``(h, w)``, or ``None`` when no resize is needed.
    """
    if size is None:
        return None
    if not isinstance(size, int):
        out = (int(size[0]), int(size[1]))
    elif height <= width:
        out = (size, max(1, round(width * size / height)))
    else:
        out = (max(1, round(height * size / width)), size)
    return None if out == (height, width) else out


def sample_indices(
    num_frames: int,
    frames: int,
    *,
    video_fps: float | None = None,
    target_fps: float | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Choose ``frames`` frame indices of a ``num_frames``-frame video, in increasing order.

    Without ``target_fps`` the video is split into ``frames`` equal segments and one frame is taken per segment
    (its centre, or a uniformly random frame of it when ``generator`` is given), so the clip spans the whole video.
    With ``target_fps`` the frames are ``video_fps / target_fps`` source frames apart (rounded to the nearest
    frame): a 25 fps video sampled at 5 fps gives every 5th frame. The window is centred in the video, or starts at
    a random frame when ``generator`` is given. If the window is longer than the video, the segment rule above is
    used instead, so frames stay distinct whenever ``num_frames >= frames``. Shorter videos repeat frames.

    Args:
        num_frames: number of frames of the video, >= 1.
        frames: number of indices to return, >= 1.
        video_fps: the video's frame rate; needed with ``target_fps`` (unknown rates, <= 0, count as
            ``target_fps``, i.e. consecutive frames).
        target_fps: sampling rate in frames per second, or ``None`` for whole-video sampling.
        generator: draws the random offsets; ``None`` gives deterministic, centred indices.

    Returns:
        ``frames`` indices in ``[0, num_frames)``, non-decreasing.
    """
    if num_frames < 1 or frames < 1:
        raise ValueError(f"need num_frames >= 1 and frames >= 1, got num_frames={num_frames}, frames={frames}")
    if target_fps is not None:
        if target_fps <= 0:
            raise ValueError(f"target_fps must be > 0 or None, got {target_fps}")
        step = video_fps / target_fps if video_fps and video_fps > 0 else 1.0
        offsets = [math.floor(k * step + 0.5) for k in range(frames)]
        room = num_frames - 1 - offsets[-1]
        if room >= 0:
            start = room // 2 if generator is None else int(torch.randint(room + 1, (1,), generator=generator))
            return [start + o for o in offsets]
    segment = num_frames / frames
    if generator is None:
        position = torch.full((frames,), 0.5, dtype=torch.float64)
    else:
        position = torch.rand(frames, generator=generator, dtype=torch.float64)
    starts = torch.arange(frames, dtype=torch.float64) * segment
    return [min(int(s + p * segment), num_frames - 1) for s, p in zip(starts.tolist(), position.tolist(), strict=True)]


class _Source(Protocol):
    """One opened video in one backend."""

    num_frames: int
    fps: float

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` as ``[T, H, W, 3]`` uint8 RGB."""
        ...


def _frame_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of the first video stream, from the container header (no decoding)."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        context = container.streams.video[0].codec_context
        return context.height, context.width


class _DecordSource:
    """decord ``VideoReader``: seeks to the key frame before each requested frame."""

    def __init__(self, path: str, size: Size) -> None:
        import decord  # optional: "auto" falls back to PyAV when it is missing

        out = None
        if isinstance(size, int):  # decord cannot report the frame size before decoding: read it from the header
            out = resolve_size(size, *_frame_size(path))
        elif size is not None:
            out = (int(size[0]), int(size[1]))
        height, width = out if out is not None else (-1, -1)
        self._reader = decord.VideoReader(path, width=width, height=height)
        self.num_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self._reader.get_batch(list(indices)).asnumpy()


class _PyAVSource:
    """PyAV: a packet index maps frame numbers to timestamps; reads seek to key frames and convert only what is asked.

    Opening demuxes the stream once without decoding: frame ``i`` is the packet with the ``i``-th smallest
    presentation timestamp (so B-frames are in display order), and the key frames are known. A read visits the
    requested frames in order and seeks to the last key frame before the next one whenever that skips frames; it
    decodes from the start instead when the stream has missing or repeated timestamps, or when decoded frames do
    not carry the timestamps of the index.
    """

    def __init__(self, path: str, size: Size) -> None:
        self._path = path
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            self.fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            height, width = stream.codec_context.height, stream.codec_context.width
            packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(stream) if packet.size]
        self.num_frames = len(packets)
        stamps = [pts for pts, _ in packets]
        usable = None not in stamps and len(set(stamps)) == len(stamps)
        self._pts: list[int] = sorted(stamps) if usable else []
        self._keys: list[int] = sorted(pts for pts, key in packets if key) if usable else []
        self._threads = "AUTO" if height * width >= THREADED_MIN_PIXELS else "NONE"
        out = resolve_size(size, height, width)
        self._convert = {"format": "rgb24", "interpolation": "BICUBIC"}
        if out is not None:
            self._convert |= {"height": out[0], "width": out[1]}

    def read(self, indices: Sequence[int]) -> np.ndarray:
        wanted = sorted(set(indices))
        got = self._read_seeking(wanted) if self._keys and self._keys[0] <= self._pts[wanted[0]] else None
        if got is None:
            got = self._read_sequential(wanted)
        return np.stack([got[i] for i in indices])

    def _read_seeking(self, wanted: list[int]) -> dict[int, np.ndarray] | None:
        """Frames ``wanted`` (sorted) by timestamp, seeking ahead; ``None`` if the timestamps do not match."""
        got = {}
        with av.open(self._path) as container:
            stream = container.streams.video[0]
            stream.thread_type = self._threads
            frames, position = None, None  # decoder iterator and timestamp of the last decoded frame
            for i in wanted:
                target = self._pts[i]
                key = self._keys[bisect.bisect_right(self._keys, target) - 1]
                if frames is None or position is None or key > position:
                    container.seek(key, stream=stream, backward=True, any_frame=False)
                    frames = container.decode(stream)
                frame = next((f for f in frames if f.pts is None or f.pts >= target), None)
                if frame is None or frame.pts != target:
                    return None
                position = target
                got[i] = frame.to_ndarray(**self._convert)
        return got

    def _read_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Frames ``wanted`` (sorted) by counting decoded frames from the start."""
        remaining, got, decoded = set(wanted), {}, 0
        with av.open(self._path) as container:
            stream = container.streams.video[0]
            stream.thread_type = self._threads
            for decoded, frame in enumerate(container.decode(stream), start=1):
                if decoded - 1 in remaining:
                    got[decoded - 1] = frame.to_ndarray(**self._convert)
                    remaining.discard(decoded - 1)
                if not remaining:
                    return got
        raise ValueError(f"the stream ended after {decoded} frames, before frames {sorted(remaining)}")


_SOURCES: dict[str, type[_DecordSource] | type[_PyAVSource]] = {"decord": _DecordSource, "pyav": _PyAVSource}


class VideoReader:
    """A video opened for random access by frame index, with per-file fallback between backends.

    Args:
        path: the video file (any container and codec FFmpeg reads: .avi, .mp4, .mkv, .webm, .mov, ...).
        backend: ``"decord"``, ``"pyav"`` or ``"auto"`` (tries ``AUTO_ORDER``; a backend that is missing, cannot
            open the file or fails while reading it hands over to the next one).
        size: output frame size: ``None`` (native), an int (short side, aspect ratio kept) or ``(h, w)``.

    Attributes:
        path: the file, as a string.
        num_frames: number of frames as reported by the backend in use.
        fps: average frame rate (0.0 if unknown).
        backend: name of the backend in use (``"decord"`` or ``"pyav"``).

    Raises:
        VideoDecodeError: the file is missing or empty, or no backend could open it.
        ImportError: an explicitly requested backend is not installed.
    """

    def __init__(self, path: str | Path, backend: Backend = "auto", size: Size = None) -> None:
        check_backend(backend)
        check_size(size)
        self.path = str(path)
        self._size = size
        self._explicit = backend != "auto"
        self._pending = list(AUTO_ORDER) if backend == "auto" else [backend]
        self._errors: list[str] = []
        if not os.path.isfile(self.path):
            raise VideoDecodeError(self.path, "the file does not exist")
        if os.path.getsize(self.path) == 0:
            raise VideoDecodeError(self.path, "the file is empty (0 bytes)")
        self._open_next()

    def _open_next(self) -> None:
        """Open the file with the next pending backend; raise when none is left."""
        while self._pending:
            name = self._pending.pop(0)
            try:
                self._source: _Source = _SOURCES[name](self.path, self._size)
            except ImportError as err:
                if self._explicit:
                    raise ImportError(
                        f"backend={name!r} needs the {name} package: pip install {name} "
                        "(or use backend='auto' to fall back to the installed one)"
                    ) from err
                self._errors.append(f"{name}: not installed")
                continue
            except Exception as err:  # decoders raise anything (DECORDError, AssertionError, FFmpegError, ...)
                self._errors.append(f"{name} could not open it ({type(err).__name__}: {err})")
                continue
            if self._source.num_frames < 1:
                self._errors.append(f"{name} found no frames")
                continue
            self.backend = name
            return
        raise VideoDecodeError(self.path, "; ".join(self._errors))

    @property
    def num_frames(self) -> int:
        return self._source.num_frames

    @property
    def fps(self) -> float:
        return self._source.fps

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Decode frames by index.

        Args:
            indices: frame indices in ``[0, num_frames)``, any order, repeats allowed.

        Returns:
            ``[len(indices), 3, H, W]`` uint8 tensor, RGB.

        Raises:
            ValueError: an index is out of range or ``indices`` is empty.
            VideoDecodeError: every remaining backend failed to decode the frames.
        """
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("indices is empty: ask for at least one frame")
        bad = [i for i in indices if not 0 <= i < self.num_frames]
        if bad:
            raise ValueError(f"frame indices {bad} out of range for {self.path!r} with {self.num_frames} frames")
        while True:
            try:
                frames = self._source.read(indices)
                break
            except Exception as err:  # same as in _open_next: fall back to the next backend
                self._errors.append(f"{self.backend} failed while reading ({type(err).__name__}: {err})")
                logger.debug("%s: %s", self.path, self._errors[-1])
                self._open_next()
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def read_frames(path: str | Path, indices: Sequence[int], backend: Backend = "auto", size: Size = None) -> torch.Tensor:
    """Decode frames ``indices`` of one video: ``[len(indices), 3, H, W]`` uint8. See ``VideoReader``."""
    return VideoReader(path, backend=backend, size=size).get_frames(indices)


def write_video(
    path: str | Path,
    frames: torch.Tensor,
    fps: int = 25,
    codec: str | None = None,
    gop: int = 12,
    bit_rate: int = 4_000_000,
    b_frames: int | None = None,
) -> Path:
    """Encode frames to a video file with PyAV (yuv420p).

    Args:
        path: the file to write; its parent folders are created.
        frames: ``[T, 3, H, W]`` uint8 tensor, RGB; ``H`` and ``W`` even.
        fps: frame rate.
        codec: FFmpeg encoder; by default from the suffix: mpeg4 for .avi (as in UCF101), libx264 for .mp4/.mov,
            VP9 for .mkv, VP8 for .webm.
        gop: key-frame interval in frames.
        bit_rate: target bit rate in bits per second.
        b_frames: maximum consecutive B-frames; ``None`` keeps the encoder's default (0 for mpeg4, 3 for libx264).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    if codec is None and path.suffix not in CODEC_OF_SUFFIX:
        raise ValueError(f"no default codec for {path.suffix!r}: pass codec=... or use one of {list(CODEC_OF_SUFFIX)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec or CODEC_OF_SUFFIX[path.suffix], rate=fps)
        stream.height, stream.width = frames.shape[2:4]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bit_rate
        stream.codec_context.gop_size = gop
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        for frame in frames.permute(0, 2, 3, 1).numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
