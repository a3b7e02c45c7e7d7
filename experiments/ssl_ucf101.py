"""Ordering self-supervision with a permutation sampler, then action recognition: pretrain, fine-tune, evaluate.

Stages, for the sampler of ``--sampler`` and each ``--compare`` baseline (a sampler name or ``random-init``):

1. **Pretraining** (:func:`agents.pretrain.pretrain`): one ``PermSampling`` episode of ``--ssl-updates`` SGD updates,
   the sampler choosing each step's permutations. It sees the **training split only** (``PRETRAIN_SUBSET``), on every
   dataset: the test videos are only seen by the evaluations.
2. **Retrieval** with the pretrained trunk (VCOP protocol, :func:`permgym.probe.vcop_retrieval`): test videos query
   training videos by cosine similarity of their features averaged over ``--retrieval-clips`` windows; top-1 ... 50.
3. **Fine-tuning** on the labelled training split (:func:`permgym.finetune.finetune`): trunk + linear layer over the
   n frames' concatenated features, the trunk at a lower learning rate.
4. **Evaluation** on the test split: video-level top-1/top-5 over ``--test-clips`` windows, a confusion matrix.

Examples::

    python experiments/ssl_ucf101.py                         # embedded SyntheticActions (<= 10 min on 2 CPU cores)
    python experiments/ssl_ucf101.py --quick                 # <= 90 s
    python experiments/ssl_ucf101.py --compare uniform,random-init --out runs/ssl_compare
    python experiments/ssl_ucf101.py --dataset ucf101 --root data/UCF-101 --annotations data/ucfTrainTestlist
    torchrun --nproc_per_node=2 experiments/ssl_ucf101.py --quick       # DDP: gloo on CPUs, NCCL on GPUs
    python experiments/ssl_ucf101.py --out runs/ssl_ucf101 --resume     # continue; as many processes as before

Outputs in ``--out`` (rank 0 writes): ``config.json``, ``metrics.json`` (flat keys: ``ssl/val_loss``,
``retrieval/top1``, ``finetune/top1``, ``time/ssl_s`` ...; a ``--compare`` run's keys prefixed by its name),
``results.md``, plots, TensorBoard logs in ``tb/``, ``checkpoint.pth`` (for ``--resume``), ``trunk.pth`` (read by
``experiments/dc_transfer.py``), ``sampler.pth`` and ``finetuned.pth``; a ``--compare`` run's files go to
``<out>/<name>/``.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from reporting import write_ssl_results

from agents import Sampler
from agents.pretrain import pretrain
from agents.registry import SAMPLERS, check_sampler_name, make_sampler, sampler_argument
from permgym.config import TASKS, PermSamplingConfig, make_config
from permgym.data import build
from permgym.distributed import World, broadcast_object, max_divergence, set_rng_states
from permgym.env import PermSamplingEnv
from permgym.finetune import (
    ActionClassifier,
    FinetuneConfig,
    FinetuneTrainer,
    evaluate_videos,
    finetune,
    new_classifier,
)
from permgym.models import TRUNKS, Trunk, build_trunk, save_trunk
from permgym.probe import ProbeData, load_probe_data, vcop_retrieval
from permgym.run import (
    Checkpointer,
    Presets,
    add_device_arguments,
    add_run_folder_arguments,
    add_stop_argument,
    load_checkpoint,
    parse_key_value,
    require_apart,
    require_at_least,
    require_finite,
    require_positive,
    run_cli,
    run_in_folder,
    write_config,
)

DATASETS = ("synthetic", "ucf101", "hmdb51", "folder")
#: The subset of every dataset that pretraining (clip pool and validation batch) draws from: never the test videos.
PRETRAIN_SUBSET = "train"
RANDOM_INIT = "random-init"

# Settings that depend on the data regime; --quick then shortens the budget. Every other default is in the parser.
PRESETS = Presets({
    "synthetic": {"ssl_updates": 1200, "ft_epochs": 30, "ft_batch_size": 32, "ft_optimizer": "adam", "ft_lr": 2e-3,
                  "test_clips": 5, "eval_every": 5, "task": "temporal", "checkpoint_every": 25, "threads": 1},
    "video": {"ssl_updates": 20000, "ft_epochs": 30, "ft_batch_size": 64, "ft_optimizer": "sgd", "ft_lr": 0.01,
              "test_clips": 10, "eval_every": 10, "task": "joint", "checkpoint_every": 20},
    "quick": {"ssl_updates": 200, "ft_epochs": 8, "eval_every": 4, "checkpoint_every": 10},
}, labels={"synthetic": "on synthetic", "video": "on videos", "quick": "with --quick"}, overrides=("quick",))  # fmt: skip
#: PermSampling preset of each task on the embedded data; video datasets use "ucf101" with the task set.
SYNTHETIC_PRESETS = {"temporal": "tiny", "spatial": "tiny-spatial", "joint": "tiny-joint"}


def _compare_list(value: str) -> list[str]:
    names = [v for v in value.split(",") if v]
    for name in names:
        if name != RANDOM_INIT:
            try:
                check_sampler_name(name)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"invalid --compare entry {name!r} (choose from {RANDOM_INIT}, {', '.join(SAMPLERS)}, sb3:PATH)"
                ) from None
    return names


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Ordering self-supervision with a permutation sampler, then action recognition: pretraining, "
        "retrieval, fine-tuning and video-level evaluation",
        add_help=add_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Video defaults (--dataset ucf101/hmdb51/folder): the paper's known setup where known (joint temporal "
        "+ spatial ordering, one CaffeNet-style trunk, SGD lr 0.01, 4-frame tuples with all 24 orders, 3x3 jigsaw "
        "with a 100-permutation max-Hamming bank, high-motion tuple selection); our choices where the paper is not "
        "available: 96 px frames and 64 px tiles from a 128 px / 32-frame cache, batch 64, 20,000 pretraining "
        "updates, fine-tuning 30 epochs SGD lr 0.01 (trunk x0.1), dropout 0.5, batch 64, 10 test windows per video "
        "(VCOP), retrieval features averaged over 10 windows per video (VCOP). Pretraining reads the training split "
        "only (a folder tree: every 5th video of each class is a test video). Batch sizes are global: each of N "
        "torchrun processes trains on 1/N of every batch.",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="synthetic", choices=DATASETS, help="dataset (default: synthetic)")
    data.add_argument("--root", default=None, help="video folder: UCF-101/, hmdb51/ or a class-per-folder tree")
    data.add_argument("--annotations", default=None,
                      help="official split folder: ucfTrainTestlist/ or testTrainMulti_7030_splits/")  # fmt: skip
    data.add_argument("--split", default=1, type=int, choices=(1, 2, 3), help="official split (default: 1)")
    data.add_argument("--cache-dir", default="runs/cache",
                      help="where frame caches are built and reused (default: runs/cache)")  # fmt: skip
    data.add_argument("--frames", default=32, type=int, help="frames per cached clip (default: 32)")
    data.add_argument("--frame-size", default=128, type=int, help="cached frame side in pixels (default: 128)")
    data.add_argument("-j", "--workers", default=0, type=int, help="video decoding processes (default: 0 = this one)")
    data.add_argument("--synthetic-videos", default=600, type=int, help="SyntheticActions clips (default: 600)")
    data.add_argument("--synthetic-classes", default=60, type=int, help="SyntheticActions classes (default: 60)")
    ssl = parser.add_argument_group("self-supervised pretraining")
    ssl.add_argument("--task", default=None, choices=TASKS,
                     help="ordering task (default: temporal on synthetic, joint on videos)")  # fmt: skip
    ssl.add_argument("--sampler", default="policy_gradient", type=sampler_argument,
                     help=f"permutation sampler: {', '.join(SAMPLERS)} or sb3:PATH (a saved Stable-Baselines3 "
                     "model) (default: policy_gradient)")  # fmt: skip
    ssl.add_argument("--sampler-option", default=[], action="append", type=parse_key_value, metavar="KEY=VALUE",
                     help="constructor argument of the --sampler run's sampler (JSON value), repeatable, e.g. "
                     'config=\'{"learning_rate": 0.003}\' (default: none)')  # fmt: skip
    ssl.add_argument("--action-mode", default="per_sample", choices=("per_sample", "distribution", "discrete"),
                     help="how the sampler's action chooses permutations (default: per_sample, the paper's "
                     "granularity)")  # fmt: skip
    ssl.add_argument("--backbone", default=None, choices=TRUNKS,
                     help="trunk (default: tiny on synthetic, caffenet on videos)")  # fmt: skip
    ssl.add_argument("--ssl-updates", type=int, help=PRESETS.help("ssl_updates", "pretraining SGD updates"))
    ssl.add_argument("--updates-per-step", type=int, default=None,
                     help="SGD updates per sampler decision (default: the preset's, 4 on synthetic, 25 on videos)")  # fmt: skip
    ssl.add_argument("--ssl-batch-size", type=int, default=None,
                     help="clips per pretraining update (default: the preset's, 32 / 64)")  # fmt: skip
    ssl.add_argument("--ssl-lr", type=float, default=None,
                     help="pretraining learning rate (default: the preset's, adam 2e-3 / sgd 0.01)")  # fmt: skip
    ssl.add_argument("--ssl-option", default=[], action="append", type=parse_key_value, metavar="KEY=VALUE",
                     help="any other PermSamplingConfig field (JSON value), repeatable, e.g. reward=uniform_relative "
                     "(default: none)")  # fmt: skip
    ft = parser.add_argument_group("fine-tuning and evaluation")
    ft.add_argument("--ft-epochs", type=int, help=PRESETS.help("ft_epochs", "fine-tuning epochs"))
    ft.add_argument("-b", "--ft-batch-size", type=int, help=PRESETS.help("ft_batch_size", "clips per update"))
    ft.add_argument("--ft-optimizer", choices=("sgd", "adam"), help=PRESETS.help("ft_optimizer", "optimizer"))
    ft.add_argument("--ft-lr", type=float, help=PRESETS.help("ft_lr", "learning rate of the classifier layer"))
    ft.add_argument("--trunk-lr-scale", default=0.1, type=float, help="trunk lr / classifier lr (default: 0.1)")
    ft.add_argument("--dropout", default=0.5, type=float, help="dropout on the clip feature (default: 0.5)")
    ft.add_argument("--flip", default=None, action=argparse.BooleanOptionalAction,
                    help="random horizontal flips when fine-tuning (default: on for videos; off on synthetic, whose "
                    "classes have a direction that a flip reverses)")  # fmt: skip
    ft.add_argument("--test-clips", type=int, help=PRESETS.help("test_clips", "windows averaged per test video"))
    ft.add_argument("--eval-every", type=int, help=PRESETS.help("eval_every", "test evaluation every N epochs"))
    ft.add_argument("--retrieval-clips", default=10, type=int, metavar="N",
                    help="retrieval: clip features averaged per video over N windows with evenly spaced starts "
                    "(VCOP: 10); a clip too short for N distinct windows uses one per distinct start; 1 = one view "
                    "spread over the whole clip, as before (default: 10)")  # fmt: skip
    compare = parser.add_argument_group("baselines")
    compare.add_argument("--compare", default=[], type=_compare_list,
                         help=f"also run these, comma-separated: {RANDOM_INIT} (no pretraining) and/or sampler names, "
                         "e.g. uniform,random-init (default: none)")  # fmt: skip
    run = parser.add_argument_group("run")
    run.add_argument("--quick", action="store_true", help="a short run (<= 90 s on 2 CPU cores); explicit flags win")
    add_run_folder_arguments(run, "runs/ssl_ucf101")  # --out, --resume (same number of processes), --overwrite
    run.add_argument("--seed", default=0, type=int, help="seed of networks, data order and samplers (default: 0)")
    add_device_arguments(run)  # --device, --amp, --no-sync-bn
    run.add_argument("--threads", default=None, type=int,
                     help="torch CPU threads per process (default: 1 on synthetic, whose tiny networks gain little "
                     "from more and slow down several times on shared cores; torch's default on videos)")  # fmt: skip
    run.add_argument("--print-freq", default=20, type=int, help="print smoothed meters every N steps (default: 20)")
    run.add_argument("--checkpoint-every", type=int,
                     help=PRESETS.help("checkpoint_every", "pretraining sampler steps between checkpoints; "
                                       "fine-tuning checkpoints every epoch"))  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_stop_argument(run, "SGD updates", " in all (pretraining and fine-tuning)")
    return parser


#: Options that do not change results: they may differ between a run and its --resume.
RESUME_IGNORES = ("out", "resume", "overwrite", "stop_after", "no_progress", "print_freq", "threads",
                  "workers", "cache_dir", "quick")  # fmt: skip
#: Options that must be >= 1 when given (0 is no longer "the default").
SIZES = ("ssl_updates", "updates_per_step", "ssl_batch_size", "ft_epochs", "ft_batch_size", "test_clips",
         "eval_every", "checkpoint_every", "print_freq", "retrieval_clips", "frames", "frame_size",
         "synthetic_videos", "synthetic_classes", "threads", "stop_after")  # fmt: skip


def apply_preset(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the settings left unset from ``--quick`` then the data regime's preset, and check every option before
    any work starts.

    Raises:
        ValueError: a size below 1, a negative seed, a learning rate not above 0 or not finite, or options that do
            not fit the dataset.
    """
    PRESETS.fill(args, "quick" if args.quick else None, "synthetic" if args.dataset == "synthetic" else "video")
    require_at_least(args, 1, *SIZES)
    require_at_least(args, 0, "workers", "seed")
    require_positive(args, "ssl_lr", "ft_lr", "trunk_lr_scale")
    require_finite(args, "ssl_lr", "ft_lr", "trunk_lr_scale")
    if args.dataset == "synthetic":
        given = [flag for flag, value in (("--root", args.root), ("--annotations", args.annotations)) if value]
        if given:
            raise ValueError(f"{' and '.join(given)} do(es) not apply to --dataset synthetic (the embedded data); "
                             "drop them, or choose --dataset ucf101/hmdb51/folder")  # fmt: skip
    elif args.root is None:
        raise ValueError(f"--dataset {args.dataset} needs --root (the folder of the videos)")
    if args.dataset != "synthetic":  # outputs inside the video tree would mix with it (a folder tree lists them)
        require_apart(args.out, args.root, "video")
        for subset in ("train", "test"):
            require_apart(cache_path(args, subset), args.root, "video", "frame cache", option="--cache-dir")
    if args.dataset in ("ucf101", "hmdb51") and args.annotations is None:
        raise ValueError(f"--dataset {args.dataset} needs --annotations (the folder of the official split files)")
    if args.dataset == "folder" and args.annotations is not None:
        raise ValueError("--annotations does not apply to --dataset folder (its split is every 5th video per class)")
    if args.amp and args.device == "cpu":
        raise ValueError("--amp needs CUDA; drop it or use --device cuda")
    config = make_ssl_config(args, World())  # every env option (--ssl-option too) checked now, before any decoding
    if config.clip_frames < config.min_clip_frames:
        raise ValueError(f"clips of {config.clip_frames} frames (--frames) cannot hold the temporal task's "
                         f"{config.num_frames} frames at stride >= {config.min_stride}: give at least "
                         f"{config.min_clip_frames} frames, or --ssl-option min_stride=1")  # fmt: skip
    return args


def folder_name(variant: str) -> str:
    """A file-system-safe name for a run (``sb3:runs/ppo.zip`` -> ``sb3_runs_ppo.zip``)."""
    return re.sub(r"[^\w.-]+", "_", variant)


# ---------------------------------------------------------------------------------------------------- data
def make_ssl_config(args: argparse.Namespace, world: World) -> PermSamplingConfig:
    """The pretraining env's config: the data regime's preset plus the command-line settings."""
    if args.dataset == "synthetic":
        preset = SYNTHETIC_PRESETS[args.task]
        overrides: dict[str, Any] = {"synthetic_videos": args.synthetic_videos,
                                     "synthetic_classes": args.synthetic_classes}  # fmt: skip
    else:
        preset = "ucf101"
        overrides = {"task": args.task, "dataset": "cache", "cache_path": str(cache_path(args, PRETRAIN_SUBSET)),
                     "clip_frames": args.frames, "frame_size": args.frame_size}  # fmt: skip
    base = make_config(preset)
    updates_per_step = base.updates_per_step if args.updates_per_step is None else args.updates_per_step
    overrides.update(
        updates_per_step=updates_per_step,
        steps_per_episode=math.ceil(args.ssl_updates / updates_per_step),
        action_mode=args.action_mode,
        device=str(world.device),
        trunk=args.backbone or base.trunk,
        batch_size=base.batch_size if args.ssl_batch_size is None else args.ssl_batch_size,
        lr=base.lr if args.ssl_lr is None else args.ssl_lr,
        torch_threads=None,  # the process's --threads governs the env's compute too
    )
    overrides.update(dict(args.ssl_option))
    try:
        return make_config(preset, **overrides)
    except TypeError as err:
        raise ValueError(str(err)) from None


def make_finetune_config(args: argparse.Namespace, ssl: PermSamplingConfig) -> FinetuneConfig:
    """Fine-tuning sees the frames the temporal task saw: its n, element size and smallest stride."""
    return FinetuneConfig(
        num_frames=ssl.num_frames, image_size=ssl.element_size, min_stride=ssl.min_stride, test_clips=args.test_clips,
        epochs=args.ft_epochs, batch_size=args.ft_batch_size, optimizer=args.ft_optimizer, lr=args.ft_lr,
        trunk_lr_scale=args.trunk_lr_scale, dropout=args.dropout,
        flip=args.dataset != "synthetic" if args.flip is None else args.flip,
    )  # fmt: skip


def cache_path(args: argparse.Namespace, subset: str) -> Path:
    """Folder of the frame cache of ``subset`` (``"train"`` or ``"test"``)."""
    return build.cache_path(args.cache_dir, args.dataset, subset, split=args.split, frames=args.frames,
                            frame_size=args.frame_size)  # fmt: skip


def load_data(args: argparse.Namespace, ssl: PermSamplingConfig, world: World) -> ProbeData:
    """The labelled train/test clips: SyntheticActions' split, or the frame caches of a video dataset's two parts
    (built on first use). Pretraining reads the ``PRETRAIN_SUBSET`` part (see :func:`make_ssl_config`).

    Raises:
        ValueError: missing files or folders (the message names the path and the expected layout), no test video,
            or train and test caches of different class lists.
    """
    if args.dataset == "synthetic":
        data = load_probe_data(ssl.synthetic_classes, ssl.synthetic_videos, ssl.clip_frames, ssl.frame_size,
                               ssl.data_seed, ssl.synthetic_variant)  # fmt: skip
        if not len(data.test_labels):  # every 5th clip of a class is a test clip: a class needs 5
            raise ValueError(f"--synthetic-videos {args.synthetic_videos} over --synthetic-classes "
                             f"{args.synthetic_classes} leaves no test video; give at least 5 videos per class")  # fmt: skip
        return data
    train, test = (build.open_frame_cache(args.dataset, args.root, args.annotations, cache_path(args, subset), world,
                                          subset=subset, split=args.split, frames=args.frames,
                                          frame_size=args.frame_size, workers=args.workers,
                                          progress=not args.no_progress) for subset in ("train", "test"))  # fmt: skip
    if len(train.classes) < 2:  # e.g. --dataset folder given the folder above the class folders
        raise ValueError(f"--root {args.root!r} holds one class folder ({train.classes[0]!r}); action recognition "
                         "needs at least 2: if that folder holds the class folders, give it as --root")  # fmt: skip
    if train.classes != test.classes:  # e.g. a class folder added to the tree after one part's cache was built
        raise ValueError(f"the train and test frame caches list different classes ({len(train.classes)} vs "
                         f"{len(test.classes)}): {train.path} and {test.path} were built from different video trees; "
                         "choose another --cache-dir to rebuild both")  # fmt: skip
    return ProbeData(train.clips, train.labels, test.clips, test.labels, train.classes,
                     {"train": len(train.skipped), "test": len(test.skipped)})  # fmt: skip


# ---------------------------------------------------------------------------------------------------- pretraining
def build_sampler(name: str, env: PermSamplingEnv, args: argparse.Namespace) -> Sampler:
    """The sampler ``name`` (or a saved SB3 model for ``sb3:PATH``, ``--sampler-option algo=...``) acting in ``env``;
    the ``--sampler-option`` arguments go to the ``--sampler`` run's sampler only."""
    options = dict(args.sampler_option) if name == args.sampler else {}
    return make_sampler(name, env, seed=args.seed, **options)


def initial_trunk(config: PermSamplingConfig, args: argparse.Namespace) -> Trunk:
    """The untrained trunk every pretraining run starts from (same seed): the random-init baseline."""
    env = PermSamplingEnv(config)
    env.reset(seed=args.seed)
    return env.trainer.model.trunk


# ---------------------------------------------------------------------------------------------------- fine-tuning
def finetune_variant(variant: str, trunk: Trunk, data: ProbeData, ft: FinetuneConfig, args: argparse.Namespace,
                     world: World, checkpointer: Checkpointer, result: dict[str, Any], tb_dir: Path) -> ActionClassifier:  # fmt: skip
    """Fine-tune ``trunk`` + a new linear layer (or continue from the checkpoint) with
    :func:`permgym.finetune.finetune`, evaluating every ``--eval-every`` epochs and at the end; fills ``result`` with
    ``finetune/...`` metrics, the confusion matrix and the history."""
    model = new_classifier(trunk, ft.num_frames, len(data.classes), args.seed)
    trainer = FinetuneTrainer(model, ft, len(data.train_labels), world, seed=args.seed, amp=args.amp,
                              sync_bn=args.sync_bn)  # fmt: skip
    history: list[dict[str, Any]] = result.setdefault("finetune_history", [])
    resume = checkpointer.resume_point(variant)
    if resume is not None and resume["stage"] == "finetune" and resume["state"] is not None:
        trainer.load_state_dict(resume["state"])
        set_rng_states(resume["rng"])

    def evaluate(epoch: int) -> float:
        accuracy, confusion = evaluate_videos(model, data.test_clips, data.test_labels, ft, world)
        if epoch == ft.epochs:
            result["confusion"] = confusion.tolist()
            result["metrics"].update({f"finetune/{k}": v for k, v in accuracy.items()})
        return accuracy["top1"]

    def save() -> None:
        checkpointer.updates += trainer.steps_per_epoch
        checkpointer.save(variant, "finetune", result, trainer.state_dict())

    finetune(trainer, lambda: ((data.train_clips[i], data.train_labels[i]) for i in trainer.epoch_batches()),
             evaluate, save, eval_every=args.eval_every, history=history, times=result["times"],
             name=f"finetune [{variant}]", test_metric="top1", tb_dir=tb_dir, print_freq=args.print_freq,
             progress=not args.no_progress)  # fmt: skip
    result["metrics"]["finetune/train_loss"] = history[-1]["loss"]
    result["metrics"]["finetune/train_accuracy"] = history[-1]["accuracy"]
    return model


# ---------------------------------------------------------------------------------------------------- one run
def run_variant(variant: str, config: PermSamplingConfig, ft: FinetuneConfig, data: ProbeData, args: argparse.Namespace,
                world: World, checkpointer: Checkpointer, folder: Path) -> dict[str, Any]:  # fmt: skip
    """Pretrain with ``variant`` (or take the initial trunk for ``random-init``), then retrieval, fine-tuning and
    evaluation. Writes ``trunk.pth``, ``sampler.pth`` and ``finetuned.pth`` into ``folder`` (rank 0)."""
    resume = checkpointer.resume_point(variant)
    result = resume["result"] if resume else {"variant": variant, "metrics": {}, "times": {}}
    tb = Path(args.out) / "tb" / folder_name(variant)
    if not resume or resume["stage"] == "ssl":
        if variant == RANDOM_INIT:
            trunk = initial_trunk(config, args)
        else:
            env, sampler = pretrain(config, lambda env: build_sampler(variant, env, args), seed=args.seed, world=world,
                                    checkpointer=checkpointer, variant=variant, result=result, amp=args.amp,
                                    sync_bn=args.sync_bn, tb_dir=tb / "ssl", print_freq=args.print_freq,
                                    checkpoint_every=args.checkpoint_every, progress=not args.no_progress)  # fmt: skip
            if result["metrics"]["ssl/diverged"]:  # its trunk holds non-finite weights: nothing downstream can run
                data_hint = (
                    "" if args.dataset == "synthetic" else f" or check the frames (--frame-size {args.frame_size})"
                )
                raise ValueError(f"pretraining with {variant} diverged after {int(result['metrics']['ssl/updates'])} "
                                 f"SGD update(s) (loss, gradients or weights not finite); lower --ssl-lr (now "
                                 f"{config.lr}){data_hint}")  # fmt: skip
            trunk = env.trainer.model.trunk
            result["metrics"]["ddp/max_weight_divergence"] = max_divergence(env.trainer.model)
            if world.is_main:
                sampler.save(folder / "sampler.pth")
        if world.is_main:
            save_trunk(trunk, folder / "trunk.pth", variant=variant, dataset=args.dataset, task=config.task,
                       ssl_updates=0 if variant == RANDOM_INIT else int(result["metrics"]["ssl/updates"]))  # fmt: skip
        start = time.perf_counter()
        result["metrics"].update(vcop_retrieval(trunk, data, ft.num_frames, ft.test_stride(data.train_clips.shape[1]),
                                                  ft.image_size, ft.crop_fraction, args.retrieval_clips, world))  # fmt: skip
        result["times"]["retrieval_s"] = time.perf_counter() - start
        checkpointer.save(variant, "finetune", result, None)
    state = torch.load(folder / "trunk.pth", map_location="cpu", weights_only=True) if world.is_main else None
    trunk = build_trunk(config.trunk)
    trunk.load_state_dict(broadcast_object(state)["state_dict"])
    model = finetune_variant(variant, trunk, data, ft, args, world, checkpointer, result, tb / "finetune")
    if world.is_main:
        torch.save({"model": model.state_dict(), "classes": data.classes, "num_frames": ft.num_frames,
                    "trunk_name": trunk.name}, folder / "finetuned.pth")  # fmt: skip
    result["metrics"]["ddp/max_weight_divergence"] = max(
        result["metrics"].get("ddp/max_weight_divergence", 0.0), max_divergence(model)
    )
    for stage, seconds in result["times"].items():
        result["metrics"][f"time/{stage}"] = seconds
    return result


# ---------------------------------------------------------------------------------------------------- main
def main(args: argparse.Namespace) -> dict[str, float] | None:
    """Run every variant (or continue after an interruption) and, on rank 0, write the outputs.

    Returns:
        The content of metrics.json on rank 0; None on other ranks and when stopped by ``--stop-after``.
    """
    return run_in_folder(apply_preset(args), run)


def run(args: argparse.Namespace, world: World) -> dict[str, float] | None:
    """:func:`main` once the output folder is this run's."""
    out = Path(args.out)
    checkpoint_path = out / "checkpoint.pth"
    restored = None
    if args.resume:
        restored = load_checkpoint(checkpoint_path, vars(args), RESUME_IGNORES)
    config = make_ssl_config(args, world)
    data = load_data(args, config, world)
    ft = make_finetune_config(args, config)
    variants = list(dict.fromkeys([args.sampler, *args.compare]))  # --sampler's run first, no repeats
    if world.is_main:
        print(f"data: {len(data.train_labels)} training / {len(data.test_labels)} test videos, "
              f"{len(data.classes)} classes; runs: {', '.join(variants)}")  # fmt: skip
    write_config(world, out, args=vars(args), ssl_config=config.to_dict(), finetune_config=asdict(ft),
                 variants=variants)  # fmt: skip
    checkpointer = Checkpointer(checkpoint_path, world, vars(args), restored, args.stop_after, "SGD updates")
    for variant in variants:
        if variant in checkpointer.done:
            continue
        folder = out if variant == args.sampler else out / folder_name(variant)
        if world.is_main:
            folder.mkdir(parents=True, exist_ok=True)
        checkpointer.finish(variant, run_variant(variant, config, ft, data, args, world, checkpointer, folder))
    if not world.is_main:
        return None
    results = {v: checkpointer.done[v] for v in variants}
    metrics = write_ssl_results(args, config, ft, results, data, world, out, checkpointer.total_seconds())
    print((out / "results.md").read_text())
    print(f"results in {out}/ (results.md, metrics.json, plots, tb/); pretrained trunk: {out / 'trunk.pth'}")
    return metrics


if __name__ == "__main__":
    run_cli(main, get_args_parser())
