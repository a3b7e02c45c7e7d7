"""Benchmark PermSampling-v0: step time split into SGD vs observation+reward, and shared-trunk vs naive statistics.

    .venv/bin/python bench/env_step.py            # prints the tables and writes them into BENCHMARKS.md

Part 1 times the default preset: whole ``env.step`` calls, and separately the step's two parts on the same trainer:
``updates_per_step`` SGD updates (batch sampling included) and the observation + reward (scoring the fixed
validation batch over all K permutations, building the observation vector). Part 2 compares, for several banks,
the cost of the all-permutation validation statistics computed with the shared trunk (one trunk pass, a gather per
permutation) against the naive way (one full forward per permutation), both relative to one SGD update.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import machine_info, median_seconds, publish

from permgym.env import PermSamplingEnv
from permgym.models import per_permutation_statistics

HEADING = "## Environment step (bench/env_step.py)"


def step_breakdown(repeats: int) -> dict[str, float]:
    """Median seconds of a default-preset env step, of its SGD part and of its observation+reward part."""
    env = PermSamplingEnv(steps_per_episode=10**6, torch_threads=None)  # torch's default threads, as stated
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape, dtype=np.float32)
    trainer = env.trainer
    probabilities = {t: torch.full((env.banks[t].size,), 1.0 / env.banks[t].size) for t in env.tasks}

    def sgd() -> None:
        for _ in range(env.config.updates_per_step):
            trainer.update(trainer.sample_batch(), trainer.draw_permutations(probabilities))

    def observe() -> None:
        env._val = trainer.validate()
        env._observation()

    return {
        "step": median_seconds(lambda: env.step(action), repeats, warmup=2),
        "sgd": median_seconds(sgd, repeats),
        "observe": median_seconds(observe, repeats),
        "updates_per_step": env.config.updates_per_step,
    }


def statistics_cost(name: str, overrides: dict, repeats: int) -> dict[str, float | str | int]:
    """Shared-trunk vs naive cost of the all-permutation validation statistics, in SGD updates."""
    env = PermSamplingEnv(torch_threads=None, **overrides)
    env.reset(seed=0)
    trainer = env.trainer
    task = env.tasks[0]
    bank = env.banks[task]
    model, natural = trainer.model, trainer.val_elements[task]

    def naive() -> None:
        model.eval()
        with torch.no_grad():
            logits = torch.stack([model(natural[:, perm], task) for perm in bank.perms], dim=1)
            per_permutation_statistics(logits)

    def update() -> None:
        trainer.update(trainer.sample_batch(), trainer.uniform_permutations())

    sgd = median_seconds(update, repeats)
    shared = median_seconds(trainer.validate, repeats)
    slow = median_seconds(naive, max(3, repeats // 3))
    return {"bank": name, "K": bank.size, "sgd": sgd, "shared": shared, "naive": slow}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per measurement (default: 15)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    info = machine_info()
    b = step_breakdown(args.repeats)
    banks = [
        ("temporal, 4 frames (all 4!)", {"num_frames": 4}),
        ("temporal, 5 frames (all 5!)", {"num_frames": 5}),
        ("spatial 3x3, max-Hamming", {"task": "spatial", "grid": 3, "spatial_bank_size": 100}),
    ]
    rows = [statistics_cost(name, overrides, args.repeats) for name, overrides in banks]
    lines = [
        HEADING,
        "",
        f"Command: `python bench/env_step.py --repeats {args.repeats}`. Machine: {info}. Medians of {args.repeats} "
        "timed calls after warm-up; one process, torch's default threads.",
        "",
        f"Default preset (`PermSampling-v0`: tiny trunk, temporal K=24, batch 32, {b['updates_per_step']} updates "
        "per step, validation batch 32):",
        "",
        "| quantity | median | ratio |",
        "|---|---:|---:|",
        f"| env.step | {1000 * b['step']:.1f} ms | {1 / b['step']:.1f} steps/s |",
        f"| SGD part ({b['updates_per_step']} updates + batch sampling) | {1000 * b['sgd']:.1f} ms | 1.00x |",
        f"| observation + reward (all-K validation statistics) | {1000 * b['observe']:.1f} ms | "
        f"{b['observe'] / b['sgd']:.2f}x of SGD |",
        "",
        "All-permutation validation statistics (validation batch of 32 clips), in units of one SGD update (batch 32):",
        "",
        "| bank | K | SGD update | shared trunk | naive (K forwards) | shared / update | naive / update | naive / shared |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['bank']} | {r['K']} | {1000 * r['sgd']:.1f} ms | {1000 * r['shared']:.1f} ms | "
            f"{1000 * r['naive']:.0f} ms | {r['shared'] / r['sgd']:.2f} | {r['naive'] / r['sgd']:.1f} | "
            f"{r['naive'] / r['shared']:.0f}x |"
        )
    k24, k120 = rows[0], rows[1]
    lines += [
        "",
        f"Targets: observation + reward <= 0.35x the step's SGD cost at K=24 — "
        f"{'met' if b['observe'] <= 0.35 * b['sgd'] else 'NOT met'} ({b['observe'] / b['sgd']:.2f}x); "
        f"default preset >= 5 steps/s — {'met' if 1 / b['step'] >= 5 else 'NOT met'} ({1 / b['step']:.1f}); "
        f"sub-linear in K — K x{k120['K'] / k24['K']:.0f} costs x{k120['shared'] / k24['shared']:.1f} with the "
        f"shared trunk, x{k120['naive'] / k24['naive']:.1f} naively.",
    ]
    publish(HEADING, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
