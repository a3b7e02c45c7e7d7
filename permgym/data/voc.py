"""PASCAL VOC 2007 classification, read from the files as distributed.

Get the data from http://host.robots.ox.ac.uk/pascal/VOC/voc2007/ (``VOCtrainval_06-Nov-2007.tar`` and
``VOCtest_06-Nov-2007.tar``; both extract into ``VOCdevkit/VOC2007``)::

    VOCdevkit/VOC2007/
        JPEGImages/000005.jpg ...                 9,963 images (5,011 trainval + 4,952 test)
        Annotations/000005.xml ...                objects: <name>, <truncated>, <difficult>, <bndbox>
        ImageSets/Main/train.txt val.txt trainval.txt test.txt            one image id per line
        ImageSets/Main/<class>_<split>.txt        "<id> <label>": 1 present, -1 absent, 0 only difficult objects

The classification protocol trains on ``trainval`` and tests on ``test``, scored by the mean over the 20 classes of
the average precision (:mod:`permgym.average_precision`), an image with label ``0`` for a class (all its objects of
that class marked *difficult*) left out of that class's AP.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch

from permgym.data.images import ImageFiles

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
SPLITS = ("train", "val", "trainval", "test")
LAYOUT = (
    "expected VOCdevkit/VOC2007/ with JPEGImages/<id>.jpg, Annotations/<id>.xml and ImageSets/Main/{train,val,"
    "trainval,test}.txt plus <class>_<split>.txt (from http://host.robots.ox.ac.uk/pascal/VOC/voc2007/: "
    "VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar); pass --root VOCdevkit/VOC2007"
)


@dataclass(frozen=True)
class VOCObject:
    """One ``<object>`` of an annotation file: its class, flags and box (pixels, 1-based inclusive as in VOC)."""

    name: str
    difficult: bool
    truncated: bool
    box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax


def locate_root(root: str | Path) -> Path:
    """The ``VOC2007`` folder given it, ``VOCdevkit/`` or the folder holding ``VOCdevkit/``.

    Raises:
        FileNotFoundError: none of them holds ``ImageSets/Main`` (names the expected layout).
    """
    root = Path(root)
    for candidate in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    raise FileNotFoundError(f"no VOC 2007 data at {str(root)!r} (no ImageSets/Main/ there): {LAYOUT}")


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers (CRLF or LF endings; a byte-order mark that an editor added is
    dropped)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}: {LAYOUT}")
    text = path.read_text(encoding="utf-8-sig")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_split(root: Path, split: str) -> list[str]:
    """Image ids of ``ImageSets/Main/<split>.txt`` in file order."""
    return [line.split()[0] for _, line in _lines(root / "ImageSets" / "Main" / f"{split}.txt")]


def read_class_lists(root: Path, split: str, ids: list[str]) -> torch.Tensor:
    """``[N, 20]`` int8 labels of ``ids`` from the per-class files ``<class>_<split>.txt``.

    Raises:
        ValueError: a line is not ``<id> <1|-1|0>``, or a file lists other images than ``<split>.txt`` (names the
            file and line).
    """
    row = {image_id: i for i, image_id in enumerate(ids)}
    labels = torch.zeros(len(ids), len(VOC_CLASSES), dtype=torch.int8)
    for c, name in enumerate(VOC_CLASSES):
        path = root / "ImageSets" / "Main" / f"{name}_{split}.txt"
        seen = set()
        for number, line in _lines(path):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("1", "-1", "0"):
                raise ValueError(f"{path}:{number}: expected '<image id> <1|-1|0>', got {line!r}")
            if fields[0] not in row:
                raise ValueError(f"{path}:{number}: image {fields[0]!r} is not in {split}.txt")
            labels[row[fields[0]], c] = int(fields[1])
            seen.add(fields[0])
        if len(seen) != len(ids):
            missing = next(image_id for image_id in ids if image_id not in seen)
            raise ValueError(f"{path} lists {len(seen)} of the {len(ids)} images of {split}.txt (e.g. not {missing!r})")
    return labels


def parse_annotation(path: Path) -> list[VOCObject]:
    """The objects of one ``Annotations/<id>.xml`` file.

    Raises:
        ValueError: the file is not well-formed XML, or an object's class is not one of the 20 (names the file).
    """
    try:
        tree = ET.parse(path)
    except ET.ParseError as err:
        raise ValueError(f"{path}: not a VOC annotation ({err})") from None
    objects = []
    for element in tree.getroot().iter("object"):
        name = (element.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise ValueError(f"{path}: unknown class {name!r}; VOC 2007 classes are {', '.join(VOC_CLASSES)}")
        box = element.find("bndbox")
        coords = (
            tuple(int(float(box.findtext(k) or 0)) for k in ("xmin", "ymin", "xmax", "ymax"))
            if box is not None
            else (0,) * 4
        )
        objects.append(VOCObject(name, (element.findtext("difficult") or "0").strip() == "1",
                                 (element.findtext("truncated") or "0").strip() == "1", coords))  # fmt: skip
    return objects


def labels_from_objects(objects: list[VOCObject]) -> torch.Tensor:
    """``[20]`` int8 labels as the per-class files code them: 1 if a non-difficult object of the class is present,
    0 if only difficult ones are, -1 otherwise."""
    labels = torch.full((len(VOC_CLASSES),), -1, dtype=torch.int8)
    for obj in objects:
        c = VOC_CLASSES.index(obj.name)
        labels[c] = max(int(labels[c]), 0 if obj.difficult else 1)
    return labels


class VOC2007(ImageFiles):
    """PASCAL VOC 2007 images of one split with their 20 class labels (see the module docstring for the layout).

    ``dataset[i]`` returns ``(image, target)``: ``[3, H, W]`` uint8 at the file's size (VOC images are about
    500 x 375, not square) and ``[20]`` int8 in ``{1, -1, 0}``.

    Args:
        root: ``VOCdevkit/VOC2007`` (or ``VOCdevkit``, or the folder holding it).
        split: ``"train"``, ``"val"``, ``"trainval"`` (the protocol's training set) or ``"test"``.
        labels: ``"lists"`` reads the per-class files ``<class>_<split>.txt`` as distributed; ``"annotations"``
            derives the same coding from ``Annotations/<id>.xml`` (:func:`labels_from_objects`).

    Attributes:
        ids: the image ids kept, in split-file order.
        skipped: unreadable images (empty, not an image, truncated JPEG) left out, path -> reason.

    Raises:
        FileNotFoundError: a missing folder or split file (names the expected layout), or an image named in the
            split file that does not exist (names it).
        ValueError: a malformed split file or annotation, an unknown class in an annotation (names the file).
    """

    def __init__(self, root: str | Path, split: str = "trainval", labels: str = "lists") -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if labels not in ("lists", "annotations"):
            raise ValueError(f"labels must be 'lists' or 'annotations', got {labels!r}")
        self.root = locate_root(root)
        ids = read_split(self.root, split)
        if not ids:
            raise ValueError(f"{self.root / 'ImageSets' / 'Main' / f'{split}.txt'} lists no image")
        images = self.root / "JPEGImages"
        if not images.is_dir():
            raise FileNotFoundError(f"missing {images}: {LAYOUT}")
        paths = [images / f"{image_id}.jpg" for image_id in ids]
        for image_id, path in zip(ids, paths, strict=True):
            if not path.exists():
                raise FileNotFoundError(f"image {image_id!r} of {split}.txt not found: {path} ({LAYOUT})")
        if labels == "lists":
            targets = read_class_lists(self.root, split, ids)
        else:
            targets = torch.stack([labels_from_objects(self.objects(image_id)) for image_id in ids])
        super().__init__(paths, targets, list(VOC_CLASSES), split)
        kept = {str(p) for p in self.paths}
        self.ids = [image_id for image_id, path in zip(ids, paths, strict=True) if str(path) in kept]

    def objects(self, image_id: str) -> list[VOCObject]:
        """The annotated objects of image ``image_id`` (``Annotations/<id>.xml``)."""
        path = self.root / "Annotations" / f"{image_id}.xml"
        if not path.is_file():
            raise FileNotFoundError(f"missing annotation {path}: {LAYOUT}")
        return parse_annotation(path)
