"""Benchmark experiments/ssl_ucf101.py: random init vs uniform, stratified and learned sampling, several seeds.

    .venv/bin/python bench/ssl_pretraining.py --seeds 5 --jobs 2      # writes BENCHMARKS.md (its wall time is in the section)

Each seed runs ``experiments/ssl_ucf101.py --compare stratified,uniform,random-init --seed S --threads 1`` with
every other setting at its default (SyntheticActions, temporal order of 4 frames, tiny trunk, policy-gradient
sampler), in its own process, ``--jobs`` at a time. The seeds are held out (``--first-seed``, default 1000): the
policy-gradient sampler's defaults were chosen on seeds 0-4 by ``agents.evaluate``. The table reports mean ± 95 %
t-interval over seeds of the test-split metrics each run writes to metrics.json (retrieval: VCOP's multi-clip video
features, ``--retrieval-clips``), the paired differences between the variants (stratified sampling is the baseline
a learned sampler must beat), whether the targets are met (computed from the numbers), and the wall time per stage.
``--report-only`` rewrites the section from the runs already in ``--out``.
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

from agents.evaluate import mean_ci
from permgym.config import PermSamplingConfig
from permgym.trainer import build_tasks

HEADING = "## SSL pretraining (experiments/ssl_ucf101.py)"
#: (row label, metrics.json prefix) of the pretraining variants a run compares.
VARIANTS = (
    ("none (random init)", "random-init/"),
    ("uniform sampling", "uniform/"),
    ("stratified sampling (baseline)", "stratified/"),
    ("learned sampler (policy-gradient)", ""),
)
COMPARE = "stratified,uniform,random-init"
#: (label, better prefix, worse prefix) of the paired differences reported.
PAIRS = (
    ("uniform − random init", "uniform/", "random-init/"),
    ("stratified − random init", "stratified/", "random-init/"),
    ("learned − random init", "", "random-init/"),
    ("stratified − uniform", "stratified/", "uniform/"),
    ("learned − stratified", "", "stratified/"),
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
    command = [sys.executable, str(ROOT / "experiments/ssl_ucf101.py"), "--compare", COMPARE,
               "--seed", str(seed), "--threads", "1", "--no-progress", "--out", str(folder), "--overwrite"]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads((folder / "metrics.json").read_text())


def summary(values: list[float]) -> str:
    """Mean ± 95 % t-interval half-width, in percentage points."""
    mean, half = mean_ci(values)
    return f"{100 * mean:.1f} ± {100 * half:.1f}"


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
        f"Mean ± 95 % t-interval over seeds, in %; chance is {100 / classes:.1f} %."
    )


def paired(runs: list[dict[str, float]], metric: str, better: str, worse: str) -> tuple[str, str]:
    """``better − worse`` per seed for ``metric`` (prefixes of VARIANTS): its mean ± 95 % interval with the win
    count, and the verdict: "resolved" when the interval excludes zero, else "not resolved"."""
    diffs = [r[better + metric] - r[worse + metric] for r in runs]
    wins = sum(d > 0 for d in diffs)
    mean, half = mean_ci(diffs)
    verdict = ("ahead" if mean > 0 else "behind") if abs(mean) > half else "not resolved"
    return f"{summary(diffs)} points (higher on {wins}/{len(runs)} seeds)", f"{verdict} ({wins}/{len(runs)} seeds)"


def report(
    runs: list[dict[str, float]], config: dict[str, Any], seeds: list[int], jobs: int, minutes: float, machine: str
) -> str:
    lines = [
        HEADING,
        "",
        f"Command: `python bench/ssl_pretraining.py --seeds {len(seeds)} --first-seed {seeds[0]} --jobs {jobs}` "
        f"({minutes:.1f} min). Machine: {machine}.",
        f"Each seed: `python experiments/ssl_ucf101.py --compare {COMPARE} --seed S --threads 1` with the "
        f"defaults ({setup(runs, config)} Seeds {seeds[0]}-{seeds[-1]}, held out from the sampler's tuning (seeds "
        "0-4).",
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
    metrics = (("ssl/val_accuracy", "held-out ordering acc"), ("finetune/top1", "fine-tuned top-1"),
               ("retrieval/top1", "retrieval top-1"))  # fmt: skip
    lines += ["", "Paired differences on the same seeds (percentage points, mean ± 95 % interval; verdict: ahead / "
              "behind when the interval excludes zero):", "",
              "| difference | " + " | ".join(name for _, name in metrics) + " |", "|---|" + "---:|" * len(metrics)]  # fmt: skip
    verdicts: dict[tuple[str, str], str] = {}
    for label, better, worse in PAIRS:
        cells = []
        for metric, name in metrics:
            if better + metric not in runs[0] or worse + metric not in runs[0]:
                cells.append("-")
                continue
            text, verdict = paired(runs, metric, better, worse)
            cells.append(text)
            verdicts[label, name] = verdict
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    downstream = ("fine-tuned top-1", "retrieval top-1")

    def verdict_list(label: str) -> str:
        return ", ".join(f"{m} {verdicts[label, m]}" for m in downstream)

    over_random = [f"{label.split(' −')[0]}: {verdict_list(label)}" for label, _, w in PAIRS if w == "random-init/"]
    lines += [
        "",
        f"Targets, from the paired differences: pretraining beats random init downstream — {'; '.join(over_random)}. "
        f"The learned sampler beats stratified — {verdict_list('learned − stratified')}.",
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
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default: 5)")
    parser.add_argument("--first-seed", type=int, default=1000,
                        help="seeds first-seed..first-seed+N-1, held out from the samplers' tuning (default: 1000)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default: 2)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "runs/bench_ssl", help="run folders (default: runs/bench_ssl)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument("--report-only", action="store_true",
                        help="re-read the runs' metrics.json (and bench.json: duration, machine), run nothing")  # fmt: skip
    args = parser.parse_args()
    machine, start = machine_info(), time.perf_counter()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    timing = args.out / "bench.json"  # the runs' duration and machine, for --report-only
    if args.report_only:
        runs = [json.loads((args.out / f"seed{s}/metrics.json").read_text()) for s in seeds]
        if not timing.is_file():
            raise SystemExit(f"error: --report-only: no {timing} (written by a full run of this script)")
        timed = json.loads(timing.read_text())
        minutes, machine, jobs = timed["minutes"], timed["machine"], timed["jobs"]
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda s: run_seed(s, args.out), seeds))
        minutes, jobs = (time.perf_counter() - start) / 60, args.jobs
        timing.write_text(json.dumps({"minutes": minutes, "machine": machine, "jobs": jobs}))
    config = json.loads((args.out / f"seed{seeds[0]}/config.json").read_text())
    text = report(runs, config, seeds, jobs, minutes, machine)
    print(text)
    if not args.no_write:
        write_section(HEADING, text)


if __name__ == "__main__":
    main()
