"""Benchmark the batched vector env against SyncVectorEnv and AsyncVectorEnv: total env steps/s on the same cores.

    .venv/bin/python bench/vector_env.py            # prints the tables and writes them into BENCHMARKS.md

Every measurement runs in a fresh process (``--worker``), all in one run of this script, so that the ratios compare
settings under the same machine load (the load average is recorded at the start, around each row and at the end).
Each vector env is built from the default preset (``PermSampling-v0``), reset with seed 0, stepped once untimed, then
timed over a fixed number of vector steps with the same seeded random actions for every kind.

A last ``profile`` worker (one process, one thread) splits a single-env step and a batched step into parts
(torch.profiler), counts their FLOPs, times a matrix product of the trunk's size as the core's yardstick, and
measures how far trajectories drift apart: batched vs single env, and the single env against itself with its CNN in
channels_last memory (pure float32 summation order) as the calibration.

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
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from common import machine_info, median_seconds, publish
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

import permgym  # noqa: F401  (registers the ids)
from permgym.env import PermSamplingEnv
from permgym.observation import observation_slices
from permgym.vector_env import PermSamplingVectorEnv

HEADING = "## Batched vector env (bench/vector_env.py)"
KINDS = ("batched", "sync", "async")
MODES = {"batched": "vector_entry_point", "sync": "sync", "async": "async"}
MIN_VECTOR_STEPS = 2
#: Parts of a step in the profile table: profiler ranges the worker wraps around calls, then op names (self time).
PARTS = ("data sampling", "convolutions", "BatchNorm", "linear layers", "optimiser", "other")
_OPS = {
    "convolutions": ("aten::mkldnn_convolution", "aten::convolution_backward"),
    "BatchNorm": ("aten::native_batch_norm", "aten::native_batch_norm_backward"),
    "linear layers": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
}


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
        envs.step(action)
    seconds = time.perf_counter() - start
    envs.close()
    return {"seconds": seconds, "env_steps": n * spec["steps"]}


def _in_range(owner: object, method: str, label: str) -> None:
    """Wrap ``owner.method`` in a profiler range named ``label`` (an instance attribute; the class is untouched)."""
    inner = getattr(owner, method)

    def wrapped(*args: object, **kwargs: object) -> object:
        with record_function(label):
            return inner(*args, **kwargs)

    setattr(owner, method, wrapped)


def _shares(step: Callable[[], None], repeats: int) -> dict[str, float]:
    """Share of each part of :data:`PARTS` in the CPU time of ``repeats`` calls of ``step`` (torch.profiler)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranges = {e.key: e.cpu_time_total for e in events}
    parts = {"data sampling": ranges.get("data sampling", 0.0), "optimiser": ranges.get("optimiser", 0.0)}
    for part, names in _OPS.items():
        parts[part] = sum(e.self_cpu_time_total for e in events if e.key in names)
    parts["other"] = total - sum(parts.values())
    return {part: parts[part] / total for part in PARTS}


def _single(channels_last: bool) -> tuple[PermSamplingEnv, Callable[[], None]]:
    """A reset default-preset env (no episode end during the run) whose trainer's calls are profiler ranges."""
    env = PermSamplingEnv(steps_per_episode=10**6)
    env.reset(seed=0)
    trainer = env.trainer
    assert trainer is not None
    if channels_last:
        trainer.model.to(memory_format=torch.channels_last)
    _in_range(trainer, "sample_batch", "data sampling")
    _in_range(trainer.optimizer, "step", "optimiser")
    action = np.zeros(env.action_space.shape, dtype=np.float32)
    return env, lambda: env.step(action)


def _batched(n: int) -> tuple[PermSamplingVectorEnv, Callable[[], None]]:
    envs = PermSamplingVectorEnv(n, steps_per_episode=10**6)
    envs.reset(seed=0)
    for env in envs.envs:
        _in_range(env.trainer, "sample_batch", "data sampling")
    _in_range(envs.trainer, "_optimizer_step", "optimiser")
    actions = np.zeros(envs.action_space.shape, dtype=np.float32)
    return envs, lambda: envs.step(actions)


#: (run, reference) pairs of the trajectory-drift table.
DRIFT_PAIRS = (("batched", "single"), ("channels_last", "single"), ("batched", "channels_last"))


def _drift(steps: int) -> dict[str, list[float]]:
    """Max abs observation difference of each pair of :data:`DRIFT_PAIRS` over ``steps`` seeded steps (all features
    after step 1; the held-out loss block and all features after the last step). Runs: the single env, the single
    env with its CNN in channels_last memory (a change of float32 summation order only: the yardstick), and sub-env
    0 of a batched env of N=2."""
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 24)).astype(np.float32)

    def rollout(kind: str) -> np.ndarray:
        if kind == "batched":
            envs = PermSamplingVectorEnv(2)
            envs.reset(seed=0)
            return np.stack([envs.step(np.stack([a, a]))[0][0] for a in actions])
        env = PermSamplingEnv()
        env.reset(seed=0)
        if kind == "channels_last":
            env.trainer.model.to(memory_format=torch.channels_last)
        return np.stack([env.step(a)[0] for a in actions])

    runs = {kind: rollout(kind) for kind in ("single", "channels_last", "batched")}
    loss = observation_slices({"temporal": 24})["temporal"]["val_loss"]
    out = {}
    for kind, reference in DRIFT_PAIRS:
        diff = np.abs(runs[kind] - runs[reference])
        out[f"{kind} vs {reference}"] = [float(diff[0].max()), float(diff[-1, loss].max()), float(diff[-1].max())]
    return out


def _matmul_ms(m: int, k: int, n: int) -> float:
    """Median ms of a float32 ``[m, k] @ [k, n]`` matrix product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    return 1e3 * median_seconds(lambda: a @ b, 10)


def _conv_floor(env: PermSamplingEnv) -> list[dict]:
    """Each trunk convolution of one training update of ``env``: its shape as a matrix product (im2col ``M x K x
    N``), the ms of its forward + backward in channels_last memory (the batched trunk's kernels), and the ms of the
    plain matrix products it amounts to (forward; weight gradient; input gradient, except for the first layer, whose
    input needs none). Also the share of the frames a validation adds (forward only)."""
    trainer = env.trainer
    assert trainer is not None
    train_frames = sum(size * trainer.tasks[task].num_elements for task, size in trainer.batch_split.items())
    val_frames = sum(e.shape[0] * e.shape[1] for e in trainer.val_elements.values())
    element = next(iter(trainer.val_elements.values())).shape[2:]
    inputs: list[tuple[torch.nn.Conv2d, torch.Size]] = []
    convs = [m for m in trainer.model.trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [c.register_forward_hook(lambda m, i, o: inputs.append((m, i[0].shape))) for c in convs]
    with torch.no_grad():
        trainer.model.trunk(torch.zeros(train_frames, *element))
    for hook in hooks:
        hook.remove()
    rows = []
    for index, (conv, shape) in enumerate(inputs):
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_(index > 0)
        w = conv.weight.detach().clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        out = torch.nn.functional.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        grad_out = torch.randn_like(out)
        leaves = [x, w] if index > 0 else [w]

        def conv_step(x=x, w=w, grad_out=grad_out, leaves=leaves, conv=conv) -> None:
            y = torch.nn.functional.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
            torch.autograd.grad(y, leaves, grad_out)

        m, k, n = out.numel() // out.shape[1], w[0].numel(), out.shape[1]
        weight_grad = _matmul_ms(n, m, k)
        input_grad = _matmul_ms(m, n, k) if index > 0 else 0.0
        rows.append({"mkn": [m, k, n], "conv_ms": 1e3 * median_seconds(conv_step, 10),
                     "forward_gemm_ms": _matmul_ms(m, k, n), "backward_gemm_ms": weight_grad + input_grad,
                     "val_share": val_frames / train_frames})  # fmt: skip
    return rows


def profile_worker(spec: dict) -> dict:
    """Per-part costs of a single-env step and of a batched step (``spec["n"]`` sub-envs), FLOPs, the core's sgemm
    rate and the trajectory drift; runs inside a ``--worker`` process with one thread."""
    torch.set_num_threads(1)
    n, repeats = spec["n"], spec["repeats"]
    kinds = {"single": _single(False), "single, channels_last": _single(True), "batched": _batched(n)}
    per_env = {"single": 1, "single, channels_last": 1, "batched": n}
    for _, step in kinds.values():
        step()  # warm-up
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(repeats):  # interleaved, so that load changes hit every kind alike
        for kind, (_, step) in kinds.items():
            wall[kind].append(median_seconds(step, 1, warmup=0) / per_env[kind])
    result: dict = {"wall_ms": {k: 1e3 * float(np.median(v)) for k, v in wall.items()}, "n": n}
    result["shares"] = {kind: _shares(step, max(1, repeats // per_env[kind])) for kind, (_, step) in kinds.items()}
    result["gflop"] = {}
    for kind, (_, step) in kinds.items():
        with FlopCounterMode(display=False) as counter:
            step()
        result["gflop"][kind] = counter.get_total_flops() / 1e9 / per_env[kind]
    a, b = torch.randn(4096, 576), torch.randn(576, 64)
    result["sgemm_gflops"] = 2 * 4096 * 576 * 64 / median_seconds(lambda: a @ b, 20) / 1e9
    a = torch.randn(2048, 2048)
    result["peak_gflops"] = 2 * 2048**3 / median_seconds(lambda: a @ a, 5) / 1e9
    result["conv_floor"] = _conv_floor(kinds["single"][0])
    result["updates_per_step"] = kinds["single"][0].config.updates_per_step
    result["drift"], result["drift_steps"] = _drift(spec["drift_steps"]), spec["drift_steps"]
    return result


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


def profile_lines(prof: dict, n: int) -> list[str]:
    """The per-part cost table, the compute-bound argument and the trajectory-drift table, as Markdown lines."""
    kinds = list(prof["wall_ms"])
    header = " | ".join(k if k != "batched" else f"batched N={n}, per env" for k in kinds)
    lines = [
        "",
        "Where a step's time goes (one process, 1 thread; `profile` worker): ms per env step, wall clock (median of "
        "steps interleaved across the kinds), split by the torch.profiler share of each part (self CPU time of the "
        "convolution, BatchNorm and matmul kernels forward and backward; ranges around data sampling and the "
        "optimiser step; other = Python, element-wise ops, copies, statistics). GFLOP per env step from "
        '`torch.utils.flop_counter` (forward + backward + validation). "single, channels_last" is the single env '
        "with its CNN in channels_last memory (not the default): the part of the batched env's gain that is memory "
        "layout, not batching.",
        "",
        f"| part | {header} |",
        "|---|" + "---:|" * len(kinds),
    ]
    for part in PARTS:
        cells = " | ".join(f"{prof['wall_ms'][k] * prof['shares'][k][part]:.1f}" for k in kinds)
        lines.append(f"| {part} | {cells} |")
    lines += [
        "| **total** | " + " | ".join(f"**{prof['wall_ms'][k]:.1f}**" for k in kinds) + " |",
        "| GFLOP per env step | " + " | ".join(f"{prof['gflop'][k]:.2f}" for k in kinds) + " |",
        "| GFLOP/s achieved | "
        + " | ".join(f"{prof['gflop'][k] / prof['wall_ms'][k] * 1e3:.1f}" for k in kinds)
        + " |",
        "",
        f"For scale: a float32 matrix product of the size of the third convolution (4096 x 576 x 64) runs at "
        f"{prof['sgemm_gflops']:.1f} GFLOP/s on one core of this machine in the same process, a 2048 x 2048 x 2048 "
        f"one at {prof['peak_gflops']:.1f} GFLOP/s.",
        "",
        "Convolutions against the plain matrix products they amount to (one training update of the single env, 1 "
        "thread, channels_last as in the batched trunk; im2col shape M x K x N; the products: forward, weight "
        "gradient and, after the first layer, input gradient; median of 10):",
        "",
        "| convolution | M x K x N | forward + backward, ms | its matrix products, ms | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for i, row in enumerate(prof["conv_floor"], 1):
        gemm = row["forward_gemm_ms"] + row["backward_gemm_ms"]
        lines.append(f"| conv{i} | {' x '.join(map(str, row['mkn']))} | {row['conv_ms']:.2f} | {gemm:.2f} | "
                     f"{row['conv_ms'] / gemm:.2f}x |")  # fmt: skip
    drift = prof["drift"]
    lines += [
        "",
        "Trajectory agreement: max abs observation difference between runs with the same seed 0 and seeded actions "
        f"over {prof['drift_steps']} steps. The yardstick is the single env with its CNN in channels_last memory, "
        "which changes nothing but float32 summation order; the held-out accuracy features move in steps of 1/16 "
        "when a logit margin is below the rounding, so 'all features' jumps while the loss block stays small:",
        "",
        "| runs compared | all features, step 1 | held-out loss block, last step | all features, last step |",
        "|---|---:|---:|---:|",
    ]
    labels = {"batched": "batched env (sub-env 0 of N=2)", "single": "single env",
              "channels_last": "single env in channels_last"}  # fmt: skip
    for pair, (first, loss, last) in drift.items():
        run, reference = pair.split(" vs ")
        lines.append(f"| {labels[run]} vs {labels[reference]} | {first:.1e} | {loss:.1e} | {last:.1e} |")
    return lines


def batching_savings(prof: dict) -> str:
    """Which parts batching made cheaper per env step, against the single env in the same (channels_last) layout."""
    layout, batched = "single, channels_last", "batched"
    saved = {
        part: prof["wall_ms"][layout] * prof["shares"][layout][part]
        - prof["wall_ms"][batched] * prof["shares"][batched][part]
        for part in PARTS
    }
    total = prof["wall_ms"][layout] - prof["wall_ms"][batched]
    parts = ", ".join(f"{part} {ms:+.0f}" for part, ms in sorted(saved.items(), key=lambda kv: -kv[1]))
    share = f"{100 * abs(total) / prof['wall_ms'][layout]:.0f}%; ms saved per part: {parts}"
    if total >= 0:
        return (
            f"Against the single env in the same memory layout, batching saves {total:.0f} ms per env step ({share}), "
            "with the same GFLOP per env step: the same kernels run faster back to back and with fewer Python calls, "
            "but the arithmetic stays."
        )
    return (
        f"Against the single env in the same memory layout, the batched env took {-total:.0f} ms more per env step "
        f"in this profile ({share}), with the same GFLOP per env step: what batching saves in Python calls is "
        "smaller than the run-to-run noise of the kernels, and the arithmetic stays."
    )


def floor_sentence(prof: dict, async_rate: float, cores: int) -> str:
    """What the 3x target leaves for everything but the convolutions, if they ran at their matrix products' speed."""
    rows = prof["conv_floor"]
    floor = sum(prof["updates_per_step"] * (r["forward_gemm_ms"] + r["backward_gemm_ms"])
                + r["val_share"] * r["forward_gemm_ms"] for r in rows)  # fmt: skip
    budget = cores * 1e3 / (3 * async_rate)
    rest = prof["wall_ms"]["batched"] * (1 - prof["shares"]["batched"]["convolutions"])
    verdict = (
        "a budget smaller than the floor itself: out of reach of any implementation that computes the convolutions as "
        "matrix products on this CPU"
        if budget <= floor
        else f"{budget - floor:.0f} ms, a {rest / (budget - floor):.1f}x cut of what they take in the batched env now "
        f"({rest:.0f} ms), with the convolutions at their matrix products' speed and {cores} threads splitting every "
        "kernel perfectly"
    )
    return (
        f"A floor: if every convolution ran exactly as fast as its plain matrix products (table above) and nothing "
        f"else took any time, an env step would take {floor:.0f} ms on one core ({prof['updates_per_step']} updates "
        f"and one validation). 3x this run's AsyncVectorEnv at N=8 ({3 * async_rate:.1f} env steps/s on {cores} "
        f"cores) means one env step per {budget:.0f} ms per core, so BatchNorm, the heads' matrix products, data "
        f"sampling, the optimiser and Python would have to fit in {verdict}."
    )


def why_paragraph(prof: dict, async_rate: float, sync_rate: float, cores: int) -> str:
    """Why batching cannot reach 3x AsyncVectorEnv on ``cores`` CPU cores, in this run's own numbers."""
    async_speedup = async_rate / sync_rate
    single, batched = prof["wall_ms"]["single"], prof["wall_ms"]["batched"]
    shares = prof["shares"]["single"]
    kernels = shares["convolutions"] + shares["BatchNorm"] + shares["linear layers"]
    achieved = prof["gflop"]["single"] / single * 1e3
    return (
        f"Why: the step is compute-bound. {100 * kernels:.0f}% of a single env's step is convolution, BatchNorm and "
        f"matmul kernels ({prof['gflop']['single']:.1f} GFLOP per env step, {achieved:.1f} GFLOP/s on one core, "
        f"{100 * achieved / prof['sgemm_gflops']:.0f}% of the core's rate on a plain matrix product of the trunk's "
        f"size), and the batched env has the same arithmetic to do per env step. {batching_savings(prof)} "
        f"AsyncVectorEnv runs one env per core (up to "
        f"{cores}x SyncVectorEnv on an idle machine; {async_speedup:.1f}x in this run at N=8, under the load shown), "
        f"so batched >= 3x Async on {cores} cores needs the batched "
        f"env to do one env step per core in a third of the single env's time, at {3 * achieved:.0f} GFLOP/s per core "
        f"({300 * achieved / prof['sgemm_gflops']:.0f}% of the matrix-product rate), with small-channel "
        f"convolutions. Measured instead: {batched:.0f} ms per env step batched (N={prof['n']}, 1 thread) against "
        f"{single:.0f} ms single and {prof['wall_ms']['single, channels_last']:.0f} ms for the single env in "
        "channels_last memory (same kernels as the batched trunk). One grouped convolution over the N slots (weights "
        "stacked along channels, groups=N) was tried and is slower than N separate convolutions with this CPU's "
        "oneDNN kernels, and `torch.func.vmap` (the first version) was slower still (both measured while "
        f"developing, not rerun by this script). {floor_sentence(prof, async_rate, cores)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16], help="N values (default: 1 4 8 16)")
    parser.add_argument("--env-steps", type=int, default=8, help="timed env steps per N, at least 2 vector steps "
                        "(default: 8)")  # fmt: skip
    parser.add_argument("--pair-size", type=int, default=4, help="N of the two-process runs (default: 4)")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)), help="C (default: all usable)")
    parser.add_argument("--profile-size", type=int, default=8, help="N of the batched env in the per-part "
                        "profile (default: 8)")  # fmt: skip
    parser.add_argument("--profile-repeats", type=int, default=8, help="interleaved timed steps of each kind in the "
                        "profile (default: 8)")  # fmt: skip
    parser.add_argument("--drift-steps", type=int, default=8, help="steps of the trajectory-drift rollouts "
                        "(default: 8)")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(profile_worker(spec) if spec["kind"] == "profile" else run_worker(spec)))
        return
    info = machine_info()
    c = args.cores
    table: dict[tuple[str, int, int], dict] = {}
    columns = (("batched", 1), ("batched", c), ("sync", 1), ("async", 1))
    loads: dict[int, tuple[float, float]] = {}
    for n in args.sizes:
        steps = max(MIN_VECTOR_STEPS, args.env_steps // n)
        load_before = os.getloadavg()[0]
        for kind, threads in columns:
            table[kind, threads, n] = launch([{"kind": kind, "n": n, "threads": threads, "steps": steps}])[0]
            print(f"N={n} {kind} threads={threads}: {rate(table[kind, threads, n]):.2f} env steps/s", flush=True)
        loads[n] = (load_before, os.getloadavg()[0])
    n_pair = args.pair_size
    steps_pair = max(MIN_VECTOR_STEPS, args.env_steps // n_pair)
    pairs = {kind: launch([{"kind": kind, "n": n_pair, "threads": 1, "steps": steps_pair}] * 2) for kind in KINDS}
    oversubscribed = {
        threads: launch([{"kind": "sync", "n": 1, "threads": threads, "steps": args.env_steps}] * 2)
        for threads in (1, c)
    }
    prof = launch([{"kind": "profile", "n": args.profile_size, "repeats": args.profile_repeats,
                    "drift_steps": args.drift_steps}])[0]  # fmt: skip
    load_end = os.getloadavg()[0]

    lines = [
        HEADING,
        "",
        f"Command: `python bench/vector_env.py --env-steps {args.env_steps} --pair-size {n_pair} --cores {c} "
        f"--profile-size {args.profile_size} --profile-repeats {args.profile_repeats}`. Machine: {info}; load average {load_end:.1f} at the end (other jobs "
        "may share the machine: compare the ratios, all measured in this run). Default preset (`PermSampling-v0`: "
        "tiny trunk, batch 32, 4 updates and one all-K validation per step). Each cell: one fresh process "
        f"(AsyncVectorEnv: plus N workers), 1 untimed vector step, then max({MIN_VECTOR_STEPS}, {args.env_steps} / N) "
        "timed vector steps; total env steps/s = N x vector steps / seconds. Threads: `torch_threads` of the batched "
        "env and SyncVectorEnv (one process), 1 per AsyncVectorEnv worker.",
        "",
        f"| N | batched, 1 thread | batched, {c} threads | SyncVectorEnv, 1 thread | AsyncVectorEnv, N workers | "
        "best batched / Async | batched 1 thread / Sync | load average before, after the row |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in args.sizes:
        b1, bc, s, a = (rate(table[k, t, n]) for k, t in columns)
        lines.append(f"| {n} | {b1:.2f} | {bc:.2f} | {s:.2f} | {a:.2f} | {max(b1, bc) / a:.2f}x | {b1 / s:.2f}x | "
                     f"{loads[n][0]:.1f}, {loads[n][1]:.1f} |")  # fmt: skip
    lines += [
        "",
        f"The load average counts this bench's own processes too (a row's AsyncVectorEnv starts N workers), so a "
        f"high value after a row is not by itself a sign of other jobs; a row whose load before it exceeds {c} (the "
        "cores) started while other jobs took cores, and its ratios are not comparable with the other rows "
        "(AsyncVectorEnv, which needs every core, suffers most).",
    ]
    pair_rates = {kind: sum(rate(r) for r in results) for kind, results in pairs.items()}
    over = {threads: sum(rate(r) for r in results) for threads, results in oversubscribed.items()}
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
        f"| torch_threads=1 | torch_threads={c} (default threads) | ratio |",
        "|---:|---:|---:|",
        f"| {over[1]:.2f} | {over[c]:.2f} | {over[1] / over[c]:.1f}x |",
        *profile_lines(prof, args.profile_size),
    ]
    if 8 in args.sizes:
        ratio = max(rate(table["batched", 1, 8]), rate(table["batched", c, 8])) / rate(table["async", 1, 8])
        lines += [
            "",
            f"Target: batched >= 3x AsyncVectorEnv total steps/s at N=8 on {c} cores — "
            f"{'met' if ratio >= 3 else 'NOT met'} ({ratio:.2f}x).",
            "",
            why_paragraph(prof, rate(table["async", 1, 8]), rate(table["sync", 1, 8]), c),
        ]
    publish(HEADING, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
