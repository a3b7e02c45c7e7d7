"""A batched vector env: N PermSampling episodes in one process, their CNNs stepped together.

``gym.make_vec("PermSampling-v0", num_envs=N, vectorization_mode="vector_entry_point")`` returns a
:class:`PermSamplingVectorEnv`. Each sub-env is a :class:`~permgym.env.PermSamplingEnv` that keeps its own seed,
data order, augmentation, permutation draws, observation statistics and reward; only the CNN compute of a step (the
``updates_per_step`` SGD updates and the validation pass) runs batched over the sub-envs, in
:class:`~permgym.batched_trainer.BatchedTrainer`. So sub-env ``i`` follows the single env with the same seed and
actions: equal draws, counts, flags and step numbers, and observations and rewards within float32 rounding of the
batched compute (``tests/test_vector_env.py`` bounds the difference by ``1e-3`` over the first steps of an episode
and across an autoreset). Over a whole episode the rounding grows, as it does for the single env itself when only
its memory layout changes (``bench/vector_env.py`` measures both): the same environment, not a bit-for-bit replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from permgym.batched_trainer import BatchedTrainer, check_batchable
from permgym.config import PermSamplingConfig, make_config
from permgym.env import PermSamplingEnv
from permgym.threads import torch_threads

StepResult = tuple[np.ndarray, float, bool, bool, dict[str, Any]]


class PermSamplingVectorEnv(VectorEnv):
    """``num_envs`` PermSampling episodes stepped together by batched CNN compute (Gymnasium 1.x ``VectorEnv``).

    Args:
        num_envs: N, the number of sub-envs.
        config: preset name or config shared by every sub-env (fields can be overridden as keywords, as for
            ``gym.make``). ``reward="uniform_relative"`` cannot be batched and raises ``ValueError``.
        render_mode: ``None`` or ``"ansi"`` (``render()`` then returns one text per sub-env).
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (the default, as ``SyncVectorEnv``: the step after an episode
            ends resets that sub-env, ignores its action and returns reward 0) or ``AutoresetMode.SAME_STEP`` (the
            reset happens in the step that ends the episode; the last observation and info are in
            ``info["final_obs"]`` / ``info["final_info"]``).
        max_episode_steps: truncate a sub-env's episode after this many steps, as the ``TimeLimit`` wrapper that
            ``gym.make`` adds (``make_vec`` passes the registered value); ``None`` = the config's own limit only.
        **overrides: fields of :class:`~permgym.config.PermSamplingConfig`.

    ``torch_threads`` of the config applies to the whole batched step (set, then restored). Seeding follows
    ``SyncVectorEnv``: ``reset(seed=s)`` seeds sub-env ``i`` with ``s + i``; ``options={"reset_mask": mask}``
    resets only the sub-envs where ``mask`` is True. :meth:`reset_at` and :meth:`step_at`
    give the per-sub-env results without autoreset, for adapters (see :mod:`permgym.sb3_vec_env`).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        config: PermSamplingConfig | str = "tiny",
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        max_episode_steps: int | None = None,
        **overrides: Any,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        unbatchable = sorted({"world", "amp", "sync_bn"} & set(overrides))
        if unbatchable:
            raise ValueError(
                f"the batched vector env does not take the single env's training option(s) {', '.join(unbatchable)} "
                "(DDP and mixed precision run one trainer per process); use gym.make for them"
            )
        mode = AutoresetMode(autoreset_mode)
        if mode == AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode must be NEXT_STEP or SAME_STEP, got DISABLED")
        self.config = make_config(config, **overrides)
        check_batchable(self.config)
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be None or >= 1, got {max_episode_steps}")
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.autoreset_mode = mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.envs = [PermSamplingEnv(self.config, render_mode=render_mode) for _ in range(num_envs)]
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.trainer: BatchedTrainer | None = None
        self._observations = np.zeros((num_envs, *self.single_observation_space.shape), np.float32)
        self._autoreset = np.zeros(num_envs, dtype=bool)

    # ------------------------------------------------------------------ per-sub-env API (no autoreset)
    def reset_at(
        self, indices: Sequence[int], seeds: Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Reset the sub-envs ``indices`` (each with its seed, ``None`` to continue its RNG); ``(obs, info)`` each."""
        seeds = [None] * len(indices) if seeds is None else list(seeds)
        results = []
        with torch_threads(self.config.torch_threads):
            for i, seed in zip(indices, seeds, strict=True):
                env = self.envs[i]
                obs, info = env.reset(seed=seed, options=options)
                assert env.trainer is not None
                if self.trainer is None:
                    self.trainer = BatchedTrainer(self.config, self.num_envs, env.trainer)
                self.trainer.adopt(i, env.trainer)
                self._observations[i] = obs
                self._autoreset[i] = False
                results.append((obs, info))
        return results

    def step_at(self, indices: Sequence[int], actions: Sequence[Any]) -> list[StepResult]:
        """Step the sub-envs ``indices`` (ascending) with their ``actions``, as ``PermSamplingEnv.step`` would,
        with the CNN compute batched; returns ``(obs, reward, terminated, truncated, info)`` per sub-env."""
        envs = [self.envs[i] for i in indices]
        if self.trainer is None or any(env.trainer is None for env in envs):
            raise RuntimeError("call reset() before step()")
        with torch_threads(self.config.torch_threads):
            choices = [env._permutation_choice(a) for env, a in zip(envs, actions, strict=True)]
            batches = [[env.trainer.sample_batch() for _ in range(self.config.updates_per_step)] for env in envs]
            records = [env._new_record() for env in envs]
            alive = list(range(len(envs)))  # a sub-env whose update diverged stops updating, as the single env
            for u in range(self.config.updates_per_step):
                if not alive:
                    break
                perms = {j: envs[j]._draw(choices[j]) for j in alive}
                stats = self.trainer.update(
                    [indices[j] for j in alive], [batches[j][u] for j in alive], [perms[j] for j in alive]
                )
                for j, s in zip(alive, stats, strict=True):
                    envs[j]._record_update(records[j], perms[j], s)
                alive = [j for j in alive if not records[j].diverged]
            vals = self.trainer.validate(list(indices))
            results = [env._finish_step(r, v) for env, r, v in zip(envs, records, vals, strict=True)]
        limit = self.max_episode_steps
        for k, (i, env) in enumerate(zip(indices, envs, strict=True)):
            self._observations[i] = results[k][0]
            if limit is not None and env._step >= limit:  # what gym.make's TimeLimit does to a single env
                results[k] = (*results[k][:3], True, results[k][4])
        return results

    # ------------------------------------------------------------------ Gymnasium VectorEnv API
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed lists must have num_envs={self.num_envs} entries, got {len(seeds)}")
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, dtype=bool)))
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
            raise ValueError(
                f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with a True entry"
            )
        indices = [i for i in range(self.num_envs) if mask[i]]
        infos: dict[str, Any] = {}
        results = self.reset_at(indices, [seeds[i] for i in indices], options or None)
        for i, (_, info) in zip(indices, results, strict=True):
            infos = self._add_info(infos, info, i)
        return self._observations.copy(), infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminations = np.zeros(self.num_envs, dtype=bool)
        truncations = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        resetting = [i for i in range(self.num_envs) if self._autoreset[i]]
        stepping = [i for i in range(self.num_envs) if not self._autoreset[i]]
        for i, (_, info) in zip(resetting, self.reset_at(resetting), strict=True):
            infos = self._add_info(infos, info, i)  # NEXT_STEP: this step only resets; reward 0, flags False
        if stepping:
            results = self.step_at(stepping, [actions[i] for i in stepping])
            finished = []
            for i, (obs, reward, terminated, truncated, info) in zip(stepping, results, strict=True):
                rewards[i], terminations[i], truncations[i] = reward, terminated, truncated
                if terminated or truncated:
                    finished.append(i)
                    if self.autoreset_mode == AutoresetMode.SAME_STEP:
                        infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                        continue
                infos = self._add_info(infos, info, i)
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                for i, (_, info) in zip(finished, self.reset_at(finished), strict=True):
                    infos = self._add_info(infos, info, i)
            else:
                self._autoreset[finished] = True
        return self._observations.copy(), rewards, terminations, truncations, infos

    def render(self) -> tuple[str | None, ...] | None:
        if self.render_mode != "ansi":
            return None
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for env in getattr(self, "envs", ()):  # absent when __init__ refused its arguments
            env.close()
        self.trainer = None
