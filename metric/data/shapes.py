"""A many-class embedded regime: procedurally drawn objects in a two-level class hierarchy (no download).

Every class is an object shape drawn from its *super-class*: a super-class fixes a base hue, a base outline (the
low-frequency terms of a radial Fourier series) and a stripe texture (frequency and orientation); each of its classes
perturbs these a little and adds its own higher-frequency outline terms. Classes of one super-class therefore look
alike (hard negatives for each other, as SOP's products of one category do), and classes of different super-classes
differ in colour and outline (what a clustering of the training set can find). Every image of a class shows the
object at a random position, scale and rotation, with its brightness jittered, on a random background colour with
pixel noise.

Classes are split class-disjointly *within* each super-class: the first half of every super-class's classes are
``"train"``, the rest ``"test"``, so both splits hold every super-class (like SOP's shared super-categories) and no
class is in both. Everything is a function of ``seed`` (the same arguments give the same pixels); drawing is
vectorised numpy: the default training split (6,000 images of 32 px) takes about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from metric.data.base import require_split
from metric.data.transforms import normalize_uint8

_HARMONICS = np.arange(2, 7)  # outline terms cos(k theta + phase), k = 2..6
_SHARED = 3  # k = 2..4 come from the super-class (perturbed per class); k = 5, 6 are the class's own
_CHUNK = 1024  # images drawn at once


class HierarchicalShapes(Dataset):
    """Procedural objects of ``num_classes`` classes in ``num_superclasses`` super-classes, split by class.

    ``dataset[i]`` returns ``(x, label)``: a ``[3, size, size]`` image (by default float32, ImageNet-normalised;
    ``transform`` receives the uint8 tensor) and its class, 0-based within the split. Class ``c`` (over both splits)
    belongs to super-class ``c // (num_classes // num_superclasses)``; within a super-class the first half of the
    classes is ``"train"``.

    Args:
        root: ignored (the data is generated); kept for the ``Dataset(root, split, transform)`` signature.
        split: ``"train"`` or ``"test"``.
        transform: applied to the ``[3, size, size]`` uint8 image (default: float, ImageNet-normalised).
        num_classes: classes over both splits, a multiple of ``num_superclasses`` with at least two classes per
            super-class (default 1,200: 600 train + 600 test classes).
        num_superclasses: super-classes (default 40, so 15 train and 15 test classes in each).
        images_per_class: images drawn per class (default 10: 6,000 training images, CUB-sized).
        size: image height and width in pixels (default 32).
        seed: identical arguments give identical pixels; another seed draws other classes (use it for validation
            data).

    Attributes:
        labels: ``[N]`` int64 labels (for samplers).
        super_labels: ``[N]`` int64 super-class of every image.
        classes: class names (``"s<super>/c<class>"``, global ids) in label order.
    """

    splits = ("train", "test")

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        num_classes: int = 1200,
        num_superclasses: int = 40,
        images_per_class: int = 10,
        size: int = 32,
        seed: int = 0,
    ) -> None:
        require_split("HierarchicalShapes", split, self.splits)
        if num_superclasses < 1 or num_classes % num_superclasses or num_classes // num_superclasses < 2:
            raise ValueError(
                f"num_classes ({num_classes}) must be a multiple of num_superclasses ({num_superclasses}) with at "
                "least two classes per super-class (one train, one test)"
            )
        if images_per_class < 2 or size < 8:
            raise ValueError(f"images_per_class must be >= 2 and size >= 8, got {images_per_class} and {size}")
        self.split, self.seed, self.size = split, seed, size
        self.transform = normalize_uint8 if transform is None else transform
        per_super = num_classes // num_superclasses
        position = np.arange(num_classes) % per_super
        chosen = np.flatnonzero(position < per_super // 2 if split == "train" else position >= per_super // 2)
        self.labels = np.repeat(np.arange(len(chosen)), images_per_class)
        self.super_labels = np.repeat(chosen // per_super, images_per_class)
        self.classes = [f"s{c // per_super}/c{c}" for c in chosen]
        shapes = _class_parameters(np.random.default_rng([seed, 0]), num_classes, num_superclasses)
        views = _view_parameters(np.random.default_rng([seed, 1]), num_classes, images_per_class)
        rows = np.repeat(chosen, images_per_class) * images_per_class + np.tile(
            np.arange(images_per_class), len(chosen)
        )
        objects = {name: value[np.repeat(chosen, images_per_class)] for name, value in shapes.items()}
        views = {name: value[rows] for name, value in views.items()}
        noise = np.random.default_rng([seed, 2, self.splits.index(split)])
        self.images = torch.from_numpy(_render(objects, views, size, noise))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"HierarchicalShapes(split={self.split!r}, images={len(self)}, classes={len(self.classes)}, "
            f"superclasses={len(np.unique(self.super_labels))}, size={self.size}, seed={self.seed})"
        )


def _class_parameters(rng: np.random.Generator, num_classes: int, num_superclasses: int) -> dict[str, np.ndarray]:
    """Per-class object parameters: the super-class's, perturbed, plus the class's own outline terms."""
    per_super = num_classes // num_superclasses
    group = np.arange(num_classes) // per_super
    hue = rng.random(num_superclasses)[group] + rng.normal(0, 0.035, num_classes)
    saturation = rng.uniform(0.5, 1.0, num_superclasses)[group]
    amplitude = np.concatenate(
        [
            rng.uniform(0.0, 0.25, (num_superclasses, _SHARED))[group] + rng.normal(0, 0.04, (num_classes, _SHARED)),
            rng.normal(0, 0.07, (num_classes, len(_HARMONICS) - _SHARED)),
        ],
        axis=1,
    )
    phase = rng.uniform(0, 2 * np.pi, (num_superclasses, len(_HARMONICS)))[group]
    phase += rng.normal(0, 0.3, phase.shape)
    stripes = rng.uniform(1.0, 4.0, num_superclasses)[group] * np.exp(rng.normal(0, 0.15, num_classes))
    stripe_angle = rng.uniform(0, np.pi, num_superclasses)[group] + rng.normal(0, 0.25, num_classes)
    return {
        "hue": hue % 1.0,
        "saturation": saturation,
        "amplitude": amplitude,
        "phase": phase,
        "stripes": stripes,
        "stripe_angle": stripe_angle,
    }


def _view_parameters(rng: np.random.Generator, num_classes: int, per_class: int) -> dict[str, np.ndarray]:
    """Per-image nuisances for every image of every class (row ``class * per_class + j``)."""
    n = num_classes * per_class
    return {
        "centre": rng.uniform(-0.2, 0.2, (n, 2)),
        "radius": rng.uniform(0.45, 0.75, n),
        "rotation": rng.normal(0, 0.35, n),
        "brightness": rng.uniform(0.7, 1.0, n),
        "background": rng.uniform(0.1, 0.9, (n, 3)),
    }


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``[N]`` HSV in ``[0, 1]`` -> ``[N, 3]`` RGB in ``[0, 1]``."""
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6) % 6
    return value[:, None] * (1 - saturation[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1))


def _render(objects: dict[str, np.ndarray], views: dict[str, np.ndarray], size: int, rng: np.random.Generator):
    """``[N, 3, size, size]`` uint8 images of the objects under the views (in chunks of :data:`_CHUNK`)."""
    grid = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)
    v, u = np.meshgrid(grid, grid, indexing="ij")
    harmonics = _HARMONICS.astype(np.float32)
    out = np.empty((len(objects["hue"]), 3, size, size), dtype=np.uint8)
    for start in range(0, len(out), _CHUNK):
        part = slice(start, min(start + _CHUNK, len(out)))
        o = {name: value[part].astype(np.float32) for name, value in objects.items()}  # float32: twice as fast
        w = {name: value[part].astype(np.float32) for name, value in views.items()}
        dx = (u[None] - w["centre"][:, 0, None, None]) / w["radius"][:, None, None]
        dy = (v[None] - w["centre"][:, 1, None, None]) / w["radius"][:, None, None]
        rho, theta = np.hypot(dx, dy), np.arctan2(dy, dx) - w["rotation"][:, None, None]
        terms = np.cos(harmonics * theta[..., None] + o["phase"][:, None, None, :])
        outline = 1 + (o["amplitude"][:, None, None, :] * terms).sum(-1)
        mask = 1 / (1 + np.exp(-(outline - rho) * size * w["radius"][:, None, None] / 2))  # ~1 px soft edge
        angle = (o["stripe_angle"] + w["rotation"])[:, None, None]
        along = dx * np.cos(angle) + dy * np.sin(angle)
        texture = 0.65 + 0.35 * np.sin(2 * np.pi * o["stripes"][:, None, None] * along)
        colour = _hsv_to_rgb(o["hue"], o["saturation"], w["brightness"])
        foreground = colour[:, :, None, None] * texture[:, None]
        background = (
            w["background"][:, :, None, None] + rng.standard_normal((len(colour), 3, size, size), np.float32) * 0.06
        )
        image = mask[:, None] * foreground + (1 - mask[:, None]) * background
        out[part] = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return out
