"""SyntheticObjects: the embedded multi-label image dataset, drawn with the SyntheticActions renderer (no download).

An image holds 1 to ``max_objects`` objects on a SyntheticActions background (gradient, texture, noise, 0-2
distractor blobs). The classes are the 8 shapes of the renderer (:data:`permgym.data.synthetic.ALL_SHAPES`): the 4
that SyntheticActions videos show (square, disk, triangle, cross) and 4 that no video shows (ring, star, bar,
crescent), so transfer is measured on seen and unseen object kinds. Colours (two-tone, as in the videos), size,
position and rotation are nuisances drawn per object, so a class is its form, as in VOC. An image's label for a
class is VOC's: ``1`` if an easy object of the class is in the image, ``0`` if only objects marked *difficult* are
(less than ``min_visible`` of the object's area visible: hidden by later objects or cut by the border, VOC's
occluded and truncated cases), ``-1`` otherwise.

Everything is drawn from ``numpy.random.Generator(PCG64(SeedSequence([seed, index, 1])))`` plus the SyntheticActions
clip parameters of ``(seed, index)`` for the background: an image depends only on ``(seed, index, size, ...)``.
The default seed is 3, not the pretraining data's 0, so no background comes from a video the trunk was pretrained on.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from permgym.data.images import ImageSet
from permgym.data.synthetic import ALL_SHAPES, _background, _clip_params, _draw_distractors, draw_object, pixel_grid

CLASSES: tuple[str, ...] = ALL_SHAPES
DEFAULT_SEED = 3


@lru_cache(maxsize=len(ALL_SHAPES))
def _unit_area(shape: int) -> float:
    """Area of a shape of radius 1 (pixels^2 per radius^2), measured on a fine grid with the renderer's field."""
    yy, xx = pixel_grid(400)
    coverage = draw_object(np.zeros((1, 400, 400, 3), np.float32), shape, np.array([[200.0, 200.0]]),
                           np.zeros(1), np.array([100.0]), np.zeros((2, 3)), xx, yy)  # fmt: skip
    return float(coverage.sum()) / 100**2


def render_image(
    seed: int, index: int, size: int, max_objects: int, min_visible: float
) -> tuple[np.ndarray, list[tuple[int, bool]]]:
    """Draw image ``index``: ``([size, size, 3] uint8, [(class, difficult), ...] per object)``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, 1])))
    scene = _clip_params(seed, index, 0, 1, size)  # the SyntheticActions background and distractors of this index
    yy, xx = pixel_grid(size)
    canvas = _background(scene, xx, yy)[None].astype(np.float32)
    _draw_distractors(canvas, scene, xx, yy)
    coverages, drawn = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(CLASSES)))
        radius = rng.uniform(0.15, 0.26) * size
        centre = rng.uniform(0.12, 0.88, size=2) * size
        tones = rng.uniform(0, 255, size=(2, 3))
        tones[1] = 255 - tones[0] * rng.uniform(0.3, 0.7)  # two-tone, as SyntheticActions colours its objects
        coverage = draw_object(canvas, label, centre[None], np.array([rng.uniform(0, 2 * np.pi)]), np.array([radius]),
                               tones, xx, yy)[0, ..., 0]  # fmt: skip
        coverages.append((coverage, _unit_area(label) * radius**2))
        drawn.append(label)
    objects = []
    for k, (label, (coverage, area)) in enumerate(zip(drawn, coverages, strict=True)):
        visible = coverage.copy()
        for later, _ in coverages[k + 1 :]:
            visible *= 1 - later
        objects.append((label, float(visible.sum()) < min_visible * area))
    return np.clip(canvas[0], 0, 255).astype(np.uint8), objects


class SyntheticObjects(ImageSet):
    """Procedurally drawn multi-label images, 8 shape classes, no download.

    Args:
        split: ``"trainval"`` (training) or ``"test"``; image ``i`` of the ``num_images`` is a test image when
            ``i % 3 == 2`` (a third of them, VOC 2007 holds out half).
        num_images: images over both splits.
        size: image side in pixels.
        max_objects: objects per image are drawn uniformly from ``1..max_objects``.
        min_visible: an object showing less than this share of its area is *difficult* (label 0 unless an easy
            object of its class is also present).
        seed: identical arguments give identical pixels.

    Attributes:
        images: ``[N, 3, size, size]`` uint8.
        targets: ``[N, 8]`` int8 in ``{1, -1, 0}``.
        objects: per image, ``(class index, difficult)`` of each object in drawing order.

    ``dataset[i]`` returns ``(image [3, size, size] uint8, target [8] int8)``.
    """

    splits = ("trainval", "test")

    def __init__(
        self,
        split: str = "trainval",
        num_images: int = 1800,
        size: int = 48,
        max_objects: int = 3,
        min_visible: float = 0.4,
        seed: int = DEFAULT_SEED,
    ) -> None:
        if split not in self.splits:
            raise ValueError(f"split must be one of {', '.join(self.splits)}, got {split!r}")
        if num_images < 3 or size < 16 or max_objects < 1 or not 0 <= min_visible <= 1:
            raise ValueError(
                f"need num_images >= 3, size >= 16, max_objects >= 1 and min_visible in [0, 1], got num_images="
                f"{num_images}, size={size}, max_objects={max_objects}, min_visible={min_visible}"
            )
        self.split, self.seed, self.skipped, self.classes = split, seed, {}, list(CLASSES)
        indices = [i for i in range(num_images) if (i % 3 == 2) == (split == "test")]
        drawn = [render_image(seed, i, size, max_objects, min_visible) for i in indices]
        self.images = torch.from_numpy(np.stack([image for image, _ in drawn])).permute(0, 3, 1, 2).contiguous()
        self.objects = [objects for _, objects in drawn]
        self.targets = torch.full((len(drawn), len(CLASSES)), -1, dtype=torch.int8)
        for row, objects in enumerate(self.objects):
            for label, difficult in objects:
                self.targets[row, label] = max(int(self.targets[row, label]), 0 if difficult else 1)

    def image(self, index: int) -> torch.Tensor:
        return self.images[index]
