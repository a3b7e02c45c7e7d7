"""Labelled still images for classification transfer: the common interface, file checks and a class-per-folder tree.

Every image dataset here (:class:`permgym.data.voc.VOC2007`, :class:`ImageFolderClassification`,
:class:`permgym.data.synthetic_images.SyntheticObjects`) is an :class:`ImageSet`: ``dataset[i]`` returns
``(image, target)`` with ``image`` a ``[3, H, W]`` uint8 tensor at the file's own size (not square in general) and
``target`` a ``[C]`` int8 tensor in VOC's coding (``1`` present, ``-1`` absent, ``0`` difficult: ignored by the AP
and the loss). Single-label datasets use ``1`` for the class and ``-1`` elsewhere. Resizing and cropping belong to
:mod:`permgym.image_transfer`.

Files that cannot be decoded (empty, not an image, a JPEG cut short) are found when the dataset is built, skipped and
listed in ``skipped`` (path -> reason), as the video datasets skip undecodable videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset


def check_image(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None if it decodes.

    The whole file is decoded (JPEGs at 1/8 scale, which still reads every coded byte), so a truncated JPEG, a
    zero-byte file or a text file named ``.png`` are all caught; the pixels are not kept.
    """
    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            image.draft("RGB", (1, 1))  # JPEG: decode at the smallest DCT scale; other formats ignore it
            image.load()
    except UnidentifiedImageError:
        return "not an image PIL can read"
    except (OSError, SyntaxError, ValueError) as err:  # truncated or damaged data
        return f"does not decode: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB: grey, palette, CMYK and alpha images converted as PIL does, 16-bit grey images
    (``I;16`` modes, e.g. 16-bit PNGs) scaled to 8 bits (PIL's own conversion clips them, turning most pixels white)."""
    if image.mode.startswith("I;16"):
        image = Image.fromarray((np.asarray(image).astype(np.uint32) // 257).astype(np.uint8), "L")
    return image.convert("RGB")


def read_image(path: Path) -> torch.Tensor:
    """``[3, H, W]`` uint8 RGB pixels of an image file (grey, palette and 16-bit images converted, :func:`to_rgb`)."""
    with Image.open(path) as image:
        return torch.from_numpy(np.array(to_rgb(image))).permute(2, 0, 1).contiguous()


class ImageSet(Dataset):
    """Images with VOC-coded targets (see the module docstring); subclasses fill the attributes.

    Attributes:
        classes: class names, in target order.
        targets: ``[N, C]`` int8 in ``{1, -1, 0}``.
        multilabel: False when every image has exactly one class (top-1 accuracy is then also reported).
        skipped: files left out, path -> reason.
        split: the split's name.
    """

    classes: list[str]
    targets: torch.Tensor
    multilabel: bool = True
    skipped: dict[str, str]
    split: str

    def image(self, index: int) -> torch.Tensor:
        """``[3, H, W]`` uint8 pixels of image ``index``."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(index), self.targets[index]

    def __repr__(self) -> str:
        skipped = f", skipped={len(self.skipped)}" if self.skipped else ""
        return f"{type(self).__name__}(split={self.split!r}, images={len(self)}, classes={len(self.classes)}{skipped})"


class ImageFiles(ImageSet):
    """An :class:`ImageSet` of image files: checks every file once (:func:`check_image`) and keeps the readable ones.

    Args:
        paths: the image files.
        targets: ``[N, C]`` int8 targets of ``paths``.
        classes: class names.
        split: the split's name.
        multilabel: see :class:`ImageSet`.
    """

    def __init__(
        self, paths: list[Path], targets: torch.Tensor, classes: list[str], split: str, multilabel: bool = True
    ) -> None:
        reasons = [check_image(path) for path in paths]
        keep = torch.tensor([reason is None for reason in reasons], dtype=torch.bool)
        self.skipped = {str(p): r for p, r in zip(paths, reasons, strict=True) if r is not None}
        self.paths = [p for p, k in zip(paths, keep.tolist(), strict=True) if k]
        self.targets = targets[keep]
        self.classes, self.split, self.multilabel = classes, split, multilabel

    def image(self, index: int) -> torch.Tensor:
        return read_image(self.paths[index])


def visible_file(path: str | Path, root: Path, extensions: tuple[str, ...] = IMG_EXTENSIONS) -> bool:
    """A file with one of ``extensions`` (case-insensitive; default: images), not hidden below ``root`` (no part of
    its path starts with ``.``: macOS's ``._name.jpg`` resource forks, files in ``.ipynb_checkpoints/`` or
    ``.git/``)."""
    return str(path).lower().endswith(extensions) and not any(
        part.startswith(".") for part in Path(path).relative_to(root).parts
    )


#: The layout :class:`ImageFolderClassification` expects, for error messages.
FOLDER_LAYOUT = "ROOT/<class>/<image>.jpg (or .png, ...), one folder per class"


class ImageFolderClassification(ImageFiles):
    """A class-per-folder image tree ``root/<class>/<image>`` for single-label classification.

    Hidden folders and files (names starting with ``.``, e.g. ``.ipynb_checkpoints/``) are not classes or images.
    The tree has no official split, so one is made per class: in sorted path order, every ``test_every``-th image of
    each class is a test image, the others train (the split is made on the listing, so it does not move when a file
    turns out unreadable). Every class appears in both splits. (``metric.data.ImageFolderSplit`` splits by class, for
    retrieval, which does not fit classification.)

    Args:
        root: the folder of class folders.
        split: ``"train"`` or ``"test"``.
        test_every: every ``test_every``-th image of a class is a test image (default 5: a 80/20 split).

    Raises:
        FileNotFoundError: ``root`` is not a folder (names the expected layout).
        ValueError: a bad split, fewer than two classes, or a class with no image in the requested split.
    """

    def __init__(self, root: str | Path, split: str = "train", test_every: int = 5) -> None:
        root = Path(root)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if test_every < 2:
            raise ValueError(f"test_every must be >= 2, got {test_every}")
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {str(root)!r}. Expected {FOLDER_LAYOUT}")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(classes) < 2:
            raise ValueError(f"{root} needs >= 2 class folders ({FOLDER_LAYOUT}), found {len(classes)}")
        index = {name: c for c, name in enumerate(classes)}
        items = make_dataset(str(root), index, is_valid_file=lambda path: visible_file(path, root), allow_empty=True)
        rank = {c: 0 for c in range(len(classes))}
        chosen = []
        for path, label in items:
            is_test = rank[label] % test_every == test_every - 1
            rank[label] += 1
            if is_test == (split == "test"):
                chosen.append((Path(path), label))
        empty = sorted(set(classes) - {classes[label] for _, label in chosen})
        if empty:
            raise ValueError(f"classes without a {split} image in {root}: {', '.join(empty)} (each class needs at "
                             f"least {test_every} images: fill those folders or move them out of --root)")  # fmt: skip
        targets = torch.full((len(chosen), len(classes)), -1, dtype=torch.int8)
        targets[torch.arange(len(chosen)), torch.tensor([label for _, label in chosen])] = 1
        super().__init__([path for path, _ in chosen], targets, classes, split, multilabel=False)
        self.root = root
