"""Self-supervised pretraining driven by a sampler: one PermSampling episode as a resumable, logged training stage.

The env's trainer is the one trainer, so a sampler that learned in the env is the sampler used here: at every step
the sampler chooses the permutations of the next ``updates_per_step`` SGD updates and, if it learns, learns online
from the step's reward (:func:`agents.rollout.take_step`). Under torchrun every rank steps its own env in lock-step
(same seed, same global batches; rank 0's action is broadcast) and ``DistributedDataParallel`` splits each update's
batch. ``experiments/ssl_ucf101.py`` runs it once per sampler before retrieval and fine-tuning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from agents.base import Sampler
from agents.rollout import take_step
from permgym.config import PermSamplingConfig
from permgym.distributed import MetricLogger, World, broadcast_object, set_rng_states
from permgym.env import PermSamplingEnv
from permgym.run import Checkpointer


def pretrain(
    config: PermSamplingConfig,
    make_sampler: Callable[[PermSamplingEnv], Sampler],
    *,
    seed: int,
    world: World,
    checkpointer: Checkpointer,
    variant: str,
    result: dict[str, Any],
    amp: bool = False,
    sync_bn: bool = True,
    tb_dir: str | Path | None = None,
    print_freq: int = 20,
    checkpoint_every: int = 25,
    progress: bool = True,
) -> tuple[PermSamplingEnv, Sampler]:
    """Run the pretraining episode (or continue it from ``checkpointer``'s checkpoint inside part ``variant``).

    The env is built from ``config`` and reset with ``seed``, then ``make_sampler(env)`` builds the sampler. Every
    ``checkpoint_every`` steps and at the end, ``checkpointer.save(variant, "ssl", result, ...)`` stores the env,
    the sampler, the observation and the policy state (and may raise :class:`permgym.run.Interrupted`).

    Args:
        config: the env's config; ``steps_per_episode`` steps of ``updates_per_step`` SGD updates.
        make_sampler: builds the sampler acting in the env.
        seed: the episode's seed (network initialisation, data order, augmentation).
        world: this process's place in a torchrun group.
        checkpointer: the run's checkpoints; counts the SGD updates done.
        variant: the run part's name (checkpoints, progress lines, the divergence warning).
        result: the part's result, filled in place: ``result["ssl_history"]`` (one record per step: update, reward,
            train loss, held-out loss/accuracy per task, selection counts, divergence), ``result["times"]["ssl_s"]``
            and ``result["metrics"]`` (:func:`ssl_metrics`).
        amp, sync_bn: as for :class:`permgym.env.PermSamplingEnv`.
        tb_dir: TensorBoard folder (rank 0 writes ``ssl/...`` scalars), or None.
        print_freq, progress: meters every N steps; a progress bar.

    Returns:
        The env (its trainer holds the pretrained network) and the sampler.
    """
    env = PermSamplingEnv(config, world=world, amp=amp, sync_bn=sync_bn)
    obs, _ = env.reset(seed=seed)
    sampler = make_sampler(env)
    history: list[dict[str, Any]] = result.setdefault("ssl_history", [])
    elapsed, episode_start, state = result["times"].get("ssl_s", 0.0), True, None
    resume = checkpointer.resume_point(variant)
    if resume is not None:
        env.load_state_dict(resume["state"]["env"])
        sampler.load_state_dict(resume["state"]["sampler"])
        obs, state, episode_start = resume["state"]["obs"], resume["state"]["policy_state"], False
        set_rng_states(resume["rng"])
    total = config.steps_per_episode
    done = total if history and history[-1]["diverged"] else len(history)
    writer = SummaryWriter(tb_dir, purge_step=done or None) if world.is_main and tb_dir is not None else None
    logger = MetricLogger(world)
    start = time.perf_counter()
    steps = logger.log_every(range(done, total), print_freq, f"pretrain [{variant}]", total=total, initial=done,
                             writer=writer, tb_prefix="ssl", progress=progress)  # fmt: skip
    for step in steps:
        # rank 0 decides, so the ranks never drift apart (e.g. GPU nondeterminism)
        taken = take_step(env, sampler, obs, state, episode_start, decide=broadcast_object)
        obs, state, info, episode_start = taken.obs, taken.state, taken.info, False
        checkpointer.updates += config.updates_per_step
        record = {"update": env.trainer.updates_done, "reward": taken.reward, "train_loss": info["train_loss"],
                  "diverged": info["diverged"], "counts": {t: c.tolist() for t, c in info["selection_counts"].items()}}  # fmt: skip
        for task in env.tasks:
            record[f"{task}/val_loss"] = info[f"{task}/val_loss"]
            record[f"{task}/val_accuracy"] = info[f"{task}/val_accuracy"]
        history.append(record)
        meters = {k.split("/")[-1]: v for k, v in taken.learned.items()}  # the sampler's own scalars, if it learns
        meters.update({"train_loss": info["train_loss"], "reward": taken.reward},
                      **{f"{t}_val_accuracy": info[f"{t}/val_accuracy"] for t in env.tasks})  # fmt: skip
        logger.update(**meters)
        finished = taken.done or step + 1 == total
        if finished or (step + 1) % checkpoint_every == 0:
            result["times"]["ssl_s"] = elapsed + time.perf_counter() - start
            state_dict = {"env": env.state_dict(), "sampler": sampler.state_dict(), "obs": obs, "policy_state": state}
            checkpointer.save(variant, "ssl", result, state_dict)
        if finished:
            break
    result["times"]["ssl_s"] = elapsed + time.perf_counter() - start
    if writer is not None:
        writer.close()
    result["metrics"].update(ssl_metrics(env, history))
    if history and history[-1]["diverged"]:
        print(f"warning: pretraining with {variant} diverged after {history[-1]['update']} updates")
    return env, sampler


def ssl_metrics(env: PermSamplingEnv, history: list[dict[str, Any]]) -> dict[str, float]:
    """Final held-out ordering loss/accuracy per task (on the env's report pool: clips the reward never saw) and their
    mean, the return, the number of updates and whether training diverged (``ssl/...`` keys)."""
    val = env.heldout_statistics()
    metrics: dict[str, float] = {}
    for task, stats in val.items():
        metrics[f"ssl/{task}/val_loss"] = float(stats["loss"].mean())
        metrics[f"ssl/{task}/val_accuracy"] = float(stats["accuracy"].mean())
    metrics["ssl/val_loss"] = float(np.mean([metrics[f"ssl/{t}/val_loss"] for t in val]))
    metrics["ssl/val_accuracy"] = float(np.mean([metrics[f"ssl/{t}/val_accuracy"] for t in val]))
    metrics["ssl/return"] = float(sum(r["reward"] for r in history))
    metrics["ssl/updates"] = float(env.trainer.updates_done)
    metrics["ssl/diverged"] = float(any(r["diverged"] for r in history))
    return metrics
