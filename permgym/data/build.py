"""One dispatch from a dataset name to its video dataset, shared by ``permgym.data.prepare`` and the experiments."""

from __future__ import annotations

from pathlib import Path

from permgym.data.folder import FolderSplit, VideoFolder
from permgym.data.hmdb51 import HMDB51
from permgym.data.ucf101 import UCF101
from permgym.data.video import Backend, Size
from permgym.data.video_dataset import VideoClipDataset

#: Names of the video datasets :func:`build_video_dataset` builds.
VIDEO_DATASETS = ("ucf101", "hmdb51", "folder")


def build_video_dataset(
    name: str,
    root: str | Path,
    annotations: str | Path | None = None,
    *,
    split: int = 1,
    train: bool = True,
    frames: int = 16,
    size: Size = None,
    target_fps: float | None = None,
    backend: Backend = "auto",
    folder_split: bool = False,
) -> VideoClipDataset:
    """The video dataset ``name`` (deterministic sampling, no transform: what a frame cache stores).

    Args:
        name: ``"ucf101"``, ``"hmdb51"`` (official splits, need ``annotations``) or ``"folder"`` (a class-per-folder
            tree).
        root: the video folder.
        annotations: the folder of official split files (ucfTrainTestlist/, testTrainMulti_7030_splits/).
        split: official split, 1 to 3.
        train: the training part (else the test part).
        frames, size, target_fps, backend: as for :class:`~permgym.data.video_dataset.VideoClipDataset`.
        folder_split: ``"folder"`` only: the ``train`` part of a :class:`FolderSplit` (every 5th video of each class
            is a test video) instead of the whole tree.

    Raises:
        ValueError: an unknown name, missing ``annotations``, or ``annotations`` given to ``"folder"``.
        FileNotFoundError: missing files (the message names the path and the expected layout).
    """
    common = {"frames": frames, "size": size, "target_fps": target_fps, "backend": backend}
    if name == "folder":
        if annotations is not None:
            raise ValueError("a folder tree has no official split files: drop --annotations")
        folder = VideoFolder(root, **common)
        return FolderSplit(folder, train) if folder_split else folder
    if name not in VIDEO_DATASETS:
        raise ValueError(f"unknown video dataset {name!r}; choose one of {', '.join(VIDEO_DATASETS)}")
    if annotations is None:
        raise ValueError(f"{name} needs --annotations (the folder of official split files)")
    kind = UCF101 if name == "ucf101" else HMDB51
    return kind(root, annotations, split=split, train=train, **common)
