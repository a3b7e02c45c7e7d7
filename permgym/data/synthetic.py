"""SyntheticActions: the embedded, procedurally generated video dataset every command runs on by default.

Each class is a *motion pattern* combined with an *object shape*. Motions (15): translation in 8 directions,
rotation clockwise / counter-clockwise, zoom in / out, circling clockwise / counter-clockwise, and a damped bounce.
Shapes (4): square, disk, triangle, cross. Class ``c`` has motion ``c % 15`` and shape ``c // 15``, so any prefix of
the classes covers all motions and every shape occurs with many motions: the class cannot be read from appearance
alone (chance is 1/15 given the shape), it needs motion.

Temporal order is learnable and not only up to reversal: every motion accelerates (displacement grows
quadratically in time), and the bounce loses energy at each impact, so a clip played backwards looks different
from any clip played forwards.

Nuisances vary per clip: object colours (two-tone, so rotation is visible on a disk), size, speed, start point,
background (two random colour gradients, a sinusoidal texture and static noise) and 0-2 drifting distractor blobs.
Everything is drawn from ``numpy.random.Generator(PCG64(SeedSequence([seed, clip_index])))``: a clip depends only
on ``(seed, index, frames, size, variant)``, never on how many other clips are generated.

Variants (:data:`VARIANTS`), each drawing its extra randomness from its own stream
(``SeedSequence([seed, index, k])``), so the classic scene of a clip stays as it is:

* ``"classic"``: the scene above.
* ``"decoys"``: two decoy objects of the shapes no video's class uses (ring, star, bar, crescent), in the object's
  colours and size range, each at an independent random position and angle in every frame, painted under the
  object. They carry no temporal order: ordering the frames needs features that tell the object from them.
* ``"one-decoy"``: as ``"decoys"`` with a single decoy, a milder version of the same appearance pressure.
* ``"faint-decoys"``: as ``"decoys"`` with each decoy painted at half opacity over the scene, so the object stays
  the most salient thing in a frame.
* ``"occluder"``: an opaque bar in colours of its own (half-length 0.3 of the frame side), at an independent random
  position and angle in every frame, painted over the object, so the object is partly hidden in some frames. It
  carries no temporal order.
* ``"small-occluder"``: as ``"occluder"`` with a bar of half-length 0.2 of the frame side (under half the area).
* ``"flicker"``: the background's two colours, its texture phase and its noise are redrawn in every frame (colour
  offsets with a standard deviation of 10 of 255, phase offsets within ±π/4). What the frames share is then only
  the object: frame-to-frame change in the background carries no order, so the ordering task is pushed to features
  of the object rather than of the whole frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from permgym.config import SYNTHETIC_VARIANTS

MOTIONS: tuple[str, ...] = (
    "move_E", "move_NE", "move_N", "move_NW", "move_W", "move_SW", "move_S", "move_SE",
    "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out", "circle_cw", "circle_ccw", "bounce",
)  # fmt: skip
SHAPES: tuple[str, ...] = ("square", "disk", "triangle", "cross")
#: Scene variants: ``"classic"`` (the default), ``"decoys"``, ``"one-decoy"``, ``"faint-decoys"``, ``"occluder"``,
#: ``"small-occluder"`` and ``"flicker"`` (see the module docstring).
VARIANTS: tuple[str, ...] = SYNTHETIC_VARIANTS
_DECOYS = {"decoys": 2, "one-decoy": 1, "faint-decoys": 2}  # decoy objects per clip of each variant that has them
_DECOY_OPACITY = {"faint-decoys": 0.5}  # the decoys' opacity where it is not 1
_DECOY_RADIUS = (0.16, 0.22)  # range of a decoy's radius relative to the frame side (the object's range)
_OCCLUDER_RADIUS = {"occluder": 0.3, "small-occluder": 0.2}  # the occluder bar's half-length / the frame side
_FLICKER_SD = 10.0  # standard deviation of a "flicker" frame's background colour offsets (of 255)
_FLICKER_PHASE = np.pi / 4  # a "flicker" frame's texture phase offsets are uniform in [-_FLICKER_PHASE, _FLICKER_PHASE]
#: Every shape the renderer draws: the video shapes, then shapes no video shows (SyntheticObjects' unseen classes).
ALL_SHAPES: tuple[str, ...] = (*SHAPES, "ring", "star", "bar", "crescent")
MAX_CLASSES = len(MOTIONS) * len(SHAPES)

_CHUNK = 32  # clips rendered at once per thread; bounds peak memory to ~_CHUNK * frames * size^2 * 40 bytes


def class_name(label: int) -> str:
    """Human-readable name of class ``label``, e.g. ``"rotate_cw/disk"``."""
    return f"{MOTIONS[label % len(MOTIONS)]}/{SHAPES[label // len(MOTIONS)]}"


def _clip_params(seed: int, index: int, label: int, frames: int, size: int) -> dict[str, np.ndarray]:
    """Draw one clip's object trajectory and nuisances. All lengths are in pixels of a ``size`` x ``size`` frame."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))
    motion, shape = label % len(MOTIONS), label // len(MOTIONS)
    t = np.arange(frames, dtype=np.float64) / max(frames - 1, 1)  # normalised time in [0, 1]
    accel = rng.uniform(0.6, 1.4)  # fraction of the path covered by the quadratic term: forward != backward
    ramp = (1 - accel / 2) * t + (accel / 2) * t**2  # 0 -> 1, accelerating
    radius = rng.uniform(0.16, 0.22) * size
    centre = size / 2 + rng.uniform(-0.08, 0.08, size=2) * size
    angle = np.full(frames, rng.uniform(0, 2 * np.pi))
    scale = np.ones(frames)
    pos = np.repeat(centre[None, :], frames, axis=0)
    name = MOTIONS[motion]
    if name.startswith("move_"):
        direction = motion * np.pi / 4  # E, NE, N, ... (image y axis points down)
        unit = np.array([np.cos(direction), -np.sin(direction)])
        travel = rng.uniform(0.45, 0.6) * size
        pos = centre[None, :] + (ramp[:, None] - 0.5) * travel * unit[None, :]
    elif name.startswith("rotate_"):
        sign = -1.0 if name == "rotate_cw" else 1.0
        angle = angle + sign * rng.uniform(1.2, 2.0) * np.pi * ramp
    elif name.startswith("zoom_"):
        span = np.log(rng.uniform(2.2, 3.0))
        log_scale = (ramp - 0.5) * span if name == "zoom_in" else (0.5 - ramp) * span
        scale = np.exp(log_scale)
    elif name.startswith("circle_"):
        sign = -1.0 if name == "circle_cw" else 1.0
        orbit = rng.uniform(0.18, 0.24) * size
        phase = rng.uniform(0, 2 * np.pi) + sign * rng.uniform(1.2, 1.7) * np.pi * ramp
        pos = centre[None, :] + orbit * np.stack([np.cos(phase), -np.sin(phase)], axis=1)
    else:  # bounce: drift sideways while bouncing on a floor, losing energy at each impact
        floor = size * 0.8
        height = np.empty(frames)
        y, vy, g = 0.0, 0.0, rng.uniform(0.9, 1.3) * size * 8 / frames**2
        for i in range(frames):
            height[i] = y
            vy += g
            y += vy
            if y > floor * 0.7:
                y, vy = floor * 0.7, -abs(vy) * 0.6
        drift = rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.25) * size
        pos = np.stack([centre[0] + (t - 0.5) * drift, floor - radius - (floor * 0.7 - height)], axis=1)
        pos[:, 1] = np.clip(pos[:, 1], radius, size - radius)
    colours = rng.uniform(0, 255, size=(2, 3))
    colours[1] = 255 - colours[0] * rng.uniform(0.3, 0.7)  # two-tone object, so rotation shows on a disk
    n_distractors = int(rng.integers(0, 3))
    distractor_start = rng.uniform(0.1, 0.9, size=(2, 2)) * size
    distractor_step = rng.normal(0, 0.01, size=(2, 2)) * size
    distractor_pos = distractor_start[None] + np.arange(frames)[:, None, None] * distractor_step[None]
    return {
        "shape": np.int64(shape),
        "pos": pos,
        "angle": angle,
        "scale": scale * radius,
        "colours": colours,
        "bg_colours": rng.uniform(0, 255, size=(2, 3)),
        "bg_dir": rng.uniform(0, 2 * np.pi),
        "bg_freq": rng.uniform(1.0, 4.0, size=2),
        "noise_seed": rng.integers(2**31),
        "n_distractors": np.int64(n_distractors),
        "distractor_pos": distractor_pos,
        "distractor_colour": rng.uniform(0, 255, size=(2, 3)),
    }


def _decoy_params(seed: int, index: int, frames: int, size: int, count: int) -> dict[str, np.ndarray]:
    """The ``count`` decoys of one ``"decoys"`` or ``"one-decoy"`` clip: unseen shapes at independent random
    positions and angles per frame, their radii drawn like the object's."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, 1])))
    scale = rng.uniform(*_DECOY_RADIUS, size=count) * size
    margin = scale.max()
    return {
        "decoy_shape": rng.integers(len(SHAPES), len(ALL_SHAPES), size=count),
        "decoy_pos": rng.uniform(margin, size - margin, size=(count, frames, 2)),
        "decoy_angle": rng.uniform(0, 2 * np.pi, size=(count, frames)),
        "decoy_scale": np.repeat(scale[:, None], frames, axis=1),
    }


def _occluder_params(seed: int, index: int, frames: int, size: int, radius: float) -> dict[str, np.ndarray]:
    """The occluder of one ``"occluder"`` or ``"small-occluder"`` clip: a bar of half-length ``radius * size`` with
    colours of its own at a random position and angle per frame."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, 3])))
    return {
        "occluder_pos": rng.uniform(0, size, size=(frames, 2)),
        "occluder_angle": rng.uniform(0, 2 * np.pi, size=frames),
        "occluder_colours": rng.uniform(0, 255, size=(2, 3)),
        "occluder_scale": np.full(frames, radius * size),
    }


def _flicker_params(seed: int, index: int, frames: int) -> dict[str, np.ndarray]:
    """The per-frame background changes of one ``"flicker"`` clip: colour offsets and texture phases."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, 2])))
    return {
        "flicker_colours": rng.normal(0, _FLICKER_SD, size=(frames, 2, 3)),
        "flicker_phase": rng.uniform(-_FLICKER_PHASE, _FLICKER_PHASE, size=(frames, 2)),
    }


def _shape_distance(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance-like field (< 0 inside) of a unit-size shape in object coordinates."""
    if shape == 0:  # square
        return np.maximum(np.abs(u), np.abs(v)) - 0.85
    if shape == 1:  # disk
        return np.sqrt(u * u + v * v) - 1.0
    if shape == 2:  # triangle pointing up
        return np.maximum(-v - 0.6, np.maximum(v * 0.5 + np.abs(u) * 0.866, 0) - 0.5)
    if shape == 3:  # cross
        return np.minimum(np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.33), np.maximum(np.abs(v) - 1.0, np.abs(u) - 0.33))
    r = np.sqrt(u * u + v * v)
    if shape == 4:  # ring
        return np.abs(r - 0.72) - 0.28
    if shape == 5:  # five-pointed star (radius varying with the angle; distance-like, not exact)
        return r - (0.62 + 0.38 * np.cos(5 * np.arctan2(v, u)))
    if shape == 6:  # bar
        return np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.3)
    return np.maximum(r - 1.0, 0.8 - np.sqrt((u - 0.5) ** 2 + v * v))  # crescent: a disk minus an offset disk


def _gradient_weight(p: dict[str, np.ndarray], xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """``[size, size, 1]`` weight in [0, 1] of the background's second colour along its random direction."""
    size = xx.shape[0]
    proj = (np.cos(p["bg_dir"]) * xx + np.sin(p["bg_dir"]) * yy) / size
    w = np.clip(proj - proj.min(), 0, None)
    return (w / max(float(w.max()), 1e-6))[..., None]


def _background(p: dict[str, np.ndarray], xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """``[size, size, 3]`` float background: a two-colour gradient along a random direction, a sinusoidal texture
    and static noise (``[T, size, size, 3]`` for a ``"flicker"`` clip, see :func:`_flickering_background`)."""
    if "flicker_colours" in p:
        return _flickering_background(p, xx, yy)
    size = xx.shape[0]
    w = _gradient_weight(p, xx, yy)
    texture = 12 * np.sin(2 * np.pi * p["bg_freq"][0] * xx / size) * np.cos(2 * np.pi * p["bg_freq"][1] * yy / size)
    noise = np.random.default_rng(int(p["noise_seed"])).normal(0, 6, size=(size, size, 1))
    return (1 - w) * p["bg_colours"][0] + w * p["bg_colours"][1] + texture[..., None] + noise


def _flickering_background(p: dict[str, np.ndarray], xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """``[T, size, size, 3]``: the clip's background with its colours, texture phase and noise redrawn per frame."""
    size, frames = xx.shape[0], len(p["flicker_colours"])
    w = _gradient_weight(p, xx, yy)[None]
    colours = p["bg_colours"][None] + p["flicker_colours"]  # [T, 2, 3]
    phase = p["flicker_phase"][:, :, None, None]  # [T, 2, 1, 1]
    texture = (
        12
        * np.sin(2 * np.pi * p["bg_freq"][0] * xx / size + phase[:, 0])
        * np.cos(2 * np.pi * p["bg_freq"][1] * yy / size + phase[:, 1])
    )
    noise = np.random.default_rng(int(p["noise_seed"])).normal(0, 6, size=(frames, size, size, 1))
    return (1 - w) * colours[:, None, None, 0] + w * colours[:, None, None, 1] + texture[..., None] + noise


def _draw_distractors(out: np.ndarray, p: dict[str, np.ndarray], xx: np.ndarray, yy: np.ndarray) -> None:
    """Paint the small drifting blobs of ``p`` into ``out`` (``[T, size, size, 3]`` float, in place)."""
    size = xx.shape[0]
    for d in range(int(p["n_distractors"])):
        c = p["distractor_pos"][:, d].astype(np.float32)  # [T, 2]
        r2 = (xx[None] - c[:, 0, None, None]) ** 2 + (yy[None] - c[:, 1, None, None]) ** 2
        m = np.clip(1.0 - (np.sqrt(r2) - size * 0.05), 0, 1)[..., None]
        out[:] = out * (1 - m) + m * p["distractor_colour"][d].astype(np.float32)


def draw_object(
    out: np.ndarray,
    shape: int,
    pos: np.ndarray,
    angle: np.ndarray,
    scale: np.ndarray,
    colours: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    opacity: float = 1.0,
) -> np.ndarray:
    """Paint a two-tone object into ``out`` (in place) with a soft one-pixel edge; return its coverage.

    Args:
        out: ``[T, size, size, 3]`` float32 frames.
        shape: index into :data:`ALL_SHAPES`.
        pos: ``[T, 2]`` centre (x, y) in pixels; angle: ``[T]`` radians; scale: ``[T]`` radius in pixels.
        colours: ``[2, 3]`` the colours of the halves ``u > 0`` and ``u <= 0`` in object coordinates.
        xx, yy: ``[size, size]`` pixel-centre coordinates (``np.mgrid + 0.5``).
        opacity: the object's weight where it covers a pixel (1: opaque; 0.5: half the scene shows through).

    Returns:
        ``[T, size, size, 1]`` float32 coverage in [0, opacity] (``opacity`` inside the object).
    """
    dx = xx[None] - pos[:, 0, None, None].astype(np.float32)
    dy = yy[None] - pos[:, 1, None, None].astype(np.float32)
    cos = np.cos(angle).astype(np.float32)[:, None, None]
    sin = np.sin(angle).astype(np.float32)[:, None, None]
    s = scale.astype(np.float32)[:, None, None]
    u = (cos * dx - sin * dy) / s
    v = (sin * dx + cos * dy) / s
    field = _shape_distance(shape, u, v) * s  # in pixels
    m = np.clip(0.5 - field, 0, 1)[..., None]
    if opacity != 1.0:
        m = m * np.float32(opacity)
    colour = np.where((u > 0)[..., None], colours[0], colours[1]).astype(np.float32)
    out[:] = out * (1 - m) + m * colour
    return m


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(yy, xx)``: ``[size, size]`` float32 pixel-centre coordinates."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return yy, xx


def _render_chunk(params: list[dict[str, np.ndarray]], frames: int, size: int) -> np.ndarray:
    """Render clips to ``[B, frames, 3, size, size]`` uint8."""
    b = len(params)
    yy, xx = pixel_grid(size)
    out = np.empty((b, frames, size, size, 3), dtype=np.float32)
    for i, p in enumerate(params):
        out[i] = _background(p, xx, yy).astype(np.float32)  # one frame broadcast over the clip, or one per frame
        _draw_distractors(out[i], p, xx, yy)
        for d in range(len(p.get("decoy_shape", ()))):
            draw_object(out[i], int(p["decoy_shape"][d]), p["decoy_pos"][d], p["decoy_angle"][d],
                        p["decoy_scale"][d], p["colours"], xx, yy, p["decoy_opacity"])  # fmt: skip
        draw_object(out[i], int(p["shape"]), p["pos"], p["angle"], p["scale"], p["colours"], xx, yy)
        if "occluder_pos" in p:
            draw_object(out[i], ALL_SHAPES.index("bar"), p["occluder_pos"], p["occluder_angle"],
                        p["occluder_scale"], p["occluder_colours"], xx, yy)  # fmt: skip
    return np.clip(out, 0, 255).astype(np.uint8).transpose(0, 1, 4, 2, 3)


def generate_clips(
    labels: np.ndarray, indices: np.ndarray, frames: int, size: int, seed: int, variant: str = "classic"
) -> np.ndarray:
    """Render the clips ``indices`` (with classes ``labels``) of scene ``variant`` as ``[N, frames, 3, size, size]``
    uint8.

    Chunks render on a thread pool (numpy releases the GIL in its array operations); every clip depends only on its
    own parameters, so the result is the same for any number of threads.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    out = np.empty((len(labels), frames, 3, size, size), dtype=np.uint8)

    def render(start: int) -> None:
        stop = min(start + _CHUNK, len(labels))
        params = [_clip_params(seed, int(indices[j]), int(labels[j]), frames, size) for j in range(start, stop)]
        for j, p in zip(range(start, stop), params, strict=True):
            if variant in _DECOYS:
                p.update(_decoy_params(seed, int(indices[j]), frames, size, _DECOYS[variant]))
                p["decoy_opacity"] = _DECOY_OPACITY.get(variant, 1.0)
            elif variant in _OCCLUDER_RADIUS:
                p.update(_occluder_params(seed, int(indices[j]), frames, size, _OCCLUDER_RADIUS[variant]))
            elif variant == "flicker":
                p.update(_flicker_params(seed, int(indices[j]), frames))
        out[start:stop] = _render_chunk(params, frames, size)

    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(render, range(0, len(labels), _CHUNK)))
    return out


class SyntheticActions(Dataset):
    """Procedurally generated action clips: motion pattern x object shape, no download.

    Args:
        num_classes: number of classes, at most 60 (15 motions x 4 shapes).
        num_videos: total number of clips over all splits; clip ``i`` has class ``i % num_classes``.
        frames: frames per clip.
        size: frame height and width in pixels.
        seed: the dataset's seed; identical arguments give identical pixels.
        split: ``"all"``, ``"train"`` or ``"test"``. Every ``round(1 / test_fraction)``-th clip of each class is a
            test clip.
        classes: optional subset of class ids to keep (e.g. the class-disjoint halves for metric learning).
        test_fraction: share of each class held out as ``"test"``.
        transform: optional callable applied to each ``[T, 3, H, W]`` uint8 clip.
        variant: the scene, one of :data:`VARIANTS` (``"classic"``, ``"decoys"``, ``"one-decoy"``,
            ``"faint-decoys"``, ``"occluder"``, ``"small-occluder"`` or ``"flicker"``; see the module docstring).

    Attributes:
        clips: ``[N, frames, 3, size, size]`` uint8 tensor of the kept clips.
        labels: ``[N]`` int64 tensor of class ids in ``[0, num_classes)``.

    ``dataset[i]`` returns ``(clip, label)`` with ``clip`` a ``[frames, 3, size, size]`` uint8 tensor.
    """

    def __init__(
        self,
        num_classes: int = 60,
        num_videos: int = 2000,
        frames: int = 16,
        size: int = 64,
        seed: int = 0,
        split: str = "all",
        classes: list[int] | None = None,
        test_fraction: float = 0.2,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        variant: str = "classic",
    ) -> None:
        if not 1 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}] (15 motions x 4 shapes), got {num_classes}")
        if split not in ("all", "train", "test"):
            raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
        if frames < 2 or size < 16:
            raise ValueError(f"need frames >= 2 and size >= 16, got frames={frames}, size={size}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.num_classes, self.frames, self.size, self.seed, self.split = num_classes, frames, size, seed, split
        self.variant = variant
        self.transform = transform
        index = np.arange(num_videos)
        labels = index % num_classes
        period = max(2, round(1 / test_fraction))
        is_test = (index // num_classes) % period == period - 1
        keep = np.ones(num_videos, dtype=bool) if split == "all" else (is_test if split == "test" else ~is_test)
        if classes is not None:
            keep &= np.isin(labels, np.asarray(classes))
        self.indices = index[keep]
        self.labels = torch.from_numpy(labels[keep].astype(np.int64))
        self.clips = torch.from_numpy(generate_clips(labels[keep], self.indices, frames, size, seed, variant))

    @property
    def class_names(self) -> list[str]:
        """Names of all ``num_classes`` classes, indexed by label."""
        return [class_name(c) for c in range(self.num_classes)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        clip = self.clips[i]
        if self.transform is not None:
            clip = self.transform(clip)
        return clip, int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"SyntheticActions(split={self.split!r}, clips={len(self)}, classes={self.num_classes}, "
            f"frames={self.frames}, size={self.size}, seed={self.seed}"
            + (f", variant={self.variant!r})" if self.variant != "classic" else ")")
        )
