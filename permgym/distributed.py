"""torchrun helpers: join the process group or fall back to one process, write on rank 0 only, reduce meters.

``torchrun --nproc_per_node=N script.py ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`permgym.run.init_distributed` reads them and joins the group (NCCL when the run uses CUDA, one GPU per
process chosen by ``LOCAL_RANK``; gloo on the CPU). Without them it prints "Not using distributed mode" and the same
code runs as one process: every helper below is then a no-op or the identity.

Meters follow torchvision's ``references/classification/utils.py``: :class:`SmoothedValue` keeps a window (median,
average) and a global average; :meth:`MetricLogger.synchronize` all-reduces the global counts, and
:meth:`MetricLogger.log_every` wraps an iterable in a progress bar (with ETA) and prints the smoothed meters every
``print_freq`` steps, sending the same scalars to TensorBoard.

Checkpoints of a multi-process run keep what differs between ranks (global RNG states, per-rank generators) as one
entry per rank: :func:`gather_per_rank` collects them, :func:`own_entry` gives each rank its own back on resume (and
refuses another number of processes). :func:`sync_batchnorm` turns BatchNorm into ``SyncBatchNorm`` before the DDP
wrap on GPUs.
"""

from __future__ import annotations

import gc
import os
import random
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """Where this process stands in the run.

    Attributes:
        rank: global rank (0 = the process that writes files).
        world_size: number of processes (1 without torchrun).
        device: the device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        """True when several processes share the work."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files, prints and logs (rank 0)."""
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This process's contiguous share of ``count`` items (shares differ in size by at most one)."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; other names pass through."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cleanup_distributed() -> None:
    """Leave the process group (after a barrier) if this process joined one.

    DistributedDataParallel wrappers that are no longer referenced are collected first: one destroyed after its
    process group aborts the process ("terminate called without an active exception").
    """
    if dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def save_on_main(world: World, obj: Any, path: str | Path) -> None:
    """``torch.save`` on rank 0 only, atomically (a temporary file renamed into place), so a crash mid-write never
    leaves a damaged checkpoint."""
    if not world.is_main:
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (identity without a process group)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity without a process group); returns ``tensor``."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def average_buffers(module: nn.Module) -> None:
    """Replace every floating-point buffer (BatchNorm running statistics) by its mean over ranks, in one
    all-reduce, so that all processes evaluate the same network. No-op without a process group."""
    if not dist.is_initialized():
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1) for b in buffers])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()


def gather_shards(local: torch.Tensor, world: World, count: int) -> torch.Tensor:
    """Concatenate every rank's ``local`` rows, in rank order, where rank ``r`` holds rows ``world.shard(count)``.

    Args:
        local: ``[world.shard(count) length, ...]`` this rank's rows.
        world: the run's world.
        count: total number of rows.

    Returns:
        ``[count, ...]`` on every rank (``local`` itself in a single process).
    """
    if not world.distributed:
        return local
    longest = count // world.world_size + (count % world.world_size > 0)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world.world_size)]
    dist.all_gather(parts, padded)
    sizes = [World(r, world.world_size).shard(count) for r in range(world.world_size)]
    return torch.cat([part[: s.stop - s.start] for part, s in zip(parts, sizes, strict=True)])


def gather_per_rank(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank; ``[obj]`` without a process group.

    Use it for state that differs between processes and must be checkpointed per rank (the global RNG states, a
    miner's generator seeded ``seed + rank``): rank 0 saves the list and, on resume, each rank takes its own entry
    with :func:`own_entry`. Collective under ``torch.distributed``: call it on every rank.

    Args:
        obj: anything picklable (``torch.distributed.all_gather_object`` sends it).

    Returns:
        ``[obj of rank 0, obj of rank 1, ...]`` (``world_size`` entries).
    """
    if not dist.is_initialized():
        return [obj]
    objects: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


def own_entry(per_rank: list[T]) -> T:
    """This rank's entry of a :func:`gather_per_rank` list read back from a checkpoint.

    Args:
        per_rank: the saved list, one entry per process of the run that wrote it.

    Returns:
        ``per_rank[rank]`` (``per_rank[0]`` without a process group).

    Raises:
        ValueError: the checkpoint was written by another number of processes (its per-rank states cannot be
            shared out exactly).
    """
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if len(per_rank) != world_size:
        raise ValueError(
            f"the checkpoint was written with {len(per_rank)} process(es) and this run has {world_size}: resume with "
            f"the same number (torchrun --nproc_per_node={len(per_rank)}), or start afresh without --resume"
        )
    return per_rank[rank]


def rng_states() -> dict[str, Any]:
    """This process's global RNG states: torch (CPU and every CUDA device), NumPy and Python.

    A run's own randomness should use explicit generators; these cover what draws from the global ones (dropout,
    libraries such as Stable-Baselines3). They differ between processes (NumPy's and Python's are seeded from the
    OS), so checkpoints keep one per rank: ``gather_per_rank(rng_states())``, restored by :func:`set_rng_states`.
    """
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),  # noqa: NPY002 (the legacy global RNG is what libraries draw from)
        "python": random.getstate(),
    }


def set_rng_states(per_rank: list[dict[str, Any]]) -> None:
    """Restore this rank's entry (:func:`own_entry`) of a checkpoint's ``gather_per_rank(rng_states())`` list.

    RNG states are CPU tensors; ``torch.load``'s ``map_location`` may have moved them, so they are moved back.
    """
    states = own_entry(per_rank)
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"]:
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])
    np.random.set_state(states["numpy"])  # noqa: NPY002
    random.setstate(states["python"])


def sync_batchnorm(module: nn.Module, device: torch.device, enabled: bool = True) -> nn.Module:
    """``module`` with its BatchNorm layers turned into ``SyncBatchNorm`` when ``enabled`` and ``device`` is CUDA.

    Call it before wrapping the module in ``DistributedDataParallel``. ``SyncBatchNorm`` computes a training batch's
    statistics over every process of the group, and runs only on GPUs: on any other device (CPU processes with gloo)
    the module is returned unchanged, each rank normalising with its own share's statistics.

    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` replaces the layers inside ``module`` in place (the returned
    module is ``module`` unless ``module`` itself is a BatchNorm layer) and the new layers hold the **same**
    ``Parameter`` and buffer tensors, so an optimiser built on ``module.parameters()`` before keeps working and
    ``state_dict`` keys do not change (checkpoints load into plain BatchNorm and back).

    Args:
        module: the network (already on ``device``).
        device: where it computes.
        enabled: False keeps plain BatchNorm everywhere.

    Returns:
        The converted module, or ``module`` itself when nothing is converted.
    """
    if not enabled or device.type != "cuda":
        return module
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)  # a module without BatchNorm comes back unchanged


def wrap_ddp(module: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``module`` in ``DistributedDataParallel`` with rank-local buffers (``broadcast_buffers=False``).

    Each rank keeps its own BatchNorm running statistics (averaged when needed by :func:`average_buffers`). torch
    2.14 deprecates ``broadcast_buffers`` for ``forward_sync_buffers``, whose ``False`` still syncs buffers at
    init, and advises keeping ``broadcast_buffers=False`` for rank-local buffers: its FutureWarning, printed by
    every rank at every wrap, is silenced here.

    Args:
        module: the network (already on ``device``).
        device: where it computes; CUDA devices pass their index as ``device_ids``.

    Returns:
        The wrapped module.
    """
    device_ids = [device.index] if device.type == "cuda" else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
        return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)


def max_divergence(module: nn.Module) -> float:
    """Largest absolute difference of any parameter or buffer between ranks (0.0 without a process group).

    Ranks of a correct data-parallel run hold identical weights; this checks it with two all-reduces.
    """
    if not dist.is_initialized():
        return 0.0
    flat = torch.cat([t.detach().double().reshape(-1) for t in (*module.parameters(), *module.buffers())])
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).max()) if flat.numel() else 0.0


class SmoothedValue:
    """A series of values with its windowed median/average and global average (torchvision's meter).

    Args:
        window: how many recent values the median and average cover.
    """

    def __init__(self, window: int = 20) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        """Add ``value`` (the mean of ``n`` items)."""
        self.values.append(value)
        self.total += value * n
        self.count += n

    def synchronize(self) -> None:
        """Sum ``total`` and ``count`` over ranks (the window stays local)."""
        if not dist.is_initialized():
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        both = torch.tensor([self.total, self.count], dtype=torch.float64, device=device)  # NCCL reduces GPU tensors
        dist.all_reduce(both)
        self.total, self.count = float(both[0]), int(both[1])

    @property
    def median(self) -> float:
        return float(torch.tensor(list(self.values)).median()) if self.values else float("nan")

    @property
    def avg(self) -> float:
        return sum(self.values) / len(self.values) if self.values else float("nan")

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def __str__(self) -> str:
        return f"{self.median:.4f} ({self.global_avg:.4f})"


class MetricLogger:
    """Named :class:`SmoothedValue` meters with a progress bar, periodic printing and TensorBoard scalars.

    Args:
        world: only rank 0 shows the bar, prints and logs.
        window: window of each meter.
    """

    def __init__(self, world: World, window: int = 20) -> None:
        self.world, self.window = world, window
        self.meters: dict[str, SmoothedValue] = {}

    def update(self, n: int = 1, **values: float) -> None:
        """Add one value per named meter (each the mean of ``n`` items)."""
        for name, value in values.items():
            self.meters.setdefault(name, SmoothedValue(self.window)).update(float(value), n)

    def synchronize(self) -> None:
        """All-reduce every meter's global count and total (call on every rank)."""
        for meter in self.meters.values():
            meter.synchronize()

    def __str__(self) -> str:
        return "  ".join(f"{name} {meter}" for name, meter in self.meters.items())

    def log_every(
        self,
        iterable: Iterable[T],
        print_freq: int,
        header: str,
        *,
        total: int,
        initial: int = 0,
        writer: Any | None = None,
        tb_prefix: str = "",
        step_offset: int = 0,
        progress: bool = True,
    ) -> Iterator[T]:
        """Yield ``iterable``'s items under a progress bar with ETA; every ``print_freq`` items print the meters
        (median over the window, global average in brackets) and write their window medians to TensorBoard.

        Args:
            iterable: the work items; the caller updates the meters in the loop body.
            print_freq: items between printed lines.
            header: bar description and line prefix.
            total: number of items of the whole loop (for the ETA).
            initial: items already done before ``iterable`` starts (a resumed loop).
            writer: a ``SummaryWriter`` (or None).
            tb_prefix: TensorBoard tag prefix, e.g. ``"finetune"``.
            step_offset: TensorBoard step of item 0.
            progress: show the bar (rank 0 only in any case).
        """
        show = self.world.is_main
        bar = tqdm(total=total, initial=initial, desc=header, disable=not (show and progress), dynamic_ncols=True)
        try:
            for i, item in enumerate(iterable, start=initial + 1):
                yield item
                bar.update()
                if show and (i % print_freq == 0 or i == total):
                    tqdm.write(f"{header} [{i}/{total}]  {self}")
                    if writer is not None:
                        for name, meter in self.meters.items():
                            writer.add_scalar(f"{tb_prefix}/{name}" if tb_prefix else name, meter.median,
                                              step_offset + i)  # fmt: skip
        finally:
            bar.close()
