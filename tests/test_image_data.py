from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from permgym.data.images import ImageFolderClassification, check_image
from permgym.data.synthetic import SyntheticActions
from permgym.data.synthetic_images import CLASSES, SyntheticObjects
from permgym.data.voc import VOC2007, VOC_CLASSES, labels_from_objects, parse_annotation
from permgym.image_transfer import eval_views, train_view
from tests.image_fixtures import VOC_OBJECTS, VOC_SPLITS, make_folder, make_voc, write_jpeg


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return make_voc(tmp_path)


def test_voc_split_files_as_distributed(voc: Path) -> None:
    assert b"\r\n" in (voc / "ImageSets" / "Main" / "car_trainval.txt").read_bytes()  # CRLF, as distributed
    data = VOC2007(voc.parent.parent, "trainval")  # the folder holding VOCdevkit/ is found too
    assert data.ids == VOC_SPLITS["trainval"] and data.classes == list(VOC_CLASSES) and not data.skipped
    row = {image_id: data.targets[i] for i, image_id in enumerate(data.ids)}
    car, chair, person = (VOC_CLASSES.index(c) for c in ("car", "chair", "person"))
    assert row["000007"][car] == 1 and row["000012"][car] == 0 and row["000005"][car] == -1  # all three labels
    assert row["000005"][chair] == 1  # one easy chair beside a difficult one
    assert row["000009"][person] == 1
    image, target = data[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8 and target.dtype == torch.int8
    test = VOC2007(voc, "test")
    assert len(test) == len(VOC_SPLITS["test"]) and len(VOC2007(voc, "train")) == 3
    for name in ("test.txt", "car_test.txt"):  # saved again by an editor that writes a UTF-8 byte-order mark
        path = voc / "ImageSets" / "Main" / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert VOC2007(voc, "test").ids == test.ids


def test_voc_annotations_give_the_lists_labels(voc: Path) -> None:
    objects = parse_annotation(voc / "Annotations" / "000005.xml")
    assert [(o.name, o.difficult, o.truncated) for o in objects] == VOC_OBJECTS["000005"]
    assert objects[0].box == (2, 3, 39, 28)
    for split in ("trainval", "test"):
        lists, annotations = VOC2007(voc, split), VOC2007(voc, split, labels="annotations")
        assert torch.equal(lists.targets, annotations.targets)
    assert labels_from_objects(VOC2007(voc, "trainval").objects("000012"))[VOC_CLASSES.index("car")] == 0


def test_voc_errors_name_the_problem(voc: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="expected VOCdevkit/VOC2007/ with JPEGImages"):
        VOC2007(tmp_path / "nowhere")
    (voc / "JPEGImages" / "000009.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("image '000009' of trainval.txt not found")):
        VOC2007(voc, "trainval")
    xml = voc / "Annotations" / "000002.xml"
    xml.write_text(xml.read_text().replace("<name>train</name>", "<name>tram</name>"))
    with pytest.raises(ValueError, match=re.escape(f"{xml}: unknown class 'tram'")):
        VOC2007(voc, "test", labels="annotations")
    per_class = voc / "ImageSets" / "Main" / "dog_test.txt"
    per_class.write_bytes(per_class.read_bytes().replace(b"000002 -1", b"000002  2"))
    with pytest.raises(ValueError, match=re.escape(f"{per_class}:2: expected '<image id> <1|-1|0>'")):
        VOC2007(voc, "test")
    with pytest.raises(ValueError, match="split must be one of train, val, trainval, test, got 'training'"):
        VOC2007(voc, "training")


def test_voc_unreadable_images_are_skipped_and_counted(voc: Path) -> None:
    jpeg = voc / "JPEGImages"
    data = (jpeg / "000001.jpg").read_bytes()
    (jpeg / "000001.jpg").write_bytes(data[: len(data) // 2])  # cut short
    (jpeg / "000002.jpg").write_bytes(b"")
    (jpeg / "000003.jpg").write_text("not an image")
    test = VOC2007(voc, "test")
    assert test.ids == ["000004", "000006", "000008"] and len(test.targets) == 3
    assert set(test.skipped) == {str(jpeg / f"00000{i}.jpg") for i in (1, 2, 3)}
    assert "does not decode" in test.skipped[str(jpeg / "000001.jpg")]
    assert test.skipped[str(jpeg / "000002.jpg")] == "empty file"
    assert "skipped=3" in repr(test)
    good = jpeg / "000004.jpg"
    write_jpeg(good, 17, 11, 0)
    assert check_image(good) is None


def test_folder_split_per_class(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "tree")
    train, test = ImageFolderClassification(root, "train"), ImageFolderClassification(root, "test")
    assert (len(train), len(test)) == (16, 4) and train.classes == ["cat", "dog"] and not train.multilabel
    assert {p.name for p in test.paths} == {"04.png", "09.jpg"}  # every 5th of each class, in sorted order
    assert torch.equal((train.targets == 1).sum(1), torch.ones(16, dtype=torch.int64))
    assert train[0][0].shape == (3, 20, 24)
    (root / "dog" / "01.png").write_bytes(b"")
    before = ImageFolderClassification(root, "train")
    assert len(before.skipped) == 1
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders and files are neither classes nor images
    (root / "cat" / ".ipynb_checkpoints").mkdir()
    (root / "cat" / ".ipynb_checkpoints" / "01.png").write_bytes((root / "cat" / "01.png").read_bytes())
    (root / "dog" / "._02.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    hidden = ImageFolderClassification(root, "train")
    assert hidden.classes == ["cat", "dog"] and hidden.paths == before.paths and hidden.skipped == before.skipped
    with pytest.raises(FileNotFoundError, match="Expected ROOT/<class>/<image>"):
        ImageFolderClassification(tmp_path / "missing")
    shutil.rmtree(root / "dog")
    with pytest.raises(ValueError, match="needs >= 2 class folders"):
        ImageFolderClassification(root)


def test_synthetic_objects() -> None:
    a = SyntheticObjects("trainval", num_images=30, size=32)
    b = SyntheticObjects("trainval", num_images=30, size=32)
    test = SyntheticObjects("test", num_images=30, size=32)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)  # deterministic by seed
    assert (len(a), len(test), len(a.classes)) == (20, 10, 8) and a.classes == list(CLASSES)
    assert not torch.equal(a.images[:10], test.images)
    for objects, target in zip(a.objects, a.targets, strict=True):  # the VOC coding of the objects
        for c in range(8):
            flags = [difficult for label, difficult in objects if label == c]
            assert int(target[c]) == (-1 if not flags else (1 if not all(flags) else 0))
    assert 1 <= min(len(o) for o in a.objects) and max(len(o) for o in a.objects) <= 3
    background = SyntheticActions(num_videos=1, frames=2, size=32, seed=3).clips[0, 0]  # the same renderer
    assert (a.images[0] == background).float().mean() > 0.3  # the objects leave most of the background visible


def test_views_keep_the_aspect_ratio() -> None:
    image = torch.arange(3 * 30 * 60, dtype=torch.int64).remainder(251).to(torch.uint8).view(3, 30, 60)
    centre = eval_views(image, 16, 20)
    assert centre.shape == (1, 3, 16, 16)
    ten = eval_views(image, 16, 20, crops=10)
    assert ten.shape == (10, 3, 16, 16) and torch.equal(ten[4], centre[0]) and torch.equal(ten[9], ten[4].flip(-1))
    one = train_view(image, 16, torch.Generator().manual_seed(5))
    assert one.shape == (3, 16, 16) and torch.equal(one, train_view(image, 16, torch.Generator().manual_seed(5)))
    assert not torch.equal(one, train_view(image, 16, torch.Generator().manual_seed(6)))
    with pytest.raises(ValueError, match="crops must be 1 or 10, got 5"):
        eval_views(image, 16, 20, crops=5)
