"""The sampler interface: what every agent that chooses permutations in PermSampling offers.

A sampler is built from the env (or a :class:`SamplerSpec`) and a seed, and acts through Stable-Baselines3's
``predict(observation, state=None, episode_start=None, deterministic=False) -> (action, state)``, so
``stable_baselines3.common.evaluation.evaluate_policy``, :func:`agents.rollout.run_episode` and the long pretraining
of ``experiments/ssl_ucf101.py`` drive every sampler alike. Learning samplers also learn online, through
:meth:`Sampler.observe`, called once after every ``env.step``::

    obs, info = env.reset(seed=seed)
    done = False
    while not done:
        action, _ = sampler.predict(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        sampler.observe(reward, obs, done, info)   # a no-op for samplers that do not learn

``observe`` pairs the reward with the observation of the last single-env ``predict`` call; it needs the step's
``info`` because ``info["selection_counts"]`` says which permutations the CNN actually trained on (in distribution
mode the env, not the sampler, draws them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from permgym.config import ACTION_MODES
from permgym.env import PermSamplingEnv, difficulty_groups
from permgym.observation import observation_slices
from permgym.permutations import PermutationBank


@dataclass(frozen=True)
class SamplerSpec:
    """What a sampler needs to know about the env it acts in.

    Attributes:
        observation_space, action_space: the env's spaces.
        action_mode: ``"distribution"``, ``"per_sample"`` or ``"discrete"`` (see :class:`~permgym.env.PermSamplingEnv`).
        temperature: softmax temperature of the distribution mode.
        banks: the permutation bank of each task, in action / observation order.
        batch_split: samples per update of each task (the per_sample action has one entry per sample).
        discrete_groups: G, the number of difficulty groups of the discrete mode.
        steps_per_episode: T; the observation's progress feature is ``2 t / T - 1``.
    """

    observation_space: spaces.Box
    action_space: spaces.Space
    action_mode: str
    temperature: float
    banks: dict[str, PermutationBank]
    batch_split: dict[str, int]
    discrete_groups: int
    steps_per_episode: int

    @classmethod
    def from_env(cls, env: gym.Env) -> SamplerSpec:
        """Read the spec of a PermSampling env (any wrapper around :class:`~permgym.env.PermSamplingEnv`)."""
        base = env.unwrapped
        if not isinstance(base, PermSamplingEnv):
            raise TypeError(f"samplers act in PermSampling envs, got {type(base).__name__} ({env})")
        c = base.config
        return cls(
            observation_space=base.observation_space,
            action_space=base.action_space,
            action_mode=c.action_mode,
            temperature=c.temperature,
            banks={task: base.banks[task] for task in base.tasks},
            batch_split=dict(base.batch_split),
            discrete_groups=c.discrete_groups,
            steps_per_episode=c.steps_per_episode,
        )

    @property
    def bank_sizes(self) -> dict[str, int]:
        """K per task, in order."""
        return {task: bank.size for task, bank in self.banks.items()}

    @cached_property
    def slices(self) -> dict[str, dict[str, slice]]:
        """Feature positions in the observation (:func:`permgym.observation.observation_slices`)."""
        return observation_slices(self.bank_sizes)

    @cached_property
    def groups(self) -> dict[str, np.ndarray]:
        """``{task: [K]}`` difficulty group of each bank row in the discrete mode (as the env assigns them)."""
        return {
            t: difficulty_groups(b.hamming_to_identity(), self.discrete_groups).numpy() for t, b in self.banks.items()
        }

    def step_index(self, observation: np.ndarray) -> int:
        """The env step ``t`` an observation was made at, read from its progress feature."""
        progress = float(observation[self.slices["global"]["progress"]][0])
        return round((progress + 1) / 2 * self.steps_per_episode)


class Sampler(ABC):
    """Base class of every sampler: SB3's ``predict``, the online-learning hook ``observe``, and checkpoints.

    Args:
        env: the PermSampling env (any wrapper), or its :class:`SamplerSpec`.
        seed: seeds the sampler's own random draws (``self.rng``); equal seeds and observations give equal actions.

    Subclasses implement :meth:`_act` for one observation; learning samplers override :meth:`observe`. Samplers that
    only work in some action modes list them in ``supported_modes`` and are refused at construction otherwise.
    """

    supported_modes: ClassVar[tuple[str, ...]] = ACTION_MODES

    def __init__(self, env: gym.Env | SamplerSpec, seed: int = 0) -> None:
        self.spec = env if isinstance(env, SamplerSpec) else SamplerSpec.from_env(env)
        if self.spec.action_mode not in self.supported_modes:
            raise ValueError(
                f"{type(self).__name__} does not support action_mode={self.spec.action_mode!r}; it supports "
                f"{', '.join(self.supported_modes)}: make the env with action_mode={self.supported_modes[0]!r}"
            )
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the sampler's random draws from ``seed`` (learned parameters are kept)."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The action for one observation ``[D]`` or a batch ``[N, D]`` (vector envs), in SB3's signature.

        Our samplers are stateless between steps (everything they need, progress included, is in the
        observation), so ``state`` is returned unchanged and ``episode_start`` is ignored. ``deterministic`` is passed
        to :meth:`_act`; samplers defined as a distribution over the bank keep sampling from it either way (its
        mode would be one permutation for every sample).

        Returns:
            ``(action, state)``; the action is ``[N, ...]`` for a batch.
        """
        obs = np.asarray(observation, dtype=np.float32)
        if obs.shape[-1:] != self.spec.observation_space.shape or obs.ndim not in (1, 2):
            raise ValueError(
                f"expected an observation of shape {self.spec.observation_space.shape} or a batch [N, "
                f"{self.spec.observation_space.shape[0]}], got {obs.shape}"
            )
        if obs.ndim == 1:
            return self._act(obs, deterministic), state
        return np.stack([self._act(row, deterministic) for row in obs]), state

    @abstractmethod
    def _act(self, observation: np.ndarray, deterministic: bool) -> np.ndarray:
        """The action (an element of the env's action space) for one ``[D]`` observation."""

    def observe(
        self, reward: float, next_observation: np.ndarray, done: bool, info: dict[str, Any]
    ) -> dict[str, float]:
        """Online-learning hook, called once after each ``env.step`` of a single env.

        Args:
            reward: the step's reward.
            next_observation: the observation ``env.step`` returned.
            done: ``terminated or truncated``.
            info: the step's info; learners read ``info["selection_counts"]`` (``{task: [K] int}``).

        Returns:
            Scalars the sampler logged for this step (empty for samplers that do not learn).
        """
        return {}

    def close(self) -> None:  # noqa: B027  (an optional hook: most samplers hold nothing to release)
        """Release resources (log writers); the sampler may still act afterwards."""

    # ------------------------------------------------------------------ checkpoints
    def init_kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments (besides env and seed) that :meth:`load` passes to rebuild the sampler."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes while the sampler acts (its RNG; learners add their parameters)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]

    def save(self, path: str | Path) -> None:
        """Write class, constructor arguments, bank sizes and :meth:`state_dict` to ``path`` (``torch.save``)."""
        torch.save(
            {
                "class": type(self).__name__,
                "seed": self.seed,
                "init_kwargs": self.init_kwargs(),
                "bank_sizes": self.spec.bank_sizes,
                "action_mode": self.spec.action_mode,
                "state": self.state_dict(),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, env: gym.Env | SamplerSpec, seed: int | None = None, **overrides: Any) -> Sampler:
        """Rebuild a sampler written by :meth:`save` for ``env``, which must have the same banks.

        The action mode may differ from the saved one if the class supports the new mode (a policy learned in
        distribution mode can act per sample). With ``seed`` the random draws restart from it (a warm-started
        policy run on a new instance); otherwise they continue exactly. ``overrides`` replace saved constructor
        arguments or add others (e.g. ``log_dir``).
        """
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        if checkpoint["class"] != cls.__name__:
            raise TypeError(f"{path} holds a {checkpoint['class']}, not a {cls.__name__}")
        sampler = cls(env, seed=checkpoint["seed"], **{**checkpoint["init_kwargs"], **overrides})
        if sampler.spec.bank_sizes != checkpoint["bank_sizes"]:
            raise ValueError(
                f"{path} was saved for banks {checkpoint['bank_sizes']}, but the env has {sampler.spec.bank_sizes}"
            )
        sampler.load_state_dict(checkpoint["state"])
        if seed is not None:
            sampler.reseed(seed)
        return sampler


class BankSampler(Sampler):
    """A sampler defined by a probability distribution over each task's bank, given the observation.

    Subclasses implement :meth:`probabilities`; the action follows from it in every mode:

    * ``distribution``: the action whose env distribution ``softmax(clip(a, -1, 1) / temperature)`` equals it (see
      :func:`distribution_to_action`; exact when its probability ratios are within ``exp(2 / temperature)``).
    * ``per_sample``: each sample's permutation drawn from it with ``self.rng``.
    * ``discrete``: a difficulty group drawn with probability equal to the group's mass (mean over tasks).
    """

    @abstractmethod
    def probabilities(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        """``{task: [K] float64}`` probabilities over each bank (each sums to 1)."""

    def _act(self, observation: np.ndarray, deterministic: bool) -> np.ndarray:
        probs = self.probabilities(observation)
        if self.spec.action_mode == "distribution":
            return distribution_to_action(probs, self.spec.temperature)
        if self.spec.action_mode == "per_sample":
            draws = [self.rng.choice(len(probs[t]), size=n, p=probs[t]) for t, n in self.spec.batch_split.items()]
            return np.concatenate(draws).astype(np.int64)
        mass = np.zeros(self.spec.discrete_groups)
        for task, p in probs.items():
            mass += np.bincount(self.spec.groups[task], weights=p, minlength=self.spec.discrete_groups)
        return np.int64(self.rng.choice(self.spec.discrete_groups, p=mass / mass.sum()))


def distribution_to_action(probabilities: dict[str, np.ndarray], temperature: float) -> np.ndarray:
    """The distribution-mode action that makes the env sample from ``probabilities``.

    The env samples from ``softmax(clip(a, -1, 1) / temperature)`` per task, so ``a = temperature * (log p - c)``
    with ``c`` the midpoint of ``log p``'s range. Distributions whose largest / smallest probability ratio exceeds
    ``exp(2 / temperature)`` cannot be expressed: their smallest probabilities are raised to that limit (zeros
    included).

    Returns:
        ``[sum K]`` float32 in [-1, 1], tasks concatenated in order.
    """
    parts = []
    for p in probabilities.values():
        logits = np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-300, None))
        top = logits.max()
        logits = np.maximum(logits, top - 2 / temperature)  # what the clip will do anyway, but centred first
        parts.append(np.clip(temperature * (logits - (top + logits.min()) / 2), -1, 1))
    return np.concatenate(parts).astype(np.float32)
