"""Reference scores and headroom: uniform, stratified, look-ahead oracles (and a learned sampler) per CPU env id.

    python bench/reference_scores.py --eval-seeds 4     # writes permgym/reference_scores.json and BENCHMARKS.md

For every registered CPU id, ``python -m agents.evaluate`` runs in the id's own regime (its preset's episode length,
updates per step and batch size; ``action_mode=per_sample``, the only mode stratified sampling and the oracles can
express) with the samplers of :data:`SAMPLERS` on held-out evaluation seeds 1000, 1001, ... (learners choose their
hyper-parameters and warm-start on training seeds 0-2 only). The mean ± 95 % t-interval over seeds of return,
held-out ordering accuracy (the env's report pool), linear-probe top-1 and retrieval top-1 (SyntheticActions test
clips) of uniform, stratified and every oracle go to ``permgym/reference_scores.json``, which
:func:`permgym.reference_scores` and the env's ``info["normalized_score"]`` read; each id's full table (paired
differences to stratified included) goes to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

import torch
from common import BENCHMARKS, ROOT, machine_info, write_section

import permgym
from agents.evaluate import main as evaluate
from agents.evaluate import results_table, summarise
from permgym.config import PRESETS, make_config
from permgym.run import parse_key_value

HEADING = "## Headroom and reference scores (bench/reference_scores.py)"
#: Samplers per env id; the default and the calibrated id also get the proxy oracle and the learned policy-gradient
#: sampler.
FULL = ("uniform", "stratified", "oracle_reward", "oracle_proxy", "pg")
SAMPLERS = {"PermSampling-v0": FULL, "PermSampling-Calibrated-v0": FULL}
DEFAULT_SAMPLERS = ("uniform", "stratified", "oracle_reward")
REBUILT = " (when this section was rebuilt from the runs' metrics.json by `--report-only`)"
REFERENCE_KEYS = ("return", "heldout_accuracy", "probe_top1", "retrieval_top1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--eval-seeds", type=int, default=4, help="held-out seeds 1000.. of PermSampling-v0 (default: 4)"
    )
    parser.add_argument("--other-seeds", type=int, default=3, help="held-out seeds of the other ids (default: 3)")
    parser.add_argument("--oracle-candidates", type=int, default=4, help="actions tried per decision (default: 4)")
    parser.add_argument("--env-ids", nargs="+", default=[i for i, _, nondet in permgym.ENV_IDS if not nondet])
    parser.add_argument("--probe-epochs", type=int, default=30, help="linear-probe epochs (default: 30)")
    parser.add_argument("--out", default=str(ROOT / "runs/reference_scores"), help="run folders")
    parser.add_argument("--report-only", action="store_true", help="rebuild json and section from OUT/*/metrics.json")
    parser.add_argument("--samplers", nargs="+", default=None, help="override the samplers of every id")
    parser.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY=VALUE",
                        help="a regime other than the preset's (e.g. synthetic_variant=flicker): its table gets its own "
                        "subsection and permgym/reference_scores.json is left as it is")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = ROOT / "permgym/reference_scores.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    rerun = [a for a in sys.argv[1:] if a != "--report-only"]  # the command that measured the runs
    bench_command = shlex.join(["python", "bench/reference_scores.py", *rerun])
    sections = previous_sections()  # ids not rerun keep their measured subsection
    for env_id in args.env_ids:
        preset = PRESETS[permgym.gym_preset(env_id)]
        regime = {"steps_per_episode": preset.steps_per_episode, "updates_per_step": preset.updates_per_step,
                  "batch_size": preset.batch_size}  # fmt: skip
        extra = dict(parse_key_value(text) for text in args.env_kwargs)
        regime.update(extra)
        title = env_id + "".join(f" with {k}={v}" for k, v in extra.items())
        samplers = args.samplers or SAMPLERS.get(env_id, DEFAULT_SAMPLERS)
        seeds = [1000 + i for i in range(args.eval_seeds if env_id in SAMPLERS else args.other_seeds)]
        argv = ["--env-id", env_id, "--samplers", *samplers, "--workers", "1", "--train-seeds", "0", "1", "2",
                "--eval-seeds", *map(str, seeds), "--oracle-candidates",
                str(args.oracle_candidates), "--probe-epochs", str(args.probe_epochs), "--out", f"{args.out}/{title.replace(' with ', '-')}", "--overwrite",
                "--env-kwargs", *[f"{k}={v}" for k, v in regime.items()]]  # fmt: skip
        if args.report_only:  # the runs' own record: metrics.json of agents.evaluate
            metrics = json.loads((Path(args.out) / title.replace(" with ", "-") / "metrics.json").read_text())
        else:
            metrics = evaluate(argv)
        metrics.update(summarise(metrics["runs"], list(metrics["samplers"])))  # with this version's normalisation
        config = make_config(permgym.gym_preset(env_id), **metrics["env_kwargs"])
        command = ("python -m agents.evaluate " + " ".join(argv)).replace(f"{ROOT}/", "")
        if not extra:  # only the registered regimes are references
            table[env_id] = {
                "config": config.to_dict(),
                "command": command,
                "eval_seeds": seeds,
                "oracle_candidates": args.oracle_candidates,
                "samplers": {
                    name: {key: {k: row[key][k] for k in ("mean", "ci95")} for key in REFERENCE_KEYS}
                    for name, row in metrics["samplers"].items()
                    if name == "uniform" or name == "stratified" or name.startswith("oracle")
                },
            }
        sections[title] = (
            f"### {title}\n\nBench: `{bench_command}`; its run: `{command}` ({metrics['wall_time_s'] / 60:.1f} min, "
            f"one worker process).\n\n"
            f"{results_table({k: v for k, v in metrics.items() if k != 'runs'})}\n\n{verdict(metrics)}\n"
        )
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    intro = (
        f"{HEADING}\n\nCommands: under each heading (the bench's and the `agents.evaluate` run it made). Machine "
        f"of the last run: {machine_info()}{REBUILT if args.report_only else ''}. Each id in its preset's regime "
        "with `action_mode=per_sample`; oracles try `--oracle-candidates` stratified candidate actions per decision "
        "from the same state and keep the best by "
        "the env's reward (`oracle_reward`) or by the soft-kNN proxy on labelled held-out training clips "
        "(`oracle_proxy`); `pg` is the policy-gradient sampler chosen and warm-started on training seeds 0-2, learning "
        "online. Mean ± 95 % t-interval over the held-out evaluation seeds; the normalised score is 0 at stratified's "
        "mean return and 1 at the best oracle's, NaN where no oracle's mean return is above stratified's. The uniform, stratified and oracle rows are "
        "`permgym/reference_scores.json`.\n"
    )
    rank = {env_id: i for i, (env_id, _, _) in enumerate(permgym.ENV_IDS)}
    ordered = [sections[t] for t in sorted(sections, key=lambda t: (rank.get(t.split()[0], len(rank)), t))]
    write_section(HEADING, intro + "\n" + "\n".join(ordered))


def previous_sections() -> dict[str, str]:
    """The per-id subsections (``### <id>`` to the next heading) of this bench's current BENCHMARKS.md section."""
    text = BENCHMARKS.read_text() if BENCHMARKS.is_file() else ""
    section = re.search(rf"^{re.escape(HEADING)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    found = re.finditer(
        r"^### ([^\n]+)\n.*?(?=^##+ |\Z)", section.group(1) if section else "", re.MULTILINE | re.DOTALL
    )
    return {m.group(1): m.group(0).rstrip("\n") + "\n" for m in found}


def verdict(metrics: dict) -> str:
    """Which samplers beat stratified downstream (paired 95 % intervals clear of zero), computed from the table."""
    parts = []
    for name, row in metrics["paired_vs_baseline"].items():
        if name == "untrained":
            continue
        words = []
        for key, title in (("probe_top1", "probe top-1"), ("retrieval_top1", "retrieval top-1")):
            mean, half = row[key]["mean"], row[key]["ci95"]
            side = "above" if mean - half > 0 else "below" if mean + half < 0 else "not resolved from"
            words.append(f"{title} {100 * mean:+.1f} ± {100 * half:.1f} ({side} stratified)")
        parts.append(f"`{name}`: " + ", ".join(words))
    return "Downstream against stratified, paired on the same seeds: " + "; ".join(parts) + "."


if __name__ == "__main__":
    main()
