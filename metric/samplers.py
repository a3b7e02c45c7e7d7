"""Class-balanced batch samplers over label arrays, plain and cluster-aware, with a fixed number of batches per epoch.

:class:`ClusterBatchSampler` is the divide-and-conquer sampler: one sampler over the one training dataset. It reads
the current cluster id of every sample (updated in place by :meth:`ClusterBatchSampler.set_clusters` after each
re-clustering) and yields ``(indices, learner)``: each batch comes from a single cluster, chosen with probability
proportional to its size, and holds ``batch_size / samples_per_class`` classes of that cluster with
``samples_per_class`` images each. :class:`ClassBalancedBatchSampler` is the same without clusters; for one cluster
the two draw identical batches.

Every epoch's batches are a function of ``(seed, epoch)`` only (call ``set_epoch`` as with ``DistributedSampler``),
so training resumes exactly. With ``num_replicas > 1`` all replicas draw the same global batch of
``batch_size * num_replicas`` indices (same cluster) and each keeps its own ``batch_size`` slice of whole classes.

To load the batches with a ``DataLoader`` (workers and all), wrap the dataset in :class:`BatchedDataset` and pass the
sampler as ``sampler=`` with ``batch_size=None``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate


class _ClassPool:
    """The samples of a subset grouped by class; classes with fewer than two samples are left out (no positive)."""

    def __init__(self, indices: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(labels, kind="stable")
        _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        keep = counts >= 2
        self.members, self.starts, self.counts = indices[order], starts[keep], counts[keep]

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())

    def draw(self, rng: np.random.Generator, num_classes: int, per_class: int) -> np.ndarray:
        """``[num_classes * per_class]`` indices, grouped by class; without replacement wherever possible."""
        classes = rng.choice(self.num_classes, size=num_classes, replace=self.num_classes < num_classes)
        picks = [
            self.members[
                self.starts[c] + rng.choice(self.counts[c], size=per_class, replace=self.counts[c] < per_class)
            ]
            for c in classes
        ]
        return np.concatenate(picks)


class _BalancedBatchSampler:
    """Shared parameters and batch drawing of the two samplers below."""

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        samples_per_class: int,
        iterations_per_epoch: int,
        seed: int,
        num_replicas: int,
        rank: int,
    ) -> None:
        if samples_per_class < 2 or batch_size % samples_per_class or batch_size < 2 * samples_per_class:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of samples_per_class ({samples_per_class}, >= 2) "
                "holding at least two classes"
            )
        if iterations_per_epoch < 1:
            raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size, self.samples_per_class = batch_size, samples_per_class
        self.iterations_per_epoch = iterations_per_epoch
        self.seed, self.num_replicas, self.rank, self.epoch = seed, num_replicas, rank, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next ``__iter__`` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.iterations_per_epoch

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def _draw(self, rng: np.random.Generator, pool: _ClassPool) -> list[int]:
        """Draw the global batch from ``pool`` and return this replica's slice."""
        classes = self.batch_size * self.num_replicas // self.samples_per_class
        batch = pool.draw(rng, classes, self.samples_per_class)
        return batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()


class ClassBalancedBatchSampler(_BalancedBatchSampler, Sampler[list[int]]):
    """Batches of ``batch_size / samples_per_class`` classes x ``samples_per_class`` images, from the whole set.

    Args:
        labels: ``[N]`` class labels of the dataset.
        batch_size: samples per batch (per replica); a multiple of ``samples_per_class``.
        samples_per_class: images per class in a batch (``m``).
        iterations_per_epoch: batches per epoch.
        seed: the sampler's seed.
        num_replicas: number of data-parallel processes.
        rank: this process's rank.

    Yields:
        ``list[int]`` of ``batch_size`` dataset indices. Classes are drawn without replacement (with replacement
        only if there are too few), images within a class likewise. Classes with a single image are never drawn.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int = 80,
        samples_per_class: int = 4,
        iterations_per_epoch: int = 100,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(labels, batch_size, samples_per_class, iterations_per_epoch, seed, num_replicas, rank)
        self.pool = _ClassPool(np.arange(len(self.labels)), self.labels)
        if self.pool.num_classes < 2:
            raise ValueError(f"need at least two classes with two or more images, got {self.pool.num_classes}")

    def __iter__(self) -> Iterator[list[int]]:
        rng = self._rng()
        for _ in range(self.iterations_per_epoch):
            yield self._draw(rng, self.pool)


class ClusterBatchSampler(_BalancedBatchSampler, Sampler[tuple[list[int], int]]):
    """Class-balanced batches from one cluster at a time; yields ``(indices, learner)`` with learner = cluster id.

    Args:
        labels: ``[N]`` class labels of the dataset.
        clusters: ``[N]`` cluster ids in ``[0, num_clusters)``, negative = not trained on; ``None`` = one cluster.
        num_clusters: ``K``; defaults to ``clusters.max() + 1``.
        batch_size, samples_per_class, iterations_per_epoch, seed, num_replicas, rank: as in
            :class:`ClassBalancedBatchSampler`.

    A cluster is drawn with probability proportional to its number of usable samples (those of classes with two or
    more images in it); a cluster with fewer than two such classes is never drawn (no negatives to mine). With one
    cluster no cluster draw is made, so the batches equal those of :class:`ClassBalancedBatchSampler`.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        clusters: np.ndarray | None = None,
        num_clusters: int | None = None,
        batch_size: int = 80,
        samples_per_class: int = 4,
        iterations_per_epoch: int = 100,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(labels, batch_size, samples_per_class, iterations_per_epoch, seed, num_replicas, rank)
        self.set_clusters(np.zeros(len(self.labels), dtype=np.int64) if clusters is None else clusters, num_clusters)

    def set_clusters(self, clusters: np.ndarray, num_clusters: int | None = None) -> None:
        """Replace the cluster ids (after a re-clustering); takes effect at the next ``__iter__``."""
        clusters = np.asarray(clusters, dtype=np.int64)
        if clusters.shape != self.labels.shape:
            raise ValueError(f"clusters has shape {clusters.shape}, labels {self.labels.shape}")
        self.num_clusters = int(clusters.max()) + 1 if num_clusters is None else num_clusters
        self.clusters = clusters
        self.pools = [
            _ClassPool(np.flatnonzero(clusters == k), self.labels[clusters == k]) for k in range(self.num_clusters)
        ]
        sizes = np.array([p.num_samples if p.num_classes >= 2 else 0 for p in self.pools], dtype=np.float64)
        if sizes.sum() == 0:
            raise ValueError(
                f"no cluster of the {self.num_clusters} has two classes with two or more images; use fewer learners"
            )
        self.probabilities = sizes / sizes.sum()

    def __iter__(self) -> Iterator[tuple[list[int], int]]:
        rng = self._rng()
        for _ in range(self.iterations_per_epoch):
            k = int(rng.choice(self.num_clusters, p=self.probabilities)) if self.num_clusters > 1 else 0
            yield self._draw(rng, self.pools[k]), k


class BatchedDataset(Dataset):
    """Loads a whole batch per item: ``dataset[(indices, learner)] -> (images, labels, indices, learner)``.

    Lets a ``DataLoader(BatchedDataset(ds), sampler=ClusterBatchSampler(...), batch_size=None)`` keep the learner id
    next to its batch while workers load the images.

    Args:
        dataset: map-style dataset returning ``(image, label)``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[list[int], int]) -> tuple[Any, torch.Tensor, torch.Tensor, int]:
        indices, learner = item
        images, labels = default_collate([self.dataset[i] for i in indices])
        return images, labels, torch.as_tensor(indices), learner
