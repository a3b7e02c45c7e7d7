"""One dispatch from a dataset name to its video dataset, shared by ``permgym.data.prepare`` and the experiments, and
the experiments' frame caches of a dataset's train/test parts (:func:`cache_path`, :func:`open_frame_cache`)."""

from __future__ import annotations

from pathlib import Path

from permgym.data.cache import FrameCache, load_or_build_cache
from permgym.data.folder import FolderSplit, VideoFolder
from permgym.data.hmdb51 import HMDB51
from permgym.data.ucf101 import UCF101
from permgym.data.video import Backend, Size
from permgym.data.video_dataset import VideoClipDataset
from permgym.distributed import World, broadcast_object

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
    if Path(annotations).exists() and not Path(annotations).is_dir():
        raise ValueError(
            f"--annotations {str(annotations)!r} is a file; give the folder of {name}'s official split files"
        )
    kind = UCF101 if name == "ucf101" else HMDB51
    return kind(root, annotations, split=split, train=train, **common)


def cache_path(cache_dir: str | Path, dataset: str, subset: str, *, split: int, frames: int, frame_size: int) -> Path:
    """The folder of the frame cache of ``subset`` (``"train"`` or ``"test"``) of a dataset under ``cache_dir``."""
    part = f"split{split}_" if dataset != "folder" else ""
    return Path(cache_dir) / f"{dataset}_{part}{subset}_{frames}f_{frame_size}px"


def open_frame_cache(
    dataset: str,
    root: str | Path,
    annotations: str | Path | None,
    path: Path,
    world: World,
    *,
    subset: str,
    split: int,
    frames: int,
    frame_size: int,
    workers: int = 0,
    progress: bool = True,
) -> FrameCache:
    """The frame cache of ``subset`` of a video dataset: rank 0 builds (or reuses) it, then every rank opens it; if
    rank 0 fails, every rank stops. A ``"folder"`` tree is split by :class:`FolderSplit`.

    Raises:
        ValueError: the videos or split files are missing, or the cache folder holds another config.
    """
    error = None
    if world.is_main:
        try:
            videos = build_video_dataset(dataset, root, annotations, split=split, train=subset == "train",
                                         frames=frames, size=(frame_size, frame_size), folder_split=True)  # fmt: skip
            print(f"{subset}: {videos!r}")
            cache = load_or_build_cache(videos, path, workers=workers, progress=progress,
                                        how_to_replace="choose another --cache-dir (or delete that cache)")  # fmt: skip
        except (FileNotFoundError, ValueError) as err:
            error = str(err)
        else:
            counts = cache.index["counts"]
            print(
                f"{subset} cache {path}: {counts['cached']} of {counts['listed']} videos, {counts['skipped']} skipped"
            )
            for video, reason in list(cache.skipped.items())[:5]:
                print(f"  skipped {video}: {reason.splitlines()[0] if reason else ''}")
    error = broadcast_object(error)  # also the barrier: the other ranks wait for the cache
    if error is not None:
        raise ValueError(error)
    return FrameCache(path)
