"""k-means that reproduces ``faiss.Kmeans`` exactly, for the NMI of retrieval evaluation.

pytorch-metric-learning's ``AccuracyCalculator`` clusters with ``faiss.Kmeans(d, k, niter=20)`` (faiss defaults
otherwise: ``seed=1234``, ``max_points_per_centroid=256``, random initialisation) and then assigns every point with
one more ``index.search(x, 1)``. :func:`faiss_kmeans` runs the same algorithm step by step in numpy around faiss's
own exact search, so it returns the same clusters, and skips work faiss repeats:

- the final assignment search is skipped when k-means has converged (the last iteration's assignment is final);
- iterations stop once an assignment repeats, which is a fixed point: faiss 1.15 stops one search later, when the
  objective repeats (older faiss runs all ``niter`` iterations, with the same result);
- after the first iterations most centroids keep exactly their members, hence their position: a point is measured
  only against the centroids that moved, and searched again with faiss only when one of them may now be nearer
  than its own centroid (one upper and one lower bound per point as in Hamerly [1], kept exact rather than
  loosened by centroid drift, since unmoved centroids need no update).

Steps mirrored from ``faiss/Clustering.cpp``: random init with ``rand_perm(n, seed + 1)``; subsampling with
``rand_perm(n, seed)`` when ``n > k * max_points_per_centroid``; centroids as float32 sums in point order times
``1 / count``; empty clusters split off a cluster drawn with ``RandomGenerator(1234)``, perturbed by ``1 +- 1/1024``.

[1] G. Hamerly, "Making k-means even faster", SDM 2010.
"""

from __future__ import annotations

import faiss
import numpy as np

_SPLIT_SEED = 1234  # faiss's split_clusters draws from RandomGenerator(1234), re-seeded every iteration
_SPLIT_EPS = 1 / 1024  # faiss's symmetric perturbation of a split centroid
_RNG_BLOCK = 65536  # random numbers drawn at once while choosing clusters to split
_BLOCK_ELEMENTS = 1 << 22  # point-centroid distances held at once (32 MiB in float64)


def faiss_kmeans(
    x: np.ndarray,
    num_clusters: int,
    niter: int = 20,
    seed: int = 1234,
    max_points_per_centroid: int = 256,
    gpu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``x`` like ``faiss.Kmeans(d, num_clusters, niter=niter, seed=seed).train(x)``, then assign ``x``.

    Args:
        x: ``[N, D]`` points (cast to float32).
        num_clusters: ``K``, at most ``N``.
        niter: maximum number of k-means iterations.
        seed: faiss's clustering seed (its default is 1234).
        max_points_per_centroid: faiss subsamples ``K * max_points_per_centroid`` points when ``N`` is larger.
        gpu: search with faiss on all GPUs (needs faiss-gpu); results may differ from the CPU in rounding.

    Returns:
        ``(centroids, assignment)``: ``[K, D]`` float32 centroids and the ``[N]`` int64 index of each point's
        nearest centroid, equal to ``faiss.Kmeans`` followed by ``kmeans.index.search(x, 1)``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be in [1, {n}] (the number of points), got {num_clusters}")
    if not np.isfinite(x).all():
        raise ValueError("k-means input contains NaN or Inf")
    train = x
    if n > num_clusters * max_points_per_centroid:
        train = x[_rand_perm(n, seed)[: num_clusters * max_points_per_centroid]]
    if n == num_clusters:  # faiss copies the points as centroids
        centroids = train.copy()
        return centroids, _Assigner(x, gpu).search(centroids, np.arange(n))[0]
    assigner = _Assigner(train, gpu)
    centroids = train[_rand_perm(len(train), seed + 1)[:num_clusters]]
    assign, converged = None, False
    for _ in range(niter):
        previous, assign = assign, assigner(centroids)
        if previous is not None and np.array_equal(assign, previous):
            converged = True  # the same assignment gives the same centroids: a fixed point
            break
        centroids = _update_centroids(train, assign, num_clusters)
    if train is not x:
        return centroids, _Assigner(x, gpu).search(centroids, np.arange(n))[0]
    return centroids, assign if converged else assigner(centroids)


def _rand_perm(n: int, seed: int) -> np.ndarray:
    """faiss's ``rand_perm``: the permutation its clustering draws for ``seed``."""
    perm = np.empty(n, dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(perm), n, seed)
    return perm


def _update_centroids(x: np.ndarray, assign: np.ndarray, k: int) -> np.ndarray:
    """faiss's ``compute_centroids`` + ``split_clusters``: float32 means, then empty clusters split off others."""
    centroids = np.zeros((k, x.shape[1]), dtype=np.float32)
    np.add.at(centroids, assign, x)  # float32, in point order, like faiss's loop
    counts = np.bincount(assign, minlength=k).astype(np.float32)
    filled = counts > 0
    centroids[filled] *= (np.float32(1) / counts[filled])[:, None]
    if filled.all():
        return centroids
    n = len(x)
    parity = np.arange(x.shape[1]) % 2 == 0
    up, down = np.float32(1 + _SPLIT_EPS), np.float32(1 - _SPLIT_EPS)
    uniforms = _FaissUniforms(_SPLIT_SEED)
    p = _split_probability(counts, n, k)
    for empty in np.flatnonzero(~filled):
        donor = uniforms.first_success(p)
        centroids[empty] = np.where(parity, centroids[donor] * up, centroids[donor] * down)
        centroids[donor] = np.where(parity, centroids[donor] * down, centroids[donor] * up)
        counts[empty] = counts[donor] / np.float32(2)
        counts[donor] -= counts[empty]
        p[[empty, donor]] = _split_probability(counts[[empty, donor]], n, k)
    return centroids


class _FaissUniforms:
    """The float stream of faiss's ``RandomGenerator(seed).rand_float()`` (std::mt19937 / float(2^32 - 1))."""

    def __init__(self, seed: int) -> None:
        self._bits = np.random.MT19937()
        self._bits._legacy_seeding(seed)  # std::mt19937(seed) seeding, as numpy's RandomState does
        self._buffer = np.empty(0, dtype=np.float32)

    def first_success(self, p: np.ndarray) -> int:
        """Cycle ``j = 0, 1, ...`` (mod ``len(p)``) drawing ``r`` until ``r < p[j]``; return that ``j``."""
        k = len(p)
        cycle = np.tile(p, 3)  # windows of 2k draws starting anywhere in [0, k) stay inside
        start = 0
        while True:
            if len(self._buffer) < 2 * k:
                raw = self._bits.random_raw(max(_RNG_BLOCK, 2 * k)).astype(np.float32)
                self._buffer = np.concatenate([self._buffer, raw / np.float32(4294967295.0)])
            r = self._buffer[: 2 * k]
            hits = np.flatnonzero(r < cycle[start : start + len(r)])
            if len(hits):
                self._buffer = self._buffer[hits[0] + 1 :]
                return int((start + hits[0]) % k)
            self._buffer = self._buffer[len(r) :]
            start = (start + len(r)) % k


def _split_probability(counts: np.ndarray, n: int, k: int) -> np.ndarray:
    """faiss's ``p = (hassign - 1.0) / (float)(n - k)``: computed in double, stored as float."""
    return ((counts.astype(np.float64) - 1.0) / np.float64(np.float32(n - k))).astype(np.float32)


class _Assigner:
    """Nearest-centroid assignment of fixed points that searches again only where a moved centroid may matter.

    After a k-means update most centroids keep exactly the same members, hence exactly the same position. For
    each point it keeps the squared distance to its centroid (``upper``) and a lower bound on the squared distance
    to every other centroid (``lower``). A new assignment measures the points against the moved centroids only;
    a point whose centroid is still nearer than every other one by more than the worst-case float32 rounding of
    a distance keeps it, and faiss searches the rest, so faiss decides every case where rounding could matter.
    """

    def __init__(self, x: np.ndarray, gpu: bool) -> None:
        self.x, self.gpu = x, gpu
        self.norms = np.einsum("nd,nd->n", x, x, dtype=np.float64)
        # float32 rounding of ||x||^2 + ||c||^2 - 2<x, c> is below d * eps * (||x||^2 + ||c||^2); allow 4x that
        self.rounding = 4 * x.shape[1] * float(np.finfo(np.float32).eps)
        self.assign = np.empty(0, dtype=np.int64)
        self.centroids = np.empty((0, x.shape[1]), dtype=np.float32)
        self.upper = self.lower = np.empty(0)

    def search(self, centroids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """faiss nearest centroid of ``x[rows]`` and squared distances to the nearest and the second nearest."""
        index = faiss.IndexFlatL2(centroids.shape[1])
        if self.gpu:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(centroids)
        k = min(2, len(centroids))
        dist, top = index.search(self.x[rows], k)
        nearest = top[:, 0].copy()
        second = dist[:, 1] if k == 2 else np.full(len(rows), np.inf, dtype=np.float32)
        # top-2 goes through a heap; near ties are left to faiss's top-1 search, the one k-means (and PML) calls
        tied = np.flatnonzero(second - dist[:, 0] <= self._margin(rows, centroids))
        if len(tied):
            nearest[tied] = index.search(self.x[rows[tied]], 1)[1][:, 0]
        return nearest, dist[:, 0].astype(np.float64), second.astype(np.float64)

    def __call__(self, centroids: np.ndarray) -> np.ndarray:
        """``[N]`` index of the nearest centroid of each point, as ``IndexFlatL2.search(x, 1)`` returns it."""
        moved = np.flatnonzero((centroids != self.centroids).any(1)) if len(self.assign) else None
        self.centroids = centroids.copy()
        if moved is None or len(moved) > len(centroids) // 2:
            self.assign, self.upper, self.lower = self.search(centroids, np.arange(len(self.x)))
            return self.assign.copy()
        if not len(moved):
            return self.assign.copy()
        slot = np.full(len(centroids), -1)
        slot[moved] = np.arange(len(moved))
        step = max(1, _BLOCK_ELEMENTS // len(moved))
        unsure = []
        for start in range(0, len(self.x), step):
            rows = np.arange(start, min(start + step, len(self.x)))
            dist = self._squared_distances(rows, centroids[moved])
            own = slot[self.assign[rows]]
            mine = own >= 0
            self.upper[rows[mine]] = dist[mine, own[mine]]
            dist[mine, own[mine]] = np.inf
            self.lower[rows] = np.minimum(self.lower[rows], dist.min(1))
            unsure.append(rows[self.upper[rows] + self._margin(rows, centroids) >= self.lower[rows]])
        unsure = np.concatenate(unsure)
        if len(unsure):
            self.assign[unsure], self.upper[unsure], self.lower[unsure] = self.search(centroids, unsure)
        return self.assign.copy()

    def _squared_distances(self, rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """``[len(rows), len(centroids)]`` float64 squared distances, from a float32 product like faiss's."""
        products = self.x[rows] @ centroids.T
        norms = np.einsum("kd,kd->k", centroids, centroids, dtype=np.float64)
        return np.maximum(self.norms[rows, None] + norms[None, :] - 2 * products.astype(np.float64), 0)

    def _margin(self, rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """Squared-distance margin covering float32 rounding for ``x[rows]`` against ``centroids``."""
        return self.rounding * (self.norms[rows] + np.einsum("kd,kd->k", centroids, centroids).max())
