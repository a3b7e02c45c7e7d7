"""VideoFolder: any videos laid out as one folder per class, like torchvision's ImageFolder."""

from __future__ import annotations

from pathlib import Path

import torch

from permgym.data.errors import require_dir
from permgym.data.images import visible_file
from permgym.data.video import Backend, Size
from permgym.data.video_dataset import Transform, VideoClipDataset

VIDEO_EXTENSIONS: tuple[str, ...] = (".avi", ".mp4", ".mkv", ".webm", ".mov")
LAYOUT = "Expected root/<class>/<video> with one sub-folder per class (sub-folders inside a class are searched too)."
#: In a folder tree's :class:`FolderSplit`, every FOLDER_TEST_EVERY-th video of each class is a test video.
FOLDER_TEST_EVERY = 5


class VideoFolder(VideoClipDataset):
    """Videos in ``root/<class>/...``: classes are the sorted sub-folder names, labels their 0-based indices. Hidden
    entries (names starting with ``.``: ``.git/``, macOS's ``._clip.avi``) are neither classes nor videos.

    Every file under a class folder (recursively) whose extension is in ``extensions`` (case-insensitive) is one
    video, in sorted path order. Undecodable videos are skipped and counted, see ``permgym.data.video_dataset``.

    Args:
        root: folder with one sub-folder per class.
        frames: frames per clip ``T``.
        size: ``None`` (native), an int (short side) or ``(height, width)``.
        target_fps: sampling rate in frames per second; ``None`` spreads the frames over the whole video.
        temporal_jitter: random frame positions instead of deterministic centred ones.
        backend: ``"auto"``, ``"decord"`` or ``"pyav"``.
        transform: optional callable applied to each ``[T, 3, H, W]`` uint8 clip.
        extensions: file extensions counted as videos.

    ``dataset[i]`` returns ``(clip, label)``: ``clip`` a ``[T, 3, H, W]`` uint8 tensor, ``label`` an int.
    """

    def __init__(
        self,
        root: str | Path,
        frames: int = 16,
        size: Size = None,
        target_fps: float | None = None,
        temporal_jitter: bool = False,
        backend: Backend = "auto",
        transform: Transform | None = None,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
    ) -> None:
        root = require_dir(root, "VideoFolder root", LAYOUT)
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        videos, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(p for p in (root / name).rglob("*") if p.is_file() and visible_file(p, root, extensions))
            videos += found
            labels += [label] * len(found)
        if not videos:
            raise FileNotFoundError(
                f"VideoFolder found no videos with extensions {extensions} under {str(root)!r} "
                f"(class folders: {classes[:5]}). {LAYOUT}"
            )
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
            layout_help=LAYOUT,
            source={"extensions": list(extensions)},
        )


class FolderSplit(VideoClipDataset):
    """The training or test part of a :class:`VideoFolder` tree, which has no official split: every
    ``test_every``-th listed video of each class (in sorted path order) is a test video, the others train.

    The split is made on the listing, before decoding, so it does not move when a video turns out undecodable.
    ``config()`` (the frame cache key) records the part and ``test_every``.
    """

    def __init__(self, folder: VideoFolder, train: bool, test_every: int = FOLDER_TEST_EVERY) -> None:
        rank_in_class = torch.zeros_like(folder.labels)
        for c in folder.labels.unique():
            members = (folder.labels == c).nonzero().squeeze(1)
            rank_in_class[members] = torch.arange(len(members))
        keep = (rank_in_class % test_every != test_every - 1) == train
        source = {"extensions": folder.config()["extensions"], "part": "train" if train else "test",
                  "test_every": test_every}  # fmt: skip
        videos = [v for v, k in zip(folder.videos, keep.tolist(), strict=True) if k]
        super().__init__(videos, folder.labels[keep].tolist(), folder.classes, root=folder.root, layout_help=LAYOUT,
                         source=source, **folder.clip_options())  # fmt: skip
