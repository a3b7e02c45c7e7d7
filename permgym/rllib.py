"""Ray RLlib: every PermSampling id registered as an RLlib env (``pip install "permgym[rllib]"``).

Ray does not read Gymnasium's registry; its env runners build envs from creators registered with
``ray.tune.registry.register_env``. :func:`register_rllib_envs` registers one creator per id of
:data:`permgym.ENV_IDS`; the creator turns ``env_config`` (a plain dict, pickled to every worker) into config
fields of that id's preset and builds the env inside the worker, so clip pools and CNNs never travel over the
network. With ``config.env_runners(gym_env_vectorize_mode="vector_entry_point")`` each env runner gets the batched
:class:`~permgym.vector_env.PermSamplingVectorEnv` of ``num_envs_per_env_runner`` sub-envs instead of a
``SyncVectorEnv`` of single envs.

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from permgym.rllib import register_rllib_envs

    ray.init()  # or ray.init(address="auto") on a cluster started with `ray start`
    register_rllib_envs()
    config = (
        PPOConfig()
        .environment("PermSampling-v0", env_config={"steps_per_episode": 25, "torch_threads": 1})
        .env_runners(num_env_runners=8, num_envs_per_env_runner=4)
    )
    algo = config.build_algo()
    algo.train()
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym

from permgym import ENV_IDS
from permgym.env import PermSamplingEnv
from permgym.vector_env import PermSamplingVectorEnv

INSTALL_HINT = 'Ray RLlib is not installed: pip install "permgym[rllib]" (or pip install "ray[rllib]")'


def make_env(preset: str, env_config: dict[str, Any]) -> gym.Env | gym.vector.VectorEnv:
    """The env for one RLlib env runner: a :class:`PermSamplingEnv` of ``preset`` with the fields of
    ``env_config``, or a :class:`PermSamplingVectorEnv` when RLlib asks for ``num_envs`` sub-envs at once."""
    overrides = dict(env_config)  # RLlib's EnvContext is a dict whose worker/vector indices are attributes
    num_envs = overrides.pop("num_envs", None)
    if num_envs is None:
        return PermSamplingEnv(preset, **overrides)
    return PermSamplingVectorEnv(num_envs, preset, **overrides)


def register_rllib_envs() -> None:
    """Register every PermSampling id with ``ray.tune.registry.register_env`` (call it in the driver script
    before building the algorithm; Ray ships the creators to the workers).

    Raises:
        ImportError: Ray is not installed (the message names the pip command).
    """
    try:
        from ray.tune.registry import register_env
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    for env_id, preset, _ in ENV_IDS:
        register_env(env_id, functools.partial(make_env, preset))
