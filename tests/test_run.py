"""permgym.run: the run layer every command-line program uses."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from permgym.distributed import World
from permgym.run import (
    BACKUP_MARKER,
    LOCK_FILE,
    RUN_MARKER,
    Presets,
    RunError,
    RunFolder,
    add_stop_argument,
    check_same_config,
    fill_defaults,
    load_checkpoint,
    load_checkpoints,
    parse_key_value,
    require_apart,
    require_at_least,
    require_finite,
    run_cli,
    save_checkpoint,
)
from tests.script_loading import load_script


def test_key_value_is_json_else_a_string() -> None:
    assert parse_key_value("lr=1e-3") == ("lr", 1e-3)
    assert parse_key_value("steps=40") == ("steps", 40) and isinstance(parse_key_value("steps=40")[1], int)
    assert parse_key_value("warm_start=null") == ("warm_start", None)
    assert parse_key_value("flag=true") == ("flag", True)
    assert parse_key_value('config={"a": [1, 2]}') == ("config", {"a": [1, 2]})
    assert parse_key_value("reward=uniform_relative") == ("reward", "uniform_relative")
    assert parse_key_value("path=a=b") == ("path", "a=b")
    for bad in ("lr", "=3"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"expected KEY=VALUE, got {bad!r}")):
            parse_key_value(bad)


def test_presets_fill_only_unset_options_and_sizes_are_checked() -> None:
    args = argparse.Namespace(epochs=None, lr=0.1, batch=None)
    fill_defaults(args, {"epochs": 3}, {"epochs": 9, "lr": 1.0, "batch": 8})
    assert (args.epochs, args.lr, args.batch) == (3, 0.1, 8)
    args.batch = 0
    with pytest.raises(ValueError, match=re.escape("--batch must be >= 1, got 0")):
        require_at_least(args, 1, "epochs", "batch")


def test_one_preset_mechanism_and_one_stop_flag() -> None:
    presets = Presets({"small": {"epochs": 4, "data": {"frame": 7}}, "large": {"epochs": 20, "lr": 0.1},
                       "quick": {"epochs": 2}}, labels={"small": "on small", "large": "on large",
                       "quick": "with --quick"}, overrides=("quick",))  # fmt: skip
    assert presets.help("epochs", "epochs") == "epochs (default: 4 on small, 20 on large; with --quick: 2)"
    args = argparse.Namespace(epochs=None, lr=None)
    presets.fill(args, "quick", "small")  # "data" is not an option of args: the script reads it itself
    assert vars(args) == {"epochs": 2, "lr": None} and presets["small"]["data"] == {"frame": 7}
    args = presets.fill(argparse.Namespace(epochs=7, lr=None), None, "large")
    assert (args.epochs, args.lr) == (7, 0.1)
    parser = argparse.ArgumentParser()
    add_stop_argument(parser, "epochs", " in this invocation")
    assert parser.parse_args(["--stop-after", "3"]).stop_after == 3
    assert "after N epochs in this invocation" in " ".join(parser.format_help().split())
    with pytest.raises(ValueError, match=re.escape("--margin must be a finite number, got nan")):
        require_finite(argparse.Namespace(margin=float("nan")), "margin")


def test_run_folder_ownership(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with RunFolder(out) as run:
        (run.path / "metrics.json").write_text("{}")
    assert not (out / LOCK_FILE).read_text() == ""  # the lock file names the process that held it
    with pytest.raises(RunError, match=re.escape(f"--out '{out}' already holds a run (metrics.json): continue it")):
        RunFolder(out).__enter__()
    with RunFolder(out, overwrite=True), RunFolder(tmp_path / "other", resume=True):
        pass
    assert not (tmp_path / "other").exists()  # made for a run that wrote nothing: removed again
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file, not a folder"):
        RunFolder(tmp_path / "file").__enter__()
    with pytest.raises(
        RunError, match=re.escape(f"--out '{tmp_path / 'file' / 'run'}' cannot be written (Not a directory)")
    ):
        RunFolder(tmp_path / "file" / "run").__enter__()  # was a NotADirectoryError traceback
    with pytest.raises(RunError, match="--resume and --overwrite contradict each other"):
        RunFolder(out, resume=True, overwrite=True)


def test_overwrite_moves_the_previous_run_aside_and_never_mixes_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, backup = tmp_path / "run", tmp_path / "run.previous"
    (out / "K4").mkdir(parents=True)  # e.g. left by an earlier run with --compare-k 1,4
    (out / RUN_MARKER).write_text("")  # a run's folder
    (out / "K4" / "checkpoint.pth").write_text("old K4")
    (out / "metrics.json").write_text("old")
    with RunFolder(out, overwrite=True) as run:
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, RUN_MARKER]  # the new run starts afresh
        with pytest.raises(RunError, match="is in use by another run"):  # still locked while it moved the old run
            RunFolder(out, overwrite=True).__enter__()
        (run.path / "metrics.json").write_text("new")
    assert capsys.readouterr().out == f"--overwrite: the previous run in '{out}' was moved to '{backup}'\n"
    assert (backup / "K4" / "checkpoint.pth").read_text() == "old K4" and (backup / "metrics.json").read_text() == "old"
    assert (backup / BACKUP_MARKER).is_file()
    with RunFolder(out, overwrite=True):  # the backup of an earlier --overwrite is replaced by the newer run
        pass
    assert "(replacing the older backup there)" in capsys.readouterr().out
    assert sorted(p.name for p in backup.iterdir()) == [BACKUP_MARKER, "metrics.json"]
    assert (backup / "metrics.json").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, RUN_MARKER]
    # anything else at the backup's path is never deleted: refused, the run left where it is, the lock released
    (out / "metrics.json").write_text("newer")
    (backup / BACKUP_MARKER).unlink()  # now an ordinary folder
    refused = re.escape(f"to '{backup}', but that path holds something that is not a backup of a run")
    with pytest.raises(RunError, match=refused):
        RunFolder(out, overwrite=True).__enter__()
    assert sorted(p.name for p in backup.iterdir()) == ["metrics.json"]
    assert (out / "metrics.json").read_text() == "newer"
    shutil.rmtree(backup)
    backup.write_text("a user's file")
    with pytest.raises(RunError, match=refused):
        RunFolder(out, overwrite=True).__enter__()
    assert backup.read_text() == "a user's file" and (out / "metrics.json").read_text() == "newer"
    with RunFolder(out, resume=True):  # the lock was released
        pass


def test_overwrite_through_a_cli_leaves_only_the_new_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """dc_transfer -K 1 --overwrite over a folder whose earlier run also trained K = 4: no K4/ next to the new run."""
    script = Path(__file__).resolve().parents[1] / "experiments" / "dc_transfer.py"
    dc_transfer = load_script(script, "run_overwrite_dc_transfer")
    out = tmp_path / "dc"
    (out / "K4").mkdir(parents=True)
    (out / RUN_MARKER).write_text("")
    (out / "K4" / "checkpoint.pth").write_text("the earlier run's K = 4")
    (out / "metrics.json").write_text('{"K4/R@1": 0.5}')
    argv = ["--quick", "--epochs", "1", "--iters-per-epoch", "1", "--full-embedding-epoch", "-1", "--finetune-epoch",
            "-1", "--batch-size", "8", "--samples-per-class", "2", "--embedding-dim", "8", "--no-progress", "--threads",
            "1", "--data-option", "videos_per_class=2", "-K", "1", "--init", "random", "--out", str(out), "--overwrite"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run_cli(dc_transfer.main, dc_transfer.get_args_parser(), argv)
    assert exit_info.value.code == 0
    assert f"--overwrite: the previous run in '{out}' was moved to '{out}.previous'" in capsys.readouterr().out
    assert not (out / "K4").exists() and (out / "K1" / "checkpoint.pth").is_file()
    assert not any(key.startswith("K4") for key in json.loads((out / "metrics.json").read_text()))
    assert (tmp_path / "dc.previous" / "K4" / "checkpoint.pth").read_text() == "the earlier run's K = 4"


def test_a_folder_no_run_wrote_is_never_moved_or_written(tmp_path: Path) -> None:
    """--out at a dataset or someone's folder: refused with every flag, so a second --overwrite cannot delete it."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(RunError, match=re.escape(f"--out '{theirs}' holds files that no permgym run wrote")):
            RunFolder(theirs, **flags).__enter__()
    assert sorted(p.name for p in theirs.iterdir()) == ["thesis.tex"] and not (tmp_path / "theirs.previous").exists()
    legacy = tmp_path / "legacy"  # a run written before the marker existed: its lock file and config.json
    legacy.mkdir()
    for name in (LOCK_FILE, "config.json"):
        (legacy / name).write_text("")
    with RunFolder(legacy, overwrite=True):
        pass
    assert (tmp_path / "legacy.previous" / "config.json").is_file()


@pytest.mark.parametrize("out", ["data", "data/runs/dc", "."])
def test_out_apart_from_the_data_folder(out: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(f"--out '{tmp_path / out}' overlaps the dataset folder --root")):
        require_apart(tmp_path / out, tmp_path / "data")
    require_apart(tmp_path / "runs", tmp_path / "data")
    require_apart(tmp_path / "data2", tmp_path / "data")


def test_a_second_process_cannot_take_a_locked_folder(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom permgym.run import RunFolder, RunError\n"
        "try:\n    RunFolder(sys.argv[1], resume=True).__enter__()\nexcept RunError as err:\n    print(err)\n"
    )
    with RunFolder(tmp_path / "run"):
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                              timeout=120, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert "is in use by another run" in proc.stdout, proc.stderr
    with RunFolder(tmp_path / "run", overwrite=True):  # released when the holder exits
        pass


def test_a_path_given_relative_or_absolute_is_the_same_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_same_config({"root": "UCF-101", "lr": 0.1}, {"root": str(tmp_path / "UCF-101"), "lr": 0.1})
    check_same_config({"root": "./UCF-101/"}, {"root": "UCF-101"})
    with pytest.raises(RunError, match="root: checkpoint 'UCF-101', now 'HMDB51'"):
        check_same_config({"root": "UCF-101"}, {"root": "HMDB51"})


def test_checkpoints_store_the_config_and_refuse_changed_options(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "checkpoint.pth"
    config = {"seed": 0, "lr": 0.1, "threads": 1}
    save_checkpoint(World(), path, config, {"weights": torch.ones(2)})
    save_checkpoint(World(rank=1, world_size=2), tmp_path / "rank1.pth", config, {})
    assert not (tmp_path / "rank1.pth").exists()  # only rank 0 writes
    state = load_checkpoint(path, {**config, "threads": 4}, ignored=("threads",))
    assert torch.equal(state["weights"], torch.ones(2)) and state["config"] == config
    assert len(state["rng"]) == 1 and set(state["rng"][0]) == {"torch", "cuda", "numpy", "python"}  # one per rank
    message = "--resume with options that change results (lr: checkpoint 0.1, now 0.2; seed: checkpoint 0, now 1)"
    with pytest.raises(RunError, match=re.escape(message)):
        load_checkpoint(path, {**config, "seed": 1, "lr": 0.2})
    with pytest.raises(RunError, match="new: checkpoint None, now 3"):
        check_same_config(config, {**config, "new": 3})
    with pytest.raises(RunError, match=re.escape(f"--resume: no checkpoint at '{tmp_path / 'none.pth'}'")):
        load_checkpoint(tmp_path / "none.pth", config)
    torch.save({"args": config}, tmp_path / "old.pth")
    with pytest.raises(RunError, match="is not a checkpoint of format 1"):
        load_checkpoint(tmp_path / "old.pth", config)


def test_resume_diff_caused_by_a_forgotten_quick_says_so() -> None:
    """--quick is ignored in the comparison (it only fills defaults), but the error names it when it differs."""
    saved = {"quick": True, "epochs": 4}
    with pytest.raises(RunError, match=re.escape("now 20): the run was started with --quick: give it again, or")):
        check_same_config(saved, {"quick": False, "epochs": 20}, ignored=("quick",))
    with pytest.raises(RunError, match="the run was started without --quick: drop it, or"):
        check_same_config({"quick": False, "epochs": 20}, {"quick": True, "epochs": 4}, ignored=("quick",))
    with pytest.raises(RunError, match=r"now 5\): resume with the checkpoint's values"):
        check_same_config(saved, {"quick": True, "epochs": 5}, ignored=("quick",))
    check_same_config(saved, {"quick": False, "epochs": 4}, ignored=("quick",))  # same values: --quick may differ


def test_run_cli_turns_expected_errors_into_one_line(capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--n", type=int, default=1)

    def main(args: argparse.Namespace) -> None:
        if args.n == 0:
            raise ValueError("--n must be >= 1, got 0")
        if args.n == 1:
            raise FileNotFoundError("data/x not found")
        if args.n == 2:
            raise KeyError("a bug")

    for n, line in ((0, "tool: error: --n must be >= 1, got 0\n"), (1, "tool: error: data/x not found\n")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, parser, ["--n", str(n)])
        assert exit_info.value.code == 2 and capsys.readouterr().err == line
    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_cli(main, parser, ["--n", "2"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, parser, ["--n", "3"])
    assert exit_info.value.code == 0


@pytest.mark.parametrize(("resumable", "line"), [
    (True, "tool: interrupted: continue the run from its last checkpoint with --resume\n"),
    (False, "tool: interrupted\n"),
])  # fmt: skip
def test_run_cli_ends_a_ctrl_c_with_one_line(resumable: bool, line: str, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="tool")
    if resumable:
        parser.add_argument("--resume", action="store_true")

    def main(args: argparse.Namespace) -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, parser, [])
    assert exit_info.value.code == 130 and capsys.readouterr().err == line


def test_resume_of_another_part_names_the_options_that_differ(tmp_path: Path) -> None:
    """dc_transfer --resume -K 2 on a K = 4 run said only "no checkpoint"; the README promises the option named."""
    save_checkpoint(World(), tmp_path / "K4" / "checkpoint.pth", {"num_learners": 4, "seed": 0}, {"epoch": 0})
    with pytest.raises(RunError, match=re.escape("(num_learners: checkpoint 4, now 2)")):
        load_checkpoints(tmp_path, {2: tmp_path / "K2" / "checkpoint.pth"}, {"num_learners": 2, "seed": 0})
    with pytest.raises(RunError, match=re.escape(f"--resume: no checkpoint in '{tmp_path / 'other'}'")):
        load_checkpoints(tmp_path / "other", {2: tmp_path / "other" / "K2" / "checkpoint.pth"}, {"num_learners": 2})
