"""The clips an ordering run trains and validates on, loaded once per process and shared by every env in it."""

from __future__ import annotations

from functools import lru_cache

import torch

from permgym.config import PermSamplingConfig


class IndexedClips:
    """A lazily indexed subset of a (possibly memory-mapped) ``[N, T, 3, H, W]`` uint8 clip tensor, with the class
    ``labels [N]`` of every row of ``clips`` (for proxies that read labels of held-out training clips)."""

    def __init__(self, clips: torch.Tensor, index: torch.Tensor, labels: torch.Tensor) -> None:
        self.clips, self.index, self.all_labels = clips, index, labels

    @property
    def labels(self) -> torch.Tensor:
        """``[len(self)]`` int64 class of each clip of the subset."""
        return self.all_labels[self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: torch.Tensor | slice | int) -> torch.Tensor:
        rows = self.index[item]
        # index_select copies whole clips as blocks; advanced indexing goes element by element (~15x slower)
        return self.clips.index_select(0, rows) if rows.dim() == 1 else self.clips[rows]


def load_clip_pools(config: PermSamplingConfig) -> tuple[IndexedClips, IndexedClips]:
    """``(train_clips, val_clips)`` for ``config``'s dataset, both drawn from its **training** split.

    The training clips (SyntheticActions' ``"train"`` split, or every clip of a frame cache, which is built from a
    training split) are divided by a ``data_seed``-seeded permutation into ``1 - val_fraction`` clips the CNN trains
    on and ``val_fraction`` clips held out for validation (:func:`split_validation` halves them into the pool the
    per-episode validation batch behind observation and reward is drawn from, and a pool for reports). The test
    split is never touched, so downstream evaluation stays clean: a frame cache of test videos is refused
    (``ValueError``). Results are memoised per process on the fields that determine them: resets and further envs
    never regenerate or re-read data.
    """
    if config.dataset == "synthetic":
        source = (
            "synthetic", config.synthetic_classes, config.synthetic_videos, config.clip_frames, config.frame_size,
            config.data_seed, config.synthetic_variant,
        )  # fmt: skip
    else:
        source = ("cache", config.resolved_cache_path())
    return _split_pools(source, config.data_seed, config.val_fraction)


def split_validation(val_clips: IndexedClips) -> tuple[IndexedClips, IndexedClips]:
    """``(reward_pool, report_pool)``: the validation clips cut into two disjoint halves (odd / even positions).

    Each episode draws its validation batch (behind observation and reward) from ``reward_pool``; the held-out
    ordering metrics that evaluations report (:meth:`permgym.env.PermSamplingEnv.heldout_statistics`) use
    ``report_pool``, clips that no reward, observation or sampler ever saw.
    """
    if len(val_clips) < 2:
        raise ValueError(
            f"need at least 2 validation clips to split into reward and report pools, got {len(val_clips)}"
        )
    clips, index, labels = val_clips.clips, val_clips.index, val_clips.all_labels
    return IndexedClips(clips, index[1::2], labels), IndexedClips(clips, index[0::2], labels)


def _training_clips(source: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    if source[0] == "synthetic":
        from permgym.data.synthetic import SyntheticActions

        _, classes, videos, frames, size, seed, variant = source
        data = SyntheticActions(classes, videos, frames, size, seed, split="train", variant=variant)
        return data.clips, data.labels
    from permgym.data.cache import FrameCache

    cache = FrameCache(source[1])
    # the dataset's config() names its part: "train" (official splits: UCF101, HMDB51) or "part" (folder trees)
    if cache.config.get("train") is False or cache.config.get("part") == "test":
        raise ValueError(
            f"frame cache {source[1]!r} holds the test videos of {cache.config.get('dataset')}, which pretraining must "
            "never see; build one of the training videos (python -m permgym.data.prepare ... --subset train)"
        )
    return cache.clips, cache.labels  # memory-mapped clips: rows are read only when a batch indexes them


@lru_cache(maxsize=4)
def _split_pools(source: tuple, seed: int, val_fraction: float) -> tuple[IndexedClips, IndexedClips]:
    clips, labels = _training_clips(source)
    if len(clips) < 3:
        raise ValueError(f"need at least 3 training clips to hold 2 out for validation, got {len(clips)}")
    order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(seed))
    n_val = min(max(2, round(len(clips) * val_fraction)), len(clips) - 1)  # >= 2: a reward and a report half
    return IndexedClips(clips, order[n_val:].sort().values, labels), IndexedClips(
        clips, order[:n_val].sort().values, labels
    )
