"""Fine-tuning and video-level evaluation: windows, metrics worked by hand, reproducibility, exact resume."""

from __future__ import annotations

import copy

import pytest
import torch

from permgym.finetune import (
    ActionClassifier,
    FinetuneConfig,
    FinetuneTrainer,
    confusion_matrix,
    eval_windows,
    predict_videos,
    topk_accuracy,
)
from permgym.models import build_trunk
from permgym.probe import clip_features


def _model(classes: int = 3, seed: int = 0) -> ActionClassifier:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ActionClassifier(build_trunk("tiny"), 4, classes)


def _data(n: int = 12, frames: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips whose class is the direction a bright bar moves (left, right, static)."""
    clips = torch.full((n, frames, 3, 32, 32), 40, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    for i in range(n):
        for t in range(frames):
            x = {0: 2 + 2 * t, 1: 28 - 2 * t, 2: 15}[int(labels[i])]
            clips[i, t, :, 8:24, max(0, x - 2) : x + 2] = 230
    return clips, labels


def test_eval_windows_have_evenly_spaced_centres() -> None:
    windows = eval_windows(clip_frames=16, num_frames=4, stride=3, count=3)
    assert windows.tolist() == [[0, 3, 6, 9], [3, 6, 9, 12], [6, 9, 12, 15]]
    assert eval_windows(16, 4, 3, 1).tolist() == [[0, 3, 6, 9]]
    long = eval_windows(clip_frames=7, num_frames=4, stride=5, count=2)  # stride shortened to fit
    assert long.tolist() == [[0, 2, 4, 6], [0, 2, 4, 6]]


def test_config_strides_and_validation() -> None:
    config = FinetuneConfig(num_frames=4, min_stride=2)
    assert config.max_stride(16) == 5 and config.test_stride(16) == 3
    assert FinetuneConfig(eval_stride=1).test_stride(16) == 1
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        FinetuneConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="dropout must be in"):
        FinetuneConfig(dropout=1.0)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        FinetuneConfig(epochs=0)


def test_topk_and_confusion_worked_by_hand() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    labels = torch.tensor([0, 1, 1, 1])
    # top-1: samples 0 and 2 hit; sample 3 ties classes 0 and 1 and the lower class wins -> 2 / 4.
    # top-2: sample 1 ranks (2, 1, 0), label 1 second; sample 3 ranks (0, 1, 2) -> all four hit.
    assert topk_accuracy(probs, labels, ks=(1, 2, 5)) == {"top1": 0.5, "top2": 1.0, "top5": 1.0}
    assert confusion_matrix(probs, labels).tolist() == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]


def test_prediction_is_the_window_average_of_clip_features() -> None:
    clips, _ = _data(5)
    model = _model()
    config = FinetuneConfig(test_clips=3, min_stride=2)
    probs = predict_videos(model, clips, config, chunk=2)
    assert probs.shape == (5, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    windows = eval_windows(12, 4, config.test_stride(12), 3)
    logits = model.head(clip_features(model.trunk, clips[:, windows].flatten(0, 1), 4, 32))
    expected = logits.softmax(-1).view(5, 3, 3).mean(1)
    torch.testing.assert_close(probs, expected)


def _train(trainer: FinetuneTrainer, clips: torch.Tensor, labels: torch.Tensor, epochs: int) -> list[float]:
    losses = []
    for _ in range(epochs):
        for index in trainer.epoch_batches():
            losses.append(trainer.step(clips[index], labels[index])["loss"])
    return losses


def test_training_is_reproducible_resumable_and_learns() -> None:
    clips, labels = _data(12)
    config = FinetuneConfig(batch_size=6, epochs=6, lr=5e-3, trunk_lr_scale=1.0)
    first = FinetuneTrainer(_model(), config, len(labels), seed=1)
    losses = _train(first, clips, labels, 3)
    state = copy.deepcopy(first.state_dict())  # state_dict() shares storage with the live tensors
    losses += _train(first, clips, labels, 3)
    assert sum(losses[-2:]) < sum(losses[:2])

    again = FinetuneTrainer(_model(), config, len(labels), seed=1)
    assert _train(again, clips, labels, 6) == losses

    resumed = FinetuneTrainer(_model(seed=5), config, len(labels), seed=9)  # other init and seed: all overwritten
    resumed.load_state_dict(state)
    assert resumed.epoch == 3
    assert _train(resumed, clips, labels, 3) == losses[6:]
    for a, b in zip(resumed.model.state_dict().values(), first.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_optimizer_groups_and_schedule() -> None:
    config = FinetuneConfig(lr=0.1, trunk_lr_scale=0.1, optimizer="sgd", batch_size=4, epochs=2)
    trainer = FinetuneTrainer(_model(), config, num_videos=10, seed=0)
    assert trainer.steps_per_epoch == 2  # the incomplete last batch is dropped
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([0.01, 0.1])
    clips, labels = _data(10)
    _train(trainer, clips, labels, 2)
    assert trainer.optimizer.param_groups[1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine annealed to zero
