"""Stanford Online Products (Oh Song et al. 2016): 120,053 images of 22,634 products."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metric.data.base import Annotations, RetrievalImageDataset, read_rows


class StanfordOnlineProducts(RetrievalImageDataset):
    """Stanford Online Products, split by the official ``Ebay_train.txt`` / ``Ebay_test.txt``.

    ``"train"``: classes 1-11,318 (59,551 images); ``"test"``: classes 11,319-22,634 (60,502 images). Labels are
    0-based within the split.

    Args:
        root: the ``Stanford_Online_Products`` folder or its parent.
        split: ``"train"`` or ``"test"``.
        transform: applied to the PIL image (default: float tensor, ImageNet-normalised).

    Attributes:
        super_labels: ``[N]`` int64 super-class (12 product categories), 0-based within the split.
    """

    base_folder = "Stanford_Online_Products"
    marker = "Ebay_train.txt"
    layout = (
        "  Ebay_train.txt, Ebay_test.txt   header 'image_id class_id super_class_id path', then one row per image\n"
        "  <category>_final/<class>_<n>.JPG"
    )
    source = "https://cvgl.stanford.edu/projects/lifted_struct/ (Stanford_Online_Products.zip)"

    def _read_split(self, root: Path, split: str) -> Annotations:
        rows = read_rows(self.require(root / f"Ebay_{split}.txt"), 4, skip=1)
        supers = [int(row[2]) for row in rows]
        self.super_labels = np.unique(supers, return_inverse=True)[1].astype(np.int64)
        return Annotations([root / row[3] for row in rows], [int(row[1]) for row in rows])
