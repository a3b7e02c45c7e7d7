"""The batched vector env: registration, equality with the single env (through SyncVectorEnv), vector-env API
conventions, pickling, the batched optimiser, the SB3 adapter."""

from __future__ import annotations

import copy
import pickle
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import permgym
from permgym.batched_trainer import BatchedTrainer
from permgym.env import PermSamplingEnv
from permgym.vector_env import PermSamplingVectorEnv

CPU_IDS = [env_id for env_id, _, nondeterministic in permgym.ENV_IDS if not nondeterministic]
FAST = {"steps_per_episode": 2, "updates_per_step": 2, "batch_size": 8, "val_batch_size": 8, "synthetic_videos": 300}
#: Sub-env vs single env: observations and rewards agree to this absolute tolerance. The batched trunk runs in
#: channels_last memory, the single env's in the default layout: they sum in different orders (float32 rounding
#: ~1e-7), and Adam's first steps amplify the rounding of gradient entries near zero, so a few steps later the
#: observations differ by up to a few 1e-4 (against a single env in channels_last: ~1e-7, see the last test).
ATOL = 1e-3


def _rollout(envs: gym.vector.VectorEnv, seed: int, steps: int) -> list[tuple]:
    """Reset with ``seed`` and step with seeded random actions; every step's (obs, reward, term, trunc, info)."""
    out = [(envs.reset(seed=seed)[0], None, None, None, None)]
    envs.action_space.seed(seed)
    for _ in range(steps):
        out.append(envs.step(envs.action_space.sample()))
    return out


def _assert_same(batched: list[tuple], reference: list[tuple]) -> None:
    for got, want in zip(batched, reference, strict=True):
        np.testing.assert_allclose(got[0], want[0], atol=ATOL, rtol=0)
        if want[1] is None:
            continue
        np.testing.assert_allclose(got[1], want[1], atol=ATOL, rtol=0)
        np.testing.assert_array_equal(got[2], want[2])
        np.testing.assert_array_equal(got[3], want[3])
        assert got[4].keys() == want[4].keys()
        for key in ("step", "_step", "diverged"):
            np.testing.assert_array_equal(got[4][key], want[4][key])
        for task, counts in want[4].get("selection_counts", {}).items():  # absent on an autoreset step
            np.testing.assert_array_equal(got[4]["selection_counts"][task], counts)


@pytest.mark.parametrize("env_id", CPU_IDS)
def test_make_vec_returns_the_batched_env_with_batched_spaces(env_id: str) -> None:
    envs = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", **FAST)
    single = gym.make(env_id, **FAST)
    assert isinstance(envs, PermSamplingVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.single_observation_space == single.observation_space
    assert envs.single_action_space == single.action_space
    obs, info = envs.reset(seed=0)
    assert obs.shape == (3, *single.observation_space.shape) and obs.dtype == np.float32
    assert envs.observation_space.contains(obs)
    obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert envs.observation_space.contains(obs)
    assert rewards.shape == (3,) and rewards.dtype == np.float64
    assert terminated.dtype == np.bool_ and truncated.dtype == np.bool_
    assert info["_step"].all() and info["step"].tolist() == [1, 1, 1]
    envs.close()
    envs.close()  # idempotent


@pytest.mark.parametrize(
    ("env_id", "overrides"),
    [
        ("PermSampling-v0", {}),
        ("PermSampling-v0", {"action_mode": "per_sample", "optimizer": "sgd"}),
        ("PermSampling-v0", {"uncentred_features": True}),
        # SGD: Adam's first steps amplify the wider trunk's layout rounding past ATOL (see ATOL)
        ("PermSampling-v0", {"trunk": "tiny-wide", "optimizer": "sgd"}),
        ("PermSampling-Joint-v0", {"action_mode": "discrete"}),
    ],
)
def test_sub_envs_follow_the_single_env_across_an_autoreset(env_id: str, overrides: dict) -> None:
    """SyncVectorEnv steps single envs with Gymnasium's own next-step autoreset: the reference trajectory."""
    kwargs = {**FAST, **overrides}
    steps = 2 * FAST["steps_per_episode"] + 1  # two episodes, the autoreset step between them, one more step
    batched = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", **kwargs)
    reference = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync", **kwargs)
    got, want = _rollout(batched, 11, steps), _rollout(reference, 11, steps)
    assert want[FAST["steps_per_episode"]][3].all()  # the reference did reach the end of an episode
    _assert_same(got, want)


def test_same_step_autoreset_matches_sync_vector_env() -> None:
    batched = gym.make_vec("PermSampling-v0", num_envs=2, vectorization_mode="vector_entry_point",
                           autoreset_mode=AutoresetMode.SAME_STEP, **FAST)  # fmt: skip
    reference = gym.make_vec("PermSampling-v0", num_envs=2, vectorization_mode="sync",
                             vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **FAST)  # fmt: skip
    got, want = _rollout(batched, 3, FAST["steps_per_episode"]), _rollout(reference, 3, FAST["steps_per_episode"])
    np.testing.assert_allclose(got[-1][0], want[-1][0], atol=ATOL, rtol=0)  # the new episodes' first observations
    for i in range(2):
        np.testing.assert_allclose(got[-1][4]["final_obs"][i], want[-1][4]["final_obs"][i], atol=ATOL, rtol=0)
    assert got[-1][3].all() and got[-1][4]["final_info"]["step"].tolist() == [2, 2]


def test_same_seed_same_trajectory_and_threads_restored() -> None:
    torch.set_num_threads(2)
    runs = [_rollout(PermSamplingVectorEnv(2, **FAST), 5, 3) for _ in range(2)]
    assert torch.get_num_threads() == 2
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] is None or a[1].tolist() == b[1].tolist()


def test_max_episode_steps_truncates_like_gyms_time_limit() -> None:
    kwargs = {**FAST, "max_episode_steps": 1}  # make_vec passes it to the vector entry point, TimeLimit to sync
    got = _rollout(gym.make_vec("PermSampling-v0", num_envs=2, vectorization_mode="vector_entry_point", **kwargs), 0, 3)
    want = _rollout(gym.make_vec("PermSampling-v0", num_envs=2, vectorization_mode="sync", **kwargs), 0, 3)
    flags = [[bool(x) for x in step[3]] for step in got[1:]]
    assert flags == [[bool(x) for x in step[3]] for step in want[1:]] == [[True, True], [False, False], [True, True]]


def test_reset_mask_resets_only_the_masked_sub_envs() -> None:
    envs = PermSamplingVectorEnv(2, **FAST)
    envs.reset(seed=0)
    obs, *_ = envs.step(envs.action_space.sample())
    new_obs, info = envs.reset(seed=7, options={"reset_mask": np.array([False, True])})
    assert info["_step"].tolist() == [False, True]
    np.testing.assert_array_equal(new_obs[0], obs[0])
    np.testing.assert_array_equal(new_obs[1], PermSamplingEnv(**FAST).reset(seed=8)[0])  # reset is single-env code


def test_divergence_truncates_with_the_crash_penalty_like_the_single_env() -> None:
    kwargs = {**FAST, "optimizer": "sgd", "lr": 1e12, "crash_penalty": -2.0, "reward_clip": 5.0}
    envs = PermSamplingVectorEnv(2, **kwargs)
    envs.reset(seed=0)
    action = np.zeros(envs.action_space.shape, dtype=np.float32)
    _, rewards, terminated, truncated, info = envs.step(action)
    single = PermSamplingEnv(**kwargs)
    single.reset(seed=0)
    _, reward, _, single_truncated, single_info = single.step(action[0])
    assert info["diverged"].all() and truncated.all() and not terminated.any()
    assert rewards.tolist() == [-2.0, -2.0] and (reward, single_truncated, single_info["diverged"]) == (
        -2.0,
        True,
        True,
    )


def test_pickled_env_continues_identically() -> None:
    envs = PermSamplingVectorEnv(2, **FAST)
    envs.reset(seed=1)
    envs.step(envs.action_space.sample())
    clone = pickle.loads(pickle.dumps(envs))
    action = np.linspace(-1, 1, int(np.prod(envs.action_space.shape)), dtype=np.float32).reshape(
        envs.action_space.shape
    )
    a, b = envs.step(action), clone.step(action)
    for x, y in zip(a[:4], b[:4], strict=True):
        np.testing.assert_array_equal(x, y)
    # the sub-envs' models show the batched weights, in the clone too
    for env in clone.envs:
        assert env.trainer is not None
        first = next(env.trainer.model.parameters())
        assert (
            first.untyped_storage().data_ptr()
            == clone.trainer.params["trunk.body.0.weight"].untyped_storage().data_ptr()
        )


def test_unbatchable_options_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=re.escape("cannot run reward='uniform_relative'")):
        gym.make_vec("PermSampling-v0", num_envs=2, vectorization_mode="vector_entry_point", reward="uniform_relative")
    with pytest.raises(ValueError, match=re.escape("does not take the single env's training option(s) amp")):
        gym.make_vec("PermSampling-v0", num_envs=2, vectorization_mode="vector_entry_point", amp=True)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_batched_optimizer_step_equals_torch_optim(optimizer: str) -> None:
    """Same gradients (spanning nine orders of magnitude) -> same weights as the trainer's torch optimiser."""
    env = PermSamplingEnv(optimizer=optimizer, **FAST)
    env.reset(seed=0)
    trainer = env.trainer
    reference = copy.deepcopy(trainer)
    batched = BatchedTrainer(env.config, 2, trainer)
    batched.adopt(1, trainer)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        grads = {}
        for name, p in reference.model.named_parameters():
            scale = 10.0 ** -torch.randint(0, 9, p.shape, generator=generator)
            grads[name] = torch.randn(p.shape, generator=generator) * scale
            p.grad = grads[name].clone()
        reference.optimizer.step()
        batched._optimizer_step(torch.tensor([1]), {n: g[None] for n, g in grads.items()})
    for name, p in reference.model.named_parameters():
        torch.testing.assert_close(batched.params[name][1], p.detach(), atol=1e-6, rtol=1e-5)
        assert batched.params[name][0].abs().sum() == 0  # an unselected slot is left alone


def test_sb3_ppo_trains_on_the_batched_env() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    from permgym.sb3_vec_env import BatchedVecEnv

    venv = VecMonitor(BatchedVecEnv(4, **{**FAST, "updates_per_step": 1, "batch_size": 4, "val_batch_size": 4}))
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=16,
        batch_size=32,
        n_epochs=2,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        stats_window_size=1000,
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    assert len(model.ep_info_buffer) == 256 // FAST["steps_per_episode"]  # every sub-env's episodes were counted
    assert all(info["l"] == FAST["steps_per_episode"] for info in model.ep_info_buffer)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    venv.close()


@pytest.mark.parametrize("stacked", [True, False])
def test_both_batched_update_paths_equal_the_single_trainers_update(stacked: bool) -> None:
    """The stacked forward (sequential conv trunks) and the vmap fallback (any trunk) give each slot the update its
    own trainer would make: same loss, gradient norm, BatchNorm statistics and weights within float32 rounding (SGD,
    linear in the gradient; Adam's first step would turn rounding in near-zero gradient entries into full steps, and
    its arithmetic is pinned by test_batched_optimizer_step_equals_torch_optim)."""
    envs = PermSamplingVectorEnv(2, **{**FAST, "optimizer": "sgd"})
    envs.reset(seed=0)
    assert envs.trainer is not None and envs.trainer.stacked  # the tiny trunk takes the stacked path by default
    envs.trainer.stacked = stacked
    reference = copy.deepcopy(envs.envs[1].trainer)
    assert reference is not None
    batches = [env.trainer.sample_batch() for env in envs.envs]
    perms = [env.trainer.uniform_permutations() for env in envs.envs]
    got = envs.trainer.update([0, 1], batches, perms)[1]
    want = reference.update(batches[1], perms[1])
    assert got.loss == pytest.approx(want.loss, abs=1e-5)
    assert got.grad_norm == pytest.approx(want.grad_norm, rel=1e-3)
    for name, p in reference.model.named_parameters():
        torch.testing.assert_close(envs.trainer.params[name][1], p.detach(), atol=1e-7, rtol=1e-5)
    for name, b in reference.model.named_buffers():
        torch.testing.assert_close(envs.trainer.buffers[name][1], b, atol=1e-5, rtol=1e-4)


def test_sub_envs_replay_single_envs_whose_cnn_is_in_channels_last() -> None:
    """On the CPU the batched trunk runs the single network's kernels in channels_last memory, so a sub-env follows a
    single env whose CNN is in channels_last far more tightly than ATOL (only the batched heads' rounding differs);
    against the default single env the gap is that memory layout's float32 summation order (bench/vector_env.py)."""
    kwargs = {**FAST, "steps_per_episode": 5}
    envs = PermSamplingVectorEnv(2, **kwargs)
    obs, _ = envs.reset(seed=3)
    singles = [PermSamplingEnv(**kwargs) for _ in range(2)]
    for i, env in enumerate(singles):
        np.testing.assert_array_equal(env.reset(seed=3 + i)[0], obs[i])
        assert env.trainer is not None
        env.trainer.model.to(memory_format=torch.channels_last)  # the optimiser keeps the same parameters
    envs.action_space.seed(0)
    for _ in range(kwargs["steps_per_episode"]):
        actions = envs.action_space.sample()
        obs, rewards, *_ = envs.step(actions)
        for i, env in enumerate(singles):
            single_obs, reward, *_ = env.step(actions[i])
            np.testing.assert_allclose(obs[i], single_obs, atol=1e-5, rtol=0)
            assert rewards[i] == pytest.approx(reward, abs=1e-5)
