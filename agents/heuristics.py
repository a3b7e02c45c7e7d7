"""Baseline samplers that do not learn: uniform (the classic fixed-bank draw), stratified (every update draws distinct
permutations from a reshuffled bank: the baseline every learned sampler must beat), constant, round-robin,
curriculum (easy to hard by Hamming distance from the identity) and loss-proportional (hard-permutation mining).

All are stateless between steps: what they need (held-out loss per permutation, progress) is in the observation,
so they work unchanged in vector envs and after a resume.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from agents.base import BankSampler, Sampler, SamplerSpec


class UniformSampler(BankSampler):
    """Every permutation of the bank equally likely: the fixed-bank baseline of the paper.

    distribution mode: the all-zeros action (a uniform softmax); per_sample: uniform indices; discrete: a group with
    probability proportional to its size (uniform over near-equal groups).
    """

    def probabilities(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return {task: np.full(k, 1.0 / k) for task, k in self.spec.bank_sizes.items()}


class StratifiedSampler(Sampler):
    """Balanced draws: each step, every task's ``B`` samples take the rows of a freshly shuffled bank in order.

    With ``B <= K`` an update trains on ``B`` distinct permutations; with ``B > K`` the bank is dealt out again from
    a new shuffle, so every permutation is used ``floor(B / K)`` or ``ceil(B / K)`` times. Nothing is carried from
    step to step except ``self.rng`` (no cycling state, unlike :class:`RoundRobinSampler`), so the sampler works
    unchanged in vector envs and after a resume. It removes the sampling noise of i.i.d. uniform draws (some
    permutations drawn twice, others missing in an update) and nothing else: a learned sampler's gain over it is
    adaptivity, not balance.

    Only the ``per_sample`` mode can express it (the distribution mode draws i.i.d. from a distribution).
    """

    supported_modes = ("per_sample",)

    def _act(self, observation: np.ndarray, deterministic: bool) -> np.ndarray:
        return stratified_action(self.spec, self.rng)


def stratified_action(spec: SamplerSpec, rng: np.random.Generator) -> np.ndarray:
    """A per_sample action that deals each task's samples from freshly shuffled banks (see :class:`StratifiedSampler`)."""
    rows = []
    for task, n in spec.batch_split.items():
        k = spec.bank_sizes[task]
        deals = [rng.permutation(k) for _ in range(-(-n // k))]
        rows.append(np.concatenate(deals)[:n])
    return np.concatenate(rows).astype(np.int64)


class ConstantSampler(Sampler):
    """Always the same action (e.g. one difficulty group in discrete mode, or a fixed preference vector).

    Args:
        env: the env or its spec.
        action: an element of the env's action space, checked at construction.
        seed: unused by the action, kept for the common interface.
    """

    def __init__(self, env: gym.Env | SamplerSpec, action: Any, seed: int = 0) -> None:
        super().__init__(env, seed)
        space = self.spec.action_space
        value = np.asarray(action, dtype=np.float32 if isinstance(space, gym.spaces.Box) else np.int64)
        if value.size != int(np.prod(space.shape)) or not space.contains(value.reshape(space.shape)):
            raise ValueError(f"constant action {action!r} is not in the env's action space {space}")
        self.action = value.reshape(space.shape)

    def _act(self, observation: np.ndarray, deterministic: bool) -> np.ndarray:
        return self.action.copy()

    def init_kwargs(self) -> dict[str, Any]:
        return {"action": self.action.tolist()}


class RoundRobinSampler(Sampler):
    """Cycle through the bank, step by step (the step index comes from the observation's progress).

    * per_sample: consecutive bank rows for consecutive samples, continuing where the previous step stopped, so over
      an episode every permutation is used equally often (stratified, no sampling noise).
    * distribution: at step ``t`` all the probability the env allows on row ``t mod K`` of each bank (action +1
      there, -1 elsewhere); the env draws i.i.d., so this is the nearest a distribution gets to cycling.
    * discrete: group ``t mod G``.
    """

    def _act(self, observation: np.ndarray, deterministic: bool) -> np.ndarray:
        t = self.spec.step_index(observation)
        if self.spec.action_mode == "discrete":
            return np.int64(t % self.spec.discrete_groups)
        if self.spec.action_mode == "per_sample":
            rows = [(t * n + np.arange(n)) % self.spec.bank_sizes[task] for task, n in self.spec.batch_split.items()]
            return np.concatenate(rows).astype(np.int64)
        parts = []
        for k in self.spec.bank_sizes.values():
            part = -np.ones(k, dtype=np.float32)
            part[t % k] = 1.0
            parts.append(part)
        return np.concatenate(parts)


class CurriculumSampler(BankSampler):
    """Easy to hard: uniform over the easiest ``f(u)`` share of each bank at episode progress ``u = t / T``.

    Rows are ranked by Hamming distance from the identity (fewest moved elements = easiest; ties keep bank order)
    and ``f(u) = min(1, start_fraction + (1 - start_fraction) * u / full_bank_at)`` grows linearly (a pacing
    function in the sense of Hacohen & Weinshall 2019) until the whole bank is in use at ``u = full_bank_at``.

    Args:
        env: the env or its spec.
        start_fraction: share of the bank used at the start, in (0, 1].
        full_bank_at: progress in (0, 1] from which the whole bank is used.
        seed: seeds the per-sample / group draws.
    """

    def __init__(
        self, env: gym.Env | SamplerSpec, start_fraction: float = 0.25, full_bank_at: float = 0.5, seed: int = 0
    ) -> None:
        super().__init__(env, seed)
        if not 0 < start_fraction <= 1 or not 0 < full_bank_at <= 1:
            raise ValueError(f"start_fraction and full_bank_at must be in (0, 1], got {start_fraction}, {full_bank_at}")
        self.start_fraction, self.full_bank_at = start_fraction, full_bank_at
        self._rank = {
            task: np.argsort(np.argsort(bank.hamming_to_identity().numpy(), kind="stable"), kind="stable")
            for task, bank in self.spec.banks.items()
        }

    def fraction(self, progress: float) -> float:
        """Share of each bank in use at progress ``u`` in [0, 1]."""
        return min(1.0, self.start_fraction + (1 - self.start_fraction) * progress / self.full_bank_at)

    def probabilities(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        fraction = self.fraction(self.spec.step_index(observation) / self.spec.steps_per_episode)
        probs = {}
        for task, rank in self._rank.items():
            allowed = rank < max(1, math.ceil(fraction * len(rank) - 1e-9))
            probs[task] = allowed / allowed.sum()
        return probs

    def init_kwargs(self) -> dict[str, Any]:
        return {"start_fraction": self.start_fraction, "full_bank_at": self.full_bank_at}


class LossProportionalSampler(BankSampler):
    """Hard-permutation mining: ``p_k ∝ exp(x_k / temperature)``, ``x_k`` the held-out loss of permutation ``k``
    as the observation gives it (``loss / log K - 1``: 0 at chance level, -1 solved).

    Low temperatures focus on the hardest permutations; large ones approach uniform. At ``temperature`` equal to the
    env's, the distribution-mode action is the observation's loss block up to a constant shift (the same softmax).

    Args:
        env: the env or its spec.
        temperature: softmax temperature over normalised losses, > 0.
        seed: seeds the per-sample / group draws.
    """

    def __init__(self, env: gym.Env | SamplerSpec, temperature: float = 0.25, seed: int = 0) -> None:
        super().__init__(env, seed)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def probabilities(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        probs = {}
        slices = self.spec.slices
        for task in self.spec.banks:
            z = observation[slices[task]["val_loss"]].astype(np.float64) / self.temperature
            e = np.exp(z - z.max())
            probs[task] = e / e.sum()
        return probs

    def init_kwargs(self) -> dict[str, Any]:
        return {"temperature": self.temperature}
