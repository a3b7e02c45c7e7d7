from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from metric.losses import build_loss
from metric.miners import DistanceWeightedMiner

TOL = {torch.float32: 1e-5, torch.float64: 1e-7}  # float64: PML stores beta as a float32 tensor


def _batch(dtype: torch.dtype = torch.float32, n: int = 12, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=dtype), torch.arange(n) % 4


def _dist(x: torch.Tensor, i: int, j: int) -> float:
    a, b = x[i] / x[i].norm(), x[j] / x[j].norm()
    return math.sqrt(sum((float(u) - float(v)) ** 2 for u, v in zip(a, b, strict=True)))


def _triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, p, n = zip(
        *[
            (i, j, k)
            for i in range(len(labels))
            for j in range(len(labels))
            for k in range(len(labels))
            if i != j and labels[i] == labels[j] and labels[i] != labels[k] and (i + j + k) % 5 == 0
        ],
        strict=True,
    )
    return torch.tensor(a), torch.tensor(p), torch.tensor(n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_margin_loss_matches_slow_loop(dtype: torch.dtype) -> None:
    x, labels = _batch(dtype)
    triplets = _triplets(labels)
    alpha, beta = 0.2, 1.2
    terms, nonzero = 0.0, 0
    for a, p, n in zip(*triplets, strict=True):
        pos = max(0.0, _dist(x, a, p) - beta + alpha)
        neg = max(0.0, beta - _dist(x, a, n) + alpha)
        terms += pos + neg
        nonzero += (pos > 0) + (neg > 0)
    loss = build_loss("margin", margin=alpha, beta=beta)(x, labels, triplets)
    assert loss.dtype == dtype
    assert math.isclose(float(loss), terms / nonzero, rel_tol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triplet_loss_matches_slow_loop(dtype: torch.dtype) -> None:
    x, labels = _batch(dtype)
    triplets = _triplets(labels)
    values = [max(0.0, _dist(x, a, p) - _dist(x, a, n) + 0.2) for a, p, n in zip(*triplets, strict=True)]
    nonzero = [v for v in values if v > 0]
    loss = build_loss("triplet", margin=0.2)(x, labels, triplets)
    assert math.isclose(float(loss), sum(nonzero) / len(nonzero), rel_tol=TOL[dtype])


def test_learnable_beta_gets_gradients() -> None:
    x, labels = _batch()
    loss_fn = build_loss("margin", learn_beta=True)
    loss_fn(x, labels, _triplets(labels)).backward()
    assert loss_fn.beta.grad is not None and loss_fn.beta.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown loss 'contrastive'; choose one of margin, triplet"):
        build_loss("contrastive")


def test_miner_weights_match_pytorch_metric_learning(monkeypatch) -> None:
    x, labels = _batch(n=16, dim=6)
    captured = {}

    def capture(labels, ref_labels=None, t_per_anchor=None, weights=None):
        captured["weights"] = weights
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)

    monkeypatch.setattr(lmu, "get_random_triplet_indices", capture)
    pml_miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)(x, labels)
    ours = DistanceWeightedMiner(0.5, 1.4).negative_weights(x, labels, x, labels)
    rows = ours.sum(dim=1) > 0
    assert rows.sum() >= 8  # most anchors have drawable negatives
    torch.testing.assert_close(ours[rows], captured["weights"][rows], rtol=1e-4, atol=1e-6)
    assert not torch.isfinite(captured["weights"][~rows]).any() or captured["weights"][~rows].abs().sum() == 0


def test_miner_triplets_are_valid_and_complete() -> None:
    x, labels = _batch(n=16, dim=6)
    miner = DistanceWeightedMiner(generator=torch.Generator().manual_seed(0))
    a, p, n = miner(x, labels)
    weights = miner.negative_weights(x, labels, x, labels)
    has_negative = weights.sum(dim=1) > 0
    expected = {(i, j) for i in range(16) for j in range(16) if i != j and labels[i] == labels[j] and has_negative[i]}
    assert set(zip(a.tolist(), p.tolist(), strict=True)) == expected and len(a) == len(expected)
    assert (labels[a] != labels[n]).all()
    dist = torch.cdist(F.normalize(x), F.normalize(x))
    assert (dist[a, n] < 1.4).all()


def test_miner_draws_follow_the_weights() -> None:
    x, labels = _batch(n=8, dim=5, seed=3)
    miner = DistanceWeightedMiner(generator=torch.Generator().manual_seed(1))
    weights = miner.negative_weights(x, labels, x, labels)
    anchor = int(torch.nonzero(weights.sum(dim=1) > 0)[0])
    counts = torch.zeros(8)
    for _ in range(2000):
        a, _, n = miner(x, labels)
        counts += torch.bincount(n[a == anchor], minlength=8)
    torch.testing.assert_close(counts / counts.sum(), weights[anchor], atol=0.03, rtol=0)


def test_miner_without_negatives_returns_nothing() -> None:
    x = torch.randn(4, 8)
    a, p, n = DistanceWeightedMiner()(x, torch.zeros(4, dtype=torch.long))
    assert len(a) == len(p) == len(n) == 0
    with pytest.raises(ValueError, match="need 0 <= cutoff < nonzero_loss_cutoff"):
        DistanceWeightedMiner(cutoff=1.5, nonzero_loss_cutoff=1.4)
