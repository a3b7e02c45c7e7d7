"""Benchmark of the divide-and-conquer learner: K = 1 vs K = 4, and the time share of re-clustering.

Three stages, all running ``experiments/dc_transfer.py`` (one process per run; one thread each unless said):

1. **Selection.** For each K, every training budget of :data:`SCHEDULES` (12, 20 or 30 epochs of 20 batches, with
   the divide / conquer / fine-tune phases in fixed proportions) is trained with the selection seeds on validation
   data: SyntheticActions clips drawn with another seed (``--data-option seed=2``: other clips, the same class
   split). Each K keeps the budget with the best mean of R@1 and NMI. K = 1 gets the same choice, so a longer
   schedule cannot favour one side only.
2. **Evaluation.** The chosen schedule of each K, on held-out training seeds, on

   * the embedded data (SyntheticActions end frames, seed :data:`metric.data.synthetic.DEFAULT_SEED`, classes 0-29
     train / 30-59 test), and
   * a class-per-folder PNG tree written here (``--dataset folder``): the first frame of every clip of
     SyntheticActions with another seed, one image per clip (two frames of one clip share their background, so a
     clip's frames would find each other by background rather than by class), one folder per class, the first 30
     folders train, the last 30 test.

3. **Cost.** Two K = 4 runs with 2 threads in one process, each with the full re-clustering pass and with the
   features recorded by the training steps (``--frozen-bn --cluster-features cache``), for the re-clustering share.

The report gives R@1, NMI and MAP@R as mean ± std and median over seeds, the K=4/K=1 ratio of the medians, how many
seeds K=4 won, and the re-clustering share of the K=4 training time (target <= 10 %). It replaces the
``## Divide and conquer (bench/dc.py)`` section of BENCHMARKS.md (other sections stay) and goes to ``--out``.

    python bench/dc.py                        # 17-25 min on 2 CPU cores in the runs behind BENCHMARKS.md
    python bench/dc.py --seeds 1 --selection-seeds 1 --schedules 12 -- --iters-per-epoch 5   # a quick look
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ROOT, machine_info, write_section
from PIL import Image

from metric.data.synthetic import DEFAULT_SEED
from permgym.data.synthetic import SyntheticActions

SCRIPT = ROOT / "experiments" / "dc_transfer.py"
SECTION = "## Divide and conquer (bench/dc.py)"
METRICS = ("R@1", "NMI", "MAP@R")
LEARNERS = (1, 4)
# Training budgets: epochs of 20 batches, full embedding from 40-50 % (the reference code: 80 of 200 epochs), K = 1
# fine-tuning for the last 10-17 %. K = 1 ignores the phase flags. The init is pinned so that a later ssl_ucf101
# checkpoint (which --init auto would pick up) does not change the benchmark.
SCHEDULES = {
    12: "--epochs 12 --full-embedding-epoch 6 --finetune-epoch 10",
    20: "--epochs 20 --full-embedding-epoch 8 --finetune-epoch 17",
    30: "--epochs 30 --full-embedding-epoch 12 --finetune-epoch 27",
}
COMMON_ARGS = "--init random --iters-per-epoch 20 --eval-every 5 --projection pca".split()
VALIDATION_ARGS = ["--data-option", "seed=2"]
# Re-clustering cost with COST_THREADS threads in one process: the default full pass, and the features recorded by the
# training steps (needs frozen BatchNorm, which changes training: these runs are not in the K comparison).
COST_THREADS = 2
COST_VARIANTS = {"pass": [], "cache": "--frozen-bn --cluster-features cache".split()}
SELECTION_SEED = 100  # selection seeds are 100, 101, ...; evaluation seeds 0, 1, ...
FOLDER_ARGS = "--image-size 64 --resize 64 --augment none --workers 0".split()
FOLDER = {"frame": 0, "videos_per_class": 30, "seed": 1, "size": 64}


def write_folder_dataset(root: Path, frame: int, videos_per_class: int, seed: int, size: int) -> Path:
    """Write frame ``frame`` of 8-frame SyntheticActions clips as ``root/<label>_<motion>_<shape>/<clip>.png``.

    Folder names sort in label order, so ``--dataset folder`` trains on classes 0-29 and tests on 30-59. A finished
    tree (marked by ``root/done``) is reused.
    """
    if (root / "done").is_file():
        return root
    videos = SyntheticActions(num_classes=60, num_videos=60 * videos_per_class, frames=8, size=size, seed=seed)
    for i, (clip, label) in enumerate(zip(videos.clips, videos.labels.tolist(), strict=True)):
        folder = root / f"{label:02d}_{videos.class_names[label].replace('/', '_')}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(clip[frame].permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    (root / "done").write_text("ok\n")
    return root


def run(name: str, argv: list[str], out: Path, threads: int = 1) -> dict:
    """One dc_transfer.py process; returns the metrics of its single K with the wall time."""
    start = time.perf_counter()
    cmd = [
        sys.executable,
        str(SCRIPT),
        *argv,
        "--out",
        str(out),
        "--overwrite",
        "--no-progress",
        "--threads",
        str(threads),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    (metrics,) = json.loads((out / "metrics.json").read_text())["runs"].values()
    print(
        f"{name}: R@1 {metrics['R@1']:.4f} NMI {metrics['NMI']:.4f} MAP@R {metrics['MAP@R']:.4f} "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    return {**metrics, "wall_seconds": time.perf_counter() - start}


def run_all(jobs: list[tuple[str, list[str], Path]], workers: int, threads: int = 1) -> dict[str, dict]:
    """Run ``(name, argv, out)`` jobs, ``workers`` at a time, ``threads`` each; ``name`` -> metrics."""
    with ThreadPoolExecutor(workers) as pool:
        runs = pool.map(lambda job: run(*job, threads=threads), jobs)
        return dict(zip([name for name, _, _ in jobs], runs, strict=True))


def job_name(stage: str, k: int, epochs: int, seed: int) -> str:
    return f"{stage} K={k} {epochs}ep seed={seed}"


def select_schedules(results: dict[str, dict], schedules: list[int], seeds: list[int]) -> dict[int, int]:
    """For each K, the budget (epochs) with the best mean of (R@1 + NMI) / 2 over the selection seeds."""

    def score(k: int, epochs: int) -> float:
        runs = [results[job_name("validation", k, epochs, s)] for s in seeds]
        return statistics.mean((r["R@1"] + r["NMI"]) / 2 for r in runs)

    return {k: max(schedules, key=lambda epochs: score(k, epochs)) for k in LEARNERS}


def _summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f} ({100 * statistics.median(values):.2f})"


def selection_table(results: dict[str, dict], schedules: list[int], seeds: list[int], chosen: dict[int, int]) -> str:
    lines = ["| K | epochs | R@1 mean ± std (median), % | NMI | MAP@R | chosen |", "|---|---|---|---|---|---|"]
    for k in LEARNERS:
        for epochs in schedules:
            runs = [results[job_name("validation", k, epochs, s)] for s in seeds]
            cells = " | ".join(_summary([r[m] for r in runs]) for m in METRICS)
            lines.append(f"| {k} | {epochs} | {cells} | {'yes' if chosen[k] == epochs else ''} |")
    return "\n".join(lines)


def cost_summary(results: dict[str, dict], meta: dict[str, Any], epochs: int) -> str:
    """Sentences on the re-clustering share with all threads to one process, full pass vs recorded features."""

    def percents(how: str, key: str) -> str:
        return ", ".join(f"{100 * results[job_name(f'cost-{how}', 4, epochs, s)][key]:.1f}" for s in meta["cost_seeds"])

    seeds = ", ".join(map(str, meta["cost_seeds"]))
    return (
        f"One process with {COST_THREADS} threads (embedded data, seeds {seeds}): {percents('pass', 'recluster_share')} "
        "% with the full pass; "
        f"{percents('cache', 'recluster_share')} % with `{' '.join(COST_VARIANTS['cache'])}` (k-means on the "
        "features the training steps computed, an eval pass only over the samples no step has seen; frozen "
        f"BatchNorm changes training: R@1 {percents('cache', 'R@1')} %, NMI {percents('cache', 'NMI')} %, not part "
        "of the comparison above)."
    )


def report(results: dict[str, dict], meta: dict[str, Any]) -> str:
    """The BENCHMARKS.md section for ``results`` (job name -> metrics) and the run's ``meta`` (see :func:`main`)."""
    setups, schedules, chosen = meta["setups"], meta["schedules"], {int(k): e for k, e in meta["chosen"].items()}
    selection_seeds, seeds = meta["selection_seeds"], meta["seeds"]
    rows, shares, ratios, unresolved = [], [], {}, []
    for setup in setups:
        k1 = [results[job_name(setup, 1, chosen[1], s)] for s in seeds]
        k4 = [results[job_name(setup, 4, chosen[4], s)] for s in seeds]
        shares += [r["recluster_share"] for r in k4]
        for metric in METRICS:
            a, b = [r[metric] for r in k1], [r[metric] for r in k4]
            ratio = ratios[setup, metric] = statistics.median(b) / max(statistics.median(a), 1e-12)
            wins = sum(x > y for x, y in zip(b, a, strict=True))
            paired = [y - x for x, y in zip(a, b, strict=True)]
            if len(paired) > 1 and abs(statistics.mean(paired)) <= statistics.stdev(paired):
                unresolved.append(f"{setup} {metric}")
            diff = _summary(paired)
            rows.append(
                f"| {setup} | {metric} | {_summary(a)} | {_summary(b)} | {diff} | {ratio:.3f} | {wins}/{len(seeds)} |"
            )
    met = all(ratios[s, m] > 1 for s in setups for m in ("R@1", "NMI"))
    return "\n".join(
        [
            SECTION,
            "",
            f"Machine: {meta['machine']}; every run is one process with 1 thread, two at a time (a shared machine: times are "
            f"noisy). Wall time of the whole bench: {meta['minutes']:.1f} min.",
            "",
            f"Command: `{meta['command']}`. Every run is `experiments/dc_transfer.py -K k --seed S {' '.join(COMMON_ARGS)}` "
            "plus a schedule (other settings at their defaults: tiny trunk, d = 128, batches of 80 = 20 classes x 4, "
            "margin loss with distance-weighted sampling, Adam 1e-3, re-clustering every 2 epochs on the embedding) "
            "and reports its final epoch (no test-set selection). Schedules: "
            + "; ".join(f"{e} epochs `{SCHEDULES[e]}`" for e in schedules)
            + ".",
            "",
            f"**Selection** (seeds {', '.join(map(str, selection_seeds))}; validation data = the embedded data drawn "
            "with SyntheticActions seed 2: other clips than the evaluation's, the same class split). Each K keeps the "
            "budget with the best mean of R@1 and NMI:",
            "",
            selection_table(results, schedules, selection_seeds, chosen),
            "",
            f"**Evaluation** (held-out seeds {', '.join(map(str, seeds))}; K = 1 trained {chosen[1]} epochs, K = 4 "
            f"{chosen[4]} epochs). Embedded = SyntheticActions last frames (seed {DEFAULT_SEED}, 40 clips per class, "
            "1200 train / 1200 test images); folder = PNG tree of the first frames of 30 clips per class (SyntheticActions seed 1, "
            f"900 / 900 images), `--dataset folder {' '.join(FOLDER_ARGS)}`.",
            "",
            "| data | metric | K=1 mean ± std (median), % | K=4 mean ± std (median), % | K=4 − K=1 paired, points "
            "| K=4/K=1 (medians) | K=4 wins |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Re-clustering (feature pass + k-means) share of the K = 4 training time: median "
            f"{100 * statistics.median(shares):.1f} %, max {100 * max(shares):.1f} % over the runs (target <= 10 %). "
            + cost_summary(results, meta, chosen[4]),
            "",
            "Target K = 4 above K = 1 on R@1 and NMI (medians): "
            + ("met" if met else "not met")
            + " ("
            + "; ".join(f"{s}: R@1 x{ratios[s, 'R@1']:.3f}, NMI x{ratios[s, 'NMI']:.3f}" for s in setups)
            + "). Paired differences no larger than their std over seeds: "
            + (", ".join(unresolved) if unresolved else "none")
            + ".",
            "",
            "Disclosure: an earlier version of this benchmark trained one fixed 12-epoch schedule (3 seeds) and found "
            "K = 4 below K = 1 on R@1 (medians x0.93 embedded, x0.88 folder). The selection stage was added after "
            "that result; it lets both K choose among the same budgets on validation data, and the evaluation "
            "seeds and data were not used to choose anything. The 12-epoch rows of the selection table show the "
            "earlier finding again. Before the embedded data's default seed moved from 0 to 3 (so that no test image "
            "comes from a video ssl_ucf101 pretrains on), these three stages measured K = 4 above K = 1 on the "
            "embedded data (R@1 x1.092, 4/5 seeds; NMI x1.072, 5/5 seeds): on that data, the K comparison depends "
            "on which clips are drawn.",
            "",
            "The regime differs from the paper's: a batch holds 20 of the 30 training classes here (on SOP, 20 of "
            "11,318), so a batch drawn from one cluster can hold only slightly harder negatives than a batch drawn from all "
            "the data, and harder negatives are what the clusters are for. That may limit what divide and conquer "
            "can add at this scale; this benchmark does not test it.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="K = 1 vs K = 4 divide and conquer, and the re-clustering share")
    parser.add_argument("--seeds", type=int, default=5, help="held-out evaluation seeds per dataset (default: 5)")
    parser.add_argument("--selection-seeds", type=int, default=2, help="seeds per selection run (default: 2)")
    parser.add_argument(
        "--schedules",
        default=",".join(map(str, SCHEDULES)),
        help=f"training budgets (epochs) to select from, among {', '.join(map(str, SCHEDULES))} (default: all)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time, 1 thread each (default: 2)")
    parser.add_argument("--out", default="runs/bench_dc", help="output folder (default: runs/bench_dc)")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument("--report-only", action="store_true", help="re-read --out/results.json, run nothing")
    parser.add_argument("train_args", nargs="*", help="extra dc_transfer.py flags, after --")
    args = parser.parse_args()
    out = Path(args.out)
    if args.report_only:
        saved = json.loads((out / "results.json").read_text())
        results, meta = saved["runs"], saved["meta"]
    else:
        results, meta = benchmark(args, parser)
        (out / "results.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=2))
    text = report(results, meta)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


def benchmark(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[dict[str, dict], dict[str, Any]]:
    """Run the selection and the evaluation stages; returns the runs' metrics and what :func:`report` needs."""
    schedules = [int(e) for e in args.schedules.split(",")]
    unknown = set(schedules) - set(SCHEDULES)
    if unknown:
        parser.error(f"unknown schedules {sorted(unknown)}; choose among {list(SCHEDULES)}")
    out = Path(args.out)
    start, machine = time.perf_counter(), machine_info()

    def job(stage: str, k: int, epochs: int, seed: int, data: list[str]) -> tuple[str, list[str], Path]:
        argv = ["-K", str(k), "--seed", str(seed), *data, *COMMON_ARGS, *SCHEDULES[epochs].split(), *args.train_args]
        return job_name(stage, k, epochs, seed), argv, out / stage / f"K{k}_{epochs}ep_s{seed}"

    selection_seeds = [SELECTION_SEED + i for i in range(args.selection_seeds)]
    selection = [
        job("validation", k, e, s, VALIDATION_ARGS) for k in LEARNERS for e in schedules for s in selection_seeds
    ]
    results = run_all(selection, args.jobs)
    chosen = select_schedules(results, schedules, selection_seeds)
    print(f"chosen budgets (epochs): {chosen}", flush=True)

    folder = write_folder_dataset(out / "folder_data", **FOLDER)
    setups = {"embedded": [], "folder": ["--dataset", "folder", "--root", str(folder), *FOLDER_ARGS]}
    seeds = list(range(args.seeds))
    evaluation = [job(setup, k, chosen[k], s, data) for setup, data in setups.items() for s in seeds for k in LEARNERS]
    results.update(run_all(evaluation, args.jobs))
    # the re-clustering share with all cores to one process, for the full pass and for the cached features
    cost_seeds = seeds[:2]
    cost = [job(f"cost-{how}", 4, chosen[4], s, extra) for s in cost_seeds for how, extra in COST_VARIANTS.items()]
    results.update(run_all(cost, 1, threads=COST_THREADS))
    command = " ".join(
        ["python bench/dc.py", f"--seeds {args.seeds} --selection-seeds {args.selection_seeds}"]
        + [f"--schedules {args.schedules}"] * (args.schedules != parser.get_default("schedules"))
        + (["--", *args.train_args] if args.train_args else [])
    )
    meta = {
        "setups": list(setups),
        "schedules": schedules,
        "selection_seeds": selection_seeds,
        "seeds": seeds,
        "cost_seeds": cost_seeds,
        "chosen": chosen,
        "command": command,
        "minutes": (time.perf_counter() - start) / 60,
        "machine": machine,
    }
    return results, meta


if __name__ == "__main__":
    main()
