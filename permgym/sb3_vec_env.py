"""Stable-Baselines3 ``VecEnv`` over the batched vector env, so SB3 algorithms train on N batched episodes.

``PPO("MlpPolicy", BatchedVecEnv(8))`` steps 8 PermSampling episodes per call with batched CNN compute
(:class:`~permgym.vector_env.PermSamplingVectorEnv`). SB3's conventions apply: an episode that ends is reset in the
same step, its last observation is in ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]`` says it
was cut by the step limit; seeds given with ``seed()`` apply to the next ``reset()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from permgym.config import PermSamplingConfig
from permgym.vector_env import PermSamplingVectorEnv


class BatchedVecEnv(VecEnv):
    """SB3 ``VecEnv`` of ``num_envs`` PermSampling sub-envs stepped by batched compute.

    Args:
        num_envs: N.
        config: preset name or config of every sub-env.
        **overrides: config fields, as for ``gym.make``.
    """

    def __init__(self, num_envs: int, config: PermSamplingConfig | str = "tiny", **overrides: Any) -> None:
        self.venv = PermSamplingVectorEnv(num_envs, config, **overrides)
        super().__init__(num_envs, self.venv.single_observation_space, self.venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        indices = range(self.num_envs)
        options = [o or None for o in self._options]
        results = [self.venv.reset_at([i], [s], o)[0] for i, s, o in zip(indices, self._seeds, options, strict=True)]
        self.reset_infos = [info for _, info in results]
        self._reset_seeds()
        self._reset_options()
        return np.stack([obs for obs, _ in results])

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        results = self.venv.step_at(range(self.num_envs), list(self._actions))
        self._actions = None
        observations = np.stack([obs for obs, *_ in results])
        rewards = np.array([reward for _, reward, *_ in results], dtype=np.float32)
        dones = np.array([terminated or truncated for _, _, terminated, truncated, _ in results])
        infos = []
        for obs, _, terminated, truncated, info in results:
            info["TimeLimit.truncated"] = truncated and not terminated
            if terminated or truncated:
                info["terminal_observation"] = obs
            infos.append(info)
        finished = [int(i) for i in np.flatnonzero(dones)]
        for i, (obs, info) in zip(finished, self.venv.reset_at(finished), strict=True):
            observations[i] = obs
            self.reset_infos[i] = info
        return observations, rewards, dones, infos

    def close(self) -> None:
        self.venv.close()

    def _targets(self, indices: VecEnvIndices) -> list[gym.Env]:
        return [self.venv.envs[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(env, attr_name) for env in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for env in self._targets(indices):
            setattr(env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        return [getattr(env, method_name)(*method_args, **method_kwargs) for env in self._targets(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._targets(indices)]  # the sub-envs are never wrapped

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs  # text rendering only
