"""The ordering trainer: one CNN training run, driven one SGD update at a time by whoever chooses permutations.

The same class runs inside ``PermSampling-v0`` (one env step = ``updates_per_step`` updates) and inside the long
pretraining of ``experiments/ssl_ucf101.py``, so a sampling policy learned in the env is the policy used at scale.

Randomness: the trainer owns one ``torch.Generator`` (data order, augmentation, permutation draws) and builds its
network under a forked global RNG seeded from the same seed, so it never touches or depends on torch's global state.

Several processes (:meth:`OrderingTrainer.distribute`, under torchrun): every rank holds the same trainer (same seed),
draws the same *global* batch of ``batch_size`` clips and the same permutations, and trains on its own contiguous
share of them; ``DistributedDataParallel`` averages the gradients, the reported loss is the global mean and the
BatchNorm running statistics are averaged after each update. So all ranks stay in lock-step: same weights, same
validation statistics, same observations. On CUDA the BatchNorm layers become ``SyncBatchNorm`` (``sync_bn``, on by
default), which normalises each training batch by the statistics of the global batch rather than of the rank's share;
on the CPU (gloo) they stay plain BatchNorm, since ``SyncBatchNorm`` runs on GPUs only (see
:func:`permgym.distributed.sync_batchnorm`).
Mixed precision (:meth:`OrderingTrainer.enable_amp`, CUDA only) runs the forward passes under ``torch.autocast`` and
scales the loss with a ``GradScaler``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from permgym.config import PermSamplingConfig
from permgym.distributed import World, average_buffers, resolve_device, sync_batchnorm, wrap_ddp
from permgym.models import OrderingNet, build_trunk, per_permutation_statistics
from permgym.permutations import PermutationBank, make_bank
from permgym.tasks import OrderingTask, SpatialTask, TemporalTask


def build_tasks(config: PermSamplingConfig) -> dict[str, OrderingTask]:
    """The ordering tasks (with their banks) that ``config`` asks for, keyed by task name."""
    tasks: dict[str, OrderingTask] = {}
    if config.uses_temporal:
        bank = make_bank(config.num_frames, config.temporal_bank_size, config.bank_seed, config.identify_reverse)
        tasks["temporal"] = TemporalTask(
            bank,
            min_stride=config.min_stride,
            output_size=config.element_size,
            motion_candidates=config.motion_candidates,
        )
    if config.uses_spatial:
        bank = make_bank(config.grid * config.grid, config.spatial_bank_size, config.bank_seed)
        tasks["spatial"] = SpatialTask(bank, output_size=config.tile_size)
    return tasks


def batch_split(config: PermSamplingConfig, tasks: list[str]) -> dict[str, int]:
    """How many of the ``batch_size`` samples of an update each task gets (joint: both at least one)."""
    if len(tasks) == 1:
        return {tasks[0]: config.batch_size}
    n_temporal = min(max(1, round(config.batch_size * config.joint_temporal_fraction)), config.batch_size - 1)
    return {"temporal": n_temporal, "spatial": config.batch_size - n_temporal}


@dataclass
class UpdateStats:
    """What one SGD update reports. ``finite`` is False when the loss, gradients or weights stopped being finite."""

    loss: float
    grad_norm: float
    update_ratio: float
    finite: bool
    task_loss: dict[str, float] = field(default_factory=dict)
    """Per task: the mean cross-entropy over that task's samples of the global batch (``loss`` sums every task's
    share of the batch, so it mixes the tasks of a joint preset)."""


class OrderingLoss(nn.Module):
    """The forward pass of one update as a single module call, so that ``DistributedDataParallel`` can wrap it.

    Args:
        model: the ordering CNN.
        perms: task name -> its bank's ``[K, n]`` permutations (on the model's device).
    """

    def __init__(self, model: OrderingNet, perms: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.perms = perms

    def forward(
        self, elements: dict[str, torch.Tensor], perm_index: dict[str, torch.Tensor], total: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy summed over the samples of every task, divided by ``total``.

        Args:
            elements: task -> ``[B_task, n, 3, h, w]`` natural-order elements.
            perm_index: task -> ``[B_task]`` int64 bank rows to show them in.
            total: the divisor (the number of samples of the global batch).

        Returns:
            The loss, and ``[num_tasks]`` detached cross-entropy sums per task (in ``elements`` order).
        """
        loss = torch.zeros((), device=next(self.model.parameters()).device)
        task_sums = []
        for name, natural in elements.items():
            index = perm_index[name]
            logits = self.model.classify_ordered(self.model.element_features(natural), self.perms[name][index], name)
            task_sum = F.cross_entropy(logits.float(), index, reduction="sum")
            loss = loss + task_sum / total
            task_sums.append(task_sum.detach())
        return loss, torch.stack(task_sums)


class OrderingTrainer:
    """An ordering CNN with its optimiser, data order and fixed validation batch.

    Args:
        config: the environment / pretraining configuration.
        train_clips: ``[N, T, 3, H, W]`` uint8 clips the CNN trains on (stays on the CPU).
        val_clips: ``[V, T, 3, H, W]`` uint8 held-out clips; the first ``val_batch_size`` form the validation batch.
        seed: seeds network init, data order, augmentation and permutation draws.
        sync_bn: under :meth:`distribute` on CUDA, convert BatchNorm to ``SyncBatchNorm`` (see
            :func:`sync_batchnorm`); ignored on the CPU, where plain BatchNorm is kept. The attribute ``sync_bn`` may
            be changed until :meth:`distribute` is called (the env builds its trainer itself).
    """

    def __init__(
        self,
        config: PermSamplingConfig,
        train_clips: torch.Tensor,
        val_clips: torch.Tensor,
        seed: int,
        sync_bn: bool = True,
    ) -> None:
        if len(train_clips) < 1 or len(val_clips) < 1:
            raise ValueError(f"need training and validation clips, got {len(train_clips)} and {len(val_clips)}")
        self.config = config
        self.sync_bn = sync_bn
        self.device = resolve_device(config.device)
        self.train_clips = train_clips
        self.tasks = build_tasks(config)
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            heads = {name: (task.num_elements, task.bank.size) for name, task in self.tasks.items()}
            trunk = build_trunk(config.trunk)
            model = OrderingNet(trunk, heads, config.projection_dim, config.hidden, centre=config.centre_elements,
                                uncentred=config.uncentred_features)  # fmt: skip
            self.model = model.to(self.device)
        self.optimizer = self._build_optimizer()
        self.world = World(device=self.device)
        self.loss_module: nn.Module = OrderingLoss(
            self.model, {name: task.bank.perms.to(self.device) for name, task in self.tasks.items()}
        )
        self.scaler: torch.amp.GradScaler | None = None
        self.batch_split = batch_split(config, list(self.tasks))
        self._order = torch.randperm(len(train_clips), generator=self.generator)
        self._cursor = 0
        self.updates_done = 0
        if config.warm_start:  # later training stages: start from trained weights, keep this run's own RNG
            state = torch.load(config.warm_start, map_location=self.device, weights_only=False)
            self.model.load_state_dict(state["model"])
        val_generator = torch.Generator().manual_seed(seed + 1)
        val = val_clips[: config.val_batch_size]
        self.val_elements = {
            name: task.elements(val, val_generator).to(self.device) for name, task in self.tasks.items()
        }

    @property
    def banks(self) -> dict[str, PermutationBank]:
        return {name: task.bank for name, task in self.tasks.items()}

    def distribute(self, world: World) -> None:
        """Share every update's global batch between the processes of the default process group (DDP).

        Call on every rank right after construction (before loading a state), with the same seed everywhere. On
        CUDA with ``sync_bn`` the BatchNorm layers become ``SyncBatchNorm`` first, in place: the optimiser, the
        parameters and ``self.model`` stay the same objects.

        Args:
            world: this process's place in the group (see :func:`permgym.run.init_distributed`).
        """
        if not world.distributed:
            return
        if min(self.batch_split.values()) < world.world_size:
            raise ValueError(
                f"each task's share of the batch {self.batch_split} must have at least one sample per process "
                f"({world.world_size}); raise the batch size"
            )
        self.world = world
        converted = sync_batchnorm(self.model, self.device, self.sync_bn)
        assert converted is self.model  # the root is an OrderingNet, converted in place: the optimiser stays valid
        self.loss_module = wrap_ddp(self.loss_module, self.device)

    def enable_amp(self) -> None:
        """Mixed precision for updates and validation: float16 autocast and a ``GradScaler`` (CUDA only).

        Raises:
            ValueError: the trainer runs on the CPU.
        """
        if self.device.type != "cuda":
            raise ValueError(f"mixed precision needs a CUDA device, the trainer runs on {self.device}")
        self.scaler = torch.amp.GradScaler("cuda")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.scaler is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.float16)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(self.model.parameters(), c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        return torch.optim.AdamW(self.model.parameters(), c.lr, weight_decay=c.weight_decay)

    def _next_indices(self, count: int) -> torch.Tensor:
        """The next ``count`` clip indices of the seeded data order (reshuffled after each pass)."""
        picked = []
        while count > 0:
            if self._cursor >= len(self._order):
                self._order = torch.randperm(len(self.train_clips), generator=self.generator)
                self._cursor = 0
            take = min(count, len(self._order) - self._cursor)
            picked.append(self._order[self._cursor : self._cursor + take])
            self._cursor += take
            count -= take
        return torch.cat(picked)

    def sample_batch(self) -> dict[str, torch.Tensor]:
        """Natural-order elements ``[B_task, n, 3, h, w]`` for each task of the next minibatch (under DDP: this
        rank's share ``world.shard(B_task)`` of the global batch, whose draws every rank makes alike)."""
        batch = {}
        for name, size in self.batch_split.items():
            clips = self.train_clips[self._next_indices(size)]
            elements = self.tasks[name].elements(clips, self.generator)
            batch[name] = elements[self.world.shard(size)].to(self.device)
        return batch

    def draw_permutations(self, probabilities: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Draw each sample's bank index from per-task ``[K]`` probabilities (with replacement)."""
        return {
            name: torch.multinomial(probabilities[name], size, replacement=True, generator=self.generator)
            for name, size in self.batch_split.items()
        }

    def uniform_permutations(self) -> dict[str, torch.Tensor]:
        """Each sample's bank index drawn uniformly (the classic fixed-bank baseline)."""
        return {
            name: torch.randint(self.tasks[name].bank.size, (size,), generator=self.generator)
            for name, size in self.batch_split.items()
        }

    def update(self, elements: dict[str, torch.Tensor], perm_index: dict[str, torch.Tensor]) -> UpdateStats:
        """One SGD update on ``elements`` shown in the orders ``perm_index`` (``[B_task]`` bank rows per task,
        always for the global batch; under DDP each rank takes its share).

        Showing features in a permuted order is exactly showing permuted inputs (the trunk sees each element alone),
        so the trunk runs once on the natural order and the head gathers. A step that the AMP ``GradScaler`` skips
        (overflowing gradients) changes no weight: it reports an infinite ``grad_norm``, ``update_ratio`` 0 and
        counts as finite.
        """
        self.model.train()
        total = sum(len(index) for index in perm_index.values())
        local = {name: index[self.world.shard(len(index))].to(self.device) for name, index in perm_index.items()}
        with self._autocast():
            loss, task_sums = self.loss_module(elements, local, total)
        if self.world.distributed:
            loss = loss * self.world.world_size  # DDP averages gradients over ranks; the loss is a share of a sum
        self.optimizer.zero_grad(set_to_none=True)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        before = [p.detach().clone() for p in params]
        skipped = False
        if self.scaler is None:
            self.optimizer.step()
        else:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = self.scaler.get_scale() < scale
        self.updates_done += 1
        if self.world.distributed:
            average_buffers(self.model)
        with torch.no_grad():
            delta = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(params, before, strict=True)))
            norm = torch.sqrt(sum((b**2).sum() for b in before))
            ratio = delta / norm.clamp_min(1e-12)
        sums = torch.cat([loss.detach()[None], task_sums])
        if self.world.distributed:
            dist.all_reduce(sums)
            sums[0] /= self.world.world_size
        sizes = torch.tensor([len(perm_index[name]) for name in elements], dtype=sums.dtype, device=sums.device)
        sums[1:] /= sizes  # in the loss's precision: with one task, task_loss equals loss exactly
        # one device-to-host copy for every reported number
        loss_value, *task_means, grad_norm, ratio = torch.cat([sums, torch.stack([grad_norm, ratio]).to(sums)]).tolist()
        task_loss = dict(zip(elements, task_means, strict=True))
        finite = math.isfinite(loss_value) and (skipped or math.isfinite(grad_norm)) and math.isfinite(ratio)
        return UpdateStats(loss_value, grad_norm, ratio, finite, task_loss)

    def validate(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per task: ``loss [K]``, ``accuracy [K]`` and ``confusion [K, K]`` over every bank permutation of the
        fixed validation batch (:meth:`permutation_statistics`)."""
        return self.permutation_statistics(self.val_elements)

    @torch.no_grad()
    def permutation_statistics(self, elements: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """Per task: ``loss [K]``, ``accuracy [K]`` and ``confusion [K, K]`` (on the CPU) of ``elements`` (task ->
        ``[B, n, 3, h, w]`` natural-order elements on the device) shown in every bank permutation, by shared-trunk
        scoring (one trunk pass, then a gather per permutation). Leaves the model in eval mode."""
        self.model.eval()
        stats = {}
        for name, natural in elements.items():
            perms = self.tasks[name].bank.perms.to(self.device)
            with self._autocast():
                logits = self.model.score_all_permutations(natural, perms, name).float()
            stats[name] = {key: value.cpu() for key, value in per_permutation_statistics(logits).items()}
        return stats

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of everything an update changes (model, optimiser, data cursor, RNG)."""
        state = self.state_dict()
        val_elements = state.pop("val_elements")  # updates never change it: share, don't copy
        return {**copy.deepcopy(state), "val_elements": val_elements}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "order": self._order,
            "cursor": self._cursor,
            "updates_done": self.updates_done,
            "val_elements": self.val_elements,
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self._order = state["order"]
        self._cursor = int(state["cursor"])
        self.updates_done = int(state["updates_done"])
        self.val_elements = {name: v.to(self.device) for name, v in state["val_elements"].items()}
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def chance_loss(bank: PermutationBank) -> float:
    """Cross-entropy of a uniform guess over the bank, ``log K`` (the scale of every normalised loss)."""
    return math.log(bank.size)
