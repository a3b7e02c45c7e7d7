"""torchrun helpers and data-parallel training: one-process fallbacks, meters, and a real 2-process gloo group."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from permgym.config import make_config
from permgym.distributed import (
    MetricLogger,
    SmoothedValue,
    World,
    average_buffers,
    broadcast_object,
    cleanup_distributed,
    gather_per_rank,
    gather_shards,
    max_divergence,
    own_entry,
    save_on_main,
    wrap_ddp,
)
from permgym.env import PermSamplingEnv
from permgym.finetune import ActionClassifier, FinetuneConfig, FinetuneTrainer
from permgym.models import build_trunk
from permgym.run import init_distributed
from permgym.trainer import OrderingTrainer

#: A small joint config: both tasks, so the DDP forward covers the two heads in one call.
CONFIG = make_config("tiny-joint", batch_size=8, val_batch_size=4, clip_frames=12, frame_size=32)


def _clips(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("count", [0, 1, 5, 8, 9])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_cover_every_item_once(count: int, world_size: int) -> None:
    shards = [World(rank, world_size).shard(count) for rank in range(world_size)]
    covered = [i for s in shards for i in range(count)[s]]
    assert covered == list(range(count))
    sizes = [s.stop - s.start for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_single_process_fallbacks(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    world = init_distributed("cpu")
    assert world == World() and world.is_main and not world.distributed
    assert "Not using distributed mode" in capsys.readouterr().out
    module = torch.nn.BatchNorm1d(3)
    before = module.running_mean.clone()
    average_buffers(module)
    assert torch.equal(module.running_mean, before)
    assert max_divergence(module) == 0.0
    assert broadcast_object({"a": 1}) == {"a": 1}
    x = torch.arange(6.0)
    assert gather_shards(x, world, 6) is x
    save_on_main(world, {"x": x}, tmp_path / "state.pth")
    assert torch.equal(torch.load(tmp_path / "state.pth")["x"], x)
    assert not (tmp_path / "state.pth.tmp").exists()
    save_on_main(World(rank=1, world_size=2), {"x": x}, tmp_path / "other.pth")
    assert not (tmp_path / "other.pth").exists()
    assert gather_per_rank("state") == ["state"] and own_entry(["state"]) == "state"
    with pytest.raises(ValueError, match=re.escape("written with 2 process(es) and this run has 1: resume with the "
                                                   "same number (torchrun --nproc_per_node=2)")):  # fmt: skip
        own_entry(["rank 0", "rank 1"])


def test_cuda_request_without_cuda_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="needs CUDA"):
        init_distributed("cuda")


def test_smoothed_value_and_logger(capsys: pytest.CaptureFixture[str]) -> None:
    meter = SmoothedValue(window=3)
    for value in (1.0, 2.0, 3.0, 10.0):
        meter.update(value)
    assert meter.median == 3.0 and meter.avg == 5.0 and meter.global_avg == 4.0
    meter.update(0.0, n=4)
    assert meter.global_avg == pytest.approx(16 / 8)
    logger = MetricLogger(World())
    seen = []
    for i in logger.log_every(range(4), print_freq=2, header="h", total=4, progress=False):
        logger.update(loss=float(i))
        seen.append(i)
    assert seen == [0, 1, 2, 3]
    out = capsys.readouterr().out
    assert "h [2/4]  loss" in out and "h [4/4]  loss 1.0000 (1.5000)" in out  # the lower median, as torch.median


# ---------------------------------------------------------------------------------------------------- 2 processes
def _two_process_checks(rank: int, world_size: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        _checks_in_group(World(rank, world_size))
    finally:
        cleanup_distributed()  # after the checks' DDP wrappers went out of scope


def _checks_in_group(world: World) -> None:
    rank, world_size = world.rank, world.world_size
    # helpers
    assert broadcast_object(f"from {rank}") == "from 0"
    local = torch.arange(5.0)[world.shard(5)] * 10
    assert torch.equal(gather_shards(local, world, 5), torch.arange(5.0) * 10)
    bn = torch.nn.BatchNorm1d(2)
    bn.running_mean.fill_(float(rank))
    average_buffers(bn)
    assert torch.allclose(bn.running_mean, torch.full((2,), 0.5))
    per_rank = gather_per_rank({"rank": rank})
    assert per_rank == [{"rank": r} for r in range(world_size)] and own_entry(per_rank) == {"rank": rank}
    with pytest.raises(ValueError, match="written with 1 process"):
        own_entry(per_rank[:1])

    # ordering trainer: each rank gets its share of the same global batch, and the ranks stay in lock-step
    train, val = _clips(20, 0), _clips(4, 1)
    reference = OrderingTrainer(CONFIG, train, val, seed=3)
    trainer = OrderingTrainer(CONFIG, train, val, seed=3)
    trainer.distribute(world)
    full, mine = reference.sample_batch(), trainer.sample_batch()
    for task, elements in full.items():
        assert torch.equal(gather_shards(mine[task], world, len(elements)), elements)
    losses = []
    for _ in range(3):
        losses.append(trainer.update(trainer.sample_batch(), trainer.uniform_permutations()).loss)
    assert max_divergence(trainer.model) == 0.0
    gathered = [None] * world_size
    dist.all_gather_object(gathered, (losses, {t: s["loss"] for t, s in trainer.validate().items()}))
    assert gathered[0][0] == gathered[1][0]  # the reported loss is the global mean on every rank
    assert all(torch.equal(gathered[0][1][t], gathered[1][1][t]) for t in gathered[0][1])
    assert trainer.updates_done == 3

    # fine-tuning: DDP keeps the classifiers identical
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ActionClassifier(build_trunk("tiny"), 4, 3)
    ft = FinetuneTrainer(model, FinetuneConfig(batch_size=6, epochs=1), 12, world, seed=0)
    labels = torch.arange(12) % 3
    for index in ft.epoch_batches():
        stats = ft.step(train[index], labels[index])
        assert 0.0 <= stats["accuracy"] <= 1.0
    assert max_divergence(model) == 0.0

    # the env applies its world at every reset: each rank steps its own env, DDP splits the updates
    env = PermSamplingEnv(CONFIG.replace(synthetic_videos=120, synthetic_classes=12), world=world)
    for seed in (0, 1):
        env.reset(seed=seed)
        assert isinstance(env.trainer.loss_module, DistributedDataParallel) and env.trainer.world == world
    env.step(env.action_space.sample() * 0)
    assert max_divergence(env.trainer.model) == 0.0


def test_two_gloo_processes_agree(tmp_path: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_two_process_checks, args=(2, str(tmp_path / "init")), nprocs=2, start_method="fork")


def test_wrap_ddp_keeps_rank_local_buffers_without_torch_deprecation_noise(tmp_path: Path) -> None:
    """Every DDP wrap printed torch 2.14's broadcast_buffers FutureWarning once per rank under torchrun."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wrapped = wrap_ddp(torch.nn.BatchNorm1d(3), torch.device("cpu"))
        assert not [w for w in caught if "broadcast_buffers" in str(w.message)], [str(w.message) for w in caught]
        assert isinstance(wrapped, DistributedDataParallel) and wrapped.broadcast_buffers is False
        del wrapped
    finally:
        cleanup_distributed()


# ---------------------------------------------------------------------------------------------------- CUDA / AMP
def test_amp_needs_cuda() -> None:
    with pytest.raises(ValueError, match=re.escape("amp=True needs a CUDA device, the env's config has device='cpu'")):
        PermSamplingEnv(CONFIG, amp=True)
    trainer = OrderingTrainer(CONFIG, _clips(10, 0), _clips(4, 1), seed=0)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        trainer.enable_amp()
    with pytest.raises(ValueError, match="needs a CUDA device"):
        FinetuneTrainer(ActionClassifier(build_trunk("tiny"), 4, 3), FinetuneConfig(), 10, amp=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_updates_on_cuda() -> None:
    config = CONFIG.replace(device="cuda")
    trainer = OrderingTrainer(config, _clips(10, 0), _clips(4, 1), seed=0)
    trainer.enable_amp()
    stats = [trainer.update(trainer.sample_batch(), trainer.uniform_permutations()) for _ in range(3)]
    assert all(s.finite for s in stats)
    assert "scaler" in trainer.state_dict()
    assert all(torch.isfinite(v["loss"]).all() for v in trainer.validate().values())
    world = World(device=torch.device("cuda"))
    model = ActionClassifier(build_trunk("tiny"), 4, 3)
    ft = FinetuneTrainer(model, FinetuneConfig(batch_size=4, epochs=1), 8, world, amp=True)
    labels = torch.arange(8) % 3
    clips = _clips(8, 2)
    for index in ft.epoch_batches():
        assert torch.isfinite(torch.tensor(ft.step(clips[index], labels[index])["loss"]))
