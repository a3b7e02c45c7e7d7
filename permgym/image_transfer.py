"""Image-classification transfer of a trunk: views of non-square images, fine-tuning batches, scores, probe features.

**Views** (the crops of ImageNet-style fine-tuning, as commonly used for transfer to VOC 2007; images keep their
aspect ratio until the crop, never warped to a square):

* training (:func:`train_view`): a random crop covering ``min_scale`` to all of the image's area with aspect ratio
  in ``[3/4, 4/3]`` (``RandomResizedCrop``; the centre square if no draw fits), resized to ``size x size``, then a
  horizontal flip with probability 1/2.
* testing (:func:`eval_views`): the image resized so that its **shorter side** is ``resize`` (``size * 8 / 7``:
  256 for 224), then the ``size x size`` **centre crop** (``crops=1``), or the four corner and the centre crops and
  their mirror images (``crops=10``, "ten-crop"); an image's scores are averaged over its views.

Pixels are scaled to [0, 1] and normalised as ``(x - 0.45) / 0.225``, the whole-frame normalisation the ordering
tasks and the video fine-tuning use (:mod:`permgym.tasks`).

**Randomness**: every training view is drawn from its own ``torch.Generator`` seeded by a number that the fine-tuning
trainer's generator draws for the whole epoch up front (:func:`epoch_items`), so an epoch's views do not depend on
the number of loader workers, and a resumed run draws exactly what an uninterrupted one does.

The model is :class:`permgym.finetune.ActionClassifier` with one frame (trunk, dropout, linear layer) trained by
:class:`permgym.finetune.FinetuneTrainer` (softmax or, for multi-label data, per-class binary cross-entropy); the
linear probe is :func:`permgym.probe.linear_probe_scores` on the frozen trunk's features of the centre views.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from permgym.data.images import ImageSet
from permgym.distributed import World, gather_shards
from permgym.finetune import ActionClassifier, FinetuneTrainer
from permgym.tasks import _MEAN, _STD

RATIO_RANGE = (3 / 4, 4 / 3)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` uint8 -> float32, ``(x / 255 - 0.45) / 0.225``."""
    return images.float().div_(255).sub_(_MEAN).div_(_STD)


def train_view(image: torch.Tensor, size: int, generator: torch.Generator, min_scale: float = 0.35) -> torch.Tensor:
    """A random-resized crop of ``image`` with a random horizontal flip (see the module docstring).

    Args:
        image: ``[3, H, W]`` uint8.
        size: side of the square view.
        generator: the source of every random choice.
        min_scale: smallest share of the image's area that a crop covers.

    Returns:
        ``[3, size, size]`` uint8.
    """
    height, width = image.shape[-2:]
    area = height * width
    draws = torch.rand(10, 4, generator=generator)
    log_low, log_high = math.log(RATIO_RANGE[0]), math.log(RATIO_RANGE[1])
    side = min(height, width)
    top, left, crop_h, crop_w = (height - side) // 2, (width - side) // 2, side, side  # if no draw fits
    for scale, log_ratio, y, x in draws.tolist():
        target = area * (min_scale + (1 - min_scale) * scale)
        ratio = math.exp(log_low + (log_high - log_low) * log_ratio)
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top, left, crop_h, crop_w = int(y * (height - h + 1)), int(x * (width - w + 1)), h, w
            break
    view = TF.resized_crop(image, top, left, crop_h, crop_w, [size, size], antialias=True)
    if bool(torch.rand(1, generator=generator) < 0.5):
        view = view.flip(-1)
    return view


def eval_views(image: torch.Tensor, size: int, resize: int, crops: int = 1) -> torch.Tensor:
    """The evaluation views of ``image``: shorter side resized to ``resize``, then the centre crop or ten crops.

    Args:
        image: ``[3, H, W]`` uint8.
        size: side of each view (at most ``resize``).
        resize: the shorter side after resizing.
        crops: 1 (centre) or 10 (corners, centre and their mirrors).

    Returns:
        ``[crops, 3, size, size]`` uint8.
    """
    if crops not in (1, 10):
        raise ValueError(f"crops must be 1 or 10, got {crops}")
    if size > resize:
        raise ValueError(f"the view ({size} px) cannot be larger than the resized image's shorter side ({resize} px)")
    resized = TF.resize(image, resize, antialias=True)  # an int resizes the shorter side, keeping the aspect ratio
    if crops == 1:
        return TF.center_crop(resized, [size, size])[None]
    return torch.stack(TF.ten_crop(resized, [size, size]))


class TrainViews(Dataset):
    """Training views of an :class:`ImageSet`: item ``(index, seed)`` -> ``(view [3, s, s] uint8, target [C])``,
    the view drawn by :func:`train_view` from ``torch.Generator().manual_seed(seed)``."""

    def __init__(self, images: ImageSet, size: int, min_scale: float) -> None:
        self.images, self.size, self.min_scale = images, size, min_scale

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        image, target = self.images[index]
        return train_view(image, self.size, torch.Generator().manual_seed(seed), self.min_scale), target


class EvalViews(Dataset):
    """Evaluation views of an :class:`ImageSet`: item ``i`` -> ``(views [crops, 3, s, s] uint8, target [C])``."""

    def __init__(self, images: ImageSet, size: int, resize: int, crops: int) -> None:
        self.images, self.size, self.resize, self.crops = images, size, resize, crops

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.images[index]
        return eval_views(image, self.size, self.resize, self.crops), target


def epoch_items(trainer: FinetuneTrainer) -> list[list[tuple[int, int]]]:
    """The next epoch's global batches as ``(image index, view seed)`` items for :class:`TrainViews`.

    The order (:meth:`FinetuneTrainer.epoch_batches`) and one seed per item are drawn from the trainer's generator
    before the epoch's first step, so loader workers and prefetching cannot change what is drawn.
    """
    batches = list(trainer.epoch_batches())
    seeds = torch.randint(2**62, (trainer.steps_per_epoch, trainer.batch_size), generator=trainer.generator)
    return [list(zip(b.tolist(), s.tolist(), strict=True)) for b, s in zip(batches, seeds, strict=True)]


def train_targets(targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """What :meth:`FinetuneTrainer.step` takes: VOC-coded ``[B, C]`` targets, or their class ids if single-label."""
    return targets if multilabel else targets.argmax(1)


@torch.no_grad()
def _views_forward(
    forward: nn.Module, images: ImageSet, size: int, resize: int, crops: int, world: World, workers: int, batch: int
) -> torch.Tensor:
    """``forward`` on every image's views (this rank's share), averaged over the views, gathered in image order."""
    mine = world.shard(len(images))
    views = torch.utils.data.Subset(EvalViews(images, size, resize, crops), range(mine.start, mine.stop))
    outputs = []
    for pixels, _ in DataLoader(views, batch_size=batch, num_workers=workers):
        b, v = pixels.shape[:2]
        x = normalize(pixels.flatten(0, 1).to(world.device))
        outputs.append(forward(x).float().view(b, v, -1).mean(1).cpu())
    local = torch.cat(outputs) if outputs else torch.zeros(0, 0)
    return gather_shards(local.to(world.device), world, len(images)).cpu()


def predict_scores(
    model: ActionClassifier,
    images: ImageSet,
    size: int,
    resize: int,
    crops: int = 1,
    world: World | None = None,
    workers: int = 0,
    batch: int = 64,
) -> torch.Tensor:
    """Per-image class scores of a fine-tuned model, averaged over the test views.

    Scores are sigmoid probabilities for multi-label data and softmax probabilities otherwise. Under torchrun each
    rank scores its share of the images and the shares are gathered.

    Returns:
        ``[N, C]`` float32 on the CPU, on every rank.
    """
    world = world or World()
    was_training = model.training
    model.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        logits = model(x[:, None])  # one frame per "clip"
        return logits.sigmoid() if images.multilabel else logits.softmax(-1)

    try:
        return _views_forward(forward, images, size, resize, crops, world, workers, batch)
    finally:
        model.train(was_training)


def trunk_features(
    trunk: nn.Module, images: ImageSet, size: int, resize: int, world: World | None = None, workers: int = 0
) -> torch.Tensor:
    """``[N, D]`` frozen-trunk features of the images' centre views (eval mode), for the linear probe."""
    world = world or World()
    was_training = trunk.training
    trunk.eval()
    try:
        return _views_forward(trunk, images, size, resize, 1, world, workers, 128)
    finally:
        trunk.train(was_training)


def top1_accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of images whose highest-scoring class is a present one (``target == 1``)."""
    return float((targets.gather(1, scores.argmax(1, keepdim=True)) == 1).double().mean())
