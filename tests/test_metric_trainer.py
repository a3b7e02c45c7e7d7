from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from metric.losses import build_loss
from metric.miners import DistanceWeightedMiner
from metric.model import EmbeddingNet, build_backbone
from metric.samplers import BatchedDataset, ClassBalancedBatchSampler, ClusterBatchSampler
from metric.trainer import DivideAndConquerTrainer, Schedule, build_optimizer, extract
from permgym.distributed import cleanup_distributed, sync_batchnorm

GROUPS, CLASSES_PER_GROUP, PER_CLASS = 3, 4, 5


def _dataset() -> TensorDataset:
    """Three colour groups (clear clusters) of four classes each, five 16 px uint8 images per class."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(GROUPS * CLASSES_PER_GROUP).repeat_interleave(PER_CLASS)
    colours = torch.tensor([[220, 30, 30], [30, 220, 30], [30, 30, 220]], dtype=torch.float32)
    base = colours[labels // CLASSES_PER_GROUP][:, :, None, None].expand(-1, -1, 16, 16)
    images = (base + 25 * torch.randn(len(labels), 3, 16, 16, generator=g)).clamp(0, 255).to(torch.uint8)
    return TensorDataset(images, labels)


def _trainer(
    schedule: Schedule, seed: int = 0, iterations: int = 3, frozen_bn: bool = False, lr: float = 1e-3
) -> DivideAndConquerTrainer:
    data = _dataset()
    torch.manual_seed(seed)
    model = EmbeddingNet(build_backbone("tiny"), 12, schedule.num_learners, frozen_bn=frozen_bn)
    criteria = nn.ModuleList(build_loss("margin") for _ in range(schedule.num_learners))
    sampler = ClusterBatchSampler(
        data.tensors[1], batch_size=8, samples_per_class=2, iterations_per_epoch=iterations, seed=seed
    )
    return DivideAndConquerTrainer(
        model,
        criteria,
        DistanceWeightedMiner(generator=torch.Generator().manual_seed(seed)),
        build_optimizer(model, criteria, lr=lr, embedding_lr=lr),
        schedule,
        sampler,
        data,
        seed=seed,
    )


def _run_epoch(trainer: DivideAndConquerTrainer, epoch: int) -> list[int]:
    trainer.begin_epoch(epoch)
    learners = []
    for images, labels, indices, learner in DataLoader(
        BatchedDataset(trainer.cluster_dataset), sampler=trainer.sampler, batch_size=None
    ):
        trainer.train_step(images, labels, learner, indices)
        learners.append(learner)
    return learners


def test_schedule_phases() -> None:
    s = Schedule(epochs=10, num_learners=4, recluster_every=2, full_embedding_epoch=4, finetune_epoch=8)
    assert [s.num_clusters(e) for e in range(10)] == [4] * 8 + [1] * 2
    assert [s.reclusters(e) for e in range(10)] == [True, False] * 4 + [False] * 2
    assert [s.full_embedding(e) for e in range(10)] == [False] * 4 + [True] * 6
    assert [s.phase(e) for e in (0, 4, 8)] == ["divide", "conquer", "finetune"]
    baseline = Schedule(epochs=3, num_learners=1)
    assert all(baseline.full_embedding(e) and not baseline.reclusters(e) for e in range(3))
    with pytest.raises(ValueError, match="cluster_on must be 'backbone' or 'embedding'"):
        Schedule(cluster_on="pixels")  # type: ignore[arg-type]


def test_warmup_trains_k1_before_the_first_clustering() -> None:
    s = Schedule(
        epochs=10, num_learners=4, recluster_every=2, warmup_epochs=3, full_embedding_epoch=6, finetune_epoch=8
    )
    assert [s.num_clusters(e) for e in range(10)] == [1] * 3 + [4] * 5 + [1] * 2
    assert [e for e in range(10) if s.reclusters(e)] == [3, 5, 7]
    assert [s.phase(e) for e in (0, 3, 6, 8)] == ["warmup", "divide", "conquer", "finetune"]
    assert all(s.full_embedding(e) for e in range(3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"finetune_epoch": 10},
            "finetune_epoch (--finetune-epoch) is 10 but must be in [0, epochs) = [0, 10) (--epochs 10)",
        ),
        (
            {"full_embedding_epoch": 12},
            "full_embedding_epoch (--full-embedding-epoch) is 12 but must be in [0, epochs)",
        ),
        ({"full_embedding_epoch": -2}, "full_embedding_epoch (--full-embedding-epoch) is -2"),
        ({"warmup_epochs": 10}, "warmup_epochs (--warmup-epochs) is 10 but must be in [0, epochs)"),
        (
            {"warmup_epochs": 6, "finetune_epoch": 5},
            "warmup_epochs (--warmup-epochs 6) must be < finetune_epoch (--finetune-epoch 5)",
        ),
    ],
)
def test_invalid_schedule_epochs_name_the_flags(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Schedule(epochs=10, num_learners=4, **kwargs)


def test_reclustering_logs_the_cluster_class_nmi() -> None:
    trainer = _trainer(Schedule(epochs=2, num_learners=3, cluster_on="backbone"))
    entry = trainer.begin_epoch(0)
    # the colour groups are the clusters: 3 clusters of 4 whole classes each (as in test_reclustering_keeps_...)
    assert entry["classes_per_cluster"] == [4, 4, 4]
    assert entry["class_nmi"] == pytest.approx(2 * np.log(3) / (np.log(3) + np.log(12)))


def test_single_learner_equals_plain_margin_loss_training() -> None:
    trainer = _trainer(Schedule(epochs=2, num_learners=1))
    for epoch in range(2):
        assert set(_run_epoch(trainer, epoch)) == {0}
    assert trainer.history[0]["sizes"] == [len(trainer.labels)]  # one cluster, no k-means

    data = _dataset()  # the plain loop: class-balanced batches, margin loss with DWS, Adam; same seeds
    torch.manual_seed(0)
    model = EmbeddingNet(build_backbone("tiny"), embedding_dim=12, num_learners=1)
    loss_fn, miner = build_loss("margin"), DistanceWeightedMiner(generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sampler = ClassBalancedBatchSampler(data.tensors[1], batch_size=8, samples_per_class=2, iterations_per_epoch=3)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for indices in sampler:
            images, labels = data[indices]
            embeddings = model(images.float() / 255)
            loss = loss_fn(embeddings, labels, miner(embeddings, labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for (name, ours), theirs in zip(trainer.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name


def test_a_step_updates_only_its_learner_and_the_backbone() -> None:
    trainer = _trainer(Schedule(epochs=4, num_learners=3))
    entry = trainer.begin_epoch(0)
    assert entry is not None and entry["num_clusters"] == 3
    images, labels = trainer.cluster_dataset[:]
    for learner in (2, 1):
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        keep = torch.from_numpy(trainer.clusters == learner)
        trainer.train_step(images[keep], labels[keep], learner)
        after = trainer.model.state_dict()
        changed = {k.split(".")[0] + "." + k.split(".")[1] for k in before if not torch.equal(before[k], after[k])}
        assert f"learners.{learner}" in changed and "backbone.body" in changed
        assert not {f"learners.{k}" for k in range(3) if k != learner} & changed


def test_reclustering_keeps_learner_identity() -> None:
    schedule = Schedule(epochs=6, num_learners=3, recluster_every=2, finetune_epoch=4, cluster_on="backbone")
    trainer = _trainer(schedule)
    trainer.begin_epoch(0)
    first = trainer.clusters.copy()
    groups = trainer.labels // CLASSES_PER_GROUP
    assert all(len(set(first[groups == g])) == 1 for g in range(GROUPS))  # the colour groups are the clusters
    assert trainer.begin_epoch(1) is None
    assert trainer.begin_epoch(2) is not None  # k-means seed differs (seed + epoch); matching keeps the ids
    np.testing.assert_array_equal(trainer.clusters, first)
    assert trainer.begin_epoch(4)["num_clusters"] == 1 and (trainer.clusters == 0).all()
    assert trainer.schedule.full_embedding(4)
    assert [h["epoch"] for h in trainer.history] == [0, 2, 4]


def test_cluster_on_embedding_and_extract() -> None:
    trainer = _trainer(Schedule(epochs=2, num_learners=3, cluster_on="embedding"))
    trainer.begin_epoch(0)
    assert sorted(set(trainer.clusters) - {-1}) == [0, 1, 2]
    emb, labels = extract(trainer.model, trainer.cluster_dataset, "embedding", batch_size=7)
    feats, _ = extract(trainer.model, trainer.cluster_dataset, "backbone")
    assert (
        emb.shape == (60, 12)
        and feats.shape == (60, trainer.model.backbone.out_dim)
        and torch.equal(labels, trainer.cluster_dataset[:][1])
    )
    assert trainer.model.training


def test_cached_features_need_frozen_bn_and_save_the_pass(monkeypatch) -> None:
    with pytest.raises(ValueError, match="cluster_features='cache' needs a backbone without train-mode BatchNorm"):
        _trainer(Schedule(num_learners=3, cluster_features="cache"))
    # a small learning rate, as with pretrained backbones: the recorded features are at most T epochs stale
    trainer = _trainer(Schedule(num_learners=3, recluster_every=2, cluster_features="cache"), frozen_bn=True, lr=1e-5)
    extracted = []
    real_extract = trainer._extract
    monkeypatch.setattr(trainer, "_extract", lambda ds: extracted.append(len(ds)) or real_extract(ds))
    _run_epoch(trainer, 0)
    seen = set()
    for epoch in (0, 1):  # the batches trained on since the re-clustering at epoch 0
        trainer.sampler.set_epoch(epoch)
        seen |= {i for indices, _ in trainer.sampler for i in indices}
    _run_epoch(trainer, 1)
    trainer.begin_epoch(2)
    assert extracted == [60, 60 - len(seen)] and 0 < len(seen) < 60
    groups = trainer.labels // CLASSES_PER_GROUP
    assert all(len(set(trainer.clusters[groups == g]) - {-1}) == 1 for g in range(GROUPS))


def test_state_dict_resumes_exactly() -> None:
    schedule = Schedule(epochs=3, num_learners=3, recluster_every=1, full_embedding_epoch=2)
    straight = _trainer(schedule)
    for epoch in range(3):
        _run_epoch(straight, epoch)

    first = _trainer(schedule)
    _run_epoch(first, 0)
    state = first.state_dict()
    resumed = _trainer(schedule, seed=0)
    with torch.no_grad():  # make sure the weights really come from the checkpoint
        for p in resumed.model.parameters():
            p.zero_()
    resumed.load_state_dict(state)
    for epoch in (1, 2):
        _run_epoch(resumed, epoch)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [{**h, "seconds": 0} for h in straight.history] == [{**h, "seconds": 0} for h in resumed.history]
    with pytest.raises(ValueError, match="checkpoint schedule"):
        _trainer(Schedule(epochs=3, num_learners=3)).load_state_dict(state)
    assert len(state["miner_generator"]) == 1  # one random state per process
    two_processes = {**state, "miner_generator": state["miner_generator"] * 2}
    with pytest.raises(ValueError, match=re.escape("the checkpoint was written with 2 process(es) and this run has 1")):
        resumed.load_state_dict(two_processes)


def test_amp_needs_cuda() -> None:
    with pytest.raises(ValueError, match="amp needs a CUDA device"):
        DivideAndConquerTrainer(*_trainer_parts(), device="cpu", amp=True)


def _trainer_parts() -> tuple:
    t = _trainer(Schedule(epochs=1, num_learners=1))
    return t.model, t.criteria, t.miner, t.optimizer, t.schedule, t.sampler, t.cluster_dataset


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_on_cuda() -> None:
    model, criteria, miner, _, schedule, sampler, data = _trainer_parts()
    model, criteria = model.cuda(), criteria.cuda()
    miner.generator = torch.Generator("cuda").manual_seed(0)
    trainer = DivideAndConquerTrainer(
        model, criteria, miner, build_optimizer(model, criteria), schedule, sampler, data, device="cuda", amp=True
    )
    assert len(_run_epoch(trainer, 0)) == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _batchnorms(model: nn.Module) -> list[type]:
    return [type(m) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_sync_batchnorm_conversion_keeps_the_parameters() -> None:
    """sync_batchnorm (convert_sync_batchnorm) swaps the BatchNorm modules but keeps their Parameters and buffers, so an optimizer built
    before still trains the converted model (the conversion itself runs on the CPU; SyncBatchNorm's forward does not)."""
    trainer = _trainer(Schedule(epochs=1, num_learners=2))
    model = trainer.model
    parameters, buffers = list(model.parameters()), list(model.buffers())
    assert sync_batchnorm(model, torch.device("cuda")) is model  # the helper the trainer calls
    assert _batchnorms(model) == [nn.SyncBatchNorm] * 3
    assert all(a is b for a, b in zip(parameters, model.parameters(), strict=True))
    assert all(a is b for a, b in zip(buffers, model.buffers(), strict=True))
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in (*model.parameters(), *trainer.criteria.parameters())} == optimized


@pytest.fixture
def process_group(tmp_path: Path) -> Iterator[None]:
    """A one-process gloo group, so that the trainer takes its DDP path."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    yield
    cleanup_distributed()  # collects the DDP wrappers before the group goes


def test_ddp_on_the_cpu_keeps_plain_batchnorm(process_group: None) -> None:
    trainer = _trainer(Schedule(epochs=1, num_learners=2))
    assert isinstance(trainer.net, DistributedDataParallel)
    assert _batchnorms(trainer.model) == [nn.BatchNorm2d] * 3  # SyncBatchNorm needs GPUs
    assert len(_run_epoch(trainer, 0)) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ddp_on_cuda_syncs_batchnorm(process_group: None) -> None:
    data = _dataset()
    expected = {(True, False): nn.SyncBatchNorm, (False, False): nn.BatchNorm2d, (True, True): nn.BatchNorm2d}
    for (sync_bn, frozen_bn), batchnorm in expected.items():
        model = EmbeddingNet(build_backbone("tiny"), 12, 2, frozen_bn=frozen_bn).cuda()
        criteria = nn.ModuleList(build_loss("margin") for _ in range(2)).cuda()
        trainer = DivideAndConquerTrainer(
            model,
            criteria,
            DistanceWeightedMiner(generator=torch.Generator("cuda").manual_seed(0)),
            build_optimizer(model, criteria),  # built before the conversion
            Schedule(epochs=1, num_learners=2),
            ClusterBatchSampler(data.tensors[1], batch_size=8, samples_per_class=2, iterations_per_epoch=3),
            data,
            device="cuda:0",
            sync_bn=sync_bn,
        )
        assert _batchnorms(model) == [batchnorm] * 3, (sync_bn, frozen_bn)
        before = [p.detach().clone() for p in model.backbone.parameters()]
        assert len(_run_epoch(trainer, 0)) == 3
        assert all(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters(), strict=True))


def test_reclustering_whole_classes_embeds_only_a_few_images_per_class(monkeypatch) -> None:
    schedule = Schedule(epochs=2, num_learners=3, cluster_on="backbone", cluster_images_per_class=2)
    trainer = _trainer(schedule)
    extracted = []
    real_extract = trainer._extract
    monkeypatch.setattr(trainer, "_extract", lambda ds: extracted.append(len(ds)) or real_extract(ds))
    trainer.begin_epoch(0)
    assert extracted == [2 * GROUPS * CLASSES_PER_GROUP]  # 24 of the 60 images
    assert all(len(set(trainer.clusters[trainer.labels == c])) == 1 for c in range(12))  # classes stay whole
    groups = trainer.labels // CLASSES_PER_GROUP
    assert all(len(set(trainer.clusters[groups == g])) == 1 for g in range(GROUPS))
    with pytest.raises(ValueError, match=r"cluster_images_per_class \(--cluster-images-per-class\) must be >= 1"):
        Schedule(cluster_images_per_class=2, cluster_features="cache")
