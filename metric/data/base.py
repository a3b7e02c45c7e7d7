"""Shared pieces of the retrieval datasets: annotation parsing, relabelling, the image-list base class."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from metric.data.transforms import default_transform
from permgym.data.images import check_image, to_rgb

Transform = Callable[[Any], Any]


class Annotations(NamedTuple):
    """One split as its annotation files describe it."""

    paths: list[Path]  # image file of every item
    class_ids: list[Hashable]  # the dataset's own class id of every item
    names: dict[Hashable, str] | None = None  # display name per class id (default ``str(id)``)
    universe: Sequence[Hashable] | None = None  # class ids that share the label space (default: this split's)


def require_split(dataset: str, split: str, splits: Sequence[str]) -> None:
    """Refuse a ``split`` name that is not one of ``splits``.

    Raises:
        ValueError: ``{dataset}: split must be one of (...), got '...'``.
    """
    if split not in splits:
        raise ValueError(f"{dataset}: split must be one of {tuple(splits)}, got {split!r}")


def read_rows(path: Path, columns: int, skip: int = 0) -> list[list[str]]:
    """Whitespace-separated rows of an annotation file, as distributed.

    Args:
        path: the file.
        columns: fields every row must have.
        skip: header lines to skip.

    Raises:
        ValueError: a row has another number of fields (names the file and line), or the file is not UTF-8 text.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:  # a damaged or wrong file in the annotation's place
        raise ValueError(f"{path} is not a UTF-8 text file (byte {err.start}: {err.reason}); restore it from the "
                         "dataset's archive") from None  # fmt: skip
    rows = []
    for number, line in enumerate(text.splitlines()[skip:], start=skip + 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != columns:
            raise ValueError(f"{path}:{number}: expected {columns} fields, got {len(fields)}: {line!r}")
        rows.append(fields)
    return rows


def relabel(
    raw: Sequence[Hashable], names: dict[Hashable, str] | None = None, universe: Sequence[Hashable] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Map class ids to contiguous labels ``0..C-1`` in sorted id order.

    Args:
        raw: the class id of every item.
        names: optional display name per id (default ``str(id)``).
        universe: the ids to number (default: those in ``raw``), e.g. In-shop's query and gallery ids together.

    Returns:
        ``(labels, classes)``: ``[N]`` int64 labels and the ``C`` class names in label order.
    """
    ids = sorted(set(raw if universe is None else universe))
    index = {c: i for i, c in enumerate(ids)}
    labels = np.fromiter((index[c] for c in raw), dtype=np.int64, count=len(raw))
    return labels, [names[c] if names else str(c) for c in ids]


class RetrievalImageDataset(Dataset):
    """A list of image files with 0-based class labels, read from a dataset's official annotation files.

    Subclasses set the class attributes and implement :meth:`_read_split`. ``root`` may be the dataset folder
    itself or its parent holding ``base_folder``.

    ``dataset[i]`` returns ``(transform(image), label)``: with the default transform a ``[3, H, W]`` float tensor,
    ImageNet-normalised, and an ``int`` in ``[0, len(classes))``.

    Every listed image is decoded once when the dataset is built (:func:`check_image`); images that do not decode
    (truncated, empty, not an image) are left out and counted, as undecodable videos are. A listed image that is
    missing is an error (``FileNotFoundError`` naming it, the count and the expected layout).

    Attributes:
        paths: image file of every item.
        labels: ``[N]`` int64 labels, contiguous from 0 within the split (for samplers).
        classes: class names in label order.
        skipped: ``{path: reason}`` of the listed images left out.
    """

    splits: tuple[str, ...] = ("train", "test")
    base_folder = ""  # the folder the archive extracts to, if it has a fixed name
    marker = ""  # an annotation file that identifies the dataset folder
    layout = ""  # the expected files, for error messages
    source = ""  # where to get the data

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        name = type(self).__name__
        require_split(name, split, self.splits)
        self.root = self._locate(Path(root))
        self.split = split
        self.transform = default_transform() if transform is None else transform
        annotations = self._read_split(self.root, split)
        if not annotations.paths:
            raise ValueError(f"{name}: no images in split {split!r} of {self.root}")
        reasons = [check_image(path) for path in annotations.paths]
        missing = [path for path, reason in zip(annotations.paths, reasons, strict=True) if reason == "missing"]
        if missing:  # not extracted where the annotations are, or only in part: never train on a silent subset
            raise FileNotFoundError(f"{len(missing)} of the {len(reasons)} images listed for split {split!r} are "
                                    f"missing. {self._missing(missing[0])}")  # fmt: skip
        self.skipped = {str(p): r for p, r in zip(annotations.paths, reasons, strict=True) if r is not None}
        keep = [i for i, reason in enumerate(reasons) if reason is None]
        if not keep:
            raise ValueError(f"{name}: none of the {len(reasons)} images of split {split!r} decodes, e.g. "
                             f"{next(iter(self.skipped.items()))}")  # fmt: skip
        self.paths = [annotations.paths[i] for i in keep]
        kept_ids = [annotations.class_ids[i] for i in keep]
        self.labels, self.classes = relabel(kept_ids, annotations.names, annotations.universe)

    def _read_split(self, root: Path, split: str) -> Annotations:
        """Parse the annotation files of ``split``."""
        raise NotImplementedError

    def _locate(self, root: Path) -> Path:
        for candidate in (root, root / self.base_folder) if self.base_folder else (root,):
            if (candidate / self.marker).is_file():
                return candidate
        raise FileNotFoundError(self._missing(root / self.marker))

    def _missing(self, path: Path) -> str:
        where = f"root (or root/{self.base_folder})" if self.base_folder else "root"
        return (
            f"{type(self).__name__}: {path} not found. Expected the official layout under {where}:\n"
            f"{self.layout}\nGet the data from {self.source}."
        )

    def require(self, path: Path) -> Path:
        """``path`` if it is a file, else a ``FileNotFoundError`` describing the expected layout."""
        if not path.is_file():
            raise FileNotFoundError(self._missing(path))
        return path

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        with Image.open(self.paths[i]) as image:
            return self.transform(to_rgb(image)), int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, images={len(self)}, classes={len(self.classes)}, "
            f"skipped={len(self.skipped)}, root={str(self.root)!r})"
        )
