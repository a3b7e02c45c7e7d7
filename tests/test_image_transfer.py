from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import permgym.finetune
from permgym.average_precision import average_precisions
from permgym.data.voc import VOC_CLASSES
from permgym.finetune import ActionClassifier, FinetuneConfig, FinetuneTrainer, prepared
from permgym.models import build_trunk, save_trunk
from permgym.probe import linear_probe_scores
from permgym.run import RunError
from tests.image_fixtures import make_folder, make_voc
from tests.script_loading import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "image_transfer.py"
TINY = ["--quick", "--synthetic-images", "60", "--epochs", "2", "--eval-every", "1", "--probe-epochs", "5",
        "--batch-size", "16", "--no-progress"]  # fmt: skip


image_transfer = load_script(SCRIPT, "image_transfer")


def _parse(*argv: str):
    return image_transfer.get_args_parser().parse_args(list(argv))


def test_quick_run_end_to_end_with_an_ssl_trunk(tmp_path: Path) -> None:
    trunk = build_trunk("tiny")
    save_trunk(trunk, tmp_path / "trunk.pth", task="spatial")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--init", f"ssl:{tmp_path / 'trunk.pth'}", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    classes = [k[3:] for k in metrics if k.startswith("AP/")]
    assert len(classes) == 8 and "crescent" in classes
    for prefix in ("", "probe/"):
        values = [metrics[f"{prefix}AP/{c}"] for c in classes if not math.isnan(metrics[f"{prefix}AP/{c}"])]
        assert len(values) >= 6  # classes without a positive test image have no AP
        assert metrics[f"{prefix}mAP"] == pytest.approx(sum(values) / len(values))
        assert 0 < metrics[f"{prefix}mAP_auc"] <= 1
    assert metrics["data/train_images"] == 40 and metrics["data/test_images"] == 20
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["init_resolved"].startswith("ssl:") and config["args"]["image_size"] == 32
    assert "| fine-tuned |" in (out / "results.md").read_text()
    for name in ("curves.png", "ap_per_class.png"):
        assert (out / name).stat().st_size > 1000
    assert any((out / "tb").glob("events.out.tfevents.*")) and (out / "finetuned.pth").is_file()
    with pytest.raises(RunError, match=r"already holds a run .*: continue it with --resume"):
        image_transfer.main(_parse(*TINY, "--out", str(out)))


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    argv = [*TINY, "--epochs", "3", "--init", "random"]
    straight = image_transfer.main(_parse(*argv, "--out", str(tmp_path / "a")))
    real = permgym.finetune.train_one_epoch

    def interrupt(trainer, batches, epoch, *args, **kwargs):
        if epoch == 3:
            raise KeyboardInterrupt
        return real(trainer, batches, epoch, *args, **kwargs)

    monkeypatch.setattr(permgym.finetune, "train_one_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        image_transfer.main(_parse(*argv, "--out", str(tmp_path / "b")))
    monkeypatch.setattr(permgym.finetune, "train_one_epoch", real)
    with pytest.raises(RunError, match=r"options that change results \(seed: checkpoint 0, now 1\)"):
        image_transfer.main(_parse(*argv, "--out", str(tmp_path / "b"), "--resume", "--seed", "1"))
    resumed = image_transfer.main(_parse(*argv, "--out", str(tmp_path / "b"), "--resume"))
    a = torch.load(tmp_path / "a" / "finetuned.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "finetuned.pth", weights_only=True)["model"]
    for name, x in a.items():
        assert torch.equal(x, b[name]), name
    keys = [k for k in straight if not k.startswith("time/")]
    assert {k: straight[k] for k in keys} == {k: resumed[k] for k in keys}
    with pytest.raises(RunError, match="no checkpoint at"):
        image_transfer.main(_parse(*argv, "--out", str(tmp_path / "c"), "--resume"))


def test_voc_layout_end_to_end(tmp_path: Path) -> None:
    voc = make_voc(tmp_path / "data")
    argv = ["--dataset", "voc2007", "--root", str(voc), "--image-size", "16", "--epochs", "1", "--batch-size", "3",
            "--probe-epochs", "2", "--workers", "0", "--test-crops", "10", "--init", "random", "--no-progress",
            "--threads", "1", "--out", str(tmp_path / "run")]  # fmt: skip
    metrics = image_transfer.main(_parse(*argv))
    assert metrics["data/train_images"] == 6 and metrics["data/test_images"] == 6
    assert {k for k in metrics if k.startswith("AP/")} == {f"AP/{c}" for c in VOC_CLASSES}
    argv[3], argv[-1] = str(tmp_path / "none"), str(tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="expected VOCdevkit/VOC2007/"):
        image_transfer.main(_parse(*argv))


def test_multilabel_step_leaves_difficult_entries_out() -> None:
    torch.manual_seed(0)
    model = ActionClassifier(build_trunk("tiny"), 1, 3)
    config = FinetuneConfig(num_frames=1, image_size=16, batch_size=4, lr=0.0, dropout=0.0, multilabel=True)
    trainer = FinetuneTrainer(model, config, 4, augment=prepared)
    inputs = torch.randn(4, 1, 3, 16, 16)
    targets = torch.tensor([[1, -1, 0], [0, 1, -1], [-1, -1, 1], [1, 0, 0]], dtype=torch.int8)
    stats = trainer.step(inputs, targets)
    model.train()
    with torch.no_grad():
        logits = model(inputs)
    counted = targets != 0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[counted], (targets[counted] > 0).float(),
                                                                     reduction="sum") / 4  # fmt: skip
    assert stats["loss"] == pytest.approx(float(expected), rel=1e-5)
    correct = ((logits > 0) == (targets > 0))[counted].float().mean()
    assert stats["accuracy"] == pytest.approx(float(correct))


def test_multilabel_probe_separates_separable_classes() -> None:
    generator = torch.Generator().manual_seed(0)
    targets = torch.where(torch.rand(200, 4, generator=generator) < 0.3, 1, -1).to(torch.int8)
    features = (targets.float() > 0).float() * 2 + 0.1 * torch.randn(200, 4, generator=generator)
    logits = linear_probe_scores(features[:150], targets[:150], features[150:], epochs=300)
    assert average_precisions(logits, targets[150:], list("abcd"))["mAP"] == 1.0


def test_folder_tree_is_single_label_with_top1(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "tree", classes=("a", "b", "c"))
    argv = ["--dataset", "folder", "--root", str(root), "--image-size", "16", "--epochs", "1", "--batch-size", "8",
            "--probe-epochs", "2", "--workers", "0", "--test-crops", "1", "--init", "random", "--no-progress",
            "--threads", "1", "--out", str(tmp_path / "run")]  # fmt: skip
    metrics = image_transfer.main(_parse(*argv))
    assert metrics["data/train_images"] == 24 and metrics["data/test_images"] == 6
    assert 0 <= metrics["top1"] <= 1 and 0 <= metrics["probe/top1"] <= 1 and 0 < metrics["mAP"] <= 1
    assert "| fine-tuned |" in (tmp_path / "run" / "results.md").read_text()
