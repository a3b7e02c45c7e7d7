"""Benchmark experiments/image_transfer.py on the embedded data: random init vs ordering-pretrained trunks, seeds.

    .venv/bin/python bench/image_transfer.py --seeds 3 --epochs 10      # writes BENCHMARKS.md

Trunks: random init, and the tiny trunks that ``experiments/ssl_ucf101.py`` pretrains with the spatial (2x2 jigsaw)
and the joint (temporal + spatial) task, each with the samplers ``uniform``, ``stratified`` and ``policy_gradient``
(the learned one; names as in ``agents.registry``). On the 2 shared CPU cores the pretraining is ``--quick``-sized
(``--ssl-updates``, default 600 of the default 1200 updates; seed 0), run once per trunk. Then every trunk is
transferred with ``experiments/image_transfer.py --init ... --seed S --epochs E --threads 1`` for each seed (the seed
draws the fine-tuning order, views, dropout, the new layer and, for random init, the trunk), one run at a time. The
table gives mean ± sample standard deviation over the seeds of the fine-tuned and linear-probe mAP (VOC 2007
11-point) and of the area under the PR curve, the paired difference to random init of the same seed (mean and 95 %
t-interval), and the wall time; a second table pairs the samplers (stratified - uniform, policy_gradient -
stratified) per task.

Runs and trunks already in ``--out`` are reused only when provably the same configuration: the flags recorded in their
``config.json`` equal the ones this script passes (``--out``/``--overwrite`` aside) and, for a transfer run, the trunk
file it read still exists, is byte-identical to the current trunk and is older than the run. Anything else is
recomputed (``--overwrite``). Code changes are not detected: after one that alters results, use a fresh ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, machine_info, write_section
from scipy.stats import t as student_t

from permgym.data.synthetic_images import SyntheticObjects

HEADING = "## Image-classification transfer (bench/image_transfer.py)"
TASKS = ("spatial", "joint")
SAMPLERS = ("uniform", "stratified", "policy_gradient")  # as registered in agents.registry
CONTRASTS = (("stratified", "uniform"), ("policy_gradient", "stratified"))  # paired: first minus second
COLUMNS = (("fine-tuned mAP", "mAP"), ("mAP (AUC)", "mAP_auc"), ("probe mAP", "probe/mAP"),
           ("probe mAP (AUC)", "probe/mAP_auc"))  # fmt: skip


def recorded_flags(folder: Path) -> list[str] | None:
    """The flags of the finished run in ``folder`` less ``--out DIR`` and ``--overwrite`` (None: no finished run)."""
    if not ((folder / "config.json").is_file() and (folder / "metrics.json").is_file()):
        return None
    command, flags = json.loads((folder / "config.json").read_text())["command"][1:], []
    while command:
        flag = command.pop(0)
        if flag == "--out":
            command.pop(0)
        elif flag != "--overwrite":
            flags.append(flag)
    return flags


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_trunk(recorded: list[str], flags: list[str], folder: Path) -> bool:
    """Whether a run started with ``recorded`` read the trunk that ``flags`` name (``--init ssl:PATH``).

    True when the file it read still exists, is byte-identical to the current one and was not written after the run.
    """
    (old,), (new,) = ([f[i + 1] for i in range(len(f) - 1) if f[i] == "--init"] for f in (recorded, flags))
    if not (old.startswith("ssl:") and new.startswith("ssl:")):
        return old == new
    old_path, new_path = Path(old.removeprefix("ssl:")), Path(new.removeprefix("ssl:"))
    return (
        old_path.is_file()
        and old_path.stat().st_mtime <= (folder / "config.json").stat().st_mtime
        and digest(old_path) == digest(new_path)
    )


def without_init(flags: list[str]) -> list[str]:
    return [f for i, f in enumerate(flags) if f != "--init" and (i == 0 or flags[i - 1] != "--init")]


def launch(script: str, flags: list[str], folder: Path, reusable: bool) -> None:
    """Run ``script`` with ``flags`` into ``folder`` unless the run there is ``reusable``; say why it reruns."""
    if reusable:
        return
    if (folder / "metrics.json").is_file():
        print(f"{folder}: recorded configuration differs from {flags}, recomputing", flush=True)
    command = [sys.executable, str(ROOT / script), *flags, "--overwrite", "--out", str(folder)]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    (folder / "wall.json").write_text(json.dumps({"wall_s": time.perf_counter() - start}))


def pretrain(trunk: str, out: Path, updates: int) -> Path:
    """The ssl_ucf101 trunk of ``trunk`` ("task/sampler"), pretrained into ``out`` unless the same run is there."""
    task, sampler = trunk.split("/")
    folder = out / f"ssl_{task}_{sampler}"
    flags = ["--quick", "--task", task, "--sampler", sampler, "--ssl-updates", str(updates), "--ft-epochs", "1",
             "--test-clips", "1", "--retrieval-clips", "1", "--threads", "1", "--no-progress", "--seed", "0"]  # fmt: skip
    launch("experiments/ssl_ucf101.py", flags, folder, same_pretraining(folder, flags))
    return folder / "trunk.pth"


def same_pretraining(folder: Path, flags: list[str]) -> bool:
    """Whether ``folder`` holds a finished pretraining run started with ``flags`` and its trunk."""
    return recorded_flags(folder) == flags and (folder / "trunk.pth").is_file()


def same_transfer(folder: Path, flags: list[str]) -> bool:
    """Whether ``folder`` holds a finished, timed transfer run started with ``flags`` from the same trunk."""
    recorded = recorded_flags(folder)
    return (
        recorded is not None
        and without_init(recorded) == without_init(flags)
        and same_trunk(recorded, flags, folder)
        and (folder / "wall.json").is_file()
    )


def transfer(trunk: str, seed: int, out: Path, epochs: int, updates: int) -> dict[str, float]:
    """Metrics (and wall time) of ``trunk`` transferred with ``seed``, run into ``out`` unless the same run is there."""
    folder = out / trunk.replace("/", "_") / f"seed{seed}"
    init = "random" if trunk == "random" else f"ssl:{pretrain(trunk, out, updates)}"
    flags = ["--init", init, "--seed", str(seed), "--epochs", str(epochs), "--threads", "1", "--no-progress"]
    launch("experiments/image_transfer.py", flags, folder, same_transfer(folder, flags))
    metrics = json.loads((folder / "metrics.json").read_text())
    return {**metrics, "wall_s": json.loads((folder / "wall.json").read_text())["wall_s"]}


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def interval(values: list[float], baseline: list[float]) -> tuple[float, float, float]:
    """Mean paired difference and its 95 % t-interval (the mean twice with one seed)."""
    diffs = [a - b for a, b in zip(values, baseline, strict=True)]
    half = student_t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0
    return statistics.mean(diffs), statistics.mean(diffs) - half, statistics.mean(diffs) + half


def paired(values: list[float], baseline: list[float]) -> str:
    """Mean paired difference (points) with its 95 % t-interval."""
    mean, low, high = interval(values, baseline)
    return f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def chance_map() -> float:
    """mAP of uninformative (constant) scores on the test split: the mean share of positives per class."""
    targets = SyntheticObjects("test").targets
    return float(((targets == 1).sum(0) / (targets != 0).sum(0)).mean())


def report(
    results: dict[str, list[dict[str, float]]], args: argparse.Namespace, command: str, wall: float, out: Path
) -> str:
    seeds = len(results["random"])
    lines = [
        HEADING,
        "",
        f"Command: `{command}` ({seeds} seeds; 1 torch thread per run, runs one at a time). Machine: {machine_info()}.",
        "",
        f"Embedded SyntheticObjects (8 shape classes, 1-3 objects per image, 1,200 trainval / 600 test images, 32 px "
        f"views), tiny trunk, {args.epochs} fine-tuning epochs (the CLI default is 20), linear probe 100 epochs. SSL "
        f"trunks: experiments/ssl_ucf101.py --quick --task TASK --sampler SAMPLER with {args.ssl_updates} pretraining "
        "updates (seed 0; samplers as registered in agents.registry, policy_gradient = the learned one). mAP = VOC 2007 11-point AP averaged over the classes; AUC = area "
        "under the PR curve. Mean ± standard deviation over seeds, in points; paired difference to random init of "
        "the same seed: mean [95 % t-interval]. Each ssl row is one pretrained trunk (pretraining seed 0): the "
        "intervals cover the fine-tuning seeds only, not the spread between pretraining runs, and are not corrected "
        "for the number of comparisons.",
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
    pairs = [(trunk, "random") for trunk in results if trunk != "random"]
    lines += ["", "Paired sampler differences (same task, same fine-tuning seed; points, mean [95 % t-interval]):", "",
              "| task | difference | Δ fine-tuned mAP | Δ probe mAP |", "|---|---|---:|---:|"]  # fmt: skip
    for task in TASKS:
        for first, second in (c for c in CONTRASTS if set(c) <= set(args.samplers)):
            runs, others = results[f"{task}/{first}"], results[f"{task}/{second}"]
            deltas = [paired([r[key] for r in runs], [o[key] for o in others]) for key in ("mAP", "probe/mAP")]
            lines.append(f"| {task} | {first} - {second} | " + " | ".join(deltas) + " |")
            pairs.append((f"{task}/{first}", f"{task}/{second}"))
    resolved = []
    for first, second in pairs:
        for name, key in (("fine-tuned", "mAP"), ("probe", "probe/mAP")):
            mean, low, high = interval([r[key] for r in results[first]], [b[key] for b in results[second]])
            if low > 0 or high < 0:
                resolved.append(f"{first} - {second} {name} {100 * mean:+.2f}")
    verdict = ("Paired differences whose 95 % interval excludes 0: " + "; ".join(resolved) + ".") if resolved \
        else "No paired difference is resolved (every 95 % interval contains 0)."  # fmt: skip
    runs_min = sum(r["wall_s"] for runs in results.values() for r in runs) / 60
    ssl_min = sum(json.loads((out / f"ssl_{t.replace('/', '_')}" / "metrics.json").read_text())["time/total_s"]
                  for t in results if t != "random") / 60  # fmt: skip
    lines += ["", f"Chance (constant scores): mAP {100 * chance_map():.2f}. {verdict} Wall times include the machine's "
              f"load (shared cores): transfer runs {runs_min:.1f} min in all, ssl_ucf101 pretraining (with its short "
              f"fine-tuning) {ssl_min:.1f} min; this invocation {wall / 60:.1f} min (runs and trunks of the same "
              "configuration already in the run folder are reused)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds 0..N-1 (default: 3)")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default: 10)")
    parser.add_argument("--ssl-updates", type=int, default=600, help="pretraining updates per trunk (default: 600)")
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS),
                        help="ssl samplers, each with both tasks (default: all)")  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "runs/bench_image_transfer"), help="run folder")
    args = parser.parse_args()
    out = Path(args.out)
    start = time.perf_counter()
    results = {trunk: [transfer(trunk, s, out, args.epochs, args.ssl_updates) for s in range(args.seeds)]
               for trunk in ("random", *(f"{task}/{sampler}" for task in TASKS for sampler in args.samplers))}  # fmt: skip
    command = (
        f"python bench/image_transfer.py --seeds {args.seeds} --epochs {args.epochs} --ssl-updates {args.ssl_updates}"
        + ("" if args.samplers == list(SAMPLERS) else f" --samplers {' '.join(args.samplers)}")
    )
    text = report(results, args, command, time.perf_counter() - start, out)
    print(text)
    write_section(HEADING, text)


if __name__ == "__main__":
    main()
