"""Ordering tasks: turn a batch of clips into elements (frames or tiles) whose order the CNN must recognise.

Every task maps ``clips`` (``[B, T, 3, H, W]`` uint8, as stored by SyntheticActions and the frame cache) to
natural-order ``elements`` (``[B, n, 3, h, w]`` float, normalised) with :meth:`OrderingTask.elements`, and to
shuffled elements plus their bank index with :meth:`OrderingTask.sample`. All randomness comes from an explicit
``torch.Generator``.

* :class:`TemporalTask` — ``n`` frames of a clip at a random stride ``>= min_stride`` (optionally the window with the
  most motion among a few candidates, as Shuffle&Learn / OPN select high-motion tuples), one random crop and flip
  shared by the frames.
* :class:`SpatialTask` — a jigsaw: one frame cut into a ``g x g`` grid; each tile is cropped from its cell at a random
  offset (gaps and jitter between tiles) and normalised on its own, so edge continuity and colour are no shortcut.
The joint task (both on one shared trunk, a batch split between them) is :func:`permgym.trainer.batch_split`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from permgym.permutations import PermutationBank

_MEAN, _STD = 0.45, 0.225  # pixel statistics used to centre whole frames (tiles are normalised per tile)


def _randint(high: torch.Tensor | int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniform integers in ``[0, high]`` (inclusive; ``high`` may be a per-sample tensor)."""
    return (torch.rand(shape, generator=generator) * (torch.as_tensor(high) + 1)).long()


def pick(clips: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Frames ``[B, n]`` (int64 frame numbers) of ``clips [B, T, ...]`` -> ``[B, n, ...]``.

    ``clips[torch.arange(B)[:, None], frames]`` by one ``index_select`` of whole frames, which copies them as blocks
    (advanced indexing copies element by element, an order of magnitude slower on uint8 frames)."""
    b, t = clips.shape[:2]
    rows = (torch.arange(b)[:, None] * t + frames).flatten()
    return clips.flatten(0, 1).index_select(0, rows).view(*frames.shape, *clips.shape[2:])


def crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Cut one ``size x size`` window per image.

    Args:
        images: ``[B, m, C, H, W]``.
        top, left: ``[B, m]`` int64 window corners.
        size: window side.

    Returns:
        ``[B, m, C, size, size]``.
    """
    b, m = images.shape[:2]
    windows = [
        images[i, j, :, t : t + size, lft : lft + size]
        for i, (row_top, row_left) in enumerate(zip(top.tolist(), left.tolist(), strict=True))
        for j, (t, lft) in enumerate(zip(row_top, row_left, strict=True))
    ]
    return torch.stack(windows).view(b, m, images.shape[2], size, size)


@dataclass
class OrderingTask:
    """Base class: subclasses implement :meth:`elements`; shuffling by the bank is shared."""

    bank: PermutationBank
    name: str = "task"

    @property
    def num_elements(self) -> int:
        return self.bank.num_elements

    def elements(self, clips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``[B, T, 3, H, W]`` uint8 clips -> ``[B, n, 3, h, w]`` float elements in natural (correct) order."""
        raise NotImplementedError

    def sample(
        self, clips: torch.Tensor, generator: torch.Generator, perm_index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shuffled elements and their class.

        Args:
            clips: ``[B, T, 3, H, W]`` uint8.
            generator: source of all randomness.
            perm_index: ``[B]`` int64 bank rows to apply; uniform over the bank when ``None``.

        Returns:
            ``(elements [B, n, 3, h, w] float, perm_index [B] int64)`` with
            ``elements[b, i] = natural[b, bank.perms[perm_index[b], i]]``.
        """
        natural = self.elements(clips, generator)
        if perm_index is None:
            perm_index = torch.randint(self.bank.size, (clips.shape[0],), generator=generator)
        order = self.bank.perms[perm_index]
        rows = torch.arange(natural.shape[0])[:, None]
        return natural[rows, order], perm_index


@dataclass
class TemporalTask(OrderingTask):
    """Order ``n`` frames of a clip.

    Attributes:
        min_stride: smallest gap between consecutive chosen frames.
        crop_fraction: side of the shared random crop relative to the frame's shorter side.
        output_size: side of each element after resizing.
        motion_candidates: if > 1, draw this many (start, stride) windows and keep the one with the largest
            frame-difference energy; 1 means a plain random window.
        flip: random horizontal flip, shared by the frames of a sample.
    """

    name: str = "temporal"
    min_stride: int = 2
    crop_fraction: float = 0.85
    output_size: int = 32
    motion_candidates: int = 1
    flip: bool = True

    def _windows(self, clips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``[B, n]`` frame indices of the chosen windows."""
        b, t = clips.shape[:2]
        n = self.num_elements
        max_stride = (t - 1) // (n - 1)
        if max_stride < self.min_stride:
            raise ValueError(
                f"clips of {t} frames cannot hold {n} frames at stride >= {self.min_stride}; "
                f"use longer clips or a smaller min_stride"
            )
        c = max(1, self.motion_candidates)
        stride = self.min_stride + _randint(max_stride - self.min_stride, (b, c), generator)
        start = _randint(t - 1 - (n - 1) * stride, (b, c), generator)
        windows = start[..., None] + stride[..., None] * torch.arange(n)  # [B, c, n]
        if c > 1:
            coarse = clips[..., ::4, ::4].float()  # motion energy needs no full resolution
            energy = (coarse[:, 1:] - coarse[:, :-1]).abs().mean(dim=(2, 3, 4))  # [B, T-1]
            cumulative = F.pad(energy.cumsum(1), (1, 0))  # cumulative[:, i] = energy of frames 0..i
            span = cumulative.gather(1, windows[..., -1]) - cumulative.gather(1, windows[..., 0])
            best = span.argmax(1)
            return windows[torch.arange(b), best]
        return windows[:, 0]

    def elements(self, clips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, _, h, w = clips.shape
        n = self.num_elements
        frames = pick(clips, self._windows(clips, generator))  # [B, n, 3, H, W]
        side = max(1, int(min(h, w) * self.crop_fraction))
        top = _randint(h - side, (b, 1), generator).expand(b, n)
        left = _randint(w - side, (b, 1), generator).expand(b, n)
        x = crop(frames, top, left, side)  # uint8 until the end: resizing uint8 is several times faster
        if self.flip:
            flip = torch.rand(b, generator=generator) < 0.5
            x = torch.stack([sample.flip(-1) if f else sample for sample, f in zip(x, flip.tolist(), strict=True)])
        if side != self.output_size:
            x = F.interpolate(x.flatten(0, 1), size=self.output_size, mode="bilinear", antialias=True)
            x = x.view(b, n, 3, self.output_size, self.output_size)
        x = x.to(torch.float32).div_(255)
        return x.sub_(_MEAN).div_(_STD)


@dataclass
class SpatialTask(OrderingTask):
    """Order the tiles of a ``g x g`` jigsaw cut from one frame of the clip.

    Attributes:
        tile_fraction: tile side relative to its grid cell; the rest is random gap/jitter between tiles.
        output_size: side of each tile after resizing (``None`` keeps the cropped size).
    """

    name: str = "spatial"
    tile_fraction: float = 0.8
    output_size: int | None = None

    @property
    def grid(self) -> int:
        g = round(self.num_elements**0.5)
        if g * g != self.num_elements:
            raise ValueError(f"a jigsaw bank needs a square number of elements, got {self.num_elements}")
        return g

    def elements(self, clips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, t, _, h, w = clips.shape
        g, n = self.grid, self.num_elements
        frame = pick(clips, _randint(t - 1, (b, 1), generator))[:, 0]  # [B, 3, H, W]
        cell = min(h, w) // g
        tile = max(1, int(cell * self.tile_fraction))
        region_top = _randint(h - cell * g, (b, 1), generator)
        region_left = _randint(w - cell * g, (b, 1), generator)
        cells = torch.arange(n)
        top = region_top + (cells // g) * cell + _randint(cell - tile, (b, n), generator)
        left = region_left + (cells % g) * cell + _randint(cell - tile, (b, n), generator)
        x = crop(frame[:, None].expand(b, n, *frame.shape[1:]), top, left, tile).float()
        mean = x.mean(dim=(3, 4), keepdim=True)
        std = x.std(dim=(3, 4), keepdim=True).clamp_min(1.0)
        x = (x - mean) / std
        if self.output_size is not None and self.output_size != tile:
            x = F.interpolate(x.flatten(0, 1), size=self.output_size, mode="bilinear", antialias=True)
            x = x.view(b, n, 3, self.output_size, self.output_size)
        return x
