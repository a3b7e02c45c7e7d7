from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from metric.samplers import BatchedDataset, ClassBalancedBatchSampler, ClusterBatchSampler

LABELS = np.repeat(np.arange(40), 6)  # 40 classes x 6 images
CLUSTERS = np.where(LABELS < 10, 0, np.where(LABELS < 30, 1, 2))  # sizes 60 / 120 / 60
CLUSTERS[::7] = -1  # unassigned samples


def test_batches_never_cross_clusters_and_are_class_balanced() -> None:
    sampler = ClusterBatchSampler(LABELS, CLUSTERS, batch_size=16, samples_per_class=4, iterations_per_epoch=200)
    for indices, learner in sampler:
        assert len(indices) == 16 and 0 <= learner < 3
        assert (CLUSTERS[indices] == learner).all()
        groups = LABELS[indices].reshape(4, 4)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0])) == 4


def test_clusters_drawn_in_proportion_to_size() -> None:
    clusters = np.where(LABELS < 10, 0, np.where(LABELS < 30, 1, 2))
    sampler = ClusterBatchSampler(LABELS, clusters, batch_size=8, samples_per_class=2, iterations_per_epoch=3000)
    freq = np.bincount([k for _, k in sampler], minlength=3) / 3000
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=0.03)


def test_unusable_samples_and_clusters_are_never_drawn() -> None:
    labels = np.array([0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 5])
    clusters = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 2, -1])  # 2 is a singleton in 0; 1 holds one class only
    sampler = ClusterBatchSampler(labels, clusters, batch_size=4, samples_per_class=2, iterations_per_epoch=50)
    np.testing.assert_allclose(sampler.probabilities, [1.0, 0.0, 0.0])
    drawn = np.concatenate([i for i, _ in sampler])
    assert set(drawn) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="no cluster of the 2 has two classes with two or more images"):
        sampler.set_clusters(np.full(len(labels), -1), 2)


def test_one_cluster_equals_class_balanced_sampler() -> None:
    plain = ClassBalancedBatchSampler(LABELS, batch_size=12, samples_per_class=3, iterations_per_epoch=20, seed=5)
    clustered = ClusterBatchSampler(LABELS, None, batch_size=12, samples_per_class=3, iterations_per_epoch=20, seed=5)
    for epoch in (0, 3):
        plain.set_epoch(epoch)
        clustered.set_epoch(epoch)
        assert list(plain) == [indices for indices, _ in clustered]
        assert {k for _, k in clustered} == {0}


def test_epochs_are_reproducible_and_different() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, batch_size=8, samples_per_class=2, iterations_per_epoch=5)
    first = list(sampler)
    assert list(sampler) == first and len(sampler) == 5
    sampler.set_epoch(1)
    assert list(sampler) != first
    # no duplicates within a class group: each class has 6 >= 2 images
    assert all(len(set(b)) == len(b) for b in first)


def test_replicas_split_one_global_batch() -> None:
    kwargs = {"batch_size": 8, "samples_per_class": 4, "iterations_per_epoch": 10, "num_replicas": 2}
    ranks = [list(ClusterBatchSampler(LABELS, CLUSTERS, rank=r, **kwargs)) for r in range(2)]
    for (i0, k0), (i1, k1) in zip(*ranks, strict=True):
        assert k0 == k1  # the same learner everywhere
        assert not set(LABELS[i0]) & set(LABELS[i1])  # whole, different classes per replica
    single = ClusterBatchSampler(LABELS, CLUSTERS, batch_size=16, samples_per_class=4, iterations_per_epoch=10)
    assert [i for i, _ in single] == [a + b for (a, _), (b, _) in zip(*ranks, strict=True)]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"batch_size \(10\) must be a multiple of samples_per_class \(4"):
        ClassBalancedBatchSampler(LABELS, batch_size=10, samples_per_class=4)
    with pytest.raises(ValueError, match="rank must be in"):
        ClassBalancedBatchSampler(LABELS, batch_size=8, samples_per_class=4, rank=2, num_replicas=2)
    with pytest.raises(ValueError, match="need at least two classes"):
        ClassBalancedBatchSampler(np.array([0, 0, 1]), batch_size=4, samples_per_class=2)


def test_batched_dataset_loads_whole_batches_with_their_learner() -> None:
    images = torch.arange(len(LABELS), dtype=torch.float32)[:, None].expand(-1, 3)
    dataset = BatchedDataset(TensorDataset(images, torch.from_numpy(LABELS)))
    sampler = ClusterBatchSampler(LABELS, CLUSTERS, batch_size=8, samples_per_class=4, iterations_per_epoch=4)
    loaded = list(DataLoader(dataset, sampler=sampler, batch_size=None))
    for (x, y, idx, learner), (indices, k) in zip(loaded, sampler, strict=True):
        assert learner == k and idx.tolist() == indices
        assert x.shape == (8, 3) and x[:, 0].long().tolist() == indices
        assert y.tolist() == LABELS[indices].tolist()


def _assert_distinct(batches: list[list[int]]) -> None:
    assert all(len(set(b)) == len(b) for b in batches)


def test_no_image_twice_in_a_batch_with_small_classes_and_clusters() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(60), rng.integers(1, 7, size=60))  # 1-6 images per class, as on SOP
    clusters = rng.integers(0, 5, size=len(labels))
    sampler = ClusterBatchSampler(labels, clusters, batch_size=16, samples_per_class=4, iterations_per_epoch=300)
    drawn = list(sampler)
    _assert_distinct([indices for indices, _ in drawn])
    for indices, learner in drawn:
        assert len(indices) == 16 and (clusters[indices] == learner).all()
        assert np.bincount(labels[indices]).max() <= 4 or sampler.pools[learner].num_classes * 4 < 16
        assert (np.bincount(labels[indices])[labels[indices]] >= 2).sum() >= 15  # at most one image without positive


def test_a_small_cluster_gets_fewer_classes_with_more_images_each() -> None:
    labels = np.repeat(np.arange(20), 12)
    clusters = np.where(labels < 3, 0, 1)  # cluster 0: 3 classes of 12 images, too few for 5 classes x 4
    sampler = ClusterBatchSampler(labels, clusters, batch_size=20, samples_per_class=4, iterations_per_epoch=100)
    small = [indices for indices, learner in sampler if learner == 0]
    assert small
    _assert_distinct(small)
    for indices in small:
        assert sorted(np.bincount(labels[indices], minlength=3)[:3]) == [6, 7, 7]  # 3 classes share 20 images
    big = [indices for indices, learner in sampler if learner == 1]
    assert all(sorted(set(np.bincount(labels[i])) - {0}) == [4] for i in big)  # 5 classes x 4 as usual


def test_a_cluster_smaller_than_a_batch_is_skipped() -> None:
    labels = np.repeat(np.arange(10), 4)
    clusters = np.where(labels < 2, 0, 1)  # cluster 0 holds 8 images, fewer than a batch of 12
    sampler = ClusterBatchSampler(labels, clusters, batch_size=12, samples_per_class=4, iterations_per_epoch=50)
    assert sampler.skipped.tolist() == [True, False] and sampler.probabilities.tolist() == [0.0, 1.0]
    assert {learner for _, learner in sampler} == {1}
    with pytest.raises(ValueError, match="got 2 classes and 8 images; lower batch_size"):
        ClassBalancedBatchSampler(labels[:8], batch_size=12, samples_per_class=4)


def test_an_epoch_is_one_pass_unless_iterations_are_given() -> None:
    assert len(ClassBalancedBatchSampler(LABELS, batch_size=16, samples_per_class=4)) == 15  # ceil(240 / 16)
    assert len(ClusterBatchSampler(LABELS, CLUSTERS, batch_size=16, samples_per_class=4, num_replicas=2)) == 8
    assert len(ClassBalancedBatchSampler(LABELS, batch_size=16, samples_per_class=4, iterations_per_epoch=3)) == 3


def test_a_negative_seed_is_refused_at_once() -> None:
    """Before, --seed -1 ran until numpy's first generator failed with "expected non-negative integer"."""
    with pytest.raises(ValueError, match=re.escape("seed (--seed) must be >= 0, got -1")):
        ClusterBatchSampler(LABELS, None, batch_size=8, samples_per_class=2, iterations_per_epoch=1, seed=-1)
