"""One PermSampling episode driven by a sampler: the loop every comparison and training run shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class Step:
    """One sampler decision and the env step it drove (see :func:`take_step`)."""

    obs: np.ndarray
    reward: float
    done: bool
    info: dict[str, Any]
    state: Any
    learned: dict[str, float]


def take_step(
    env: gym.Env,
    sampler: Sampler,
    obs: np.ndarray,
    state: Any = None,
    episode_start: bool = False,
    learn: bool = True,
    decide: Callable[[Any], Any] | None = None,
) -> Step:
    """The sampler acts (``predict``), the env steps, and a learning sampler learns (``observe``).

    Args:
        env: a PermSampling env.
        sampler: the sampler.
        obs, state, episode_start: the observation, the policy state and whether the episode just started.
        learn: call ``sampler.observe`` (online learning); ``False`` freezes learners.
        decide: applied to the action before the step, e.g. ``permgym.distributed.broadcast_object`` so that every
            rank of a multi-process run takes rank 0's action.
    """
    action, state = sampler.predict(obs, state, np.array([episode_start]), deterministic=False)
    if decide is not None:
        action = decide(action)
    obs, reward, terminated, truncated, info = env.step(action)
    done = bool(terminated or truncated)
    learned = sampler.observe(float(reward), obs, done, info) if learn else {}
    return Step(obs, float(reward), done, info, state, learned)


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
    done, first, state = False, True, None
    while not done:
        step = take_step(env, sampler, obs, state, first, learn)
        obs, state, done, first = step.obs, step.state, step.done, False
        log.rewards.append(step.reward)
        log.record(step.info, len(log.rewards) * updates_per_step)
        for task, counts in step.info["selection_counts"].items():
            log.selection_counts.setdefault(task, []).append(np.asarray(counts).copy())
        log.diverged = bool(step.info["diverged"])
        if learn:
            log.learner_logs.append(step.learned)
    return log
