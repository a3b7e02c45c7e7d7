"""Samplers: valid actions in every action mode, determinism, the distribution mapping, learning, save/load."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import (
    ConstantSampler,
    CurriculumSampler,
    LossProportionalSampler,
    PolicyGradientConfig,
    PolicyGradientSampler,
    RoundRobinSampler,
    SB3Sampler,
    SeedCycle,
    StratifiedSampler,
    UniformSampler,
    distribution_to_action,
    run_episode,
)
from permgym.env import PermSamplingEnv
from permgym.observation import observation_size, observation_slices
from tests.test_env import FAST

MODES = ("distribution", "per_sample", "discrete")
BANK_SAMPLERS = (UniformSampler, StratifiedSampler, RoundRobinSampler, CurriculumSampler, LossProportionalSampler)
LEARNERS = (PolicyGradientSampler,)


@pytest.fixture(scope="module")
def envs() -> dict[str, PermSamplingEnv]:
    return {mode: PermSamplingEnv(action_mode=mode, **FAST) for mode in MODES}


def _observations(env: PermSamplingEnv, n: int = 6) -> list[np.ndarray]:
    """The reset observation plus arbitrary points of the observation space (samplers must handle any)."""
    obs, _ = env.reset(seed=0)
    env.observation_space.seed(0)
    return [obs] + [env.observation_space.sample() for _ in range(n - 1)]


def _supports(cls: type, mode: str) -> bool:
    return mode in cls.supported_modes


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cls", BANK_SAMPLERS + LEARNERS)
def test_actions_are_valid_in_every_supported_mode(cls: type, mode: str, envs) -> None:
    env = envs[mode]
    if not _supports(cls, mode):
        with pytest.raises(ValueError, match=re.escape(f"{cls.__name__} does not support action_mode='{mode}'")):
            cls(env, seed=0)
        return
    sampler = cls(env, seed=0)
    observations = _observations(env)
    for obs in observations:
        action, state = sampler.predict(obs)
        assert env.action_space.contains(action), (cls.__name__, mode, action)
        assert state is None
    batch, _ = sampler.predict(np.stack(observations))
    assert len(batch) == len(observations) and all(env.action_space.contains(a) for a in batch)


@pytest.mark.parametrize("mode", MODES)
def test_constant_sampler_repeats_its_action_and_rejects_invalid_ones(mode: str, envs) -> None:
    env = envs[mode]
    env.action_space.seed(1)
    action = env.action_space.sample()
    sampler = ConstantSampler(env, action)
    for obs in _observations(env, 3):
        np.testing.assert_array_equal(sampler.predict(obs)[0], action)
    with pytest.raises(ValueError, match="is not in the env's action space"):
        ConstantSampler(env, np.full(3, 99))


@pytest.mark.parametrize("cls", BANK_SAMPLERS + LEARNERS)
def test_same_seed_same_actions(cls: type, envs) -> None:
    env = envs["per_sample"]
    observations = _observations(env)
    runs = [[cls(env, seed=s).predict(o)[0] for o in observations] for s in (3, 3)]
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_different_seeds_draw_differently(envs) -> None:
    obs = _observations(envs["per_sample"], 1)[0]
    a, b = (UniformSampler(envs["per_sample"], seed=s).predict(obs)[0] for s in (0, 1))
    assert not np.array_equal(a, b)


def test_uniform_distribution_action_is_all_zeros(envs) -> None:
    action, _ = UniformSampler(envs["distribution"]).predict(_observations(envs["distribution"], 1)[0])
    np.testing.assert_array_equal(action, np.zeros(24, dtype=np.float32))


def test_distribution_to_action_reproduces_representable_distributions(envs) -> None:
    env = envs["distribution"]
    env.reset(seed=0)
    logits = np.linspace(-2.5, 3.0, 24)  # range 5.5 < 2 / temperature = 6
    target = np.exp(logits) / np.exp(logits).sum()
    action = distribution_to_action({"temporal": target}, env.config.temperature)
    used = env._permutation_choice(action)["temporal"].numpy()
    np.testing.assert_allclose(used, target, rtol=1e-5)
    # a zero probability cannot be expressed: it is raised to exp(-2 / temperature) times the largest
    hard = distribution_to_action({"temporal": np.r_[np.zeros(12), np.full(12, 1 / 12)]}, env.config.temperature)
    used = env._permutation_choice(hard)["temporal"].numpy()
    assert math.isclose(used[0] / used[-1], math.exp(-2 / env.config.temperature), rel_tol=1e-5)


def test_observation_slices_name_the_layout(envs) -> None:
    env = envs["per_sample"]
    obs, info = env.reset(seed=0)
    slices = observation_slices({"temporal": 24})
    assert max(s.stop for block in slices.values() for s in block.values()) == observation_size({"temporal": 24})
    expected = np.clip(info["temporal/val_loss_per_permutation"] / math.log(24) - 1, -1, 1)
    np.testing.assert_allclose(obs[slices["temporal"]["val_loss"]], expected, atol=1e-6)
    np.testing.assert_allclose(obs[slices["global"]["progress"]], [-1.0])
    joint = observation_slices({"temporal": 24, "spatial": 24})
    assert joint["spatial"]["val_loss"] == slice(6 * 24 + 3, 7 * 24 + 3)


def _with_progress(env: PermSamplingEnv, obs: np.ndarray, step: int) -> np.ndarray:
    out = obs.copy()
    out[observation_slices({"temporal": 24})["global"]["progress"]] = 2 * step / env.config.steps_per_episode - 1
    return out


@pytest.mark.parametrize(("batch_size", "counts"), [(8, {0, 1}), (24, {1}), (30, {1, 2})])
def test_stratified_balances_every_update(batch_size: int, counts: set[int]) -> None:
    env = PermSamplingEnv(action_mode="per_sample", **{**FAST, "batch_size": batch_size})
    obs, _ = env.reset(seed=0)
    sampler = StratifiedSampler(env, seed=0)
    actions = [sampler.predict(obs)[0] for _ in range(20)]
    for action in actions:  # within an update: distinct rows, dealt as evenly as the batch allows
        assert set(np.bincount(action, minlength=24).tolist()) == counts
    assert len({a.tobytes() for a in actions}) == len(actions)  # reshuffled every step
    again = StratifiedSampler(env, seed=0)
    for action in actions:  # seeded: equal seeds give equal draws (the only state is the shuffle RNG)
        np.testing.assert_array_equal(again.predict(obs)[0], action)
    with pytest.raises(ValueError, match="StratifiedSampler does not support action_mode='distribution'"):
        StratifiedSampler(PermSamplingEnv(action_mode="distribution", **FAST))


def test_round_robin_uses_every_permutation_equally_often(envs) -> None:
    env = envs["per_sample"]  # batch 8, K = 24: three steps cover the bank once
    obs = _observations(env, 1)[0]
    sampler = RoundRobinSampler(env)
    used = np.concatenate([sampler.predict(_with_progress(env, obs, t))[0] for t in range(3)])
    np.testing.assert_array_equal(np.sort(used), np.arange(24))


def test_curriculum_goes_from_easy_to_the_whole_bank(envs) -> None:
    env = envs["per_sample"]
    obs = _observations(env, 1)[0]
    sampler = CurriculumSampler(env, start_fraction=0.25, full_bank_at=1.0)
    distance = env.banks["temporal"].hamming_to_identity().numpy()
    start = sampler.probabilities(_with_progress(env, obs, 0))["temporal"]
    assert (start > 0).sum() == 6 and start[0] > 0  # the identity and five single swaps
    assert distance[start > 0].max() <= distance[start == 0].min()
    end = sampler.probabilities(_with_progress(env, obs, env.config.steps_per_episode))["temporal"]
    np.testing.assert_allclose(end, np.full(24, 1 / 24))


def test_loss_proportional_prefers_high_held_out_loss(envs) -> None:
    env = envs["per_sample"]
    obs = _observations(env, 1)[0].copy()
    where = observation_slices({"temporal": 24})["temporal"]["val_loss"]
    obs[where] = np.linspace(-1, 0, 24)
    p = LossProportionalSampler(env, temperature=0.25).probabilities(obs)["temporal"]
    assert np.all(np.diff(p) > 0) and math.isclose(p[-1] / p[0], math.exp(4), rel_tol=1e-6)


def test_policy_gradient_matches_the_env_distribution(envs) -> None:
    env = envs["distribution"]
    obs = _observations(env, 1)[0]
    sampler = PolicyGradientSampler(env, seed=0)
    with torch.no_grad():  # perturb the initial (uniform) policy so the check is not trivial
        sampler.policy.preference["temporal"].copy_(torch.linspace(-2, 2, 24))
    action, _ = sampler.predict(obs)
    env.reset(seed=0)
    policy = sampler.policy.logits(torch.as_tensor(obs)[None])["temporal"].softmax(1)[0]
    torch.testing.assert_close(env._permutation_choice(action)["temporal"], policy.double(), rtol=1e-5, atol=1e-7)


def _bandit_steps(sampler: PolicyGradientSampler, obs: np.ndarray, steps: int) -> None:
    """Reward = share of the step's samples on permutation 0 (a bandit with a known best arm)."""
    for _ in range(steps):
        action, _ = sampler.predict(obs)
        counts = np.bincount(action, minlength=24)
        sampler.observe(float(counts[0] / counts.sum()), obs, False, {"selection_counts": {"temporal": counts}})


def test_policy_gradient_learns_the_rewarded_permutation(envs) -> None:
    env = envs["per_sample"]
    obs = _observations(env, 1)[0]
    sampler = PolicyGradientSampler(env, seed=0, config=PolicyGradientConfig(learning_rate=0.05))
    _bandit_steps(sampler, obs, 150)
    p = sampler.policy.logits(torch.as_tensor(obs)[None])["temporal"].softmax(1)[0]
    assert p.argmax() == 0 and p[0] > 0.25  # from 1/24


def test_policy_gradient_save_load_resumes_exactly(envs, tmp_path) -> None:
    env = envs["per_sample"]
    obs = _observations(env, 1)[0]
    sampler = PolicyGradientSampler(env, seed=5, config=PolicyGradientConfig(update_every=2))
    _bandit_steps(sampler, obs, 5)  # one step left pending in the update buffer
    sampler.save(tmp_path / "pg.pt")
    loaded = PolicyGradientSampler.load(tmp_path / "pg.pt", env)
    assert loaded.config == sampler.config
    _bandit_steps(sampler, obs, 3)
    _bandit_steps(loaded, obs, 3)
    for a, b in zip(sampler.policy.state_dict().values(), loaded.policy.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    np.testing.assert_array_equal(sampler.predict(obs)[0], loaded.predict(obs)[0])
    reseeded = PolicyGradientSampler.load(tmp_path / "pg.pt", env, seed=9)
    assert reseeded.seed == 9
    with pytest.raises(TypeError, match="holds a PolicyGradientSampler, not a UniformSampler"):
        UniformSampler.load(tmp_path / "pg.pt", env)


@pytest.mark.parametrize("cls", [CurriculumSampler, LossProportionalSampler, RoundRobinSampler])
def test_heuristics_save_and_load(cls: type, envs, tmp_path) -> None:
    env = envs["per_sample"]
    sampler = cls(env, seed=2)
    observations = _observations(env, 3)
    sampler.predict(observations[0])
    sampler.save(tmp_path / "s.pt")
    loaded = cls.load(tmp_path / "s.pt", env)
    for obs in observations:
        np.testing.assert_array_equal(sampler.predict(obs)[0], loaded.predict(obs)[0])


def test_policy_gradient_observe_needs_a_single_predict(envs) -> None:
    sampler = PolicyGradientSampler(envs["per_sample"])
    with pytest.raises(RuntimeError, match="call it first"):
        sampler.observe(0.0, np.zeros(150, np.float32), False, {"selection_counts": {"temporal": np.ones(24)}})


def test_samplers_run_episodes_and_learn_online(envs) -> None:
    env = envs["per_sample"]
    sampler = PolicyGradientSampler(env, seed=0)
    log = run_episode(env, sampler, seed=3)
    assert len(log.rewards) == FAST["steps_per_episode"] and log.updates[-1] == 3 * FAST["updates_per_step"]
    assert sampler.global_step == 3 and sampler.num_updates == 3
    assert all(c.sum() == FAST["batch_size"] * FAST["updates_per_step"] for c in log.selection_counts["temporal"])
    assert "losses/policy_loss" in log.learner_logs[-1]


def test_evaluate_policy_drives_samplers_and_sb3_models(envs) -> None:
    venv = DummyVecEnv([lambda: SeedCycle(Monitor(PermSamplingEnv(action_mode="per_sample", **FAST)), [11])])
    mean, _ = evaluate_policy(UniformSampler(envs["per_sample"]), venv, n_eval_episodes=1)
    assert np.isfinite(mean)
    model = PPO("MlpPolicy", envs["per_sample"], n_steps=4, batch_size=4, policy_kwargs={"net_arch": [8]}, seed=0)
    sampler = SB3Sampler(model, envs["per_sample"], seed=1, deterministic=False)
    obs = _observations(envs["per_sample"], 1)[0]
    first = sampler.predict(obs)[0]
    assert envs["per_sample"].action_space.contains(first)
    np.testing.assert_array_equal(first, SB3Sampler(model, envs["per_sample"], seed=1).predict(obs)[0])
    with pytest.raises(ValueError, match="train the model in an env with action_mode='distribution'"):
        SB3Sampler(model, envs["distribution"])


def test_seed_cycle_ignores_the_callers_seed() -> None:
    env = SeedCycle(PermSamplingEnv(**FAST), [4, 5])
    first = [env.reset(seed=123)[0] for _ in range(3)]
    reference = PermSamplingEnv(**FAST)
    np.testing.assert_array_equal(first[0], reference.reset(seed=4)[0])
    np.testing.assert_array_equal(first[2], first[0])
    assert not np.array_equal(first[1], first[0])
    assert env.unwrapped.trainer is not None


def test_registry_builds_every_sampler_by_its_one_name(tmp_path) -> None:
    from agents.registry import SAMPLERS, make_sampler

    env = PermSamplingEnv(action_mode="per_sample", **FAST)  # the mode every sampler (stratified, oracles) supports
    obs, _ = env.reset(seed=0)
    for name, kind in SAMPLERS.items():
        sampler = make_sampler(name, env, seed=3)
        assert type(sampler) is kind and env.action_space.contains(sampler.predict(obs)[0]), name
    assert make_sampler("policy_gradient", env, seed=0, config={"learning_rate": 0.003}).config.learning_rate == 0.003
    for wrong in ("round-robin", "Uniform", "sb3:"):
        with pytest.raises(ValueError, match=re.escape(f"unknown sampler {wrong!r}; choose from policy_gradient, ")):
            make_sampler(wrong, env)
    with pytest.raises(FileNotFoundError, match="no Stable-Baselines3 model at"):
        make_sampler(f"sb3:{tmp_path / 'none.zip'}", env)
    with pytest.raises(ValueError, match=r"sampler 'uniform': .*unexpected keyword argument 'speed'"):
        make_sampler("uniform", env, speed=2)


def test_policy_gradient_on_joint_banks_of_different_sizes() -> None:
    """ParameterDict sorts its keys (spatial before temporal): the logits were split by the wrong bank sizes, and
    ssl_ucf101.py's video preset (24 temporal, 100 spatial permutations) failed at its first step."""
    env = PermSamplingEnv(task="joint", spatial_bank_size=10, action_mode="per_sample", **FAST)
    sampler = PolicyGradientSampler(env, seed=0)
    obs = _observations(env, 3)
    logits = sampler.policy.logits(torch.as_tensor(np.stack(obs)))
    assert {task: z.shape[1] for task, z in logits.items()} == {"temporal": 24, "spatial": 10}
    for o in obs:
        action, _ = sampler.predict(o)
        assert env.action_space.contains(action), action
