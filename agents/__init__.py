"""Samplers that choose permutations in PermSampling: baselines, the paper's online policy gradient, SB3 agents.

Every sampler is built from the env and a seed and acts through SB3's ``predict``; learning samplers also learn
online through ``observe(reward, next_observation, done, info)`` (see :mod:`agents.base`).
"""

from agents.base import BankSampler, Sampler, SamplerSpec, distribution_to_action
from agents.heuristics import (
    ConstantSampler,
    CurriculumSampler,
    LossProportionalSampler,
    RoundRobinSampler,
    StratifiedSampler,
    UniformSampler,
)
from agents.oracle import KnnProxy, OracleSampler
from agents.policy_gradient import PolicyGradientConfig, PolicyGradientSampler, PolicyNetwork
from agents.rollout import EpisodeLog, run_episode
from agents.sb3 import SB3Sampler, SeedCycle

__all__ = [
    "BankSampler",
    "ConstantSampler",
    "CurriculumSampler",
    "EpisodeLog",
    "KnnProxy",
    "LossProportionalSampler",
    "OracleSampler",
    "PolicyGradientConfig",
    "PolicyGradientSampler",
    "PolicyNetwork",
    "RoundRobinSampler",
    "SB3Sampler",
    "Sampler",
    "SamplerSpec",
    "SeedCycle",
    "StratifiedSampler",
    "UniformSampler",
    "distribution_to_action",
    "run_episode",
]
