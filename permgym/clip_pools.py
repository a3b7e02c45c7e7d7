"""The clips an ordering run trains and validates on, loaded once per process and shared by every env in it."""

from __future__ import annotations

from functools import lru_cache

import torch

from permgym.config import PermSamplingConfig


class IndexedClips:
    """A lazily indexed subset of a (possibly memory-mapped) ``[N, T, 3, H, W]`` uint8 clip tensor."""

    def __init__(self, clips: torch.Tensor, index: torch.Tensor) -> None:
        self.clips, self.index = clips, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: torch.Tensor | slice | int) -> torch.Tensor:
        return self.clips[self.index[item]]


def load_clip_pools(config: PermSamplingConfig) -> tuple[IndexedClips, IndexedClips]:
    """``(train_clips, val_clips)`` for ``config``'s dataset, both drawn from its **training** split.

    The training clips (SyntheticActions' ``"train"`` split, or every clip of a frame cache, which is built from a
    training split) are divided by a ``data_seed``-seeded permutation into ``1 - val_fraction`` clips the CNN trains
    on and ``val_fraction`` clips for the validation batch behind the observation and reward. The test split is never
    touched, so downstream evaluation stays clean. Results are memoised per process on the fields that determine
    them: resets and further envs never regenerate or re-read data.
    """
    if config.dataset == "synthetic":
        source = (
            "synthetic", config.synthetic_classes, config.synthetic_videos, config.clip_frames, config.frame_size,
            config.data_seed,
        )  # fmt: skip
    else:
        source = ("cache", config.resolved_cache_path())
    return _split_pools(source, config.data_seed, config.val_fraction)


def _training_clips(source: tuple) -> torch.Tensor:
    if source[0] == "synthetic":
        from permgym.data.synthetic import SyntheticActions

        _, classes, videos, frames, size, seed = source
        return SyntheticActions(classes, videos, frames, size, seed, split="train").clips
    from permgym.data.cache import FrameCache

    return FrameCache(source[1]).clips  # memory-mapped: rows are read only when a batch indexes them


@lru_cache(maxsize=4)
def _split_pools(source: tuple, seed: int, val_fraction: float) -> tuple[IndexedClips, IndexedClips]:
    clips = _training_clips(source)
    if len(clips) < 2:
        raise ValueError(f"need at least 2 training clips to hold some out for validation, got {len(clips)}")
    order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(seed))
    n_val = min(max(1, round(len(clips) * val_fraction)), len(clips) - 1)
    return IndexedClips(clips, order[n_val:].sort().values), IndexedClips(clips, order[:n_val].sort().values)
