"""Tiny copies of the retrieval datasets in their official layouts (a few 8x8 JPEGs each), for tests.

Each ``make_*`` writes under ``root`` and returns the folder to pass as the dataset's ``root``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def write_jpeg(path: Path, seed: int) -> None:
    """An 8x8 RGB JPEG whose colour depends on ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = tuple(int(c) for c in np.random.default_rng(seed).integers(0, 256, 3))
    Image.new("RGB", (8, 8), colour).save(path, "JPEG")


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# CUB: class id -> number of images; classes 1-100 are train, 101-200 test.
CUB_CLASSES = {1: 3, 2: 2, 100: 2, 101: 2, 150: 1, 200: 3}


def make_cub(root: Path) -> Path:
    """``CUB_200_2011/`` with ``images.txt``, ``image_class_labels.txt`` and ``images/``; returns its parent."""
    base = root / "CUB_200_2011"
    images, labels = [], []
    for class_id, count in CUB_CLASSES.items():
        for j in range(count):
            image_id = len(images) + 1
            rel = f"{class_id:03d}.Bird_{class_id}/Bird_{class_id}_{j:04d}.jpg"
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {class_id}")
            write_jpeg(base / "images" / rel, image_id)
    write_lines(base / "images.txt", images)
    write_lines(base / "image_class_labels.txt", labels)
    return root


# CARS196: (class id, official test flag) per image; classes 1-98 are train, 99-196 test whatever the flag.
CARS_IMAGES = [(1, 0), (1, 1), (2, 0), (98, 1), (99, 0), (99, 1), (150, 0), (196, 1), (196, 0)]


def make_cars(root: Path) -> Path:
    """``cars_annos.mat`` (the official struct layout, written by ``scipy.io.savemat``) and ``car_ims/``."""
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = np.zeros((1, len(CARS_IMAGES)), dtype=[(f, "O") for f in fields])
    for i, (class_id, test) in enumerate(CARS_IMAGES):
        rel = f"car_ims/{i + 1:06d}.jpg"
        write_jpeg(root / rel, i)
        box = [np.array([[v]], dtype=np.uint16) for v in (1, 1, 7, 7)]
        annotations[0, i] = (np.array([rel]), *box, np.array([[class_id]], np.uint8), np.array([[test]], np.uint8))
    class_names = np.empty((1, 196), dtype=object)
    for c in range(196):
        class_names[0, c] = np.array([f"Make Model {c + 1}"])
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return root


# SOP: (class id, super class id) per image; train classes 1-11318, test 11319-22634.
SOP_TRAIN = [(1, 1), (1, 1), (2, 1), (2, 1), (3, 2), (3, 2)]
SOP_TEST = [(11319, 1), (11319, 1), (11320, 5), (11320, 5), (11320, 5)]
SOP_SUPER = {1: "bicycle_final", 2: "cabinet_final", 5: "kettle_final"}


def make_sop(root: Path) -> Path:
    """``Stanford_Online_Products/`` with ``Ebay_train.txt``, ``Ebay_test.txt`` and images; returns its parent."""
    base = root / "Stanford_Online_Products"
    image_id = 0
    for split, rows in (("train", SOP_TRAIN), ("test", SOP_TEST)):
        lines = ["image_id class_id super_class_id path"]
        for j, (class_id, super_id) in enumerate(rows):
            image_id += 1
            rel = f"{SOP_SUPER[super_id]}/{class_id}_{j}.JPG"
            lines.append(f"{image_id} {class_id} {super_id} {rel}")
            write_jpeg(base / rel, image_id)
        write_lines(base / f"Ebay_{split}.txt", lines)
    return root


# In-shop: (item id, status) per image; query and gallery share items, id 5 is gallery-only.
INSHOP_IMAGES = [
    (1, "train"), (1, "train"), (2, "train"), (2, "train"), (2, "train"),
    (3, "query"), (3, "gallery"), (3, "gallery"),
    (4, "query"), (4, "query"), (4, "gallery"),
    (5, "gallery"),
]  # fmt: skip


def make_inshop(root: Path) -> Path:
    """``Eval/list_eval_partition.txt`` (count line, header line, rows) and ``img/``; returns the benchmark folder."""
    lines = [str(len(INSHOP_IMAGES)), "image_name item_id evaluation_status"]
    for j, (item, status) in enumerate(INSHOP_IMAGES):
        rel = f"img/WOMEN/Dresses/id_{item:08d}/{j:02d}_1_front.jpg"
        lines.append(f"{rel} id_{item:08d} {status}")
        write_jpeg(root / rel, j)
    write_lines(root / "Eval" / "list_eval_partition.txt", lines)
    return root


# VehicleID: list file -> (image name, vehicle id) rows.
VEHICLEID_LISTS = {
    "train_list.txt": [("0001", 10), ("0002", 10), ("0003", 11), ("0004", 11)],
    "test_list_800.txt": [("0005", 20), ("0006", 20), ("0007", 21), ("0008", 21)],
    "test_list_1600.txt": [("0005", 20), ("0006", 20), ("0007", 21), ("0008", 21), ("0009", 22), ("0010", 22)],
    "test_list_2400.txt": [("0005", 20), ("0006", 20), ("0007", 21), ("0008", 21), ("0009", 22), ("0010", 22),
                           ("0011", 23), ("0012", 23), ("0013", 23)],
}  # fmt: skip


def make_vehicleid(root: Path) -> Path:
    """``VehicleID_V1.0/`` with ``train_test_split/*.txt`` and ``image/``; returns its parent."""
    base = root / "VehicleID_V1.0"
    for listing, rows in VEHICLEID_LISTS.items():
        write_lines(base / "train_test_split" / listing, [f"{name} {vehicle}" for name, vehicle in rows])
        for name, _ in rows:
            write_jpeg(base / "image" / f"{name}.jpg", int(name))
    return root


FOLDER_CLASSES = ["ant", "bee", "cat", "dog"]


def make_folder(root: Path) -> Path:
    """``root/<class>/<image>.jpg``, two images per class, plus a non-image file that must be ignored."""
    for c, name in enumerate(FOLDER_CLASSES):
        for j in range(2):
            write_jpeg(root / name / f"{j}.jpg", 10 * c + j)
    (root / "ant" / "notes.txt").write_text("not an image\n")
    return root
