"""Training machinery of the divide-and-conquer learner: the schedule, feature extraction, re-clustering, a step.

One epoch of divide and conquer (driven by ``experiments/dc_transfer.py``)::

    trainer.begin_epoch(epoch)            # re-cluster if the schedule says so; sampler.set_epoch(epoch)
    for images, labels, _, learner in loader:   # DataLoader(BatchedDataset(ds), sampler=trainer.sampler)
        trainer.train_step(images, labels, learner)

``num_learners=1`` runs the single-metric baseline through the same code: one cluster of all data (no k-means), the
full embedding, one loss.

Distributed data parallel: call :func:`permgym.run.init_distributed` first (it reads the variables torchrun sets,
and falls back to one process). All replicas then train the same learner at each step (the sampler draws the same global batch
everywhere and each keeps a slice), feature extraction is sharded and all-gathered, and k-means runs on rank 0 and
is broadcast. On GPUs the backbone's train-mode BatchNorm becomes SyncBatchNorm (``sync_bn``). Checkpoints hold every
rank's random state (``permgym.distributed.gather_per_rank``), so a resumed run needs the same number of processes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from metric.clustering import (
    UNASSIGNED,
    assign_classes,
    assign_clusters,
    classes_per_cluster,
    cluster_class_nmi,
    drop_singleton_classes,
    sample_per_class,
)
from metric.miners import DistanceWeightedMiner
from metric.model import EmbeddingNet
from metric.samplers import ClusterBatchSampler
from permgym.distributed import World, gather_per_rank, gather_shards, own_entry, sync_batchnorm

if TYPE_CHECKING:
    from metric.data import RetrievalTask


@dataclass
class Schedule:
    """When to divide and when to conquer. Epochs are 0-based.

    Epochs are as long as the sampler makes them: one pass over the training set by default (see
    :mod:`metric.samplers`), so re-clustering every ``T`` epochs costs the same share of the training time whatever
    the size of the training set.

    Attributes:
        epochs: number of training epochs.
        num_learners: ``K``, the number of clusters and learner slices; ``1`` is the single-metric baseline (one
            cluster of all data, full embedding throughout, no k-means).
        recluster_every: ``T``; the training set is re-clustered at the start of every epoch ``e`` with
            ``(e - warmup_epochs) % T == 0`` (so also at the first epoch after the warm-up), until fine-tuning starts.
        warmup_epochs: the first epochs train as ``K = 1`` (batches from all data, full embedding), so that the first
            clustering sees features that already separate classes, as the paper's ImageNet features do; ``0``: none
            (the first clustering sees the initial features).
        full_embedding_epoch: from this epoch on the loss is applied to the full embedding instead of the learner's
            slice (batches still come from one cluster each, and re-clustering goes on); ``None``: only from
            ``finetune_epoch`` on.
        finetune_epoch: from this epoch on ``K = 1``: batches from all data, full embedding, no re-clustering;
            ``None``: no fine-tuning.
        cluster_on: what k-means clusters, L2-normalised: the full ``"embedding"`` (the paper's wording; the
            default) or the ``"backbone"`` features (what the reference code clusters). An earlier version of
            bench/dc.py (one 12-epoch schedule, K = 4, 3 seeds, embedded data of seed 0, run again with
            ``-- --cluster-on backbone``) found them within the spread over seeds: embedding vs backbone R@1 22.7
            vs 22.6 % and NMI 42.1 vs 41.7 % on the embedded data, R@1 19.9 vs 20.8 % and NMI 43.7 vs 43.4 % on the
            PNG folder data. The current bench/dc.py does not compare them.
        kmeans_iters: k-means (Lloyd) iterations per re-clustering.
        cluster_images_per_class: ``None``: every training image is clustered on its own (the paper; features of the
            whole training set at every re-clustering). ``n``: whole classes are clustered: the features of at most
            ``n`` images per class (drawn from ``(seed, epoch)``) are computed, k-means clusters the class means and
            every image goes to its class's cluster (:func:`metric.clustering.assign_classes`). A re-clustering then
            embeds ``n`` images per class instead of all of them (on 10 images per class and ``n = 4``, 40 %), and a
            cluster never splits a class. Needs ``cluster_features="pass"``.
        cluster_features: where the clustered features come from: ``"pass"``, an eval-mode forward pass over the
            whole training set at every re-clustering (the reference code); or ``"cache"``, the features the
            training steps computed since the last re-clustering, with an eval pass only over the samples no step
            has seen. ``"cache"`` needs a backbone without batch statistics (``frozen_bn``): a train-mode BatchNorm
            normalises each single-cluster batch by its own statistics, which erases the differences between
            clusters.
    """

    epochs: int = 20
    num_learners: int = 4
    recluster_every: int = 2
    warmup_epochs: int = 0
    full_embedding_epoch: int | None = None
    finetune_epoch: int | None = None
    cluster_on: Literal["backbone", "embedding"] = "embedding"
    kmeans_iters: int = 20
    cluster_features: Literal["pass", "cache"] = "pass"
    cluster_images_per_class: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.num_learners < 1 or self.recluster_every < 1 or self.kmeans_iters < 1:
            raise ValueError(f"epochs, num_learners, recluster_every and kmeans_iters must be >= 1, got {self}")
        if self.cluster_on not in ("backbone", "embedding"):
            raise ValueError(f"cluster_on must be 'backbone' or 'embedding', got {self.cluster_on!r}")
        if self.cluster_features not in ("pass", "cache"):
            raise ValueError(f"cluster_features must be 'pass' or 'cache', got {self.cluster_features!r}")
        if self.cluster_images_per_class is not None:
            if self.cluster_images_per_class < 1 or self.cluster_features != "pass":
                raise ValueError(
                    f"cluster_images_per_class (--cluster-images-per-class) must be >= 1 and goes with "
                    f"cluster_features='pass', got {self.cluster_images_per_class} with {self.cluster_features!r}"
                )
        for name in ("warmup_epochs", "full_embedding_epoch", "finetune_epoch"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.epochs:
                raise ValueError(
                    f"{name} (--{name.replace('_', '-')}) is {value} but must be in [0, epochs) = [0, {self.epochs}) "
                    f"(--epochs {self.epochs}), or the phase never starts"
                    + ("; use -1 (None) for never" if name != "warmup_epochs" else "")
                )
        if self.warmup_epochs and self.finetune_epoch is not None and self.warmup_epochs >= self.finetune_epoch:
            raise ValueError(
                f"warmup_epochs (--warmup-epochs {self.warmup_epochs}) must be < finetune_epoch (--finetune-epoch "
                f"{self.finetune_epoch}): the warm-up would take every epoch before fine-tuning, leaving no K > 1 epoch"
            )

    def num_clusters(self, epoch: int) -> int:
        """Number of clusters (= active learners) in ``epoch``."""
        warmup = epoch < self.warmup_epochs
        finetune = self.finetune_epoch is not None and epoch >= self.finetune_epoch
        return 1 if warmup or finetune else self.num_learners

    def full_embedding(self, epoch: int) -> bool:
        """Whether the loss sees the full embedding (not one slice) in ``epoch``."""
        started = self.full_embedding_epoch is not None and epoch >= self.full_embedding_epoch
        return self.num_clusters(epoch) == 1 or started

    def reclusters(self, epoch: int) -> bool:
        """Whether the training set is re-clustered at the start of ``epoch``."""
        return self.num_clusters(epoch) > 1 and (epoch - self.warmup_epochs) % self.recluster_every == 0

    def phase(self, epoch: int) -> str:
        """``"warmup"`` (K = 1 before the first clustering), ``"divide"`` (slices), ``"conquer"`` (full embedding,
        K clusters) or ``"finetune"`` (K = 1)."""
        if self.num_clusters(epoch) == 1:
            if self.num_learners == 1:
                return "divide"
            return "warmup" if epoch < self.warmup_epochs else "finetune"
        return "conquer" if self.full_embedding(epoch) else "divide"


def _world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in ``[0, 255]`` -> float in ``[0, 1]``; float images pass through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


@torch.no_grad()
def extract(
    model: EmbeddingNet,
    dataset: Dataset,
    kind: Literal["embedding", "backbone"] = "embedding",
    *,
    batch_size: int = 256,
    workers: int = 0,
    device: torch.device | str = "cpu",
    amp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every sample of ``dataset`` in eval mode, in dataset order, on CPU.

    Under ``torch.distributed`` each process computes a contiguous shard and all processes get the gathered result.

    Args:
        model: the (unwrapped) embedding network.
        dataset: map-style dataset returning ``(image [3, H, W], label)``.
        kind: ``"embedding"`` (``[N, d]``, each learner slice normalised) or ``"backbone"`` (``[N, F]``).
        batch_size, workers: of the DataLoader.
        device: where the forward pass runs.
        amp: run the forward in ``torch.autocast`` (CUDA only).

    Returns:
        ``(features [N, D] float32, labels [N] int64)``.
    """
    device = torch.device(device)
    world = World(*_world(), device)
    n = len(dataset)  # type: ignore[arg-type]
    part = Subset(dataset, range(n)[world.shard(n)]) if world.distributed else dataset
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for images, y in DataLoader(part, batch_size=batch_size, num_workers=workers):
        with torch.autocast(device_type=device.type, enabled=amp):
            x = model.backbone(_to_float(images.to(device)))
            x = x if kind == "backbone" else model.embed(x)
        feats.append(x.float())
        labels.append(torch.as_tensor(y, device=device).long())
    model.train(was_training)
    # every rank's contiguous shard, gathered on the device (NCCL needs CUDA tensors, gloo runs on the CPU)
    features, targets = (gather_shards(torch.cat(t), world, n).cpu() for t in (feats, labels))
    return features, targets


def evaluate_task(
    model: EmbeddingNet,
    task: RetrievalTask,
    *,
    batch_size: int = 256,
    workers: int = 0,
    device: torch.device | str = "cpu",
    amp: bool = False,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Retrieval metrics of the full embedding on a test task (computed on rank 0; other ranks get ``{}``).

    Args:
        model, batch_size, workers, device, amp: as for :func:`extract` (collective under ``torch.distributed``).
        task: what to embed (query, optional gallery) and how to score it.

    Returns:
        ``(metrics, query embeddings [N, d] (L2-normalised), query labels [N])``.
    """
    kwargs = {"batch_size": batch_size, "workers": workers, "device": device, "amp": amp}
    query, labels = extract(model, task.query, "embedding", **kwargs)
    query = F.normalize(query, dim=1)
    gallery = None
    if task.gallery is not None:
        gallery = F.normalize(extract(model, task.gallery, "embedding", **kwargs)[0], dim=1)
    if _world()[0] != 0:
        return {}, query, labels
    return {k: float(v) for k, v in task.evaluate(query, gallery).items()}, query, labels


def build_optimizer(
    model: EmbeddingNet,
    criteria: nn.Module,
    *,
    lr: float = 1e-5,
    embedding_lr: float = 1e-5,
    beta_lr: float = 5e-4,
    weight_decay: float = 1e-4,
) -> torch.optim.Adam:
    """Adam over three parameter groups: backbone, embedding layer (all learners), loss parameters (learnable beta).

    Defaults are the reference code's (lr 1e-5, weight decay 1e-4 for backbone and embedding).
    """
    groups = [
        {"params": list(model.backbone.parameters()), "lr": lr, "weight_decay": weight_decay},
        {"params": list(model.learners.parameters()), "lr": embedding_lr, "weight_decay": weight_decay},
    ]
    loss_params = list(criteria.parameters())
    if loss_params:
        groups.append({"params": loss_params, "lr": beta_lr, "weight_decay": 0.0})
    return torch.optim.Adam(groups)


class DivideAndConquerTrainer:
    """The divide-and-conquer learner's training state and its two operations, re-clustering and a training step.

    Args:
        model: the embedding network (``model.num_learners == schedule.num_learners``). Wrapped in
            ``DistributedDataParallel`` here when a process group is initialised (see ``sync_bn``).
        criteria: one loss per learner (``len == num_learners``), each called as ``loss(emb, labels, triplets)``.
        miner: the triplet miner (its ``generator`` makes the draws reproducible and is checkpointed).
        optimizer: over ``model`` and ``criteria`` parameters, e.g. from :func:`build_optimizer`.
        schedule: the :class:`Schedule`.
        sampler: the cluster-aware sampler whose clusters this trainer updates.
        cluster_dataset: the training set with the evaluation transform (what k-means sees), same order as the
            sampler's labels.
        device: the training device.
        amp: mixed precision (``torch.autocast`` + ``GradScaler``); only on CUDA.
        seed: k-means seed base (re-clustering at epoch ``e`` uses ``seed + e``).
        extract_batch_size, workers: DataLoader settings of the feature extraction for re-clustering.
        sync_bn: under a process group on CUDA, convert the backbone's train-mode BatchNorm layers (not
            ``frozen_bn``) to ``SyncBatchNorm``, so that they normalise with the statistics of the global batch
            rather than of each process's slice. The layers are replaced in place and keep their Parameter objects,
            so an optimizer built before stays valid. SyncBatchNorm runs only on GPUs: on the CPU (gloo) every
            process keeps plain BatchNorm over its own slice.

    Attributes:
        clusters: ``[N]`` int64 current cluster ids (``-1`` = unassigned).
        history: one dict per re-clustering: ``epoch``, ``num_clusters``, ``sizes`` (``[K]`` samples per cluster),
            ``unassigned``, ``skipped`` (clusters too small for a batch, see :mod:`metric.samplers`), ``seconds``
            (features + k-means), ``class_nmi`` (:func:`metric.clustering.cluster_class_nmi`: how much the clusters
            tell about the classes, 0 = nothing) and ``classes_per_cluster`` (``[K]`` distinct classes in each).
        epoch: the epoch set by the last :meth:`begin_epoch`.
    """

    def __init__(
        self,
        model: EmbeddingNet,
        criteria: nn.ModuleList,
        miner: DistanceWeightedMiner,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        sampler: ClusterBatchSampler,
        cluster_dataset: Dataset,
        *,
        device: torch.device | str = "cpu",
        amp: bool = False,
        seed: int = 0,
        extract_batch_size: int = 256,
        workers: int = 0,
        sync_bn: bool = True,
    ) -> None:
        if model.num_learners != schedule.num_learners or len(criteria) != schedule.num_learners:
            raise ValueError(
                f"model has {model.num_learners} learners, criteria {len(criteria)}, schedule "
                f"{schedule.num_learners}; they must agree"
            )
        self.device = torch.device(device)
        if amp and self.device.type != "cuda":
            raise ValueError("amp needs a CUDA device")
        if schedule.cluster_features == "cache" and model.has_batch_statistics():
            raise ValueError(
                "cluster_features='cache' needs a backbone without train-mode BatchNorm: freeze it (frozen_bn=True, "
                "--frozen-bn) or use cluster_features='pass'"
            )
        self.model, self.criteria, self.miner, self.optimizer = model, criteria, miner, optimizer
        self.schedule, self.sampler, self.cluster_dataset = schedule, sampler, cluster_dataset
        self.amp, self.seed, self.extract_batch_size, self.workers = amp, seed, extract_batch_size, workers
        self.net: nn.Module = model
        if dist.is_initialized():
            # in place (the root is an EmbeddingNet): the optimizer built on model's parameters stays valid
            sync_batchnorm(model, self.device, sync_bn and model.has_batch_statistics())
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=model.num_learners > 1)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp)
        self.labels = np.asarray(sampler.labels)
        self.clusters = np.full(len(self.labels), UNASSIGNED, dtype=np.int64)
        self.num_clusters = 0
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self._cache: torch.Tensor | None = None  # [N, D] features recorded by training steps (cluster_features="cache")
        self._fresh = torch.zeros(
            len(self.labels), dtype=torch.bool, device=self.device
        )  # recorded since re-clustering

    def begin_epoch(self, epoch: int) -> dict[str, Any] | None:
        """Prepare ``epoch``: re-cluster if the schedule says so (or K changed), set the sampler's epoch.

        Returns:
            The new :attr:`history` entry if a re-clustering happened, else ``None``.
        """
        self.epoch = epoch
        self.sampler.set_epoch(epoch)
        k = self.schedule.num_clusters(epoch)
        if k == self.num_clusters and not self.schedule.reclusters(epoch):
            return None
        start = time.perf_counter()
        if k == 1:
            clusters = drop_singleton_classes(np.zeros(len(self.labels), dtype=np.int64), self.labels)
        else:
            clusters = self._kmeans(k)
        self.clusters, self.num_clusters = clusters, k
        self.sampler.set_clusters(clusters, k)
        entry = {
            "epoch": epoch,
            "num_clusters": k,
            "sizes": np.bincount(clusters[clusters >= 0], minlength=k).tolist(),
            "unassigned": int((clusters < 0).sum()),
            "skipped": np.flatnonzero(self.sampler.skipped).tolist(),
            "seconds": time.perf_counter() - start,
            "class_nmi": cluster_class_nmi(clusters, self.labels),
            "classes_per_cluster": classes_per_cluster(clusters, self.labels, k),
        }
        self.history.append(entry)
        return entry

    def _extract(self, dataset: Dataset) -> torch.Tensor:
        return extract(
            self.model,
            dataset,
            self.schedule.cluster_on,
            batch_size=self.extract_batch_size,
            workers=self.workers,
            device=self.device,
            amp=self.amp,
        )[0]

    def _clustering_features(self) -> torch.Tensor:
        """``[N, D]`` features to cluster: a full pass, or the training steps' records completed by a partial pass."""
        if self.schedule.cluster_features == "pass" or self._cache is None:
            features = self._extract(self.cluster_dataset)
        else:
            cache, fresh = self._cache * self._fresh[:, None], self._fresh.float()
            if dist.is_initialized():  # every replica recorded its own batches: average what was recorded
                dist.all_reduce(cache)
                dist.all_reduce(fresh)
            features = (cache / fresh.clamp(min=1)[:, None]).cpu()
            missing = torch.nonzero(fresh == 0).flatten().cpu()
            if len(missing):
                features[missing] = self._extract(Subset(self.cluster_dataset, missing.tolist()))
        self._fresh.zero_()
        return features

    def _kmeans(self, k: int) -> np.ndarray:
        rank, world = _world()
        previous = self.clusters if self.num_clusters == k else None
        options = {"niter": self.schedule.kmeans_iters, "seed": self.seed + self.epoch}
        per_class = self.schedule.cluster_images_per_class
        if per_class is None:
            features = self._clustering_features()
            if rank == 0:
                clusters = assign_clusters(features.numpy(), self.labels, k, previous, **options)
        else:
            rows = sample_per_class(self.labels, per_class, np.random.default_rng([self.seed, self.epoch]))
            features = self._extract(Subset(self.cluster_dataset, rows.tolist()))
            if rank == 0:
                clusters = assign_classes(features.numpy(), rows, self.labels, k, previous, **options)
        if world == 1:
            return clusters
        shared = torch.from_numpy(clusters) if rank == 0 else torch.empty(len(self.labels), dtype=torch.int64)
        shared = shared.to(self.device)  # NCCL needs CUDA tensors, gloo runs on the CPU
        dist.broadcast(shared, src=0)
        return shared.cpu().numpy()

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor, learner: int, indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """One optimizer step on a batch of cluster ``learner``: mine triplets, margin loss, backward, step.

        Before :attr:`Schedule.full_embedding_epoch` only learner ``learner``'s slice (and the backbone) gets
        gradients; the other learners are not in the graph, so the optimizer does not touch them.

        Args:
            images: ``[B, 3, H, W]`` (uint8 or float), moved to the device here.
            labels: ``[B]`` int64 class labels.
            learner: the batch's cluster id.
            indices: ``[B]`` dataset indices of the batch; needed to record features for
                ``cluster_features="cache"``.

        Returns:
            ``loss`` (scalar) and ``triplets`` (number mined), as detached tensors (no host sync).
        """
        images, labels = _to_float(images.to(self.device, non_blocking=True)), labels.to(self.device)
        full = self.schedule.full_embedding(self.epoch)
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            embeddings, features = self.net(images, learner=None if full else learner, return_features=True)
        embeddings = embeddings.float()
        if self.schedule.cluster_features == "cache" and indices is not None:
            self._record(indices.to(self.device), features.detach().float())
        triplets = self.miner(embeddings, labels)
        loss = self.criteria[learner](embeddings, labels, triplets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if dist.is_initialized():  # loss parameters (learnable beta) are outside DDP: average them by hand
            for p in self.criteria[learner].parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(dist.get_world_size())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.detach(), "triplets": torch.tensor(len(triplets[0]))}

    @torch.no_grad()
    def _record(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        if self.schedule.cluster_on == "embedding":
            features = self.model.embed(features)
        if self._cache is None:
            self._cache = torch.zeros(len(self.labels), features.shape[1], device=self.device)
        self._cache[indices] = features
        self._fresh[indices] = True

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly after :meth:`begin_epoch` + the epoch's steps.

        Collective under ``torch.distributed`` (call it on every rank): ``miner_generator`` lists every rank's miner
        generator state (``None`` entries without a generator), as each rank draws its own triplets.
        """
        generator = self.miner.generator
        return {
            "model": self.model.state_dict(),
            "criteria": self.criteria.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": asdict(self.schedule),
            "clusters": torch.from_numpy(self.clusters),
            "num_clusters": self.num_clusters,
            "history": self.history,
            "epoch": self.epoch,
            "miner_generator": gather_per_rank(None if generator is None else generator.get_state()),
            "feature_cache": None if self._cache is None else (self._cache.cpu(), self._fresh.cpu()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the schedule and the number of processes must be the same); each rank takes
        its own miner generator state."""
        if state["schedule"] != asdict(self.schedule):
            raise ValueError(f"checkpoint schedule {state['schedule']} differs from {asdict(self.schedule)}")
        miner_generator = own_entry(state["miner_generator"])
        self.model.load_state_dict(state["model"])
        self.criteria.load_state_dict(state["criteria"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.clusters, self.num_clusters = state["clusters"].numpy().copy(), state["num_clusters"]
        self.history, self.epoch = state["history"], state["epoch"]
        if self.num_clusters:
            self.sampler.set_clusters(self.clusters, self.num_clusters)
        if miner_generator is not None and self.miner.generator is not None:
            self.miner.generator.set_state(miner_generator.cpu())  # RNG states are CPU tensors
        if state["feature_cache"] is not None:
            self._cache, self._fresh = (t.to(self.device) for t in state["feature_cache"])


def train_one_epoch(
    trainer: DivideAndConquerTrainer, loader: DataLoader, epoch: int, *, print_freq: int = 10, progress: bool = True
) -> dict[str, Any]:
    """One epoch of :meth:`DivideAndConquerTrainer.train_step` over ``loader``'s ``(images, labels, indices,
    learner)`` batches (a :class:`metric.samplers.BatchedDataset` over the trainer's sampler), under a progress bar
    on rank 0 refreshed every ``print_freq`` steps.

    Returns:
        ``{"loss", "triplets"}`` (means over the steps and the processes), ``"steps_per_learner"`` (this process's
        steps per learner) and ``"seconds"``.
    """
    start = time.perf_counter()
    loss_sum, triplet_sum = torch.zeros((), device=trainer.device), torch.zeros(())  # no per-step host sync
    steps = np.zeros(trainer.num_clusters, dtype=np.int64)
    show = progress and (not dist.is_initialized() or dist.get_rank() == 0)
    bar = tqdm(loader, desc=f"K={trainer.schedule.num_learners} epoch {epoch}", disable=not show, leave=False)
    for step, (images, labels, indices, learner) in enumerate(bar):
        out = trainer.train_step(images, labels, learner, indices)
        loss_sum += out["loss"]
        triplet_sum += out["triplets"]
        steps[learner] += 1
        if step % print_freq == 0:
            bar.set_postfix(loss=f"{float(out['loss']):.4f}", learner=learner)
    totals = torch.stack([loss_sum, triplet_sum.to(trainer.device)]) / len(loader)
    if dist.is_initialized():
        dist.all_reduce(totals)
        totals /= dist.get_world_size()
    totals = totals.cpu()
    return {
        "loss": float(totals[0]),
        "triplets": float(totals[1]),
        "steps_per_learner": steps.tolist(),
        "seconds": time.perf_counter() - start,
    }
