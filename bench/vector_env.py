"""Benchmark the batched vector env against SyncVectorEnv and AsyncVectorEnv: total env steps/s on the same cores.

    .venv/bin/python bench/vector_env.py            # prints the tables and writes them into BENCHMARKS.md

Every measurement runs in a fresh process (``--worker``), all in one run of this script, so that the ratios compare
settings under the same machine load (the load average is recorded before and after). Each vector env is built from
the default preset (``PermSampling-v0``), reset with seed 0, stepped once untimed, then timed over a fixed number of
vector steps with the same seeded random actions for every kind; the observations of the last step are compared
across kinds (they are the same trajectories up to float32 rounding, which Adam amplifies over steps; see
``tests/test_vector_env.py``).

Threads on C cores: the batched env at ``torch_threads`` 1 and C and SyncVectorEnv at 1, each one process;
AsyncVectorEnv runs N worker processes with ``torch_threads=1``. "Two processes" runs two copies of a setting at once
(two experiments sharing the machine), each with ``torch_threads=1`` (AsyncVectorEnv: two sets of N workers), and
reports the sum of their rates; the last table runs two single-env processes with ``torch_threads=1`` and with C
threads each (torch's default of one thread per core): oversubscription.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from common import machine_info, publish

import permgym  # noqa: F401  (registers the ids)

HEADING = "## Batched vector env (bench/vector_env.py)"
KINDS = ("batched", "sync", "async")
MODES = {"batched": "vector_entry_point", "sync": "sync", "async": "async"}
MIN_VECTOR_STEPS = 2


def run_worker(spec: dict) -> dict:
    """Build, warm up and time one vector env; runs inside a ``--worker`` process."""
    torch.set_num_threads(spec["threads"])
    n, kind = spec["n"], spec["kind"]
    kwargs = {"vector_kwargs": {"context": "forkserver"}} if kind == "async" else {}
    threads = 1 if kind == "async" else spec["threads"]
    envs = gym.make_vec("PermSampling-v0", num_envs=n, vectorization_mode=MODES[kind], torch_threads=threads, **kwargs)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (spec["steps"] + 1, *envs.action_space.shape)).astype(np.float32)
    envs.step(actions[0])
    start = time.perf_counter()
    for action in actions[1:]:
        obs, *_ = envs.step(action)
    seconds = time.perf_counter() - start
    envs.close()
    return {"seconds": seconds, "env_steps": n * spec["steps"], "obs": obs.tolist()}


def launch(specs: list[dict]) -> list[dict]:
    """Run one worker process per spec, all at the same time; their results in order."""
    script = str(Path(__file__).resolve())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, script, "--worker", json.dumps(s)], stdout=subprocess.PIPE, env=env, text=True
        )
        for s in specs
    ]
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"benchmark worker failed with exit code {p.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def rate(result: dict) -> float:
    return result["env_steps"] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16], help="N values (default: 1 4 8 16)")
    parser.add_argument("--env-steps", type=int, default=8, help="timed env steps per N, at least 2 vector steps "
                        "(default: 8)")  # fmt: skip
    parser.add_argument("--pair-size", type=int, default=4, help="N of the two-process runs (default: 4)")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)), help="C (default: all usable)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    info = machine_info()
    c = args.cores
    table: dict[tuple[str, int, int], dict] = {}
    columns = (("batched", 1), ("batched", c), ("sync", 1), ("async", 1))
    for n in args.sizes:
        steps = max(MIN_VECTOR_STEPS, args.env_steps // n)
        for kind, threads in columns:
            table[kind, threads, n] = launch([{"kind": kind, "n": n, "threads": threads, "steps": steps}])[0]
            print(f"N={n} {kind} threads={threads}: {rate(table[kind, threads, n]):.2f} env steps/s", flush=True)
    n_pair = args.pair_size
    steps_pair = max(MIN_VECTOR_STEPS, args.env_steps // n_pair)
    pairs = {kind: launch([{"kind": kind, "n": n_pair, "threads": 1, "steps": steps_pair}] * 2) for kind in KINDS}
    oversubscribed = {
        threads: launch([{"kind": "sync", "n": 1, "threads": threads, "steps": args.env_steps}] * 2)
        for threads in (1, c)
    }
    load_end = os.getloadavg()[0]

    lines = [
        HEADING,
        "",
        f"Command: `python bench/vector_env.py --env-steps {args.env_steps} --pair-size {n_pair} --cores {c}`. "
        f"Machine: {info}; load average {load_end:.1f} at the end (other jobs shared the machine: compare the "
        "ratios, all measured in this run). Default preset (`PermSampling-v0`: tiny trunk, batch 32, 4 updates and "
        "one all-K validation per step). Each cell: one fresh process (AsyncVectorEnv: plus N workers), 1 untimed "
        f"vector step, then max({MIN_VECTOR_STEPS}, {args.env_steps} / N) timed vector steps; total env steps/s = N x "
        "vector steps / seconds. Threads: `torch_threads` of the batched env and SyncVectorEnv (one process), 1 per "
        "AsyncVectorEnv worker.",
        "",
        f"| N | batched, 1 thread | batched, {c} threads | SyncVectorEnv, 1 thread | AsyncVectorEnv, N workers | "
        "best batched / Async | max abs obs diff batched vs Sync |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in args.sizes:
        b1, bc, s, a = (table[k, t, n] for k, t in columns)
        best = max(rate(b1), rate(bc))
        diff = float(np.abs(np.asarray(b1["obs"]) - np.asarray(s["obs"])).max())
        lines.append(
            f"| {n} | {rate(b1):.2f} | {rate(bc):.2f} | {rate(s):.2f} | {rate(a):.2f} | {best / rate(a):.2f}x | "
            f"{diff:.1e} |"
        )
    pair_rates = {kind: sum(rate(r) for r in results) for kind, results in pairs.items()}
    lines += [
        "",
        f"Two processes sharing the {c} cores, each a vector env of N={n_pair} with `torch_threads=1` (total env "
        "steps/s of both):",
        "",
        "| batched x2 | SyncVectorEnv x2 | AsyncVectorEnv x2 | batched / Async |",
        "|---:|---:|---:|---:|",
        f"| {pair_rates['batched']:.2f} | {pair_rates['sync']:.2f} | {pair_rates['async']:.2f} | "
        f"{pair_rates['batched'] / pair_rates['async']:.2f}x |",
        "",
        "Two processes of one env each (total env steps/s): per-env `torch_threads=1` against torch's default of one "
        "thread per core in each:",
        "",
        "| torch_threads=1 | " + f"torch_threads={c} (default threads) | ratio |",
        "|---:|---:|---:|",
        f"| {sum(rate(r) for r in oversubscribed[1]):.2f} | {sum(rate(r) for r in oversubscribed[c]):.2f} | "
        f"{sum(rate(r) for r in oversubscribed[1]) / sum(rate(r) for r in oversubscribed[c]):.1f}x |",
    ]
    if 8 in args.sizes:
        ratio = max(rate(table["batched", 1, 8]), rate(table["batched", c, 8])) / rate(table["async", 1, 8])
        lines += [
            "",
            f"Target: batched >= 3x AsyncVectorEnv total steps/s at N=8 on {c} cores — "
            f"{'met' if ratio >= 3 else 'NOT met'} ({ratio:.2f}x).",
        ]
    publish(HEADING, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
