from __future__ import annotations

import itertools

import numpy as np
import pytest

from metric.clustering import (
    UNASSIGNED,
    assign_classes,
    assign_clusters,
    classes_per_cluster,
    cluster_class_nmi,
    contingency,
    drop_singleton_classes,
    kmeans,
    match_clusters,
    sample_per_class,
)


def _blobs(k: int = 4, per: int = 30, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(k, dim) * 10  # orthogonal: separated also after L2 normalisation
    truth = np.repeat(np.arange(k), per)
    return (centres[truth] + rng.normal(size=(k * per, dim))).astype(np.float32), truth


def test_kmeans_recovers_blobs() -> None:
    x, truth = _blobs()
    ids = kmeans(x, 4, seed=3)
    assert ids.dtype == np.int64 and set(ids) == {0, 1, 2, 3}
    # same partition as the truth: every true blob maps to one cluster
    assert all(len(set(ids[truth == t])) == 1 for t in range(4))
    assert np.array_equal(kmeans(x, 4, seed=3), ids)
    assert np.array_equal(kmeans(x, 1), np.zeros(len(x)))
    with pytest.raises(ValueError, match="cannot make 200 clusters of 120 points"):
        kmeans(x, 200)


def test_contingency_ignores_unassigned() -> None:
    prev = np.array([0, 0, 1, -1, 2])
    curr = np.array([1, 1, 0, 2, 2])
    np.testing.assert_array_equal(contingency(prev, curr, 3), [[0, 2, 0], [1, 0, 0], [0, 0, 1]])


def test_hungarian_matching_keeps_identity_under_relabelling() -> None:
    rng = np.random.default_rng(0)
    prev = rng.integers(0, 5, size=500)
    relabel = np.array([3, 0, 4, 1, 2])
    curr = relabel[prev]
    np.testing.assert_array_equal(match_clusters(prev, curr, 5), prev)
    moved = rng.random(500) < 0.2  # some points change cluster: identity still follows the bulk
    noisy = np.where(moved, rng.integers(0, 5, size=500), curr)
    matched = match_clusters(prev, noisy, 5)
    assert (matched == prev).mean() > 0.75
    # same partition as the input, only renamed
    assert len(set(zip(matched.tolist(), noisy.tolist(), strict=True))) == 5


def test_matching_is_optimal_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        prev, curr = rng.integers(-1, 4, size=60), rng.integers(0, 4, size=60)
        matched = match_clusters(prev, curr, 4)
        best = max((np.where(curr >= 0, np.array(p)[curr], -1) == prev).sum() for p in itertools.permutations(range(4)))
        assert (matched == prev).sum() == best


def test_drop_singleton_classes_matches_slow_loop() -> None:
    rng = np.random.default_rng(2)
    clusters, labels = rng.integers(-1, 3, size=80), rng.integers(0, 25, size=80)
    expected = clusters.copy()
    for i in range(80):
        if clusters[i] >= 0 and ((clusters == clusters[i]) & (labels == labels[i])).sum() == 1:
            expected[i] = UNASSIGNED
    np.testing.assert_array_equal(drop_singleton_classes(clusters, labels), expected)
    assert (expected == UNASSIGNED).sum() > (clusters == UNASSIGNED).sum()  # the case is exercised


def test_assign_clusters_follows_previous_identity() -> None:
    x, _ = _blobs(k=3, per=20)
    labels = np.arange(len(x)) // 2  # pairs: no singletons
    first = assign_clusters(x, labels, 3, seed=0)
    for seed in range(1, 4):  # a different k-means seed may number the clusters differently; matching undoes it
        np.testing.assert_array_equal(assign_clusters(x, labels, 3, first, seed=seed), first)
    assert (assign_clusters(x, np.arange(len(x)), 3) == UNASSIGNED).all()  # every class is a singleton


def test_cluster_class_nmi_is_one_for_whole_classes_and_zero_for_mixed_clusters() -> None:
    labels = np.repeat(np.arange(8), 4)
    by_superclass = labels // 2  # clusters are unions of whole classes
    # I = H(clusters) = 2 bits, H(classes) = 3 bits: arithmetic NMI 2 I / (2 + 3) = 0.8
    assert cluster_class_nmi(by_superclass, labels) == pytest.approx(0.8)
    mixed = np.tile(np.arange(4), 8)  # every cluster holds one image of every class
    assert cluster_class_nmi(mixed, labels) == pytest.approx(0.0, abs=1e-12)
    assert cluster_class_nmi(labels, labels) == pytest.approx(1.0)
    unassigned = by_superclass.copy()
    unassigned[:4] = UNASSIGNED  # ignored: the other 7 classes in 4 clusters
    assert cluster_class_nmi(unassigned, labels) == pytest.approx(cluster_class_nmi(by_superclass[4:], labels[4:]))
    assert classes_per_cluster(by_superclass, labels, 5) == [2, 2, 2, 2, 0]
    assert classes_per_cluster(mixed, labels, 4) == [8, 8, 8, 8]


def test_assign_classes_clusters_whole_classes_from_a_sample() -> None:
    x, truth = _blobs(k=4, per=30)  # 4 blobs; 12 classes of 10 images, 3 classes per blob
    labels = np.repeat(np.arange(12), 10)
    rows = sample_per_class(labels, 3, np.random.default_rng(0))
    assert len(rows) == 36 and (np.bincount(labels[rows]) == 3).all() and len(set(rows)) == 36
    clusters = assign_classes(x[rows], rows, labels, 4, seed=1)
    assert all(len(set(clusters[labels == c])) == 1 for c in range(12))  # a class is never split
    assert all(len(set(clusters[truth == t])) == 1 for t in range(4))  # and the blobs are found
    with pytest.raises(ValueError, match="at least one image of every class"):
        assign_classes(x[:5], np.arange(5), labels, 4)


def test_kmeans_of_few_points_prints_no_faiss_warning(capfd: pytest.CaptureFixture[str]) -> None:
    """Class-level clustering gives faiss few points per centroid by design: no misleading warning on stderr."""
    features = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    ids = kmeans(features, 4, seed=0)
    assert sorted(set(ids.tolist())) == [0, 1, 2, 3]
    assert "WARNING clustering" not in capfd.readouterr().err
