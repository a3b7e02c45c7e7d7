"""Distance-weighted sampling (Wu et al., "Sampling Matters in Deep Embedding Learning", ICCV 2017), vectorised.

pytorch-metric-learning's ``DistanceWeightedMiner`` computes the same weights but then draws the negatives in a
Python loop over the labels of the batch with host syncs, and draws positives at random with replacement. This miner
keeps every ordered positive pair ``(a, p)`` and draws one negative for each with a single ``torch.multinomial`` over
the ``B x B`` weight matrix: one host sync per batch (listing the pairs), no per-anchor work.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import BaseMiner


class DistanceWeightedMiner(BaseMiner):
    """Mines ``(anchor, positive, negative)`` triplets; negatives drawn with probability ``∝ 1 / q(distance)``.

    On the unit sphere in ``n`` dimensions pairwise distances have density ``q(d) ∝ d^(n-2) (1 - d²/4)^((n-3)/2)``
    (Wu et al. 2017, Sec. 4). Weighting each negative by ``1 / q(max(d, cutoff))`` spreads the drawn negatives evenly
    over distances; negatives at ``d >= nonzero_loss_cutoff`` (``beta + alpha`` for the margin loss) would give zero
    loss and get weight 0.

    Args:
        cutoff: distances below this are clipped to it before weighting (bounds the variance), default 0.5.
        nonzero_loss_cutoff: negatives this far or farther are never drawn, default 1.4.
        generator: ``torch.Generator`` on the embeddings' device for the draws; ``None`` uses the global RNG.

    Returns (from ``miner(embeddings, labels)``):
        ``(a, p, n)`` int64 tensors of equal length: every ordered same-class pair ``a != p`` whose anchor has at
        least one drawable negative, with one drawn negative each.
    """

    def __init__(
        self, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(distance=LpDistance(p=2, power=1, normalize_embeddings=True))
        if not 0 <= cutoff < nonzero_loss_cutoff:
            raise ValueError(f"need 0 <= cutoff < nonzero_loss_cutoff, got {cutoff} and {nonzero_loss_cutoff}")
        self.cutoff, self.nonzero_loss_cutoff, self.generator = float(cutoff), float(nonzero_loss_cutoff), generator

    def negative_weights(
        self, embeddings: torch.Tensor, labels: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor
    ) -> torch.Tensor:
        """``[B, R]`` probabilities of drawing reference ``j`` as the negative of anchor ``i``; zero rows = none."""
        n = embeddings.shape[1]
        dist = self.distance(embeddings, ref_emb)
        clipped = dist.clamp(min=self.cutoff, max=2.0 - 1e-4)  # 1 - d²/4 > 0
        log_w = (2.0 - n) * clipped.log() - ((n - 3) / 2) * torch.log1p(-0.25 * clipped**2)
        drawable = (labels[:, None] != ref_labels[None, :]) & (dist < self.nonzero_loss_cutoff)
        log_w = log_w.masked_fill(~drawable, float("-inf"))
        weights = (log_w - log_w.amax(dim=1, keepdim=True).nan_to_num(neginf=0.0)).exp()
        return weights / weights.sum(dim=1, keepdim=True).clamp(min=torch.finfo(weights.dtype).tiny)

    def mine(
        self, embeddings: torch.Tensor, labels: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weights = self.negative_weights(embeddings.float(), labels, ref_emb.float(), ref_labels)
        pairs = labels[:, None] == ref_labels[None, :]
        if ref_emb is embeddings:
            pairs.fill_diagonal_(False)
        pairs &= weights.sum(dim=1, keepdim=True) > 0
        anchors, positives = torch.nonzero(pairs, as_tuple=True)
        if len(anchors) == 0:
            return anchors, positives, positives.clone()
        negatives = torch.multinomial(weights[anchors], 1, generator=self.generator).squeeze(1)
        return anchors, positives, negatives
