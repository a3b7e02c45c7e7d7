"""CUB-200-2011 (Wah et al. 2011) with the metric learning split: classes 1-100 train, 101-200 test."""

from __future__ import annotations

from pathlib import Path

from metric.data.base import Annotations, RetrievalImageDataset, read_rows


class CUB200(RetrievalImageDataset):
    """Caltech-UCSD Birds 200-2011: 11,788 images of 200 bird species.

    The class-disjoint split of the metric learning literature: classes 1-100 (5,864 images) for ``"train"``,
    101-200 (5,924) for ``"test"``; the official ``train_test_split.txt`` (an image-level split for
    classification) is not used. Labels are 0-based within the split.

    Args:
        root: the ``CUB_200_2011`` folder or its parent.
        split: ``"train"`` or ``"test"``.
        transform: applied to the PIL image (default: float tensor, ImageNet-normalised).
    """

    base_folder = "CUB_200_2011"
    marker = "images.txt"
    layout = (
        "  CUB_200_2011/images.txt               '<image_id> <class_folder>/<file>.jpg'\n"
        "  CUB_200_2011/image_class_labels.txt   '<image_id> <class_id>' (1-200)\n"
        "  CUB_200_2011/images/<class_folder>/<file>.jpg"
    )
    source = "https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz)"
    num_train_classes = 100

    def _read_split(self, root: Path, split: str) -> Annotations:
        paths = dict(read_rows(self.require(root / "images.txt"), 2))
        labels = read_rows(self.require(root / "image_class_labels.txt"), 2)
        unknown = [image_id for image_id, _ in labels if image_id not in paths]
        if unknown:
            raise ValueError(f"{root / 'image_class_labels.txt'} labels {len(unknown)} image ids that "
                             f"{root / 'images.txt'} does not list, e.g. {unknown[0]!r}; restore both files from "
                             "the same CUB_200_2011.tgz")  # fmt: skip
        keep = [
            (image_id, int(class_id))
            for image_id, class_id in labels
            if (int(class_id) <= self.num_train_classes) == (split == "train")
        ]
        names = {class_id: paths[image_id].split("/")[0] for image_id, class_id in keep}
        return Annotations([root / "images" / paths[image_id] for image_id, _ in keep], [c for _, c in keep], names)
