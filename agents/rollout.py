"""One PermSampling episode driven by a sampler: the loop every comparison and training run shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from agents.base import Sampler


@dataclass
class EpisodeLog:
    """What happened in one episode (one CNN training run).

    Attributes:
        seed: the instance seed passed to ``reset``.
        updates: ``[T + 1]`` SGD updates done before each held-out measurement (0 at reset).
        val_loss, val_accuracy: ``{task: [T + 1]}`` mean held-out loss / accuracy at reset and after each step.
        rewards: ``[T]`` rewards.
        selection_counts: ``{task: [T, K]}`` samples trained on each permutation at each step.
        learner_logs: the scalars :meth:`Sampler.observe` returned, one dict per step.
        diverged: whether training diverged (the episode then ends early).
    """

    seed: int
    updates: list[int] = field(default_factory=list)
    val_loss: dict[str, list[float]] = field(default_factory=dict)
    val_accuracy: dict[str, list[float]] = field(default_factory=dict)
    rewards: list[float] = field(default_factory=list)
    selection_counts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    learner_logs: list[dict[str, float]] = field(default_factory=list)
    diverged: bool = False

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards))

    def record(self, info: dict, updates: int) -> None:
        """Append the held-out statistics of ``info`` (from ``reset`` or ``step``)."""
        self.updates.append(updates)
        for key, value in info.items():
            task, _, name = key.partition("/")
            if name == "val_loss":
                self.val_loss.setdefault(task, []).append(float(value))
            elif name == "val_accuracy":
                self.val_accuracy.setdefault(task, []).append(float(value))


def run_episode(env: gym.Env, sampler: Sampler, seed: int, learn: bool = True) -> EpisodeLog:
    """Reset ``env`` with ``seed`` and let ``sampler`` choose permutations until the episode ends.

    Args:
        env: a PermSampling env (any wrapper).
        sampler: acts through ``predict``; with ``learn`` it also receives every step through ``observe``.
        seed: the instance seed (CNN initialisation, data order, augmentation).
        learn: call ``sampler.observe`` after each step (online learning); ``False`` freezes learners.

    Returns:
        The episode's :class:`EpisodeLog`; the env is left at the episode's end (its CNN is the trained one).
    """
    updates_per_step = env.unwrapped.config.updates_per_step
    log = EpisodeLog(seed=seed)
    obs, info = env.reset(seed=seed)
    log.record(info, 0)
    done, first = False, True
    while not done:
        action, _ = sampler.predict(obs, episode_start=np.array([first]))
        obs, reward, terminated, truncated, info = env.step(action)
        done, first = bool(terminated or truncated), False
        log.rewards.append(float(reward))
        log.record(info, len(log.rewards) * updates_per_step)
        for task, counts in info["selection_counts"].items():
            log.selection_counts.setdefault(task, []).append(np.asarray(counts).copy())
        log.diverged = bool(info["diverged"])
        if learn:
            log.learner_logs.append(sampler.observe(float(reward), obs, done, info))
    return log
