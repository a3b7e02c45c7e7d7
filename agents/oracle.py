"""Oracle samplers that look ahead: the known-headroom references of PermSampling (DACBench's "expert" row).

At every decision an oracle tries ``candidates`` stratified actions from the *same* state — weights, optimiser,
data order, RNG states: :meth:`permgym.env.PermSamplingEnv.snapshot` / ``restore``, as the ``uniform_relative``
reward does — runs the env's step on each, scores the result, restores the env and returns the best candidate. The
caller's ``env.step`` then reproduces that candidate's step exactly (CPU presets are deterministic). Criteria:

* ``"reward"``: the env's own reward for the step (greedy in the reward the agent is trained on).
* ``"proxy"``: a downstream proxy, :class:`KnnProxy`: how well the trunk's clip features retrieve the class of
  labelled *held-out training* clips (the env's reward pool) among labelled training clips. No test clip is used.

An oracle costs ``candidates + 1`` env steps per decision (plus the proxy's feature passes); it needs the live env
(not a :class:`~agents.base.SamplerSpec`), acts for one env at a time and only in ``per_sample`` mode.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.base import Sampler
from agents.heuristics import stratified_action
from permgym.env import PermSamplingEnv
from permgym.probe import clip_features, standardize

CRITERIA = ("reward", "proxy")


class KnnProxy:
    """Soft nearest-neighbour log-likelihood of the true class: a smooth downstream proxy of a frozen trunk.

    Queries are all clips of the env's reward pool (held-out training clips), the gallery the first
    ``gallery_per_class`` training clips of each class; features as :func:`permgym.probe.clip_features` (4 evenly
    spaced frames, concatenated), standardised by the gallery's statistics. The score is the mean over queries of
    ``log sum_{same class} exp(s / temperature) - log sum_all exp(s / temperature)`` with ``s`` the cosine
    similarity: higher when same-class training clips are nearer, continuous (unlike a top-1 hit rate on a few
    dozen queries).

    Args:
        env: the PermSampling env (any wrapper) whose pools are used.
        gallery_per_class: training clips per class in the gallery.
        temperature: softmax temperature over similarities.
    """

    def __init__(self, env: gym.Env, gallery_per_class: int = 2, temperature: float = 0.1) -> None:
        base = env.unwrapped
        if gallery_per_class < 1 or not temperature > 0:
            raise ValueError(f"need gallery_per_class >= 1 and temperature > 0, got {gallery_per_class}, {temperature}")
        train, queries = base.train_pool, base.reward_pool
        labels = train.labels
        keep = torch.cat([torch.nonzero(labels == c).flatten()[:gallery_per_class] for c in labels.unique()])
        self.gallery_clips, self.gallery_labels = train[keep], labels[keep]
        self.query_clips, self.query_labels = queries[torch.arange(len(queries))], queries.labels
        self.image_size, self.temperature = base.config.element_size, temperature

    @torch.no_grad()
    def __call__(self, trunk: nn.Module) -> float:
        features = clip_features(trunk, torch.cat([self.gallery_clips, self.query_clips]), 4, self.image_size)
        gallery, query = standardize(features[: len(self.gallery_clips)], features[len(self.gallery_clips) :])
        logits = F.normalize(query.double(), dim=1) @ F.normalize(gallery.double(), dim=1).T / self.temperature
        same = self.query_labels[:, None] == self.gallery_labels[None, :]
        matched = logits.masked_fill(~same, float("-inf")).logsumexp(1)
        return float((matched - logits.logsumexp(1)).mean())


class OracleSampler(Sampler):
    """Greedy look-ahead over ``candidates`` stratified actions, kept by the env's reward or the downstream proxy.

    Args:
        env: the live PermSampling env it acts in (any wrapper; the look-ahead steps the unwrapped env).
        criterion: ``"reward"`` or ``"proxy"`` (see the module docstring).
        candidates: M, actions tried per decision (>= 1; 1 is stratified sampling at M + 1 times the cost).
        seed: seeds the candidates' shuffles.

    Attributes:
        last_scores: the candidates' scores at the last decision (the returned action has the largest).
    """

    supported_modes = ("per_sample",)

    def __init__(self, env: gym.Env, criterion: str = "reward", candidates: int = 4, seed: int = 0) -> None:
        if not isinstance(getattr(env, "unwrapped", None), PermSamplingEnv):
            raise TypeError(f"OracleSampler looks ahead in a live PermSampling env; got {type(env).__name__}")
        if criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        super().__init__(env, seed)
        self.env: PermSamplingEnv = env.unwrapped
        self.criterion, self.candidates = criterion, candidates
        self.proxy = KnnProxy(env) if criterion == "proxy" else None
        self.last_scores: list[float] = []

    def _act(self, observation: np.ndarray, deterministic: bool) -> np.ndarray:
        env = self.env
        saved = env.snapshot()
        best, self.last_scores = None, []
        for _ in range(self.candidates):
            action = stratified_action(self.spec, self.rng)
            _, reward, _, _, _ = env.step(action)
            score = float(reward) if self.proxy is None else self.proxy(env.trainer.model.trunk)
            env.restore(saved)
            if best is None or score > max(self.last_scores):
                best = action
            self.last_scores.append(score)
        assert best is not None
        return best

    def init_kwargs(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "candidates": self.candidates}


class RewardOracleSampler(OracleSampler):
    """:class:`OracleSampler` keeping the candidate with the best env reward (registered as ``oracle_reward``)."""

    def __init__(self, env: gym.Env, candidates: int = 4, seed: int = 0) -> None:
        super().__init__(env, criterion="reward", candidates=candidates, seed=seed)

    def init_kwargs(self) -> dict[str, Any]:
        return {"candidates": self.candidates}


class ProxyOracleSampler(OracleSampler):
    """:class:`OracleSampler` keeping the candidate with the best :class:`KnnProxy` (registered as ``oracle_proxy``)."""

    def __init__(self, env: gym.Env, candidates: int = 4, seed: int = 0) -> None:
        super().__init__(env, criterion="proxy", candidates=candidates, seed=seed)

    def init_kwargs(self) -> dict[str, Any]:
        return {"candidates": self.candidates}
