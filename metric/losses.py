"""Losses of the divide-and-conquer learner: pytorch-metric-learning's margin and triplet losses, configured.

Both take ``(embeddings, labels, indices_tuple)`` and re-normalise the embeddings (``LpDistance(normalize_embeddings=
True)``), so the same loss works on one learner's slice and on the full embedding. The margin loss (Wu et al. 2017)
is ``relu(d(a, p) - beta + alpha) + relu(beta - d(a, n) + alpha)`` per triplet, divided by the number of non-zero
terms (``DivisorReducer``), as in the reference code.
"""

from __future__ import annotations

from pytorch_metric_learning.losses import BaseMetricLossFunction, MarginLoss, TripletMarginLoss

LOSSES: tuple[str, ...] = ("margin", "triplet")


def build_loss(
    name: str = "margin", *, margin: float = 0.2, beta: float = 1.2, learn_beta: bool = False
) -> BaseMetricLossFunction:
    """Build a metric loss.

    Args:
        name: ``"margin"`` (Wu et al. 2017) or ``"triplet"`` (``relu(d(a, p) - d(a, n) + margin)``, averaged over
            non-zero triplets).
        margin: ``alpha`` of the margin loss, or the triplet margin.
        beta: initial class boundary ``beta`` of the margin loss (ignored by ``"triplet"``).
        learn_beta: make ``beta`` a trainable parameter (margin loss only); add ``loss.parameters()`` to the
            optimizer.

    Returns:
        The loss module, called as ``loss(embeddings [B, D], labels [B], indices_tuple)``.
    """
    if name == "margin":
        return MarginLoss(margin=margin, nu=0.0, beta=beta, learn_beta=learn_beta)
    if name == "triplet":
        if learn_beta:
            raise ValueError("learn_beta applies to the margin loss only")
        return TripletMarginLoss(margin=margin)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
