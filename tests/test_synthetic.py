"""SyntheticActions: determinism, splits, class structure, speed-independent content."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from permgym.clip_pools import load_clip_pools
from permgym.config import make_config
from permgym.data.synthetic import MAX_CLASSES, MOTIONS, SHAPES, SyntheticActions, class_name, generate_clips


def test_deterministic_by_seed_and_index() -> None:
    a = SyntheticActions(num_classes=12, num_videos=24, frames=8, size=32, seed=3)
    b = SyntheticActions(num_classes=12, num_videos=24, frames=8, size=32, seed=3)
    c = SyntheticActions(num_classes=12, num_videos=24, frames=8, size=32, seed=4)
    assert torch.equal(a.clips, b.clips) and not torch.equal(a.clips, c.clips)
    assert a.clips.shape == (24, 8, 3, 32, 32) and a.clips.dtype == torch.uint8


def test_subsets_render_the_same_clips() -> None:
    full = SyntheticActions(num_classes=10, num_videos=50, frames=6, size=24, seed=0)
    test = SyntheticActions(num_classes=10, num_videos=50, frames=6, size=24, seed=0, split="test")
    half = SyntheticActions(num_classes=10, num_videos=50, frames=6, size=24, seed=0, classes=[5, 6, 7, 8, 9])
    assert torch.equal(test.clips, full.clips[torch.as_tensor(test.indices)])
    assert set(half.labels.tolist()) == {5, 6, 7, 8, 9}
    assert torch.equal(half.clips, full.clips[torch.as_tensor(half.indices)])


def test_train_test_split_is_disjoint_and_balanced() -> None:
    train = SyntheticActions(num_classes=8, num_videos=80, frames=4, size=16, split="train")
    test = SyntheticActions(num_classes=8, num_videos=80, frames=4, size=16, split="test")
    assert set(train.indices).isdisjoint(test.indices) and len(train) + len(test) == 80
    assert torch.bincount(test.labels).tolist() == [2] * 8


def test_frames_change_over_time_and_classes_need_motion() -> None:
    data = SyntheticActions(num_classes=MAX_CLASSES, num_videos=MAX_CLASSES, frames=8, size=32)
    motion = (data.clips[:, 1:].float() - data.clips[:, :-1].float()).abs().mean()
    assert motion > 1.0  # pixels move
    assert len(MOTIONS) * len(SHAPES) == MAX_CLASSES >= 40
    assert class_name(0) == "move_E/square" and class_name(16) == "move_NE/disk"


def test_item_and_repr() -> None:
    data = SyntheticActions(num_classes=4, num_videos=8, frames=4, size=16, transform=lambda c: c.float())
    clip, label = data[1]
    assert clip.dtype == torch.float32 and label == 1
    assert "SyntheticActions(split='all', clips=8" in repr(data)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 61}, "num_classes must be in"),
        ({"split": "val"}, "split must be"),
        ({"frames": 1}, "frames >= 2"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticActions(num_videos=4, **kwargs)


def test_decoys_variant_is_deterministic_and_adds_decoys_to_the_classic_scene() -> None:
    common = {"num_classes": 6, "num_videos": 12, "frames": 6, "size": 32, "seed": 1}
    classic = SyntheticActions(**common)
    a, b = SyntheticActions(**common, variant="decoys"), SyntheticActions(**common, variant="decoys")
    assert torch.equal(a.clips, b.clips) and "variant='decoys'" in repr(a)
    changed = (a.clips != classic.clips).any(2)  # [N, T, H, W] pixels the decoys painted
    assert changed.flatten(2).float().mean() > 0.05  # two object-sized decoys per frame
    # the decoys jump to a new place in every frame: the changed pixels of consecutive frames barely overlap
    overlap = (changed[:, 1:] & changed[:, :-1]).flatten(2).sum(2) / changed[:, 1:].flatten(2).sum(2).clamp_min(1)
    assert overlap.mean() < 0.5


def test_one_decoy_variant_is_deterministic_and_paints_one_of_the_two_decoys_area() -> None:
    common = {"num_classes": 6, "num_videos": 12, "frames": 6, "size": 32, "seed": 1}
    classic = SyntheticActions(**common).clips
    a, b = SyntheticActions(**common, variant="one-decoy"), SyntheticActions(**common, variant="one-decoy")
    assert torch.equal(a.clips, b.clips) and "variant='one-decoy'" in repr(a)
    one = (a.clips != classic).any(2).float().mean()
    two = (SyntheticActions(**common, variant="decoys").clips != classic).any(2).float().mean()
    assert 0.02 < one < 0.75 * two  # one object-sized decoy per frame, about half the pixels of two
    # a clip depends only on its own index: a clip rendered among fewer clips is the same
    alone = SyntheticActions(**{**common, "num_videos": 6}, variant="one-decoy")
    assert torch.equal(alone.clips, a.clips[:6])


def test_faint_decoys_are_the_decoys_at_half_opacity() -> None:
    common = {"num_classes": 6, "num_videos": 12, "frames": 6, "size": 32, "seed": 1}
    classic = SyntheticActions(**common).clips.float()
    a, b = SyntheticActions(**common, variant="faint-decoys"), SyntheticActions(**common, variant="faint-decoys")
    assert torch.equal(a.clips, b.clips)
    faint = (a.clips.float() - classic).abs().sum()
    opaque = (SyntheticActions(**common, variant="decoys").clips.float() - classic).abs().sum()
    assert 0.45 < faint / opaque < 0.55  # the same decoys, each pixel moved half as far towards them


def test_occluder_variant_is_deterministic_and_paints_a_bar_at_a_new_place_every_frame() -> None:
    common = {"num_classes": 6, "num_videos": 12, "frames": 6, "size": 32, "seed": 1}
    classic = SyntheticActions(**common).clips
    a, b = SyntheticActions(**common, variant="occluder"), SyntheticActions(**common, variant="occluder")
    assert torch.equal(a.clips, b.clips)
    changed = (a.clips != classic).any(2)  # [N, T, H, W] pixels the occluder painted
    assert 0.03 < changed.flatten(2).float().mean() < 0.15  # one bar of about a tenth of the frame
    overlap = (changed[:, 1:] & changed[:, :-1]).flatten(2).sum(2) / changed[:, 1:].flatten(2).sum(2).clamp_min(1)
    assert overlap.mean() < 0.5
    small = (SyntheticActions(**common, variant="small-occluder").clips != classic).any(2)
    assert 0.3 < small.float().mean() / changed.float().mean() < 0.6  # (0.2 / 0.3)^2 = 0.44 of the area


def test_flicker_variant_is_deterministic_and_changes_the_background_every_frame() -> None:
    common = {"num_classes": 6, "num_videos": 12, "frames": 6, "size": 32, "seed": 1}
    classic = SyntheticActions(**common).clips.float()
    a, b = SyntheticActions(**common, variant="flicker"), SyntheticActions(**common, variant="flicker")
    assert torch.equal(a.clips, b.clips)
    flicker = a.clips.float()

    def corner_change(clips: torch.Tensor) -> float:
        """Mean change between consecutive frames of the top-left pixel (background in these clips)."""
        return float((clips[:, 1:, :, 0, 0] - clips[:, :-1, :, 0, 0]).abs().mean())

    # static in the classic scene, changing in every flicker frame
    assert corner_change(classic) < 2.0 < 5.0 < corner_change(flicker)


def test_env_clip_pools_render_the_configured_variant() -> None:
    config = make_config(
        synthetic_classes=6, synthetic_videos=30, clip_frames=6, frame_size=24, synthetic_variant="flicker"
    )
    train, _ = load_clip_pools(config)
    expected = SyntheticActions(6, 30, 6, 24, split="train", variant="flicker").clips
    classic = SyntheticActions(6, 30, 6, 24, split="train").clips
    assert torch.equal(train.clips, expected) and not torch.equal(train.clips, classic)


def test_unknown_variant() -> None:
    with pytest.raises(
        ValueError,
        match="unknown variant 'fog'; choose one of classic, decoys, one-decoy, faint-decoys, occluder, small-occluder, flicker",
    ):
        SyntheticActions(num_videos=4, variant="fog")
    with pytest.raises(ValueError, match="unknown variant 'fog'"):  # the renderer itself never falls back to classic
        generate_clips(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), 4, 16, 0, variant="fog")
