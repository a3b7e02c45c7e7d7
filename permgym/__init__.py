"""permgym: learned permutation sampling for ordering-based self-supervision, as a Gymnasium environment.

``import permgym`` registers the environments; ``gym.make("permgym:PermSampling-v0")`` works without the import.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import register, registry

from permgym.config import PRESETS, make_config
from permgym.reference import reference_scores

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "gym_preset", "make", "reference_scores", "register_envs"]

#: (env id, preset name, nondeterministic) — every id is backed by permgym.env:PermSamplingEnv, and by
#: permgym.vector_env:PermSamplingVectorEnv for ``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``.
ENV_IDS: tuple[tuple[str, str, bool], ...] = (
    ("PermSampling-v0", "tiny", False),
    ("PermSampling-Spatial-v0", "tiny-spatial", False),
    ("PermSampling-Joint-v0", "tiny-joint", False),
    ("PermSampling-Calibrated-v0", "tiny-calibrated", False),
    ("PermSampling-UCF101-v0", "ucf101", True),
)


def register_envs() -> None:
    """Register every PermSampling id (idempotent: ids already in the registry are skipped); ``max_episode_steps`` is
    the preset's ``steps_per_episode``."""
    for env_id, preset, nondeterministic in ENV_IDS:
        if env_id not in registry:
            register(
                id=env_id,
                entry_point="permgym.env:PermSamplingEnv",
                vector_entry_point="permgym.vector_env:PermSamplingVectorEnv",
                kwargs={"config": preset},
                nondeterministic=nondeterministic,
                max_episode_steps=PRESETS[preset].steps_per_episode,
            )


def gym_preset(env_id: str) -> str:
    """The preset name registered for ``env_id`` (one of :data:`ENV_IDS`)."""
    for known, preset, _ in ENV_IDS:
        if known == env_id:
            return preset
    raise KeyError(f"unknown env id {env_id!r}; choose one of {', '.join(i for i, _, _ in ENV_IDS)}")


def make(env_id: str, **overrides: Any) -> gym.Env:
    """``gym.make(env_id, **overrides)`` whose ``TimeLimit`` follows an overridden ``steps_per_episode``.

    ``gym.make`` wraps every env in a ``TimeLimit`` at the *registered* ``max_episode_steps`` (the preset's episode
    length), so ``gym.make("PermSampling-v0", steps_per_episode=200)`` alone would cut episodes at 25 steps; this
    passes ``max_episode_steps`` equal to the configured length.
    """
    config = make_config(gym.spec(env_id).kwargs.get("config", "tiny"), **overrides)
    return gym.make(env_id, max_episode_steps=config.steps_per_episode, **overrides)


register_envs()
