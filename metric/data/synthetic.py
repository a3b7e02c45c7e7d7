"""The embedded default: a class-disjoint retrieval split of SyntheticActions (no download)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from metric.data.base import require_split
from metric.data.transforms import normalize_uint8
from permgym.data.synthetic import MAX_CLASSES, SyntheticActions, class_name

DEFAULT_SEED = 3
"""SyntheticActions seed of the embedded retrieval data. ``ssl_ucf101`` pretrains on seed 0
(``PermSamplingConfig.data_seed``), and a clip's background, colours and object are drawn from ``(seed, index)``
whatever its length: with another seed no downstream image comes from a video the trunk was pretrained on."""


class SyntheticRetrieval(Dataset):
    """SyntheticActions clips split by class: the first half of the classes for ``"train"``, the rest for ``"test"``.

    Only the classes of the requested split are generated. Class ``c`` of SyntheticActions is motion ``c % 15`` and
    shape ``c // 15``, so the test classes combine shapes with motions in ways never seen in training.

    ``dataset[i]`` returns ``(x, label)``: with ``mode="frame"`` a ``[3, size, size]`` frame (the clip's frame
    ``frame``, by default the middle one), with ``mode="clip"`` the ``[frames, 3, size, size]`` clip; by default
    float32, ImageNet-normalised. ``label`` is 0-based within the split.

    Args:
        root: ignored (the data is generated); kept for the ``Dataset(root, split, transform)`` signature.
        split: ``"train"`` or ``"test"``.
        transform: applied to the uint8 frame or clip tensor (default: float, ImageNet-normalised).
        mode: ``"frame"`` or ``"clip"``.
        num_classes: classes over both splits, 2 to 60.
        videos_per_class: clips generated per class.
        frames: frames per clip.
        size: frame height and width.
        seed: SyntheticActions seed (default :data:`DEFAULT_SEED`, not the pretraining data's); identical arguments
            give identical pixels.
        frame: frame index used by ``mode="frame"`` (default ``frames // 2``).

    Attributes:
        labels: ``[N]`` int64 labels (for samplers).
        classes: class names (``"motion/shape"``) in label order.
    """

    splits = ("train", "test")

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mode: Literal["frame", "clip"] = "frame",
        num_classes: int = MAX_CLASSES,
        videos_per_class: int = 20,
        frames: int = 8,
        size: int = 64,
        seed: int = DEFAULT_SEED,
        frame: int | None = None,
    ) -> None:
        require_split("SyntheticRetrieval", split, self.splits)
        if mode not in ("frame", "clip"):
            raise ValueError(f"mode must be 'frame' or 'clip', got {mode!r}")
        if not 2 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [2, {MAX_CLASSES}], got {num_classes}")
        self.frame = frames // 2 if frame is None else frame
        if not 0 <= self.frame < frames:
            raise ValueError(f"frame must be in [0, {frames}), got {frame}")
        half = num_classes // 2
        chosen = list(range(half)) if split == "train" else list(range(half, num_classes))
        self.split, self.mode, self.seed = split, mode, seed
        self.transform = normalize_uint8 if transform is None else transform
        self.videos = SyntheticActions(
            num_classes=num_classes,
            num_videos=videos_per_class * num_classes,
            frames=frames,
            size=size,
            seed=seed,
            classes=chosen,
        )
        self.labels = self.videos.labels.numpy() - chosen[0]
        self.classes = [class_name(c) for c in chosen]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        clip = self.videos.clips[i]
        return self.transform(clip[self.frame] if self.mode == "frame" else clip), int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"SyntheticRetrieval(split={self.split!r}, mode={self.mode!r}, items={len(self)}, "
            f"classes={len(self.classes)}, seed={self.seed})"
        )
