"""Image transforms for metric learning: ImageNet normalisation and the D&C train/eval crops."""

from __future__ import annotations

import torch
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_transform() -> transforms.Compose:
    """PIL image -> ``[3, H, W]`` float tensor, ImageNet-normalised, size unchanged."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(size: int = 224) -> transforms.Compose:
    """D&C's training augmentation: ``RandomResizedCrop(size)``, horizontal flip, ImageNet normalisation."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(size: int = 224, resize: int = 256) -> transforms.Compose:
    """D&C's evaluation transform: ``Resize(resize)``, ``CenterCrop(size)``, ImageNet normalisation."""
    return transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def normalize_uint8(x: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` uint8 -> float32 in ``[0, 1]``, ImageNet-normalised per channel."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x.float() / 255 - mean) / std
