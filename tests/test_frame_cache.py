"""Frame cache: build, round trip, skipped videos, config check, resume, workers, the prepare CLI."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from permgym.clip_pools import load_clip_pools
from permgym.config import make_config
from permgym.data import UCF101, FrameCache, build_frame_cache, load_or_build_cache
from permgym.data.cache import PROGRESS_FILE
from permgym.data.prepare import get_args_parser, main
from permgym.run import run_cli
from tests.video_fixtures import make_ucf101_tree, write_bad_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ucf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny UCF101 (3 classes x 3 groups) with one undecodable and one missing train video."""
    root, annotations = make_ucf101_tree(tmp_path_factory.mktemp("ucf"), groups=(1, 8, 15), frames=20)
    write_bad_video(root / "Archery/v_Archery_g08_c01.avi", "random")
    (root / "ApplyEyeMakeup/v_ApplyEyeMakeup_g15_c01.avi").unlink()
    return root, annotations


def make_train(ucf: tuple[Path, Path], **kwargs: object) -> UCF101:
    with pytest.warns(RuntimeWarning, match="do not exist"):
        return UCF101(*ucf, split=1, train=True, **{"frames": 6, "size": (24, 32), **kwargs})


def test_round_trip_equals_decoded_frames(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    dataset = make_train(ucf)
    cache = build_frame_cache(dataset, tmp_path / "cache", progress=False)
    good = [i for i, v in enumerate(dataset.videos) if "Archery_g08" not in v]
    assert cache.clips.shape == (len(good), 6, 3, 24, 32) and cache.clips.dtype == torch.uint8
    assert cache.labels.dtype == torch.int64 and cache.labels.tolist() == [int(dataset.labels[i]) for i in good]
    for row, i in enumerate(good):
        clip, label = cache[row]
        assert torch.equal(clip, dataset.load_clip(i)) and label == int(dataset.labels[i])
    assert cache.classes == dataset.classes == cache.class_names
    assert cache.videos == [dataset.videos[i] for i in good]


def test_index_records_config_and_skipped_videos(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = ucf
    cache = build_frame_cache(make_train(ucf), tmp_path / "cache", progress=False)
    index = json.loads((tmp_path / "cache/index.json").read_text())
    assert index["counts"] == {"listed": 6, "cached": 4, "skipped": 2}
    assert index["config"] == cache.config and index["config"]["size"] == [24, 32] and index["config"]["split"] == 1
    assert index["skipped"][str(root / "ApplyEyeMakeup/v_ApplyEyeMakeup_g15_c01.avi")] == "listed but missing"
    assert "could not open" in index["skipped"][str(root / "Archery/v_Archery_g08_c01.avi")]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["clips.u8", "index.json"]
    assert not (tmp_path / "cache.partial").exists()
    assert "FrameCache(" in repr(cache) and "clips=4" in repr(cache) and "skipped=2" in repr(cache)


def test_load_or_build_reuses_only_a_matching_config(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cache"
    load_or_build_cache(make_train(ucf), out, progress=False)
    stamp = (out / "clips.u8").stat().st_mtime_ns
    assert len(load_or_build_cache(make_train(ucf), out, progress=False)) == 4
    assert (out / "clips.u8").stat().st_mtime_ns == stamp
    other = make_train(ucf, frames=3)
    with pytest.raises(ValueError, match=re.escape("another config (frames: cached 6 vs wanted 3)")):
        load_or_build_cache(other, out)
    assert load_or_build_cache(other, out, rebuild=True, progress=False).clips.shape[1] == 3


def test_a_cache_is_not_reused_after_the_split_files_change(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    """Editing trainlist01.txt in place (e.g. to fewer classes) must not reuse the cache of the old listing."""
    root, annotations = ucf
    split = tmp_path / "splits"
    shutil.copytree(annotations, split)
    load_or_build_cache(make_train((root, split)), tmp_path / "cache", progress=False)
    lines = (split / "trainlist01.txt").read_bytes().split(b"\r\n")
    (split / "trainlist01.txt").write_bytes(b"\r\n".join(line for line in lines if b"Archery" not in line))
    with pytest.raises(ValueError, match=r"holds a frame cache of another config \(listing: cached '[0-9a-f]{16}'"):
        load_or_build_cache(make_train((root, split)), tmp_path / "cache", progress=False)


def test_interrupted_build_resumes(ucf: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = make_train(ucf)
    calls: list[int] = []
    load_clip = dataset.load_clip

    def interrupted(index: int) -> torch.Tensor:
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(index)
        return load_clip(index)

    monkeypatch.setattr(dataset, "load_clip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_frame_cache(dataset, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()
    assert len(json.loads((tmp_path / "cache.partial" / PROGRESS_FILE).read_text())["done"]) == 3
    calls.clear()
    monkeypatch.setattr(dataset, "load_clip", lambda index: calls.append(index) or load_clip(index))
    resumed = build_frame_cache(dataset, tmp_path / "cache", progress=False)
    assert calls == [3, 4]  # only the clips not decoded before the interruption
    fresh = build_frame_cache(make_train(ucf), tmp_path / "fresh", progress=False)
    assert torch.equal(resumed.clips, fresh.clips) and torch.equal(resumed.labels, fresh.labels)


def test_workers_give_the_same_cache(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    serial = build_frame_cache(make_train(ucf), tmp_path / "serial", progress=False)
    parallel = build_frame_cache(make_train(ucf), tmp_path / "parallel", workers=2, progress=False)
    assert torch.equal(serial.clips, parallel.clips) and parallel.skipped == serial.skipped


def test_cache_pickles_without_pixels(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    cache = build_frame_cache(make_train(ucf), tmp_path / "cache", progress=False)
    data = pickle.dumps(cache)
    assert len(data) < cache.clips.numel()
    clone = pickle.loads(data)
    assert torch.equal(clone.clips, cache.clips) and torch.equal(clone.labels, cache.labels)


def test_cache_errors(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(f"frame cache index not found: '{tmp_path / 'index.json'}'")):
        FrameCache(tmp_path)
    with pytest.raises(ValueError, match=re.escape("needs one exact frame size for all clips, got size=24")):
        build_frame_cache(make_train(ucf, size=24), tmp_path / "c")
    with pytest.raises(ValueError, match="temporal_jitter=False"):
        build_frame_cache(make_train(ucf, temporal_jitter=True), tmp_path / "c")
    build_frame_cache(make_train(ucf), tmp_path / "cache", progress=False)
    with open(tmp_path / "cache/clips.u8", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="the cache is damaged; rebuild it"):
        FrameCache(tmp_path / "cache")
    (tmp_path / "file.txt").write_text("a file")  # e.g. --cache-dir or --out under a file: one clear error
    with pytest.raises(ValueError, match=re.escape(f"cannot create the frame cache folder '{tmp_path}/file.txt/c")):
        build_frame_cache(make_train(ucf), tmp_path / "file.txt" / "c", progress=False)


def test_pretraining_refuses_a_cache_of_test_videos(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    """PERMGYM_UCF101_CACHE / cache_path naming a cache built with --subset test would train on the test videos."""
    build_frame_cache(UCF101(*ucf, split=1, train=False, frames=6, size=(24, 32)), tmp_path / "test", progress=False)
    config = make_config("tiny", dataset="cache", cache_path=str(tmp_path / "test"))
    with pytest.raises(ValueError, match="holds the test videos of UCF101, which pretraining must never see"):
        load_clip_pools(config)


def _prepare_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``python -m permgym.data.prepare`` with ``args`` in this process; its stderr (one line, exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, get_args_parser(), args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "prepare: error: " in err, err
    return err


def test_prepare_cli(ucf: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, annotations = ucf
    out = tmp_path / "cache"
    args = ["ucf101", "--root", str(root), "--annotations", str(annotations), "--out", str(out)]
    command = [sys.executable, "-m", "permgym.data.prepare", *args, "--subset", "test", "--size", "16", "20"]
    result = subprocess.run([*command, "--frames", "4"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "cached 3 of 3 listed videos, skipped 0" in result.stdout
    cache = FrameCache(out)
    assert cache.clips.shape == (3, 4, 3, 16, 20) and cache.config["train"] is False
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--help"])
    assert "--workers" in capsys.readouterr().out
    args = ["ucf101", "--root", str(tmp_path / "nope"), "--annotations", str(annotations), "--out", str(out)]
    assert f"UCF101 video root not found: '{tmp_path / 'nope'}'" in _prepare_error(args, capsys)


def test_build_never_deletes_a_folder_that_is_not_a_cache(ucf: tuple[Path, Path], tmp_path: Path) -> None:
    """A user's folder (or a foreign ``.partial`` sibling) is refused before decoding and left untouched."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match=r"is not empty and is not a frame cache \(it holds notes.txt\)"):
        build_frame_cache(make_train(ucf), out, progress=False)
    with pytest.raises(ValueError, match="is not empty and is not a frame cache"):
        load_or_build_cache(make_train(ucf), out, rebuild=True, progress=False)
    assert (out / "notes.txt").read_text() == "precious" and not (tmp_path / "mine.partial").exists()
    partial = tmp_path / "other.partial"
    partial.mkdir()
    (partial / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="partial frame cache folder"):
        build_frame_cache(make_train(ucf), tmp_path / "other", progress=False)
    assert (partial / "keep.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    cache = build_frame_cache(make_train(ucf), empty, progress=False)
    rebuilt = load_or_build_cache(make_train(ucf), empty, rebuild=True, progress=False)  # a cache may be replaced
    assert torch.equal(cache.labels, rebuilt.labels)


def test_prepare_refuses_the_video_tree_and_user_folders(
    ucf: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, annotations = ucf
    listing = sorted(p.relative_to(root) for p in root.rglob("*"))
    for out in (root, root / "Archery", root.parent):
        args = ["ucf101", "--root", str(root), "--annotations", str(annotations), "--out", str(out), "--rebuild"]
        err = _prepare_error(args, capsys)
        assert "overlaps the video folder --root" in err or "is not empty" in err, err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == listing
    args = ["ucf101", "--root", str(root), "--annotations", str(annotations), "--out", "."]  # the current folder
    assert "frame cache folder '.' is not empty and is not a frame cache" in _prepare_error(args, capsys)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--frames", "0"], "--frames must be >= 1, got 0"), (["--size", "0"], "each >= 1, got [0]"),
     (["-j", "-1"], "--workers must be >= 0, got -1"), (["--fps", "0"], "--fps must be > 0, got 0.0")],
)  # fmt: skip
def test_prepare_checks_its_options_first(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["folder", "--root", str(tmp_path / "videos"), "--out", str(tmp_path / "cache"), *extra]
    assert message in _prepare_error(args, capsys) and not (tmp_path / "cache").exists()
