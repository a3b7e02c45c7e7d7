"""Retrieval evaluation as the metric learning literature defines it: Recall@K, NMI and MAP@R.

- **Recall@K** (``R@K``): fraction of queries with at least one same-class item among their K nearest gallery items
  (PML's ``precision_at_1`` is R@1). Without a gallery, the queries are their own gallery and each query's own index
  is excluded (exact duplicates of a query still count).
- **MAP@R** (Musgrave et al. 2020, "A Metric Learning Reality Check"): for a query with ``R`` same-class gallery
  items, ``(1/R) * sum_{i <= R} P@i * [item i is same-class]``; PML's ``mean_average_precision_at_r``.
- **NMI**: k-means with as many clusters as classes, scored by sklearn's ``normalized_mutual_info_score``
  (arithmetic mean). k-means is faiss's (``niter=20``, seed 1234, at most 256 points per centroid), as PML's
  ``AccuracyCalculator`` runs it, via :func:`metric.kmeans.faiss_kmeans`; with ``nmi_seeds=S`` the NMI is averaged
  over seeds ``1234 ... 1234 + S - 1``. All evaluated embeddings are clustered: the queries, plus the gallery when
  one is given (D&C's In-shop convention).

Distances are Euclidean (one exact kNN search, shared by R@K and MAP@R, with ``k = max(max(ks), max R)``). Metric
learning compares L2-normalised embeddings; normalise them before calling, or pass ``normalize=True``. Queries
without any same-class gallery item are left out of R@K and MAP@R, as PML does.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

from metric.kmeans import faiss_kmeans
from metric.knn import as_float32, knn, l2_normalize

KMEANS_SEED = 1234  # faiss's default clustering seed, used by PML's AccuracyCalculator

ArrayLike = np.ndarray | torch.Tensor


def evaluate_retrieval(
    query: ArrayLike,
    query_labels: ArrayLike,
    gallery: ArrayLike | None = None,
    gallery_labels: ArrayLike | None = None,
    ks: Sequence[int] = (1, 2, 4, 8),
    nmi: bool = True,
    map_at_r: bool = True,
    nmi_seeds: int = 1,
    chunk_size: int = 4096,
    device: str | torch.device | None = None,
    kmeans_niter: int = 20,
    normalize: bool = False,
) -> dict[str, float]:
    """Recall@K for each K, NMI and MAP@R of a retrieval task.

    Args:
        query: ``[Nq, D]`` query embeddings.
        query_labels: ``[Nq]`` integer class labels.
        gallery: ``[Ng, D]`` gallery embeddings (e.g. In-shop's gallery); ``None`` retrieves among the queries
            themselves, leaving each query out of its own results.
        gallery_labels: ``[Ng]`` labels, given exactly when ``gallery`` is.
        ks: the K of each ``R@K``.
        nmi: compute ``NMI``.
        map_at_r: compute ``MAP@R``.
        nmi_seeds: average the NMI over this many k-means seeds.
        chunk_size: queries searched at once (bounds memory).
        device: where to search, see :func:`metric.knn.knn`; faiss-gpu is used when present unless ``"cpu"``.
        kmeans_niter: k-means iterations for the NMI (PML uses 20; the D&C code 100).
        normalize: L2-normalise the embeddings here.

    Returns:
        ``{"R@1": ..., "R@2": ..., "NMI": ..., "MAP@R": ...}``, fractions in ``[0, 1]`` (NaN when no query has
        a same-class gallery item).
    """
    if (gallery is None) != (gallery_labels is None):
        raise ValueError("pass gallery and gallery_labels together, or neither")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    if nmi_seeds < 1:
        raise ValueError(f"nmi_seeds must be >= 1, got {nmi_seeds}")
    q, q_labels = _embeddings(query, normalize), _labels(query_labels, len(query))
    self_retrieval = gallery is None
    g = q if gallery is None else _embeddings(gallery, normalize)
    g_labels = q_labels if gallery_labels is None else _labels(gallery_labels, len(g))
    results: dict[str, float] = {}
    relevant = count_relevant(q_labels, g_labels, exclude_self=self_retrieval)
    k = min(max(max(ks), int(relevant.max()) if map_at_r else 0), len(g) - int(self_retrieval))
    if k >= 1:
        _, indices = knn(q, k, None if self_retrieval else g, chunk_size=chunk_size, device=device)
        hits = g_labels[indices] == q_labels[:, None]
    else:  # a single item: nothing to retrieve, no query is answerable
        hits = np.zeros((len(q), 0), dtype=bool)
    answerable = relevant > 0
    for K in ks:
        results[f"R@{K}"] = recall_at_k(hits[answerable], K)
    if map_at_r:
        results["MAP@R"] = mean_average_precision_at_r(hits[answerable], relevant[answerable])
    if nmi:
        everything = q if self_retrieval else np.concatenate([q, g])
        labels = q_labels if self_retrieval else np.concatenate([q_labels, g_labels])
        results["NMI"] = nmi_score(everything, labels, seeds=nmi_seeds, niter=kmeans_niter, gpu=_gpu(device))
    return results


def count_relevant(query_labels: np.ndarray, gallery_labels: np.ndarray, exclude_self: bool) -> np.ndarray:
    """``[Nq]`` number ``R`` of gallery items sharing each query's label (the query itself not counted when
    ``exclude_self``, i.e. when the queries are the gallery)."""
    classes, counts = np.unique(gallery_labels, return_counts=True)
    pos = np.clip(np.searchsorted(classes, query_labels), 0, len(classes) - 1)
    found = classes[pos] == query_labels
    return np.where(found, counts[pos], 0) - int(exclude_self)


def recall_at_k(hits: np.ndarray, k: int) -> float:
    """Fraction of rows with a hit among their first ``k`` columns.

    Args:
        hits: ``[Nq, k']`` bool, ``hits[i, j]`` = the ``j``-th neighbour of query ``i`` has its class.
        k: K (all ``k'`` columns are used when ``k > k'``).
    """
    return float(hits[:, :k].any(1).mean()) if len(hits) else float("nan")


def mean_average_precision_at_r(hits: np.ndarray, num_relevant: np.ndarray) -> float:
    """MAP@R (Musgrave et al. 2020): mean over queries of ``(1/R) sum_{i <= R} P@i * hits[i]``.

    Args:
        hits: ``[Nq, k]`` bool neighbour hits, ``k >= max(num_relevant)``.
        num_relevant: ``[Nq]`` ``R`` of each query, all ``>= 1``.
    """
    if not len(hits):
        return float("nan")
    rank = np.arange(1, hits.shape[1] + 1)
    within_r = rank[None, :] <= num_relevant[:, None]
    counted = hits & within_r
    precision = np.cumsum(counted, axis=1) / rank[None, :]
    return float(((precision * counted).sum(1) / num_relevant).mean())


def nmi_score(embeddings: np.ndarray, labels: np.ndarray, seeds: int = 1, niter: int = 20, gpu: bool = False) -> float:
    """NMI between ``labels`` and faiss k-means (one cluster per class), averaged over ``seeds`` seeds.

    Args:
        embeddings: ``[N, D]`` float32.
        labels: ``[N]`` integer labels.
        seeds: number of k-means seeds, ``1234, 1235, ...``.
        niter: k-means iterations.
        gpu: run the k-means searches with faiss-gpu.
    """
    num_classes = len(np.unique(labels))
    scores = [
        normalized_mutual_info_score(
            labels, faiss_kmeans(embeddings, num_classes, niter=niter, seed=KMEANS_SEED + s, gpu=gpu)[1]
        )
        for s in range(seeds)
    ]
    return float(np.mean(scores))


def vehicleid_gallery_split(labels: ArrayLike, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """PKU VehicleID's protocol: one random image per identity forms the gallery, the others are queries.

    Args:
        labels: ``[N]`` vehicle ids of a test list.
        rng: random generator (the draw differs per repetition).

    Returns:
        ``(query_indices, gallery_indices)``, sorted int64 arrays.
    """
    labels = _labels(labels, len(labels))
    order = rng.permutation(len(labels))
    _, first = np.unique(labels[order], return_index=True)
    gallery = np.sort(order[first])
    return np.setdiff1d(np.arange(len(labels)), gallery), gallery


def evaluate_vehicleid(
    embeddings: ArrayLike,
    labels: ArrayLike,
    ks: Sequence[int] = (1, 5),
    repetitions: int = 10,
    seed: int = 0,
    normalize: bool = False,
    chunk_size: int = 4096,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Recall@K on a VehicleID test list, averaged over ``repetitions`` random gallery draws (Liu et al. 2016).

    Args:
        embeddings: ``[N, D]`` embeddings of a test list (small/medium/large).
        labels: ``[N]`` vehicle ids.
        ks: the K of each ``R@K`` (the papers report 1 and 5).
        repetitions: number of gallery draws (10 in the papers).
        seed: seed of the draws.
        normalize, chunk_size, device: as in :func:`evaluate_retrieval`.

    Returns:
        ``{"R@1": ..., "R@5": ...}``, each the mean over repetitions.
    """
    x, y = _embeddings(embeddings, normalize), _labels(labels, len(embeddings))
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(repetitions):
        queries, gallery = vehicleid_gallery_split(y, rng)
        retrieval = evaluate_retrieval(
            x[queries], y[queries], x[gallery], y[gallery], ks=ks, nmi=False, map_at_r=False,
            chunk_size=chunk_size, device=device,
        )  # fmt: skip
        runs.append(retrieval)
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def _embeddings(x: ArrayLike, normalize: bool) -> np.ndarray:
    x = as_float32(x)
    return l2_normalize(x) if normalize else x


def _labels(y: ArrayLike, n: int) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {n} integers (one per embedding), got shape {y.shape}, dtype {y.dtype}")
    return y.astype(np.int64)


def _gpu(device: str | torch.device | None) -> bool:
    return faiss.get_num_gpus() > 0 and (device is None or torch.device(device).type == "cuda")
