"""Average precision of multi-label classification, as PASCAL VOC 2007 scores it.

Targets follow the VOC per-class files: ``1`` the class is present, ``-1`` absent, ``0`` present only as objects
marked *difficult*. An image whose target is ``0`` for a class is **left out of that class's AP** (neither a positive
nor a negative), as the VOC devkit does.

Two ways to turn one class's ranking into a number:

* :func:`voc07_ap` — VOC 2007's **11-point interpolated AP**: the mean, over recall levels ``t in {0, 0.1, ..., 1}``,
  of the highest precision reached at any recall ``>= t`` (0 when none). This is the number the VOC 2007 protocol and
  the self-supervised transfer literature report, and what ``mAP`` means in this package.
* :func:`auc_ap` — the **area under the precision-recall curve** without interpolation,
  ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds (scikit-learn's ``average_precision_score``).

Both build the curve at distinct score thresholds, so tied scores form one point and the result does not depend on
the order of tied images. A class without any positive image (after dropping the ``0`` entries) has no AP: it is
NaN and left out of the means.
"""

from __future__ import annotations

import math

import torch

RECALL_LEVELS = torch.linspace(0, 1, 11, dtype=torch.float64)  # VOC 2007's eleven recall levels


def precision_recall(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision and recall of one class at every distinct score threshold, highest threshold first.

    Args:
        scores: ``[N]`` scores (higher = more confident the class is present).
        targets: ``[N]`` in ``{1, -1, 0}``; ``0`` entries are ignored.

    Returns:
        ``(precision, recall)``, each ``[M]`` float64 for the ``M`` distinct scores among the kept entries
        (empty when no entry is kept).
    """
    if scores.shape != targets.shape or scores.ndim != 1:
        raise ValueError(f"scores and targets must be [N] alike, got {tuple(scores.shape)} and {tuple(targets.shape)}")
    keep = targets != 0
    scores, positive = scores[keep].double(), (targets[keep] > 0).double()
    if not len(scores):
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, empty
    order = torch.argsort(scores, descending=True, stable=True)
    scores, positive = scores[order], positive[order]
    true_positives = positive.cumsum(0)
    # the last position of each run of equal scores closes one threshold
    last = torch.ones(len(scores), dtype=torch.bool)
    last[:-1] = scores[1:] != scores[:-1]
    true_positives = true_positives[last]
    predicted = torch.arange(1, len(scores) + 1, dtype=torch.float64)[last]
    return true_positives / predicted, true_positives / positive.sum().clamp_min(1)


def voc07_ap(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """VOC 2007's 11-point interpolated average precision of one class (NaN without a positive).

    Args:
        scores: ``[N]`` scores.
        targets: ``[N]`` in ``{1, -1, 0}`` (``0`` = difficult, ignored).
    """
    if not bool((targets > 0).any()):
        return math.nan
    precision, recall = precision_recall(scores, targets)
    reached = recall[None, :] >= RECALL_LEVELS[:, None] - 1e-12  # [11, M]
    best = torch.where(reached, precision[None, :], torch.zeros(())).amax(1)
    return float(best.mean())


def auc_ap(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Area under the precision-recall curve, ``sum_n (R_n - R_{n-1}) P_n`` (scikit-learn's
    ``average_precision_score``) of one class (NaN without a positive); ``scores`` and ``targets`` as in
    :func:`voc07_ap`."""
    if not bool((targets > 0).any()):
        return math.nan
    precision, recall = precision_recall(scores, targets)
    steps = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((steps * precision).sum())


def average_precisions(scores: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, float]:
    """Per-class AP both ways and their means.

    Args:
        scores: ``[N, C]`` scores.
        targets: ``[N, C]`` in ``{1, -1, 0}``.
        classes: the ``C`` class names.

    Returns:
        ``{"mAP": 11-point mean, "mAP_auc": area mean, "AP/<class>": 11-point, "AP_auc/<class>": area}`` (means
        over the classes that have a positive; NaN if none has).
    """
    if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(classes):
        raise ValueError(
            f"scores and targets must be [N, {len(classes)}] alike, got {tuple(scores.shape)} and "
            f"{tuple(targets.shape)}"
        )
    metrics: dict[str, float] = {}
    for kind, function in (("AP", voc07_ap), ("AP_auc", auc_ap)):
        for c, name in enumerate(classes):
            metrics[f"{kind}/{name}"] = function(scores[:, c], targets[:, c])
    for mean, kind in (("mAP", "AP"), ("mAP_auc", "AP_auc")):
        values = [metrics[f"{kind}/{name}"] for name in classes if not math.isnan(metrics[f"{kind}/{name}"])]
        metrics[mean] = sum(values) / len(values) if values else math.nan
    return metrics
