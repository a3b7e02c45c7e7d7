"""Does a learned sampling policy beat stratified sampling? Compare samplers on held-out seeds.

    python -m agents.evaluate                      # the full comparison (see BENCHMARKS.md for its wall time)
    python -m agents.evaluate --quick --out runs/agents_eval_quick

Protocol:

1. **Training** on ``--train-seeds`` only. The policy-gradient sampler's hyper-parameters are chosen among
   :data:`PG_CANDIDATES` on the training seeds: each candidate learns online through ``--pg-warmup-epochs`` passes
   over all but the last two training seeds, then runs (still learning) on those two, scored by their final held-out
   ordering loss; the best candidate's policy, warm-started on all training seeds, goes to evaluation. PPO is trained
   by SB3 (``agents.train``) for ``--ppo-episodes`` training-seed episodes.
2. **Evaluation** on the disjoint ``--eval-seeds``: every sampler runs one full episode (one CNN training run,
   ``steps_per_episode x updates_per_step`` SGD updates: an equal budget for all) per seed; the warm-started
   policy keeps learning online during each run, PPO acts with its frozen policy. ``untrained`` is the CNN at
   reset (no updates), the floor every sampler should clear.
3. **Judged by what the CNN learned**: the episode return, the held-out ordering loss / accuracy on the env's report
   pool (held-out training clips that no validation batch, hence no reward or observation, ever contains), and downstream
   SyntheticActions recognition with the frozen trunk (:mod:`permgym.probe`: linear-probe top-1 and
   nearest-neighbour retrieval top-1/5, test clips against train clips).

Outputs in ``--out``: ``config.json``, ``metrics.json`` (per-seed values and summaries), ``results.md`` (mean ± 95 %
t-interval over seeds, and paired differences to stratified sampling, the baseline to beat), ``learning_curves.png`` (held-out loss vs SGD updates),
``usage_heatmap.png`` (share of samples per bank permutation x window of env steps, evaluation seeds pooled).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
from scipy import stats
from tqdm import tqdm

import permgym
from agents.base import Sampler
from agents.policy_gradient import PolicyGradientConfig, PolicyGradientSampler
from agents.registry import SAMPLERS as REGISTERED
from agents.registry import make_sampler
from agents.rollout import run_episode
from agents.sb3 import SB3Sampler
from agents.train import env_config, train
from agents.train import get_args_parser as get_train_parser
from permgym.benchmarks import write_section
from permgym.probe import evaluate_trunk, load_probe_data
from permgym.run import RunFolder, parse_key_value, require_at_least, run_cli
from permgym.trainer import chance_loss

T = TypeVar("T")
R = TypeVar("R")

#: Samplers the comparison knows, in table order. ``untrained`` is the CNN before any update.
SAMPLERS = (
    "untrained",
    "uniform",
    "stratified",
    "round_robin",
    "curriculum",
    "loss_proportional",
    "pg",
    "ppo",
    "ppo_deterministic",
    "oracle_reward",
    "oracle_proxy",
)
DEFAULT_SAMPLERS = ("uniform", "stratified", "round_robin", "curriculum", "loss_proportional", "pg", "ppo")
#: The baseline every sampler is compared with, pair by pair on the same seeds: stratified sampling (balanced, not
#: adaptive), or the classic i.i.d. uniform draw when stratified is not in the run.
BASELINES = ("stratified", "uniform")
#: Look-ahead oracles (:mod:`agents.oracle`): the reference for "how much better than stratified is possible".
ORACLES = ("oracle_reward", "oracle_proxy")

#: Env overrides of the comparison: per-sample actions (the paper's granularity; every sampler expresses its
#: distribution exactly) chosen afresh for every update (``updates_per_step=1``: with more updates per step the
#: env reuses a step's draws, and "uniform" would no longer be the classic i.i.d. draw per sample and update),
#: 200 steps of batch 16 = 200 SGD updates per run (uniform sampling reaches a held-out ordering accuracy of
#: 28.1 ± 3.9 % against a chance level of 1/24 in BENCHMARKS.md; batch 16 was preferred to batch 8 with twice the
#: updates after one informal look on training seeds, which no script records), one torch thread per process
#: (parallel workers share the cores).
COMPARISON_ENV = {"action_mode": "per_sample", "steps_per_episode": 200, "updates_per_step": 1, "batch_size": 16,
                  "torch_threads": 1}  # fmt: skip
#: What ``--quick`` changes: a tiny run for tests and smoke checks.
QUICK_ENV = {"steps_per_episode": 3, "updates_per_step": 2, "batch_size": 8, "val_batch_size": 8,
             "synthetic_videos": 300}  # fmt: skip

#: Metrics of the summary table: key, column title, whether higher is better.
METRICS = (
    ("return", "return", True),
    ("heldout_loss", "held-out ordering loss / log K", False),
    ("heldout_accuracy", "held-out ordering acc %", True),
    ("probe_top1", "linear probe top-1 %", True),
    ("retrieval_top1", "retrieval top-1 %", True),
    ("retrieval_top5", "retrieval top-5 %", True),
)
#: Policy-gradient hyper-parameters tried on the training seeds; the first is :class:`PolicyGradientConfig`'s default,
#: the others keep the policy nearer uniform (a 10x entropy bonus, a 10x smaller step size).
PG_CANDIDATES = (
    PolicyGradientConfig(),
    PolicyGradientConfig(entropy_coef=0.1),
    PolicyGradientConfig(learning_rate=0.001),
)

#: The normalised score column (when the run has stratified sampling and an oracle).
NORMALIZED = ("normalized_score", "normalised score (stratified 0, oracle 1)", True)

#: Metrics shown in percent.
PERCENT = ("heldout_accuracy", "probe_top1", "retrieval_top1", "retrieval_top5")


@dataclass(frozen=True)
class Job:
    """One evaluation run: ``sampler`` on instance ``seed``, then the downstream probe of its trunk."""

    sampler: str
    seed: int
    env_id: str
    env_kwargs: tuple[tuple[str, Any], ...]
    artefacts: tuple[tuple[str, str], ...]
    probe_videos: int
    probe_epochs: int
    oracle_candidates: int = 4


# ---------------------------------------------------------------------------------------------------- evaluation
@lru_cache(maxsize=2)
def _env(env_id: str, env_kwargs: tuple[tuple[str, Any], ...]) -> gym.Env:
    """One env per worker process and configuration (building it loads the clips once)."""
    return permgym.make(env_id, **dict(env_kwargs))


def build_sampler(name: str, env: gym.Env, seed: int, artefacts: dict[str, str], oracle_candidates: int = 4) -> Sampler:
    """The sampler ``name`` for a run on instance ``seed`` (learned ones loaded from their training artefacts; oracles
    try ``oracle_candidates`` actions per decision)."""
    if name == "pg":
        return PolicyGradientSampler.load(artefacts["pg"], env, seed=seed)
    if name in ("ppo", "ppo_deterministic"):
        return SB3Sampler.load(artefacts["ppo"], env, algo="ppo", seed=seed, deterministic=name == "ppo_deterministic")
    if name not in REGISTERED:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    options = {"candidates": oracle_candidates} if name in ORACLES else {}
    return make_sampler(name, env, seed=seed, **options)  # the registry's samplers that need no training


def heldout_ordering_metrics(env: gym.Env) -> dict[str, float]:
    """Ordering loss (/ log K) and accuracy of the env's current CNN over every bank permutation of the report pool
    (held-out training clips that no validation batch, hence no reward or observation, ever contained; see
    :meth:`permgym.env.PermSamplingEnv.heldout_statistics`), averaged over tasks."""
    base = env.unwrapped
    statistics = base.heldout_statistics()
    losses = [float(statistics[t]["loss"].mean()) / chance_loss(base.banks[t]) for t in base.tasks]
    accuracies = [float(statistics[t]["accuracy"].mean()) for t in base.tasks]
    return {"heldout_loss": float(np.mean(losses)), "heldout_accuracy": float(np.mean(accuracies))}


def evaluate_job(job: Job) -> dict[str, Any]:
    """Run one job (in a worker process) and return its metrics, curve and permutation usage."""
    env = _env(job.env_id, job.env_kwargs)
    result: dict[str, Any] = {"sampler": job.sampler, "seed": job.seed}
    if job.sampler == "untrained":
        _, info = env.reset(seed=job.seed)
        result.update({"return": 0.0, "updates": [0], "val_loss": [float(info_mean(info, "val_loss"))]})
    else:
        sampler = build_sampler(job.sampler, env, job.seed, dict(job.artefacts), job.oracle_candidates)
        log = run_episode(env, sampler, job.seed)
        sampler.close()
        result.update({
            "return": log.episode_return,
            "updates": log.updates,
            "val_loss": np.mean(list(log.val_loss.values()), axis=0).tolist(),
            "usage": {t: np.stack(c).tolist() for t, c in log.selection_counts.items()},
            "diverged": log.diverged,
        })  # fmt: skip
    result.update(heldout_ordering_metrics(env))
    c = env.unwrapped.config
    data = load_probe_data(
        c.synthetic_classes, job.probe_videos, c.clip_frames, c.frame_size, c.data_seed, c.synthetic_variant
    )
    trunk = env.unwrapped.trainer.model.trunk
    probe = evaluate_trunk(trunk, data, image_size=c.element_size, epochs=job.probe_epochs)
    result.update({k: v for k, v in probe.items() if k in ("probe_top1", "retrieval_top1", "retrieval_top5")})
    return result


def info_mean(info: dict[str, Any], name: str) -> float:
    """Mean over tasks of ``info["{task}/{name}"]``."""
    return float(np.mean([v for k, v in info.items() if k.endswith(f"/{name}")]))


def run_parallel(fn: Callable[[T], R], items: list[T], workers: int, desc: str) -> list[R]:
    """``[fn(item) for item in items]`` in ``workers`` processes (inline when 1), with a progress bar."""
    bar = tqdm(total=len(items), desc=desc, unit="run", dynamic_ncols=True)
    if workers <= 1:
        results = []
        for item in items:
            results.append(fn(item))
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            futures = [pool.submit(fn, item) for item in items]
            for future in futures:
                future.add_done_callback(lambda _: bar.update())
            results = [future.result() for future in futures]
    bar.close()
    return results


# ---------------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class PGTrial:
    """One policy-gradient candidate on the training seeds: learn on ``fit_seeds`` (``epochs`` passes), then run on
    ``val_seeds`` (still learning) and score the final held-out ordering loss; the policy is saved to ``path``."""

    config: PolicyGradientConfig
    env_id: str
    env_kwargs: tuple[tuple[str, Any], ...]
    fit_seeds: tuple[int, ...]
    val_seeds: tuple[int, ...]
    epochs: int
    seed: int
    path: str


def run_pg_trial(trial: PGTrial) -> float:
    """Run ``trial`` (in a worker process); returns the mean final held-out ordering loss on its validation seeds."""
    env = _env(trial.env_id, trial.env_kwargs)
    sampler = PolicyGradientSampler(env, seed=trial.seed, config=trial.config, log_dir=f"{trial.path}.tb")
    for instance in [s for _ in range(trial.epochs) for s in trial.fit_seeds]:
        run_episode(env, sampler, instance)
    losses = []
    for instance in trial.val_seeds:
        run_episode(env, sampler, instance)
        losses.append(heldout_ordering_metrics(env)["heldout_loss"])
    sampler.save(trial.path)
    sampler.close()
    return float(np.mean(losses))


def select_pg(env_id: str, env_kwargs: dict[str, Any], seeds: list[int], epochs: int, seed: int, workers: int,
              out: Path) -> tuple[str, list[dict[str, Any]]]:  # fmt: skip
    """Try every :data:`PG_CANDIDATES` on the training seeds (the last two, or the last one when there are fewer
    than three, validate); returns the best candidate's policy path and every candidate's score."""
    if len(seeds) < 2:
        raise ValueError(f"choosing the policy-gradient hyper-parameters needs >= 2 training seeds, got {seeds}")
    split = len(seeds) - (2 if len(seeds) >= 3 else 1)
    trials = [
        PGTrial(config, env_id, tuple(sorted(env_kwargs.items())), tuple(seeds[:split]), tuple(seeds[split:]), epochs,
                seed, str(out / f"pg_candidate{i}.pt"))
        for i, config in enumerate(PG_CANDIDATES)
    ]  # fmt: skip
    scores = run_parallel(run_pg_trial, trials, workers, "pg hyper-parameters (training seeds)")
    table = [{"config": asdict(t.config), "heldout_loss": score} for t, score in zip(trials, scores, strict=True)]
    best = int(np.argmin(scores))
    print(f"agents.evaluate: pg candidate {best} chosen on the training seeds: {table[best]}", flush=True)
    return trials[best].path, table


def train_ppo(env_id: str, env_kwargs: dict[str, Any], seeds: list[int], episodes: int, n_envs: int, seed: int,
              out: Path) -> Path:  # fmt: skip
    """SB3 PPO on the training seeds through ``agents.train`` (no evaluation callback: no seed beyond the training
    seeds is touched); returns the model path."""
    steps = env_config(env_id, env_kwargs).steps_per_episode
    overrides = [f"{k}={json.dumps(v)}" for k, v in env_kwargs.items()]
    argv = ["--algo", "ppo", "--env-id", env_id, "--n-envs", str(n_envs), "--total-timesteps", str(episodes * steps),
            "--train-seeds", *map(str, seeds), "--eval-seeds", "--seed", str(seed), "--out", str(out / "ppo_train"),
            "--no-progress-bar", "--overwrite", "--env-kwargs", *overrides]  # fmt: skip
    print(f"agents.evaluate: training PPO for {episodes} episodes on the training seeds", flush=True)
    return train(get_train_parser().parse_args(argv))


# ---------------------------------------------------------------------------------------------------- reporting
def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the two-sided Student-t confidence interval (0 for fewer than two values)."""
    x = np.asarray(list(values), dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), 0.0
    half = stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(half)


def summarise(results: list[dict[str, Any]], samplers: list[str]) -> dict[str, Any]:
    """Per sampler and metric: mean, CI half-width and the per-seed values; plus paired differences (one entry per
    sampler) to the first of :data:`BASELINES` in the run."""
    by_sampler = {
        name: sorted((r for r in results if r["sampler"] == name), key=lambda r: r["seed"]) for name in samplers
    }
    references = normalisation(by_sampler)
    summary: dict[str, Any] = {}
    for name, rows in by_sampler.items():
        if references is not None:
            for r in rows:
                r["normalized_score"] = normalized_score(r["return"], *references)
        summary[name] = {}
        for key, _, _ in metrics_of(references is not None):
            values = [r[key] for r in rows]
            mean, half = mean_ci(values)
            summary[name][key] = {"mean": mean, "ci95": half, "values": values}
    differences: dict[str, Any] = {}
    baseline = next((b for b in BASELINES if b in by_sampler), None)
    if baseline is not None:
        reference = {r["seed"]: r for r in by_sampler[baseline]}
        for name, rows in by_sampler.items():
            if name in (baseline, "untrained"):
                continue
            differences[name] = {}
            for key in ("heldout_accuracy", "probe_top1", "retrieval_top1"):
                mean, half = mean_ci(r[key] - reference[r["seed"]][key] for r in rows)
                differences[name][key] = {"mean": mean, "ci95": half}
    scale = None if references is None else {"stratified": references[0], "oracle": references[1]}
    return {"samplers": summary, "baseline": baseline, "paired_vs_baseline": differences, "normalisation": scale}


def normalisation(by_sampler: dict[str, list[dict[str, Any]]]) -> tuple[float, float] | None:
    """``(stratified mean return, best oracle mean return)`` of a run that has both, else None."""
    oracles = [float(np.mean([r["return"] for r in rows])) for n, rows in by_sampler.items() if n in ORACLES and rows]
    if "stratified" not in by_sampler or not oracles:
        return None
    return float(np.mean([r["return"] for r in by_sampler["stratified"]])), max(oracles)


def normalized_score(episode_return: float, stratified: float, oracle: float) -> float:
    """D4RL-style: 0 at stratified sampling's mean return, 1 at the best oracle's; NaN when the oracle's mean return
    is not above stratified's (no headroom measured: the scale would be meaningless or inverted)."""
    span = oracle - stratified
    return (episode_return - stratified) / span if span > 0 else float("nan")


def metrics_of(normalised: bool) -> tuple[tuple[str, str, bool], ...]:
    """The table's metrics, plus the normalised score when the run has its references."""
    return METRICS + ((NORMALIZED,) if normalised else ())


def results_table(summary: dict[str, Any]) -> str:
    """The Markdown tables of :func:`summarise` (mean ± 95 % CI; best mean per column in bold)."""
    names = list(summary["samplers"])
    metrics = metrics_of(summary["normalisation"] is not None)
    lines = [
        "| sampler | " + " | ".join(title for _, title, _ in metrics) + " |",
        "|---" + "|---:" * len(metrics) + "|",
    ]
    best = {}
    for key, _, higher in metrics:
        means = {n: summary["samplers"][n][key]["mean"] for n in names if n != "untrained"}
        best[key] = (max if higher else min)(means, key=means.get) if means else None
    for name in names:
        cells = []
        for key, _, _ in metrics:
            m = summary["samplers"][name][key]
            if key in PERCENT:
                text = f"{m['mean'] * 100:.1f} ± {m['ci95'] * 100:.1f}"
            else:
                text = f"{m['mean']:.3f} ± {m['ci95']:.3f}"
            cells.append(f"**{text}**" if best[key] == name else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if summary["paired_vs_baseline"]:
        lines += ["", f"Paired difference to {summary['baseline']} on the same seeds (percentage points, mean ± 95 % CI):",
                  "",
                  "| sampler | held-out ordering acc | linear probe top-1 | retrieval top-1 |", "|---|---:|---:|---:|"]  # fmt: skip
        for name, d in summary["paired_vs_baseline"].items():
            cells = [f"{d[k]['mean'] * 100:+.1f} ± {d[k]['ci95'] * 100:.1f}" for k in ("heldout_accuracy", "probe_top1", "retrieval_top1")]  # fmt: skip
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_learning_curves(results: list[dict[str, Any]], samplers: list[str], path: Path) -> None:
    """Held-out loss vs SGD updates, mean over seeds with the 95 % t-band, one line per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in samplers:
        rows = [r for r in results if r["sampler"] == name and len(r["updates"]) > 1]
        if not rows:
            continue
        length = min(len(r["val_loss"]) for r in rows)
        curves = np.array([r["val_loss"][:length] for r in rows])
        mean = curves.mean(0)
        half = np.array([mean_ci(curves[:, i])[1] for i in range(length)])
        x = rows[0]["updates"][:length]
        ax.plot(x, mean, label=name)
        ax.fill_between(x, mean - half, mean + half, alpha=0.15)
    ax.set_xlabel("SGD updates of the CNN")
    ax.set_ylabel("validation-batch ordering loss (nats)")
    ax.set_title("Learning curves on evaluation seeds (mean, 95% CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_usage(results: list[dict[str, Any]], samplers: list[str], path: Path, columns: int = 25) -> None:
    """Share of samples trained on each bank permutation over training (all evaluation seeds pooled), one panel per
    sampler and task; rows are bank indices, columns windows of consecutive env steps (at most ``columns``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for name in samplers:
        rows = [r for r in results if r["sampler"] == name and "usage" in r]
        for task in rows[0]["usage"] if rows else []:
            counts = np.sum([np.asarray(r["usage"][task], dtype=np.float64) for r in rows], axis=0)  # [T, K]
            window = -(-len(counts) // columns)
            binned = np.add.reduceat(counts, np.arange(0, len(counts), window), axis=0)
            panels.append((f"{name} ({task})", (binned / binned.sum(1, keepdims=True)).T, window))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4), squeeze=False, sharey=True)
    vmax = max(share.max() for _, share, _ in panels)
    for ax, (title, share, window) in zip(axes[0], panels, strict=True):
        extent = (0, share.shape[1] * window, -0.5, share.shape[0] - 0.5)
        image = ax.imshow(share, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=vmax, extent=extent)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("env step")
    axes[0][0].set_ylabel("bank index")
    fig.colorbar(image, ax=axes[0].tolist(), label="share of samples")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _changed(config: dict[str, Any]) -> str:
    """A candidate's fields that differ from the default configuration, e.g. ``entropy_coef=0.1``."""
    default = asdict(PolicyGradientConfig())
    return " ".join(f"{k}={v}" for k, v in config.items() if v != default[k]) or "defaults"


BENCHMARK_HEADING = "## Sampler comparison (agents/evaluate.py)"


# ---------------------------------------------------------------------------------------------------- CLI
def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--env-id", default="PermSampling-v0", help="registered env id (default: PermSampling-v0)")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", type=parse_key_value,
                        help=f"overrides (JSON values, else strings) on top of the comparison's {COMPARISON_ENV} "
                        "(default: none)")  # fmt: skip
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS[1:], default=list(DEFAULT_SAMPLERS),
                        help=f"samplers to compare; untrained is always added (default: {' '.join(DEFAULT_SAMPLERS)})")  # fmt: skip
    parser.add_argument("--train-seeds", type=int, nargs="+", default=list(range(5)),
                        help="instance seeds for training / warm-starting learners (default: 0..4)")  # fmt: skip
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=list(range(1000, 1010)),
                        help="held-out instance seeds, disjoint from the training seeds (default: 1000..1009)")  # fmt: skip
    parser.add_argument("--pg-warmup-epochs", type=int, default=1,
                        help="passes of each policy-gradient candidate over its fitting seeds (default: 1)")  # fmt: skip
    parser.add_argument("--ppo-episodes", type=int, default=10, help="PPO training episodes (default: 10)")
    parser.add_argument("--oracle-candidates", type=int, default=4,
                        help="actions an oracle tries per decision (default: 4)")  # fmt: skip
    parser.add_argument("--probe-videos", type=int, default=1200,
                        help="SyntheticActions clips of the downstream split, 80/20 train/test (default: 1200)")  # fmt: skip
    parser.add_argument("--probe-epochs", type=int, default=30, help="linear-probe training epochs (default: 30)")
    parser.add_argument("--workers", type=int, default=2, help="parallel evaluation processes (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the learners' initialisation (default: 0)")
    parser.add_argument("--out", default="runs/agents_eval", help="output folder (default: runs/agents_eval)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --out that holds another run: its files are moved to OUT.previous/ "
                        "(replacing an older backup there), never mixed with the new run's")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny run: env {QUICK_ENV}, 2 training and 2 evaluation seeds, 300 probe videos")  # fmt: skip
    parser.add_argument("--benchmarks", default=None, metavar="PATH",
                        help="also write the table into this BENCHMARKS.md's sampler-comparison section")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison for command-line arguments ``argv`` (default: ``sys.argv[1:]``); returns what
    ``metrics.json`` holds."""
    argv = sys.argv[1:] if argv is None else argv
    return compare(get_args_parser().parse_args(argv), argv)


def compare(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison for parsed ``args`` (given on the command line as ``argv``, default ``sys.argv[1:]``,
    recorded in results.md); returns what ``metrics.json`` holds.

    Raises:
        ValueError: bad options, or ``--out`` holds another run (without ``--overwrite``) or is in use.
    """
    started = time.time()
    require_at_least(args, 1, "pg_warmup_epochs", "ppo_episodes", "probe_videos", "probe_epochs", "workers",
                     "oracle_candidates")  # fmt: skip
    if args.benchmarks is not None and Path(args.benchmarks).is_dir():
        raise ValueError(f"--benchmarks {args.benchmarks!r} is a folder; give the BENCHMARKS.md file to write into")
    if args.benchmarks is not None and not Path(args.benchmarks).resolve().parent.is_dir():
        raise ValueError(f"--benchmarks {args.benchmarks!r}: its folder does not exist; give an existing BENCHMARKS.md")
    env_kwargs = {**COMPARISON_ENV, **(QUICK_ENV if args.quick else {}), **dict(args.env_kwargs)}
    if args.quick:
        args.train_seeds, args.eval_seeds = args.train_seeds[:2], args.eval_seeds[:2]
        args.probe_videos, args.probe_epochs, args.ppo_episodes = 300, 5, min(args.ppo_episodes, 2)
    config = env_config(args.env_id, env_kwargs)
    if config.dataset != "synthetic":
        raise ValueError(f"the downstream probe runs on SyntheticActions: {args.env_id} must use dataset='synthetic'")
    if "pg" in args.samplers and len(args.train_seeds) < 2:
        raise ValueError(f"pg: choosing its hyper-parameters needs >= 2 --train-seeds, got {args.train_seeds}")
    if "pg" in args.samplers and config.action_mode not in PolicyGradientSampler.supported_modes:
        raise ValueError(f"pg does not act in action_mode={config.action_mode!r}; it supports "
                         f"{', '.join(PolicyGradientSampler.supported_modes)} (--env-kwargs action_mode=per_sample)")  # fmt: skip
    overlap = sorted(set(args.train_seeds) & set(args.eval_seeds))
    if overlap:
        raise ValueError(f"training and evaluation seeds must be disjoint; both contain {overlap}")
    with RunFolder(args.out, overwrite=args.overwrite, resumable=False):
        return _compare(args, env_kwargs, started, sys.argv[1:] if argv is None else argv)


def _compare(args: argparse.Namespace, env_kwargs: dict[str, Any], started: float, argv: list[str]) -> dict[str, Any]:
    out = Path(args.out)
    (out / "config.json").write_text(json.dumps({**vars(args), "env_kwargs": env_kwargs}, indent=2, default=str))

    artefacts: dict[str, str] = {}
    pg_selection: list[dict[str, Any]] = []
    if "pg" in args.samplers:
        artefacts["pg"], pg_selection = select_pg(args.env_id, env_kwargs, args.train_seeds, args.pg_warmup_epochs,
                                                  args.seed, args.workers, out)  # fmt: skip
    if {"ppo", "ppo_deterministic"} & set(args.samplers):
        artefacts["ppo"] = str(train_ppo(args.env_id, env_kwargs, args.train_seeds, args.ppo_episodes,
                                         max(1, args.workers), args.seed, out))  # fmt: skip

    samplers = ["untrained", *[s for s in SAMPLERS if s in args.samplers]]
    jobs = [
        Job(name, seed, args.env_id, tuple(sorted(env_kwargs.items())), tuple(sorted(artefacts.items())),
            args.probe_videos, args.probe_epochs, args.oracle_candidates)
        for seed in args.eval_seeds for name in samplers
    ]  # fmt: skip
    results = run_parallel(evaluate_job, jobs, args.workers, "evaluation runs")
    summary = summarise(results, samplers)
    wall = time.time() - started

    plot_learning_curves(results, samplers, out / "learning_curves.png")
    plot_usage(results, samplers, out / "usage_heatmap.png")
    command = "python -m agents.evaluate " + shlex.join(argv)
    table = results_table(summary)
    notes = (
        f"Command: `{command.strip()}`; wall time {wall / 60:.1f} min ({args.workers} worker processes).\n"
        f"Env `{args.env_id}` with {env_kwargs}; training seeds {args.train_seeds}, evaluation seeds "
        f"{args.eval_seeds}; every run has {env_kwargs.get('steps_per_episode')} x "
        f"{env_kwargs.get('updates_per_step')} SGD updates. Downstream: SyntheticActions, {args.probe_videos} clips "
        f"(80/20 split), trunk features of 4 evenly spaced frames concatenated.\n"
    )
    if pg_selection:
        notes += (
            "pg hyper-parameters chosen on the training seeds (final held-out ordering loss / log K): "
            + ", ".join(f"{_changed(c['config'])}: {c['heldout_loss']:.3f}" for c in pg_selection)
            + ".\n"
        )
    (out / "results.md").write_text(f"# Sampler comparison\n\n{notes}\n{table}\n")
    metrics = {"wall_time_s": wall, "command": command, "env_kwargs": env_kwargs, "pg_selection": pg_selection,
               **summary, "runs": results}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    if args.benchmarks:
        write_section(BENCHMARK_HEADING, f"{BENCHMARK_HEADING}\n\n{notes}\n{table}", args.benchmarks)
    print(f"\n{table}\n\nwall time {wall / 60:.1f} min; results in {out}")
    return metrics


if __name__ == "__main__":
    run_cli(compare, get_args_parser())
