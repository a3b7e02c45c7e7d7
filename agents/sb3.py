"""Stable-Baselines3 in PermSampling: env factories that cycle through instance seeds, per-algorithm defaults for a
slow env, and a :class:`~agents.base.Sampler` wrapper so SB3 models are evaluated like every other sampler.

No action masking: every permutation (and every group) is valid at every step, so MaskablePPO would have nothing to
mask; plain PPO is used.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from agents.base import Sampler, SamplerSpec

#: Algorithm name -> SB3 class.
ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}


#: A setting that only each algorithm's saved model holds, checked in this order (PPO also saves ``gae_lambda``).
ALGO_SETTINGS: tuple[tuple[str, str], ...] = (("dqn", "exploration_rate"), ("ppo", "clip_range"), ("a2c", "gae_lambda"))


def saved_algo(path: str | Path) -> str:
    """The algorithm (a key of :data:`ALGOS`) that saved a Stable-Baselines3 model ``.zip``, read from the settings
    it stores (SB3's ``load`` of one algorithm's file into another's class would mix the two silently).

    Raises:
        ValueError: ``path`` is not a Stable-Baselines3 model of PPO, A2C or DQN (names the file).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            settings = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not a Stable-Baselines3 model .zip ({err})") from None
    for algo, setting in ALGO_SETTINGS:
        if setting in settings:
            return algo
    raise ValueError(f"{str(path)!r} is a Stable-Baselines3 model of none of {', '.join(ALGOS)}")


def require_algo(path: str | Path, algo: str | None) -> str:
    """The algorithm that saved ``path`` (:func:`saved_algo`), refusing one other than ``algo`` (None: any).

    Raises:
        ValueError: not an SB3 model, or one of another algorithm (names both and the fix).
    """
    found = saved_algo(path)
    if algo is not None and found != algo:
        raise ValueError(f"{str(path)!r} was saved by {found}, not {algo}: pass --algo {found} (or algo={found!r})")
    return found


class SeedCycle(gym.Wrapper):
    """Each reset starts the next seed of a fixed list (cycling), whatever seed the caller passes.

    SB3 seeds vector envs itself at the start of ``learn()``; with this wrapper the list of instance seeds decides
    which CNN runs an agent trains or is evaluated on (DACBench's instance sets), so training and evaluation seeds
    stay disjoint by construction.

    Args:
        env: the env to wrap.
        seeds: the instance seeds, used in order.
    """

    def __init__(self, env: gym.Env, seeds: Sequence[int]) -> None:
        super().__init__(env)
        if len(seeds) == 0:
            raise ValueError("SeedCycle needs at least one seed")
        self.seeds = [int(s) for s in seeds]
        self._next = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        instance = self.seeds[self._next % len(self.seeds)]
        self._next += 1
        return self.env.reset(seed=instance, options=options)


def make_env(env_id: str, seeds: Sequence[int], env_kwargs: dict[str, Any]) -> Callable[[], gym.Env]:
    """A thunk for vector envs: ``permgym.make(env_id, **env_kwargs)`` (``gym.make`` with the episode length of the
    overrides) with ``Monitor`` (episode statistics for SB3's
    logger and EvalCallback) inside :class:`SeedCycle`. ``render_mode`` stays ``None`` (SB3's ``make_vec_env``
    would pass ``"rgb_array"`` for string ids, which PermSampling does not render)."""

    def thunk() -> gym.Env:
        import permgym  # registers the ids in worker processes

        return SeedCycle(Monitor(permgym.make(env_id, **env_kwargs)), seeds)

    return thunk


def make_seeded_vec_env(env_id: str, seeds: Sequence[int], n_envs: int, env_kwargs: dict[str, Any]) -> VecEnv:
    """``n_envs`` envs, env ``i`` cycling through ``seeds[i::n_envs]`` (all seeds, rotated, when there are fewer
    seeds than envs); ``SubprocVecEnv`` (one process each, one torch thread each) when ``n_envs > 1``."""
    seeds = list(seeds)
    per_env = [seeds[i::n_envs] or seeds[i % len(seeds) :] + seeds[: i % len(seeds)] for i in range(n_envs)]
    thunks = [make_env(env_id, s, env_kwargs) for s in per_env]
    return SubprocVecEnv(thunks) if n_envs > 1 else DummyVecEnv(thunks)


def default_algo_kwargs(algo: str, steps_per_episode: int) -> dict[str, Any]:
    """Hyper-parameters for a slow env whose episodes are ``steps_per_episode`` steps (one step = several SGD
    updates of a CNN, so samples are precious): PPO and A2C collect whole episodes per rollout, DQN starts learning
    after one episode and syncs its target net once per episode."""
    net = {"net_arch": [64, 64]}
    if algo == "ppo":
        return {"n_steps": steps_per_episode, "batch_size": steps_per_episode, "n_epochs": 10, "gamma": 0.99,
                "gae_lambda": 0.95, "ent_coef": 0.01, "learning_rate": 3e-4, "policy_kwargs": net}  # fmt: skip
    if algo == "a2c":
        return {"n_steps": 5, "gamma": 0.99, "ent_coef": 0.01, "learning_rate": 7e-4, "policy_kwargs": net}
    if algo == "dqn":
        return {"learning_starts": steps_per_episode, "buffer_size": 10_000, "batch_size": 32, "train_freq": 1,
                "target_update_interval": steps_per_episode, "exploration_fraction": 0.5, "gamma": 0.99,
                "policy_kwargs": net}  # fmt: skip
    raise ValueError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")


class SB3Sampler(Sampler):
    """A trained SB3 model as a sampler (it does not learn online: SB3 learns in ``model.learn``).

    Args:
        model: a PPO, A2C or DQN model whose action space is the env's.
        env: the env or its spec.
        seed: seeds the model's stochastic actions (drawn under a forked torch RNG: the global one is untouched).
        deterministic: force deterministic (``True``) or stochastic (``False``) actions whatever ``predict`` is
            asked; ``None`` follows the ``deterministic`` argument of each call (SB3's behaviour).
    """

    def __init__(
        self, model: BaseAlgorithm, env: gym.Env | SamplerSpec, seed: int = 0, deterministic: bool | None = None
    ) -> None:
        super().__init__(env, seed)
        if model.action_space != self.spec.action_space:
            raise ValueError(
                f"the model acts in {model.action_space}, the env in {self.spec.action_space}: train the model in "
                f"an env with action_mode={self.spec.action_mode!r} and the same banks"
            )
        self.model = model
        self.deterministic = deterministic

    def _act(self, observation: np.ndarray, deterministic: bool) -> np.ndarray:
        deterministic = deterministic if self.deterministic is None else self.deterministic
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.rng.integers(2**62)))
            action, _ = self.model.predict(observation, deterministic=deterministic)
        return action

    def save(self, path: str | Path) -> None:
        """The model's own ``.zip`` (SB3 format)."""
        self.model.save(path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        env: gym.Env | SamplerSpec,
        algo: str | None = None,
        seed: int = 0,
        deterministic: bool | None = None,
    ) -> SB3Sampler:
        """Load an SB3 ``.zip`` as a sampler for ``env``; ``algo`` (default: the one that saved it,
        :func:`saved_algo`) must be the file's.

        Raises:
            ValueError: an unknown ``algo``, a file that is no SB3 model, or one saved by another algorithm.
        """
        if algo is not None and algo not in ALGOS:
            raise ValueError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")
        found = require_algo(path, algo)
        return cls(ALGOS[found].load(path, device="cpu"), env, seed=seed, deterministic=deterministic)
