"""Base classes of the video-file datasets (UCF101, HMDB51, VideoFolder): one clip per video, bad files skipped.

:class:`VideoClipDataset` decodes, samples frames and skips bad files; :class:`OfficialSplitVideos` adds what the
datasets with official numbered train/test splits share (argument checks, the split's cache key), so UCF101 and
HMDB51 only parse their split files.

Bad input is handled in two places:

* **Listed but missing** videos are found when the dataset is built (one ``stat`` per file), left out of it,
  recorded in ``dataset.skipped`` and reported in one warning. If none of the listed videos exists, the root is
  wrong and the constructor raises ``FileNotFoundError`` with the expected layout.
* **Empty, truncated or undecodable** videos are found when a clip is read. ``dataset[i]`` then records the file in
  ``dataset.skipped`` (with the decoders' error messages), warns, and returns the next good clip, trying
  ``i + 1, i + 2, ...`` (wrapping around) with that clip's own label. The substitution is deterministic, keeps the
  epoch length and never raises mid-epoch (unless every video fails); a file found bad is not decoded again by
  the same process. With DataLoader workers each worker keeps its own ``skipped`` record; decode the dataset once
  with ``permgym.data.cache.build_frame_cache`` to get one complete count, stored with the cache.
  ``dataset.load_clip(i)`` is the strict variant: it raises ``VideoDecodeError`` instead of substituting.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from permgym.data.errors import VideoDecodeError, nested_hint, require_dir
from permgym.data.video import Backend, Size, VideoReader, check_backend, check_size, sample_indices

Transform = Callable[[torch.Tensor], torch.Tensor]


def read_listing(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of an annotation file as ``(line_number, stripped_text)``.

    Handles the official files as distributed: Windows (CRLF) line endings, trailing whitespace, blank lines.
    """
    with open(path, encoding="utf-8") as f:  # text mode turns "\r\n" into "\n"
        return [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]


def listing_digest(root: Path, videos: Sequence[Path], labels: Sequence[int], classes: list[str]) -> str:
    """A short digest of what a dataset lists (videos relative to ``root``, their labels, the class names), so that
    a frame cache keyed by ``config()`` is not reused after the split files or the folder tree changed."""
    rows = [[str(Path(v).relative_to(root)) if Path(v).is_relative_to(root) else str(v), int(y)]
            for v, y in zip(videos, labels, strict=True)]  # fmt: skip
    return hashlib.sha256(json.dumps([classes, rows]).encode()).hexdigest()[:16]


class VideoClipDataset(Dataset):
    """Clips decoded on the fly from a list of video files with class labels.

    Subclasses parse their dataset's layout into ``videos``/``labels``/``classes``; decoding, frame sampling,
    skipping bad files, the cache key and ``repr`` live here.

    Args:
        videos: video file paths.
        labels: class id of each video, in ``[0, len(classes))``.
        classes: class names, indexed by label.
        root: the dataset's root folder (for messages and ``repr``).
        frames: frames per clip ``T``.
        size: frame size: ``None`` (native), an int (short side, aspect ratio kept) or ``(height, width)``.
        target_fps: sampling rate in frames per second; ``None`` spreads the ``T`` frames over the whole video.
            See ``permgym.data.video.sample_indices``.
        temporal_jitter: draw the frame positions at random (from torch's default generator, which DataLoader
            seeds per worker) instead of the deterministic centred positions.
        backend: ``"auto"``, ``"decord"`` or ``"pyav"``.
        transform: optional callable applied to each ``[T, 3, H, W]`` uint8 clip.
        layout_help: the expected layout and where to get the data, quoted when no listed video exists.
        source: what else identifies the videos (annotation file, split), JSON-serialisable; part of ``config()``.

    Attributes:
        videos: ``[N]`` paths (as strings) of the videos that exist.
        labels: ``[N]`` int64 tensor of class ids.
        classes: class names; ``class_names`` is an alias (as in ``SyntheticActions``).
        skipped: ``{path: reason}`` of the videos left out or found undecodable so far.

    ``dataset[i]`` returns ``(clip, label)``: ``clip`` a ``[T, 3, H, W]`` uint8 tensor (RGB), ``label`` an int.
    """

    def __init__(
        self,
        videos: Sequence[Path],
        labels: Sequence[int],
        classes: list[str],
        *,
        root: Path,
        frames: int,
        size: Size,
        target_fps: float | None,
        temporal_jitter: bool,
        backend: Backend,
        transform: Transform | None,
        layout_help: str,
        source: dict[str, Any] | None = None,
    ) -> None:
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if target_fps is not None and target_fps <= 0:
            raise ValueError(f"target_fps must be > 0 or None (whole-video sampling), got {target_fps}")
        check_size(size)
        check_backend(backend)
        self.root, self.classes, self._source = root, classes, source or {}
        self._listing = listing_digest(root, videos, labels, classes)
        self.frames, self.size, self.target_fps = frames, size, target_fps
        self.temporal_jitter, self.backend, self.transform = temporal_jitter, backend, transform
        exists = [Path(v).is_file() for v in videos]
        missing = [str(v) for v, ok in zip(videos, exists, strict=True) if not ok]
        self.skipped: dict[str, str] = dict.fromkeys(missing, "listed but missing")
        if not any(exists):
            example, hint = "", ""
            if videos:
                example = f", e.g. {str(videos[0])!r}"
                relative = Path(videos[0]).relative_to(root) if Path(videos[0]).is_relative_to(root) else None
                if relative is not None:  # e.g. the archive unpacked one level deeper: root/UCF-101/<Class>/...
                    hint = nested_hint(root, lambda sub: (sub / relative).is_file(), "--root")
            raise FileNotFoundError(
                f"{type(self).__name__}: none of the {len(videos)} listed videos exist under {str(root)!r}"
                f"{example}.{hint} {layout_help}"
            )
        if self.skipped:
            warnings.warn(
                f"{type(self).__name__}: {len(self.skipped)} of {len(videos)} listed videos do not exist and were "
                f"left out, e.g. {next(iter(self.skipped))!r}; see dataset.skipped",
                RuntimeWarning,
                stacklevel=3,
            )
        self.videos = [str(v) for v, ok in zip(videos, exists, strict=True) if ok]
        self.labels = torch.tensor([y for y, ok in zip(labels, exists, strict=True) if ok], dtype=torch.int64)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description of the clips this dataset yields (``listing`` is :func:`listing_digest` of
        the videos as listed, missing ones included); the key of its frame cache."""
        size = list(self.size) if isinstance(self.size, tuple | list) else self.size
        return {
            "dataset": type(self).__name__,
            "root": str(self.root.resolve()),
            **self._source,
            "listing": self._listing,
            "frames": self.frames,
            "size": size,
            "target_fps": self.target_fps,
        }

    def clip_options(self) -> dict[str, Any]:
        """The clip-sampling arguments this dataset was built with (``frames``, ``size``, ``target_fps``,
        ``temporal_jitter``, ``backend``, ``transform``), e.g. to build a subset with the same clips."""
        return {"frames": self.frames, "size": self.size, "target_fps": self.target_fps,
                "temporal_jitter": self.temporal_jitter, "backend": self.backend, "transform": self.transform}  # fmt: skip

    @property
    def class_names(self) -> list[str]:
        """Alias of ``classes``."""
        return self.classes

    def __len__(self) -> int:
        return len(self.videos)

    def load_clip(self, index: int) -> torch.Tensor:
        """Decode the clip of video ``index`` without transform or substitution.

        Returns:
            ``[T, 3, H, W]`` uint8 tensor.

        Raises:
            VideoDecodeError: the video is missing, empty, truncated or undecodable.
        """
        reader = VideoReader(self.videos[index], backend=self.backend, size=self.size)
        generator = torch.default_generator if self.temporal_jitter else None
        indices = sample_indices(
            reader.num_frames, self.frames, video_fps=reader.fps, target_fps=self.target_fps, generator=generator
        )
        return reader.get_frames(indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} with {n} clips")
        for offset in range(n):
            j = (index + offset) % n
            if self.videos[j] in self.skipped:
                continue
            try:
                clip = self.load_clip(j)
            except VideoDecodeError as err:
                self.skipped[self.videos[j]] = err.reason
                warnings.warn(
                    f"{err}; returning the next good clip instead ({len(self.skipped)} videos skipped so far, "
                    "see dataset.skipped)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            if self.transform is not None:
                clip = self.transform(clip)
            return clip, int(self.labels[j])
        raise VideoDecodeError(self.root, f"none of the {n} videos could be decoded; see dataset.skipped")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "dataset")
        return (
            f"{type(self).__name__}({fields}, clips={len(self)}, classes={len(self.classes)}, "
            f"skipped={len(self.skipped)})"
        )


class OfficialSplitVideos(VideoClipDataset):
    """Base of the video datasets with official numbered train/test splits (UCF101, HMDB51).

    Subclasses set ``name`` (for messages) and ``layout`` (the expected files and where to get them) and implement
    :meth:`read_split`; this class checks the arguments, reads the split and records it in ``config()`` (the frame
    cache key).

    Args:
        root: folder with one sub-folder of videos per class.
        annotation_path: folder with the official split files.
        split: official split, 1, 2 or 3.
        train: the split's training videos if True, else its test videos.
        frames, size, target_fps, temporal_jitter, backend, transform: as in :class:`VideoClipDataset` (``size``
            ``None`` keeps the native frame size; ``target_fps`` ``None`` spreads the frames over the whole video).
    """

    name: ClassVar[str] = ""
    layout: ClassVar[str] = ""

    def __init__(
        self,
        root: str | Path,
        annotation_path: str | Path,
        split: int = 1,
        train: bool = True,
        frames: int = 16,
        size: Size = None,
        target_fps: float | None = None,
        temporal_jitter: bool = False,
        backend: Backend = "auto",
        transform: Transform | None = None,
    ) -> None:
        if split not in (1, 2, 3):
            raise ValueError(f"split must be 1, 2 or 3 (the official {self.name} splits), got {split!r}")
        root = require_dir(root, f"{self.name} video root", self.layout)
        annotation_path = require_dir(annotation_path, f"{self.name} annotation folder", self.layout)
        classes, videos, labels = self.read_split(root, annotation_path, split, train)
        super().__init__(
            videos,
            labels,
            classes,
            root=root,
            frames=frames,
            size=size,
            target_fps=target_fps,
            temporal_jitter=temporal_jitter,
            backend=backend,
            transform=transform,
            layout_help=self.layout,
            source={"annotation_path": str(annotation_path.resolve()), "split": split, "train": train},
        )

    def read_split(
        self, root: Path, annotation_path: Path, split: int, train: bool
    ) -> tuple[list[str], list[Path], list[int]]:
        """Parse the official split files.

        Returns:
            ``(classes, videos, labels)``: the class names in label order, the listed video paths under ``root``
            and their 0-based labels.
        """
        raise NotImplementedError
