"""Image-classification transfer of a pretrained trunk (PASCAL VOC 2007 protocol): linear probe and fine-tuning.

The trunk (``--init``: random, ImageNet, or an ``experiments/ssl_ucf101.py`` ``trunk.pth`` from the spatial, temporal
or joint task) is evaluated two ways on multi-label image classification, both reported:

1. **Linear probe**: one logistic regression per class on the frozen trunk's features of the centre view
   (``permgym.probe.linear_probe_scores``).
2. **Fine-tuning**: trunk + dropout + a linear layer, per-class binary cross-entropy (objects marked difficult left
   out), the trunk at ``--trunk-lr-scale`` times the layer's learning rate (``permgym.finetune``).

Test scores are averaged over ``--test-crops`` views per image (1 = centre crop, 10 = ten-crop) of the image resized
to a shorter side of ``--resize`` (``permgym.image_transfer`` describes the views). Metrics: average precision per
class and its mean over the classes, as VOC 2007's 11-point interpolated AP (``mAP``, the number the protocol and the
literature report) and as the area under the precision-recall curve (``mAP_auc``); images labelled difficult (0) for
a class are left out of that class's AP (``permgym.average_precision``).

Datasets: ``synthetic`` (embedded, SyntheticObjects: 20 classes of colour x shape, several objects per image),
``voc2007`` (``--root VOCdevkit/VOC2007``: train on ``trainval``, test on ``test``) and ``folder`` (a class-per-folder
tree, single-label: every 5th image of a class is a test image; also reports top-1).

Examples::

    python experiments/image_transfer.py                      # embedded data, --init auto (a few minutes on a CPU)
    python experiments/image_transfer.py --quick              # < 1 min
    python experiments/image_transfer.py --init ssl:runs/ssl_ucf101/trunk.pth --out runs/image_ssl
    python experiments/image_transfer.py --dataset voc2007 --root data/VOCdevkit/VOC2007 --backbone caffenet --amp
    torchrun --nproc_per_node=2 experiments/image_transfer.py --quick      # DDP: gloo on CPUs, NCCL on GPUs
    python experiments/image_transfer.py --out runs/image_transfer --resume  # continue, same options

Outputs in ``--out`` (rank 0 writes): ``config.json``, ``metrics.json`` (``mAP``, ``mAP_auc``, ``AP/<class>``,
``AP_auc/<class>``, the same under ``probe/``, ``top1`` for single-label data, ``time/...``), ``results.md``,
``curves.png``, ``ap_per_class.png``, TensorBoard logs in ``tb/``, ``checkpoint.pth`` and ``finetuned.pth``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from reporting import write_image_results
from torch.utils.data import DataLoader

from metric.model import BACKBONES, build_backbone, init_argument, resolve_init
from permgym.average_precision import average_precisions
from permgym.data.images import ImageFolderClassification, ImageSet
from permgym.data.synthetic_images import SyntheticObjects
from permgym.data.voc import VOC2007
from permgym.distributed import World, set_rng_states
from permgym.finetune import ActionClassifier, FinetuneConfig, FinetuneTrainer, finetune, new_classifier, prepared
from permgym.image_transfer import (
    TrainViews,
    epoch_items,
    normalize,
    predict_scores,
    top1_accuracy,
    train_targets,
    trunk_features,
)
from permgym.probe import linear_probe_scores
from permgym.run import (
    Presets,
    add_device_arguments,
    add_run_folder_arguments,
    default_workers,
    load_checkpoint,
    require_at_least,
    require_positive,
    run_cli,
    run_in_folder,
    save_checkpoint,
    write_config,
)

DATASETS = ("synthetic", "voc2007", "folder")
# Settings that depend on the data; --quick then shortens the run. Every other default is in the parser.
PRESETS = Presets({
    "synthetic": {"epochs": 20, "batch_size": 64, "image_size": 32, "optimizer": "adam", "lr": 2e-3, "test_crops": 1,
                  "eval_every": 5, "workers": 0, "synthetic_images": 1800, "probe_epochs": 100},
    "images": {"epochs": 30, "batch_size": 64, "image_size": 224, "optimizer": "sgd", "lr": 0.01, "test_crops": 10,
               "eval_every": 5, "workers": default_workers(), "synthetic_images": None, "probe_epochs": 100},
    "quick": {"epochs": 4, "eval_every": 2, "synthetic_images": 450, "probe_epochs": 30},
}, labels={"synthetic": "on synthetic", "images": "on images", "quick": "with --quick"}, overrides=("quick",))  # fmt: skip
#: Options that may differ on --resume (they do not change results; --quick acts through the values it fills in).
RESUME_IGNORES = ("out", "resume", "overwrite", "quick", "no_progress", "print_freq", "workers", "threads")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Image-classification transfer of a trunk (VOC 2007 protocol): linear probe and fine-tuning",
        add_help=add_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="On voc2007 / folder the defaults are our choice in the style of ImageNet fine-tuning (not the "
        "paper's schedule, which this project does not have): 224 px random-resized crops (area >= 35 %) and flips, "
        "SGD lr 0.01 (trunk x0.1), batch 64, 30 epochs, dropout 0.5, ten-crop testing at shorter side 256.",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="synthetic", choices=DATASETS, help="dataset (default: synthetic)")
    data.add_argument("--root", default=None, help="VOCdevkit/VOC2007, or the folder of class folders")
    data.add_argument("--labels", default="lists", choices=("lists", "annotations"),
                      help="voc2007: labels from ImageSets/Main/<class>_<split>.txt or from Annotations/*.xml "
                      "(default: lists)")  # fmt: skip
    data.add_argument("--synthetic-images", type=int, help=PRESETS.help("synthetic_images", "embedded images"))
    data.add_argument("--image-size", type=int, help=PRESETS.help("image_size", "side of the views in pixels"))
    data.add_argument("--resize", type=int, default=None,
                      help="test: shorter side before cropping (default: image size * 8 / 7)")  # fmt: skip
    data.add_argument("--min-crop-scale", type=float, default=0.35,
                      help="training crops cover at least this share of the image (default: 0.35)")  # fmt: skip
    data.add_argument("--test-crops", type=int, choices=(1, 10), help=PRESETS.help("test_crops", "test views"))
    data.add_argument("-j", "--workers", type=int, help=PRESETS.help("workers", "loader processes"))
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", default=None, choices=BACKBONES,
                       help="trunk (default: the ssl checkpoint's, else tiny)")  # fmt: skip
    model.add_argument("--init", default="auto", type=init_argument,
                       help="trunk weights: random, imagenet (torchvision cache), ssl:PATH (a trunk.pth of "
                       "experiments/ssl_ucf101.py), or auto = the newest runs/ssl_ucf101*/trunk.pth if any, else "
                       "random (default: auto)")  # fmt: skip
    ft = parser.add_argument_group("fine-tuning and probe")
    ft.add_argument("--epochs", type=int, help=PRESETS.help("epochs", "fine-tuning epochs (0 = probe only)"))
    ft.add_argument("-b", "--batch-size", type=int, help=PRESETS.help("batch_size", "images per update (global)"))
    ft.add_argument("--optimizer", choices=("sgd", "adam"), help=PRESETS.help("optimizer", "optimizer"))
    ft.add_argument("--lr", type=float, help=PRESETS.help("lr", "learning rate of the new layer"))
    ft.add_argument("--trunk-lr-scale", type=float, default=0.1, help="trunk lr / layer lr (default: 0.1)")
    ft.add_argument("--dropout", type=float, default=0.5, help="dropout on the trunk features (default: 0.5)")
    ft.add_argument("--eval-every", type=int, help=PRESETS.help("eval_every", "test evaluation every N epochs"))
    ft.add_argument("--probe-epochs", type=int, help=PRESETS.help("probe_epochs", "linear-probe epochs"))
    run = parser.add_argument_group("run")
    run.add_argument("--quick", action="store_true", help="a short run (< 1 min on a CPU); explicit flags win")
    add_run_folder_arguments(run, "runs/image_transfer")
    run.add_argument("--seed", type=int, default=0, help="seed of weights, data order and views (default: 0)")
    add_device_arguments(run)  # --device, --amp, --no-sync-bn
    run.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads per process (default: 1 on synthetic, else torch's default)")  # fmt: skip
    run.add_argument("--print-freq", type=int, default=20, help="print smoothed meters every N steps (default: 20)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def apply_preset(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset settings from ``--quick`` and the data's preset (explicit flags win); check what argparse cannot.

    Raises:
        ValueError: an option out of range or not for this dataset.
    """
    embedded = args.dataset == "synthetic"
    PRESETS.fill(args, "quick" if args.quick else None, "synthetic" if embedded else "images")
    args.resize = args.resize if args.resize is not None else args.image_size * 8 // 7
    args.threads = args.threads if args.threads is not None else (1 if embedded else None)
    if embedded and args.root is not None:
        raise ValueError("--root is for --dataset voc2007/folder; the embedded data needs none")
    if not embedded and args.root is None:
        raise ValueError(f"--dataset {args.dataset} needs --root")
    if args.amp and args.device == "cpu":
        raise ValueError("--amp needs CUDA; drop it or use --device cuda")
    require_at_least(args, 1, "batch_size", "image_size", "eval_every", "probe_epochs", "print_freq", "threads")
    require_at_least(args, 0, "epochs", "workers")
    require_positive(args, "lr", "trunk_lr_scale")
    if not 0 <= args.dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.resize < args.image_size:
        raise ValueError(f"--resize {args.resize} is smaller than --image-size {args.image_size}")
    if not 0 < args.min_crop_scale <= 1:
        raise ValueError(f"--min-crop-scale must be in (0, 1], got {args.min_crop_scale}")
    return args


def load_data(args: argparse.Namespace) -> tuple[ImageSet, ImageSet]:
    """The training and test images of ``--dataset`` (missing files raise errors naming the expected layout)."""
    if args.dataset == "synthetic":
        common = {"num_images": args.synthetic_images, "seed": 3, "size": max(48, args.resize)}
        return SyntheticObjects("trainval", **common), SyntheticObjects("test", **common)
    if args.dataset == "voc2007":
        return VOC2007(args.root, "trainval", args.labels), VOC2007(args.root, "test", args.labels)
    return ImageFolderClassification(args.root, "train"), ImageFolderClassification(args.root, "test")


def scores_metrics(scores: torch.Tensor, test: ImageSet, prefix: str = "") -> dict[str, float]:
    """AP both ways per class, their means and (single-label data) top-1, keys prefixed by ``prefix``."""
    metrics = average_precisions(scores, test.targets, test.classes)
    if not test.multilabel:
        metrics["top1"] = top1_accuracy(scores, test.targets)
    return {f"{prefix}{key}": value for key, value in metrics.items()}


def linear_probe(trunk: torch.nn.Module, train: ImageSet, test: ImageSet, args: argparse.Namespace,
                 world: World) -> dict[str, float]:  # fmt: skip
    """Linear probe on the frozen trunk's centre-view features: ``probe/mAP``, ``probe/AP/<class>``, ..."""
    train_x = trunk_features(trunk, train, args.image_size, args.resize, world, args.workers)
    test_x = trunk_features(trunk, test, args.image_size, args.resize, world, args.workers)
    targets = train_targets(train.targets, train.multilabel)
    logits = linear_probe_scores(train_x, targets, test_x, len(train.classes), seed=args.seed,
                                 epochs=args.probe_epochs)  # fmt: skip
    return scores_metrics(logits.sigmoid() if train.multilabel else logits.softmax(-1), test, "probe/")


def finetune_trunk(trunk: torch.nn.Module, train: ImageSet, test: ImageSet, args: argparse.Namespace, world: World,
                   state: dict[str, Any], out: Path) -> ActionClassifier:  # fmt: skip
    """Fine-tune (or continue from ``state["trainer"]``) with :func:`permgym.finetune.finetune`, evaluating every
    ``--eval-every`` epochs and at the end; writes the checkpoint after every epoch and fills ``state["history"]``
    and ``state["metrics"]``."""
    model = new_classifier(trunk, 1, len(train.classes), args.seed)
    config = FinetuneConfig(num_frames=1, image_size=args.image_size, epochs=args.epochs,
                            batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                            trunk_lr_scale=args.trunk_lr_scale, dropout=args.dropout, multilabel=train.multilabel)  # fmt: skip
    trainer = FinetuneTrainer(model, config, len(train), world, seed=args.seed, amp=args.amp, sync_bn=args.sync_bn,
                              augment=prepared)  # fmt: skip
    if state.get("trainer") is not None:
        trainer.load_state_dict(state["trainer"])

    def epoch_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training views drawn up front (:func:`epoch_items`), so that loader workers cannot change them."""
        loader = DataLoader(TrainViews(train, args.image_size, args.min_crop_scale), batch_sampler=epoch_items(trainer),
                            num_workers=args.workers)  # fmt: skip
        return ((normalize(pixels)[:, None], train_targets(targets, train.multilabel)) for pixels, targets in loader)

    def evaluate(epoch: int) -> float:
        scores = predict_scores(model, test, args.image_size, args.resize, args.test_crops, world, args.workers)
        state["metrics"] = scores_metrics(scores, test)
        return state["metrics"]["mAP"]

    def save() -> None:
        state["trainer"] = trainer.state_dict()
        checkpoint(state, args, world, out)

    finetune(trainer, epoch_batches, evaluate, save, eval_every=args.eval_every, history=state["history"],
             times=state["times"], test_metric="mAP", tb_dir=out / "tb", print_freq=args.print_freq,
             progress=not args.no_progress)  # fmt: skip
    return model


def checkpoint(state: dict[str, Any], args: argparse.Namespace, world: World, out: Path) -> None:
    """Everything ``--resume`` needs, with the run's config and every rank's RNG states (call on every rank)."""
    save_checkpoint(world, out / "checkpoint.pth", vars(args), state)


def restore(args: argparse.Namespace, out: Path) -> dict[str, Any] | None:
    """With ``--resume``, the checkpoint to continue from (refused if an option that changes results differs);
    None for a new run.

    Raises:
        RunError: no checkpoint, or one of another config.
        ValueError: the checkpoint was written by another number of processes.
    """
    if not args.resume:
        return None
    state = load_checkpoint(out / "checkpoint.pth", vars(args), RESUME_IGNORES)
    set_rng_states(state["rng"])
    return state


def main(args: argparse.Namespace) -> dict[str, float] | None:
    """Probe, fine-tune and evaluate (or continue after an interruption); rank 0 writes the outputs.

    Returns:
        The content of metrics.json on rank 0, None on other ranks.
    """
    return run_in_folder(apply_preset(args), run)


def run(args: argparse.Namespace, world: World) -> dict[str, float] | None:
    """:func:`main` once the output folder is this run's."""
    out = Path(args.out)
    # resolved before the checkpoint is read, so that --resume refuses an --init auto that now finds another trunk
    args.init_resolved, args.backbone, message = resolve_init(args.init, args.backbone)
    with torch.random.fork_rng(devices=[]):  # a random trunk is seeded without touching the global RNG
        torch.manual_seed(args.seed)
        trunk = build_backbone(args.backbone, args.init_resolved).to(world.device)
    state = restore(args, out) or {"probe": None, "trainer": None, "history": [], "metrics": {}, "times": {}}
    train, test = load_data(args)
    if world.is_main:
        print(f"{message}\ndata: train {train!r}, test {test!r}")
    write_config(world, out, args=vars(args))
    if state["probe"] is None:
        start = time.perf_counter()
        state["probe"] = linear_probe(trunk, train, test, args, world)
        state["times"]["probe_s"] = time.perf_counter() - start
        if world.is_main:
            print(f"linear probe: mAP {100 * state['probe']['probe/mAP']:.2f}")
        checkpoint(state, args, world, out)
    model = finetune_trunk(trunk, train, test, args, world, state, out) if args.epochs > 0 else None
    if not world.is_main:
        return None
    state["times"]["total_s"] = sum(state["times"].values())
    if model is not None:
        torch.save({"model": model.state_dict(), "classes": test.classes, "trunk_name": args.backbone},
                   out / "finetuned.pth")  # fmt: skip
    metrics = write_image_results(state, args, train, test, out)
    print((out / "results.md").read_text())
    logs = ", tb/" if model is not None else ""
    print(f"results in {out}/ (results.md, metrics.json, curves.png, ap_per_class.png{logs})")
    return metrics


if __name__ == "__main__":
    run_cli(main, get_args_parser())
