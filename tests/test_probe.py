"""Downstream evaluation of a trunk: clip features, linear probe, nearest-neighbour retrieval."""

from __future__ import annotations

import re

import pytest
import torch

from permgym.models import build_trunk
from permgym.probe import (
    centre_frames,
    clip_features,
    evaluate_trunk,
    linear_probe_accuracy,
    load_probe_data,
    retrieval_topk,
    retrieval_windows,
    select_weight_decay,
    standardize,
    video_features,
)


@pytest.fixture(scope="module")
def trunk() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_trunk("tiny")


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return torch.randint(0, 256, (5, 9, 3, 40, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_clip_features_concatenate_frames_in_temporal_order(trunk, clips) -> None:
    features = clip_features(trunk, clips, num_frames=3, image_size=32)
    d = trunk.out_dim
    assert features.shape == (5, 3 * d) and features.dtype == torch.float32
    reversed_features = clip_features(trunk, clips.flip(1), num_frames=3, image_size=32)
    blocks = features.view(5, 3, d)
    # frames 0, 4, 8 of the reversed clip are frames 8, 4, 0 of the clip: the blocks come in reverse order
    torch.testing.assert_close(reversed_features.view(5, 3, d), blocks.flip(1))
    assert not torch.allclose(blocks[:, 0], blocks[:, 2])  # so averaging would lose the direction


def test_clip_features_are_deterministic_and_restore_the_mode(trunk, clips) -> None:
    trunk.train()
    first = clip_features(trunk, clips, batch_size=4)
    assert trunk.training
    torch.testing.assert_close(clip_features(trunk, clips, batch_size=256), first)  # batching does not matter


def test_clip_features_reject_bad_input(trunk, clips) -> None:
    with pytest.raises(ValueError, match=re.escape("num_frames must be in [1, 9]")):
        clip_features(trunk, clips, num_frames=10)
    with pytest.raises(ValueError, match="uint8"):
        clip_features(trunk, clips.float())


def test_retrieval_windows_worked_by_hand() -> None:
    # one window: n frames evenly spaced over the whole clip, as clip_features takes them
    assert retrieval_windows(16, 4, 3, 1).tolist() == [[0, 5, 10, 15]]
    assert retrieval_windows(9, 3, 2, 1).tolist() == [[0, 4, 8]]
    # span 9 of 16 frames: starts 0..6 are possible; 3 evenly spaced ones are 0, 3, 6
    assert retrieval_windows(16, 4, 3, 3).tolist() == [[0, 3, 6, 9], [3, 6, 9, 12], [6, 9, 12, 15]]
    # 10 asked, 7 possible starts: round(linspace(0, 6, 10)) repeats starts, each is kept once
    assert retrieval_windows(16, 4, 3, 10)[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6]
    # a stride too long for the clip is shortened to fit (7 frames: stride 2), leaving one possible start
    assert retrieval_windows(7, 4, 5, 10).tolist() == [[0, 2, 4, 6]]
    with pytest.raises(ValueError, match=re.escape("num_frames must be in [1, 3]")):
        retrieval_windows(3, 4, 1, 2)
    with pytest.raises(ValueError, match="count must be >= 1"):
        retrieval_windows(16, 4, 3, 0)


def test_video_features_are_the_mean_of_the_window_features(trunk, clips) -> None:
    windows = retrieval_windows(9, 3, 2, 10)  # 5 distinct windows of frames (s, s + 2, s + 4)
    assert len(windows) == 5
    features = video_features(trunk, clips, windows, image_size=32)
    # brute force: one clip_features call per video and window, averaged in a plain loop
    for i in range(len(clips)):
        per_window = [clip_features(trunk, clips[i : i + 1, w], 3, 32)[0] for w in windows]
        torch.testing.assert_close(features[i], sum(per_window) / len(per_window))
    # how many windows are gathered at once does not matter
    torch.testing.assert_close(video_features(trunk, clips, windows, image_size=32, frames_per_pass=7), features)
    assert video_features(trunk, clips[:0], windows).shape == (0, 3 * trunk.out_dim)


def test_one_window_reproduces_the_one_clip_features(trunk, clips) -> None:
    one = video_features(trunk, clips, retrieval_windows(9, 3, 2, 1), image_size=32)
    assert torch.equal(one, clip_features(trunk, clips, num_frames=3, image_size=32))


def test_linear_probe_separates_separable_features_and_is_deterministic() -> None:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(60) % 3
    x = torch.randn(60, 8, generator=g) * 0.1
    x[torch.arange(60), labels] += 5.0  # class c is large in column c
    train_x, train_y, test_x, test_y = x[:45], labels[:45], x[45:], labels[45:]
    accuracy = linear_probe_accuracy(train_x, train_y, test_x, test_y, seed=3, epochs=200)
    assert accuracy == 1.0
    noisy = torch.randn(60, 8, generator=g)
    a = linear_probe_accuracy(noisy[:45], train_y, noisy[45:], test_y, seed=3, epochs=5)
    assert a == linear_probe_accuracy(noisy[:45], train_y, noisy[45:], test_y, seed=3, epochs=5)


def test_linear_probe_checks_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        linear_probe_accuracy(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), torch.zeros(1, 2), torch.zeros(1))


def test_select_weight_decay_picks_the_best_on_every_fifth_training_sample() -> None:
    g = torch.Generator().manual_seed(2)
    y = torch.arange(100) % 4
    x = torch.randn(100, 50, generator=g)
    x[torch.arange(100), y] += 1.5
    candidates = (1e-3, 30.0, 300.0)
    val = torch.arange(100) % 5 == 4
    scores = [linear_probe_accuracy(x[~val], y[~val], x[val], y[val], epochs=5, weight_decay=wd) for wd in candidates]
    assert len(set(scores)) > 1  # the candidates differ, so the choice is a real one
    assert select_weight_decay(x, y, candidates, epochs=5) == candidates[scores.index(max(scores))]
    assert select_weight_decay(x, y, (300.0,), epochs=5) == 300.0  # one candidate: nothing to choose
    with pytest.raises(ValueError, match="candidates is empty"):
        select_weight_decay(x, y, (), epochs=5)


def test_evaluate_trunk_with_several_weight_decays_reports_the_chosen_one(trunk) -> None:
    data = load_probe_data(num_classes=6, num_videos=60, frames=8, size=32, seed=0)
    assert evaluate_trunk(trunk, data, epochs=3, ks=(1,), weight_decays=(1e-3,)) == evaluate_trunk(
        trunk, data, epochs=3, ks=(1,)
    )
    chosen = evaluate_trunk(trunk, data, epochs=3, ks=(1,), weight_decays=(1e-3, 10.0))
    assert chosen["probe_weight_decay"] in (1e-3, 10.0)


def test_retrieval_worked_by_hand() -> None:
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    gallery_y = torch.tensor([0, 1, 2, 1])
    queries = torch.tensor([[2.0, 0.1], [0.1, -1.0], [0.0, 3.0]])
    query_y = torch.tensor([1, 1, 2])
    # query 0 -> nearest [0] (class 0), then [3] (class 1): miss at k=1, hit at k=2
    # query 1 -> cosines 0.1, -0.99, -0.1, -0.63: order [0], [2], [3], [1]: first class-1 item at rank 3
    # query 2 -> nearest [1] (class 1), then [3] (1), then [0] and [2] tie at 0: [0] first (lower index), [2] 4th
    result = retrieval_topk(queries, query_y, gallery, gallery_y, ks=(1, 2, 3, 4))
    assert result == {"top1": 0.0, "top2": 1 / 3, "top3": 2 / 3, "top4": 1.0}
    with pytest.raises(ValueError, match=re.escape("every k must be in [1, 4]")):
        retrieval_topk(queries, query_y, gallery, gallery_y, ks=(5,))


def test_standardize_uses_the_reference_statistics() -> None:
    reference = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    ref, other = standardize(reference, torch.tensor([[2.0, 6.0]]))
    torch.testing.assert_close(ref.mean(0), torch.zeros(2))
    assert other[0, 0] == 0.0 and torch.isfinite(other).all()  # a constant column does not blow up


def test_evaluate_trunk_on_a_small_synthetic_split(trunk) -> None:
    data = load_probe_data(num_classes=6, num_videos=60, frames=8, size=32, seed=0)
    assert len(data.train_clips) == 48 and len(data.test_clips) == 12
    metrics = evaluate_trunk(trunk, data, epochs=3, ks=(1, 5))
    assert set(metrics) == {"probe_top1", "retrieval_top1", "retrieval_top5"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert metrics == evaluate_trunk(trunk, data, epochs=3, ks=(1, 5))


def test_centre_frames_removes_what_the_frames_share() -> None:
    shared, moving = torch.tensor([5.0, -2.0]), torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    features = (shared + moving).flatten()[None]  # one clip, 3 frames of 2 features
    centred = centre_frames(features, num_frames=3).view(3, 2)
    torch.testing.assert_close(centred, moving - moving.mean(0))  # the shared part is gone, the differences stay
    with pytest.raises(ValueError, match=re.escape("num_frames=4, got (1, 6)")):
        centre_frames(features, num_frames=4)


def test_evaluate_trunk_centred_is_deterministic(trunk) -> None:
    data = load_probe_data(num_classes=6, num_videos=60, frames=8, size=32, seed=0)
    centred = evaluate_trunk(trunk, data, epochs=3, ks=(1,), centred=True)
    assert centred == evaluate_trunk(trunk, data, epochs=3, ks=(1,), centred=True)
    assert set(centred) == {"probe_top1", "retrieval_top1"}
