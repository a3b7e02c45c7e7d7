"""The paper's sampler: a policy over the permutation bank, conditioned on the CNN's state, trained online by REINFORCE
during a single CNN training run (Büchler, Brattoli, Ommer, ECCV 2018).

Read top to bottom: the hyper-parameters (:class:`PolicyGradientConfig`), the policy network
(:class:`PolicyNetwork`, with CleanRL's ``get_action_and_value``), then the sampler that acts and learns.

Design choices
--------------
* **What the log-probability is of.** The policy is a categorical distribution ``π`` over each bank. The
  "action" REINFORCE credits is the set of permutations the CNN actually trained on during the step, read from
  ``info["selection_counts"]`` in both supported modes:

  - ``per_sample`` (recommended, the paper's granularity): the sampler draws each sample's permutation from ``π``
    itself; the env reuses them for the step's updates.
  - ``distribution``: the action is ``tanh(score)`` and the policy's logits are ``tanh(score) / temperature``, so
    ``π`` is *exactly* the distribution the env draws from (``softmax(clip(a, -1, 1) / temperature)``); the env
    then draws every sample of every update from it.

  Either way ``log π(step) = Σ_k c_k log π_k`` over the ``N = Σ_k c_k`` draws; we use it divided by ``N`` (the mean
  log-probability per drawn permutation), which only rescales the gradient and keeps ``entropy_coef`` independent
  of the batch size. Its gradient with respect to the logits is ``c / N - π``: how much more the step used each
  permutation than the policy expected, which is exactly what the reward can be credited to. (Treating the action
  vector as a Gaussian sample, as SB3's PPO does in distribution mode, would credit the *mean* distribution and
  leave the env's draws as unexplained noise.) The discrete mode is refused: the env draws uniformly within a
  group, so a distribution over the bank is not what it uses.
* **Per-permutation scorer.** ``score_k = MLP(features of permutation k, task scalars, globals) + b_k``: one small
  MLP shared by the K permutations (permutation-equivariant: "prefer permutations whose held-out loss is high"
  is one weight, not K) plus a learned per-permutation preference ``b_k``; the action is ``tanh`` of the scores
  centred over the bank (a common shift means nothing to a softmax, but Adam would let it drift until ``tanh``
  saturates and the policy is stuck at uniform). The last layer starts at zero, so the initial policy is uniform:
  the sampler starts as the baseline and departs from it only as rewards justify.
* **Credit per step (γ = 0).** A step's reward (``val_loss_delta``: the drop of held-out loss over the step's
  updates) measures the utility of that step's permutations; longer-term credit would multiply the variance of a
  single run of a few dozen decisions. The advantage is ``(r - b) / σ`` with ``b`` and ``σ²`` bias-corrected
  exponential moving averages of the reward and its squared deviation (the moving-average baseline and reward
  normalisation), so the drift of the reward over training (large early, small late) is removed; it is clipped to
  ``±advantage_clip`` and zero until both averages have seen a step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from agents.base import Sampler, SamplerSpec
from permgym.observation import GLOBAL_SCALARS, PER_PERMUTATION_FEATURES, PER_TASK_SCALARS


@dataclass
class PolicyGradientConfig:
    """Hyper-parameters of :class:`PolicyGradientSampler`."""

    learning_rate: float = 0.01
    """Adam step size of the policy."""
    hidden: int = 32
    """width of the per-permutation scorer's hidden layer"""
    entropy_coef: float = 0.01
    """weight of the entropy bonus (per drawn permutation; keeps the policy from collapsing on noise)"""
    baseline_decay: float = 0.9
    """decay of the moving averages of the reward (the baseline) and of its squared deviation (the scale)"""
    advantage_clip: float = 3.0
    """normalised advantages are clipped to [-advantage_clip, advantage_clip]"""
    update_every: int = 1
    """env steps per policy update (the end of an episode always triggers one)"""
    max_grad_norm: float = 1.0
    """gradient-norm clip of each policy update"""


class PolicyNetwork(nn.Module):
    """Observation -> a categorical distribution over each task's bank.

    Args:
        spec: the env's spec (banks, observation layout, temperature, samples per update).
        hidden: width of the scorer's hidden layer.
    """

    def __init__(self, spec: SamplerSpec, hidden: int) -> None:
        super().__init__()
        self.temperature = spec.temperature
        self.num_draws = dict(spec.batch_split)
        slices = spec.slices
        columns = np.arange(spec.observation_space.shape[0])
        global_index = np.concatenate([columns[slices["global"][name]] for name in GLOBAL_SCALARS])
        self._index: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for task in spec.banks:
            per_permutation = np.stack([columns[slices[task][name]] for name in PER_PERMUTATION_FEATURES], axis=1)
            shared = np.concatenate([columns[slices[task][name]] for name in PER_TASK_SCALARS] + [global_index])
            self._index[task] = (torch.as_tensor(per_permutation), torch.as_tensor(shared))  # [K, F], [S]
        inputs = len(PER_PERMUTATION_FEATURES) + len(PER_TASK_SCALARS) + len(GLOBAL_SCALARS)
        self.scorer = nn.ModuleDict(
            {
                task: nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
                for task in spec.banks
            }
        )
        for mlp in self.scorer.values():
            nn.init.zeros_(mlp[-1].weight)
        self.preference = nn.ParameterDict({task: nn.Parameter(torch.zeros(k)) for task, k in spec.bank_sizes.items()})
        # the moving-average baseline and reward scale (bias-corrected EMAs), saved with the weights
        self.register_buffer("reward_weight", torch.zeros((), dtype=torch.float64))
        self.register_buffer("reward_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("reward_var", torch.zeros((), dtype=torch.float64))
        self.register_buffer("deviation_weight", torch.zeros((), dtype=torch.float64))

    def action_vector(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` observations -> ``[N, sum K]`` distribution-mode actions in (-1, 1); the env's
        ``softmax(a / temperature)`` of each task's part equals :meth:`logits`'s softmax."""
        scores = []
        for task, (per_permutation, shared) in self._index.items():
            features = torch.cat(
                [x[:, per_permutation], x[:, shared][:, None, :].expand(-1, per_permutation.shape[0], -1)], dim=2
            )  # [N, K, inputs]
            score = self.scorer[task](features).squeeze(2) + self.preference[task]
            # centred before the squashing: a common shift changes nothing in a softmax but would saturate tanh
            scores.append(torch.tanh(score - score.mean(1, keepdim=True)))
        return torch.cat(scores, dim=1)

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{task: [N, K]}`` logits of the policy."""
        sizes = [len(per_permutation) for per_permutation, _ in self._index.values()]  # ParameterDict sorts keys
        return dict(zip(self._index, (self.action_vector(x) / self.temperature).split(sizes, dim=1), strict=True))

    def baseline(self) -> torch.Tensor:
        """The moving-average reward (0 before any step)."""
        return self.reward_mean / self.reward_weight.clamp_min(1e-12)

    def get_action_and_value(
        self,
        x: torch.Tensor,
        counts: dict[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """CleanRL's interface. The action is a step's permutation counts ``{task: [N, K]}``.

        Args:
            x: ``[N, D]`` observations.
            counts: the permutations a step trained on (``info["selection_counts"]``); drawn from the policy
                (``batch_split`` samples per task, with ``generator``) when ``None``.
            generator: source of the draws.

        Returns:
            ``(counts, log_prob [N], entropy [N], value [N])``: ``log_prob`` is the mean log-probability per drawn
            permutation, ``entropy`` the policy's entropy summed over tasks, ``value`` the moving-average baseline
            (REINFORCE has no critic).
        """
        logits = self.logits(x)
        if counts is None:
            counts = {}
            for task, z in logits.items():
                draws = torch.multinomial(z.softmax(1), self.num_draws[task], replacement=True, generator=generator)
                counts[task] = torch.zeros_like(z).scatter_add_(1, draws, torch.ones_like(draws, dtype=z.dtype))
        log_prob = sum((counts[t] * z.log_softmax(1)).sum(1) for t, z in logits.items())
        total = sum(c.sum(1) for c in counts.values()).clamp_min(1)
        entropy = sum(-(z.softmax(1) * z.log_softmax(1)).sum(1) for z in logits.values())
        value = self.baseline().float().expand(len(x))
        return counts, log_prob / total, entropy, value


class PolicyGradientSampler(Sampler):
    """REINFORCE over the permutation bank, learning online from each step's reward.

    Args:
        env: the PermSampling env (any wrapper; ``action_mode`` distribution or per_sample) or its spec.
        seed: seeds the policy's initial weights and its draws.
        config: hyper-parameters (a :class:`PolicyGradientConfig` or its ``asdict``); defaults when ``None``.
        log_dir: if given, TensorBoard scalars (``charts/``, ``losses/``) are written there, one point per env step.

    The policy learns in :meth:`observe` (see :mod:`agents.base` for the loop); :meth:`save` / :meth:`load` keep the
    weights, optimiser, reward statistics and RNG states, so a run resumes exactly.
    """

    supported_modes = ("per_sample", "distribution")

    def __init__(
        self,
        env: gym.Env | SamplerSpec,
        seed: int = 0,
        config: PolicyGradientConfig | dict[str, Any] | None = None,
        log_dir: str | None = None,
    ) -> None:
        super().__init__(env, seed)
        if isinstance(config, dict):
            config = PolicyGradientConfig(**config)
        self.config = config or PolicyGradientConfig()
        # TRY NOT TO MODIFY: seeding (torch's global RNG is forked, never touched), logging
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = PolicyNetwork(self.spec, self.config.hidden)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.learning_rate)
        self.writer = SummaryWriter(log_dir) if log_dir else None
        if self.writer is not None:
            rows = "\n".join(f"|{key}|{value}|" for key, value in asdict(self.config).items())
            self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{rows}")
        self.global_step = 0
        self.num_updates = 0
        self._last_observation: np.ndarray | None = None
        self._pending: list[tuple[np.ndarray, dict[str, np.ndarray], float]] = []

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """As :meth:`Sampler.predict`; a single observation is also remembered for the next :meth:`observe`."""
        result = super().predict(observation, state, episode_start, deterministic)
        obs = np.asarray(observation, dtype=np.float32)
        self._last_observation = obs.copy() if obs.ndim == 1 else None
        return result

    @torch.no_grad()
    def _act(self, observation: np.ndarray, deterministic: bool) -> np.ndarray:
        x = torch.as_tensor(observation)[None]
        if self.spec.action_mode == "distribution":
            return self.policy.action_vector(x)[0].numpy().astype(np.float32)
        counts, *_ = self.policy.get_action_and_value(x, generator=self.generator)
        rows = [np.repeat(np.arange(c.shape[1]), c[0].long().numpy()) for c in counts.values()]
        return np.concatenate(rows).astype(np.int64)

    def observe(
        self, reward: float, next_observation: np.ndarray, done: bool, info: dict[str, Any]
    ) -> dict[str, float]:
        """Store the step (observation of the last ``predict``, permutations trained on, reward); update the policy
        every ``update_every`` steps and at the end of an episode. Returns the scalars logged for this step."""
        if self._last_observation is None:
            raise RuntimeError(
                "observe() pairs a reward with the last predict() on a single observation; call it first"
            )
        counts = {task: np.asarray(info["selection_counts"][task], dtype=np.float32) for task in self.spec.banks}
        self._pending.append((self._last_observation, counts, float(reward)))
        self._last_observation = None
        self.global_step += 1
        p = self.policy
        logged = {"charts/reward": float(reward)}
        if len(self._pending) >= self.config.update_every or done:
            logged.update(self._update())
        if done:  # the next episode is a new CNN run: its rewards do not continue this run's trend
            for buffer in (p.reward_weight, p.reward_mean, p.reward_var, p.deviation_weight):
                buffer.zero_()
        if self.writer is not None:
            for key, value in logged.items():
                self.writer.add_scalar(key, value, self.global_step)
        return logged

    def _update(self) -> dict[str, float]:
        c = self.config
        obs = torch.as_tensor(np.stack([step[0] for step in self._pending]))
        counts = {t: torch.as_tensor(np.stack([step[1][t] for step in self._pending])) for t in self.spec.banks}
        rewards = torch.tensor([step[2] for step in self._pending], dtype=torch.float64)
        self._pending = []

        # ALGO LOGIC: advantages from the moving-average baseline and reward scale, as they were before this batch
        p = self.policy
        if p.reward_weight > 0 and p.deviation_weight > 0:
            std = (p.reward_var / p.deviation_weight).sqrt().clamp_min(1e-8)
            advantages = ((rewards - p.baseline()) / std).clamp(-c.advantage_clip, c.advantage_clip)
        else:
            advantages = torch.zeros_like(rewards)
        for r in rewards:  # then fold the batch into the averages, one step at a time
            if p.reward_weight > 0:
                p.reward_var.mul_(c.baseline_decay).add_((1 - c.baseline_decay) * (r - p.baseline()) ** 2)
                p.deviation_weight.mul_(c.baseline_decay).add_(1 - c.baseline_decay)
            p.reward_mean.mul_(c.baseline_decay).add_((1 - c.baseline_decay) * r)
            p.reward_weight.mul_(c.baseline_decay).add_(1 - c.baseline_decay)

        # ALGO LOGIC: REINFORCE with an entropy bonus
        _, log_prob, entropy, _ = p.get_action_and_value(obs, counts)
        policy_loss = -(advantages.float() * log_prob).mean()
        entropy_loss = entropy.mean()
        loss = policy_loss - c.entropy_coef * entropy_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(p.parameters(), c.max_grad_norm)
        self.optimizer.step()
        self.num_updates += 1

        with torch.no_grad():
            top = max(float(z.softmax(1).max()) for z in p.logits(obs[-1:]).values())
        return {
            "losses/policy_loss": float(policy_loss.detach()),
            "losses/entropy": float(entropy_loss.detach()),
            "charts/advantage": float(advantages.mean()),
            "charts/baseline": float(p.baseline()),
            "charts/max_probability": top,
        }

    # ------------------------------------------------------------------ checkpoints
    def init_kwargs(self) -> dict[str, Any]:
        return {"config": asdict(self.config)}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "global_step": self.global_step,
            "num_updates": self.num_updates,
            "last_observation": self._last_observation,
            "pending": list(self._pending),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.global_step = int(state["global_step"])
        self.num_updates = int(state["num_updates"])
        self._last_observation = state["last_observation"]
        self._pending = list(state["pending"])

    def close(self) -> None:
        """Flush and close the TensorBoard writer (if any)."""
        if self.writer is not None:
            self.writer.close()
