"""metric.data: official layouts parsed exactly, class-disjoint splits, 0-based labels, clear errors."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from metric.data import (
    CUB200,
    Cars196,
    HierarchicalShapes,
    ImageFolderSplit,
    InShop,
    StanfordOnlineProducts,
    SyntheticRetrieval,
    VehicleID,
    build_dataset,
    build_eval_task,
    build_training_data,
)
from metric.data.base import read_rows
from permgym.config import PermSamplingConfig
from permgym.data.synthetic import SyntheticActions
from tests import metric_fixtures as fx


def check_split(dataset, expected_ids: list) -> None:
    """Sizes, 0-based contiguous labels in sorted-id order, items as (float image, int label)."""
    assert len(dataset) == len(expected_ids)
    order = {c: i for i, c in enumerate(sorted(set(expected_ids)))}
    np.testing.assert_array_equal(dataset.labels, [order[c] for c in expected_ids])
    assert dataset.labels.dtype == np.int64
    assert len(dataset.classes) == len(order)
    image, label = dataset[len(dataset) - 1]
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32 and image.shape == (3, 8, 8)
    assert label == dataset.labels[-1] and isinstance(label, int)
    assert type(dataset).__name__ in repr(dataset) and f"images={len(dataset)}" in repr(dataset)


def test_cub_metric_learning_split(tmp_path: Path) -> None:
    root = fx.make_cub(tmp_path)
    ids = [c for c, n in fx.CUB_CLASSES.items() for _ in range(n)]
    train, test = CUB200(root, "train"), CUB200(root / "CUB_200_2011", "test")  # parent or the folder itself
    check_split(train, [c for c in ids if c <= 100])
    check_split(test, [c for c in ids if c > 100])
    assert train.classes == ["001.Bird_1", "002.Bird_2", "100.Bird_100"]
    assert not set(train.classes) & set(test.classes)


def test_cars_reads_the_mat_struct_and_ignores_the_test_flag(tmp_path: Path) -> None:
    root = fx.make_cars(tmp_path)
    ids = [c for c, _ in fx.CARS_IMAGES]
    train, test = Cars196(root, "train"), Cars196(root, "test")
    check_split(train, [c for c in ids if c <= 98])
    check_split(test, [c for c in ids if c > 98])
    assert test.classes == ["Make Model 99", "Make Model 150", "Make Model 196"]
    assert test.paths[0] == root / "car_ims" / "000005.jpg"


def test_sop_files_and_super_labels(tmp_path: Path) -> None:
    root = fx.make_sop(tmp_path)
    train, test = StanfordOnlineProducts(root, "train"), StanfordOnlineProducts(root, "test")
    check_split(train, [c for c, _ in fx.SOP_TRAIN])
    check_split(test, [c for c, _ in fx.SOP_TEST])
    np.testing.assert_array_equal(test.super_labels, [0, 0, 1, 1, 1])
    assert test.paths[2].parts[-2:] == ("kettle_final", "11320_2.JPG")


def test_inshop_query_and_gallery_share_labels(tmp_path: Path) -> None:
    root = fx.make_inshop(tmp_path)
    train, query, gallery = (InShop(root, s) for s in ("train", "query", "gallery"))
    check_split(train, [i for i, s in fx.INSHOP_IMAGES if s == "train"])
    assert len(query) == 3 and len(gallery) == 4
    np.testing.assert_array_equal(query.labels, [0, 1, 1])  # items 3, 4 of the query+gallery items 3, 4, 5
    np.testing.assert_array_equal(gallery.labels, [0, 0, 1, 2])
    assert query.classes == gallery.classes == ["id_00000003", "id_00000004", "id_00000005"]
    task = build_eval_task("inshop", root)
    assert task.protocol == "query-gallery" and len(task.gallery) == 4 and task.ks == (1, 10, 20, 30, 40, 50)
    with pytest.raises(ValueError, match="query and a gallery"):
        build_dataset("inshop", root, "test")


def test_inshop_images_unpacked_inside_img_are_found(tmp_path: Path) -> None:
    """Img/img.zip unzipped where it lies gives Img/img/...: the loader reads the images there."""
    root = fx.make_inshop(tmp_path)
    (root / "Img").mkdir()
    (root / "img").rename(root / "Img" / "img")
    query = InShop(root, "query")
    assert len(query) == 3 and query.skipped == {} and query.paths[0].parts[-6:-4] == ("Img", "img")
    query[0]


@pytest.mark.parametrize("split, listing", [("train", "train_list.txt"), ("small", "test_list_800.txt"),
                                            ("medium", "test_list_1600.txt"), ("large", "test_list_2400.txt")])  # fmt: skip
def test_vehicleid_lists(tmp_path: Path, split: str, listing: str) -> None:
    root = fx.make_vehicleid(tmp_path)
    dataset = VehicleID(root, split)
    check_split(dataset, [v for _, v in fx.VEHICLEID_LISTS[listing]])
    assert dataset.paths[0].name == f"{fx.VEHICLEID_LISTS[listing][0][0]}.jpg"


def test_folder_split_is_class_disjoint(tmp_path: Path) -> None:
    root = fx.make_folder(tmp_path)
    train, test = ImageFolderSplit(root, "train"), ImageFolderSplit(root, "test")
    assert train.classes == ["ant", "bee"] and test.classes == ["cat", "dog"]
    check_split(train, ["ant", "ant", "bee", "bee"])  # notes.txt ignored
    assert ImageFolderSplit(root, "train", train_fraction=0.75).classes == ["ant", "bee", "cat"]
    with pytest.raises(ValueError, match=re.escape("train_fraction must be in (0, 1), got 1.5")):
        ImageFolderSplit(root, "train", train_fraction=1.5)


def test_folder_classes_are_visible_folders_holding_images(tmp_path: Path) -> None:
    """A Jupyter/git/macOS folder or an empty folder is no class: before, they took classes' places in the split."""
    root = fx.make_folder(tmp_path)
    fx.write_jpeg(root / ".ipynb_checkpoints" / "0.jpg", 0)
    (root / ".git").mkdir()
    (root / "aardvark").mkdir()  # empty, sorts first
    (root / "zebra").mkdir()
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "ant" / "._0.jpg").write_bytes(b"\0\5\26\7\0\2\0\0Mac OS X")  # macOS's resource-fork copy
    fx.write_jpeg(root / "ant" / ".ipynb_checkpoints" / "1.jpg", 1)
    fx.write_jpeg(root / "bee" / "day 2" / "2.jpg", 2)  # images in a sub-folder belong to the class, as in ImageFolder
    train, test = ImageFolderSplit(root, "train"), ImageFolderSplit(root, "test")
    assert train.classes == ["ant", "bee"] and test.classes == ["cat", "dog"]
    assert len(train) == 5 and train.skipped == {} and train.paths[-1] == root / "bee" / "day 2" / "2.jpg"
    for name in ("ant", "bee", "cat"):
        (root / name / "0.jpg").unlink()
        (root / name / "1.jpg").unlink()
    (root / "bee" / "day 2" / "2.jpg").unlink()
    with pytest.raises(ValueError, match=re.escape(f"needs >= 2 class folders holding images in {root}, found 1")):
        ImageFolderSplit(root, "train")


def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    from PIL import Image

    grey = np.arange(0, 65536, 257, dtype=np.uint16)[:256].reshape(16, 16)  # 0, 257, ..., 65535
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(grey).save(tmp_path / c / "deep.png")
    assert Image.open(tmp_path / "a" / "deep.png").mode.startswith("I;16")
    image, _ = ImageFolderSplit(tmp_path, "train", transform=np.asarray)[0]
    assert image.shape == (16, 16, 3) and np.array_equal(image[..., 1], grey // 257)  # PIL's convert: 255 from 1


def test_synthetic_split_is_class_disjoint_and_normalised() -> None:
    kwargs = {"num_classes": 6, "videos_per_class": 2, "frames": 4, "size": 16}
    train, test = SyntheticRetrieval(split="train", **kwargs), SyntheticRetrieval(split="test", **kwargs)
    assert train.classes == ["move_E/square", "move_NE/square", "move_N/square"]
    assert not set(train.classes) & set(test.classes)
    for dataset in (train, test):
        assert Counter(dataset.labels.tolist()) == {0: 2, 1: 2, 2: 2} and dataset.labels.dtype == np.int64
    frame, label = test[1]
    assert frame.shape == (3, 16, 16) and frame.dtype == torch.float32 and label == test.labels[1]
    assert frame.min() < 0 < frame.max()  # ImageNet-normalised, not [0, 1]
    clip = SyntheticRetrieval(split="test", mode="clip", **kwargs)[1][0]
    torch.testing.assert_close(clip[2], frame)  # the default frame is the middle one
    assert clip.shape == (4, 3, 16, 16)
    assert "split='test'" in repr(test) and "items=6" in repr(test)
    with pytest.raises(ValueError, match=re.escape("frame must be in [0, 4), got 4")):
        SyntheticRetrieval(frame=4, **kwargs)


def test_synthetic_default_images_are_not_from_the_pretraining_videos() -> None:
    """A clip's nuisances depend on (seed, index) only, so equal seeds would put pretraining videos in the test set."""
    kwargs = {"num_classes": 4, "videos_per_class": 2, "frames": 8, "size": 16}
    test = SyntheticRetrieval(split="test", **kwargs)
    assert test.seed != PermSamplingConfig().data_seed
    same_seed = SyntheticRetrieval(split="test", **kwargs, seed=PermSamplingConfig().data_seed)
    pretraining = SyntheticActions(num_classes=4, num_videos=8, frames=16, size=16, seed=same_seed.seed)
    first = pretraining.indices.tolist().index(int(same_seed.videos.indices[0]))
    corner = (slice(None), slice(0, 2), slice(0, 2))  # background only: the object starts near the centre
    torch.testing.assert_close(same_seed.videos.clips[0][0][corner], pretraining.clips[first][0][corner])
    assert not torch.equal(test.videos.clips[0][0][corner], pretraining.clips[first][0][corner])


def test_build_dataset_and_eval_task() -> None:
    kwargs = {"num_classes": 4, "videos_per_class": 2, "frames": 2, "size": 16}
    train = build_dataset("synthetic", split="train", **kwargs)
    assert isinstance(train, SyntheticRetrieval) and len(train) == 4
    task = build_eval_task("synthetic", **kwargs)
    assert task.protocol == "self" and task.gallery is None and task.query.split == "test"
    metrics = task.evaluate(torch.eye(4), map_at_r=False, nmi=False)
    assert set(metrics) == {"R@1", "R@2", "R@4", "R@8"}
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        build_dataset("mnist")
    with pytest.raises(ValueError, match="dataset 'cub200' needs root="):
        build_dataset("cub200")


def test_missing_files_name_the_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"(?s)images\.txt not found.*CUB_200_2011/image_class_labels\.txt"):
        CUB200(tmp_path)
    root = fx.make_cub(tmp_path)
    (root / "CUB_200_2011" / "image_class_labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)image_class_labels\.txt not found.*vision\.caltech\.edu"):
        CUB200(root)
    fx.make_sop(tmp_path)
    (tmp_path / "Stanford_Online_Products" / "Ebay_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("Ebay_test.txt not found")):
        StanfordOnlineProducts(tmp_path, "test")
    vehicles = fx.make_vehicleid(tmp_path / "vid")
    (vehicles / "VehicleID_V1.0" / "image" / "0001.jpg").unlink()  # the images were not extracted
    with pytest.raises(FileNotFoundError, match=r"(?s)0001\.jpg not found.*image/<image_name>\.jpg"):
        VehicleID(vehicles, "train")
    with pytest.raises(FileNotFoundError, match=re.escape("cars_annos.mat not found")):
        Cars196(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=re.escape("list_eval_partition.txt not found")):
        InShop(tmp_path)
    with pytest.raises(ValueError, match=re.escape("split must be one of ('train', 'small', 'medium', 'large')")):
        VehicleID(vehicles, "test")


def test_missing_images_and_broken_annotations_are_one_clear_error(tmp_path: Path) -> None:
    root = fx.make_cub(tmp_path / "cub")
    base = root / "CUB_200_2011"
    CUB200(root).paths[1].unlink()  # not the first: before, left out silently
    with pytest.raises(
        FileNotFoundError, match=r"(?s)1 of the 7 images listed for split 'train' are missing.*_0001\.jpg not found"
    ):
        CUB200(root)
    with open(base / "image_class_labels.txt", "a") as labels:
        labels.write("999 3\n")
    with pytest.raises(
        ValueError, match=r"image_class_labels\.txt labels 1 image ids that .*images\.txt does not list, e\.g\. '999'"
    ):
        CUB200(root, "test")
    cars = fx.make_cars(tmp_path / "cars")
    for content in (b"", b"not a mat file"):
        (cars / "cars_annos.mat").write_bytes(content)
        with pytest.raises(ValueError, match=r"cars_annos\.mat cannot be read as a MATLAB file"):
            Cars196(cars)
    scipy.io.savemat(cars / "cars_annos.mat", {"annotations": np.zeros((1, 2), dtype=[("fname", "O"), ("class", "O")])})
    with pytest.raises(
        ValueError,
        match=re.escape(
            "is not the official cars_annos.mat: it needs a struct 'annotations' with fields relative_im_path and class, found ['class', 'fname']"
        ),
    ):
        Cars196(cars)


def test_options_that_cannot_give_a_result_are_refused(tmp_path: Path) -> None:
    """Before, --resize was ignored on the embedded data and, below --image-size, padded the test images with black;
    a test set of one class gave R@1 = NMI = 1."""
    root = fx.make_folder(tmp_path)
    assert build_training_data("folder", root, 16, resize=16).task.query[0][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match=re.escape("--resize 8 is below --image-size 16: the evaluation crop")):
        build_training_data("folder", root, 16, resize=8)
    with pytest.raises(ValueError, match=re.escape("the test set of --dataset folder has fewer than 2 classes")):
        build_training_data("folder", root, 16, train_fraction=0.75)  # 3 train classes, 1 test class: R@1 was 1
    with pytest.raises(ValueError, match=re.escape("--resize does not apply to --dataset synthetic")):
        build_training_data("synthetic", None, 64, resize=73)


def test_malformed_rows_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("header\na 1\n\nb 2\n")
    assert read_rows(path, 2, skip=1) == [["a", "1"], ["b", "2"]]  # blank lines skipped
    path.write_text("header\na 1\nb 2 extra\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: expected 2 fields, got 3")):
        read_rows(path, 2, skip=1)
    path.write_bytes(b"header\na 1\n\xc0\xff 2\n")  # was UnicodeDecodeError's text, naming no file
    with pytest.raises(ValueError, match=re.escape(f"{path} is not a UTF-8 text file (byte 11: invalid start byte)")):
        read_rows(path, 2, skip=1)


@pytest.mark.parametrize("kind", ["folder", "cub"])
def test_images_that_do_not_decode_are_skipped_and_counted(kind: str, tmp_path: Path) -> None:
    """A truncated JPEG, a zero-byte file and a text file named .png are left out and counted, in every image
    dataset (they all build on RetrievalImageDataset), instead of crashing a run when a batch reaches them."""
    from PIL import Image

    if kind == "folder":
        root = tmp_path / "tree"
        for c in range(4):
            (root / f"class{c}").mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (16, 16), (40 * c, 10 * i, 0)).save(root / f"class{c}" / f"{i}.jpg", quality=90)
        folder = root / "class0"
        make = lambda: ImageFolderSplit(root, "train")  # noqa: E731
    else:
        root = fx.make_cub(tmp_path)
        make = lambda: CUB200(root, "train")  # noqa: E731
        folder = make().paths[0].parent
    intact = len(make())
    victims = sorted(p for p in folder.iterdir() if p.suffix == ".jpg")[:1]
    full = victims[0].read_bytes()
    victims[0].write_bytes(full[: len(full) // 2])  # truncated
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    dataset = make()
    expected = {str(victims[0])}
    if kind == "folder":  # the folder lists every image file; CUB lists only its annotated ones
        expected |= {str(folder / "empty.jpg"), str(folder / "notes.png")}
    assert set(dataset.skipped) == expected and len(dataset) == intact - 1
    assert "does not decode" in dataset.skipped[str(victims[0])] and f"skipped={len(expected)}" in repr(dataset)
    if kind == "folder":
        assert dataset.skipped[str(folder / "empty.jpg")] == "empty file"
        assert dataset.skipped[str(folder / "notes.png")] == "not an image PIL can read"
    for i in range(len(dataset)):  # every image left decodes
        dataset[i]
    if kind == "folder":  # what dc_transfer's metrics.json reports as data/skipped_<part>
        assert build_training_data("folder", root, 16).skipped == {"train": len(expected), "query": 0}


SHAPES = {"num_classes": 48, "num_superclasses": 6, "images_per_class": 3, "size": 16}


def test_shapes_split_is_class_disjoint_within_every_superclass() -> None:
    train, test = HierarchicalShapes(split="train", **SHAPES), HierarchicalShapes(split="test", **SHAPES)
    assert not set(train.classes) & set(test.classes) and len(train.classes) == len(test.classes) == 24
    for dataset in (train, test):
        assert Counter(dataset.labels.tolist()) == {c: 3 for c in range(24)} and dataset.labels.dtype == np.int64
        assert sorted(set(dataset.super_labels.tolist())) == list(range(6))  # every super-class in both splits
        assert all(
            name.startswith(f"s{s}/") for name, s in zip(dataset.classes, dataset.super_labels[::3], strict=True)
        )
    image, label = test[4]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 1
    assert image.min() < 0 < image.max()  # ImageNet-normalised
    assert "classes=24" in repr(train) and "superclasses=6" in repr(train)
    assert isinstance(build_dataset("shapes", split="train", **SHAPES), HierarchicalShapes)
    with pytest.raises(ValueError, match=re.escape("num_classes (50) must be a multiple of num_superclasses (6)")):
        HierarchicalShapes(num_classes=50, num_superclasses=6)


def test_shapes_are_deterministic_by_seed() -> None:
    first, again = HierarchicalShapes(**SHAPES), HierarchicalShapes(**SHAPES)
    assert torch.equal(first.images, again.images) and first.images.dtype == torch.uint8
    assert not torch.equal(first.images, HierarchicalShapes(**SHAPES, seed=1).images)
    # the test split's pixels do not depend on whether the train split was drawn
    assert torch.equal(
        HierarchicalShapes(split="test", **SHAPES).images, HierarchicalShapes(split="test", **SHAPES).images
    )


def test_shapes_classes_of_one_superclass_look_alike() -> None:
    data = HierarchicalShapes(num_classes=120, num_superclasses=10, images_per_class=6, size=24)
    centre = data.images[:, :, 9:15, 9:15].float().mean((2, 3))  # mostly object pixels: its colour
    classes = torch.stack([centre[torch.from_numpy(data.labels == c)].mean(0) for c in range(len(data.classes))])
    distances = torch.cdist(classes, classes).fill_diagonal_(float("inf"))
    superclass = torch.from_numpy(data.super_labels[::6])
    # the nearest class by object colour shares the super-class far more often than chance (5 of 59 classes)
    assert (superclass[distances.argmin(1)] == superclass).float().mean() > 0.5
