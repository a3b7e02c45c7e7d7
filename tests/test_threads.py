"""Torch thread settings: envs use their own count for their compute and leave the process's setting as it was."""

from __future__ import annotations

import pytest
import torch

from permgym.env import PermSamplingEnv
from permgym.threads import torch_threads
from permgym.trainer import OrderingTrainer

FAST = {"steps_per_episode": 2, "updates_per_step": 1, "batch_size": 4, "val_batch_size": 4, "synthetic_videos": 300}


def test_context_restores_the_count_even_after_an_error() -> None:
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError, match="inside"), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 2
    with torch_threads(None):
        assert torch.get_num_threads() == 2


@pytest.fixture
def update_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The intra-op thread count in force at each ``OrderingTrainer.update`` call."""
    seen: list[int] = []
    original = OrderingTrainer.update

    def recording_update(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OrderingTrainer, "update", recording_update)
    return seen


def test_env_computes_with_its_threads_and_restores_the_process_setting(update_threads: list[int]) -> None:
    torch.set_num_threads(2)
    env = PermSamplingEnv(**FAST)  # default torch_threads=1
    assert torch.get_num_threads() == 2  # construction has no global side effect
    env.reset(seed=0)
    assert torch.get_num_threads() == 2
    env.step(env.action_space.sample())
    assert torch.get_num_threads() == 2
    assert update_threads == [1]


def test_none_keeps_the_process_setting(update_threads: list[int]) -> None:
    torch.set_num_threads(2)
    env = PermSamplingEnv(torch_threads=None, **FAST)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert update_threads == [2] and torch.get_num_threads() == 2


def test_invalid_thread_count_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="config option torch_threads must be >= 1, got 0"):
        PermSamplingEnv(torch_threads=0)
