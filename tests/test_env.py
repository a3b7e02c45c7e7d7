"""PermSampling environments: the official checkers over the registry, determinism, vectorisation, pickling."""

from __future__ import annotations

import pickle
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import permgym
from permgym.config import PRESETS, make_config
from permgym.env import PermSamplingEnv

CPU_IDS = [env_id for env_id, _, nondeterministic in permgym.ENV_IDS if not nondeterministic]
#: Small, fast overrides for tests; the registered presets keep their own data and network sizes.
FAST = {"steps_per_episode": 3, "updates_per_step": 2, "batch_size": 8, "val_batch_size": 8, "synthetic_videos": 300}

#: Warnings the checkers may raise that are expected for this env, with the reason.
ALLOWED_WARNINGS = (
    # SB3's checker advises normalising observations to a Gaussian; ours are bounded in [-1, 1] by design.
    "normalize",
)


def _checked(fn, env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(env)
    unexpected = [str(w.message) for w in caught if not any(a in str(w.message) for a in ALLOWED_WARNINGS)]
    assert not unexpected, unexpected


@pytest.mark.parametrize("env_id", CPU_IDS)
def test_registered_presets_pass_both_checkers(env_id: str) -> None:
    env = gym.make(env_id, **FAST)
    _checked(gym_check_env, env.unwrapped)
    _checked(sb3_check_env, env.unwrapped)
    env.close()
    env.close()  # idempotent


def test_make_without_import_prefix() -> None:
    env = gym.make("permgym:PermSampling-v0", **FAST)
    assert isinstance(env.unwrapped, PermSamplingEnv)


@pytest.mark.parametrize("action_mode", ["distribution", "per_sample", "discrete"])
def test_same_seed_same_episode(action_mode: str) -> None:
    envs = [gym.make("PermSampling-v0", action_mode=action_mode, **FAST) for _ in range(2)]
    obs = [e.reset(seed=7)[0] for e in envs]
    np.testing.assert_array_equal(obs[0], obs[1])
    envs[0].action_space.seed(3)
    truncated = False
    while not truncated:
        action = envs[0].action_space.sample()
        out = [e.step(action) for e in envs]
        np.testing.assert_array_equal(out[0][0], out[1][0])
        assert out[0][1:4] == out[1][1:4]
        assert isinstance(out[0][1], float) and isinstance(out[0][3], bool)
        truncated = out[0][3]


def test_different_seeds_give_different_networks() -> None:
    env = PermSamplingEnv(**FAST)
    env.reset(seed=1)
    first = [p.detach().clone() for p in env.trainer.model.parameters()]
    env.reset(seed=2)
    second = list(env.trainer.model.parameters())
    assert any(not np.allclose(a.numpy(), b.detach().numpy()) for a, b in zip(first, second, strict=True))


def test_episode_truncates_after_configured_steps() -> None:
    env = PermSamplingEnv(**FAST)
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[3] for _ in range(FAST["steps_per_episode"])]
    assert flags == [False, False, True]


def test_divergence_truncates_with_crash_penalty() -> None:
    env = PermSamplingEnv(optimizer="sgd", lr=1e12, crash_penalty=-2.0, reward_clip=5.0, **FAST)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert info["diverged"] and truncated and not terminated
    assert reward == -2.0


def test_uniform_relative_subtracts_a_uniform_counterfactual() -> None:
    """The kept updates are the policy's (its permutation dominates the counts); the reward differs from the plain
    loss drop by the uniform branch's drop."""
    action = np.full(24, -1.0, dtype=np.float32)
    action[0] = 1.0  # softmax(a / (1/3)) puts ~95 % of the mass on permutation 0
    relative = PermSamplingEnv(reward="uniform_relative", reward_clip=100.0, **FAST)
    plain = PermSamplingEnv(reward="val_loss_delta", reward_clip=100.0, **FAST)
    relative.reset(seed=0)
    plain.reset(seed=0)
    _, relative_reward, _, _, info = relative.step(action)
    _, plain_reward, *_ = plain.step(action)
    counts = info["selection_counts"]["temporal"]
    assert counts[0] >= 0.8 * counts.sum()
    assert np.isfinite(relative_reward) and relative_reward != plain_reward


def test_pickled_env_behaves_like_original() -> None:
    env = PermSamplingEnv(**FAST)
    env.reset(seed=5)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    action = np.linspace(-1, 1, env.action_space.shape[0]).astype(np.float32)
    a, b = env.step(action), clone.step(action)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:4] == b[1:4]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_step(mode: str) -> None:
    kwargs = {"vector_kwargs": {"context": "fork"}} if mode == "async" else {}  # fork: no re-import of torch
    envs = gym.make_vec("permgym:PermSampling-v0", num_envs=2, vectorization_mode=mode, **kwargs, **FAST)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, envs.single_observation_space.shape[0])
    obs, reward, *_ = envs.step(envs.action_space.sample())
    assert obs.shape[0] == 2 and reward.shape == (2,)
    envs.close()


def test_sb3_subproc_vec_env_steps() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = make_vec_env(
        "permgym:PermSampling-v0",
        n_envs=2,
        vec_env_cls=SubprocVecEnv,
        vec_env_kwargs={"start_method": "fork"},
        env_kwargs={"render_mode": None, **FAST},
    )
    venv.reset()
    _, rewards, _, _ = venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
    assert rewards.shape == (2,)
    venv.close()


def test_render_ansi_lists_every_permutation() -> None:
    env = PermSamplingEnv(render_mode="ansi", **FAST)
    env.reset(seed=0)
    text = env.render()
    assert "val loss" in text and text.count("\n") >= env.banks["temporal"].size


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_frames": 4, "temporal_bank_size": 25}, "temporal bank size 25 is impossible: n=4 elements have only 24"),
        ({"task": "ordering"}, "unknown task 'ordering'; choose one of temporal, spatial, joint"),
        ({"synthetic_variant": "fog"}, "unknown synthetic_variant 'fog'; choose one of classic, decoys, one-decoy, "),
        (
            {"centre_elements": False, "uncentred_features": True},
            "uncentred_features=True adds uncentred element "
            "features to the centred ones: it needs centre_elements=True",
        ),
        ({"action_mode": "continuous"}, "unknown action_mode 'continuous'"),
        ({"reward": "accuracy"}, "unknown reward 'accuracy'"),
        ({"batch_sizes": 3}, "unknown config option(s) batch_sizes"),
        ({"action_mode": "discrete", "discrete_groups": 30}, "discrete_groups=30 exceeds the smallest bank"),
        ({"reward_scale": float("nan")}, "reward_scale must be a finite number > 0, got nan"),
        ({"crash_penalty": float("nan")}, "crash_penalty must be a finite number, got nan"),
        ({"reward_clip": -1.0}, "reward_clip must be > 0 (inf: no clipping), got -1.0"),
        ({"lr": "fast"}, "lr must be of type float, got 'fast' (str)"),
        ({"lr": -1.0}, "lr must be a finite number > 0, got -1.0"),
        ({"batch_size": 3.7}, "batch_size must be of type int, got 3.7 (float)"),
        ({"identify_reverse": 1}, "identify_reverse must be of type bool, got 1 (int)"),
        ({"val_fraction": 1.5}, "val_fraction must be in (0, 1), got 1.5"),
        ({"num_frames": 1}, "num_frames must be >= 2, got 1"),
        ({"momentum": float("inf")}, "momentum must be in [0, 1), got inf"),
    ],
)
def test_invalid_configs_fail_at_construction(overrides: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        PermSamplingEnv(**overrides)


def test_bad_action_shape_is_a_clear_error() -> None:
    env = PermSamplingEnv(**FAST)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=re.escape("distribution action must have shape (24,), got (3,)")):
        env.step(np.zeros(3, dtype=np.float32))


def test_full_size_preset_without_data_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERMGYM_UCF101_CACHE", raising=False)
    with pytest.raises(ValueError, match="PERMGYM_UCF101_CACHE"):
        gym.make("PermSampling-UCF101-v0")


def test_sb3_ppo_learns_saves_and_loads(tmp_path) -> None:
    from stable_baselines3 import PPO

    env = PermSamplingEnv(**FAST)
    model = PPO("MlpPolicy", env, n_steps=6, batch_size=6, n_epochs=1, policy_kwargs={"net_arch": [16]}, seed=0)
    model.learn(total_timesteps=12)
    model.save(tmp_path / "ppo")
    loaded = PPO.load(tmp_path / "ppo", env=env)
    obs, _ = env.reset(seed=0)
    action, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, model.predict(obs, deterministic=True)[0])


def test_state_dict_resumes_the_episode_exactly() -> None:
    actions = [np.full(24, v, dtype=np.float32) for v in (-0.5, 0.3, 0.9)]
    straight = PermSamplingEnv(**FAST)
    straight.reset(seed=4)
    expected = [straight.step(a)[:2] for a in actions]
    first = PermSamplingEnv(**FAST)
    first.reset(seed=4)
    first.step(actions[0])
    state = pickle.loads(pickle.dumps(first.state_dict()))
    resumed = PermSamplingEnv(**FAST)
    resumed.reset(seed=99)
    resumed.load_state_dict(state)
    for action, (obs, reward) in zip(actions[1:], expected[1:], strict=True):
        got_obs, got_reward, *_ = resumed.step(action)
        np.testing.assert_array_equal(got_obs, obs)
        assert got_reward == reward


def test_ucf101_preset_runs_on_a_real_frame_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The full-size preset's data path end to end: encoded .avi files -> UCF101 split parsing -> frame cache -> env."""
    from permgym.data import UCF101, load_or_build_cache
    from tests.video_fixtures import make_ucf101_tree

    root, annotations = make_ucf101_tree(tmp_path, frames=20)
    dataset = UCF101(root, annotations, split=1, train=True, frames=16, size=(64, 64))
    load_or_build_cache(dataset, tmp_path / "cache", progress=False)
    monkeypatch.setenv("PERMGYM_UCF101_CACHE", str(tmp_path / "cache"))
    small = {"batch_size": 4, "val_batch_size": 2, "updates_per_step": 1, "steps_per_episode": 2, "device": "cpu"}
    env = gym.make("PermSampling-UCF101-v0", element_size=64, tile_size=64, min_stride=1, **small)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.action_space.shape == (24 + 100,)  # joint: temporal 4! then the 3x3 jigsaw's 100 max-Hamming rows
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert isinstance(reward, float) and np.isfinite(info["spatial/val_loss"])


def test_state_dict_restored_into_a_fresh_env_continues_identically() -> None:
    """A fresh env of the same config (reset with another seed) that loads the state steps exactly like the env
    that saved it, step by step; the saved state does not change when either env steps on."""
    env = PermSamplingEnv(**{**FAST, "steps_per_episode": 5}, reward="uniform_relative")
    env.reset(seed=0)
    actions = [env.action_space.sample() for _ in range(5)]
    for action in actions[:2]:
        env.step(action)
    state = env.state_dict()
    restored = PermSamplingEnv(**{**FAST, "steps_per_episode": 5}, reward="uniform_relative")
    restored.reset(seed=1)
    restored.load_state_dict(state)
    again = PermSamplingEnv(**{**FAST, "steps_per_episode": 5}, reward="uniform_relative")
    again.reset(seed=2)
    again.load_state_dict(state)  # loaded twice: the two envs must not share optimiser tensors
    for action in actions[2:]:
        expected = env.step(action)
        for other in (restored, again):
            obs, reward, terminated, truncated, info = other.step(action)
            assert reward == expected[1] and np.array_equal(obs, expected[0])
            assert (terminated, truncated) == expected[2:4] and info["train_loss"] == expected[4]["train_loss"]
    for name, weight in env.trainer.model.state_dict().items():
        assert torch.equal(weight, restored.trainer.model.state_dict()[name]), name


@pytest.mark.parametrize("env_id", [env_id for env_id, _, _ in permgym.ENV_IDS])
def test_every_id_registers_its_episode_length(env_id: str) -> None:
    spec = gym.spec(env_id)
    assert spec.max_episode_steps == permgym.config.PRESETS[spec.kwargs["config"]].steps_per_episode


def test_make_follows_an_overridden_episode_length() -> None:
    env = permgym.make("PermSampling-v0", **{**FAST, "steps_per_episode": 30})
    assert env.spec.max_episode_steps == 30 and env.unwrapped.config.steps_per_episode == 30


def test_validation_batch_is_redrawn_per_episode_from_the_reward_pool() -> None:
    env, twin = PermSamplingEnv(**FAST), PermSamplingEnv(**FAST)
    env.reset(seed=5)
    first = env.validation_index.clone()
    twin.reset(seed=5)
    torch.testing.assert_close(twin.trainer.val_elements, env.trainer.val_elements)  # equal seeds, equal clips
    env.reset()  # the next episode of the same env
    assert not torch.equal(env.validation_index, first)
    env.reset(seed=6)
    assert not torch.equal(env.validation_index, first)
    reward_pool, report_pool = env._reward_pool, env._report_pool
    assert len(first) == FAST["val_batch_size"] and set(first.tolist()) <= set(range(len(reward_pool)))
    assert set(reward_pool.index.tolist()).isdisjoint(report_pool.index.tolist())  # reports use unseen clips
    stats = env.heldout_statistics()
    assert stats["temporal"]["accuracy"].shape == (24,)


def test_calibrated_preset_is_the_regime_benchmarks_measured() -> None:
    """BENCHMARKS.md calibrated this regime with ``--env-kwargs synthetic_variant=occluder steps_per_episode=50``."""
    measured = make_config("tiny", synthetic_variant="occluder", steps_per_episode=50)
    assert PRESETS["tiny-calibrated"] == measured
    assert gym.spec("PermSampling-Calibrated-v0").max_episode_steps == 50
