"""Class-balanced batch samplers over label arrays, plain and cluster-aware, with a fixed number of batches per epoch.

:class:`ClusterBatchSampler` is the divide-and-conquer sampler: one sampler over the one training dataset. It reads
the current cluster id of every sample (updated in place by :meth:`ClusterBatchSampler.set_clusters` after each
re-clustering) and yields ``(indices, learner)``: each batch comes from a single cluster, chosen with probability
proportional to its size, and holds ``batch_size / samples_per_class`` classes of that cluster with
``samples_per_class`` images each. :class:`ClassBalancedBatchSampler` is the same without clusters; for one cluster
the two draw identical batches.

**No image is ever twice in a batch** (nor in two replicas' slices of one global batch). Where a cluster cannot give
``batch_size / samples_per_class`` classes of ``samples_per_class`` images, the batch is still filled with distinct
images of that cluster:

- a class with fewer than ``samples_per_class`` images gives all of them, and more classes fill the batch;
- a *small cluster*, whose classes at ``samples_per_class`` images each do not fill a batch, gets **fewer classes
  with more images each**: every class of the cluster is taken and the batch is filled with further images of its
  classes, one more per class in turn (e.g. 10 classes of 12 images give batches of 10 classes x 8 images);
- a cluster with fewer usable images than one (global) batch is **skipped**: it is never drawn, and its images wait
  for the next re-clustering (:attr:`ClusterBatchSampler.probabilities` is 0 there);
- a class would give a lone image only when the batch ends inside it; that image's place then goes to a class of
  the batch with images to spare, if there is one.

An epoch is one pass over the training set, ``ceil(N / (batch_size * num_replicas))`` batches, unless
``iterations_per_epoch`` says otherwise.

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

    def quotas(self, rng: np.random.Generator, size: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
        """Which classes a batch of ``size`` takes and how many images of each (see the module docstring).

        Returns:
            ``(classes, quotas)``: class positions in the pool in batch order, and the images of each (sum ``size``).
        """
        assert 2 <= size <= self.num_samples, (size, self.num_samples)
        order = rng.permutation(self.num_classes)
        quota = np.minimum(self.counts[order], per_class)
        while quota.sum() < size:  # all classes taken and still short: more images per class, in class order
            room = np.flatnonzero(quota < self.counts[order])
            quota[room[: size - quota.sum()]] += 1
        used = int(np.searchsorted(np.cumsum(quota), size)) + 1  # the first classes whose images fill the batch
        order, quota = order[:used], quota[:used].copy()
        quota[-1] -= quota.sum() - size
        if quota[-1] == 1 and used > 1:  # a lone image has no positive: give its place to a class with room
            room = np.flatnonzero(quota[:-1] < self.counts[order[:-1]])
            if len(room):
                quota[room[0]] += 1
                order, quota = order[:-1], quota[:-1]
        return order, quota

    def draw(self, rng: np.random.Generator, size: int, per_class: int) -> np.ndarray:
        """``[size]`` distinct indices, grouped by class (see :meth:`quotas`)."""
        classes, quota = self.quotas(rng, size, per_class)
        picks = [
            self.members[self.starts[c] + rng.choice(self.counts[c], size=q, replace=False)]
            for c, q in zip(classes, quota, strict=True)
        ]
        return np.concatenate(picks)


class _BalancedBatchSampler:
    """Shared parameters and batch drawing of the two samplers below."""

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        samples_per_class: int,
        iterations_per_epoch: int | None,
        seed: int,
        num_replicas: int,
        rank: int,
    ) -> None:
        if samples_per_class < 2 or batch_size % samples_per_class or batch_size < 2 * samples_per_class:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of samples_per_class ({samples_per_class}, >= 2) "
                "holding at least two classes"
            )
        if iterations_per_epoch is not None and iterations_per_epoch < 1:
            raise ValueError(f"iterations_per_epoch must be >= 1 or None (one pass), got {iterations_per_epoch}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        if seed < 0:  # numpy's generators take no negative seed; the run would fail at its first re-clustering
            raise ValueError(f"seed (--seed) must be >= 0, got {seed}")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size, self.samples_per_class = batch_size, samples_per_class
        self.global_batch = batch_size * num_replicas
        self.iterations_per_epoch = (
            -(-len(self.labels) // self.global_batch) if iterations_per_epoch is None else iterations_per_epoch
        )
        self.seed, self.num_replicas, self.rank, self.epoch = seed, num_replicas, rank, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next ``__iter__`` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.iterations_per_epoch

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def _drawable(self, pool: _ClassPool) -> bool:
        """Whether ``pool`` can give a global batch of distinct images from two classes or more."""
        return pool.num_classes >= 2 and pool.num_samples >= self.global_batch

    def _draw(self, rng: np.random.Generator, pool: _ClassPool) -> list[int]:
        """Draw the global batch from ``pool`` and return this replica's slice."""
        batch = pool.draw(rng, self.global_batch, self.samples_per_class)
        return batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()


class ClassBalancedBatchSampler(_BalancedBatchSampler, Sampler[list[int]]):
    """Batches of ``batch_size / samples_per_class`` classes x ``samples_per_class`` images, from the whole set.

    Args:
        labels: ``[N]`` class labels of the dataset.
        batch_size: samples per batch (per replica); a multiple of ``samples_per_class``.
        samples_per_class: images per class in a batch (``m``).
        iterations_per_epoch: batches per epoch; ``None``: one pass over the ``N`` samples,
            ``ceil(N / (batch_size * num_replicas))``.
        seed: the sampler's seed.
        num_replicas: number of data-parallel processes.
        rank: this process's rank.

    Yields:
        ``list[int]`` of ``batch_size`` distinct dataset indices, grouped by class (see the module docstring for
        classes with fewer than ``samples_per_class`` images). Classes with a single image are never drawn.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int = 80,
        samples_per_class: int = 4,
        iterations_per_epoch: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(labels, batch_size, samples_per_class, iterations_per_epoch, seed, num_replicas, rank)
        self.pool = _ClassPool(np.arange(len(self.labels)), self.labels)
        if not self._drawable(self.pool):
            raise ValueError(
                f"need at least two classes with two or more images and {self.global_batch} such images for a batch "
                f"of distinct images, got {self.pool.num_classes} classes and {self.pool.num_samples} images; lower "
                "batch_size (--batch-size)"
            )

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
    more images in it); a cluster with fewer than two such classes (no negatives to mine) or fewer usable samples
    than a global batch (see the module docstring) is never drawn. With one cluster no cluster draw is made, so the
    batches equal those of :class:`ClassBalancedBatchSampler`.

    Attributes:
        probabilities: ``[K]`` probability of each cluster's batches (0 for skipped clusters).
        skipped: ``[K]`` bool, the clusters that are never drawn.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        clusters: np.ndarray | None = None,
        num_clusters: int | None = None,
        batch_size: int = 80,
        samples_per_class: int = 4,
        iterations_per_epoch: int | None = None,
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
        self.skipped = np.array([not self._drawable(p) for p in self.pools], dtype=bool)
        sizes = np.array(
            [0 if skip else p.num_samples for p, skip in zip(self.pools, self.skipped, strict=True)], np.float64
        )
        if sizes.sum() == 0:
            raise ValueError(
                f"no cluster of the {self.num_clusters} has two classes with two or more images and {self.global_batch} "
                "such images (one batch); use fewer learners or a smaller batch"
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
