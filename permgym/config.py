"""The one configuration dataclass of PermSampling environments and of ordering pretraining, plus named presets."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from permgym.permutations import MAX_ENUMERATED_N, num_distinct_permutations

TaskName = Literal["temporal", "spatial", "joint"]
ActionMode = Literal["distribution", "per_sample", "discrete"]
RewardName = Literal["val_loss_delta", "val_acc_delta", "uniform_relative"]
DatasetName = Literal["synthetic", "cache"]

TASKS = ("temporal", "spatial", "joint")
ACTION_MODES = ("distribution", "per_sample", "discrete")
REWARDS = ("val_loss_delta", "val_acc_delta", "uniform_relative")
DATASETS = ("synthetic", "cache")
#: SyntheticActions scene variants (see :mod:`permgym.data.synthetic`).
SYNTHETIC_VARIANTS = ("classic", "decoys", "one-decoy", "faint-decoys", "occluder", "small-occluder", "flicker")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class PermSamplingConfig:
    """Every option of a PermSampling environment (and of the ordering trainer it wraps).

    Data:
        dataset: ``"synthetic"`` (embedded SyntheticActions) or ``"cache"`` (a frame cache built by
            ``python -m permgym.data.prepare``; see ``cache_path``).
        cache_path: folder of the frame cache when ``dataset="cache"``; ``None`` reads ``$PERMGYM_UCF101_CACHE``.
        synthetic_classes, synthetic_videos, clip_frames, frame_size, data_seed: SyntheticActions parameters
            (``data_seed`` fixes the pixels; the env seed fixes CNN init, data order and augmentation).
        synthetic_variant: SyntheticActions scene: ``"classic"``, ``"decoys"`` (two decoy objects of unseen
            shapes jumping to a new place every frame), ``"one-decoy"`` (one such decoy), ``"faint-decoys"`` (two at
            half opacity), ``"occluder"`` (a bar painted over the object at a new place every frame),
            ``"small-occluder"`` (a shorter bar) or ``"flicker"`` (the background redrawn every frame); see
            :mod:`permgym.data.synthetic`.
        val_fraction: share of the training clips held out for the validation batch (never the test split).

    Task:
        task: ``"temporal"`` (order frames), ``"spatial"`` (order jigsaw tiles) or ``"joint"`` (both, one trunk).
        num_frames: frames per temporal sample (n); the temporal bank has ``temporal_bank_size`` of the n! orders.
        temporal_bank_size: K of the temporal bank; ``None`` = all distinct permutations.
        identify_reverse: a temporal order and its reverse are one class (OPN).
        min_stride: smallest gap between the chosen frames.
        motion_candidates: pick the highest-motion window among this many (1 = random window).
        grid: jigsaw grid side g (g*g tiles); ``spatial_bank_size`` is K of the spatial bank (``None`` = all).
        element_size: side in pixels of each frame element fed to the trunk.
        tile_size: side in pixels each jigsaw tile is resized to (``None`` keeps the cropped size).
        joint_temporal_fraction: share of a joint batch used for the temporal task.
        bank_seed: seed of the max-Hamming bank selection.

    Network and optimisation:
        trunk: ``"tiny"``, ``"tiny-wide"`` (twice the channels), ``"caffenet"`` or ``"resnet18"``; projection_dim,
            hidden: element feature size and fusion width.
        centre_elements: subtract each sample's mean element feature before the fusion head (the head then sees
            only how the elements differ).
        uncentred_features: with ``centre_elements``, the head also sees each element's uncentred features
            (concatenated after the centred ones), so what the elements share can enter the ordering decision.
        optimizer: ``"sgd"`` (momentum) or ``"adam"``; lr, momentum, weight_decay as usual.
        batch_size: clips per SGD update; val_batch_size: clips in the fixed validation batch.
        updates_per_step: M, SGD updates per env step; steps_per_episode: T, env steps per episode.
        warm_start: optional trainer checkpoint loaded at reset (covers later training stages).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        torch_threads: torch intra-op threads of the env's own compute (set for each ``reset``/``step``, then the
            process's count is restored; see :mod:`permgym.threads`). The default 1 keeps N envs, vector-env
            workers and other experiments on one machine from oversubscribing it: run at most C single-threaded
            envs (or batched-env processes) at once on C cores. ``None`` uses the process's setting as it is.

    Agent interface:
        action_mode: ``"distribution"`` (Box(-1, 1, (K,)) -> softmax(action / temperature) over the bank, each
            sample's permutation drawn from it), ``"per_sample"`` (MultiDiscrete, every sample's permutation) or
            ``"discrete"`` (Discrete(G): a difficulty group of the bank, see ``discrete_groups``).
        temperature: softmax temperature of the distribution mode; at 1/3 an action range of [-1, 1] spans a
            probability ratio of e^6 ~ 400 between permutations.
        discrete_groups: G, number of difficulty groups (bank split by Hamming distance from the identity).
        reward: ``"val_loss_delta"`` (drop of held-out loss / log K), ``"val_acc_delta"`` (rise of held-out
            accuracy) or ``"uniform_relative"`` (val_loss_delta minus that of a uniform-sampling update from the
            same weights on the same images).
        reward_scale: multiplies the reward before clipping to [-reward_clip, reward_clip].
        crash_penalty: reward when training diverges (NaN/inf loss or weights); the episode is truncated.
        ema_decay: decay of the moving averages in the observation (train loss, selection frequency).
    """

    dataset: DatasetName = "synthetic"
    cache_path: str | None = None
    synthetic_classes: int = 60
    synthetic_videos: int = 600
    clip_frames: int = 16
    frame_size: int = 48
    data_seed: int = 0
    synthetic_variant: str = "classic"
    val_fraction: float = 0.2

    task: TaskName = "temporal"
    num_frames: int = 4
    temporal_bank_size: int | None = None
    identify_reverse: bool = False
    min_stride: int = 2
    motion_candidates: int = 1
    grid: int = 2
    spatial_bank_size: int | None = None
    element_size: int = 32
    tile_size: int | None = None
    joint_temporal_fraction: float = 0.5
    bank_seed: int = 0

    trunk: str = "tiny"
    projection_dim: int = 64
    hidden: int = 128
    centre_elements: bool = True
    uncentred_features: bool = False
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 32
    val_batch_size: int = 32
    updates_per_step: int = 4
    steps_per_episode: int = 25
    warm_start: str | None = None
    device: str = "cpu"
    torch_threads: int | None = 1

    action_mode: ActionMode = "distribution"
    temperature: float = 1 / 3
    discrete_groups: int = 4
    reward: RewardName = "val_loss_delta"
    reward_scale: float = 10.0
    reward_clip: float = 1.0
    crash_penalty: float = -1.0
    ema_decay: float = 0.9

    def __post_init__(self) -> None:
        _check_types(self)
        _check_ranges(self)
        _check_choice("task", self.task, TASKS)
        _check_choice("action_mode", self.action_mode, ACTION_MODES)
        _check_choice("reward", self.reward, REWARDS)
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("synthetic_variant", self.synthetic_variant, SYNTHETIC_VARIANTS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("batch_size", "val_batch_size", "updates_per_step", "steps_per_episode", "discrete_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.uncentred_features and not self.centre_elements:
            raise ValueError("uncentred_features=True adds uncentred element features to the centred ones: it needs "
                             "centre_elements=True (with centre_elements=False the head already sees them alone)")  # fmt: skip
        if self.task == "joint" and self.batch_size < 2:
            raise ValueError("the joint task splits each batch between two tasks: batch_size must be >= 2")
        if self.temperature <= 0 or not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a positive number, got {self.temperature}")
        if self.uses_temporal:
            _check_bank("temporal", self.num_frames, self.temporal_bank_size, self.identify_reverse)
        if self.uses_spatial:
            _check_bank("spatial", self.grid * self.grid, self.spatial_bank_size, False)

    @property
    def uses_temporal(self) -> bool:
        return self.task in ("temporal", "joint")

    @property
    def uses_spatial(self) -> bool:
        return self.task in ("spatial", "joint")

    @property
    def min_clip_frames(self) -> int:
        """The fewest frames a clip needs: the temporal task's ``num_frames`` at ``min_stride`` (else 1)."""
        return (self.num_frames - 1) * self.min_stride + 1 if self.uses_temporal else 1

    def replace(self, **changes: Any) -> PermSamplingConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved_cache_path(self) -> str:
        """The frame-cache folder, from ``cache_path`` or ``$PERMGYM_UCF101_CACHE``; a clear error if neither."""
        path = self.cache_path or os.environ.get("PERMGYM_UCF101_CACHE")
        if not path:
            raise ValueError(
                "dataset='cache' needs a frame cache: pass cache_path=... or set PERMGYM_UCF101_CACHE. Build one with "
                "`python -m permgym.data.prepare ucf101 --root UCF-101/ --annotations ucfTrainTestlist/ --out DIR`"
            )
        return path


#: Numeric fields and the range each must lie in (the message text); checked after the types.
_RANGES: dict[str, tuple[Any, str]] = {
    **{name: (lambda v: v >= 1, ">= 1") for name in (
        "synthetic_classes", "synthetic_videos", "clip_frames", "frame_size", "min_stride", "motion_candidates",
        "grid", "element_size", "tile_size", "projection_dim", "hidden", "torch_threads")},
    "num_frames": (lambda v: v >= 2, ">= 2"),
    "lr": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "joint_temporal_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "reward_scale": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    "reward_clip": (lambda v: v > 0, "> 0 (inf: no clipping)"),
    "crash_penalty": (math.isfinite, "a finite number"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
}  # fmt: skip


def _check_types(config: PermSamplingConfig) -> None:
    """Every field has its annotated type (ints for int fields, numbers for floats, bools for flags)."""
    for f in fields(config):
        value, kind = getattr(config, f.name), str(f.type)
        if value is None and "None" in kind:
            continue
        if kind.startswith("int"):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind.startswith("float"):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind == "bool":
            ok = isinstance(value, bool)
        else:  # str, a Literal of str, or str | None
            ok = isinstance(value, str)
        if not ok:
            raise TypeError(f"config option {f.name} must be of type {kind}, got {value!r} ({type(value).__name__})")


def _check_ranges(config: PermSamplingConfig) -> None:
    for name, (valid, text) in _RANGES.items():
        value = getattr(config, name)
        if value is not None and not valid(value):
            raise ValueError(f"config option {name} must be {text}, got {value!r}")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")


def _check_bank(task: str, n: int, size: int | None, identify_reverse: bool) -> None:
    available = num_distinct_permutations(n, identify_reverse)
    if n > MAX_ENUMERATED_N and size is None:
        raise ValueError(f"the {task} bank of n={n} elements needs an explicit size (n! = {available} is too many)")
    if size is not None and not 1 <= size <= available:
        raise ValueError(
            f"{task} bank size {size} is impossible: n={n} elements have only {available} distinct permutations"
            f"{' when reverses are identified' if identify_reverse else ''}"
        )


#: Named presets; registration kwargs pick one by name and may override fields.
PRESETS: dict[str, PermSamplingConfig] = {
    # Fast, CPU-deterministic default: tiny trunk, 48 px SyntheticActions clips, 25 steps of 4 updates.
    "tiny": PermSamplingConfig(),
    "tiny-spatial": PermSamplingConfig(task="spatial", grid=2),
    "tiny-joint": PermSamplingConfig(task="joint"),
    # The calibrated embedded regime (BENCHMARKS.md, "Calibration"): an occluder bar over the object in every frame and
    # 50 steps of 4 updates, where every doubling of pretraining up to 4 episodes raises probe and retrieval top-1.
    "tiny-calibrated": PermSamplingConfig(synthetic_variant="occluder", steps_per_episode=50),
    # Full size: UCF101 frame cache, CaffeNet trunk, 3x3 jigsaw with a 100-permutation max-Hamming bank.
    "ucf101": PermSamplingConfig(
        dataset="cache",
        clip_frames=32,
        frame_size=128,
        task="joint",
        grid=3,
        spatial_bank_size=100,
        element_size=96,
        tile_size=64,
        motion_candidates=4,
        trunk="caffenet",
        projection_dim=512,
        hidden=1024,
        optimizer="sgd",
        lr=0.01,
        batch_size=64,
        val_batch_size=64,
        updates_per_step=25,
        steps_per_episode=100,
        device="auto",
    ),
}


def make_config(preset: str | PermSamplingConfig = "tiny", **overrides: Any) -> PermSamplingConfig:
    """A validated config from a preset name (or config) plus field overrides; unknown names list the valid ones."""
    if isinstance(preset, PermSamplingConfig):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    known = {f.name for f in fields(PermSamplingConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown config option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}")
    return base.replace(**overrides)
