"""Ray RLlib: PPO trains on the registered ids with two env runners on a local Ray instance (skipped without Ray)."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason='Ray RLlib is an optional extra: pip install -e ".[rllib]"')
pytest.importorskip("ray.rllib")

#: A very small env: every Ray worker builds its own data and CNN.
TINY = {"steps_per_episode": 2, "updates_per_step": 1, "batch_size": 4, "val_batch_size": 4,
        "synthetic_classes": 10, "synthetic_videos": 60}  # fmt: skip


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(900)  # Ray start-up and two worker processes that each build data and a CNN: ~1-8 min on 2 cores
def test_rllib_ppo_trains_two_iterations_on_two_env_runners(local_ray) -> None:
    """Two env runners, each with the batched vector env of two sub-envs (RLlib's vector_entry_point mode)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from permgym.rllib import register_rllib_envs

    register_rllib_envs()
    config = (
        PPOConfig()
        .environment("PermSampling-v0", env_config=TINY)
        .env_runners(num_env_runners=2, num_envs_per_env_runner=2, gym_env_vectorize_mode="vector_entry_point")
        .training(train_batch_size_per_learner=16, minibatch_size=8, num_epochs=1)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16]))
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        assert algo.env_runner_group.num_healthy_remote_workers() == 2
        for _ in range(2):
            result = algo.train()
        assert result["training_iteration"] == 2
        runners = result["env_runners"]
        assert runners["num_env_steps_sampled_lifetime"] >= 2 * 16
        assert runners["num_episodes_lifetime"] >= 2  # episodes of 2 steps ended and were counted
    finally:
        algo.stop()
