"""Permutation banks: the fixed sets of orderings an ordering task classifies.

A bank is a ``[K, n]`` integer tensor whose rows are permutations of ``range(n)``. Row ``k`` is class ``k`` of the
ordering CNN: elements are shown to the network in the order ``elements[bank[k]]`` and the CNN must predict ``k``.

* For small ``n`` the bank holds all ``n!`` permutations (lexicographic order), or — with ``identify_reverse`` —
  one representative per {permutation, reversed permutation} pair, as OPN does for the temporal task.
* For larger ``n`` (jigsaw 3x3: 9! = 362,880) the bank is a greedy maximal-minimum-Hamming-distance subset of size
  ``K`` (Noroozi & Favaro 2016): start from a seeded random permutation, then repeatedly add the candidate whose
  minimum Hamming distance to the chosen set is largest (ties broken by mean distance, then by index).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

#: Above this many elements, enumerating all n! candidates is too costly; candidates are then sampled.
MAX_ENUMERATED_N = 9
#: Number of random candidates considered per greedy step when ``n`` is too large to enumerate.
_SAMPLED_CANDIDATES = 20_000


@dataclass(frozen=True)
class PermutationBank:
    """A fixed, ordered set of permutations of ``n`` elements.

    Attributes:
        perms: ``[K, n]`` int64 tensor; row ``k`` is the permutation of class ``k``.
        identify_reverse: whether each row also stands for its reverse (temporal task, OPN style).
    """

    perms: torch.Tensor
    identify_reverse: bool = False

    def __post_init__(self) -> None:
        if self.perms.ndim != 2 or self.perms.dtype != torch.int64:
            raise ValueError(f"perms must be a [K, n] int64 tensor, got {tuple(self.perms.shape)} {self.perms.dtype}")
        n = self.perms.shape[1]
        expected = torch.arange(n)
        if not bool((self.perms.sort(dim=1).values == expected).all()):
            raise ValueError("every row of perms must be a permutation of range(n)")
        if torch.unique(self.perms, dim=0).shape[0] != self.perms.shape[0]:
            raise ValueError("perms contains duplicate rows")

    @property
    def size(self) -> int:
        """Number of permutations K (the number of classes)."""
        return int(self.perms.shape[0])

    @property
    def num_elements(self) -> int:
        """Number of elements n each permutation orders."""
        return int(self.perms.shape[1])

    def __len__(self) -> int:
        return self.size

    def hamming_to_identity(self) -> torch.Tensor:
        """``[K]`` number of positions each permutation moves (its difficulty proxy for curricula)."""
        distance = (self.perms != torch.arange(self.num_elements)).sum(dim=1)
        if self.identify_reverse:
            reverse = (self.perms.flip(1) != torch.arange(self.num_elements)).sum(dim=1)
            distance = torch.minimum(distance, reverse)
        return distance

    def pairwise_hamming(self) -> torch.Tensor:
        """``[K, K]`` Hamming distances between the bank's permutations."""
        return (self.perms[:, None, :] != self.perms[None, :, :]).sum(dim=2)

    def save(self, path: str | Path) -> None:
        """Write the bank to ``path`` (a ``.pt`` file)."""
        torch.save({"perms": self.perms, "identify_reverse": self.identify_reverse}, path)

    @classmethod
    def load(cls, path: str | Path) -> PermutationBank:
        """Read a bank written by :meth:`save`."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(perms=state["perms"], identify_reverse=bool(state["identify_reverse"]))


def num_distinct_permutations(n: int, identify_reverse: bool = False) -> int:
    """How many distinct classes exist for ``n`` elements (``n!``, halved when reverses are identified)."""
    total = math.factorial(n)
    return total // 2 if identify_reverse and n > 1 else total


def _all_permutations(n: int, identify_reverse: bool) -> np.ndarray:
    perms = []
    for p in itertools.permutations(range(n)):
        if identify_reverse and p[::-1] < p:
            continue  # keep the lexicographically smaller of each {p, reversed p} pair
        perms.append(p)
    return np.asarray(perms, dtype=np.int64)


def _candidates(n: int, identify_reverse: bool, rng: np.random.Generator) -> np.ndarray:
    if n <= MAX_ENUMERATED_N:
        return _all_permutations(n, identify_reverse)
    cands = np.stack([rng.permutation(n) for _ in range(_SAMPLED_CANDIDATES)])
    if identify_reverse:
        flip = np.array([tuple(c[::-1]) < tuple(c) for c in cands])
        cands[flip] = cands[flip, ::-1]
    return np.unique(cands, axis=0)


def _hamming(candidates: np.ndarray, perm: np.ndarray, identify_reverse: bool) -> np.ndarray:
    distance = (candidates != perm).sum(axis=1)
    if identify_reverse:
        distance = np.minimum(distance, (candidates != perm[::-1]).sum(axis=1))
    return distance


def max_hamming_bank(n: int, size: int, seed: int = 0, identify_reverse: bool = False) -> PermutationBank:
    """Greedy maximal-minimum-Hamming-distance subset of the permutations of ``n`` elements.

    Args:
        n: number of elements (frames or tiles).
        size: number of permutations K to select.
        seed: seeds the first permutation (and the candidate sample when ``n > 9``).
        identify_reverse: treat a permutation and its reverse as one class.

    Returns:
        A :class:`PermutationBank` of ``size`` rows, identical for identical arguments.
    """
    available = num_distinct_permutations(n, identify_reverse)
    if not 1 <= size <= available:
        raise ValueError(
            f"a bank of {size} permutations of n={n} elements is impossible: only {available} distinct "
            f"permutations exist{' when reverses are identified' if identify_reverse else ''}"
        )
    rng = np.random.default_rng(seed)
    candidates = _candidates(n, identify_reverse, rng)
    chosen = [int(rng.integers(len(candidates)))]
    min_dist = _hamming(candidates, candidates[chosen[0]], identify_reverse).astype(np.float64)
    sum_dist = min_dist.copy()
    while len(chosen) < size:
        score = min_dist * (n + 1) * size + sum_dist  # lexicographic: min distance first, then mean distance
        score[chosen] = -1
        best = int(np.argmax(score))
        chosen.append(best)
        d = _hamming(candidates, candidates[best], identify_reverse)
        min_dist = np.minimum(min_dist, d)
        sum_dist += d
    return PermutationBank(torch.from_numpy(candidates[chosen].copy()), identify_reverse=identify_reverse)


@lru_cache(maxsize=32)
def make_bank(n: int, size: int | None = None, seed: int = 0, identify_reverse: bool = False) -> PermutationBank:
    """The bank an ordering task uses: all permutations if ``size`` is ``None`` or covers them, else max-Hamming.

    Memoised: every env reset builds its tasks anew, and a 3x3 max-Hamming bank takes about a second to select, so
    equal arguments return the same (shared, not to be modified) bank.

    Args:
        n: number of elements to order (>= 2).
        size: number of classes K; ``None`` means every distinct permutation.
        seed: seed of the max-Hamming selection (ignored when all permutations are used).
        identify_reverse: treat a permutation and its reverse as one class (OPN's temporal classes).
    """
    if n < 2:
        raise ValueError(f"ordering needs at least 2 elements, got n={n}")
    available = num_distinct_permutations(n, identify_reverse)
    if size is None or size == available:
        if n > MAX_ENUMERATED_N:
            raise ValueError(f"n={n} has {available} permutations; pass size= to select a max-Hamming subset")
        perms = torch.from_numpy(_all_permutations(n, identify_reverse))
        return PermutationBank(perms, identify_reverse=identify_reverse)
    return max_hamming_bank(n, size, seed=seed, identify_reverse=identify_reverse)
