"""Calibrate the yardstick: does more ordering pretraining give better downstream features in the embedded regime?

    python bench/calibration.py --seeds 5        # prints the table, writes BENCHMARKS.md and a plot

One stratified-sampling episode per seed of ``PermSampling-v0`` in ``per_sample`` mode (the regime the headroom
and reference scores are measured in: ``updates_per_step`` updates of ``batch_size`` clips per step), run for the
largest budget; the frozen trunk is evaluated after 0, ¼, ½, 1, 2 and 4 times the default episode's updates (Adam at
a constant step size, so a shorter budget is the start of the longer run). At each budget: held-out ordering
accuracy (the env's report pool), and downstream on SyntheticActions test clips (:mod:`permgym.probe`: linear-probe
top-1 and retrieval top-1, test clips querying train clips). The table gives mean ± 95 % t-interval over seeds and
the paired difference of each doubling (same seed); a doubling "raises" a metric when that interval is clear of zero.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, machine_info, write_section

from agents.evaluate import heldout_ordering_metrics, mean_ci
from agents.heuristics import StratifiedSampler
from permgym.config import make_config
from permgym.data.synthetic import MOTIONS
from permgym.env import PermSamplingEnv
from permgym.probe import (
    ProbeData,
    clip_features,
    evaluate_trunk,
    linear_probe_accuracy,
    load_probe_data,
    select_weight_decay,
)
from permgym.run import parse_key_value

HEADING = "## Calibration (bench/calibration.py)"
MULTIPLES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
ALL_METRICS = (("heldout_accuracy", "held-out ordering acc"), ("probe_top1", "linear probe top-1"),
           ("retrieval_top1", "retrieval top-1"), ("centred_probe_top1", "centred probe top-1"),
           ("centred_retrieval_top1", "centred retrieval top-1"), ("motion_probe_top1", "probe motion top-1"),
           ("shape_probe_top1", "probe shape top-1"))  # fmt: skip
#: The downstream protocols: raw clip features, and clip features centred over their frames (as the head sees them).
PROTOCOLS = {"raw": ("probe_top1", "retrieval_top1"), "centred": ("centred_probe_top1", "centred_retrieval_top1")}
#: The linear probe's weight decay unless ``--probe-weight-decays`` says otherwise (:func:`linear_probe_accuracy`'s).
DEFAULT_WEIGHT_DECAYS = [1e-3]
PROTOCOL_TEXT = {"raw": "raw", "centred": "centred over the clip's frames (`permgym.probe.centre_frames`)"}


def measured(runs: list[list[dict[str, float]]]) -> list[tuple[str, str]]:
    """The ``(key, title)`` of :data:`ALL_METRICS` that ``runs`` recorded."""
    return [(key, title) for key, title in ALL_METRICS if key in runs[0][0]]


def factor_probes(
    trunk: torch.nn.Module, data: ProbeData, image_size: int, epochs: int, weight_decays: tuple[float, ...]
) -> dict[str, float]:
    """Linear-probe top-1 of each factor of a SyntheticActions class on raw clip features: its motion (chance 1/15)
    and its object shape (chance 1/4); the weight decay as in :func:`permgym.probe.evaluate_trunk`."""
    train_x, test_x = (
        clip_features(trunk, clips, image_size=image_size) for clips in (data.train_clips, data.test_clips)
    )
    factors = {"motion_probe_top1": lambda y: y % len(MOTIONS), "shape_probe_top1": lambda y: y // len(MOTIONS)}
    out = {}
    for key, factor in factors.items():
        train_y, test_y = factor(data.train_labels), factor(data.test_labels)
        decay = select_weight_decay(train_x, train_y, weight_decays, epochs=epochs)
        out[key] = linear_probe_accuracy(train_x, train_y, test_x, test_y, epochs=epochs, weight_decay=decay)
    return out


def run_seed(
    seed: int,
    env_kwargs: dict,
    probe_videos: int,
    probe_epochs: int,
    protocols: list[str],
    factors: bool,
    weight_decays: tuple[float, ...] = (1e-3,),
) -> list[dict[str, float]]:
    """Metrics after each budget of :data:`MULTIPLES` for one seed: held-out ordering accuracy, probe and retrieval
    top-1 under each of ``protocols`` and, with ``factors``, :func:`factor_probes`; the probes' weight decay is
    chosen from ``weight_decays`` on the training clips when there is more than one."""
    env = PermSamplingEnv(**{"action_mode": "per_sample", "torch_threads": 1, **env_kwargs})
    default_steps = env.config.steps_per_episode
    checkpoints = sorted({round(m * default_steps) for m in MULTIPLES})
    env = PermSamplingEnv(env.config.replace(steps_per_episode=max(checkpoints)))
    sampler = StratifiedSampler(env, seed=seed)
    c = env.config
    data = load_probe_data(
        c.synthetic_classes, probe_videos, c.clip_frames, c.frame_size, c.data_seed, c.synthetic_variant
    )
    obs, _ = env.reset(seed=seed)
    rows = []
    for step in range(max(checkpoints) + 1):
        if step in checkpoints:
            row = {"updates": step * c.updates_per_step, **heldout_ordering_metrics(env)}
            trunk = env.trainer.model.trunk
            for name in protocols:
                probe_key, retrieval_key = PROTOCOLS[name]
                probe = evaluate_trunk(trunk, data, image_size=c.element_size, epochs=probe_epochs,
                                       centred=name == "centred", weight_decays=weight_decays)  # fmt: skip
                row.update({probe_key: probe["probe_top1"], retrieval_key: probe["retrieval_top1"]})
            if factors:
                row.update(factor_probes(trunk, data, c.element_size, probe_epochs, weight_decays))
            rows.append(row)
            print(f"seed {seed} step {step}: {rows[-1]}", flush=True)
        if step < max(checkpoints):
            obs, *_ = env.step(sampler.predict(obs)[0])
    return rows


def report(
    runs: list[list[dict[str, float]]], args: argparse.Namespace, env_kwargs: dict, default: int, minutes: float
) -> str:
    updates = [row["updates"] for row in runs[0]]
    metrics = measured(runs)
    lines = [
        "| budget (x default) | SGD updates | " + " | ".join(f"{title} %" for _, title in metrics) + " |",
        "|---:|---:|" + "---:|" * len(metrics),
    ]
    for i, n in enumerate(updates):
        cells = []
        for key, _ in metrics:
            mean, half = mean_ci(run[i][key] for run in runs)
            cells.append(f"{100 * mean:.1f} ± {100 * half:.1f}")
        lines.append(f"| {n / default:g} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Paired difference of each doubling (same seed; percentage points, mean ± 95 % CI; **bold** = clear of zero):",
              "", "| budget | " + " | ".join(title for _, title in metrics) + " |", "|---|" + "---:|" * len(metrics)]  # fmt: skip
    verdicts = {key: [] for key, _ in metrics}
    for i in range(2, len(updates)):
        cells = []
        for key, _ in metrics:
            mean, half = mean_ci(run[i][key] - run[i - 1][key] for run in runs)
            clear = mean - half > 0
            verdicts[key].append(clear)
            text = f"{100 * mean:+.1f} ± {100 * half:.1f}"
            cells.append(f"**{text}**" if clear else text)
        lines.append(f"| {updates[i - 1]} -> {updates[i]} updates | " + " | ".join(cells) + " |")
    met = [name for name, keys in PROTOCOLS.items() if all(k in verdicts and all(verdicts[k]) for k in keys)]
    command = f"python bench/calibration.py --seeds {args.seeds}" + (
        f" --first-seed {args.first_seed}" if args.first_seed else "") + (
        f" --env-kwargs {' '.join(f'{k}={v}' for k, v in args.env_kwargs)}" if args.env_kwargs else "") + (
        f" --label {args.label}" if args.label else "") + (
        f" --probe-videos {args.probe_videos}" if args.probe_videos != 3000 else "") + (
        f" --probe-epochs {args.probe_epochs}" if args.probe_epochs != 30 else "") + (
        f" --probe-weight-decays {' '.join(map(str, args.probe_weight_decays))}"
        if args.probe_weight_decays != DEFAULT_WEIGHT_DECAYS else "") + (
        f" --protocols {' '.join(args.protocols)}" if args.protocols != list(PROTOCOLS) else "") + (
        " --factors" if args.factors else "")  # fmt: skip
    head = [
        HEADING if not args.label else f"### {args.label}",
        "",
        f"Command: `{command}` ({minutes:.1f} min, one torch thread). Machine: {machine_info()}.",
        f"`PermSampling-v0` with {env_kwargs}, stratified sampling, {args.seeds} seeds ({', '.join(map(str, seeds(args)))}); "
        f"downstream: SyntheticActions, {args.probe_videos} clips (80/20 split), "
        + " or ".join(PROTOCOL_TEXT[name] for name in args.protocols)
        + " features, "
        + ("probes of the class's motion and shape factors, " if args.factors else "")
        + f"linear probe {args.probe_epochs} epochs, "
        + (
            f"its weight decay chosen per checkpoint from {', '.join(map(str, args.probe_weight_decays))} by top-1 on "
            "every fifth training clip (probe trained on the rest), "
            if len(args.probe_weight_decays) > 1
            else ""
        )
        + "retrieval by cosine similarity (test clips query train clips); held-out ordering accuracy on the env's report pool. "
        f"Mean ± 95 % t-interval over seeds. Plot: [`bench/figures/{args.label or 'calibration'}.png`]"
        f"(bench/figures/{args.label or 'calibration'}.png).",
        "",
    ]
    verdict = (f"Calibrated ({' and '.join(met)} features): every doubling raises probe and retrieval top-1 "
               "(paired intervals clear of zero)." if met else "**Not calibrated** by either protocol: "
               + "; ".join(f"{title}: {sum(verdicts[k])}/{len(verdicts[k])} doublings clear of zero"
                           for k, title in metrics) + ".")  # fmt: skip
    return "\n".join(head + lines + ["", verdict, ""])


def seeds(args: argparse.Namespace) -> range:
    """The env seeds of the run: ``--first-seed`` onwards, ``--seeds`` of them."""
    return range(args.first_seed, args.first_seed + args.seeds)


def plot(runs: list[list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    updates = np.array([row["updates"] for row in runs[0]])
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, title in measured(runs):
        stats = [mean_ci(run[i][key] for run in runs) for i in range(len(updates))]
        mean, half = np.array(stats).T * 100
        ax.plot(updates, mean, marker="o", label=title)
        ax.fill_between(updates, mean - half, mean + half, alpha=0.2)
    ax.set_xscale("symlog", linthresh=25)
    ax.set_xlabel("SGD updates of stratified ordering pretraining")
    ax.set_ylabel("%")
    ax.set_title("Calibration: downstream vs pretraining budget (mean, 95% CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default: 5)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST..FIRST+N-1 (default: 0; screens use 0-2, reports held-out seeds from 1000)")  # fmt: skip
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", type=parse_key_value,
                        help="env overrides (JSON values, else strings)")  # fmt: skip
    parser.add_argument("--probe-videos", type=int, default=3000, help="downstream clips (default: 3000)")
    parser.add_argument("--probe-epochs", type=int, default=30, help="linear-probe epochs (default: 30)")
    parser.add_argument("--probe-weight-decays", nargs="+", type=float, default=list(DEFAULT_WEIGHT_DECAYS),
                        help="linear-probe weight decay; several: chosen per checkpoint on every fifth training clip "
                        "(default: 0.001)")  # fmt: skip
    parser.add_argument("--protocols", nargs="+", choices=tuple(PROTOCOLS), default=list(PROTOCOLS),
                        help="downstream feature protocols (default: raw centred)")  # fmt: skip
    parser.add_argument("--factors", action="store_true",
                        help="also probe each factor of the class (motion, object shape) on raw features")  # fmt: skip
    parser.add_argument("--label", default="", help="a variant: report written to OUT/LABEL.md, not BENCHMARKS.md")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/calibration", help="results folder")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from OUT/LABEL.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env_kwargs = dict(args.env_kwargs)
    name = args.label or "calibration"
    saved = args.out / f"{name}.json"
    if args.report_only:
        record = json.loads(saved.read_text())
        runs, minutes = record["runs"], record["minutes"]
    else:
        start = time.perf_counter()
        runs = [run_seed(seed, env_kwargs, args.probe_videos, args.probe_epochs, args.protocols, args.factors,
                         tuple(args.probe_weight_decays)) for seed in seeds(args)]  # fmt: skip
        minutes = (time.perf_counter() - start) / 60
        args.out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"env_kwargs": env_kwargs, "minutes": minutes, "runs": runs}, indent=1))
    figures = ROOT / "bench/figures"
    figures.mkdir(exist_ok=True)
    plot(runs, figures / f"{name}.png")
    config = make_config("tiny", **env_kwargs)
    text = report(runs, args, env_kwargs, config.steps_per_episode * config.updates_per_step, minutes)
    print(text)
    if args.label:
        (args.out / f"{name}.md").write_text(text)
    elif not args.no_write:
        write_section(HEADING, text)


if __name__ == "__main__":
    main()
