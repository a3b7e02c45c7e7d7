"""Why does K > 1 lose to K = 1 in bench/dc.py's many-class regime? An ablation on validation data only.

Every run is bench/dc.py's (:func:`dc.run`: ``experiments/dc_transfer.py --dataset shapes`` with
:data:`dc.COMMON_ARGS`, 8 epochs of :data:`dc.SCHEDULES`, one process with one thread, one at a time) on its
validation data (the generator with seed 1) and its selection seed, changing one thing per :data:`VARIANTS` entry:

- ``pretrained``: the paper starts from ImageNet, features of *other* classes whose clusters already follow the
  data's structure. Here a K = 1 trunk is first trained (8 epochs) on the classes of another generator seed
  (:data:`SOURCE_SEED`, neither the validation's nor the evaluation's classes), and every K starts from it
  (``--init ssl:<its trunk.pth>``).
- ``pretrained, per image``: the same with every image clustered on its own (``--cluster-images-per-class 0``), as
  the paper.
- ``pretrained, frozen BN``: the same with the trunk's BatchNorm statistics frozen (``--frozen-bn``, as the paper):
  in train mode a single-cluster batch is normalised by its own cluster's statistics, at test time by the global
  ones.
- ``per image``, ``no warm-up``, ``16 epochs``: from random init, each one change to bench/dc.py's setting.
- ``no slices``: the loss on the full embedding right after the warm-up (batches still from one cluster each): is it
  the learner slices or the per-cluster batches that cost?

K = 1 ignores warm-up and clustering flags, so variants that change only those share the K = 1 run of the variant
they change (``reference``). Only a variant whose K > 1 beats its K = 1 here is worth ``--evaluate VARIANT``: its
K = 1 and K > 1 on bench/dc.py's held-out seeds and evaluation data (generator seed 0), with paired differences.

Runs already in ``--out/results.json`` are not run again (delete ``--out`` to start over); the section of
BENCHMARKS.md is rewritten from all of them (``--out/meta.json`` keeps the variants run so far).

    python bench/dc_ablation.py                                  # about 20 min on a busy 2-core CPU
    python bench/dc_ablation.py --variants 16-epochs             # add a variant
    python bench/dc_ablation.py --evaluate pretrained --seeds 3  # held-out seeds of a variant that won
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from common import machine_info, write_section
from dc import COMMON_ARGS, SCHEDULES, SELECTION_SEED, STAGE_ARGS, comparison_table, run

SECTION = "## Divide and conquer: why K > 1 loses (bench/dc_ablation.py)"
SOURCE_SEED = 2  # generator seed of the pretraining classes: not validation's (1), not evaluation's (0)
BUDGET = 8  # epochs of bench/dc.py's chosen budget (every K chose 8 there)
METRICS = ("R@1", "NMI", "MAP@R")


@dataclass(frozen=True)
class Variant:
    """One change to bench/dc.py's setting: its K values, extra dc_transfer flags, and the K = 1 it compares with."""

    description: str
    learners: tuple[int, ...]
    args: tuple[str, ...] = ()
    pretrained: bool = False
    reference: str | None = None  # the variant whose K = 1 run this one shares (None: its own K = 1 is in learners)


VARIANTS = {
    "baseline": Variant("bench/dc.py's setting: random init, 1 warm-up epoch, classes from 2 images each", (1, 4)),
    "pretrained": Variant("trunk pretrained (K = 1) on other classes, otherwise the baseline", (1, 4, 8), (), True),
    "pretrained-per-image": Variant(
        "pretrained, every image clustered (the paper)", (4,), ("--cluster-images-per-class", "0"), True, "pretrained"
    ),
    "pretrained-frozen-bn": Variant(
        "pretrained, backbone BatchNorm statistics frozen (the paper's --frozen-bn): a train-mode BatchNorm normalises "
        "each single-cluster batch by that cluster's statistics, unlike at test time",
        (1, 4),
        ("--frozen-bn",),
        True,
    ),
    "per-image": Variant(
        "every image clustered (the paper)", (4,), ("--cluster-images-per-class", "0"), False, "baseline"
    ),
    "no-warmup": Variant("no K = 1 warm-up epoch", (4,), ("--warmup-epochs", "0"), False, "baseline"),
    "no-slices": Variant(
        "the loss on the full embedding from the first clustering on (--full-embedding-epoch 1): batches from one "
        "cluster each, but no learner slices",
        (4,),
        ("--full-embedding-epoch", "1"),
        False,
        "baseline",
    ),
    "16-epochs": Variant(
        "twice the budget: 16 epochs, full embedding from 8, fine-tuning in 15",
        (1, 4),
        ("--epochs", "16", "--full-embedding-epoch", "8", "--finetune-epoch", "15"),
    ),
}
DEFAULT_VARIANTS = "baseline,pretrained,pretrained-per-image,per-image,no-warmup"


def job_name(stage: str, variant: str, k: int, seed: int) -> str:
    return f"{stage} {variant} K={k} seed={seed}"


def source_trunk(out: Path, results: dict[str, dict]) -> Path:
    """Train (once) the K = 1 source model on the classes of generator seed :data:`SOURCE_SEED`; its trunk's path."""
    folder = out / "source"
    name = f"source K=1 data seed={SOURCE_SEED} seed={SELECTION_SEED}"
    if name not in results:
        argv = [
            "-K",
            "1",
            "--seed",
            str(SELECTION_SEED),
            *COMMON_ARGS,
            "--data-option",
            f"seed={SOURCE_SEED}",
            "--eval-every",
            "1000",
            *SCHEDULES[BUDGET].split(),
        ]
        results[name] = run(name, argv, folder)
    return folder / "K1" / "trunk.pth"


def variant_job(out: Path, results: dict[str, dict], stage: str, variant: str, k: int, seed: int) -> dict:
    """One run of ``variant`` (stage ``validation`` or ``evaluation``), from ``results`` if it is there."""
    name = job_name(stage, variant, k, seed)
    if name not in results:
        spec = VARIANTS[variant]
        init = ["--init", f"ssl:{source_trunk(out, results)}"] if spec.pretrained else []
        argv = [
            "-K",
            str(k),
            "--seed",
            str(seed),
            *COMMON_ARGS,
            *STAGE_ARGS[stage],
            *SCHEDULES[BUDGET].split(),
            *spec.args,
            *init,
        ]  # later flags win: the variant's, then the init
        results[name] = run(name, argv, out / stage / f"{variant}_K{k}_s{seed}")
        (out / "results.json").write_text(json.dumps(results, indent=2))  # after every run: a crash loses none
    return results[name]


def reference_run(results: dict[str, dict], stage: str, variant: str, seed: int) -> dict:
    """The K = 1 run that ``variant``'s K > 1 runs are compared with."""
    return results[job_name(stage, VARIANTS[variant].reference or variant, 1, seed)]


def ablation_table(results: dict[str, dict], variants: list[str], seed: int) -> str:
    """Validation metrics of every variant's K and its paired difference to the reference K = 1 (one seed)."""
    lines = [
        "| variant | K | R@1, % | NMI, % | MAP@R, % | K − K=1: R@1 | NMI | MAP@R |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in variants:
        base = reference_run(results, "validation", variant, seed)
        for k in VARIANTS[variant].learners:
            r = results[job_name("validation", variant, k, seed)]
            cells = " | ".join(f"{100 * r[m]:.2f}" for m in METRICS)
            diffs = " | ".join("" if k == 1 else f"{100 * (r[m] - base[m]):+.2f}" for m in METRICS)
            lines.append(f"| {variant} | {k} | {cells} | {diffs} |")
    return "\n".join(lines)


def winners(results: dict[str, dict], variants: list[str], seed: int) -> list[tuple[str, int]]:
    """(variant, K > 1) pairs whose validation R@1 and NMI are both above their reference K = 1."""
    found = []
    for variant in variants:
        base = reference_run(results, "validation", variant, seed)
        for k in VARIANTS[variant].learners:
            r = results[job_name("validation", variant, k, seed)]
            if k > 1 and r["R@1"] > base["R@1"] and r["NMI"] > base["NMI"]:
                found.append((variant, k))
    return found


def report(results: dict[str, dict], meta: dict) -> str:
    """The BENCHMARKS.md section for ``results`` (job name -> metrics) and ``meta`` (see :func:`main`)."""
    variants, seed = meta["variants"], SELECTION_SEED
    won = winners(results, variants, seed)
    gaps = [
        100
        * (results[job_name("validation", v, k, seed)]["R@1"] - reference_run(results, "validation", v, seed)["R@1"])
        for v in variants
        for k in VARIANTS[v].learners
        if k > 1
    ]
    source = results.get(f"source K=1 data seed={SOURCE_SEED} seed={SELECTION_SEED}")
    lines = [
        SECTION,
        "",
        f"Machine: {meta['machine']}; one dc_transfer.py process with 1 thread at a time (a machine shared with other "
        f"jobs). Wall time of the runs in this section: {meta['minutes']:.1f} min.",
        "",
        f"Command: `{meta['command']}`. Same regime, scale and runs as bench/dc.py above (`experiments/dc_transfer.py "
        f"-K k --seed S {' '.join(COMMON_ARGS)} {SCHEDULES[BUDGET]}`, the 8-epoch budget that every K chose there), "
        "one change per variant. **Validation only**: bench/dc.py's validation data (`--data-option seed=1`: other "
        f"classes than the evaluation's) and its selection seed {seed}, one seed per cell (the numbers are "
        "bit-reproducible on the CPU; seed-to-seed spread of a paired R@1 difference in bench/dc.py's evaluation: "
        "0.7-0.8 points). Pretraining: K = 1, 8 epochs, on the 500 training classes of another draw of the generator "
        f"(`--data-option seed={SOURCE_SEED}`: neither validation nor evaluation classes)"
        + (f", its own test R@1 {100 * source['R@1']:.2f} %" if source else "")
        + "; its trunk (`K1/trunk.pth`) initialises every K of the pretrained variants (`--init ssl:PATH`), the "
        "embedding layer starts from random. K = 1 ignores warm-up and clustering flags, so `per-image` and "
        "`no-warmup` are compared with the baseline's K = 1, `pretrained-per-image` with the pretrained K = 1.",
        "",
        "| variant | what changes |",
        "|---|---|",
        *(f"| {v} | {VARIANTS[v].description} |" for v in variants),
        "",
        "Validation metrics and differences K − K=1 (points):",
        "",
        ablation_table(results, variants, seed),
        "",
        "K > 1 above its K = 1 on both R@1 and NMI on validation: "
        + (", ".join(f"{v} K = {k}" for v, k in won) if won else "none")
        + f"; R@1 differences K − K=1 from {min(gaps):+.2f} to {max(gaps):+.2f} points over the "
        f"{len(gaps)} K > 1 runs.",
    ]
    for variant, k in meta.get("evaluated", []):
        seeds = meta["seeds"]
        runs = {
            1: [reference_run(results, "evaluation", variant, s) for s in seeds],
            k: [results[job_name("evaluation", variant, k, s)] for s in seeds],
        }
        table, paired = comparison_table(runs)
        beats = all(paired[k, m][0] > paired[k, m][1] for m in ("R@1", "NMI"))
        lines += [
            "",
            f"**Held-out evaluation of `{variant}`, K = {k}** (bench/dc.py's evaluation: data seed 0, seeds "
            f"{', '.join(map(str, seeds))}; mean ± std over seeds):",
            "",
            table,
            "",
            f"Paired differences larger than their std on R@1 and NMI: {'yes' if beats else 'no'}.",
        ]
    lines += ["", meta.get("conclusion", "")]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Ablation of bench/dc.py's K > 1 vs K = 1 on validation data")
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"comma-separated, among {', '.join(VARIANTS)} (default: {DEFAULT_VARIANTS})",
    )
    parser.add_argument("--evaluate", default=None, help="a variant to run on the held-out seeds (default: none)")
    parser.add_argument("--evaluate-k", default=4, type=int, help="its K > 1 (default: 4)")
    parser.add_argument("--seeds", default=3, type=int, help="held-out seeds of --evaluate (default: 3)")
    parser.add_argument(
        "--conclusion", default="", help="a closing paragraph for the section, kept for later runs (default: none)"
    )
    parser.add_argument(
        "--out", default="runs/bench_dc_ablation", help="output folder (default: runs/bench_dc_ablation)"
    )
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set([*variants, args.evaluate or "baseline"]) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose among {', '.join(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {"minutes": 0.0}
    meta.setdefault("variants", [])
    start = time.perf_counter()
    for variant in variants:
        spec = VARIANTS[variant]
        for v in [spec.reference] if spec.reference else []:
            variant_job(out, results, "validation", v, 1, SELECTION_SEED)
        for k in spec.learners:
            variant_job(out, results, "validation", variant, k, SELECTION_SEED)
    meta["variants"] = list(dict.fromkeys([*meta["variants"], *variants]))
    command = f"python bench/dc_ablation.py --variants {','.join(meta['variants'])}"
    if args.evaluate:
        meta["seeds"] = list(range(args.seeds))
        for seed in meta["seeds"]:
            variant_job(out, results, "evaluation", VARIANTS[args.evaluate].reference or args.evaluate, 1, seed)
            variant_job(out, results, "evaluation", args.evaluate, args.evaluate_k, seed)
        meta["evaluated"] = [[args.evaluate, args.evaluate_k]]
        command += f"; then --evaluate {args.evaluate} --evaluate-k {args.evaluate_k} --seeds {args.seeds}"
    meta.update(
        command=command,
        machine=meta.get("machine") or machine_info(),
        conclusion=args.conclusion or meta.get("conclusion", ""),
    )
    meta["minutes"] += (time.perf_counter() - start) / 60
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    text = report(results, meta)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
