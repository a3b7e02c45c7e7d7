"""Misuses of every command-line program end in one ``error:`` line and exit status 2, before any work.

Each case runs the program's ``main`` in this process (through ``permgym.run.run_cli``, as ``__main__`` does), so the
whole table takes seconds. ``{tmp}`` in an argument is the test's temporary folder, which holds ``empty.pth`` (a
zero-byte file), ``text.pth`` (a text file), ``file.txt`` and the empty folder ``empty/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import agents.evaluate
import agents.train
from permgym.data import prepare
from permgym.run import run_cli
from tests.script_loading import load_script

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _script(name: str) -> Any:
    return load_script(EXPERIMENTS / f"{name}.py", f"cli_errors_{name}")


def _cli(program: str) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
    if program in ("ssl_ucf101", "dc_transfer", "image_transfer"):
        module = _script(program)
        return module.main, module.get_args_parser
    if program == "agents.train":
        return agents.train.run, agents.train.get_args_parser
    if program == "prepare":
        return prepare.main, prepare.get_args_parser
    return agents.evaluate.compare, agents.evaluate.get_args_parser


CASES = [
    ("ssl_ucf101", ["--frames", "-1"], "--frames must be >= 1, got -1"),
    ("ssl_ucf101", ["--ssl-lr", "nan"], "--ssl-lr must be > 0, got nan"),
    ("ssl_ucf101", ["--retrieval-clips", "0"], "--retrieval-clips must be >= 1, got 0"),
    ("ssl_ucf101", ["--trunk-lr-scale", "inf"], "--trunk-lr-scale must be a finite number, got inf"),
    ("ssl_ucf101", ["--ft-lr", "inf"], "--ft-lr must be a finite number, got inf"),
    ("ssl_ucf101", ["--seed", "-1"], "--seed must be >= 0, got -1"),
    ("ssl_ucf101", ["--dataset", "hmdb51", "--root", "{tmp}/empty", "--annotations", "{tmp}/file.txt"],
     "--annotations '{tmp}/file.txt' is a file; give the folder of hmdb51's official split files"),
    ("ssl_ucf101", ["--out", "{tmp}/file.txt"], "--out '{tmp}/file.txt' is a file, not a folder"),
    ("ssl_ucf101", ["--dataset", "folder", "--root", "{tmp}/empty", "--out", "{tmp}/empty/run"],
     "--out '{tmp}/empty/run' overlaps the video folder --root '{tmp}/empty'"),
    ("ssl_ucf101", ["--dataset", "folder", "--root", "{tmp}/empty", "--cache-dir", "{tmp}/empty"],
     "--cache-dir '{tmp}/empty/folder_train_32f_128px' overlaps the video folder --root '{tmp}/empty'"),
    ("dc_transfer", ["--init", "ssl:{tmp}/nowhere/trunk.pth"], "no trunk checkpoint at {tmp}/nowhere/trunk.pth"),
    ("dc_transfer", ["--init", "ssl:{tmp}/empty.pth"], "{tmp}/empty.pth is not a trunk checkpoint written by"),
    ("dc_transfer", ["--init", "ssl:{tmp}/text.pth"], "{tmp}/text.pth is not a trunk checkpoint written by"),
    ("dc_transfer", ["--margin", "nan"], "--margin must be a finite number, got nan"),
    ("dc_transfer", ["--weight-decay", "-1"], "--weight-decay must be >= 0, got -1.0"),
    ("dc_transfer", ["--seed", "-1"], "--seed must be >= 0, got -1"),
    ("dc_transfer", ["--beta", "-0.5"], "--beta must be >= 0, got -0.5"),
    ("dc_transfer", ["--compare-k", ","], "argument --compare-k: expected comma-separated integers like 1,4, got ','"),
    ("dc_transfer", ["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    ("dc_transfer", ["--dataset", "cub200", "--root", "{tmp}/nowhere"], "CUB200: {tmp}/nowhere/images.txt not found"),
    ("agents.train", ["--env-kwargs", "lr=fast"], "--env-kwargs: config option lr must be of type float, got 'fast'"),
    ("agents.train", ["--env-kwargs", "colour=red"], "--env-kwargs: unknown config option(s) colour"),
    ("agents.train", ["--env-id", "Nope-v0"], "--env-id 'Nope-v0': Environment `Nope` doesn't exist"),
    ("agents.train", ["--n-envs", "0"], "--n-envs must be >= 1, got 0"),
    ("agents.train", ["--learning-rate", "nan"], "--learning-rate must be > 0, got nan"),
    ("agents.train", ["--env-id", "CartPole-v1"], "--env-id 'CartPole-v1' is not a PermSampling env; choose one of"),
    ("agents.train", ["--n-steps", "1"], "ppo needs rollouts of >= 2 steps (a minibatch is one rollout), got --n-steps 1"),
    ("agents.train", ["--train-seeds", "1", "--eval-seeds", "1"], "--train-seeds and --eval-seeds must be disjoint"),
    ("agents.train", ["--resume", "{tmp}/text.pth"], "--resume: '{tmp}/text.pth' is not a Stable-Baselines3 model .zip"),
    ("agents.evaluate", ["--ppo-episodes", "-1"], "--ppo-episodes must be >= 1, got -1"),
    ("agents.evaluate", ["--env-id", "CartPole-v1"], "--env-id 'CartPole-v1' is not a PermSampling env"),
    ("agents.evaluate", ["--benchmarks", "{tmp}/nowhere/B.md"], "its folder does not exist"),
    ("agents.evaluate", ["--train-seeds", "1", "--samplers", "pg"], "pg: choosing its hyper-parameters needs >= 2"),
    ("agents.evaluate", ["--env-kwargs", "action_mode=discrete"], "pg does not act in action_mode='discrete'"),
    ("image_transfer", ["--lr", "nan"], "--lr must be > 0, got nan"),
    ("image_transfer", ["--trunk-lr-scale", "-1"], "--trunk-lr-scale must be > 0, got -1.0"),
    ("image_transfer", ["--dropout", "1.5"], "--dropout must be in [0, 1), got 1.5"),
    ("image_transfer", ["--threads", "0"], "--threads must be >= 1, got 0"),
    ("image_transfer", ["--resize", "0"], "--resize 0 is smaller than --image-size"),
    ("agents.evaluate", ["--benchmarks", "{tmp}/empty"], "--benchmarks '{tmp}/empty' is a folder"),
    ("agents.evaluate", ["--env-kwargs", "batch_size=3.7"], "config option batch_size must be of type int, got 3.7"),
    ("prepare", ["hmdb51", "--root", "{tmp}/empty", "--annotations", "{tmp}/file.txt"],
     "--annotations '{tmp}/file.txt' is a file"),
    ("prepare", ["folder", "--root", "{tmp}/nowhere"], "VideoFolder root not found: '{tmp}/nowhere'"),
    ("prepare", ["folder", "--root", "{tmp}/empty", "--fps", "inf"], "--fps must be a finite number, got inf"),
    ("prepare", ["hmdb51", "--root", "{tmp}/file.txt", "--annotations", "{tmp}/empty"],
     "HMDB51 video root '{tmp}/file.txt' is a file, not a folder"),
    ("ssl_ucf101", ["--dataset", "folder", "--root", "{tmp}/file.txt"], "VideoFolder root '{tmp}/file.txt' is a file"),
    ("prepare", ["folder", "--root", "{tmp}/empty", "--out", "{tmp}/empty/cache"], "overlaps the video folder --root"),
]  # fmt: skip


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize(("program", "argv", "message"), CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_misuse_is_one_error_line(
    program: str, argv: list[str], message: str, tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main, parser = _cli(program)
    out = tmp / "out"
    argv = [a.replace("{tmp}", str(tmp)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, parser(), argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert exit_info.value.code == 2
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err[-2000:]
    assert message.replace("{tmp}", str(tmp)) in errors[0], errors[0]
    assert not out.exists()  # refused before any output
