"""How much of a step's reward does the action decide? Per reward mode, the share of per-step reward variance that
re-drawing only the step's permutations produces.

    python bench/reward_variance.py --seeds 3      # prints the table and writes BENCHMARKS.md

At states reached by stratified sampling (``PermSampling-v0`` in ``per_sample`` mode, steps ``--states`` of seeds
0..N-1) the env is snapshotted, then stepped ``--draws`` times from the same snapshot in two ways: (a) only the
action changes (a fresh stratified action; same weights, same batches, same augmentation and RNG), and (b) action
and data change (the trainer's data order and generator are reseeded too). The action's share at a state is
``var(a) / var(b)``; the table reports its mean ± 95 % t-interval over states, with the standard deviations.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import machine_info, publish

from agents.evaluate import mean_ci
from agents.heuristics import StratifiedSampler, stratified_action
from permgym.config import REWARDS
from permgym.env import PermSamplingEnv

HEADING = "## Reward variance (bench/reward_variance.py)"


def state_variances(env: PermSamplingEnv, rng: np.random.Generator, draws: int, seed: int) -> tuple[float, float]:
    """``(var over actions only, var over actions and data)`` of the next step's reward from the current state."""
    spec = StratifiedSampler(env).spec
    saved = env.snapshot()
    action_only, both = [], []
    for _ in range(draws):
        _, reward, *_ = env.step(stratified_action(spec, rng))
        action_only.append(reward)
        env.restore(saved)
    for i in range(draws):
        trainer = env.trainer
        trainer.generator.manual_seed(10**6 * (seed + 1) + i)
        trainer._order = torch.randperm(len(trainer.train_clips), generator=trainer.generator)
        trainer._cursor = 0
        _, reward, *_ = env.step(stratified_action(spec, rng))
        both.append(reward)
        env.restore(saved)
    return float(np.var(action_only, ddof=1)), float(np.var(both, ddof=1))


def measure(reward: str, seeds: int, states: list[int], draws: int) -> dict[str, float]:
    env = PermSamplingEnv(action_mode="per_sample", reward=reward, torch_threads=1)
    shares, sd_action, sd_total = [], [], []
    for seed in range(seeds):
        sampler, rng = StratifiedSampler(env, seed=seed), np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed)
        for step in range(max(states) + 1):
            if step in states:
                var_action, var_total = state_variances(env, rng, draws, seed)
                shares.append(var_action / var_total if var_total > 0 else float("nan"))
                sd_action.append(var_action**0.5)
                sd_total.append(var_total**0.5)
            obs, *_ = env.step(sampler.predict(obs)[0])
    share, half = mean_ci(shares)
    return {
        "share": share,
        "share_ci": half,
        "sd_action": float(np.mean(sd_action)),
        "sd_total": float(np.mean(sd_total)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    parser.add_argument(
        "--states", type=int, nargs="+", default=[1, 8, 20], help="env steps measured (default: 1 8 20)"
    )
    parser.add_argument("--draws", type=int, default=6, help="steps tried per state and kind (default: 6)")
    parser.add_argument("--rewards", nargs="+", default=list(REWARDS), choices=REWARDS, help="reward modes")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = {reward: measure(reward, args.seeds, args.states, args.draws) for reward in args.rewards}
    minutes = (time.perf_counter() - start) / 60
    lines = [
        HEADING,
        "",
        f"Command: `python bench/reward_variance.py --seeds {args.seeds} --states {' '.join(map(str, args.states))} "
        f"--draws {args.draws}` ({minutes:.1f} min, one torch thread). Machine: {machine_info()}.",
        f"`PermSampling-v0` (25 steps of 4 updates, batch 32) in `per_sample` mode, states reached by stratified "
        f"sampling at steps {args.states} of seeds 0-{args.seeds - 1}; at each, {args.draws} steps from the same snapshot "
        "with only the action re-drawn, and as many with action and data re-drawn. Share = var(action only) / "
        "var(action and data), mean ± 95 % t-interval over the states; standard deviations are means over states "
        "(rewards after `reward_scale` 10).",
        "",
        "| reward | share of per-step variance the action explains | sd, action only | sd, action and data |",
        "|---|---:|---:|---:|",
    ]
    for reward, r in rows.items():
        lines.append(f"| `{reward}` | {100 * r['share']:.0f} ± {100 * r['share_ci']:.0f} % | {r['sd_action']:.4f} | "
                     f"{r['sd_total']:.4f} |")  # fmt: skip
    publish(HEADING, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
