"""Stanford Cars / CARS196 (Krause et al. 2013) with the metric learning split: classes 1-98 train, 99-196 test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from metric.data.base import Annotations, RetrievalImageDataset


class Cars196(RetrievalImageDataset):
    """CARS196: 16,185 images of 196 car models, read from the official ``cars_annos.mat``.

    The class-disjoint split of the metric learning literature: classes 1-98 (8,054 images) for ``"train"``,
    99-196 (8,131) for ``"test"``; the ``test`` flag of the annotations (a classification split) is ignored.
    Labels are 0-based within the split; class names come from ``class_names`` when the file has it.

    Args:
        root: the folder holding ``cars_annos.mat`` and ``car_ims/``.
        split: ``"train"`` or ``"test"``.
        transform: applied to the PIL image (default: float tensor, ImageNet-normalised).
    """

    marker = "cars_annos.mat"
    layout = (
        "  cars_annos.mat   struct 'annotations' with fields relative_im_path, bbox_x1..bbox_y2, class (1-196), "
        "test\n"
        "  car_ims/000001.jpg ..."
    )
    source = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (cars_annos.mat and car_ims.tgz)"
    num_train_classes = 98

    def _read_split(self, root: Path, split: str) -> Annotations:
        path = self.require(root / self.marker)
        try:
            mat = scipy.io.loadmat(path, squeeze_me=True)
        except (scipy.io.matlab.MatReadError, ValueError, OSError) as err:  # empty, truncated, not a .mat
            raise ValueError(
                f"{path} cannot be read as a MATLAB file ({err}); expected the official {self.marker}"
            ) from None
        annotations = mat.get("annotations")
        fields = getattr(getattr(annotations, "dtype", None), "names", None) or ()
        if not {"relative_im_path", "class"} <= set(fields):
            found = sorted(fields) if fields else sorted(k for k in mat if not k.startswith("__"))
            raise ValueError(f"{path} is not the official {self.marker}: it needs a struct 'annotations' with fields "
                             f"relative_im_path and class, found {found} (the devkit's cars_train_annos.mat and "
                             "cars_test_annos.mat are another layout)")  # fmt: skip
        annotations = np.atleast_1d(annotations)
        paths = [str(a) for a in annotations["relative_im_path"]]
        classes = [int(c) for c in annotations["class"]]
        names = None
        if "class_names" in mat:
            names = {i + 1: str(name) for i, name in enumerate(np.atleast_1d(mat["class_names"]))}
        keep = [i for i, c in enumerate(classes) if (c <= self.num_train_classes) == (split == "train")]
        return Annotations([root / paths[i] for i in keep], [classes[i] for i in keep], names)
