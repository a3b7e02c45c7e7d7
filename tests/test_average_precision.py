from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve

from permgym.average_precision import auc_ap, average_precisions, precision_recall, voc07_ap


def _devkit_voc07(scores: list[float], targets: list[int]) -> float:
    """The VOC 2007 devkit's VOCevalcls + VOCap(11-point), in plain Python (distinct scores: no ties)."""
    kept = sorted(((s, t) for s, t in zip(scores, targets, strict=True) if t != 0), key=lambda st: -st[0])
    positives = sum(t > 0 for _, t in kept)
    tp = fp = 0
    precision, recall = [], []
    for _, t in kept:
        tp, fp = tp + (t > 0), fp + (t < 0)
        precision.append(tp / (tp + fp))
        recall.append(tp / positives)
    ap = 0.0
    for level in [i / 10 for i in range(11)]:
        reached = [p for p, r in zip(precision, recall, strict=True) if r >= level]
        ap += (max(reached) if reached else 0.0) / 11
    return ap


def test_hand_computed_ranking() -> None:
    # ranked: +, -, +, -  -> precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1
    scores, targets = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, -1, 1, -1])
    precision, recall = precision_recall(scores, targets)
    assert precision.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 1 / 2])
    assert recall.tolist() == pytest.approx([1 / 2, 1 / 2, 1, 1])
    # 11-point: recall levels 0..0.5 reach precision 1, levels 0.6..1 reach 2/3
    assert voc07_ap(scores, targets) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    # area: recall steps 1/2 at precision 1 and 1/2 at precision 2/3
    assert auc_ap(scores, targets) == pytest.approx(1 / 2 + 1 / 2 * 2 / 3)


def test_known_curves() -> None:
    # a perfect ranking: both are 1
    scores, targets = torch.tensor([4.0, 3, 2, 1]), torch.tensor([1, 1, -1, -1])
    assert voc07_ap(scores, targets) == auc_ap(scores, targets) == 1.0
    # one positive at rank k: precision 1/k at every recall level
    for k in (1, 2, 5):
        targets = torch.tensor([-1] * (k - 1) + [1] + [-1] * 3)
        scores = torch.arange(len(targets), 0, -1).float()
        assert voc07_ap(scores, targets) == pytest.approx(1 / k)
        assert auc_ap(scores, targets) == pytest.approx(1 / k)
    # positives at ranks 1, 3, 5, 7, 9 of 10: precision at recall j/5 is j/(2j-1); the 11-point mean by hand
    targets = torch.tensor([1, -1] * 5)
    scores = torch.arange(10, 0, -1).float()
    best = {0: 1, 0.1: 1, 0.2: 1, 0.3: 2 / 3, 0.4: 2 / 3, 0.5: 3 / 5, 0.6: 3 / 5, 0.7: 4 / 7, 0.8: 4 / 7, 0.9: 5 / 9}
    assert voc07_ap(scores, targets) == pytest.approx((sum(best.values()) + 5 / 9) / 11)


def test_difficult_entries_are_left_out() -> None:
    scores, targets = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, -1, 1, -1])
    with_difficult = (torch.tensor([0.95, 0.9, 0.8, 0.75, 0.7, 0.6]), torch.tensor([0, 1, -1, 0, 1, -1]))
    assert voc07_ap(*with_difficult) == voc07_ap(scores, targets)
    assert auc_ap(*with_difficult) == auc_ap(scores, targets)
    assert math.isnan(voc07_ap(torch.tensor([0.5, 0.4]), torch.tensor([0, -1])))  # no positive: no AP


def test_ties_do_not_depend_on_order() -> None:
    scores, targets = torch.tensor([0.5, 0.5, 0.5, 0.1]), torch.tensor([1, -1, -1, 1])
    flipped = (scores.flip(0), targets.flip(0))
    assert voc07_ap(scores, targets) == voc07_ap(*flipped)
    assert auc_ap(scores, targets) == auc_ap(*flipped)


@pytest.mark.parametrize("seed", range(5))
def test_against_scikit_learn_and_the_devkit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    targets = rng.choice([1, -1, -1, -1, 0], size=n)
    scores = rng.normal(size=n) + 0.8 * (targets == 1)
    tied = np.round(scores, 1)  # many ties
    for s in (scores, tied):
        keep = targets != 0
        expected = average_precision_score(targets[keep] == 1, s[keep])
        assert auc_ap(torch.from_numpy(s), torch.from_numpy(targets)) == pytest.approx(expected, abs=1e-12)
        precision, recall, _ = precision_recall_curve(targets[keep] == 1, s[keep])
        precision, recall = precision[:-1], recall[:-1]  # sklearn appends (recall 0, precision 1); VOC does not
        eleven = np.mean([precision[recall >= t - 1e-12].max(initial=0) for t in np.linspace(0, 1, 11)])
        assert voc07_ap(torch.from_numpy(s), torch.from_numpy(targets)) == pytest.approx(eleven, abs=1e-12)
    assert voc07_ap(torch.from_numpy(scores), torch.from_numpy(targets)) == pytest.approx(
        _devkit_voc07(scores.tolist(), targets.tolist()), abs=1e-12
    )


def test_mean_over_classes_with_a_positive() -> None:
    scores = torch.tensor([[0.9, 0.2, 0.1], [0.8, 0.9, 0.3], [0.1, 0.3, 0.2]])
    targets = torch.tensor([[1, -1, -1], [-1, 1, 0], [-1, -1, -1]], dtype=torch.int8)
    metrics = average_precisions(scores, targets, ["a", "b", "c"])
    assert math.isnan(metrics["AP/c"])  # only a difficult and negatives
    assert metrics["AP/a"] == pytest.approx(voc07_ap(scores[:, 0], targets[:, 0]))
    assert metrics["mAP"] == pytest.approx((metrics["AP/a"] + metrics["AP/b"]) / 2)
    assert metrics["mAP_auc"] == pytest.approx((metrics["AP_auc/a"] + metrics["AP_auc/b"]) / 2)
    with pytest.raises(ValueError, match=r"must be \[N, 2\] alike"):
        average_precisions(scores, targets, ["a", "b"])
