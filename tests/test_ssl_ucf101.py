"""experiments/ssl_ucf101.py end to end on tiny budgets: the CLI on embedded data and on a real encoded-video UCF101
tree, kill-and-resume equivalence, two torchrun processes, and bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from permgym.clip_pools import load_clip_pools
from permgym.distributed import World
from permgym.models import build_trunk, load_trunk
from permgym.probe import ProbeData, clip_features, retrieval_topk, retrieval_windows, standardize, vcop_retrieval
from permgym.run import RunError, RunFolder, run_cli
from tests.process_fixtures import free_ports
from tests.video_fixtures import make_folder_tree, make_hmdb51_tree, make_ucf101_tree, write_bad_video

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "ssl_ucf101.py"
sys.path.insert(0, str(SCRIPT.parent))
import ssl_ucf101  # noqa: E402

#: A budget small enough for tests (on top of --quick): 12 classes, 4 sampler steps of 2 updates, 1-2 epochs.
TINY = ["--quick", "--synthetic-videos", "120", "--synthetic-classes", "12", "--ssl-updates", "8",
        "--updates-per-step", "2", "--ssl-batch-size", "8", "--ft-epochs", "2", "--ft-batch-size", "16",
        "--test-clips", "2", "--eval-every", "1", "--threads", "1", "--no-progress"]  # fmt: skip
OUTPUTS = ("config.json", "metrics.json", "results.md", "loss_curves.png", "permutation_usage.png",
           "confusion_matrix.png", "checkpoint.pth", "trunk.pth", "sampler.pth", "finetuned.pth")  # fmt: skip


def _run(
    *argv: str, env: dict[str, str] | None = None, launcher: list[str] | None = None
) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable]), str(SCRIPT), *argv]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment, cwd=ROOT)


def _metrics(out: Path) -> dict[str, float]:
    return json.loads((out / "metrics.json").read_text())


def _comparable(metrics: dict[str, float]) -> dict[str, float]:
    """Everything but wall-clock times."""
    return {k: v for k, v in metrics.items() if "time/" not in k}


def test_quick_run_on_embedded_data_with_baselines(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run(*TINY, "--compare", "uniform,random-init", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Not using distributed mode" in proc.stdout
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert (out / "uniform" / "trunk.pth").is_file() and (out / "random-init" / "trunk.pth").is_file()
    assert any((out / "tb" / "policy_gradient" / "ssl").iterdir())
    metrics = _metrics(out)
    for key in ("ssl/val_loss", "ssl/val_accuracy", "ssl/temporal/val_accuracy", "finetune/top1", "finetune/top5",
                "retrieval/top1", "retrieval/top50", "time/ssl_s", "uniform/finetune/top1",
                "random-init/retrieval/top1", "data/train_videos"):  # fmt: skip
        assert key in metrics, key
    assert "random-init/ssl/val_loss" not in metrics
    assert metrics["ssl/updates"] == 8 and metrics["data/classes"] == 12
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k.endswith(("top1", "top5")))
    config = json.loads((out / "config.json").read_text())
    assert config["ssl_config"]["steps_per_episode"] == 4 and config["variants"] == ["policy_gradient", "uniform",
                                                                                     "random-init"]  # fmt: skip
    results = (out / "results.md").read_text()
    assert "| policy_gradient (main) |" in results and "| random-init |" in results
    trunk = load_trunk(out / "trunk.pth")  # what experiments/dc_transfer.py reads
    assert trunk.name == "tiny"
    assert torch.load(out / "trunk.pth", weights_only=True)["variant"] == "policy_gradient"


@pytest.fixture
def keep_threads():
    """main() runs in this process here and sets torch's thread count (--threads): put it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cli(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the script's command line in this process; return stderr of a failing run (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(ssl_ucf101.main, ssl_ucf101.get_args_parser(), argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    return err


def test_interrupted_runs_resume_to_the_same_metrics(
    tmp_path: Path, keep_threads: None, capsys: pytest.CaptureFixture
) -> None:
    """A run stopped inside pretraining and resumed ends like an uninterrupted one (the exact resume of each stage
    is unit-tested with the env, sampler and fine-tuning trainer state dicts); the resume refuses changed options."""
    parser = ssl_ucf101.get_args_parser()
    common = [*TINY, "--sampler", "policy_gradient", "--compare", "random-init", "--checkpoint-every", "1"]
    straight = ssl_ucf101.main(parser.parse_args([*common, "--out", str(tmp_path / "straight")]))
    out = str(tmp_path / "resumed")
    # 8 pretraining + 2 x 6 fine-tuning updates per run: stop inside pretraining (after 2 of 4 sampler steps)
    assert ssl_ucf101.main(parser.parse_args([*common, "--out", out, "--stop-after", "4"])) is None
    state = torch.load(Path(out) / "checkpoint.pth", weights_only=False)
    assert (state["variant"], state["stage"], state["updates"]) == ("policy_gradient", "ssl", 4)
    assert state["config"]["seed"] == 0 and state["elapsed_s"] > 0
    # options that change results are refused, each named with both values; nothing is written
    for flags, named in ((["--seed", "1"], "seed: checkpoint 0, now 1"),
                         (["--ssl-lr", "0.01"], "ssl_lr: checkpoint None, now 0.01"),
                         (["--sampler", "uniform"], "sampler: checkpoint 'policy_gradient', now 'uniform'")):  # fmt: skip
        err = _cli([*common, "--out", out, "--resume", *flags], capsys)
        assert "--resume with options that change results (" + named in err and err.count("\n") == 1, err
    assert torch.load(Path(out) / "checkpoint.pth", weights_only=False)["updates"] == 4
    # a second run into the folder of another run refuses (no --resume / --overwrite)
    assert "already holds a run (checkpoint.pth" in _cli([*common, "--out", out], capsys)
    elapsed = state["elapsed_s"]
    resumed = ssl_ucf101.main(parser.parse_args([*common, "--out", out, "--resume", "--print-freq", "3"]))
    assert _comparable(resumed) == _comparable(straight)
    assert _comparable(_metrics(Path(out))) == _comparable(straight)
    stages = sum(v for k, v in resumed.items() if k.startswith("time/") and k != "time/total_s")
    assert resumed["time/total_s"] >= max(stages, elapsed)  # all invocations, not only the last one
    assert "8 pretraining updates" in (Path(out) / "results.md").read_text()


def test_diverged_pretraining_stops_with_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A pretraining that diverges leaves a trunk of non-finite weights: the run stops there, naming the cause, and
    writes no trunk.pth (which dc_transfer would load) instead of failing later in fine-tuning."""
    out = tmp_path / "out"
    err = _cli([*TINY, "--sampler", "uniform", "--ssl-lr", "1e30", "--out", str(out)], capsys)
    assert (
        "error: pretraining with uniform diverged after 1 SGD update(s)" in err and "lower --ssl-lr (now 1e+30)" in err
    )
    assert err.count("\n") == 1 and not (out / "trunk.pth").exists()


def test_run_folder_is_owned_and_locked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    with RunFolder(out):  # another run holds the folder
        assert "is in use by another run" in _cli([*TINY, "--out", str(out)], capsys)
    assert not out.exists()  # a folder made for a run that could not start is removed again
    assert "--resume: no checkpoint at" in _cli([*TINY, "--out", str(out), "--resume"], capsys)
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert "holds files that no permgym run wrote (notes.txt)" in _cli([*TINY, "--out", str(out), "--resume"], capsys)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_tiny_ucf101_tree_of_real_videos(tmp_path: Path, keep_threads: None, capsys: pytest.CaptureFixture) -> None:
    root, annotations = make_ucf101_tree(tmp_path, frames=20)
    write_bad_video(root / "Archery" / "v_Archery_g08_c02.avi", "truncated")
    with open(annotations / "trainlist01.txt", "ab") as f:
        f.write(b"Archery/v_Archery_g08_c02.avi 2\r\n")
    out = tmp_path / "out"
    argv = ["--dataset", "ucf101", "--root", str(root), "--annotations", str(annotations), "--frames", "12",
            "--frame-size", "32", "--cache-dir", str(tmp_path / "cache"), "--task", "temporal", "--backbone", "tiny",
            "--ssl-option", "element_size=32", "--ssl-updates", "4", "--updates-per-step", "2",
            "--ssl-batch-size", "4", "--ft-epochs", "1", "--ft-batch-size", "4", "--test-clips", "2", "--threads", "1",
            "--no-progress", "--out", str(out)]  # fmt: skip
    metrics = ssl_ucf101.main(ssl_ucf101.get_args_parser().parse_args(argv))
    printed = capsys.readouterr().out
    assert "6 of 7 videos, 1 skipped" in printed and "v_Archery_g08_c02.avi" in printed
    assert metrics["data/skipped_train"] == 1 and metrics["data/train_videos"] == 6
    assert metrics["data/test_videos"] == 3 and metrics["data/classes"] == 3
    assert "finetune/top1" in metrics and "retrieval/top5" in metrics and "retrieval/top10" not in metrics
    # the caches are reused: a second run decodes nothing and gets the same results
    index = tmp_path / "cache" / "ucf101_split1_train_12f_32px" / "index.json"
    built = index.stat().st_mtime_ns
    again = ssl_ucf101.main(ssl_ucf101.get_args_parser().parse_args([*argv, "--overwrite"]))
    assert index.stat().st_mtime_ns == built
    assert _comparable(again) == _comparable(metrics)


def test_class_folder_without_official_split(tmp_path: Path, keep_threads: None) -> None:
    root = make_folder_tree(tmp_path, frames=16)  # 2 classes x 5 videos
    argv = ["--dataset", "folder", "--root", str(root), "--frames", "12", "--frame-size", "32", "--cache-dir",
            str(tmp_path / "cache"), "--task", "temporal", "--backbone", "tiny", "--ssl-option", "element_size=32",
            "--ssl-updates", "2", "--updates-per-step", "2", "--ssl-batch-size", "4", "--ft-epochs", "1",
            "--ft-batch-size", "4", "--test-clips", "1", "--threads", "1", "--no-progress", "--out",
            str(tmp_path / "out")]  # fmt: skip
    metrics = ssl_ucf101.main(ssl_ucf101.get_args_parser().parse_args(argv))
    # every 5th video of each class is a test video; each part has its own cache, pretraining reads the training one
    assert (metrics["data/train_videos"], metrics["data/test_videos"], metrics["data/skipped_train"]) == (8, 2, 0)
    for part, count in (("train", 8), ("test", 2)):
        index = json.loads((tmp_path / "cache" / f"folder_{part}_12f_32px" / "index.json").read_text())
        assert len(index["videos"]) == count and index["config"]["part"] == part
    test_videos = json.loads((tmp_path / "cache" / "folder_test_12f_32px" / "index.json").read_text())["videos"]
    assert sorted(Path(v).name for v in test_videos) == ["clip4.mov", "clip4.mov"]  # the 5th of each class
    # another tree with the same --cache-dir: refused (the caches are another config's), with the fix this CLI has
    other = shutil.copytree(root, tmp_path / "other")
    argv[argv.index(str(root))], argv[argv.index("--out") + 1] = str(other), str(tmp_path / "out2")
    with pytest.raises(ValueError, match=r"holds a frame cache of another config \(root: .*choose another --cache-dir"):
        ssl_ucf101.main(ssl_ucf101.get_args_parser().parse_args(argv))


def _dataset_argv(dataset: str, tmp_path: Path) -> list[str]:
    video = ["--frames", "12", "--frame-size", "32", "--cache-dir", str(tmp_path / "cache"), "--task", "temporal",
             "--no-progress"]  # fmt: skip
    if dataset == "synthetic":
        return ["--synthetic-videos", "120", "--synthetic-classes", "12"]
    if dataset == "folder":
        return ["--dataset", "folder", "--root", str(make_folder_tree(tmp_path, frames=16)), *video]
    make_tree = make_ucf101_tree if dataset == "ucf101" else make_hmdb51_tree
    root, annotations = make_tree(tmp_path, frames=16)
    return ["--dataset", dataset, "--root", str(root), "--annotations", str(annotations), *video]


@pytest.mark.parametrize("dataset", ssl_ucf101.DATASETS)
def test_pretraining_never_sees_test_videos(dataset: str, tmp_path: Path) -> None:
    args = ssl_ucf101.apply_preset(ssl_ucf101.get_args_parser().parse_args(_dataset_argv(dataset, tmp_path)))
    world = World()
    config = ssl_ucf101.make_ssl_config(args, world)
    data = ssl_ucf101.load_data(args, config, world)
    pools = load_clip_pools(config)  # what the env's trainer trains on and validates (reward) with

    def contents(clips: torch.Tensor) -> set[bytes]:
        return {clip.numpy().tobytes() for clip in clips}

    pretraining = set().union(*(contents(pool.clips[pool.index]) for pool in pools))
    test = contents(data.test_clips)
    assert len(test) == len(data.test_clips) > 0  # every test clip differs, so the comparison below can see them
    assert pretraining.isdisjoint(test)
    assert pretraining == contents(data.train_clips)  # and the pool is the whole training split


def _retrieval_data(videos: int = 48, frames: int = 16) -> ProbeData:
    g = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (videos, frames, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(videos) % 6
    return ProbeData(clips[:36], labels[:36], clips[36:], labels[36:], [str(c) for c in range(6)], {})


def _reference_topk(query: torch.Tensor, gallery: torch.Tensor, data: ProbeData) -> dict[str, float]:
    gallery, query = standardize(gallery, query)
    return retrieval_topk(query, data.test_labels, gallery, data.train_labels, ks=(1, 5, 10, 20))


def test_retrieval_averages_window_features_per_video() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trunk = build_trunk("tiny")
    data = _retrieval_data()
    ft = ssl_ucf101.FinetuneConfig(num_frames=4, image_size=32, min_stride=2)  # test stride 3 on 16 frames
    # one clip: the protocol of earlier versions, one view of 4 frames spread over the whole clip
    one = vcop_retrieval(trunk, data, ft.num_frames, ft.test_stride(16), ft.image_size, ft.crop_fraction, clips=1)
    old = _reference_topk(clip_features(trunk, data.test_clips), clip_features(trunk, data.train_clips), data)
    assert one == {**{f"retrieval/{k}": v for k, v in old.items()}, "retrieval/windows": 1.0}
    # ten clips: 7 distinct windows fit in 16 frames; each video's feature is the mean of its window features
    windows = retrieval_windows(16, 4, 3, 10)
    assert len(windows) == 7

    def brute_force(clips: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.stack([clip_features(trunk, clip[None, w])[0] for w in windows]).mean(0)
                            for clip in clips])  # fmt: skip

    ten = vcop_retrieval(trunk, data, ft.num_frames, ft.test_stride(16), ft.image_size, ft.crop_fraction, clips=10)
    expected = _reference_topk(brute_force(data.test_clips), brute_force(data.train_clips), data)
    assert ten == {**{f"retrieval/{k}": pytest.approx(v) for k, v in expected.items()}, "retrieval/windows": 7.0}


def _spawned_parted_run(rank: int, world_size: int, ports: list[int], argv: list[str]) -> None:
    """One of ``world_size`` processes (as torchrun would start them): stop inside pretraining, resume and stop
    inside fine-tuning, resume to the end; each invocation joins a new process group on its own port."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1")
    parser = ssl_ucf101.get_args_parser()
    for port, extra in zip(ports, (["--stop-after", "4"], ["--resume", "--stop-after", "10"],
                                   ["--resume"]), strict=True):  # fmt: skip
        os.environ["MASTER_PORT"] = str(port)
        result = ssl_ucf101.main(parser.parse_args([*argv, *extra]))
        if rank == 0 and extra[-1] != "--resume":
            state = torch.load(Path(argv[-1]) / "checkpoint.pth", weights_only=False)
            assert result is None and state["stage"] == ("ssl" if extra[1] == "4" else "finetune")
            assert len(state["rng"]) == 2  # one entry per rank
            assert not (Path(argv[-1]) / "metrics.json").exists()


def test_two_processes_resume_exactly(tmp_path: Path, keep_threads: None) -> None:
    """2 gloo processes: an uninterrupted torchrun run (the one torchrun smoke test), and the same run stopped inside
    pretraining, resumed, stopped inside fine-tuning and resumed again (two processes started once by
    torch.multiprocessing), end with the same metrics and weights. The checkpoint keeps each rank's global RNG
    states, and a run with another number of processes refuses to resume from it."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    common = [*TINY, "--checkpoint-every", "1"]
    straight, parted = tmp_path / "straight", tmp_path / "parted"
    proc = _run(*common, "--out", str(straight), launcher=torchrun)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed mode: 2 processes, backend gloo" in proc.stdout
    assert proc.stdout.count("results in") == 1  # only rank 0 reports and writes
    metrics = _metrics(straight)
    assert metrics["ddp/world_size"] == 2
    assert metrics["ddp/max_weight_divergence"] == 0.0  # the ranks hold identical weights
    assert (straight / "trunk.pth").is_file() and not list(straight.glob("*.tmp"))

    # 8 pretraining updates, then 2 epochs of fine-tuning: stop after 4 (pretraining), then after epoch 1
    mp.start_processes(
        _spawned_parted_run, args=(2, free_ports(3), [*common, "--out", str(parted)]), nprocs=2, start_method="fork"
    )
    assert _comparable(_metrics(parted)) == _comparable(metrics)
    for name in ("trunk.pth", "finetuned.pth"):
        key = "state_dict" if name == "trunk.pth" else "model"
        a, b = (torch.load(out / name, weights_only=False)[key] for out in (straight, parted))
        assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys(), name

    # one process cannot take over the two ranks' random states (checked on loading, before anything runs)
    with pytest.raises(RunError, match=re.escape("--resume: the checkpoint was written with 2 process(es) and this "
                                                 "run has 1")):  # fmt: skip
        ssl_ucf101.main(ssl_ucf101.get_args_parser().parse_args([*common, "--out", str(parted), "--resume"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sampler", "best"], "unknown sampler 'best'; choose from policy_gradient, uniform"),
        (["--compare", "uniform,foo"], "invalid --compare entry 'foo' (choose from random-init"),
        (["--dataset", "kinetics"], "invalid choice: 'kinetics'"),
        (["--task", "audio"], "invalid choice: 'audio'"),
        (["--dataset", "ucf101"], "--dataset ucf101 needs --root"),
        (["--dataset", "ucf101", "--root", "nowhere/UCF-101", "--annotations", "nowhere/list"],
         "UCF101 video root not found: 'nowhere/UCF-101'. Expected root/<Class>/v_<Class>_gGG_cCC.avi"),
        (["--ssl-option", "colour=red"], "unknown config option(s) colour"),
        (["--ssl-batch-size", "0"], "--ssl-batch-size must be >= 1, got 0"),
        (["--updates-per-step", "0"], "--updates-per-step must be >= 1, got 0"),
        (["--ssl-lr", "0"], "--ssl-lr must be > 0, got 0.0"),
        (["--root", "data/UCF-101"], "--root do(es) not apply to --dataset synthetic"),
        (["--dataset", "folder", "--root", "x", "--annotations", "y"], "--annotations does not apply to --dataset folder"),
        (["--resume", "--overwrite"], "--resume and --overwrite contradict each other"),
        ([*TINY, "--synthetic-videos", "3"], "--synthetic-videos 3 over --synthetic-classes 12 leaves no test video"),
        (["--dataset", "folder", "--root", "nowhere/videos", "--frames", "5"],
         "clips of 5 frames (--frames) cannot hold the temporal task's 4 frames at stride >= 2: give at least 7"),
    ],
)  # fmt: skip
def test_bad_input_names_the_problem(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Bad input ends in one line on stderr (exit status 2) before any work: no output folder is made."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(ssl_ucf101.main, ssl_ucf101.get_args_parser(), [*argv, "--out", str(tmp_path / "out")])
    text = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in text.strip().splitlines()[-1], text[-2000:]  # argparse's errors follow its usage lines
    assert not (tmp_path / "out").exists()


def test_help_states_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # no line breaks inside the help texts
    text = ssl_ucf101.get_args_parser().format_help()
    assert "(default: policy_gradient)" in text and "(default: runs/ssl_ucf101)" in text
    assert "(default: 1200 on synthetic, 20000 on videos; with --quick: 200)" in text
    assert "--retrieval-clips N" in text and "(VCOP: 10)" in text and "--no-sync-bn" in text
