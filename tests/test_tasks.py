"""Ordering tasks: shapes, correct shuffling, stride and motion-window rules, per-tile normalisation, seeding."""

from __future__ import annotations

import pytest
import torch

from permgym.clip_pools import IndexedClips
from permgym.permutations import make_bank
from permgym.tasks import SpatialTask, TemporalTask, crop, pick


def _ramp_clips(b: int = 6, t: int = 16, size: int = 40) -> torch.Tensor:
    """Clips whose frame ``i`` is filled with the value ``10 * i``: the frame index is readable from pixels."""
    values = (torch.arange(t) * 10).to(torch.uint8)
    return values[None, :, None, None, None].expand(b, t, 3, size, size).clone()


def test_temporal_elements_are_in_order_with_min_stride() -> None:
    task = TemporalTask(make_bank(4), min_stride=3, flip=False, output_size=24)
    x = task.elements(_ramp_clips(), torch.Generator().manual_seed(0))
    assert x.shape == (6, 4, 3, 24, 24)
    frame = torch.round((x[..., 0, 0, 0] * 0.225 + 0.45) * 255 / 10)  # recover the frame index
    steps = frame[:, 1:] - frame[:, :-1]
    assert (steps >= 3).all() and (steps == steps[:, :1]).all()


def test_sample_applies_the_bank_row() -> None:
    bank = make_bank(4)
    task = TemporalTask(bank, flip=False)
    clips = _ramp_clips()
    natural = task.elements(clips, torch.Generator().manual_seed(1))
    shuffled, index = task.sample(clips, torch.Generator().manual_seed(1), perm_index=torch.arange(6) * 4)
    for b in range(6):
        torch.testing.assert_close(shuffled[b], natural[b, bank.perms[index[b]]])


def test_motion_window_prefers_motion() -> None:
    clips = torch.zeros(4, 16, 3, 32, 32, dtype=torch.uint8)
    clips[:, 8:, :, :, :16] = torch.arange(8, dtype=torch.uint8)[None, :, None, None, None] * 30  # motion late
    task = TemporalTask(make_bank(3), min_stride=1, motion_candidates=16, flip=False)
    windows = task._windows(clips, torch.Generator().manual_seed(0))
    assert (windows[:, -1] >= 9).all()


def test_too_short_clips_are_a_clear_error() -> None:
    task = TemporalTask(make_bank(4), min_stride=6)
    with pytest.raises(ValueError, match="cannot hold 4 frames at stride >= 6"):
        task.elements(_ramp_clips(t=16), torch.Generator())


@pytest.mark.parametrize(("grid", "size"), [(2, None), (3, 30)])
def test_spatial_tiles_are_normalised_and_shuffled(grid: int, size: int | None) -> None:
    bank = make_bank(grid * grid, size)
    task = SpatialTask(bank, tile_fraction=0.75)
    clips = torch.randint(0, 255, (5, 4, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x, index = task.sample(clips, torch.Generator().manual_seed(0))
    tile = int((48 // grid) * 0.75)
    assert x.shape == (5, grid * grid, 3, tile, tile) and index.shape == (5,)
    torch.testing.assert_close(x.mean(dim=(3, 4)), torch.zeros(5, grid * grid, 3), atol=1e-4, rtol=0)


def test_same_generator_seed_same_batch() -> None:
    task = TemporalTask(make_bank(4), motion_candidates=3)
    clips = torch.randint(0, 255, (8, 16, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = task.sample(clips, torch.Generator().manual_seed(5))
    b = task.sample(clips, torch.Generator().manual_seed(5))
    c = task.sample(clips, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_crop_cuts_the_requested_windows() -> None:
    images = torch.arange(2 * 1 * 1 * 6 * 6).view(2, 1, 1, 6, 6)
    out = crop(images, torch.tensor([[1], [3]]), torch.tensor([[2], [0]]), 2)
    assert out[0, 0, 0].tolist() == [[8, 9], [14, 15]]
    assert out[1, 0, 0].tolist() == [[54, 55], [60, 61]]  # image 1 starts at 36; row 3 adds 18


def test_pick_and_indexed_clips_equal_advanced_indexing() -> None:
    g = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (5, 7, 3, 4, 6), dtype=torch.uint8, generator=g)
    frames = torch.randint(0, 7, (5, 3), generator=g)
    assert torch.equal(pick(clips, frames), clips[torch.arange(5)[:, None], frames])
    pool = IndexedClips(clips, torch.tensor([4, 0, 2]), torch.arange(5))
    for item in (torch.tensor([2, 0, 2]), slice(1, None), 1):
        assert torch.equal(pool[item], clips[pool.index[item]])


def test_flip_mirrors_every_frame_of_the_drawn_samples_alone() -> None:
    """Half the samples (by the generator) are mirrored left-right, all their frames alike; the rest untouched."""
    clips = torch.arange(40, dtype=torch.uint8)[None, None, None, None, :].expand(8, 16, 3, 40, 40).clone()
    plain = TemporalTask(make_bank(3), crop_fraction=1.0, output_size=40, flip=False)
    mirrored = TemporalTask(make_bank(3), crop_fraction=1.0, output_size=40, flip=True)
    x = plain.elements(clips, torch.Generator().manual_seed(3))
    y = mirrored.elements(clips, torch.Generator().manual_seed(3))
    flipped = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(x, y, strict=True)])
    assert flipped.any() and not flipped.all()
    assert all(torch.equal(a, b) for a, b, f in zip(x, y, flipped, strict=True) if not f)
