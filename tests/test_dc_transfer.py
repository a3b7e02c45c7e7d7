from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from metric.model import build_backbone, resolve_init
from permgym.models import build_trunk, save_trunk
from permgym.run import RUN_MARKER, default_workers, run_cli
from tests.metric_fixtures import make_folder
from tests.process_fixtures import free_ports
from tests.script_loading import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "dc_transfer.py"
TINY = [
    "--quick",
    "--epochs",
    "2",
    "--iters-per-epoch",
    "3",
    "--full-embedding-epoch",
    "1",
    "--finetune-epoch",
    "-1",
    "--batch-size",
    "16",
    "--embedding-dim",
    "16",
    "--no-progress",
    "--threads",
    "1",
    "--projection",
    "pca",
    "--data-option",
    "videos_per_class=6",
]


dc_transfer = load_script(SCRIPT, "dc_transfer")


def _parse(*argv: str):
    return dc_transfer.get_args_parser().parse_args(list(argv))


def _cli(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the script's command line in this process; return the stderr of a failing run (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(dc_transfer.main, dc_transfer.get_args_parser(), argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--full-embedding-epoch", "20"], "--full-embedding-epoch 20 is outside the run's epochs 0..19 (--epochs 20)"),
        (["--quick", "--finetune-epoch", "4"], "--finetune-epoch 4 is outside the run's epochs 0..3 (--epochs 4)"),
        (["--finetune-epoch", "-3"], "--finetune-epoch -3 is outside the run's epochs"),
        (["--quick", "--warmup-epochs", "4"], "warmup_epochs (--warmup-epochs) is 4 but must be in [0, epochs) = [0, 4)"),
        (["--warmup-epochs", "17"], "warmup_epochs (--warmup-epochs 17) must be < finetune_epoch (--finetune-epoch 17)"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--iters-per-epoch", "0"], "--iters-per-epoch must be >= 1, got 0"),
        (["--lr", "-1"], "--lr must be > 0, got -1.0"),
        (["-K", "0"], "--num-learners must be >= 1, got 0"),
        (["--root", "data/CUB"], "--root does not apply to --dataset synthetic"),
        (["--dataset", "cub200"], "--dataset cub200 needs --root"),
        (["--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
        (["--data-option", "frame"], "expected KEY=VALUE, got 'frame'"),
        (["--quick", "-K", "40", "--data-option", "videos_per_class=2"], "-K/--compare-k 40 exceeds the"),
        (["--resume"], "--resume: no checkpoint in"),
        (["--data-option", "colour=red"], "unexpected keyword argument 'colour'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_before_any_work(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert message in _cli([*argv, "--out", str(tmp_path / "out")], capsys)
    assert not (tmp_path / "out").exists()


def test_resume_without_a_checkpoint_is_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / RUN_MARKER).write_text("")  # a run's folder
    (tmp_path / "out" / "config.json").write_text("{}")
    err = _cli([*TINY, "--out", str(tmp_path / "out"), "--resume"], capsys)
    assert "--resume: no checkpoint in" in err and "K4/checkpoint.pth" in err


@pytest.mark.parametrize("out", [".", "runs/dc"])
def test_out_inside_the_dataset_is_refused_and_the_data_untouched(out: str, tmp_path: Path, capsys) -> None:
    """--out at the dataset folder with --overwrite moved the dataset aside; inside a class-per-folder tree the run's
    folder became one more class, its plots the images."""
    root = make_folder(tmp_path / "tree")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    err = _cli([*TINY, "--dataset", "folder", "--root", str(root), "--out", str(root / out), "--overwrite"], capsys)
    assert f"overlaps the dataset folder --root '{root}'" in err
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    assert not (tmp_path / "tree.previous").exists()


def test_default_workers_leave_a_core_to_training() -> None:
    assert [default_workers(n) for n in (1, 2, 3, 4, 8, 64)] == [0, 0, 2, 3, 4, 4]
    assert _parse().device == "auto"


def test_cli_smoke_with_baseline_comparison(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--compare-k", "1", "--num-learners", "2", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "init: random (no runs/ssl_ucf101*/trunk.pth" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("R@1", "R@2", "R@4", "R@8", "NMI", "MAP@R"):
        assert 0 <= metrics[key] <= 1 and 0 <= metrics["runs"]["K=1"][key] <= 1
    assert metrics["num_learners"] == 2 and set(metrics["runs"]) == {"K=1", "K=2"}
    assert metrics["data/skipped_train"] == 0 and metrics["data/skipped_query"] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 2 and config["init_resolved"] == "random" and config["runs_k"] == [1, 2]
    results = (out / "results.md").read_text()
    assert "| 2 |" in results and re.search(r"- K=2: 0: \d+\.\d \(\d+\)", results)  # cluster-class NMI, epoch 0
    for name in ("recall.png", "embedding.png", "clusters.png", "curves.png"):
        assert (out / name).stat().st_size > 1000
    for k in (1, 2):
        assert (out / f"K{k}" / "checkpoint.pth").is_file()
        assert any((out / "tb" / f"K{k}").glob("events.out.tfevents.*"))
        model = torch.load(out / f"K{k}" / "checkpoint.pth", weights_only=False)["trainer"]["model"]
        trunk = build_backbone(None, f"ssl:{out / f'K{k}' / 'trunk.pth'}").state_dict()  # what --init ssl: loads
        assert trunk.keys() == {n[len("backbone.") :] for n in model if n.startswith("backbone.")}
        assert all(torch.equal(v, model[f"backbone.{n}"]) for n, v in trunk.items())  # the trained weights


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path: Path, monkeypatch, capsys) -> None:
    argv = [*TINY, "--epochs", "3", "--num-learners", "2", "--recluster-every", "1", "--finetune-epoch", "-1"]
    straight = dc_transfer.main(_parse(*argv, "--out", str(tmp_path / "a")))

    real = dc_transfer.train_one_epoch

    def interrupt(trainer, loader, epoch, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(trainer, loader, epoch, **kwargs)

    monkeypatch.setattr(dc_transfer, "train_one_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        dc_transfer.main(_parse(*argv, "--out", str(tmp_path / "b")))
    monkeypatch.setattr(dc_transfer, "train_one_epoch", real)
    for flags, named in ((["--seed", "1"], "seed: checkpoint 0, now 1"), (["--lr", "0.01"], "lr: checkpoint 0.001, "
                         "now 0.01"), (["--batch-size", "12"], "batch_size: checkpoint 16, now 12")):  # fmt: skip
        err = _cli([*argv, "--out", str(tmp_path / "b"), "--resume", *flags], capsys)
        assert "--resume with options that change results (" + named in err, err
    assert "already holds a run" in _cli([*argv, "--out", str(tmp_path / "b")], capsys)
    resumed = dc_transfer.main(_parse(*argv, "--out", str(tmp_path / "b"), "--resume", "--threads", "1"))

    a = torch.load(tmp_path / "a" / "K2" / "checkpoint.pth", weights_only=False)
    b = torch.load(tmp_path / "b" / "K2" / "checkpoint.pth", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    for (name, x), y in zip(a["trainer"]["model"].items(), b["trainer"]["model"].values(), strict=True):
        assert torch.equal(x, y), name
    keys = ("R@1", "R@2", "R@4", "R@8", "NMI", "MAP@R")
    assert {k: straight[k] for k in keys} == {k: resumed[k] for k in keys}


def _torchrun(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _spawned_parted_run(rank: int, world_size: int, ports: list[int], argv: list[str]) -> None:
    """One of ``world_size`` processes (as torchrun would start them): stop after epoch 1, then resume to the end;
    each invocation joins a new process group on its own port."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1")
    for port, extra in zip(ports, (["--stop-after", "1"], ["--resume"]), strict=True):
        os.environ["MASTER_PORT"] = str(port)
        result = dc_transfer.main(_parse(*argv, *extra))
        if rank == 0 and extra[0] != "--resume":
            assert result is None and not (Path(argv[-1]) / "metrics.json").exists()


def test_two_processes_resume_exactly(tmp_path: Path) -> None:
    """An uninterrupted torchrun run of 2 processes (the one torchrun smoke test) and the same run stopped after
    epoch 1 and resumed (2 processes started once by torch.multiprocessing) end with the same weights and metrics."""
    # an explicit init: the parted processes run in the repo, where --init auto would find make demo's trunk
    argv = [*TINY, "--num-learners", "2", "--batch-size", "8", "--init", "random"]
    straight, parted = tmp_path / "straight", tmp_path / "parted"
    proc = _torchrun(tmp_path, *argv, "--out", str(straight))
    assert proc.stdout.count("results in") == 1  # only rank 0 writes
    assert json.loads((straight / "config.json").read_text())["world_size"] == 2
    a = torch.load(straight / "K2" / "checkpoint.pth", weights_only=False)
    assert a["config"]["batch_size"] == 8 and a["epoch"] == 1

    mp.start_processes(
        _spawned_parted_run, args=(2, free_ports(2), [*argv, "--out", str(parted)]), nprocs=2, start_method="fork"
    )
    b = torch.load(parted / "K2" / "checkpoint.pth", weights_only=False)
    assert b["epoch"] == 1
    for (name, x), y in zip(a["trainer"]["model"].items(), b["trainer"]["model"].values(), strict=True):
        assert torch.equal(x, y), name
    keys = ("R@1", "R@2", "R@4", "R@8", "NMI", "MAP@R")
    metrics = [json.loads((out / "metrics.json").read_text()) for out in (straight, parted)]
    assert {k: metrics[0][k] for k in keys} == {k: metrics[1][k] for k in keys}
    generators = b["trainer"]["miner_generator"]  # one random state per rank (the miners are seeded seed + rank)
    assert len(b["rng"]) == len(generators) == 2 and not torch.equal(generators[0], generators[1])
    with pytest.raises(ValueError, match=re.escape("the checkpoint was written with 2 process(es) and this run has 1")):
        dc_transfer.main(_parse(*argv, "--out", str(parted), "--resume"))


def test_invalid_values_list_the_choices(capsys) -> None:
    for argv, expected in [
        (["--dataset", "mnist"], "invalid choice: mnist (choose from synthetic, shapes, cub200, cars196, sop, inshop"),
        (["--init", "moco"], "invalid init moco (choose from auto, random, imagenet, ssl:PATH)"),
        (["--backbone", "vgg"], "invalid choice: vgg (choose from resnet50, tiny, tiny-wide, caffenet, resnet18)"),
        (["--data-option", "frame"], "expected KEY=VALUE, got frame"),
        (["--compare-k", "1,x"], "expected comma-separated integers like 1,4"),
    ]:
        with pytest.raises(SystemExit):
            _parse(*argv)
        assert expected in capsys.readouterr().err.replace("'", "")  # some Python versions quote the choices
    help_text = dc_transfer.get_args_parser().format_help()
    assert "(default: 20; with --quick: 4)" in help_text and "(default: margin)" in help_text
    assert _parse().sync_bn and not _parse("--no-sync-bn").sync_bn and "multi-GPU runs" in help_text


def test_an_epoch_is_one_pass_unless_iterations_are_given() -> None:
    assert dc_transfer.apply_preset(_parse()).iters_per_epoch is None  # the sampler makes one pass
    assert dc_transfer.apply_preset(_parse("--iters-per-epoch", "7")).iters_per_epoch == 7


def test_presets_fill_only_unset_values() -> None:
    args = dc_transfer.apply_preset(_parse("--quick", "--epochs", "7", "--finetune-epoch", "-1"))
    assert args.epochs == 7 and args.iters_per_epoch == dc_transfer.PRESETS["quick"]["iters_per_epoch"]
    assert args.finetune_epoch is None and args.workers == 0 and args.image_size == 64 and args.augment == "none"
    assert dict(args.data_option) == dc_transfer.PRESETS["quick"]["synthetic"]
    args = dc_transfer.apply_preset(_parse("--data-option", "frame=3", "--data-option", "seed=2"))
    assert dict(args.data_option) == {**dc_transfer.PRESETS["default"]["synthetic"], "frame": 3, "seed": 2}


def test_auto_init_uses_the_newest_ssl_checkpoint(tmp_path: Path) -> None:
    assert resolve_init("auto", None, tmp_path)[:2] == ("random", "tiny")
    for i, name in enumerate(("ssl_ucf101", "ssl_ucf101_long")):
        (tmp_path / name).mkdir()
        save_trunk(build_trunk("tiny"), tmp_path / name / "trunk.pth")
        os.utime(tmp_path / name / "trunk.pth", (1000 + i, 1000 + i))
    (tmp_path / "ssl_ucf101.previous").mkdir()  # the newest, but a run moved aside by --overwrite: never picked
    save_trunk(build_trunk("tiny"), tmp_path / "ssl_ucf101.previous" / "trunk.pth")
    init, backbone, message = resolve_init("auto", None, tmp_path)
    assert init == f"ssl:{tmp_path / 'ssl_ucf101_long' / 'trunk.pth'}" and backbone == "tiny"
    assert "the last ssl_ucf101 run" in message
    init, backbone, message = resolve_init("auto", "resnet18", tmp_path)
    assert (init, backbone) == ("random", "resnet18") and "is 'tiny', not 'resnet18'" in message
    assert resolve_init(f"ssl:{tmp_path / 'ssl_ucf101' / 'trunk.pth'}", None, tmp_path)[1] == "tiny"
    assert resolve_init("imagenet", "resnet50", tmp_path) == ("imagenet", "resnet50", "init: imagenet")
