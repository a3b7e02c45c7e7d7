"""Retrieval datasets for metric learning, in their official layouts and class-disjoint splits.

    build_dataset(name, root=None, split="train", transform=None, **kwargs) -> Dataset
    build_eval_task(name, root=None, split=None, transform=None, **kwargs) -> RetrievalTask
    build_training_data(name, root, image_size, augment="none", resize=None, **kwargs) -> TrainingData

``name``: ``"synthetic"`` (the embedded default, no ``root``), ``"shapes"`` (the embedded many-class regime:
procedural objects of 1,200 classes in 40 super-classes, :class:`HierarchicalShapes`), ``"cub200"``, ``"cars196"``, ``"sop"``, ``"inshop"``,
``"vehicleid"`` or ``"folder"`` (``root/<class>/<image>``). Splits are ``"train"``/``"test"``, except In-shop
(``"train"``/``"query"``/``"gallery"``) and VehicleID (``"train"``/``"small"``/``"medium"``/``"large"``); ``kwargs``
go to the dataset class (e.g. ``mode="clip"`` for synthetic, ``train_fraction=`` for folder). Every dataset returns
``(image, label)`` and has ``labels`` (``[N]`` int64, 0-based within the split, for samplers) and ``classes``.

Test protocols differ (self-retrieval, In-shop's query -> gallery, VehicleID's random gallery draws), so
``build_eval_task`` returns what to embed and how to score it::

    task = build_eval_task("inshop", root, transform=eval_transform())
    metrics = task.evaluate(embed(task.query), embed(task.gallery))  # {"R@1": ..., "NMI": ..., "MAP@R": ...}
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from metric.data.base import RetrievalImageDataset, Transform
from metric.data.cars import Cars196
from metric.data.cub import CUB200
from metric.data.folder import ImageFolderSplit
from metric.data.inshop import InShop
from metric.data.shapes import HierarchicalShapes
from metric.data.sop import StanfordOnlineProducts
from metric.data.synthetic import SyntheticRetrieval
from metric.data.transforms import default_transform, eval_transform, normalize_uint8, train_transform
from metric.data.vehicleid import VehicleID
from metric.evaluation import evaluate_retrieval, evaluate_vehicleid

DATASETS: dict[str, type[Dataset]] = {
    "synthetic": SyntheticRetrieval,
    "shapes": HierarchicalShapes,
    "cub200": CUB200,
    "cars196": Cars196,
    "sop": StanfordOnlineProducts,
    "inshop": InShop,
    "vehicleid": VehicleID,
    "folder": ImageFolderSplit,
}
EMBEDDED: dict[str, int] = {"synthetic": 64, "shapes": 32}
"""The datasets generated in memory (no ``root``; uint8 tensor images) and their default image size."""
RECALL_KS: dict[str, tuple[int, ...]] = {
    "sop": (1, 10, 100, 1000),
    "inshop": (1, 10, 20, 30, 40, 50),
    "vehicleid": (1, 5),
}  # the customary Recall@K of each dataset; (1, 2, 4, 8) otherwise


@dataclass
class RetrievalTask:
    """A test set and its protocol.

    Attributes:
        query: the images to embed first (all test images unless there is a separate gallery).
        gallery: In-shop's gallery; ``None`` when the queries are their own gallery.
        ks: the Recall@K reported for this dataset.
        protocol: ``"self"`` (leave-one-out among the queries), ``"query-gallery"`` or ``"vehicleid"``.
    """

    query: Dataset
    gallery: Dataset | None = None
    ks: tuple[int, ...] = (1, 2, 4, 8)
    protocol: Literal["self", "query-gallery", "vehicleid"] = "self"

    def evaluate(
        self,
        query_embeddings: np.ndarray | torch.Tensor,
        gallery_embeddings: np.ndarray | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, float]:
        """Score embeddings of ``query`` (and ``gallery``), in dataset order.

        Args:
            query_embeddings: ``[len(query), D]``.
            gallery_embeddings: ``[len(gallery), D]``, required by the query-gallery protocol.
            **kwargs: passed to :func:`metric.evaluation.evaluate_retrieval` (or ``evaluate_vehicleid``).
        """
        labels = self.query.labels
        if self.protocol == "vehicleid":
            return evaluate_vehicleid(query_embeddings, labels, ks=self.ks, **kwargs)
        if self.protocol == "self":
            return evaluate_retrieval(query_embeddings, labels, ks=self.ks, **kwargs)
        if gallery_embeddings is None or self.gallery is None:
            raise ValueError("the query-gallery protocol needs gallery embeddings")
        return evaluate_retrieval(
            query_embeddings, labels, gallery_embeddings, self.gallery.labels, ks=self.ks, **kwargs
        )


def build_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    transform: Transform | None = None,
    **kwargs: Any,
) -> Dataset:
    """One split of dataset ``name`` (see the module docstring for names and splits)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    if name == "inshop" and split == "test":
        raise ValueError(
            "In-shop's test set is a query and a gallery: use split='query' / 'gallery', or "
            "build_eval_task('inshop', root)"
        )
    if name not in EMBEDDED and root is None:
        raise ValueError(f"dataset {name!r} needs root= (the folder holding its official files)")
    return DATASETS[name](root, split=split, transform=transform, **kwargs)


def build_eval_task(
    name: str,
    root: str | Path | None = None,
    split: str | None = None,
    transform: Transform | None = None,
    **kwargs: Any,
) -> RetrievalTask:
    """The test set of dataset ``name`` with its protocol and Recall@K.

    Args:
        name: dataset name.
        root: dataset folder (not needed for ``"synthetic"``).
        split: test split; default ``"test"`` (VehicleID: ``"large"``; In-shop has only query + gallery).
        transform: applied to every image.
        **kwargs: passed to the dataset class.
    """
    ks = RECALL_KS.get(name, (1, 2, 4, 8))
    if name == "inshop":
        if split not in (None, "test"):
            raise ValueError(f"In-shop's test set is query + gallery; split must be None or 'test', got {split!r}")
        query = build_dataset(name, root, "query", transform, **kwargs)
        return RetrievalTask(query, build_dataset(name, root, "gallery", transform, **kwargs), ks, "query-gallery")
    if name == "vehicleid":
        return RetrievalTask(build_dataset(name, root, split or "large", transform, **kwargs), None, ks, "vehicleid")
    return RetrievalTask(build_dataset(name, root, split or "test", transform, **kwargs), None, ks, "self")


__all__ = [
    "CUB200",
    "DATASETS",
    "EMBEDDED",
    "Cars196",
    "HierarchicalShapes",
    "ImageFolderSplit",
    "InShop",
    "RetrievalImageDataset",
    "RetrievalTask",
    "StanfordOnlineProducts",
    "SyntheticRetrieval",
    "VehicleID",
    "build_dataset",
    "build_eval_task",
    "default_transform",
    "eval_transform",
    "train_transform",
]


@dataclass
class TrainingData:
    """The datasets of a training run: the training set (train transform), the same images for k-means (eval
    transform), and the test task (query, optional gallery, protocol, Recall@K)."""

    train: Dataset
    cluster: Dataset
    task: RetrievalTask

    @property
    def skipped(self) -> dict[str, int]:
        """How many listed images each part left out because they do not decode: ``train``, ``query`` and, when
        there is one, ``gallery`` (the embedded data skip nothing)."""
        parts = {"train": self.train, "query": self.task.query, "gallery": self.task.gallery}
        return {name: len(getattr(part, "skipped", {})) for name, part in parts.items() if part is not None}


def build_training_data(
    name: str,
    root: str | Path | None,
    image_size: int,
    augment: Literal["none", "crop"] = "none",
    resize: int | None = None,
    **options: Any,
) -> TrainingData:
    """Build the training set twice (train / eval transform) and the test task of dataset ``name``, with Recall@1,
    2, 4 and 8 always among the task's ks.

    The embedded data (:data:`EMBEDDED`) are ``uint8`` images transformed as tensors (normalisation only unless
    ``augment="crop"``); the image datasets are decoded with PIL and resized/cropped to ``image_size`` (evaluation:
    resized to ``resize``, default ``image_size * 8 // 7``, then centre-cropped).

    Raises:
        ValueError: an option the dataset does not take (naming the options), an unknown dataset, a test set of
            fewer than 2 classes (its Recall@K would be 1), or a ``resize``
            that does not apply (embedded data) or is below ``image_size`` (the centre crop would pad with black).
    """
    if resize is not None and name in EMBEDDED:
        raise ValueError(f"--resize does not apply to --dataset {name} (embedded {EMBEDDED[name]}-pixel images are "
                         "never resized); drop it, or change --image-size")  # fmt: skip
    if resize is not None and resize < image_size:
        raise ValueError(f"--resize {resize} is below --image-size {image_size}: the evaluation crop would pad the "
                         "resized image with black; give --resize >= --image-size")  # fmt: skip
    if name in EMBEDDED:
        options.setdefault("size", image_size)
        eval_tf = normalize_uint8
        crop = v2.Compose([v2.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True), normalize_uint8])
        train_tf = crop if augment == "crop" else eval_tf
    else:
        eval_tf = eval_transform(image_size, resize or image_size * 8 // 7)
        train_tf = train_transform(image_size) if augment == "crop" else eval_tf
    try:
        train = build_dataset(name, root, "train", train_tf, **options)
    except TypeError as err:  # an option the dataset does not take
        raise ValueError(f"--data-option {', '.join(options)} for --dataset {name}: {err}") from None
    cluster = train if train_tf is eval_tf else build_dataset(name, root, "train", eval_tf, **options)
    task = build_eval_task(name, root, transform=eval_tf, **options)
    if len(np.unique(np.asarray(task.query.labels))) < 2:  # every neighbour would be of the query's class
        raise ValueError(f"the test set of --dataset {name} has fewer than 2 classes ({task.query!r}): every "
                         "retrieval would count as right; give a dataset with more classes (folder: or a lower "
                         "train_fraction)")  # fmt: skip
    return TrainingData(train, cluster, replace(task, ks=tuple(sorted({1, 2, 4, 8, *task.ks}))))
