"""Tiny image datasets in their official layouts, written for tests (PASCAL VOC 2007, a class-per-folder tree)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from permgym.data.voc import VOC_CLASSES

#: image id -> objects (class, difficult, truncated); trainval ids first, then test ids.
VOC_OBJECTS: dict[str, list[tuple[str, bool, bool]]] = {
    "000005": [("chair", False, True), ("chair", True, False)],
    "000007": [("car", False, True)],
    "000009": [("horse", False, False), ("person", False, True), ("person", True, False)],
    "000012": [("car", True, False)],  # only difficult: label 0
    "000016": [("bicycle", False, False), ("dog", False, False)],
    "000017": [("person", False, False), ("horse", False, False)],
    "000001": [("dog", False, False), ("person", False, False)],
    "000002": [("train", False, False)],
    "000003": [("sofa", False, False), ("chair", True, True)],
    "000004": [("car", False, True), ("car", False, False)],
    "000006": [("pottedplant", False, False), ("diningtable", False, False), ("chair", False, True)],
    "000008": [("chair", False, False)],
}
VOC_SPLITS = {"trainval": list(VOC_OBJECTS)[:6], "test": list(VOC_OBJECTS)[6:]}


def _xml(image_id: str, objects: list[tuple[str, bool, bool]], width: int, height: int) -> str:
    body = "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>{int(truncated)}"
        f"</truncated>\n\t\t<difficult>{int(difficult)}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>2</xmin>\n\t\t\t"
        f"<ymin>3</ymin>\n\t\t\t<xmax>{width - 1}</xmax>\n\t\t\t<ymax>{height - 2}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for name, difficult, truncated in objects
    )
    return (
        f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{image_id}.jpg</filename>\n\t<size>\n\t\t<width>"
        f"{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"
        f"{body}</annotation>\n"
    )


def write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def make_voc(root: Path, width: int = 40, height: int = 30) -> Path:
    """``root/VOCdevkit/VOC2007`` in the official layout, CRLF line endings as in the distributed files; returns it.

    Per-class files list every image of the split with ``1`` / ``-1`` / ``0`` exactly as the devkit derives them from
    the annotations (the fixture's objects cover all three). Images are ``width x height`` (not square) JPEGs.
    """
    voc = root / "VOCdevkit" / "VOC2007"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    for i, (image_id, objects) in enumerate(VOC_OBJECTS.items()):
        write_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", width, height, i)
        (voc / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, objects, width, height))
    main = voc / "ImageSets" / "Main"
    for split, ids in {**VOC_SPLITS, "train": VOC_SPLITS["trainval"][:3], "val": VOC_SPLITS["trainval"][3:]}.items():
        (main / f"{split}.txt").write_bytes("".join(f"{i}\r\n" for i in ids).encode())
        for name in VOC_CLASSES:
            lines = []
            for image_id in ids:
                flags = [difficult for cls, difficult, _ in VOC_OBJECTS[image_id] if cls == name]
                label = -1 if not flags else (1 if not all(flags) else 0)
                lines.append(f"{image_id} {label:2d}\r\n")  # the devkit pads: "000005 -1", "000007  1"
            (main / f"{name}_{split}.txt").write_bytes("".join(lines).encode())
    return voc


def make_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 10) -> Path:
    """``root/<class>/<k>.png`` (and a few .jpg), ``per_class`` images each, of differing sizes; returns ``root``."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            suffix = ".jpg" if k % 3 == 0 else ".png"
            pixels = np.full((20 + k, 24, 3), 60 * c + 5 * k, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{k:02d}{suffix}")
    return root
