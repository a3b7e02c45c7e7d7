"""Divide-and-conquer metric learning (Sanakoyeu et al., CVPR 2019) on a pretrained trunk: train, evaluate, plot.

The training set is clustered with k-means into K groups and the embedding layer is split into K slices
("learners"); learner k trains only on batches of cluster k, the data are re-clustered every few epochs, then the full
embedding is trained and finally fine-tuned on all data with K = 1. ``--num-learners 1`` is the single-metric
baseline through the same code; ``--compare-k 1,4`` trains several K one after the other and compares them.

Examples::

    python experiments/dc_transfer.py                      # embedded data; the last ssl_ucf101 trunk if there is one
    python experiments/dc_transfer.py --quick              # a ~1 minute run
    python experiments/dc_transfer.py --compare-k 1,4 --out runs/dc_compare
    python experiments/dc_transfer.py --dataset shapes -K 8 --compare-k 1 --warmup-epochs 1   # many classes
    python experiments/dc_transfer.py --dataset cub200 --root data/CUB_200_2011 --backbone resnet50 \\
        --init imagenet --num-learners 4 --embedding-dim 128 --epochs 200 --iters-per-epoch 74 --frozen-bn \\
        --lr 1e-5 --embedding-lr 1e-5 --recluster-every 2 --full-embedding-epoch 80 --finetune-epoch 190
    torchrun --nproc_per_node=2 experiments/dc_transfer.py --quick   # DDP (gloo on CPU, NCCL on GPUs)
    python experiments/dc_transfer.py --out runs/dc_transfer --resume   # continue; as many processes as before

Outputs in ``--out`` (rank 0 writes): ``config.json``, ``metrics.json`` (``R@1`` ... ``NMI``, ``MAP@R`` of the final
epoch; no test-set model selection), ``results.md``, plots, TensorBoard logs in ``tb/``, and per K a folder ``K{k}/``
with ``checkpoint.pth`` and ``trunk.pth`` (permgym trunks; ``--init ssl:OUT/K{k}/trunk.pth`` loads it into another run).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from reporting import log_config, log_dc_epoch, write_dc_results
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter

from metric.data import EMBEDDED, TrainingData, build_training_data
from metric.losses import LOSSES, build_loss
from metric.miners import DistanceWeightedMiner
from metric.model import BACKBONES, EmbeddingNet, build_backbone, init_argument, resolve_init
from metric.samplers import BatchedDataset, ClusterBatchSampler
from metric.trainer import DivideAndConquerTrainer, Schedule, build_optimizer, evaluate_task, train_one_epoch
from permgym.distributed import World, set_rng_states
from permgym.models import TRUNKS, save_trunk
from permgym.run import (
    Interrupted,
    Presets,
    add_device_arguments,
    add_run_folder_arguments,
    add_stop_argument,
    default_workers,
    fill_defaults,
    load_checkpoints,
    parse_key_value,
    require_at_least,
    require_finite,
    require_positive,
    run_cli,
    run_in_folder,
    save_checkpoint,
    write_config,
)

DATASETS = ("synthetic", "shapes", "cub200", "cars196", "sop", "inshop", "vehicleid", "folder")

# Settings that --quick changes. Every other default is in get_args_parser. The defaults fit the embedded data on
# 2 CPU cores (<= 10 min); --quick fits 90 s.
# The embedded data use the last frame of every clip: there the motion shows in the object's position and scale,
# while the middle frame (SyntheticRetrieval's default) shows little more than the shape (K=1 test R@1 ~5 % vs ~22 %
# in a one-off comparison by hand, `-K 1 --data-option frame=4` against the default, seed 0 data; no bench repeats it).
# The default schedule is the 20-epoch one that an earlier bench/dc.py chose for K = 1 and K = 4 on the embedded data
# (with epochs of 20 batches; an epoch is now one pass, 15 batches of 80 on the 1,200 embedded training images).
PRESETS = Presets({
    "default": {"epochs": 20, "iters_per_epoch": None, "full_embedding_epoch": 8, "finetune_epoch": 17,
                "projection": "tsne", "synthetic": {"frame": 7, "videos_per_class": 40}},
    "quick": {"epochs": 4, "iters_per_epoch": 10, "full_embedding_epoch": 2, "finetune_epoch": 3,
              "projection": "pca", "synthetic": {"frame": 7, "videos_per_class": 20}},
}, labels={"quick": "with --quick"}, overrides=("quick",))  # fmt: skip


def _int_list(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v]
    except ValueError:
        numbers = []
    if not numbers:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,4, got {value!r}")
    return numbers


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Divide-and-conquer metric learning on a pretrained trunk",
        add_help=add_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults are sized for the embedded data on a CPU. The paper's setting: --backbone resnet50 --init "
        "imagenet --embedding-dim 128 --batch-size 80 --samples-per-class 4 --lr 1e-5 --embedding-lr 1e-5 "
        "--frozen-bn, about 200 epochs with re-clustering every 2, K = 4 (CUB, CARS) or 8 (SOP, In-shop, VID).",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="synthetic", choices=DATASETS, help="dataset (default: synthetic)")
    data.add_argument("--root", default=None, help="dataset folder (default: none; the embedded data needs none)")
    data.add_argument("--image-size", default=None, type=int,
                      help="image side in pixels (default: 64 for synthetic, 32 for shapes, else 224)")  # fmt: skip
    data.add_argument("--resize", default=None, type=int,
                      help="evaluation resize before the centre crop (default: image size * 8/7, 256 for 224)")  # fmt: skip
    data.add_argument("--augment", default=None, choices=("none", "crop"),
                      help="training augmentation: none, or random resized crop (+ flip for image datasets) "
                      "(default: none for the embedded data, else crop)")  # fmt: skip
    data.add_argument("--data-option", default=[], action="append", type=parse_key_value, metavar="KEY=VALUE",
                      help="extra dataset argument (JSON value, else a string), repeatable, e.g. train_fraction=0.5 "
                      f"for folder (default: none; the embedded data: {PRESETS['default']['synthetic']}, with --quick "
                      f"{PRESETS['quick']['synthetic']})")  # fmt: skip
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", default=None, choices=BACKBONES,
                       help="backbone (default: the ssl checkpoint's trunk, else tiny)")  # fmt: skip
    model.add_argument("--init", default="auto", type=init_argument,
                       help="backbone weights: random, imagenet (torchvision cache), ssl:CKPT, or auto = the newest "
                       "runs/ssl_ucf101*/trunk.pth if present, else random (default: auto)")  # fmt: skip
    model.add_argument("-d", "--embedding-dim", default=128, type=int, help="embedding size d (default: 128)")
    model.add_argument("-K", "--num-learners", default=4, type=int,
                       help="learners/clusters K; 1 = baseline (default: 4)")  # fmt: skip
    model.add_argument("--compare-k", default=[], type=_int_list,
                       help="also train these K, e.g. 1,4, and compare them (default: only --num-learners)")  # fmt: skip
    model.add_argument("--frozen-bn", action="store_true", help="keep backbone BatchNorm statistics fixed")
    sched = parser.add_argument_group("schedule (epochs are 0-based)")
    sched.add_argument("--epochs", type=int, help=PRESETS.help("epochs", "training epochs"))
    sched.add_argument("--iters-per-epoch", type=int,
                       help=PRESETS.help("iters_per_epoch",
                                         "batches per epoch; None = one pass over the training set"))  # fmt: skip
    sched.add_argument("--recluster-every", default=2, type=int, help="re-cluster every T epochs (default: 2)")
    sched.add_argument("--warmup-epochs", default=0, type=int,
                       help="train as K = 1 (all data, full embedding) for this many epochs before the first "
                       "clustering, so that the clusters start from features that separate classes "
                       "(default: 0)")  # fmt: skip
    sched.add_argument("--full-embedding-epoch", type=int,
                       help=PRESETS.help("full_embedding_epoch",
                                         "loss on the full embedding from this epoch; -1 = never"))  # fmt: skip
    sched.add_argument("--finetune-epoch", type=int,
                       help=PRESETS.help("finetune_epoch", "fine-tune with K = 1 from this epoch; -1 = never"))  # fmt: skip
    sched.add_argument("--cluster-on", default="embedding", choices=("embedding", "backbone"),
                       help="what k-means clusters: the embedding (as the paper says) or the backbone features (as the "
                       "reference code does); an earlier bench/dc.py found the two within noise, see "
                       "metric.trainer.Schedule (default: embedding)")  # fmt: skip
    sched.add_argument("--kmeans-iters", default=20, type=int, help="k-means iterations (default: 20)")
    sched.add_argument("--cluster-features", default="pass", choices=("pass", "cache"),
                       help="features for k-means: an eval pass over the training set, or those the training steps "
                       "computed since the last re-clustering (needs --frozen-bn) (default: pass)")  # fmt: skip
    sched.add_argument("--cluster-images-per-class", default=None, type=int, metavar="N",
                       help="cluster whole classes from the features of N images per class (k-means on class means), "
                       "so that a re-clustering embeds N images per class, not the whole training set; 0 = cluster "
                       "every image on its own from a pass over the training set, as the paper (default: 2, or 0 with "
                       "--cluster-features cache; see metric.trainer.Schedule)")  # fmt: skip
    loss = parser.add_argument_group("loss")
    loss.add_argument("--loss", default="margin", choices=LOSSES, help="loss (default: margin)")
    loss.add_argument("--margin", default=0.2, type=float, help="margin alpha (default: 0.2)")
    loss.add_argument("--beta", default=1.2, type=float, help="margin-loss boundary beta (default: 1.2)")
    loss.add_argument("--learn-beta", action="store_true", help="train beta (one per learner)")
    loss.add_argument("--beta-lr", default=5e-4, type=float, help="learning rate of beta (default: 5e-4)")
    loss.add_argument("--dws-cutoff", default=0.5, type=float, help="distance-weighted sampling cutoff (default: 0.5)")
    loss.add_argument("--nonzero-loss-cutoff", default=1.4, type=float,
                      help="never draw negatives this far (default: 1.4 = beta + alpha)")  # fmt: skip
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("-b", "--batch-size", default=80, type=int, help="images per batch per process (default: 80)")
    optim.add_argument("-m", "--samples-per-class", default=4, type=int,
                       help="images per class in a batch (default: 4)")  # fmt: skip
    optim.add_argument("--lr", default=1e-3, type=float, help="Adam learning rate of the backbone (default: 1e-3)")
    optim.add_argument("--embedding-lr", default=1e-3, type=float, help="of the embedding layer (default: 1e-3)")
    optim.add_argument("--wd", "--weight-decay", dest="weight_decay", default=1e-4, type=float,
                       help="weight decay (default: 1e-4)")  # fmt: skip
    run = parser.add_argument_group("run")
    run.add_argument("--quick", action="store_true", help="a short run (< 90 s on 2 CPU cores); explicit flags win")
    add_run_folder_arguments(run, "runs/dc_transfer")  # --out, --resume (the checkpoints in --out), --overwrite
    run.add_argument("--seed", default=0, type=int, help="seed (default: 0)")
    add_device_arguments(run)  # --device, --amp, --no-sync-bn
    run.add_argument("--threads", default=None, type=int,
                     help="CPU threads of torch and faiss per process (default: torch's default)")  # fmt: skip
    run.add_argument("-j", "--workers", default=None, type=int,
                     help="DataLoader workers (default: 0 for the in-memory embedded data, else min(4, CPU cores - 1), "
                     "0 on machines with 2 cores or fewer)")  # fmt: skip
    run.add_argument("--eval-every", default=2, type=int, help="evaluate every N epochs and at the end (default: 2)")
    run.add_argument("--print-freq", default=10, type=int, help="progress-bar refresh in steps (default: 10)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--projection", choices=("tsne", "pca"), help=PRESETS.help("projection", "embedding plot"))
    add_stop_argument(run, "epochs", " of training in this invocation (at the first unfinished K)")
    return parser


#: Options that do not change results: they may differ between a run and its --resume.
RESUME_IGNORES = ("out", "resume", "overwrite", "stop_after", "no_progress", "print_freq", "threads",
                  "quick", "projection")  # fmt: skip
#: Float options, all of which must be finite.
FLOATS = ("margin", "beta", "beta_lr", "dws_cutoff", "nonzero_loss_cutoff", "lr", "embedding_lr", "weight_decay")
#: Options that must be >= 1 (0 is never "the default").
SIZES = ("epochs", "iters_per_epoch", "recluster_every", "kmeans_iters", "batch_size", "samples_per_class",
         "embedding_dim", "num_learners", "eval_every", "print_freq", "image_size", "resize", "threads",
         "stop_after")  # fmt: skip


def apply_preset(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the preset-dependent settings left unset, and validate every option before any work starts.

    Raises:
        ValueError: a size below 1, a phase epoch outside the run, or options that do not fit the dataset.
    """
    preset = PRESETS["quick" if args.quick else "default"]
    PRESETS.fill(args, "quick" if args.quick else "default")
    embedded = args.dataset in EMBEDDED
    fill_defaults(args, {"workers": 0 if embedded else default_workers(), "image_size": EMBEDDED.get(args.dataset, 224),
                         "augment": "none" if embedded else "crop"})  # fmt: skip
    require_at_least(args, 1, *SIZES)
    require_finite(args, *FLOATS)
    require_at_least(args, 0, "seed", "workers", "margin", "beta", "dws_cutoff", "nonzero_loss_cutoff", "weight_decay")
    require_positive(args, "lr", "embedding_lr", "beta_lr")
    for name in ("full_embedding_epoch", "finetune_epoch"):
        value = getattr(args, name)
        if value == -1:
            setattr(args, name, None)
        elif not 0 <= value < args.epochs:
            raise ValueError(f"--{name.replace('_', '-')} {value} is outside the run's epochs 0..{args.epochs - 1} "
                             f"(--epochs {args.epochs}); give an epoch inside it, or -1 for never")  # fmt: skip
    if args.samples_per_class > args.batch_size:
        raise ValueError(f"--samples-per-class {args.samples_per_class} exceeds --batch-size {args.batch_size}")
    if any(k < 1 for k in args.compare_k):
        raise ValueError(f"--compare-k entries must be >= 1, got {args.compare_k}")
    if embedded:
        if args.root is not None:
            raise ValueError(f"--root does not apply to --dataset {args.dataset} (embedded data); drop it or choose "
                             f"one of {', '.join(d for d in DATASETS if d not in EMBEDDED)}")  # fmt: skip
        if args.dataset == "synthetic":
            args.data_option = [*preset["synthetic"].items(), *args.data_option]
    elif args.root is None:
        raise ValueError(f"--dataset {args.dataset} needs --root (the dataset folder)")
    if args.amp and args.device == "cpu":
        raise ValueError("--amp needs CUDA; drop it or use --device cuda")
    make_schedule(args, args.num_learners)  # the warm-up and the phases against --epochs (errors name the flags)
    return args


def evaluate(model: EmbeddingNet, data: TrainingData, args: argparse.Namespace, device: torch.device) -> tuple:
    """Retrieval metrics of the full embedding on the test task (rank 0), the query embeddings and labels."""
    return evaluate_task(model, data.task, batch_size=args.batch_size, workers=args.workers, device=device,
                         amp=args.amp)  # fmt: skip


def make_schedule(args: argparse.Namespace, num_learners: int) -> Schedule:
    per_class = args.cluster_images_per_class
    if per_class is None:
        per_class = 2 if args.cluster_features == "pass" else 0
    return Schedule(epochs=args.epochs, num_learners=num_learners, recluster_every=args.recluster_every,
                    warmup_epochs=args.warmup_epochs, full_embedding_epoch=args.full_embedding_epoch,
                    finetune_epoch=args.finetune_epoch, cluster_on=args.cluster_on, kmeans_iters=args.kmeans_iters,
                    cluster_features=args.cluster_features, cluster_images_per_class=per_class or None)  # fmt: skip


def train_run(
    args: argparse.Namespace,
    num_learners: int,
    init: str,
    data: TrainingData,
    out: Path,
    world: World,
    config: dict[str, Any],
    restored: dict[str, Any] | None,
) -> dict[str, Any]:
    """Train (or continue from ``restored``, its checkpoint) one learner with ``num_learners`` learners; returns its
    log and final test embeddings. ``config`` is saved with every checkpoint."""
    rank, device = world.rank, world.device
    torch.manual_seed(args.seed)
    model = EmbeddingNet(build_backbone(args.backbone, init), args.embedding_dim, num_learners, args.frozen_bn)
    model.to(device)
    criteria = nn.ModuleList(build_loss(args.loss, margin=args.margin, beta=args.beta, learn_beta=args.learn_beta)
                             for _ in range(num_learners)).to(device)  # fmt: skip
    miner = DistanceWeightedMiner(args.dws_cutoff, args.nonzero_loss_cutoff,
                                  generator=torch.Generator(device).manual_seed(args.seed + rank))  # fmt: skip
    optimizer = build_optimizer(model, criteria, lr=args.lr, embedding_lr=args.embedding_lr, beta_lr=args.beta_lr,
                                weight_decay=args.weight_decay)  # fmt: skip
    sampler = ClusterBatchSampler(np.asarray(data.train.labels), batch_size=args.batch_size,
                                  samples_per_class=args.samples_per_class, iterations_per_epoch=args.iters_per_epoch,
                                  seed=args.seed, num_replicas=world.world_size, rank=rank)  # fmt: skip
    schedule = make_schedule(args, num_learners)
    trainer = DivideAndConquerTrainer(model, criteria, miner, optimizer, schedule, sampler, data.cluster,
                                      device=device, amp=args.amp, seed=args.seed, extract_batch_size=args.batch_size,
                                      workers=args.workers, sync_bn=args.sync_bn)  # fmt: skip
    loader = DataLoader(BatchedDataset(data.train), sampler=sampler, batch_size=None, num_workers=args.workers,
                        persistent_workers=args.workers > 0, pin_memory=device.type == "cuda")  # fmt: skip
    checkpoint, log, start_epoch = checkpoint_path(out, num_learners), [], 0
    if restored is not None:
        trainer.load_state_dict(restored["trainer"])
        set_rng_states(restored["rng"])
        log, start_epoch = restored["log"], restored["epoch"] + 1
        print(f"K={num_learners}: resumed from {checkpoint} at epoch {start_epoch}")
    writer = SummaryWriter(out / "tb" / f"K{num_learners}") if rank == 0 else None
    if writer is not None and start_epoch == 0:
        log_config(writer, {**vars(args), "num_learners": num_learners, "init": init})
    final = None
    for epoch in range(start_epoch, schedule.epochs):
        clustering = trainer.begin_epoch(epoch)
        stats = train_one_epoch(trainer, loader, epoch, print_freq=args.print_freq, progress=not args.no_progress)
        last = epoch == schedule.epochs - 1
        evaluation = evaluate(model, data, args, device) if last or (epoch + 1) % args.eval_every == 0 else None
        metrics = evaluation[0] if evaluation else {}
        final = evaluation if last else None
        record = {"epoch": epoch, "phase": schedule.phase(epoch), **stats, "metrics": metrics,
                  "recluster_seconds": clustering["seconds"] if clustering else 0.0}  # fmt: skip
        log.append(record)
        state = {"trainer": trainer.state_dict(), "log": log, "epoch": epoch}  # on every rank (per-rank states)
        if rank == 0:
            print(f"K={num_learners} epoch {epoch + 1}/{schedule.epochs} [{record['phase']}] loss {stats['loss']:.4f} "
                  f"triplets {stats['triplets']:.0f} " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                  + f" | {stats['seconds']:.1f}s train, {record['recluster_seconds']:.1f}s re-clustering",
                  flush=True)  # fmt: skip
            log_dc_epoch(writer, record, clustering)
        save_checkpoint(world, checkpoint, config, state)  # on every rank: it gathers each rank's random states
        if args.stop_after is not None and epoch + 1 - start_epoch >= args.stop_after and not last:
            if writer is not None:
                writer.close()
            raise Interrupted(
                f"K={num_learners}: stopped after epoch {epoch + 1} (--stop-after); continue with --resume"
            )
    if final is None:  # resumed a finished run: evaluate its checkpoint
        final = evaluate(model, data, args, device)
    if rank == 0 and model.backbone.name in TRUNKS:  # for --init ssl:PATH of another run (e.g. pretrained elsewhere)
        save_trunk(model.backbone, trunk_path(out, num_learners), dataset=args.dataset, num_learners=num_learners)
    if writer is not None:
        writer.close()
    return {"num_learners": num_learners, "metrics": final[0], "log": log, "history": trainer.history,
            "embeddings": final[1], "labels": final[2]}  # fmt: skip


def checkpoint_path(out: Path, num_learners: int) -> Path:
    """The checkpoint of the run with ``num_learners`` learners."""
    return out / f"K{num_learners}" / "checkpoint.pth"


def trunk_path(out: Path, num_learners: int) -> Path:
    """The trained trunk of the run with ``num_learners`` learners (a :func:`permgym.models.save_trunk` file)."""
    return out / f"K{num_learners}" / "trunk.pth"


def check_learners(ks: list[int], train: Dataset) -> None:
    """Refuse a K above the number of training classes (k-means would leave learners without a class)."""
    classes = len(np.unique(np.asarray(train.labels)))
    if max(ks) > classes:
        raise ValueError(f"-K/--compare-k {max(ks)} exceeds the {classes} training classes; choose K <= {classes}")


def main(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train every requested K, evaluate, and (rank 0) write the outputs.

    Returns:
        metrics.json's content on rank 0; None on other ranks and when stopped by ``--stop-after``.
    """
    args = apply_preset(args)
    if args.threads is not None:
        faiss.omp_set_num_threads(args.threads)
    return run_in_folder(args, run)


def run(args: argparse.Namespace, world: World) -> dict[str, Any] | None:
    """:func:`main` once the output folder is this run's."""
    out, rank = Path(args.out), world.rank
    init, args.backbone, message = resolve_init(args.init, args.backbone)
    ks = list(dict.fromkeys([*args.compare_k, args.num_learners]))
    config = {**vars(args), "init_resolved": init}
    paths = {k: checkpoint_path(out, k) for k in ks}
    restored = load_checkpoints(out, paths, config, RESUME_IGNORES) if args.resume else {}
    data = build_training_data(args.dataset, args.root, args.image_size, args.augment, args.resize,
                               **dict(args.data_option))  # fmt: skip
    check_learners(ks, data.train)
    if rank == 0:
        print(message)
        gallery = f", gallery {data.task.gallery!r}" if data.task.gallery is not None else ""
        print(f"data: train {data.train!r}, query {data.task.query!r}{gallery} ({data.task.protocol} protocol)")
    write_config(world, out, **config, runs_k=ks, schedules={f"K={k}": asdict(make_schedule(args, k)) for k in ks})
    runs = [train_run(args, k, init, data, out, world, config, restored.get(k)) for k in ks]
    if rank != 0:
        return None
    metrics = write_dc_results(args, runs, init, out, data.skipped)
    print(f"results in {out}/ (results.md, metrics.json, plots, tb/)")
    print((out / "results.md").read_text())
    return metrics


if __name__ == "__main__":
    run_cli(main, get_args_parser())
