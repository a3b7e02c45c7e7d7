"""Oracle samplers: the look-ahead leaves the env exactly as it was and picks the best candidate."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from agents import StratifiedSampler
from agents.oracle import KnnProxy, OracleSampler
from permgym.env import PermSamplingEnv
from tests.test_env import FAST


def _state(env: PermSamplingEnv) -> dict:
    return copy.deepcopy({"trainer": env.trainer.state_dict(), "tracker": env._tracker.state_dict(),
                          "np_random": env.np_random.bit_generator.state, "step": env._step})  # fmt: skip


def _assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("criterion", ["reward", "proxy"])
def test_lookahead_restores_the_env_and_keeps_the_best_candidate(criterion: str) -> None:
    env = PermSamplingEnv(action_mode="per_sample", **FAST)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(StratifiedSampler(env).predict(obs)[0])  # the optimiser has state to disturb
    before = _state(env)
    oracle = OracleSampler(env, criterion=criterion, candidates=3, seed=0)
    action, _ = oracle.predict(obs)
    _assert_same(before, _state(env))  # weights, optimiser, data order, generator, tracker, np_random
    assert len(oracle.last_scores) == 3 and len(set(oracle.last_scores)) == 3
    _, reward, *_ = env.step(action)
    chosen = reward if criterion == "reward" else oracle.proxy(env.trainer.model.trunk)
    assert chosen == max(oracle.last_scores)


def test_oracle_refuses_a_spec_and_bad_arguments() -> None:
    env = PermSamplingEnv(action_mode="per_sample", **FAST)
    with pytest.raises(TypeError, match="looks ahead in a live PermSampling env"):
        OracleSampler(StratifiedSampler(env).spec)
    with pytest.raises(ValueError, match=re.escape("unknown criterion 'loss'; choose one of reward, proxy")):
        OracleSampler(env, criterion="loss")


def test_knn_proxy_uses_held_out_training_clips_only() -> None:
    env = PermSamplingEnv(action_mode="per_sample", **FAST)
    env.reset(seed=0)
    proxy = KnnProxy(env)
    assert len(proxy.query_clips) == len(env.reward_pool)
    assert torch.equal(proxy.query_labels, env.reward_pool.labels)
    assert proxy(env.trainer.model.trunk) <= 0.0
