"""Reference scores (permgym/reference_scores.json, written by bench/reference_scores.py) and the normalised score."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import permgym
import permgym.reference
from agents import StratifiedSampler
from permgym.env import PermSamplingEnv
from tests.test_env import FAST

CPU_IDS = [env_id for env_id, _, nondeterministic in permgym.ENV_IDS if not nondeterministic]


@pytest.mark.parametrize("env_id", CPU_IDS)
def test_every_cpu_id_has_reference_scores(env_id: str) -> None:
    entry = permgym.reference_scores(env_id)
    assert {"uniform", "stratified"} <= set(entry["samplers"]) and any(
        k.startswith("oracle") for k in entry["samplers"]
    )
    for row in entry["samplers"].values():
        for key in ("return", "heldout_accuracy", "probe_top1", "retrieval_top1"):
            assert math.isfinite(row[key]["mean"]) and row[key]["ci95"] >= 0
    # measured with the id's own preset (up to fields that do not change the return)
    config = PermSamplingEnv(permgym.config.make_config(permgym.gym_preset(env_id))).config
    assert permgym.reference.reference_for(config) == entry


def test_unknown_id_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"no reference scores for 'Nope-v0'; ids with references: .*PermSampling-v0"):
        permgym.reference_scores("Nope-v0")


def test_normalized_score_at_episode_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = PermSamplingEnv(action_mode="per_sample", **FAST).config
    stats = {key: {"mean": 0.5, "ci95": 0.1} for key in ("heldout_accuracy", "probe_top1", "retrieval_top1")}
    samplers = {name: {**stats, "return": {"mean": value, "ci95": 0.0}}
                for name, value in (("uniform", 0.0), ("stratified", 0.01), ("oracle_reward", 0.05))}  # fmt: skip
    path = tmp_path / "reference_scores.json"
    path.write_text(json.dumps({"Fast-v0": {"config": config.to_dict(), "samplers": samplers}}))
    monkeypatch.setattr(permgym.reference, "REFERENCE_PATH", path)
    env = PermSamplingEnv(action_mode="per_sample", **FAST)
    obs, _ = env.reset(seed=0)
    sampler, total, done = StratifiedSampler(env), 0.0, False
    while not done:
        obs, reward, _, done, info = env.step(sampler.predict(obs)[0])
        total += reward
        assert ("normalized_score" in info) == done
    np.testing.assert_allclose(info["normalized_score"], (total - 0.01) / (0.05 - 0.01))
    samplers["oracle_reward"]["return"]["mean"] = 0.005  # an oracle below stratified: no headroom, no scale
    assert math.isnan(permgym.reference.normalized_score(total, {"samplers": samplers}))
    other = PermSamplingEnv(action_mode="per_sample", **{**FAST, "lr": 1e-4})  # another config: no reference
    obs, _ = other.reset(seed=0)
    for _ in range(FAST["steps_per_episode"]):
        *_, info = other.step(sampler.predict(obs)[0])
    assert "normalized_score" not in info
