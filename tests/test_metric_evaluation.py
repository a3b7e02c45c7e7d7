"""metric.evaluation: each metric against a slow reference, a toy case by hand, and pytorch-metric-learning."""

from __future__ import annotations

import math
import re
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from sklearn.metrics import normalized_mutual_info_score

from metric.evaluation import (
    evaluate_retrieval,
    evaluate_vehicleid,
    mean_average_precision_at_r,
    vehicleid_gallery_split,
)
from metric.kmeans import faiss_kmeans
from metric.knn import knn
from tests.script_loading import load_script

REPO = Path(__file__).resolve().parents[1]


def clustered(n: int, dim: int, classes: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points around random class centres, every class with >= 2 points."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.tile(np.arange(classes), 2), rng.integers(0, classes, n - 2 * classes)])
    x = rng.standard_normal((classes, dim))[labels] + noise * rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def slow_metrics(query, query_labels, gallery, gallery_labels, ks, self_retrieval: bool) -> dict[str, float]:
    """Recall@K and MAP@R with plain Python loops (ties broken by gallery index)."""
    recalls = {k: [] for k in ks}
    average_precisions = []
    for i, (q, label) in enumerate(zip(query, query_labels, strict=True)):
        others = [j for j in range(len(gallery)) if not (self_retrieval and j == i)]
        ranked = sorted(others, key=lambda j: (sum((a - b) ** 2 for a, b in zip(q, gallery[j], strict=True)), j))
        hits = [gallery_labels[j] == label for j in ranked]
        r = sum(hits)
        if r == 0:
            continue
        for k in ks:
            recalls[k].append(any(hits[:k]))
        correct, precision_sum = 0, 0.0
        for rank, hit in enumerate(hits[:r], start=1):
            if hit:
                correct += 1
                precision_sum += correct / rank
        average_precisions.append(precision_sum / r)
    out = {f"R@{k}": sum(v) / len(v) for k, v in recalls.items()}
    out["MAP@R"] = sum(average_precisions) / len(average_precisions)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_gallery", [False, True])
def test_recall_and_map_at_r_match_a_slow_loop(dtype: type, with_gallery: bool) -> None:
    x, y = clustered(70, 6, 7, noise=1.0, seed=1)
    x = x.astype(dtype)
    ks = (1, 2, 4, 8, 16)
    if with_gallery:
        args = (x[:25], y[:25], x[25:], y[25:])
    else:
        args = (x, y, x, y)
    expected = slow_metrics(*[a.tolist() for a in args], ks=ks, self_retrieval=not with_gallery)
    got = evaluate_retrieval(*args, ks=ks, nmi=False) if with_gallery else evaluate_retrieval(x, y, ks=ks, nmi=False)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-12), key


def test_toy_case_by_hand_self_excluded_with_duplicates() -> None:
    # 1-D points: a0 = a1 = 0 (class A, exact duplicates), b0 = 1, b1 = 5 (B), c0 = 2.2, c1 = 9.5 (C).
    x = np.array([[0.0], [0.0], [1.0], [5.0], [2.2], [9.5]])
    y = np.array([0, 0, 1, 1, 2, 2])
    # a0, a1: the duplicate at distance 0 is a hit (self is dropped by index, not by distance).
    # b0: a0, a1 (1.0), c0 (1.2), b1 (4.0) -> hit at 4.   b1: c0 (2.8), b0 (4.0) -> hit at 2.
    # c0: b0 (1.2), a0, a1 (2.2), b1 (2.8), c1 (7.3) -> hit at 5.   c1: b1 (4.5), c0 (7.3) -> hit at 2.
    got = evaluate_retrieval(x, y, ks=(1, 2, 4, 8), nmi=False)
    assert got["R@1"] == pytest.approx(2 / 6)
    assert got["R@2"] == pytest.approx(4 / 6)
    assert got["R@4"] == pytest.approx(5 / 6)
    assert got["R@8"] == pytest.approx(1.0)  # K beyond the 5 other items: all of them
    assert got["MAP@R"] == pytest.approx(2 / 6)  # R = 1 for every query: MAP@R = P@1
    # exact duplicates only: with more than k + 1 items at distance 0 the query's own index never comes back
    _, indices = knn(np.zeros((5, 2)), 2)
    assert not (indices == np.arange(5)[:, None]).any()


def test_map_at_r_by_hand() -> None:
    hits = np.array([[True, False, True, True], [False, True, False, False], [True, True, False, False]])
    relevant = np.array([3, 2, 1])
    # (1/3)(1/1 + 2/3); (1/2)(1/2); (1/1)(1/1), the hit at rank 2 > R = 1 not counted
    expected = ((1 + 2 / 3) / 3 + 0.5 / 2 + 1.0) / 3
    assert mean_average_precision_at_r(hits, relevant) == pytest.approx(expected, rel=1e-15)


def pml(query, query_labels, reference=None, reference_labels=None, include=()) -> dict[str, float]:
    calculator = AccuracyCalculator(include=include, k="max_bin_count", device=torch.device("cpu"))
    tensors = [None if a is None else torch.from_numpy(a) for a in (query, query_labels, reference, reference_labels)]
    return calculator.get_accuracy(*tensors)


def test_agrees_with_pytorch_metric_learning() -> None:
    x, y = clustered(800, 16, 60, noise=1.2, seed=2)
    x = x.astype(np.float32)
    ours = evaluate_retrieval(x, y)
    theirs = pml(x, y, include=("precision_at_1", "NMI", "mean_average_precision_at_r"))
    assert ours["R@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-12)
    assert ours["MAP@R"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-12)
    assert ours["NMI"] == pytest.approx(theirs["NMI"], abs=1e-12)  # the same faiss k-means, not just similar
    ours = evaluate_retrieval(x[:300], y[:300], x[300:], y[300:], nmi=False)
    theirs = pml(x[:300], y[:300], x[300:], y[300:], include=("precision_at_1", "mean_average_precision_at_r"))
    assert ours["R@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-12)
    assert ours["MAP@R"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-12)


def faiss_reference(x: np.ndarray, k: int, **params) -> tuple[np.ndarray, np.ndarray]:
    kmeans = faiss.Kmeans(x.shape[1], k, niter=params.pop("niter", 20), **params)
    kmeans.train(x)
    return kmeans.centroids, kmeans.index.search(x, 1)[1][:, 0]


@pytest.mark.parametrize(
    "case",
    ["clustered", "duplicates (empty clusters are split)", "subsampled", "one iteration", "seed", "n == k"],
)
def test_kmeans_equals_faiss_kmeans(case: str) -> None:
    rng = np.random.default_rng(3)
    x = clustered(1500, 8, 150, noise=1.0, seed=3)[0].astype(np.float32)
    k, ours_kw, faiss_kw = 150, {}, {}
    if case.startswith("duplicates"):
        x = rng.standard_normal((100, 4)).astype(np.float32)[rng.integers(0, 100, 1000)]
    elif case == "subsampled":
        k, ours_kw, faiss_kw = 20, {"max_points_per_centroid": 39}, {"max_points_per_centroid": 39}
    elif case == "one iteration":
        ours_kw, faiss_kw = {"niter": 1}, {"niter": 1}
    elif case == "seed":
        ours_kw, faiss_kw = {"seed": 11}, {"seed": 11}
    elif case == "n == k":
        x, k = x[:40], 40
    centroids, assignment = faiss_kmeans(x, k, **ours_kw)
    expected_centroids, expected_assignment = faiss_reference(x, k, **faiss_kw)
    np.testing.assert_array_equal(centroids, expected_centroids)
    np.testing.assert_array_equal(assignment, expected_assignment)


def test_nmi_seeds_average_and_normalize() -> None:
    x, y = clustered(300, 8, 20, noise=1.5, seed=4)
    x = x.astype(np.float32)
    per_seed = [normalized_mutual_info_score(y, faiss_reference(x, 20, seed=1234 + s)[1]) for s in range(2)]
    assert evaluate_retrieval(x, y, nmi_seeds=2, map_at_r=False)["NMI"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert evaluate_retrieval(3 * x, y, normalize=True, nmi=False) == pytest.approx(evaluate_retrieval(x, y, nmi=False))


def test_torch_backend_equals_faiss() -> None:
    x = clustered(500, 12, 30, noise=1.0, seed=5)[0].astype(np.float32)
    dist_f, idx_f = knn(x, 7, device="cpu", backend="faiss")
    dist_t, idx_t = knn(x, 7, chunk_size=64, backend="torch")
    np.testing.assert_array_equal(idx_t, idx_f)
    np.testing.assert_allclose(dist_t, dist_f, atol=1e-5)
    _, idx_g = knn(x[:50], 3, gallery=x[100:], chunk_size=16, backend="torch")
    np.testing.assert_array_equal(idx_g, knn(x[:50], 3, gallery=x[100:], backend="faiss")[1])


def test_vehicleid_protocol() -> None:
    labels = np.array([5, 5, 5, 7, 7, 9])
    query, gallery = vehicleid_gallery_split(labels, np.random.default_rng(0))
    assert sorted(labels[gallery].tolist()) == [5, 7, 9]  # one image per vehicle
    np.testing.assert_array_equal(np.sort(np.concatenate([query, gallery])), np.arange(6))
    x, y = clustered(120, 8, 20, noise=0.8, seed=6)
    first = evaluate_vehicleid(x, y, repetitions=3, seed=1)
    assert first == evaluate_vehicleid(x, y, repetitions=3, seed=1) and set(first) == {"R@1", "R@5"}
    runs = []
    rng = np.random.default_rng(1)
    for _ in range(3):
        q, g = vehicleid_gallery_split(y, rng)
        runs.append(evaluate_retrieval(x[q], y[q], x[g], y[g], ks=(1, 5), nmi=False)["R@1"])
    assert first["R@1"] == pytest.approx(np.mean(runs))


def test_input_errors() -> None:
    x, y = np.eye(4), np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="pass gallery and gallery_labels together"):
        evaluate_retrieval(x, y, gallery=x)
    with pytest.raises(ValueError, match=re.escape("ks must be positive integers, got (0, 1)")):
        evaluate_retrieval(x, y, ks=(0, 1))
    with pytest.raises(ValueError, match=re.escape("labels must be 4 integers (one per embedding), got shape (3,)")):
        evaluate_retrieval(x, y[:3])
    with pytest.raises(ValueError, match=re.escape("k must be in [1, 3] (the number of gallery items), got 4")):
        knn(x, 4)
    with pytest.raises(ValueError, match="backend must be 'auto', 'faiss' or 'torch'"):
        knn(x, 1, backend="annoy")


def test_lone_queries_are_left_out() -> None:
    x = np.array([[0.0], [0.1], [5.0]])  # the class-1 query has no other class-1 item
    got = evaluate_retrieval(x, np.array([0, 0, 1]), ks=(1,), nmi=False)
    assert got == {"R@1": 1.0, "MAP@R": 1.0}
    single = evaluate_retrieval(x[:1], np.array([0]), ks=(1,))  # nothing to retrieve
    assert math.isnan(single["R@1"]) and math.isnan(single["MAP@R"]) and single["NMI"] == pytest.approx(1.0)


def test_bench_rewrites_only_its_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_script(REPO / "bench" / "eval.py", "bench_eval", monkeypatch)
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## Other bench\n\nkeep me\n\n## Retrieval evaluation (bench/eval.py)\n\nold\n")
    args = ["--n", "300", "--dim", "8", "--classes", "40", "--runs", "1", "--output", str(out)]
    bench.main(bench.get_args_parser().parse_args(args))
    text = out.read_text()
    assert "keep me" in text and "old" not in text and text.count("## Retrieval evaluation") == 1
    assert "| permgym evaluate_retrieval |" in text and "| NMI |" in text
