"""Benchmark experiments/ssl_ucf101.py: random init vs uniform sampling vs the learned sampler, several seeds.

    .venv/bin/python bench/ssl_pretraining.py --seeds 5 --jobs 2      # writes BENCHMARKS.md (its wall time is in the section)

Each seed runs ``experiments/ssl_ucf101.py --compare uniform,random-init --seed S --threads 1`` with every other
setting at its default (SyntheticActions, temporal order of 4 frames, tiny trunk, policy-gradient sampler), in its
own process, ``--jobs`` at a time. The table reports mean ± sample standard deviation over seeds of the test-split
metrics each run writes to metrics.json (retrieval: VCOP's multi-clip video features, ``--retrieval-clips``), the
paired differences between the variants, whether the targets are met (computed from the numbers), and the wall time
per stage. ``--report-only`` rewrites the section from the runs already in ``--out``.
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
from typing import Any

from common import ROOT, machine_info, write_section

from permgym.config import PermSamplingConfig
from permgym.trainer import build_tasks

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
STAGES = (("pretraining", "time/ssl_s"), ("retrieval", "time/retrieval_s"), ("fine-tuning", "time/finetune_s"),
          ("evaluation", "time/eval_s"))  # fmt: skip


def run_seed(seed: int, out: Path) -> dict[str, float]:
    folder = out / f"seed{seed}"
    command = [sys.executable, str(ROOT / "experiments/ssl_ucf101.py"), "--compare", "uniform,random-init",
               "--seed", str(seed), "--threads", "1", "--no-progress", "--out", str(folder), "--overwrite"]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads((folder / "metrics.json").read_text())


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def setup(runs: list[dict[str, float]], config: dict[str, Any]) -> str:
    """The runs' setting, read from seed 0's config.json and the metrics (nothing here is typed in by hand)."""
    ssl, ft, args = config["ssl_config"], config["finetune_config"], config["args"]
    banks = {task: t.bank.size for task, t in build_tasks(PermSamplingConfig(**ssl)).items()}
    first = runs[0]
    classes, train, test = (int(first[f"data/{k}"]) for k in ("classes", "train_videos", "test_videos"))
    windows = {int(r["retrieval/windows"]) for r in runs if "retrieval/windows" in r}
    distinct = f"{windows.pop()} distinct" if len(windows) == 1 else "a varying number of distinct"
    return (
        f"SyntheticActions, {train + test} clips of {classes} classes: {train} training / {test} test videos of "
        f"{ssl['clip_frames']} frames; {ssl['task']} order of {ssl['num_frames']} frames, "
        + ", ".join(f"K = {k}" for k in banks.values())
        + f"; {ssl['trunk']} trunk; {int(first['ssl/updates']):,} pretraining updates of {ssl['batch_size']} clips "
        f"of the training videos; fine-tuning on the training split, video-level top-1 averaged over "
        f"{ft['test_clips']} windows; retrieval as in VCOP, with each variant's trunk before fine-tuning: a video's "
        f"feature is the mean of its clip features over {args['retrieval_clips']} evenly spaced windows "
        f"(`--retrieval-clips`; {distinct} windows fit these clips), and test videos query training videos by "
        f"cosine similarity). The seed sets network initialisation, data order and sampler; the clips are the same. "
        f"Mean ± sample std over seeds, in %; chance is {100 / classes:.1f} %."
    )


def paired(runs: list[dict[str, float]], metric: str, better: str, worse: str) -> tuple[str, str]:
    """``better − worse`` per seed for ``metric`` (prefixes of VARIANTS): its mean ± std with the win count, and
    whether ``better`` is ahead: "met" (mean gap above the paired std), "met on the mean only" (a positive gap within
    the paired std) or "NOT met"."""
    diffs = [r[better + metric] - r[worse + metric] for r in runs]
    wins = sum(d > 0 for d in diffs)
    mean, spread = statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    within = "; within the paired spread" if abs(mean) <= spread else ""
    verdict = "NOT met" if mean < 0 else "met on the mean only, within the paired spread" if within else "met"
    return (
        f"{summary(diffs)} points (higher on {wins}/{len(runs)} seeds{within})",
        f"{verdict} ({wins}/{len(runs)} seeds)",
    )


def report(
    runs: list[dict[str, float]], config: dict[str, Any], seeds: int, jobs: int, minutes: float, machine: str
) -> str:
    lines = [
        HEADING,
        "",
        f"Command: `python bench/ssl_pretraining.py --seeds {seeds} --jobs {jobs}` ({minutes:.1f} min). Machine: {machine}.",
        "Each seed: `python experiments/ssl_ucf101.py --compare uniform,random-init --seed S --threads 1` with the "
        f"defaults ({setup(runs, config)}",
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
    pretraining, learned = [], []
    for metric, name in (("finetune/top1", "fine-tuned top-1"), ("retrieval/top1", "retrieval top-1")):
        uniform_vs_random, uniform_beats_random = paired(runs, metric, "uniform/", "random-init/")
        learned_vs_random, learned_beats_random = paired(runs, metric, "", "random-init/")
        learned_vs_uniform, learned_beats_uniform = paired(runs, metric, "", "uniform/")
        lines.append(
            f"\nPaired differences in {name} (`{metric}`): uniform − random init {uniform_vs_random}; learned − "
            f"random init {learned_vs_random}; learned − uniform {learned_vs_uniform}."
        )
        pretraining.append(f"{name}: uniform {uniform_beats_random}, learned {learned_beats_random}")
        learned.append(f"{name}: {learned_beats_uniform}")
    lines += [
        "",
        f"Targets, from the paired differences: pretraining beats random init downstream — {'; '.join(pretraining)}. "
        f"The learned sampler >= uniform — {'; '.join(learned)}.",
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
    parser.add_argument("--report-only", action="store_true",
                        help="re-read the runs' metrics.json (and bench.json: duration, machine), run nothing")  # fmt: skip
    args = parser.parse_args()
    machine, start = machine_info(), time.perf_counter()
    timing = args.out / "bench.json"  # the runs' duration and machine, for --report-only
    if args.report_only:
        runs = [json.loads((args.out / f"seed{s}/metrics.json").read_text()) for s in range(args.seeds)]
        if not timing.is_file():
            raise SystemExit(f"error: --report-only: no {timing} (written by a full run of this script)")
        timed = json.loads(timing.read_text())
        minutes, machine, jobs = timed["minutes"], timed["machine"], timed["jobs"]
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda s: run_seed(s, args.out), range(args.seeds)))
        minutes, jobs = (time.perf_counter() - start) / 60, args.jobs
        timing.write_text(json.dumps({"minutes": minutes, "machine": machine, "jobs": jobs}))
    config = json.loads((args.out / "seed0/config.json").read_text())
    text = report(runs, config, args.seeds, jobs, minutes, machine)
    print(text)
    if not args.no_write:
        write_section(HEADING, text)


if __name__ == "__main__":
    main()
