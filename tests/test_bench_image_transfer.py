"""bench/image_transfer.py reuses a run only when its recorded flags and the trunk it read are the same."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.script_loading import load_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    return load_script(REPO / "bench" / "image_transfer.py", "bench_image_transfer", monkeypatch)


def finished_run(folder: Path, command: list[str], mtime: float = 2e9) -> Path:
    folder.mkdir(parents=True)
    for name, content in (("config.json", {"command": command}), ("metrics.json", {"mAP": 0.3}),
                          ("wall.json", {"wall_s": 1.0})):  # fmt: skip
        (folder / name).write_text(json.dumps(content))
        os.utime(folder / name, (mtime, mtime))
    return folder


def test_pretraining_reused_only_with_the_same_flags(bench, tmp_path: Path) -> None:
    flags = ["--quick", "--task", "spatial", "--sampler", "stratified", "--seed", "0"]
    folder = finished_run(tmp_path / "ssl", ["ssl_ucf101.py", *flags[:4], "--out", "elsewhere", "--overwrite",
                                             *flags[4:]])  # fmt: skip
    assert not bench.same_pretraining(folder, flags)  # no trunk.pth
    (folder / "trunk.pth").write_bytes(b"trunk")
    assert bench.same_pretraining(folder, flags)  # --out and --overwrite aside
    assert not bench.same_pretraining(folder, [*flags[:5], "1"])  # another seed
    assert not bench.same_pretraining(folder, [f.replace("stratified", "uniform") for f in flags])
    assert not bench.same_pretraining(tmp_path / "missing", flags)


def test_transfer_reused_only_from_the_same_trunk_file(bench, tmp_path: Path) -> None:
    old_trunk, trunk = tmp_path / "old" / "trunk.pth", tmp_path / "new" / "trunk.pth"
    for path in (old_trunk, trunk):
        path.parent.mkdir()
        path.write_bytes(b"weights")
        os.utime(path, (1e9, 1e9))  # written before the run
    tail = ["--seed", "0", "--epochs", "10"]
    folder = finished_run(tmp_path / "run", ["image_transfer.py", "--init", f"ssl:{old_trunk}", *tail, "--out", "x"])
    assert bench.same_transfer(folder, ["--init", f"ssl:{trunk}", *tail])  # moved, byte-identical
    assert not bench.same_transfer(folder, ["--init", f"ssl:{trunk}", "--seed", "1", "--epochs", "10"])
    assert not bench.same_transfer(folder, ["--init", "random", *tail])
    trunk.write_bytes(b"other weights")
    assert not bench.same_transfer(folder, ["--init", f"ssl:{trunk}", *tail])  # another trunk
    os.utime(old_trunk, (3e9, 3e9))  # rewritten after the run: the run may have read an older trunk
    assert not bench.same_transfer(folder, ["--init", f"ssl:{old_trunk}", *tail])
    (folder / "wall.json").unlink()
    os.utime(old_trunk, (1e9, 1e9))
    assert not bench.same_transfer(folder, ["--init", f"ssl:{old_trunk}", *tail])  # untimed
