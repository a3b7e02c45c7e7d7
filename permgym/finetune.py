"""Supervised fine-tuning of a pretrained trunk for action recognition, and video-level evaluation.

The classifier (:class:`ActionClassifier`) applies the trunk to ``num_frames`` frames of a clip, concatenates their
features in temporal order (the clip feature of :func:`permgym.probe.clip_features`), and classifies with dropout and
one linear layer. The trunk trains with a lower learning rate than the new layer (``trunk_lr_scale``).

* **Training clips** are drawn like the temporal ordering task's (:class:`permgym.tasks.TemporalTask`, in natural
  order): ``num_frames`` frames at a random stride ``>= min_stride`` and a random start, one random crop (85 % of the
  shorter side) and (optionally) flip shared by the frames, resized to ``image_size``.
* **Test videos** (:func:`predict_videos`) are scored on ``test_clips`` windows whose centres are evenly spaced over
  the video (VCOP's protocol, ``np.linspace(span / 2, T - span / 2, test_clips)``), each window's frames at
  ``eval_stride`` and centre-cropped; the softmax is averaged over the windows, giving the video-level prediction.

The same trainer fine-tunes still images (``experiments/image_transfer.py``): one "frame" per sample, inputs augmented
by the caller (``augment=prepared``), and with ``FinetuneConfig.multilabel`` a per-class binary cross-entropy that
leaves VOC's difficult (0) targets out.

:func:`finetune` is the epoch loop both experiments run (train, evaluate every few epochs, log, checkpoint), with
:func:`train_one_epoch` as its inner loop, torchvision-reference style.

:class:`FinetuneTrainer` holds model, optimiser, cosine learning-rate schedule, optional AMP scaler and one
``torch.Generator`` (data order, augmentation, dropout), so a run is reproducible on the CPU and resumes exactly from
:meth:`FinetuneTrainer.state_dict`. Under torchrun every rank draws the same global batch and trains on its share
with ``DistributedDataParallel``, as :class:`permgym.trainer.OrderingTrainer` does, BatchNorm becoming
``SyncBatchNorm`` on CUDA (``sync_bn``; plain BatchNorm on the CPU, where ``SyncBatchNorm`` cannot run).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from permgym.distributed import (
    MetricLogger,
    World,
    all_reduce_sum,
    average_buffers,
    gather_shards,
    sync_batchnorm,
    wrap_ddp,
)
from permgym.models import Trunk
from permgym.permutations import PermutationBank
from permgym.probe import clip_features, eval_windows
from permgym.tasks import TemporalTask


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of fine-tuning and video-level evaluation.

    Attributes:
        num_frames: frames per clip n seen by the classifier (the temporal task's n).
        image_size: side in pixels of each frame fed to the trunk.
        min_stride: smallest gap between a training clip's frames; strides are drawn up to ``(T - 1) // (n - 1)``.
        eval_stride: gap between a test window's frames; ``None`` = the middle of the training range.
        crop_fraction: side of the (random for training, centre for testing) crop relative to the shorter side.
        flip: random horizontal flips of training clips. Right for UCF101/HMDB51, whose actions look alike mirrored;
            wrong for SyntheticActions, where mirroring turns ``move_E`` into ``move_W`` (a flip changes the class).
        test_clips: windows per test video whose softmax is averaged.
        epochs: passes over the training videos.
        batch_size: clips per update over all processes (each trains on its share).
        optimizer: ``"sgd"`` (momentum) or ``"adam"`` (AdamW).
        lr: learning rate of the new classifier layer; cosine-annealed to 0 over all updates.
        trunk_lr_scale: the trunk's learning rate is ``lr * trunk_lr_scale``.
        momentum: SGD momentum.
        weight_decay: L2 penalty (decoupled for AdamW).
        dropout: dropout probability on the concatenated clip feature.
        multilabel: targets are ``[B, C]`` int8 in VOC's coding (``1`` present, ``-1`` absent, ``0`` difficult) and
            the loss is binary cross-entropy per class with the ``0`` entries left out; otherwise targets are ``[B]``
            class ids and the loss is softmax cross-entropy.
    """

    num_frames: int = 4
    image_size: int = 32
    min_stride: int = 2
    eval_stride: int | None = None
    crop_fraction: float = 0.85
    flip: bool = True
    test_clips: int = 5
    epochs: int = 30
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 2e-3
    trunk_lr_scale: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float = 0.5
    multilabel: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of sgd, adam")
        for name in ("num_frames", "test_clips", "epochs", "batch_size", "min_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def max_stride(self, clip_frames: int) -> int:
        """Largest stride that fits ``num_frames`` frames into clips of ``clip_frames`` frames (at least 1)."""
        return max(1, (clip_frames - 1) // max(1, self.num_frames - 1))

    def test_stride(self, clip_frames: int) -> int:
        """``eval_stride``, or the middle of the training strides ``[min_stride, max_stride]``."""
        if self.eval_stride is not None:
            return self.eval_stride
        high = self.max_stride(clip_frames)
        return max(1, (min(self.min_stride, high) + high) // 2)


class ActionClassifier(nn.Module):
    """Trunk per frame, features concatenated in temporal order, dropout, linear.

    Args:
        trunk: the (pretrained) feature extractor ``[B, 3, h, w] -> [B, D]``.
        num_frames: frames per clip n.
        num_classes: action classes C.
    """

    def __init__(self, trunk: Trunk, num_frames: int, num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.num_frames = num_frames
        self.head = nn.Linear(num_frames * trunk.out_dim, num_classes)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, n, 3, h, w]`` normalised frames -> ``[B, n * D]`` concatenated trunk features."""
        return self.trunk(frames.flatten(0, 1)).view(frames.shape[0], -1)

    def forward(self, frames: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, n, 3, h, w]`` frames -> ``[B, C]`` logits.

        Args:
            frames: normalised frames in temporal order.
            keep: optional ``[B, n * D]`` dropout multiplier (0 or ``1 / (1 - p)``), drawn by the caller from its
                own generator so that runs are reproducible without torch's global RNG.
        """
        features = self.features(frames)
        if keep is not None:
            features = features * keep
        return self.head(features)


def build_optimizer(model: ActionClassifier, config: FinetuneConfig) -> torch.optim.Optimizer:
    """Two parameter groups: the trunk at ``lr * trunk_lr_scale``, the classifier layer at ``lr``."""
    groups = [
        {"params": list(model.trunk.parameters()), "lr": config.lr * config.trunk_lr_scale},
        {"params": list(model.head.parameters()), "lr": config.lr},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


class FinetuneTrainer:
    """Fine-tunes an :class:`ActionClassifier` on labelled clips, one global batch per :meth:`step`.

    Args:
        model: the classifier (moved to ``world.device``).
        config: fine-tuning options.
        num_videos: training videos (fixes the number of updates per epoch and the schedule's length).
        world: this process's place in a torchrun group (default: one process on the CPU).
        seed: seeds data order, augmentation and dropout.
        amp: float16 autocast and a ``GradScaler`` (CUDA only).
        sync_bn: with several processes on CUDA, convert the model's BatchNorm layers to ``SyncBatchNorm`` (in
            place, before the optimiser is built) so that training batches are normalised by the global batch's
            statistics; on the CPU (gloo) plain BatchNorm is kept, since ``SyncBatchNorm`` runs on GPUs only.
        augment: maps a global batch passed to :meth:`step` to the model's input ``[B, n, 3, h, w]`` float, drawing
            any randomness from the generator it is given (the trainer's). Default: the temporal task's training
            clips (frames, crop, flip) of ``[B, T, 3, H, W]`` uint8 clips. Inputs augmented elsewhere (e.g. image
            views made by a data loader) pass :func:`prepared`.
    """

    def __init__(
        self,
        model: ActionClassifier,
        config: FinetuneConfig,
        num_videos: int,
        world: World | None = None,
        seed: int = 0,
        amp: bool = False,
        sync_bn: bool = True,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        self.world = world or World()
        self.config = config
        self.model = sync_batchnorm(model.to(self.world.device), self.world.device, sync_bn and self.world.distributed)
        self.batch_size = min(config.batch_size, num_videos)
        if self.batch_size < self.world.world_size:
            raise ValueError(
                f"batch size {self.batch_size} gives some of the {self.world.world_size} processes no clip"
            )
        self.steps_per_epoch = num_videos // self.batch_size  # the last incomplete batch is dropped
        self.num_videos = num_videos
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.epochs * self.steps_per_epoch
        )
        if amp and self.world.device.type != "cuda":
            raise ValueError(f"mixed precision needs a CUDA device, fine-tuning runs on {self.world.device}")
        self.scaler = torch.amp.GradScaler("cuda") if amp else None
        self.generator = torch.Generator().manual_seed(seed)
        identity = PermutationBank(torch.arange(config.num_frames)[None])
        self.task = TemporalTask(identity, min_stride=config.min_stride, crop_fraction=config.crop_fraction,
                                 output_size=config.image_size, flip=config.flip)  # fmt: skip
        self.augment = augment or self.task.elements
        self.forward_module: nn.Module = self.model
        if self.world.distributed:
            self.forward_module = wrap_ddp(self.model, self.world.device)
        self.epoch = 0

    def epoch_batches(self) -> Iterator[torch.Tensor]:
        """The video indices of each global batch of the next epoch (a seeded shuffle; advances ``epoch``)."""
        order = torch.randperm(self.num_videos, generator=self.generator)
        self.epoch += 1
        for step in range(self.steps_per_epoch):
            yield order[step * self.batch_size : (step + 1) * self.batch_size]

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.float16) if self.scaler is not None else contextlib.nullcontext()

    def step(self, clips: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One update on a global batch.

        Args:
            clips: the global batch (every rank passes the same), as ``augment`` takes it: by default
                ``[B, T, 3, H, W]`` uint8 clips.
            labels: ``[B]`` int64 classes, or ``[B, C]`` int8 VOC-coded targets with ``config.multilabel``.

        Returns:
            ``{"loss", "accuracy", "lr"}`` over the global batch (the trunk's learning rate is ``lr *
            trunk_lr_scale``). Multi-label: the loss is the per-class binary cross-entropy summed over the classes
            (difficult entries left out) and averaged over images, the accuracy the share of the non-difficult
            (image, class) decisions that the sign of the logit gets right.
        """
        self.model.train()
        frames = self.augment(clips, self.generator)
        size = len(labels)
        keep = None
        if self.config.dropout > 0:
            p = self.config.dropout
            dim = self.model.head.in_features
            keep = (torch.rand(size, dim, generator=self.generator) >= p).float() / (1 - p)
        shard = self.world.shard(size)
        device = self.world.device
        local_labels = labels[shard].to(device)
        with self._autocast():
            logits = self.forward_module(frames[shard].to(device), None if keep is None else keep[shard].to(device))
        if self.config.multilabel:
            counted = local_labels != 0
            losses = F.binary_cross_entropy_with_logits(logits.float(), (local_labels > 0).float(), reduction="none")
            loss_sum = (losses * counted).sum()
            correct = (((logits > 0) == (local_labels > 0)) & counted).sum()
            decisions = counted.sum()
        else:
            loss_sum = F.cross_entropy(logits.float(), local_labels, reduction="sum")
            correct, decisions = (logits.argmax(1) == local_labels).sum(), torch.tensor(len(local_labels))
        loss = loss_sum / size * self.world.world_size  # DDP averages gradients over ranks
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        lr = self.optimizer.param_groups[1]["lr"]
        self.scheduler.step()
        if self.world.distributed:
            average_buffers(self.model)
        totals = torch.stack([loss_sum.detach().float(), correct.float(), decisions.to(correct.device).float()])
        totals = all_reduce_sum(totals).cpu()
        loss_value = float(totals[0]) / size
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"fine-tuning diverged (loss {loss_value}); lower --ft-lr")
        return {"loss": loss_value, "accuracy": float(totals[1] / totals[2].clamp_min(1)), "lr": lr}

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`step` changes, for checkpoints (tensors shared with the live objects, as
        ``nn.Module.state_dict``: save it or deep-copy it)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def prepared(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The ``augment`` of :class:`FinetuneTrainer` for batches that already are the model's input: ``batch``."""
    return batch


@torch.no_grad()
def predict_videos(
    model: ActionClassifier,
    clips: torch.Tensor,
    config: FinetuneConfig,
    world: World | None = None,
    chunk: int = 64,
) -> torch.Tensor:
    """Video-level class probabilities: the softmax averaged over ``config.test_clips`` windows per video.

    Args:
        model: the classifier (in any mode; the trunk runs in eval mode).
        clips: ``[N, T, 3, H, W]`` uint8 (may be memory-mapped: read ``chunk`` videos at a time).
        config: frames, image size, crop, windows and stride.
        world: under torchrun each rank scores its share of the videos and the results are gathered.
        chunk: videos read at once (memory only).

    Returns:
        ``[N, C]`` float32 probabilities on the CPU, on every rank.
    """
    world = world or World()
    windows = eval_windows(clips.shape[1], config.num_frames, config.test_stride(clips.shape[1]), config.test_clips)
    mine = range(len(clips))[world.shard(len(clips))]
    was_training = model.training
    model.eval()
    probs = []
    try:
        for start in range(mine.start, mine.stop, chunk):
            videos = clips[start : min(start + chunk, mine.stop)]
            views = videos[:, windows].flatten(0, 1)  # [V * windows, n, 3, H, W]
            features = clip_features(model.trunk, views, config.num_frames, config.image_size,
                                     crop_fraction=config.crop_fraction)  # fmt: skip
            logits = model.head(features.to(world.device)).float().cpu()
            probs.append(logits.softmax(-1).view(len(videos), len(windows), -1).mean(1))
    finally:
        model.train(was_training)
    local = torch.cat(probs) if probs else torch.zeros(0, model.head.out_features)
    return gather_shards(local.to(world.device), world, len(clips)).cpu()


def topk_accuracy(probs: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """``{"top1": ..., "top5": ...}``: share of videos whose label is among the ``k`` most probable classes
    (``k`` above the number of classes counts every video)."""
    ranked = probs.argsort(dim=1, descending=True, stable=True)
    hit = ranked == labels[:, None]
    return {f"top{k}": float(hit[:, :k].any(1).double().mean()) for k in ks}


def confusion_matrix(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[C, C]`` int64 counts: row = true class, column = predicted class."""
    num_classes = probs.shape[1]
    index = labels * num_classes + probs.argmax(1)
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def evaluate_videos(
    model: ActionClassifier,
    clips: torch.Tensor,
    labels: torch.Tensor,
    config: FinetuneConfig,
    world: World | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """Video-level test accuracy of :func:`predict_videos`' probabilities.

    Returns:
        ``({"top1": ..., "top5": ...}, confusion [C, C])`` (row = true class).
    """
    probs = predict_videos(model, clips, config, world)
    return topk_accuracy(probs, labels, ks=(1, 5)), confusion_matrix(probs, labels)


# ---------------------------------------------------------------------------------------------------- the loop
def new_classifier(trunk: Trunk, num_frames: int, num_classes: int, seed: int) -> ActionClassifier:
    """An :class:`ActionClassifier` on a copy of ``trunk`` whose new layer is initialised from ``seed`` (torch's
    global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ActionClassifier(copy.deepcopy(trunk), num_frames, num_classes)


def train_one_epoch(
    trainer: FinetuneTrainer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epoch: int,
    header: str,
    *,
    writer: SummaryWriter | None = None,
    print_freq: int = 20,
    progress: bool = True,
) -> dict[str, float]:
    """One epoch of :meth:`FinetuneTrainer.step`, one call per ``(inputs, labels)`` global batch of ``batches``
    (``trainer.steps_per_epoch`` of them).

    Smoothed meters (loss, accuracy, lr, step time) are printed every ``print_freq`` steps under ``header`` and
    written to ``writer`` as ``finetune/...`` at global step ``(epoch - 1) * steps_per_epoch + step``.

    Returns:
        ``{"loss", "accuracy", "step_seconds"}``: the epoch's means over all processes.
    """
    logger = MetricLogger(trainer.world)
    steps = trainer.steps_per_epoch
    for inputs, labels in logger.log_every(batches, print_freq, header, total=steps, writer=writer,
                                           tb_prefix="finetune", step_offset=(epoch - 1) * steps, progress=progress):  # fmt: skip
        start = time.perf_counter()
        stats = trainer.step(inputs, labels)
        logger.update(n=len(labels), loss=stats["loss"], accuracy=stats["accuracy"], lr=stats["lr"])
        logger.update(step_seconds=time.perf_counter() - start)
    logger.synchronize()
    return {name: logger.meters[name].global_avg for name in ("loss", "accuracy", "step_seconds")}


def finetune(
    trainer: FinetuneTrainer,
    epoch_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    evaluate: Callable[[int], float],
    checkpoint: Callable[[], None],
    *,
    eval_every: int,
    history: list[dict[str, Any]],
    times: dict[str, float],
    name: str = "finetune",
    test_metric: str = "top1",
    tb_dir: str | Path | None = None,
    print_freq: int = 20,
    progress: bool = True,
) -> None:
    """Train from the epoch after ``trainer.epoch`` (0, or a restored checkpoint's) to ``trainer.config.epochs``.

    Each epoch: :func:`train_one_epoch` on ``epoch_batches()`` (which draws the epoch's data order from the trainer);
    every ``eval_every`` epochs and after the last, ``evaluate(epoch)``, whose headline value is recorded as
    ``test_<test_metric>`` and written to TensorBoard; the record ``{"epoch", "loss", "accuracy"[, "test_..."]}`` is
    appended to ``history``, one line printed on rank 0, then ``checkpoint()`` called on every rank (the place to
    save ``trainer.state_dict()`` with ``history``). Seconds spent are added to ``times["finetune_s"]`` and
    ``times["eval_s"]``, so a resumed run's times add up.

    Args:
        trainer: the trainer, restored from a checkpoint where the run resumes.
        epoch_batches: the next epoch's ``(inputs, labels)`` global batches, as :meth:`FinetuneTrainer.step` takes them.
        evaluate: tests the model after epoch ``epoch``; returns the headline metric.
        checkpoint: called after every epoch.
        eval_every: epochs between evaluations.
        history, times: the run's epoch records and stage times, filled in place.
        name: prefix of progress lines, e.g. ``"finetune [uniform]"``.
        test_metric: the headline metric's name.
        tb_dir: TensorBoard folder (rank 0 writes), or None.
        print_freq, progress: meters every N steps; progress bars.
    """
    epochs, steps = trainer.config.epochs, trainer.steps_per_epoch
    writer = None
    if trainer.world.is_main and tb_dir is not None:
        writer = SummaryWriter(tb_dir, purge_step=trainer.epoch * steps or None)
    for epoch in range(trainer.epoch + 1, epochs + 1):
        start = time.perf_counter()
        stats = train_one_epoch(trainer, epoch_batches(), epoch, f"{name} epoch {epoch}/{epochs}", writer=writer,
                                print_freq=print_freq, progress=progress)  # fmt: skip
        times["finetune_s"] = times.get("finetune_s", 0.0) + time.perf_counter() - start
        record: dict[str, Any] = {"epoch": epoch, "loss": stats["loss"], "accuracy": stats["accuracy"]}
        tested = ""
        if epoch % eval_every == 0 or epoch == epochs:
            start = time.perf_counter()
            record[f"test_{test_metric}"] = value = evaluate(epoch)
            times["eval_s"] = times.get("eval_s", 0.0) + time.perf_counter() - start
            tested = f"  test {test_metric} {value:.4f}"
            if writer is not None:
                writer.add_scalar(f"finetune/test_{test_metric}", value, epoch * steps)
        history.append(record)
        if trainer.world.is_main:
            print(f"{name} epoch {epoch}: loss {stats['loss']:.4f}  accuracy {stats['accuracy']:.4f}  "
                  f"{stats['step_seconds'] * 1000:.0f} ms/step{tested}", flush=True)  # fmt: skip
        checkpoint()
    if writer is not None:
        writer.close()
