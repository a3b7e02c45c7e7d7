"""Exact k-nearest-neighbour search by squared Euclidean distance, chunked over the queries.

Backends: faiss ``IndexFlatL2`` on the CPU (the fastest exact search measured on the 2-core reference machine, see
``bench/eval.py``), faiss on all GPUs when faiss-gpu is installed, and chunked ``torch`` matmul + ``topk`` on a CUDA
device otherwise. For L2-normalised embeddings the order equals the cosine-similarity order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import faiss
import numpy as np
import torch

FAISS_GPU_MAX_K = 2048  # faiss-gpu's k-selection limit; larger k falls back to torch or the CPU

Backend = Literal["auto", "faiss", "torch"]
Searcher = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def knn(
    query: np.ndarray | torch.Tensor,
    k: int,
    gallery: np.ndarray | torch.Tensor | None = None,
    chunk_size: int = 4096,
    device: str | torch.device | None = None,
    backend: Backend = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest gallery items of each query, nearest first.

    Args:
        query: ``[Nq, D]`` embeddings (searched in float32).
        k: neighbours per query; at most the gallery size (minus one without a gallery).
        gallery: ``[Ng, D]`` embeddings. ``None`` searches ``query`` within itself and excludes each query's own
            index (not every item at distance 0: exact duplicates of the query still count as neighbours).
        chunk_size: queries searched at once; bounds the ``chunk_size x Ng`` distance block of the torch backend.
        device: ``"cpu"`` keeps faiss on the CPU; ``None`` or a CUDA device lets faiss use all GPUs when faiss-gpu
            sees one (and ``k <= 2048``); the torch backend runs on this device (default CPU).
        backend: ``"faiss"``, ``"torch"``, or ``"auto"``: faiss, except torch for a CUDA ``device`` that faiss
            cannot serve.

    Returns:
        ``(distances, indices)``: ``[Nq, k]`` float32 squared distances (ascending) and int64 gallery indices.
    """
    exclude_self = gallery is None
    query_np = as_float32(query)
    gallery_np = query_np if gallery is None else as_float32(gallery)
    limit = len(gallery_np) - int(exclude_self)
    if not 1 <= k <= limit:
        raise ValueError(f"k must be in [1, {limit}] (the number of gallery items), got {k}")
    if query_np.shape[1] != gallery_np.shape[1]:
        raise ValueError(f"query and gallery dimensions differ: {query_np.shape[1]} vs {gallery_np.shape[1]}")
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"backend must be 'auto', 'faiss' or 'torch', got {backend!r}")
    search = _searcher(gallery_np, k + int(exclude_self), device, backend)
    distances = np.empty((len(query_np), k), dtype=np.float32)
    indices = np.empty((len(query_np), k), dtype=np.int64)
    for start in range(0, len(query_np), chunk_size):
        stop = min(start + chunk_size, len(query_np))
        dist, idx = search(query_np[start:stop])
        if exclude_self:
            dist, idx = _drop_self(dist, idx, np.arange(start, stop))
        distances[start:stop], indices[start:stop] = dist, idx
    return distances, indices


def as_float32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Embeddings as a C-contiguous ``[N, D]`` float32 numpy array (what faiss takes), ``N >= 1``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {x.shape}")
    return x


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """The rows of ``[N, D]`` ``x`` scaled to unit L2 norm, in ``x``'s dtype (a row of zeros stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _searcher(gallery: np.ndarray, k: int, device: str | torch.device | None, backend: Backend) -> Searcher:
    """A function ``queries [B, D] -> (squared distances [B, k], indices [B, k])`` over ``gallery``."""
    if backend == "torch":
        return _torch_searcher(torch.from_numpy(gallery).to(device or "cpu"), k)
    on_cuda = device is not None and torch.device(device).type == "cuda"
    faiss_gpu = (device is None or on_cuda) and faiss.get_num_gpus() > 0 and k <= FAISS_GPU_MAX_K
    if backend == "auto" and on_cuda and not faiss_gpu:
        return _torch_searcher(torch.from_numpy(gallery).to(device), k)
    index = faiss.IndexFlatL2(gallery.shape[1])
    if faiss_gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(gallery)
    return lambda queries: index.search(queries, k)


def _torch_searcher(gallery: torch.Tensor, k: int) -> Searcher:
    """Chunked exact search with one matmul and one ``topk`` per chunk on ``gallery.device``."""
    norms = (gallery * gallery).sum(1)

    def search(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = torch.from_numpy(queries).to(gallery.device)
        dist = (q * q).sum(1, keepdim=True) + norms[None, :] - 2 * q @ gallery.T
        values, indices = dist.clamp_(min=0).topk(k, dim=1, largest=False)
        return values.cpu().numpy(), indices.cpu().numpy()

    return search


def _drop_self(dist: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from a ``k + 1`` search; rows without it (more than ``k`` exact duplicates
    ranked first) lose their last neighbour instead."""
    is_self = idx == rows[:, None]
    is_self[~is_self.any(1), -1] = True
    keep = ~is_self
    shape = (len(rows), idx.shape[1] - 1)
    return dist[keep].reshape(shape), idx[keep].reshape(shape)
