"""The agents CLIs: agents.train (SB3, in a subprocess and resumed) and agents.evaluate end to end on a tiny config."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents.evaluate import BENCHMARK_HEADING, main, mean_ci
from agents.train import env_config, resolve_env_kwargs
from agents.train import main as train_main
from permgym.benchmarks import write_section
from permgym.run import RUN_MARKER
from tests.test_env import FAST

ROOT = Path(__file__).resolve().parents[1]
FAST_ARGS = [f"{key}={value}" for key, value in FAST.items()]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("cli", [train_main, main])
def test_help_lists_the_options_with_defaults(cli, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--env-id", "--env-kwargs", "--train-seeds", "--eval-seeds", "--out", "(default:"):
        assert flag in text


def test_train_ppo_in_a_subprocess_then_resume(tmp_path: Path) -> None:
    args = ["--algo", "ppo", "--n-envs", "1", "--total-timesteps", "3", "--n-steps", "3", "--eval-seeds", "100",
            "--eval-freq", "3", "--checkpoint-freq", "3", "--out", str(tmp_path), "--no-progress-bar",
            "--env-kwargs", *FAST_ARGS]  # fmt: skip
    result = _run("-m", "agents.train", *args)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "ppo"
    assert (out / "model.zip").is_file() and (out / "best" / "best_model.zip").is_file()
    assert (out / "eval" / "evaluations.npz").is_file() and any((out / "tb").iterdir())
    checkpoint = out / "checkpoints" / "ppo_3_steps.zip"
    assert checkpoint.is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["resolved_env_kwargs"]["steps_per_episode"] == 3
    resumed = ["--resume", str(checkpoint), "--total-timesteps", "6", "--eval-seeds"]
    train_main([*args[: args.index("--eval-seeds")], *resumed, "--out", str(tmp_path), "--no-progress-bar",
                "--env-kwargs", *FAST_ARGS])  # fmt: skip
    from stable_baselines3 import PPO

    assert PPO.load(out / "model.zip").num_timesteps == 6
    # a resume with another seed or env option refuses, naming it; a second run into the same folder refuses; a
    # missing checkpoint is named as given (not PATH.zip.zip)
    with pytest.raises(ValueError, match=re.escape("seed: checkpoint 0, now 1")):
        train_main([*args[: args.index("--eval-seeds")], *resumed, "--seed", "1", "--out", str(tmp_path),
                    "--env-kwargs", *FAST_ARGS])  # fmt: skip
    with pytest.raises(ValueError, match=re.escape("resolved_env_kwargs: checkpoint {")):
        train_main([*args[: args.index("--eval-seeds")], *resumed, "--out", str(tmp_path), "--env-kwargs",
                    *FAST_ARGS, "lr=0.5"])  # fmt: skip
    with pytest.raises(
        ValueError, match=re.escape(f"--resume: '{checkpoint}' was saved by ppo, not a2c: pass --algo ppo")
    ):
        train_main(["--algo", "a2c", "--resume", str(checkpoint), "--out", str(tmp_path / "a2c_run"), "--env-kwargs",
                    *FAST_ARGS])  # fmt: skip
    assert not (tmp_path / "a2c_run" / "a2c").exists()  # refused before any output
    with pytest.raises(ValueError, match=re.escape("seed: checkpoint 0, now 1")):  # into another --out: still compared
        train_main([*args[: args.index("--out")], "--resume", str(checkpoint), "--seed", "1", "--out",
                    str(tmp_path / "fork"), "--env-kwargs", *FAST_ARGS])  # fmt: skip
    result = _run("-m", "agents.train", *args)
    assert result.returncode == 2 and "already holds a run" in result.stderr.strip().splitlines()[-1], result.stderr
    with pytest.raises(FileNotFoundError, match=re.escape(f"--resume: no checkpoint at '{tmp_path}/gone.zip'")):
        train_main([*args, "--resume", str(tmp_path / "gone.zip")])


def test_env_ids_take_gyms_module_prefix() -> None:
    """``module:Id`` is gym.make's form (the module is imported first); the README shows permgym:PermSampling-v0."""
    assert env_config("permgym:PermSampling-Spatial-v0", {}) == env_config("PermSampling-Spatial-v0", {})
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        env_config("no_such_module:PermSampling-v0", {})


def test_dqn_gets_the_discrete_mode_and_refuses_others(capsys: pytest.CaptureFixture) -> None:
    assert resolve_env_kwargs("dqn", "PermSampling-v0", {})["action_mode"] == "discrete"
    assert "using action_mode='discrete'" in capsys.readouterr().out
    with pytest.raises(ValueError, match=re.escape("dqn needs action_mode='discrete'")):
        resolve_env_kwargs("dqn", "PermSampling-v0", {"action_mode": "per_sample"})
    with pytest.raises(ValueError, match="unknown config option"):
        resolve_env_kwargs("ppo", "PermSampling-v0", {"steps": 3})


def test_evaluate_end_to_end_on_a_tiny_config(tmp_path: Path) -> None:
    """PG and PPO trained on training seeds, evaluated against uniform: the code path of the full comparison."""
    metrics = main(["--quick", "--workers", "1", "--samplers", "uniform", "stratified", "pg", "ppo", "oracle_reward",
                    "--oracle-candidates", "2", "--probe-epochs", "2", "--out", str(tmp_path), "--benchmarks",
                    str(tmp_path / "BENCHMARKS.md")])  # fmt: skip
    assert set(metrics["samplers"]) == {"untrained", "uniform", "stratified", "pg", "ppo", "oracle_reward"}
    normalised = {name: row["normalized_score"]["mean"] for name, row in metrics["samplers"].items()}
    if metrics["normalisation"]["oracle"] > metrics["normalisation"]["stratified"]:
        assert normalised["stratified"] == pytest.approx(0.0, abs=1e-9)
        assert normalised["oracle_reward"] == pytest.approx(1.0)
    else:  # no headroom measured: no scale
        assert all(math.isnan(v) for v in normalised.values())
    for name, row in metrics["samplers"].items():
        assert len(row["probe_top1"]["values"]) == 2, name
        assert 0.0 <= row["probe_top1"]["mean"] <= 1.0 and 0.0 <= row["heldout_accuracy"]["mean"] <= 1.0
    assert metrics["baseline"] == "stratified"
    assert set(metrics["paired_vs_baseline"]) == {"uniform", "pg", "ppo", "oracle_reward"}
    runs = [r for r in metrics["runs"] if r["sampler"] == "pg"]
    assert {r["seed"] for r in runs} == {1000, 1001} and len(runs[0]["usage"]["temporal"]) == 3
    for name in ("config.json", "metrics.json", "results.md", "learning_curves.png", "usage_heatmap.png"):
        assert (tmp_path / name).is_file(), name
    assert len(metrics["pg_selection"]) == 3 and all((tmp_path / f"pg_candidate{i}.pt").is_file() for i in range(3))
    assert (tmp_path / "ppo_train" / "ppo" / "model.zip").is_file()
    results = (tmp_path / "results.md").read_text()
    paired = results.split("Paired difference to stratified")[1]
    for name in ("uniform", "pg", "ppo"):  # one row per sampler in each table
        assert results.count(f"| {name} |") == 2 and paired.count(f"| {name} |") == 1, name
    assert BENCHMARK_HEADING in (tmp_path / "BENCHMARKS.md").read_text()


def test_evaluate_refuses_overlapping_seeds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("training and evaluation seeds must be disjoint; both contain [3]")):
        main(["--quick", "--train-seeds", "1", "3", "--eval-seeds", "3", "4", "--out", str(tmp_path)])


def test_benchmark_section_replaces_only_its_own_text(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\n## Other\n\nkeep me\n\n{BENCHMARK_HEADING}\n\nold\n\n## Later\n\nkeep too\n")
    write_section(BENCHMARK_HEADING, f"{BENCHMARK_HEADING}\n\nnew table", path)
    text = path.read_text()
    assert "old" not in text and "new table" in text and "keep me" in text and "keep too" in text
    assert text.index("new table") < text.index("## Later")


def test_mean_ci_is_the_student_t_interval() -> None:
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652729911275 * 1.0 / 3**0.5)
    assert mean_ci([5.0]) == (5.0, 0.0)


def test_train_with_parallel_envs_prints_no_eval_env_type_warning(tmp_path: Path) -> None:
    """SubprocVecEnv training with a DummyVecEnv evaluation env is intended: SB3's type-mismatch warning is not shown."""
    args = ["--algo", "ppo", "--n-envs", "2", "--total-timesteps", "4", "--n-steps", "2", "--eval-seeds", "100",
            "--eval-freq", "1", "--checkpoint-freq", "2", "--out", str(tmp_path), "--no-progress-bar",
            "--env-kwargs", *FAST_ARGS]  # fmt: skip
    result = _run("-m", "agents.train", *args)
    assert result.returncode == 0, result.stderr
    assert "not of the same type" not in result.stderr, result.stderr


def test_evaluate_into_a_folder_holding_a_run_offers_no_resume_option(tmp_path: Path) -> None:
    """agents.evaluate has no --resume, so the refusal of an occupied --out names only what it accepts."""
    (tmp_path / RUN_MARKER).touch()
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match=re.escape("already holds a run (metrics.json): replace it with --overwrite, "
                                                   "or choose another --out")):  # fmt: skip
        main(["--quick", "--out", str(tmp_path)])
