"""Benchmark experiments/image_transfer.py on the embedded data: random init vs ordering-pretrained trunks, seeds.

    .venv/bin/python bench/image_transfer.py --seeds 3 --epochs 10      # writes BENCHMARKS.md

Trunks: random init, and the tiny trunks that ``experiments/ssl_ucf101.py`` pretrains with the spatial (2x2 jigsaw)
and the joint (temporal + spatial) task, each with the uniform and the learned (policy-gradient) sampler. On the 2
shared CPU cores the pretraining is ``--quick``-sized (``--ssl-updates``, default 600 of the default 1200 updates;
seed 0), run once per trunk and reused from ``--out`` when present. Then every trunk is transferred with
``experiments/image_transfer.py --init ... --seed S --epochs E --threads 1`` for each seed (the seed draws the
fine-tuning order, views, dropout, the new layer and, for random init, the trunk), one run at a time. The table gives
mean ± sample standard deviation over the seeds of the fine-tuned and linear-probe mAP (VOC 2007 11-point) and of
the area under the PR curve, the paired difference to random init of the same seed (mean and 95 % t-interval), and
the wall time.
Runs already in ``--out`` (a ``metrics.json``) are reused, so a rerun only rewrites the section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, machine_info, write_section
from scipy.stats import t as student_t

HEADING = "## Image-classification transfer (bench/image_transfer.py)"
TRUNKS = ("random", "spatial/uniform", "spatial/policy-gradient", "joint/uniform", "joint/policy-gradient")
COLUMNS = (("fine-tuned mAP", "mAP"), ("mAP (AUC)", "mAP_auc"), ("probe mAP", "probe/mAP"),
           ("probe mAP (AUC)", "probe/mAP_auc"))  # fmt: skip


def pretrain(trunk: str, out: Path, updates: int) -> Path:
    """The ssl_ucf101 trunk of ``trunk`` ("task/sampler"), pretrained into ``out`` unless it is there."""
    task, sampler = trunk.split("/")
    folder = out / f"ssl_{task}_{sampler}"
    if not (folder / "trunk.pth").is_file():
        command = [sys.executable, str(ROOT / "experiments/ssl_ucf101.py"), "--quick", "--task", task, "--sampler",
                   sampler, "--ssl-updates", str(updates), "--ft-epochs", "1", "--test-clips", "1",
                   "--retrieval-clips", "1", "--threads", "1", "--no-progress", "--seed", "0", "--out", str(folder)]  # fmt: skip
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder / "trunk.pth"


def transfer(trunk: str, seed: int, out: Path, epochs: int, updates: int) -> dict[str, float]:
    folder = out / trunk.replace("/", "_") / f"seed{seed}"
    if not (folder / "metrics.json").is_file():
        init = "random" if trunk == "random" else f"ssl:{pretrain(trunk, out, updates)}"
        command = [sys.executable, str(ROOT / "experiments/image_transfer.py"), "--init", init, "--seed", str(seed),
                   "--epochs", str(epochs), "--threads", "1", "--no-progress", "--out", str(folder)]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        (folder / "wall.json").write_text(json.dumps({"wall_s": time.perf_counter() - start}))
    metrics = json.loads((folder / "metrics.json").read_text())
    return {**metrics, "wall_s": json.loads((folder / "wall.json").read_text())["wall_s"]}


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def paired(values: list[float], baseline: list[float]) -> str:
    """Mean paired difference (points) with its 95 % t-interval."""
    diffs = [a - b for a, b in zip(values, baseline, strict=True)]
    if len(diffs) < 2:
        return f"{100 * diffs[0]:+.2f}"
    half = student_t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{100 * statistics.mean(diffs):+.2f} [{100 * (statistics.mean(diffs) - half):+.2f}, " \
           f"{100 * (statistics.mean(diffs) + half):+.2f}]"  # fmt: skip


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace, command: str, wall: float) -> str:
    seeds = len(results["random"])
    lines = [
        HEADING,
        "",
        f"Command: `{command}` ({seeds} seeds; 1 torch thread per run, runs one at a time). Machine: {machine_info()}.",
        "",
        f"Embedded SyntheticObjects (8 shape classes, 1-3 objects per image, 1,200 trainval / 600 test images, 32 px "
        f"views), tiny trunk, {args.epochs} fine-tuning epochs (the CLI default is 20), linear probe 100 epochs. SSL "
        f"trunks: experiments/ssl_ucf101.py --quick with {args.ssl_updates} pretraining updates (seed 0; the "
        "stratified sampler is not on main yet). mAP = VOC 2007 11-point AP averaged over the classes; AUC = area "
        "under the PR curve. Mean ± standard deviation over seeds, in points; paired difference to random init of "
        "the same seed: mean [95 % t-interval].",
        "",
        "| trunk | " + " | ".join(name for name, _ in COLUMNS) + " | Δ fine-tuned mAP | Δ probe mAP | wall s/run |",
        "|---|" + "---:|" * (len(COLUMNS) + 3),
    ]
    base = results["random"]
    for trunk, runs in results.items():
        cells = [summary([r[key] for r in runs]) for _, key in COLUMNS]
        deltas = ["-", "-"] if trunk == "random" else [
            paired([r[key] for r in runs], [b[key] for b in base]) for key in ("mAP", "probe/mAP")
        ]  # fmt: skip
        wall_s = statistics.mean(r["wall_s"] for r in runs)
        lines.append(f"| {trunk} | " + " | ".join(cells + deltas) + f" | {wall_s:.0f} |")
    best = max((t for t in results if t != "random"), key=lambda t: statistics.mean(r["mAP"] for r in results[t]))
    diffs = [a["mAP"] - b["mAP"] for a, b in zip(results[best], base, strict=True)]
    lines += ["", f"Best ssl trunk by fine-tuned mAP: {best}, {100 * statistics.mean(diffs):+.2f} points over random "
              f"init (paired). This invocation's wall time {wall / 60:.1f} min (runs and trunks already in the run folder are reused)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds 0..N-1 (default: 3)")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default: 10)")
    parser.add_argument("--ssl-updates", type=int, default=600, help="pretraining updates per trunk (default: 600)")
    parser.add_argument("--out", default=str(ROOT / "runs/bench_image_transfer"), help="run folder")
    args = parser.parse_args()
    out = Path(args.out)
    start = time.perf_counter()
    results = {trunk: [transfer(trunk, s, out, args.epochs, args.ssl_updates) for s in range(args.seeds)]
               for trunk in TRUNKS}  # fmt: skip
    command = (
        f"python bench/image_transfer.py --seeds {args.seeds} --epochs {args.epochs} --ssl-updates {args.ssl_updates}"
    )
    text = report(results, args, command, time.perf_counter() - start)
    print(text)
    write_section(HEADING, text)


if __name__ == "__main__":
    main()
