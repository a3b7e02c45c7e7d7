"""Frame cache: a video dataset decoded once into a uint8 memory-mapped store, read back as a Dataset.

A cache folder holds

* ``clips.u8``: raw uint8 array ``[N, T, 3, H, W]`` (C order), one row per decoded clip;
* ``index.json``: ``format``, ``shape``, ``config`` (the dataset's ``config()``: dataset name, root, annotation
  file, split, frames, size, sampling rate), ``classes``, ``labels`` and ``videos`` (one per row), ``skipped``
  (``{path: reason}`` of videos left out) and ``counts`` (listed, cached, skipped).

``build_frame_cache`` writes into ``<out>.partial/`` (resumable: rows already decoded are kept when it is re-run
with the same config) and renames it to ``<out>`` when complete, so a cache folder is always whole. It only ever
writes into, or replaces, a folder that is new, empty or a frame cache: a folder holding anything else (a user's
files, a video tree) is refused before any work starts, never deleted.
``load_or_build_cache`` reuses a cache only when its stored config equals the dataset's.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from permgym.data.errors import VideoDecodeError, require_path
from permgym.data.video_dataset import Transform

FORMAT = 1
CLIPS_FILE, INDEX_FILE, PROGRESS_FILE = "clips.u8", "index.json", "progress.json"
#: Every file a cache folder or its ``.partial`` sibling may hold; a folder holding anything else is not replaced.
CACHE_FILES = frozenset({CLIPS_FILE, INDEX_FILE, PROGRESS_FILE, INDEX_FILE + ".tmp", PROGRESS_FILE + ".tmp"})
HOW_TO_BUILD = (
    "Build one with `python -m permgym.data.prepare {ucf101,hmdb51,folder} --root ... --out DIR` or "
    "permgym.data.cache.build_frame_cache(dataset, DIR)."
)


class CacheableDataset(Protocol):
    """What ``build_frame_cache`` needs: a ``VideoClipDataset`` (UCF101, HMDB51, VideoFolder) provides it."""

    videos: list[str]
    labels: torch.Tensor
    classes: list[str]
    skipped: dict[str, str]
    frames: int
    size: Any
    temporal_jitter: bool
    transform: Any

    def config(self) -> dict[str, Any]: ...

    def load_clip(self, index: int) -> torch.Tensor: ...

    def __len__(self) -> int: ...


class FrameCache(Dataset):
    """A cache folder written by ``build_frame_cache``, as a Dataset like the video datasets and SyntheticActions.

    Args:
        path: the cache folder (holding ``clips.u8`` and ``index.json``).
        transform: optional callable applied to each ``[T, 3, H, W]`` uint8 clip.

    Attributes:
        clips: ``[N, T, 3, H, W]`` uint8 tensor backed by a copy-on-write memory map of ``clips.u8`` (pages are
            read on demand; writes to it never reach the file).
        labels: ``[N]`` int64 tensor of class ids.
        classes: class names, indexed by label; ``class_names`` is an alias.
        videos: source video of each row.
        config: the config of the dataset that built the cache.
        skipped: ``{path: reason}`` of the videos that were left out when building it.

    ``cache[i]`` returns ``(clip, label)``: ``clip`` a ``[T, 3, H, W]`` uint8 tensor, ``label`` an int.
    Pickling (e.g. to DataLoader workers under spawn) sends the path, not the pixels.
    """

    def __init__(self, path: str | Path, transform: Transform | None = None) -> None:
        self.path = Path(path)
        self.transform = transform
        index = json.loads(require_path(self.path / INDEX_FILE, "frame cache index", HOW_TO_BUILD).read_text())
        if index.get("format") != FORMAT:
            raise ValueError(
                f"frame cache {str(self.path)!r} has format {index.get('format')!r}, this version reads format "
                f"{FORMAT}; rebuild it (load_or_build_cache(..., rebuild=True) or prepare --rebuild)"
            )
        self.index = index
        self.config: dict[str, Any] = index["config"]
        self.classes: list[str] = index["classes"]
        self.videos: list[str] = index["videos"]
        self.skipped: dict[str, str] = index["skipped"]
        self.labels = torch.tensor(index["labels"], dtype=torch.int64)
        self.clips = self._map_clips()

    def _map_clips(self) -> torch.Tensor:
        shape = tuple(self.index["shape"])
        clips_path = require_path(self.path / CLIPS_FILE, "frame cache data", HOW_TO_BUILD)
        expected = int(np.prod(shape))
        if clips_path.stat().st_size != expected:
            raise ValueError(
                f"{str(clips_path)!r} has {clips_path.stat().st_size} bytes, index.json expects {expected} "
                f"(shape {list(shape)}): the cache is damaged; rebuild it"
            )
        return torch.from_numpy(np.memmap(clips_path, dtype=np.uint8, mode="c", shape=shape))

    @property
    def class_names(self) -> list[str]:
        """Alias of ``classes``."""
        return self.classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = self.clips[index]
        if self.transform is not None:
            clip = self.transform(clip)
        return clip, int(self.labels[index])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["clips"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.clips = self._map_clips()

    def __repr__(self) -> str:
        _, frames, _, height, width = self.index["shape"]
        return (
            f"FrameCache(path={str(self.path)!r}, clips={len(self)}, classes={len(self.classes)}, frames={frames}, "
            f"size=({height}, {width}), skipped={len(self.skipped)}, dataset={self.config.get('dataset')!r})"
        )


# ---- building ------------------------------------------------------------------------------------------------

_worker_dataset: CacheableDataset | None = None  # set once per worker process by _init_worker


def _init_worker(dataset: CacheableDataset) -> None:
    global _worker_dataset
    _worker_dataset = dataset


def _decode(index: int, dataset: CacheableDataset | None = None) -> tuple[int, np.ndarray | None, str | None]:
    """Decode clip ``index`` of ``dataset`` (default: the worker's): ``(index, [T, 3, H, W] uint8 | None, error)``."""
    dataset = _worker_dataset if dataset is None else dataset
    assert dataset is not None, "_init_worker was not called"
    try:
        return index, dataset.load_clip(index).numpy(), None
    except VideoDecodeError as err:
        return index, None, err.reason


def _decode_all(
    dataset: CacheableDataset, pending: list[int], workers: int
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """Yield ``_decode`` results for ``pending``, in completion order when ``workers > 0``.

    At most ``2 * workers`` clips are in flight, so memory stays bounded and an interrupt stops quickly.
    """
    if workers == 0:
        yield from (_decode(i, dataset) for i in pending)
        return
    todo = iter(pending)
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(dataset,)) as pool:
        in_flight = {pool.submit(_decode, i) for i in itertools.islice(todo, 2 * workers)}
        while in_flight:
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                in_flight |= {pool.submit(_decode, i) for i in itertools.islice(todo, 1)}
                yield future.result()


def _check_cacheable(dataset: CacheableDataset) -> tuple[int, ...]:
    """The row shape ``(T, 3, H, W)``; raise ``ValueError`` if the dataset's clips are random or variable."""
    if dataset.transform is not None or dataset.temporal_jitter:
        raise ValueError(
            "build_frame_cache stores deterministic raw clips: build the dataset with transform=None and "
            "temporal_jitter=False, and give the transform to FrameCache(path, transform=...) instead"
        )
    if not isinstance(dataset.size, tuple | list):
        raise ValueError(
            f"build_frame_cache needs one exact frame size for all clips, got size={dataset.size!r}; "
            "build the dataset with size=(height, width), e.g. size=(128, 128)"
        )
    return (dataset.frames, 3, int(dataset.size[0]), int(dataset.size[1]))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def check_replaceable(folder: Path, what: str = "frame cache") -> None:
    """Refuse to write a cache into ``folder`` when it holds anything but cache files.

    Args:
        folder: the cache folder (or its ``.partial`` sibling) about to be created or replaced.
        what: how the error names the folder.

    Raises:
        ValueError: ``folder`` is a file, or a folder holding other files (named in the message); it is left as is.
    """
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"{what} folder {str(folder)!r} is a file; choose another --out")
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in CACHE_FILES or not p.is_file())
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ValueError(
            f"{what} folder {str(folder)!r} is not empty and is not a frame cache (it holds {shown}); nothing was "
            "written: choose a new or empty folder for the cache"
        )


def _remove_cache_folder(folder: Path) -> None:
    """Delete a folder that ``check_replaceable`` accepted (cache files only), file by file."""
    check_replaceable(folder)
    if folder.exists():
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def _start_partial(partial: Path, config: dict[str, Any], nbytes: int) -> dict[str, str | None]:
    """Open ``partial`` for building: ``{row: error or None}`` of rows already done by an interrupted build."""
    progress_path = partial / PROGRESS_FILE
    if progress_path.exists():
        progress = json.loads(progress_path.read_text())
        if progress["config"] == config and (partial / CLIPS_FILE).stat().st_size == nbytes:
            return progress["done"]
    _remove_cache_folder(partial)
    try:
        partial.mkdir(parents=True)
    except OSError as err:  # e.g. a file where a parent folder should be
        raise ValueError(f"cannot create the frame cache folder {str(partial)!r} ({err.strerror}); choose another "
                         "folder for the cache") from None  # fmt: skip
    with open(partial / CLIPS_FILE, "wb") as f:
        f.truncate(nbytes)  # sparse file: no disk written until rows are
    _write_json(progress_path, {"config": config, "done": {}})
    return {}


def build_frame_cache(
    dataset: CacheableDataset,
    out_dir: str | Path,
    *,
    workers: int = 0,
    progress: bool = True,
    save_every_s: float = 30.0,
) -> FrameCache:
    """Decode every clip of ``dataset`` once and store them as a frame cache in ``out_dir``.

    Videos that fail to decode are left out and recorded with their reason in ``index.json`` (``skipped``,
    ``counts``), together with the videos the dataset already found missing. An interrupted build resumes from
    ``<out_dir>.partial`` when re-run with the same dataset config. An existing ``out_dir`` is replaced only when it
    is empty or a frame cache; any other existing folder is refused before decoding starts.

    Args:
        dataset: a ``VideoClipDataset`` built with ``size=(H, W)``, ``transform=None`` and
            ``temporal_jitter=False``.
        out_dir: the cache folder to write.
        workers: decoding processes; 0 decodes in this process.
        progress: show a tqdm progress bar.
        save_every_s: how often (seconds) the resume point is saved.

    Returns:
        The new cache: ``clips`` ``[N_ok, T, 3, H, W]`` uint8, ``labels`` ``[N_ok]`` int64.

    Raises:
        ValueError: the dataset cannot be cached (see above), ``out_dir`` or ``<out_dir>.partial`` holds files that
            are not a frame cache's, or no video could be decoded.
    """
    shape = _check_cacheable(dataset)
    config = dataset.config()
    out_dir = Path(out_dir)
    check_replaceable(out_dir)
    partial = Path(os.path.abspath(out_dir))  # "." or "..": the folder's own name
    partial = partial.with_name(partial.name + ".partial")
    check_replaceable(partial, "partial frame cache")
    n, row_bytes = len(dataset), int(np.prod(shape))
    done = _start_partial(partial, config, n * row_bytes)
    clips = np.memmap(partial / CLIPS_FILE, dtype=np.uint8, mode="r+", shape=(n, *shape))
    pending = [i for i in range(n) if str(i) not in done]
    desc = f"caching {config['dataset']}"
    bar = tqdm(total=n, initial=n - len(pending), desc=desc, unit="clip", disable=not progress)
    last_save = time.monotonic()
    try:
        for index, clip, error in _decode_all(dataset, pending, workers):
            if clip is not None:
                clips[index] = clip
            done[str(index)] = error
            bar.update()
            if time.monotonic() - last_save > save_every_s:
                clips.flush()
                _write_json(partial / PROGRESS_FILE, {"config": config, "done": done})
                last_save = time.monotonic()
    finally:
        bar.close()
        clips.flush()
        _write_json(partial / PROGRESS_FILE, {"config": config, "done": done})
        del clips  # unmap before compacting through a fresh map
    return _finish(partial, out_dir, dataset, config, done, shape)


def _finish(
    partial: Path,
    out_dir: Path,
    dataset: CacheableDataset,
    config: dict[str, Any],
    done: dict[str, str | None],
    shape: tuple[int, ...],
) -> FrameCache:
    """Compact the good rows to the front, write ``index.json`` and move ``partial`` to ``out_dir``."""
    good = [i for i in range(len(dataset)) if done[str(i)] is None]
    if not good:
        raise ValueError(f"none of the {len(dataset)} videos could be decoded; reasons in {partial / PROGRESS_FILE}")
    (partial / PROGRESS_FILE).unlink()  # rows move now: an interrupted compaction must not be resumed
    clips = np.memmap(partial / CLIPS_FILE, dtype=np.uint8, mode="r+", shape=(len(dataset), *shape))
    for row, i in enumerate(good):  # row <= i: moving rows forward in order never overwrites one still needed
        if row != i:
            clips[row] = clips[i]
    clips.flush()
    del clips
    with open(partial / CLIPS_FILE, "r+b") as f:
        f.truncate(len(good) * int(np.prod(shape)))
    listed = set(dataset.videos)
    missing = {path: reason for path, reason in dataset.skipped.items() if path not in listed}
    failed = {dataset.videos[i]: done[str(i)] for i in range(len(dataset)) if done[str(i)] is not None}
    skipped = {**missing, **failed}
    index = {
        "format": FORMAT,
        "shape": [len(good), *shape],
        "config": config,
        "classes": list(dataset.classes),
        "labels": [int(dataset.labels[i]) for i in good],
        "videos": [dataset.videos[i] for i in good],
        "skipped": skipped,
        "counts": {"listed": len(dataset) + len(missing), "cached": len(good), "skipped": len(skipped)},
    }
    _write_json(partial / INDEX_FILE, index)
    _remove_cache_folder(out_dir)
    os.replace(partial, out_dir)
    return FrameCache(out_dir)


def load_or_build_cache(
    dataset: CacheableDataset,
    out_dir: str | Path,
    *,
    workers: int = 0,
    rebuild: bool = False,
    progress: bool = True,
    how_to_replace: str = "use another folder or rebuild=True (prepare --rebuild) to replace it",
) -> FrameCache:
    """Return the frame cache of ``dataset`` in ``out_dir``, building it first if needed.

    An existing cache is reused only if its stored config equals ``dataset.config()``.

    Args:
        dataset: see ``build_frame_cache``.
        out_dir: the cache folder.
        workers: decoding processes for a build; 0 decodes in this process.
        rebuild: replace an existing cache even if (or because) its config differs.
        progress: show a progress bar while building.
        how_to_replace: the end of the error for a cache of another config: what the caller's user can do.

    Raises:
        ValueError: ``out_dir`` holds a cache of a different config and ``rebuild`` is False; the message lists the
            differing keys.
    """
    out_dir = Path(out_dir)
    if (out_dir / INDEX_FILE).exists() and not rebuild:
        cache = FrameCache(out_dir)
        config = dataset.config()
        if cache.config == config:
            return cache
        keys = sorted(k for k in config.keys() | cache.config.keys() if config.get(k) != cache.config.get(k))
        diff = ", ".join(f"{k}: cached {cache.config.get(k)!r} vs wanted {config.get(k)!r}" for k in keys)
        raise ValueError(f"{str(out_dir)!r} holds a frame cache of another config ({diff}); {how_to_replace}")
    return build_frame_cache(dataset, out_dir, workers=workers, progress=progress)
