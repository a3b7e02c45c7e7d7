"""PKU VehicleID (Liu et al. 2016): 221,763 images of 26,267 vehicles."""

from __future__ import annotations

from pathlib import Path

from metric.data.base import Annotations, RetrievalImageDataset, read_rows

TEST_LISTS = {"small": "test_list_800.txt", "medium": "test_list_1600.txt", "large": "test_list_2400.txt"}


class VehicleID(RetrievalImageDataset):
    """PKU VehicleID, split by the official ``train_test_split`` lists.

    ``"train"``: ``train_list.txt`` (13,164 vehicles); ``"small"`` / ``"medium"`` / ``"large"``: the 800 / 1,600 /
    2,400-vehicle test lists. Labels are 0-based within the split. Evaluate a test list with
    :func:`metric.evaluation.evaluate_vehicleid` (one random gallery image per vehicle, averaged over draws).

    Args:
        root: the ``VehicleID_V1.0`` folder or its parent.
        split: ``"train"``, ``"small"``, ``"medium"`` or ``"large"``.
        transform: applied to the PIL image (default: float tensor, ImageNet-normalised).
    """

    splits = ("train", *TEST_LISTS)
    base_folder = "VehicleID_V1.0"
    marker = "train_test_split/train_list.txt"
    layout = (
        "  train_test_split/train_list.txt, test_list_800.txt, test_list_1600.txt, test_list_2400.txt\n"
        "                     rows '<image_name> <vehicle_id>'\n"
        "  image/<image_name>.jpg"
    )
    source = "https://www.pkuml.org/resources/pku-vehicleid.html (by request to the authors)"

    def _read_split(self, root: Path, split: str) -> Annotations:
        listing = "train_list.txt" if split == "train" else TEST_LISTS[split]
        rows = read_rows(self.require(root / "train_test_split" / listing), 2)
        return Annotations([root / "image" / f"{name}.jpg" for name, _ in rows], [int(v) for _, v in rows])
