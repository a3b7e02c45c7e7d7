"""The sampler registry: every sampler usable by name, one spelling (snake_case), one line each.

    make_sampler("uniform", env, seed=0)
    make_sampler("policy_gradient", env, seed=0, config={"learning_rate": 3e-3})
    make_sampler("sb3:runs/agents_train/ppo/model.zip", env, seed=0, algo="ppo")

Adding a sampler is one class (a :class:`agents.base.Sampler` built as ``Sampler(env, seed=..., **options)``) and one
line in :data:`SAMPLERS`; every program that takes a sampler name (``experiments/ssl_ucf101.py``,
``agents.evaluate``) then offers it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import gymnasium as gym

from agents.base import Sampler, SamplerSpec
from agents.heuristics import (
    CurriculumSampler,
    LossProportionalSampler,
    RoundRobinSampler,
    StratifiedSampler,
    UniformSampler,
)
from agents.oracle import ProxyOracleSampler, RewardOracleSampler
from agents.policy_gradient import PolicyGradientSampler
from agents.sb3 import SB3Sampler

#: Prefix of a saved Stable-Baselines3 model used as a sampler: ``sb3:PATH`` (options: ``algo``, ``deterministic``).
SB3_PREFIX = "sb3:"

#: Every sampler by name (the oracles need the live env, not a spec, and act in per_sample mode only).
SAMPLERS: dict[str, type[Sampler]] = {
    "policy_gradient": PolicyGradientSampler,
    "uniform": UniformSampler,
    "loss_proportional": LossProportionalSampler,
    "curriculum": CurriculumSampler,
    "round_robin": RoundRobinSampler,
    "stratified": StratifiedSampler,
    "oracle_reward": RewardOracleSampler,
    "oracle_proxy": ProxyOracleSampler,
}


def check_sampler_name(name: str) -> str:
    """``name`` if it names a registered sampler or ``sb3:PATH``; usable as an argparse ``type``.

    Raises:
        ValueError: listing the valid names (argparse reports it as an invalid value).
    """
    if name in SAMPLERS or (name.startswith(SB3_PREFIX) and len(name) > len(SB3_PREFIX)):
        return name
    raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}, {SB3_PREFIX}PATH")


def sampler_argument(name: str) -> str:
    """:func:`check_sampler_name` as an argparse ``type`` (its message shown as argparse's error)."""
    try:
        return check_sampler_name(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def make_sampler(name: str, env: gym.Env | SamplerSpec, *, seed: int = 0, **options: Any) -> Sampler:
    """The sampler ``name`` acting in ``env``.

    Args:
        name: a key of :data:`SAMPLERS`, or ``sb3:PATH`` for a saved Stable-Baselines3 model.
        env: the env (or its :class:`~agents.base.SamplerSpec`).
        seed: seed of the sampler's own randomness.
        options: constructor arguments of the sampler (e.g. ``config=`` of ``policy_gradient``, ``algo=`` of
            ``sb3:PATH``).

    Raises:
        ValueError: an unknown name, or options the sampler rejects.
        FileNotFoundError: ``sb3:PATH`` names no file.
    """
    check_sampler_name(name)
    try:
        if name.startswith(SB3_PREFIX):
            path = Path(name[len(SB3_PREFIX) :])
            if not path.is_file():
                raise FileNotFoundError(f"sampler {name!r}: no Stable-Baselines3 model at {str(path)!r}")
            return SB3Sampler.load(path, env, seed=seed, **options)
        return SAMPLERS[name](env, seed=seed, **options)
    except TypeError as err:  # an option the constructor does not take
        raise ValueError(f"sampler {name!r}: {err}") from None
