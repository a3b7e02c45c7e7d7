"""Benchmark of the divide-and-conquer learner in a many-class regime: K = 1 vs 4 vs 8, convergence, re-clustering cost.

All K runs are ``experiments/dc_transfer.py --dataset shapes`` (:class:`metric.data.HierarchicalShapes`, scaled to the
CPU budget: 500 training classes of 8 images in 50 super-classes, 500 other test classes; 32 px), one process with one thread each, one at a
time. Four stages:

1. **Selection.** For each K, every training budget of :data:`SCHEDULES` (4 or 8 epochs of one pass over the
   training set, with a K = 1 warm-up epoch, the full embedding from half the budget and K = 1 fine-tuning in the last
   epoch) is trained with the selection seeds on validation data: the same generator with another seed
   (``--data-option seed=1``, other classes altogether). Each K keeps the budget with the best mean of R@1 and NMI.
   K = 1 ignores the phase flags, so its budgets differ only in length.
2. **Evaluation.** The chosen budget of each K on held-out training seeds, on the evaluation data (seed 0), with the
   test metrics every 2 epochs: the R@1-against-iterations curves, and the paired K > 1 - K = 1 differences at the
   end and at half of each K's budget (the convergence claim).
3. **Clusters.** The cluster-class NMI of every re-clustering of the evaluation runs (from their checkpoints).
4. **Cost.** In this process (1 thread), on CUB-sized (6,000 images) and SOP-sized (60,000 images) training sets of
   the same generator: one K = 8 cycle of the default schedule (a re-clustering, then ``T = 2`` epochs of one pass),
   the re-clustering timed both ways: every image from a pass over the training set (the paper), and whole classes
   from 2 images each (``--cluster-images-per-class 2``, dc_transfer's default). Share = re-clustering / (re-clustering
   + the two epochs' training steps).

It replaces the ``## Divide and conquer (bench/dc.py)`` section of BENCHMARKS.md (other sections stay) and writes
``--out/results.json``.

    python bench/dc.py                        # about 45 min on a busy 2-core CPU
    python bench/dc.py --seeds 1 --selection-seeds 1 --schedules 4 --cost-sizes 6000   # a quick look
    python bench/dc.py --report-only          # rewrite the section from --out/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import ROOT, machine_info, write_section
from torch import nn
from torch.utils.data import DataLoader

from metric.clustering import cluster_class_nmi
from metric.data import HierarchicalShapes
from metric.losses import build_loss
from metric.miners import DistanceWeightedMiner
from metric.model import EmbeddingNet, build_backbone
from metric.samplers import BatchedDataset, ClusterBatchSampler
from metric.trainer import DivideAndConquerTrainer, Schedule, build_optimizer

SCRIPT = ROOT / "experiments" / "dc_transfer.py"
SECTION = "## Divide and conquer (bench/dc.py)"
METRICS = ("R@1", "NMI", "MAP@R")
LEARNERS = (1, 4, 8)
# Budgets in epochs (one pass over the 4,000 training images = 50 batches of 80 each): a K = 1 warm-up epoch (so
# that the first clustering sees features that separate classes), the full embedding from half the budget, K = 1
# fine-tuning in the last epoch, re-clustering every 2 epochs after the warm-up. K = 1 ignores the phase flags.
SCHEDULES = {
    4: "--epochs 4 --warmup-epochs 1 --full-embedding-epoch 2 --finetune-epoch 3",
    8: "--epochs 8 --warmup-epochs 1 --full-embedding-epoch 4 --finetune-epoch 7",
}
# The regime, scaled to the CPU budget: 1,000 classes (500 train / 500 test) in 50 super-classes, 8 images per class.
# The init is pinned so that a later ssl_ucf101 checkpoint (which --init auto would pick up) does not change the bench.
DATA = {"num_classes": 1000, "num_superclasses": 50, "images_per_class": 8}
DATA_ARGS = [arg for key, value in DATA.items() for arg in ("--data-option", f"{key}={value}")]
COMMON_ARGS = ["--dataset", "shapes", "--init", "random", "--projection", "pca", *DATA_ARGS]
EVAL_EVERY = 2  # the evaluation runs' test metrics every 2 epochs (the curves); selection runs only at the end
STAGE_ARGS = {"validation": ["--data-option", "seed=1", "--eval-every", "1000"], "evaluation": ["--eval-every", "2"]}
SELECTION_SEED = 100  # selection seeds are 100, 101, ...; evaluation seeds 0, 1, ...
COST_LEARNERS, COST_PER_CLASS, IMAGES_PER_CLASS, CLASSES_PER_SUPERCLASS = 8, 2, 10, 30


def run(name: str, argv: list[str], out: Path) -> dict:
    """One dc_transfer.py process (1 thread); its final metrics, R@1 curve and cluster-class NMIs, with wall time."""
    start = time.perf_counter()
    cmd = [sys.executable, str(SCRIPT), *argv, "--out", str(out), "--overwrite", "--no-progress", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = out.with_name(f"{out.name}.log")  # beside the run folder, which only the run layer writes into
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    ((key, metrics),) = json.loads((out / "metrics.json").read_text())["runs"].items()
    state = torch.load(out / f"K{key[2:]}" / "checkpoint.pth", map_location="cpu", weights_only=False)
    iterations = np.cumsum([sum(r["steps_per_learner"]) for r in state["log"]])
    curve = [[int(iterations[r["epoch"]]), r["epoch"] + 1, r["metrics"]["R@1"]] for r in state["log"] if r["metrics"]]
    nmis = [[h["epoch"], h["class_nmi"]] for h in state["trainer"]["history"] if h["num_clusters"] > 1]
    print(
        f"{name}: R@1 {metrics['R@1']:.4f} NMI {metrics['NMI']:.4f} MAP@R {metrics['MAP@R']:.4f} "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    return {**metrics, "curve": curve, "cluster_nmi": nmis, "wall_seconds": time.perf_counter() - start}


def job_name(stage: str, k: int, epochs: int, seed: int) -> str:
    return f"{stage} K={k} {epochs}ep seed={seed}"


def job_dir(out: Path, stage: str, k: int, epochs: int, seed: int) -> Path:
    return out / stage / f"K{k}_{epochs}ep_s{seed}"


def select_schedules(results: dict[str, dict], schedules: list[int], seeds: list[int]) -> dict[int, int]:
    """For each K, the budget (epochs) with the best mean of (R@1 + NMI) / 2 over the selection seeds."""

    def score(k: int, epochs: int) -> float:
        runs = [results[job_name("validation", k, epochs, s)] for s in seeds]
        return statistics.mean((r["R@1"] + r["NMI"]) / 2 for r in runs)

    return {k: max(schedules, key=lambda epochs: score(k, epochs)) for k in LEARNERS}


def recluster_share(num_images: int, threads: int = 1, seed: int = 0) -> dict[str, float]:
    """Seconds of one K = 8 default-schedule cycle on ``num_images`` training images, and the re-clustering shares.

    Times a re-clustering of every image (a full feature pass + k-means), one epoch (one pass) of training steps,
    and a re-clustering of whole classes from ``COST_PER_CLASS`` images each; the cycle's training time is ``T = 2``
    times the measured pass. Tiny trunk from random init, d = 128, batches of 80 = 20 x 4. Also returns the NMI
    between clusters and super-classes of the first clustering (random trunk, every image) and of the second
    (after one pass of training, whole classes).
    """
    torch.set_num_threads(threads)
    classes = 2 * num_images // IMAGES_PER_CLASS
    start = time.perf_counter()
    data = HierarchicalShapes(
        num_classes=classes,
        num_superclasses=classes // CLASSES_PER_SUPERCLASS,
        images_per_class=IMAGES_PER_CLASS,
        seed=seed,
    )
    generated = time.perf_counter() - start
    schedule = Schedule(epochs=3, num_learners=COST_LEARNERS, recluster_every=2)
    torch.manual_seed(seed)
    model = EmbeddingNet(build_backbone("tiny"), 128, COST_LEARNERS)
    criteria = nn.ModuleList(build_loss("margin") for _ in range(COST_LEARNERS))
    sampler = ClusterBatchSampler(data.labels, batch_size=80, samples_per_class=4, seed=seed)
    trainer = DivideAndConquerTrainer(
        model,
        criteria,
        DistanceWeightedMiner(generator=torch.Generator().manual_seed(seed)),
        build_optimizer(model, criteria, lr=1e-3, embedding_lr=1e-3),
        schedule,
        sampler,
        data,
        seed=seed,
        extract_batch_size=80,
    )
    loader = DataLoader(BatchedDataset(data), sampler=sampler, batch_size=None)
    full = trainer.begin_epoch(0)["seconds"]
    initial = cluster_class_nmi(trainer.clusters, data.super_labels)
    start = time.perf_counter()
    for images, labels, indices, learner in loader:  # one pass; the cycle's T passes cost T times as much
        trainer.train_step(images, labels, learner, indices)
    train = schedule.recluster_every * (time.perf_counter() - start)
    trainer.schedule = replace(schedule, cluster_images_per_class=COST_PER_CLASS)
    classwise = trainer.begin_epoch(schedule.recluster_every)["seconds"]
    trained = cluster_class_nmi(trainer.clusters, data.super_labels)
    return {
        "images": len(data),
        "generate_seconds": generated,
        "train_seconds": train,
        "batches": len(sampler) * schedule.recluster_every,
        "pass_seconds": train / schedule.recluster_every,
        "full_pass_seconds": full,
        "classwise_seconds": classwise,
        "full_pass_share": full / (full + train),
        "classwise_share": classwise / (classwise + train),
        "superclass_nmi_initial": initial,
        "superclass_nmi_after_pass": trained,
    }


def _summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def _at(run: dict, epoch: int) -> float | None:
    """R@1 of ``run`` after ``epoch`` epochs, if it was evaluated then."""
    return next((r1 for _, e, r1 in run["curve"] if e == epoch), None)


def selection_table(results: dict[str, dict], schedules: list[int], seeds: list[int], chosen: dict[int, int]) -> str:
    lines = ["| K | epochs | R@1 mean ± std, % | NMI | MAP@R | chosen |", "|---|---|---|---|---|---|"]
    for k in LEARNERS:
        for epochs in schedules:
            runs = [results[job_name("validation", k, epochs, s)] for s in seeds]
            cells = " | ".join(_summary([r[m] for r in runs]) for m in METRICS)
            lines.append(f"| {k} | {epochs} | {cells} | {'yes' if chosen[k] == epochs else ''} |")
    return "\n".join(lines)


def comparison_table(runs: dict[int, list[dict]]) -> tuple[str, dict[tuple[int, str], tuple[float, float]]]:
    """K > 1 against K = 1 at the end of each K's budget (``runs``: K -> one run per seed, K = 1 included); also
    returns (mean, std) of each paired difference."""
    lines = [
        "| K | metric | K mean ± std, % | K = 1 mean ± std, % | K − K=1 paired, points (mean ± std) | K wins |",
        "|---|---|---|---|---|---|",
    ]
    paired: dict[tuple[int, str], tuple[float, float]] = {}
    for k in sorted(runs):
        for metric in METRICS:
            ours, base = [r[metric] for r in runs[k]], [r[metric] for r in runs[1]]
            if k == 1:
                lines.append(f"| 1 | {metric} | {_summary(ours)} | | | |")
                continue
            diff = [a - b for a, b in zip(ours, base, strict=True)]
            spread = statistics.stdev(diff) if len(diff) > 1 else 0.0
            paired[k, metric] = (statistics.mean(diff), spread)
            wins = sum(d > 0 for d in diff)
            lines.append(
                f"| {k} | {metric} | {_summary(ours)} | {_summary(base)} | {_summary(diff)} | {wins}/{len(diff)} |"
            )
    return "\n".join(lines), paired


def curve_table(runs: dict[int, list[dict]]) -> str:
    epochs = sorted({e for k in LEARNERS for r in runs[k] for _, e, _ in r["curve"]})
    iterations = {e: i for k in LEARNERS for r in runs[k] for i, e, _ in r["curve"]}
    lines = [
        "| K | " + " | ".join(f"{iterations[e]} it. ({e} ep.)" for e in epochs) + " |",
        "|---|" + "---|" * len(epochs),
    ]
    for k in LEARNERS:
        cells = []
        for e in epochs:
            values = [_at(r, e) for r in runs[k]]
            cells.append(_summary(values) if None not in values else "")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def half_budget(runs: dict[int, list[dict]], chosen: dict[int, int]) -> tuple[list[str], bool]:
    """Sentences on R@1 at half of each K > 1's budget against K = 1 at the same iteration; whether every K > 1 is
    ahead by more than the std of its paired differences."""
    sentences, ahead = [], True
    for k in LEARNERS[1:]:
        half = chosen[k] // 2
        ours, base = [_at(r, half) for r in runs[k]], [_at(r, half) for r in runs[1]]
        if None in ours or None in base:
            sentences.append(f"K = {k}: no evaluation of both after {half} epochs")
            ahead = False
            continue
        diff = [a - b for a, b in zip(ours, base, strict=True)]
        ahead &= statistics.mean(diff) > (statistics.stdev(diff) if len(diff) > 1 else 0.0)
        sentences.append(
            f"K = {k} after {half} of its {chosen[k]} epochs: R@1 {_summary(ours)} % vs K = 1 {_summary(base)} %, "
            f"paired {_summary(diff)} points, K ahead on {sum(d > 0 for d in diff)}/{len(diff)} seeds"
        )
    return sentences, ahead


def nmi_sentence(runs: dict[int, list[dict]]) -> str:
    parts = []
    for k in LEARNERS[1:]:
        by_epoch: dict[int, list[float]] = {}
        for r in runs[k]:
            for epoch, nmi in r["cluster_nmi"]:
                by_epoch.setdefault(epoch, []).append(nmi)
        parts.append(
            f"K = {k}: "
            + ", ".join(f"epoch {e}: {100 * statistics.mean(v):.1f} %" for e, v in sorted(by_epoch.items()))
        )
    return "; ".join(parts)


def cost_table(costs: dict[str, dict]) -> str:
    lines = [
        "| training images | batches in the cycle (2 passes) | training s (2 x one measured pass) "
        "| full pass + k-means s (share) "
        "| classes from 2 images each s (share) |",
        "|---|---|---|---|---|",
    ]
    for c in costs.values():
        lines.append(
            f"| {c['images']} | {c['batches']} | {c['train_seconds']:.0f} | {c['full_pass_seconds']:.1f} "
            f"({100 * c['full_pass_share']:.1f} %) | {c['classwise_seconds']:.1f} ({100 * c['classwise_share']:.1f} %) |"
        )
    return "\n".join(lines)


def report(results: dict[str, dict], meta: dict[str, Any]) -> str:
    """The BENCHMARKS.md section for ``results`` (job name -> metrics) and the run's ``meta`` (see :func:`main`)."""
    schedules, chosen = meta["schedules"], {int(k): e for k, e in meta["chosen"].items()}
    seeds = meta["seeds"]
    runs = {k: [results[job_name("evaluation", k, chosen[k], s)] for s in seeds] for k in LEARNERS}
    table, paired = comparison_table(runs)
    half, ahead = half_budget(runs, chosen)
    beats = {k: all(paired[k, m][0] > paired[k, m][1] for m in ("R@1", "NMI")) for k in LEARNERS[1:]}
    costs = meta["costs"]
    shares = [c["classwise_share"] for c in costs.values()]
    return "\n".join(
        [
            SECTION,
            "",
            f"Machine: {meta['machine']}; every K run is one process with 1 thread, one at a time (a machine shared "
            f"with other jobs: times are noisy). Wall time of the whole bench: {meta['minutes']:.1f} min.",
            "",
            f"Command: `{meta['command']}`. Every run is `experiments/dc_transfer.py -K k --seed S "
            f"{' '.join(COMMON_ARGS)}` plus a budget, other settings at their defaults. **Scale** (sized for a CPU "
            "budget of ~45 min): `--dataset shapes` = HierarchicalShapes, 1,000 procedurally drawn object classes in "
            "50 super-classes (500 train / 500 test classes, class-disjoint within every super-class, 8 images per "
            "class: 4,000 / 4,000 images of 32 px); tiny trunk from random init, d = 128 (16 per learner at K = 8), "
            "batches of 80 = 20 classes x 4 images, an epoch = one pass = 50 batches, margin loss with "
            "distance-weighted sampling, Adam 1e-3, re-clustering every 2 epochs after one K = 1 warm-up epoch, "
            "whole classes clustered from 2 images each. Final-epoch metrics, no test-set selection. Budgets: "
            + "; ".join(f"{e} epochs `{SCHEDULES[e]}`" for e in schedules)
            + ".",
            "",
            f"**Selection** (seeds {', '.join(map(str, meta['selection_seeds']))}; validation data = the generator "
            "with seed 1: other classes than the evaluation's). Each K keeps the budget with the best mean of R@1 "
            "and NMI:",
            "",
            selection_table(results, schedules, meta["selection_seeds"], chosen),
            "",
            f"**Evaluation** (held-out seeds {', '.join(map(str, seeds))}, data seed 0; budgets "
            + ", ".join(f"K = {k}: {chosen[k]} epochs" for k in LEARNERS)
            + "):",
            "",
            table,
            "",
            "Target K > 1 above K = 1 on R@1 and NMI with paired differences larger than their std: "
            + "; ".join(f"K = {k} {'met' if beats[k] else 'not met'}" for k in beats)
            + ".",
            "",
            f"**Convergence**: test R@1 (%, mean ± std over the {len(seeds)} seeds) against training iterations "
            "(batches), each K on its chosen budget:",
            "",
            curve_table(runs),
            "",
            "At half the budget: "
            + "; ".join(half)
            + ". Target (K > 1 already ahead on R@1 at half the budget, paired difference larger than its std): "
            + ("met" if ahead else "not met")
            + ".",
            "",
            f"**Clusters**: cluster-class NMI at each re-clustering (mean over seeds): {nmi_sentence(runs)}. For "
            "comparison, issue 11 reported 2-9 % on the embedded SyntheticActions data (30 classes, random-init "
            "trunk, no warm-up, every image clustered; not re-measured here). Every K > 1 run here starts from one "
            "K = 1 warm-up epoch and clusters whole classes, so the NMI of the first clustering measures what the "
            "warm-up gave; this bench has no run without warm-up. With whole classes in every cluster this NMI "
            "is fixed by the cluster sizes (K equal clusters of whole classes give 2 log K / (log K + log C), "
            "36.5 % at K = 4 and 500 classes), so it says little here; what the clusters follow is measured against "
            "the super-classes instead, in the cost runs below (K = 8, one run per size): NMI between clusters and "
            "super-classes "
            + ", ".join(
                f"{100 * c['superclass_nmi_initial']:.1f} % for the first clustering (random trunk, every image) and "
                f"{100 * c['superclass_nmi_after_pass']:.1f} % after one pass of training (whole classes) at "
                f"{c['images']} images"
                for c in costs.values()
                if "superclass_nmi_initial" in c
            )
            + " (super-classes split evenly over the 8 clusters would give 0; each super-class in one cluster "
            "gives 2 log 8 / (log 8 + log S) with S super-classes).",
            "",
            f"**Re-clustering cost** (in the bench process, 1 thread; one K = {COST_LEARNERS} cycle of the default "
            "schedule on HierarchicalShapes training sets of CUB's and SOP's size: a re-clustering, then 2 epochs of "
            "one pass):",
            "",
            cost_table(costs),
            "",
            f"Share with dc_transfer's default (`--cluster-images-per-class 2`): max {100 * max(shares):.1f} % "
            f"(target <= 10 %: {'met' if max(shares) <= 0.10 else 'not met'}); with every image clustered from a "
            f"full pass (the paper, `--cluster-images-per-class 0`): "
            + ", ".join(f"{100 * c['full_pass_share']:.1f} % at {c['images']}" for c in costs.values())
            + ". An epoch is one pass over the training set, so the training time of a cycle grows with the data "
            "as the re-clustering does (with the earlier fixed 20-batch epoch, the issue estimated ~40 % at 6k and "
            "~90 % at 60k for the full pass). The shares' times come from single runs on a shared machine.",
        ]
    )


def cost_stage(sizes: str) -> dict[str, dict]:
    """:func:`recluster_share` at each comma-separated training-set size."""
    costs = {}
    for size in (int(n) for n in sizes.split(",")):
        costs[str(size)] = recluster_share(size)
        print(f"cost at {size} images: {costs[str(size)]}", flush=True)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description="K = 1 vs 4 vs 8 divide and conquer on many classes, and its cost")
    parser.add_argument("--seeds", type=int, default=3, help="held-out evaluation seeds (default: 3)")
    parser.add_argument("--selection-seeds", type=int, default=1, help="seeds per selection run (default: 1)")
    parser.add_argument(
        "--schedules",
        default=",".join(map(str, SCHEDULES)),
        help=f"budgets (epochs) to select from, among {', '.join(map(str, SCHEDULES))} (default: all)",
    )
    parser.add_argument(
        "--cost-sizes", default="6000,60000", help="training-set sizes of the cost stage (default: 6000,60000)"
    )
    parser.add_argument("--out", default="runs/bench_dc", help="output folder (default: runs/bench_dc)")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument("--report-only", action="store_true", help="re-read --out/results.json, run nothing")
    parser.add_argument(
        "--cost-only", action="store_true", help="re-read --out/results.json and run only the cost stage again"
    )
    parser.add_argument("train_args", nargs="*", help="extra dc_transfer.py flags, after --")
    args = parser.parse_args()
    out = Path(args.out)
    if args.report_only or args.cost_only:
        saved = json.loads((out / "results.json").read_text())
        results, meta = saved["runs"], saved["meta"]
        if args.cost_only:
            start = time.perf_counter()
            meta["costs"] = cost_stage(args.cost_sizes)
            meta["minutes"] += (time.perf_counter() - start) / 60
            meta["command"] += " (cost stage run again: --cost-only)"
            (out / "results.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=2))
    else:
        results, meta = benchmark(args, parser)
        (out / "results.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=2))
    text = report(results, meta)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


def benchmark(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[dict[str, dict], dict[str, Any]]:
    """Run the selection, evaluation and cost stages; returns the runs' metrics and what :func:`report` needs."""
    schedules = [int(e) for e in args.schedules.split(",")]
    if set(schedules) - set(SCHEDULES):
        parser.error(f"unknown schedules {sorted(set(schedules) - set(SCHEDULES))}; choose among {list(SCHEDULES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, machine = time.perf_counter(), machine_info()

    def job(stage: str, k: int, epochs: int, seed: int) -> dict:
        schedule = SCHEDULES[epochs].split()
        argv = ["-K", str(k), "--seed", str(seed), *COMMON_ARGS, *STAGE_ARGS[stage], *schedule, *args.train_args]
        return run(job_name(stage, k, epochs, seed), argv, out / stage / f"K{k}_{epochs}ep_s{seed}")

    selection_seeds = [SELECTION_SEED + i for i in range(args.selection_seeds)]
    results = {
        job_name("validation", k, e, s): job("validation", k, e, s)
        for k in LEARNERS
        for e in schedules
        for s in selection_seeds
    }
    chosen = select_schedules(results, schedules, selection_seeds)
    print(f"chosen budgets (epochs): {chosen}", flush=True)
    seeds = list(range(args.seeds))
    for s in seeds:
        for k in LEARNERS:
            results[job_name("evaluation", k, chosen[k], s)] = job("evaluation", k, chosen[k], s)
    costs = cost_stage(args.cost_sizes)
    command = " ".join(
        ["python bench/dc.py", f"--seeds {args.seeds} --selection-seeds {args.selection_seeds}"]
        + [f"--schedules {args.schedules}"] * (args.schedules != parser.get_default("schedules"))
        + [f"--cost-sizes {args.cost_sizes}"] * (args.cost_sizes != parser.get_default("cost_sizes"))
        + (["--", *args.train_args] if args.train_args else [])
    )
    meta = {
        "schedules": schedules,
        "selection_seeds": selection_seeds,
        "seeds": seeds,
        "chosen": chosen,
        "costs": costs,
        "command": command,
        "minutes": (time.perf_counter() - start) / 60,
        "machine": machine,
    }
    return results, meta


if __name__ == "__main__":
    main()
