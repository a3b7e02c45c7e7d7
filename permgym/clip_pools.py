"""The clips an ordering run trains and validates on, loaded once per process and shared by every env in it."""

from __future__ import annotations

from functools import lru_cache

import torch

from permgym.config import PermSamplingConfig


def load_clip_pools(config: PermSamplingConfig) -> tuple[torch.Tensor | IndexedClips, torch.Tensor | IndexedClips]:
    """``(train_clips, val_clips)`` as ``[N, T, 3, H, W]`` uint8 tensors for ``config``'s dataset.

    SyntheticActions uses its own train/test split; a frame cache is split by a ``data_seed``-seeded permutation
    into ``1 - val_fraction`` training and ``val_fraction`` validation clips. Results are memoised per process on
    the fields that determine them, so resets and further envs never regenerate or re-read data.
    """
    if config.dataset == "synthetic":
        return _synthetic_pools(
            config.synthetic_classes, config.synthetic_videos, config.clip_frames, config.frame_size, config.data_seed,
            config.val_fraction,
        )  # fmt: skip
    return _cache_pools(config.resolved_cache_path(), config.data_seed, config.val_fraction)


@lru_cache(maxsize=4)
def _synthetic_pools(
    classes: int, videos: int, frames: int, size: int, seed: int, val_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    from permgym.data.synthetic import SyntheticActions

    common = {"num_classes": classes, "num_videos": videos, "frames": frames, "size": size, "seed": seed}
    train = SyntheticActions(split="train", test_fraction=val_fraction, **common)
    val = SyntheticActions(split="test", test_fraction=val_fraction, **common)
    if len(val) == 0:
        needed = round(classes * max(2, round(1 / val_fraction)))
        raise ValueError(
            f"synthetic_videos={videos} leaves no validation clips for {classes} classes at val_fraction="
            f"{val_fraction}: use synthetic_videos >= {needed} or fewer synthetic_classes"
        )
    return train.clips, val.clips


@lru_cache(maxsize=4)
def _cache_pools(path: str, seed: int, val_fraction: float) -> tuple[IndexedClips, IndexedClips]:
    from permgym.data.cache import FrameCache

    clips = FrameCache(path).clips  # memory-mapped: rows are read only when a batch indexes them
    order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(len(clips) * val_fraction))
    return IndexedClips(clips, order[n_val:].sort().values), IndexedClips(clips, order[:n_val].sort().values)


class IndexedClips:
    """A lazily indexed subset of a (memory-mapped) ``[N, T, 3, H, W]`` clip tensor."""

    def __init__(self, clips: torch.Tensor, index: torch.Tensor) -> None:
        self.clips, self.index = clips, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: torch.Tensor | slice | int) -> torch.Tensor:
        return self.clips[self.index[item]]
