"""Clustering the training set for divide and conquer: k-means, Hungarian matching, singleton-class removal, and how
much the clusters say about the classes (:func:`cluster_class_nmi`).

A re-clustering (:func:`assign_clusters`) runs k-means (faiss) on L2-normalised features of the whole training set,
relabels the new clusters so that each learner keeps the cluster closest to its previous one (:func:`match_clusters`,
Hungarian matching on the ``K x K`` contingency table), and removes from each cluster the classes that have a single
image there (:func:`drop_singleton_classes`): such an image has no positive partner in its cluster.
"""

from __future__ import annotations

import faiss
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

from metric.knn import l2_normalize

UNASSIGNED = -1
"""Cluster id of a sample that no learner trains on (its class has a single image in its cluster)."""
CLASS_KMEANS_REDO = 10
"""k-means runs (lowest objective kept) when :func:`assign_classes` clusters class means."""


def kmeans(features: np.ndarray, k: int, *, niter: int = 20, seed: int = 0, nredo: int = 1) -> np.ndarray:
    """Cluster ``features`` with faiss k-means (all points used, no subsampling).

    Args:
        features: ``[N, D]`` float32 features (normalise them first for spherical clusters).
        k: number of clusters, ``1 <= k <= N``.
        niter: Lloyd iterations.
        seed: faiss seed; same seed and data -> same clusters.
        nredo: k-means runs from different initialisations; the one with the lowest objective is kept.

    Returns:
        ``[N]`` int64 cluster ids in ``[0, k)``.
    """
    n = len(features)
    if not 1 <= k <= n:
        raise ValueError(f"cannot make {k} clusters of {n} points")
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    x = np.ascontiguousarray(features, dtype=np.float32)
    # min_points_per_centroid only gates faiss's "please provide at least ..." warning, which class-level
    # clustering (a few class means per cluster) would print at every re-clustering; the clusters are unchanged.
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        nredo=nredo,
        max_points_per_centroid=n,
        min_points_per_centroid=1,
        verbose=False,
    )
    km.train(x)
    return km.index.search(x, 1)[1][:, 0].astype(np.int64)


def contingency(previous: np.ndarray, current: np.ndarray, k: int) -> np.ndarray:
    """``[k, k]`` table: entry ``(i, j)`` counts samples in previous cluster ``i`` and current cluster ``j``.

    Samples with a negative id in either array are ignored.
    """
    keep = (previous >= 0) & (current >= 0)
    return np.bincount(previous[keep] * k + current[keep], minlength=k * k).reshape(k, k)


def match_clusters(previous: np.ndarray, current: np.ndarray, k: int) -> np.ndarray:
    """Relabel ``current`` so that cluster ``i`` overlaps most with ``previous`` cluster ``i`` (learner identity).

    Solves the assignment problem with cost ``|A_i| + |B_j| - 2 |A_i & B_j|`` (the size of the symmetric difference,
    as the reference code does). Over a perfect matching the ``|A_i| + |B_j|`` terms sum to a constant, so this is
    the same as maximising the total overlap, which is what is solved.

    Args:
        previous: ``[N]`` int64 cluster ids of the last clustering (negative = unassigned, ignored).
        current: ``[N]`` int64 cluster ids in ``[0, k)`` of the new clustering.
        k: number of clusters.

    Returns:
        ``[N]`` int64: ``current`` relabelled (same partition, permuted ids; negative ids kept).
    """
    rows, cols = linear_sum_assignment(contingency(previous, current, k), maximize=True)
    new_id = np.empty(k, dtype=np.int64)
    new_id[cols] = rows
    return np.where(current >= 0, new_id[np.maximum(current, 0)], current)


def drop_singleton_classes(clusters: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mark :data:`UNASSIGNED` every sample whose class has exactly one image in its cluster.

    Args:
        clusters: ``[N]`` int64 cluster ids (negative ids stay as they are).
        labels: ``[N]`` int64 class labels.

    Returns:
        ``[N]`` int64 cluster ids.
    """
    _, inverse, counts = np.unique(
        np.stack([clusters, labels], axis=1), axis=0, return_inverse=True, return_counts=True
    )
    return np.where(counts[inverse.reshape(-1)] == 1, UNASSIGNED, clusters)


def assign_clusters(
    features: np.ndarray,
    labels: np.ndarray,
    k: int,
    previous: np.ndarray | None = None,
    *,
    niter: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """One re-clustering: normalise, k-means, match to ``previous`` (if given), drop singleton classes.

    Args:
        features: ``[N, D]`` features of the training set (backbone features or embeddings).
        labels: ``[N]`` int64 class labels.
        k: number of clusters (learners).
        previous: ``[N]`` int64 cluster ids of the last re-clustering with the same ``k``, or ``None``.
        niter: k-means iterations.
        seed: k-means seed.

    Returns:
        ``[N]`` int64 cluster ids in ``[0, k)``, :data:`UNASSIGNED` for removed samples.
    """
    clusters = kmeans(l2_normalize(np.asarray(features, dtype=np.float32)), k, niter=niter, seed=seed)
    return _settle(clusters, labels, k, previous)


def cluster_class_nmi(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Normalised mutual information between cluster ids and class labels over the assigned samples.

    ``1`` when the clusters are unions of whole classes (then a cluster's batches hold only classes that look
    alike), ``0`` when every cluster holds the classes in the same proportions as the whole set (batches of one
    cluster are no harder than random ones). sklearn's ``normalized_mutual_info_score`` (arithmetic mean); samples
    with a negative cluster id are ignored.

    Args:
        clusters: ``[N]`` int64 cluster ids.
        labels: ``[N]`` int64 class labels.
    """
    keep = clusters >= 0
    if not keep.any():
        return 0.0
    return float(normalized_mutual_info_score(labels[keep], clusters[keep]))


def classes_per_cluster(clusters: np.ndarray, labels: np.ndarray, k: int) -> list[int]:
    """``[k]`` number of distinct classes among the assigned samples of each cluster."""
    keep = clusters >= 0
    pairs = np.unique(np.stack([clusters[keep], labels[keep]], axis=1), axis=0)
    return np.bincount(pairs[:, 0], minlength=k).tolist()


def sample_per_class(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``min(n, class size)`` images of every class, drawn without replacement by ``rng``."""
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]  # classes in turn, shuffled within each
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    rank = np.arange(len(order)) - np.repeat(starts, counts)  # position of each image within its class
    return np.sort(order[rank < n])


def assign_classes(
    features: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    k: int,
    previous: np.ndarray | None = None,
    *,
    niter: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """A re-clustering of whole classes: k-means on class means of a few images' features, classes -> clusters.

    Each feature row is L2-normalised, each class's mean over its rows is L2-normalised again, k-means clusters the
    class means (best of :data:`CLASS_KMEANS_REDO` runs: there are few points, and one run easily merges two groups
    and splits a third), and every image of ``labels`` gets its class's cluster; then as :func:`assign_clusters`: matched to
    ``previous``, classes with a single image marked :data:`UNASSIGNED`.

    Args:
        features: ``[M, D]`` features of the images ``rows`` (e.g. :func:`sample_per_class`).
        rows: ``[M]`` indices into ``labels`` of the feature rows; every class must have at least one.
        labels: ``[N]`` int64 class labels of the whole training set.
        k: number of clusters, at most the number of classes.
        previous, niter, seed: as in :func:`assign_clusters`.

    Returns:
        ``[N]`` int64 cluster ids in ``[0, k)``, :data:`UNASSIGNED` for single-image classes.
    """
    classes, inverse = np.unique(labels, return_inverse=True)
    sampled = inverse[rows]
    if len(np.unique(sampled)) != len(classes):
        raise ValueError("assign_classes needs features of at least one image of every class")
    x = l2_normalize(np.asarray(features, dtype=np.float32))
    means = np.zeros((len(classes), x.shape[1]), dtype=np.float32)
    np.add.at(means, sampled, x)
    clusters = kmeans(l2_normalize(means), k, niter=niter, seed=seed, nredo=CLASS_KMEANS_REDO)[inverse]
    return _settle(clusters, labels, k, previous)


def _settle(clusters: np.ndarray, labels: np.ndarray, k: int, previous: np.ndarray | None) -> np.ndarray:
    """The end of every re-clustering: new cluster ids matched to ``previous`` (if given, see
    :func:`match_clusters`), then classes with a single image in their cluster marked :data:`UNASSIGNED`."""
    if previous is not None:
        clusters = match_clusters(previous, clusters, k)
    return drop_singleton_classes(clusters, labels)
