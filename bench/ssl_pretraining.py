"""Benchmark experiments/ssl_ucf101.py: random init vs uniform sampling vs the learned sampler, several seeds.

    .venv/bin/python bench/ssl_pretraining.py --seeds 5 --jobs 2      # ~10 min on 2 idle cores; writes BENCHMARKS.md

Each seed runs ``experiments/ssl_ucf101.py --compare uniform,random-init --seed S --threads 1`` with every other
setting at its default (SyntheticActions, temporal order of 4 frames, tiny trunk, policy-gradient sampler), in its
own process, ``--jobs`` at a time. The table reports mean ± sample standard deviation over seeds of the test-split
metrics each run writes to metrics.json, the paired difference learned − uniform, and the wall time per stage.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT, machine_info, write_section

HEADING = "## SSL pretraining (experiments/ssl_ucf101.py)"
#: (row label, metrics.json prefix) of the three pretraining variants a run compares.
VARIANTS = (
    ("none (random init)", "random-init/"),
    ("uniform sampling", "uniform/"),
    ("learned sampler (policy-gradient)", ""),
)
COLUMNS = (
    ("held-out ordering acc", "ssl/val_accuracy"),
    ("fine-tuned top-1", "finetune/top1"),
    ("top-5", "finetune/top5"),
    ("retrieval top-1", "retrieval/top1"),
    ("top-5", "retrieval/top5"),
    ("top-10", "retrieval/top10"),
    ("top-20", "retrieval/top20"),
    ("top-50", "retrieval/top50"),
)
STAGES = (("pretraining", "time/ssl_s"), ("fine-tuning", "time/finetune_s"), ("evaluation", "time/eval_s"))


def run_seed(seed: int, out: Path) -> dict[str, float]:
    folder = out / f"seed{seed}"
    command = [sys.executable, str(ROOT / "experiments/ssl_ucf101.py"), "--compare", "uniform,random-init",
               "--seed", str(seed), "--threads", "1", "--no-progress", "--out", str(folder)]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads((folder / "metrics.json").read_text())


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def report(runs: list[dict[str, float]], seeds: int, jobs: int, minutes: float, machine: str) -> str:
    lines = [
        HEADING,
        "",
        f"Command: `python bench/ssl_pretraining.py --seeds {seeds} --jobs {jobs}` ({minutes:.1f} min). Machine: {machine}.",
        "Each seed: `python experiments/ssl_ucf101.py --compare uniform,random-init --seed S --threads 1` with the "
        "defaults (SyntheticActions, 600 clips of 60 classes: 480 training / 120 test videos; temporal order of 4 "
        "frames, K = 24; tiny trunk; 1,200 pretraining updates of 32 clips; fine-tuning on the training split; "
        "video-level top-1 over several windows; retrieval: test clips query training clips). The seed sets network "
        "initialisation, data order and sampler; the clips are the same. Mean ± sample std over seeds, in %; chance "
        "is 1.7 %.",
        "",
        "| pretraining | " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for label, prefix in VARIANTS:
        cells = []
        for _, key in COLUMNS:
            values = [r[prefix + key] for r in runs if prefix + key in r]
            cells.append(summary(values) if values else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for metric in ("finetune/top1", "retrieval/top1"):
        learned_vs_uniform = [r[metric] - r["uniform/" + metric] for r in runs]
        uniform_vs_random = [r["uniform/" + metric] - r["random-init/" + metric] for r in runs]
        pretrained_wins = sum(d > 0 for d in uniform_vs_random)
        wins = sum(d > 0 for d in learned_vs_uniform)
        lines.append(
            f"\nPaired differences in {metric}: uniform − random init {summary(uniform_vs_random)} points "
            f"(pretraining better on {pretrained_wins}/{len(runs)} seeds); learned − uniform "
            f"{summary(learned_vs_uniform)} points (learned better on {wins}/{len(runs)} seeds)."
        )
    top1 = {prefix: statistics.mean(r[prefix + "finetune/top1"] for r in runs) for _, prefix in VARIANTS}
    lines += [
        "",
        f"Targets: pretraining beats random init downstream — "
        f"{'met' if min(top1[''], top1['uniform/']) > top1['random-init/'] else 'NOT met'} on mean fine-tuned top-1; "
        f"learned sampler >= uniform — {'met' if top1[''] >= top1['uniform/'] else 'NOT met'} "
        "(compare the paired spread above before reading anything into a small gap).",
    ]
    lines += ["", f"Wall time per stage (seconds, mean over seeds; one torch thread, {jobs} run(s) at a time):", ""]
    lines += ["| run | " + " | ".join(name for name, _ in STAGES) + " |", "|---|" + "---:|" * len(STAGES)]
    for label, prefix in VARIANTS:
        cells = [
            f"{statistics.mean(r[prefix + key] for r in runs):.0f}" if prefix + key in runs[0] else "-"
            for _, key in STAGES
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: 5)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default: 2)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "runs/bench_ssl", help="run folders (default: runs/bench_ssl)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument("--report-only", action="store_true", help="re-read the runs' metrics.json, run nothing")
    args = parser.parse_args()
    machine, start = machine_info(), time.perf_counter()
    if args.report_only:
        runs = [json.loads((args.out / f"seed{s}/metrics.json").read_text()) for s in range(args.seeds)]
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda s: run_seed(s, args.out), range(args.seeds)))
    text = report(runs, args.seeds, args.jobs, (time.perf_counter() - start) / 60, machine)
    print(text)
    if not args.no_write:
        write_section(HEADING, text)


if __name__ == "__main__":
    main()
