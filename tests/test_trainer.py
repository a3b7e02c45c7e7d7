"""OrderingTrainer / FinetuneTrainer under DDP: when BatchNorm becomes SyncBatchNorm, and that the conversion keeps
the optimiser valid. The 2-process gloo run itself is in tests/test_distributed.py (it would fail if the CPU path
converted: SyncBatchNorm refuses CPU tensors in training mode)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from permgym.config import make_config
from permgym.distributed import World, cleanup_distributed, max_divergence, sync_batchnorm
from permgym.finetune import ActionClassifier, FinetuneConfig, FinetuneTrainer
from permgym.models import OrderingNet, build_trunk
from permgym.trainer import OrderingTrainer

CONFIG = make_config("tiny", batch_size=8, val_batch_size=4, clip_frames=12, frame_size=32)
CUDA = torch.device("cuda")


def _clips(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _bn_types(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def test_no_conversion_on_the_cpu_or_when_disabled() -> None:
    trunk = build_trunk("tiny")
    assert sync_batchnorm(trunk, torch.device("cpu")) is trunk
    assert sync_batchnorm(trunk, CUDA, enabled=False) is trunk
    assert _bn_types(trunk) == {nn.BatchNorm2d}
    no_bn = nn.Linear(3, 2)
    assert sync_batchnorm(no_bn, CUDA) is no_bn


def test_conversion_keeps_parameters_buffers_and_the_optimiser() -> None:
    # the conversion itself is module surgery and runs anywhere; only SyncBatchNorm's synced forward needs a GPU
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ActionClassifier(build_trunk("tiny"), 4, 3)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    keys = list(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 4, 3, 32, 32)
    model.eval()
    expected = model(x)

    converted = sync_batchnorm(model, CUDA)
    assert converted is model  # converted in place: the root is not a BatchNorm layer
    assert _bn_types(model) == {nn.SyncBatchNorm}
    assert all(p is params[name] for name, p in model.named_parameters())  # the very same Parameter objects
    assert all(b is buffers[name] for name, b in model.named_buffers())
    assert list(model.state_dict()) == keys  # checkpoints stay interchangeable with plain BatchNorm
    torch.testing.assert_close(model(x), expected)  # eval mode: running statistics, no process group needed

    # the optimiser built before the conversion updates the converted layers
    bn = next(m for m in model.modules() if isinstance(m, nn.SyncBatchNorm))
    before = bn.weight.detach().clone()
    model(x).square().sum().backward()
    optimizer.step()
    assert not torch.equal(bn.weight, before)


def test_trainers_default_to_sync_bn_and_take_the_option() -> None:
    assert OrderingTrainer(CONFIG, _clips(6, 0), _clips(2, 1), seed=0).sync_bn
    assert not OrderingTrainer(CONFIG, _clips(6, 0), _clips(2, 1), seed=0, sync_bn=False).sync_bn
    model = ActionClassifier(build_trunk("tiny"), 4, 3)
    FinetuneTrainer(model, FinetuneConfig(batch_size=4, epochs=1), 8)  # one process: nothing to convert
    assert _bn_types(model) == {nn.BatchNorm2d}


# ---------------------------------------------------------------------------------------------------- 2 GPUs
def _two_gpu_checks(rank: int, world_size: int, init_file: str, sync_bn: bool) -> None:
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        world = World(rank, world_size, torch.device("cuda", rank))
        config = CONFIG.replace(device=f"cuda:{rank}")
        trainer = OrderingTrainer(config, _clips(20, 0), _clips(4, 1), seed=3, sync_bn=sync_bn)
        model, optimizer = trainer.model, trainer.optimizer
        trainer.distribute(world)
        assert trainer.model is model and trainer.optimizer is optimizer
        assert isinstance(model, OrderingNet)
        assert _bn_types(model) == ({nn.SyncBatchNorm} if sync_bn else {nn.BatchNorm2d})
        for _ in range(3):
            assert trainer.update(trainer.sample_batch(), trainer.uniform_permutations()).finite
        assert max_divergence(trainer.model) == 0.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            classifier = ActionClassifier(build_trunk("tiny"), 4, 3)
        ft = FinetuneTrainer(classifier, FinetuneConfig(batch_size=6, epochs=1), 12, world, sync_bn=sync_bn)
        assert _bn_types(ft.model) == ({nn.SyncBatchNorm} if sync_bn else {nn.BatchNorm2d})
        labels = torch.arange(12) % 3
        clips = _clips(12, 2)
        for index in ft.epoch_batches():
            ft.step(clips[index], labels[index])
        assert max_divergence(ft.model) == 0.0
    finally:
        cleanup_distributed()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs (NCCL allows one process per GPU)")
@pytest.mark.parametrize("sync_bn", [True, False])
def test_two_gpu_processes_sync_batchnorm(tmp_path: Path, sync_bn: bool) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_two_gpu_checks, args=(2, str(tmp_path / "init"), sync_bn), nprocs=2, join=True)


def test_update_reports_each_tasks_own_loss() -> None:
    """Joint task: ``task_loss`` is each task's mean cross-entropy (near log K of its own bank for a fresh CNN), and
    the batch loss is their sample-weighted mean."""
    config = make_config(
        "tiny-joint", batch_size=8, val_batch_size=4, clip_frames=12, frame_size=32, spatial_bank_size=4
    )
    trainer = OrderingTrainer(config, _clips(16, 0), _clips(4, 1), seed=0)
    stats = trainer.update(trainer.sample_batch(), trainer.uniform_permutations())
    sizes = trainer.batch_split
    assert set(stats.task_loss) == set(sizes) == {"temporal", "spatial"}
    weighted = sum(stats.task_loss[t] * sizes[t] for t in sizes) / sum(sizes.values())
    assert abs(weighted - stats.loss) < 1e-5
    for name, task in trainer.tasks.items():
        assert abs(stats.task_loss[name] - math.log(task.bank.size)) < 0.5, (name, stats.task_loss)
