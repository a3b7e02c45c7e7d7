"""Downstream evaluation of a pretrained trunk on action recognition: linear probe and nearest-neighbour retrieval.

A clip's feature is the **concatenation, in temporal order, of the trunk features of ``num_frames`` evenly spaced
frames**. Averaging the frames would erase the direction of motion, and SyntheticActions classes are motion x shape
(``move_E`` and ``move_W`` differ only in the order of the same frames), so the order is kept.

* :func:`clip_features` — ``[N, T, 3, H, W]`` uint8 clips -> ``[N, num_frames * trunk.out_dim]`` features.
* :func:`eval_windows`, :func:`retrieval_windows` and :func:`video_features` — evenly spaced windows of a clip, and a
  video's feature as the mean of their clip features (VCOP's retrieval protocol averages 10 clips per video).
* :func:`linear_probe_scores` and :func:`linear_probe_accuracy` — a linear classifier on standardised features of the
  frozen trunk (softmax, or one logistic regression per class for multi-label targets), trained with a fixed seed;
  test logits and top-1 accuracy.
* :func:`select_weight_decay` — the probe's weight decay chosen on a validation part of the training samples.
* :func:`retrieval_topk` — test clips query train clips (VCOP protocol), cosine similarity, top-k hit rate.
* :func:`load_probe_data` and :func:`evaluate_trunk` — the SyntheticActions split and everything above in one call.

Everything is deterministic under its arguments on the CPU and takes seconds on the default sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from permgym.distributed import World, gather_shards
from permgym.tasks import _MEAN, _STD

#: Retrieval cut-offs reported by :func:`evaluate_trunk` (the VCOP video-retrieval table).
RETRIEVAL_KS = (1, 5, 10, 20, 50)


@torch.no_grad()
def clip_features(
    trunk: nn.Module,
    clips: torch.Tensor,
    num_frames: int = 4,
    image_size: int = 32,
    batch_size: int = 256,
    crop_fraction: float = 0.85,
) -> torch.Tensor:
    """Concatenated per-frame trunk features of each clip.

    Frames are centre-cropped to ``crop_fraction`` of the shorter side and resized to ``image_size`` (the view the
    temporal ordering task trains on: :class:`permgym.tasks.TemporalTask` crops 85 % and resizes to 32 px), scaled
    to [0, 1] and normalised as ``(x - 0.45) / 0.225``. The trunk runs in eval mode (BatchNorm uses its running
    statistics) and is put back in its previous mode afterwards.

    Args:
        trunk: a feature extractor ``[B, 3, h, w] -> [B, D]`` (e.g. ``env.trainer.model.trunk``).
        clips: ``[N, T, 3, H, W]`` uint8.
        num_frames: frames taken per clip, evenly spaced from the first to the last (``T >= num_frames``).
        image_size: side of the square frame fed to the trunk.
        batch_size: frames per trunk pass (memory only; results do not depend on it).
        crop_fraction: side of the centre crop relative to the shorter frame side.

    Returns:
        ``[N, num_frames * D]`` float32 on the CPU; columns ``[i * D, (i + 1) * D)`` are frame ``i``'s features.
    """
    if clips.ndim != 5 or clips.dtype != torch.uint8:
        raise ValueError(f"clips must be [N, T, 3, H, W] uint8, got {tuple(clips.shape)} {clips.dtype}")
    n, t, _, h, w = clips.shape
    if not 1 <= num_frames <= t:
        raise ValueError(f"num_frames must be in [1, {t}] for clips of {t} frames, got {num_frames}")
    frame_index = torch.linspace(0, t - 1, num_frames).round().long()
    side = max(1, int(min(h, w) * crop_fraction))
    top, left = (h - side) // 2, (w - side) // 2
    frames = clips[:, frame_index, :, top : top + side, left : left + side].flatten(0, 1)  # [N * n, 3, s, s]
    device = next(trunk.parameters()).device
    was_training = trunk.training
    trunk.eval()
    try:
        chunks = []
        for start in range(0, len(frames), batch_size):
            x = frames[start : start + batch_size]
            if side != image_size:
                x = F.interpolate(x, size=image_size, mode="bilinear", antialias=True)
            x = x.to(device=device, dtype=torch.float32).div_(255).sub_(_MEAN).div_(_STD)
            chunks.append(trunk(x).float().cpu())
    finally:
        trunk.train(was_training)
    return torch.cat(chunks).view(n, -1)


def eval_windows(clip_frames: int, num_frames: int, stride: int, count: int) -> torch.Tensor:
    """Frame indices ``[count, num_frames]`` of windows with evenly spaced centres (VCOP's test sampling).

    A window spans ``(num_frames - 1) * stride + 1`` frames; a stride too long for the clip is shortened to fit.
    """
    stride = max(1, min(stride, (clip_frames - 1) // max(1, num_frames - 1)))
    span = (num_frames - 1) * stride
    starts = torch.linspace(0, clip_frames - 1 - span, count).round().long()
    return starts[:, None] + stride * torch.arange(num_frames)


def retrieval_windows(clip_frames: int, num_frames: int, stride: int, count: int) -> torch.Tensor:
    """Frame indices ``[W, num_frames]`` of the windows whose clip features :func:`video_features` averages.

    * ``count == 1``: one view of ``num_frames`` frames evenly spaced from the first frame to the last (the frames
      :func:`clip_features` takes of a whole clip), so one window reproduces the one-clip-per-video features.
    * ``count >= 2``: windows of ``num_frames`` frames ``stride`` apart (shortened to fit the clip, as
      :func:`eval_windows` does), whose starts are evenly spaced from the first to the last
      possible one (VCOP: 10 clips per video). Starts that coincide after rounding are kept once, so a clip with
      fewer than ``count`` possible starts gives one window per distinct start: ``W = min(count, clip_frames - span)``
      with ``span = (num_frames - 1) * stride`` (e.g. 16 frames, 4 per window, stride 3: 7 windows for ``count=10``).

    Raises:
        ValueError: ``count < 1``, or the clip has fewer than ``num_frames`` frames.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 1 <= num_frames <= clip_frames:
        raise ValueError(
            f"num_frames must be in [1, {clip_frames}] for clips of {clip_frames} frames, got {num_frames}"
        )
    if count == 1:
        return torch.linspace(0, clip_frames - 1, num_frames).round().long()[None]
    return eval_windows(clip_frames, num_frames, stride, count).unique(dim=0)  # sorted by start, distinct


@torch.no_grad()
def video_features(
    trunk: nn.Module,
    clips: torch.Tensor,
    windows: torch.Tensor,
    image_size: int = 32,
    crop_fraction: float = 0.85,
    frames_per_pass: int = 1024,
) -> torch.Tensor:
    """Per-video features: the :func:`clip_features` of each window, averaged over the windows (not normalised).

    Args:
        trunk: a feature extractor ``[B, 3, h, w] -> [B, D]``.
        clips: ``[N, T, 3, H, W]`` uint8 videos (may be memory-mapped: read a few videos at a time).
        windows: ``[W, n]`` frame indices per window, e.g. from :func:`retrieval_windows`.
        image_size, crop_fraction: as in :func:`clip_features`.
        frames_per_pass: frames gathered at once (memory only; results do not depend on it).

    Returns:
        ``[N, n * D]`` float32 on the CPU: row ``i`` is the mean over the windows of video ``i``'s concatenated
        per-frame features. With one window it equals ``clip_features`` of the clips cut to that window.
    """
    if windows.ndim != 2 or len(windows) < 1:
        raise ValueError(f"windows must be [W >= 1, n] frame indices, got shape {tuple(windows.shape)}")
    count, n = windows.shape
    videos_per_pass = max(1, frames_per_pass // (count * n))
    parts = []
    for start in range(0, len(clips), videos_per_pass):
        videos = clips[start : start + videos_per_pass]
        views = videos[:, windows].flatten(0, 1)  # [V * W, n, 3, H, W]
        features = clip_features(trunk, views, n, image_size, crop_fraction=crop_fraction)
        parts.append(features.view(len(videos), count, -1).mean(1))
    if not parts:
        return torch.zeros(0, n * trunk.out_dim)
    return torch.cat(parts)


def standardize(reference: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Centre and scale every column by the mean and standard deviation of ``reference`` (constant columns keep
    unit scale). Returns ``(reference, *others)`` standardised, all float32."""
    mean = reference.mean(0, keepdim=True)
    std = reference.std(0, keepdim=True).nan_to_num(1.0).clamp_min(1e-6)
    return tuple(((x - mean) / std).float() for x in (reference, *others))


def linear_probe_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int | None = None,
    seed: int = 0,
    epochs: int = 50,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    batch_size: int = 256,
) -> torch.Tensor:
    """Test logits of a linear classifier trained on frozen features.

    Features are standardised with the training set's statistics; the layer is trained with AdamW on minibatches
    whose order and initial weights come from ``torch.Generator().manual_seed(seed)`` (torch's global RNG is never
    touched), so equal arguments give equal logits.

    Args:
        train_x, test_x: ``[N, D]`` and ``[M, D]`` features.
        train_y: ``[N]`` int64 class ids (multinomial logistic regression), or ``[N, C]`` int8 multi-label targets
            in VOC's coding (``1`` present, ``-1`` absent, ``0`` difficult): one logistic regression per class,
            binary cross-entropy averaged over the non-difficult entries.
        num_classes: C for class ids (default ``train_y.max() + 1``); ignored for multi-label targets.
        seed: seeds initialisation and minibatch order.
        epochs: passes over the training set.
        lr, weight_decay: AdamW step size and decoupled L2 penalty.
        batch_size: training minibatch size.

    Returns:
        ``[M, C]`` float32 logits.
    """
    if len(train_x) != len(train_y):
        raise ValueError(f"features and labels differ in length: {len(train_x)} vs {len(train_y)}")
    multilabel = train_y.ndim == 2
    train_x, test_x = standardize(train_x, test_x)
    if multilabel:
        num_classes = train_y.shape[1]
    elif num_classes is None:
        num_classes = int(train_y.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / train_x.shape[1] ** 0.5
    weight = ((torch.rand(num_classes, train_x.shape[1], generator=generator) * 2 - 1) * bound).requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(epochs):
            for index in torch.randperm(len(train_x), generator=generator).split(batch_size):
                logits = F.linear(train_x[index], weight, bias)
                if multilabel:
                    target = train_y[index]
                    counted = (target != 0).float()
                    losses = F.binary_cross_entropy_with_logits(logits, (target > 0).float(), reduction="none")
                    loss = (losses * counted).sum() / counted.sum().clamp_min(1)
                else:
                    loss = F.cross_entropy(logits, train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    with torch.no_grad():
        return F.linear(test_x, weight, bias)


def linear_probe_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    seed: int = 0,
    epochs: int = 50,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    batch_size: int = 256,
) -> float:
    """Top-1 test accuracy of a linear classifier on frozen features (multinomial logistic regression, trained by
    :func:`linear_probe_scores`).

    Args:
        train_x, test_x: ``[N, D]`` and ``[M, D]`` features.
        train_y, test_y: ``[N]`` and ``[M]`` int64 labels; the number of classes is ``max(train_y, test_y) + 1``.
        seed, epochs, lr, weight_decay, batch_size: as in :func:`linear_probe_scores`.

    Returns:
        The fraction of test samples whose arg-max class is their label.
    """
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError(
            f"features and labels differ in length: train {len(train_x)} vs {len(train_y)}, "
            f"test {len(test_x)} vs {len(test_y)}"
        )
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    logits = linear_probe_scores(train_x, train_y, test_x, num_classes, seed, epochs, lr, weight_decay, batch_size)
    return float((logits.argmax(1) == test_y).float().mean())


def select_weight_decay(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    candidates: tuple[float, ...],
    seed: int = 0,
    epochs: int = 50,
    val_every: int = 5,
) -> float:
    """The weight decay of ``candidates`` whose linear probe, trained on the other training samples, has the best
    top-1 on every ``val_every``-th training sample (only training data is used; ties go to the earlier candidate).
    A single candidate is returned as it is, without training.

    Args:
        train_x, train_y: ``[N, D]`` features and ``[N]`` int64 labels of the training set.
        candidates: weight decays to try (:func:`linear_probe_accuracy`'s ``weight_decay``).
        seed, epochs: as in :func:`linear_probe_accuracy`.
        val_every: the validation part is samples ``val_every - 1, 2 * val_every - 1, ...``.
    """
    if not candidates:
        raise ValueError("candidates is empty; give at least one weight decay, e.g. (1e-3,)")
    if len(candidates) == 1:
        return candidates[0]
    val = torch.arange(len(train_x)) % val_every == val_every - 1
    if not val.any() or val.all():
        raise ValueError(f"val_every={val_every} leaves no training or no validation part of {len(train_x)} samples")
    scores = [linear_probe_accuracy(train_x[~val], train_y[~val], train_x[val], train_y[val], seed=seed,
                                    epochs=epochs, weight_decay=wd) for wd in candidates]  # fmt: skip
    return candidates[scores.index(max(scores))]


def retrieval_topk(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    gallery_x: torch.Tensor,
    gallery_y: torch.Tensor,
    ks: tuple[int, ...] = RETRIEVAL_KS,
) -> dict[str, float]:
    """Nearest-neighbour retrieval by cosine similarity: the share of queries with a same-class gallery item among
    their ``k`` most similar gallery items (the video-retrieval protocol of VCOP: test clips query train clips).

    The features are used as given (standardise them first with :func:`standardize` if their columns are not
    centred: raw post-ReLU features all point into one orthant). Ties in similarity go to the lower gallery index.

    Args:
        query_x, gallery_x: ``[Q, D]`` and ``[G, D]`` features.
        query_y, gallery_y: ``[Q]`` and ``[G]`` labels.
        ks: cut-offs; each must be in ``[1, G]``.

    Returns:
        ``{"top1": ..., "top5": ...}``, one float in [0, 1] per ``k``.
    """
    if any(not 1 <= k <= len(gallery_x) for k in ks):
        raise ValueError(f"every k must be in [1, {len(gallery_x)}] (the gallery size), got {ks}")
    similarity = F.normalize(query_x.double(), dim=1) @ F.normalize(gallery_x.double(), dim=1).T
    # a stable sort keeps equal similarities in gallery order, so ties are resolved the same way every time
    nearest = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, : max(ks)]
    hit = gallery_y[nearest] == query_y[:, None]  # [Q, max k]
    return {f"top{k}": float(hit[:, :k].any(1).double().mean()) for k in ks}


@dataclass(frozen=True)
class ProbeData:
    """The clips of a downstream action-recognition split: ``train_clips [N, T, 3, H, W]`` uint8 (possibly
    memory-mapped), ``train_labels [N]`` int64, and the same for ``test``; ``classes`` names the labels and
    ``skipped`` counts the undecodable or missing videos left out, per part (``{"train": n, "test": m}``)."""

    train_clips: torch.Tensor
    train_labels: torch.Tensor
    test_clips: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


@lru_cache(maxsize=2)
def load_probe_data(
    num_classes: int = 60,
    num_videos: int = 1800,
    frames: int = 16,
    size: int = 48,
    seed: int = 0,
    variant: str = "classic",
) -> ProbeData:
    """SyntheticActions train/test split for downstream evaluation (memoised per process).

    With the arguments of an env's data (``synthetic_classes``, ``clip_frames``, ``frame_size``, ``data_seed``,
    ``synthetic_variant``) and ``num_videos`` at least its ``synthetic_videos``, the split extends the env's: the
    env trains and validates on clips of the training split only, so the test clips here were never seen by the CNN
    or by a sampler.
    """
    from permgym.data.synthetic import SyntheticActions

    common = {"num_classes": num_classes, "num_videos": num_videos, "frames": frames, "size": size, "seed": seed,
              "variant": variant}  # fmt: skip
    train, test = SyntheticActions(split="train", **common), SyntheticActions(split="test", **common)
    return ProbeData(train.clips, train.labels, test.clips, test.labels, list(train.class_names))


def centre_frames(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Subtract from each frame's block of a :func:`clip_features` row the mean over the clip's frames.

    This reads the features as the ordering model's head sees them (``centre_elements``: what the frames share is
    removed, how they differ is kept). ``[N, num_frames * D] -> [N, num_frames * D]``.
    """
    if features.ndim != 2 or features.shape[1] % num_frames:
        raise ValueError(
            f"features must be [N, num_frames * D] with num_frames={num_frames}, got {tuple(features.shape)}"
        )
    per_frame = features.view(len(features), num_frames, -1)
    return (per_frame - per_frame.mean(1, keepdim=True)).flatten(1)


def evaluate_trunk(
    trunk: nn.Module,
    data: ProbeData,
    num_frames: int = 4,
    image_size: int = 32,
    seed: int = 0,
    epochs: int = 50,
    ks: tuple[int, ...] = RETRIEVAL_KS,
    centred: bool = False,
    weight_decays: tuple[float, ...] = (1e-3,),
) -> dict[str, float]:
    """Linear-probe accuracy and retrieval top-k of a frozen trunk on ``data``.

    ``num_frames`` and ``image_size`` go to :func:`clip_features`, ``seed`` and ``epochs`` to
    :func:`linear_probe_accuracy`, ``ks`` to :func:`retrieval_topk`; ``centred`` applies :func:`centre_frames` to
    the clip features first. With more than one of ``weight_decays``, the probe's weight decay is chosen on the
    training clips by :func:`select_weight_decay` and returned as ``"probe_weight_decay"``.

    Returns:
        ``{"probe_top1": ..., "retrieval_top1": ..., "retrieval_top5": ...}`` (retrieval on features standardised
        by the training clips' statistics, test clips querying training clips).
    """
    train_x = clip_features(trunk, data.train_clips, num_frames, image_size)
    test_x = clip_features(trunk, data.test_clips, num_frames, image_size)
    if centred:
        train_x, test_x = centre_frames(train_x, num_frames), centre_frames(test_x, num_frames)
    decay = select_weight_decay(train_x, data.train_labels, weight_decays, seed, epochs)
    metrics = {"probe_weight_decay": decay} if len(weight_decays) > 1 else {}
    metrics["probe_top1"] = linear_probe_accuracy(train_x, data.train_labels, test_x, data.test_labels, seed=seed,
                                                  epochs=epochs, weight_decay=decay)  # fmt: skip
    gallery, query = standardize(train_x, test_x)
    retrieval = retrieval_topk(query, data.test_labels, gallery, data.train_labels, ks=ks)
    metrics.update({f"retrieval_{key}": value for key, value in retrieval.items()})
    return metrics


def vcop_retrieval(
    trunk: nn.Module,
    data: ProbeData,
    num_frames: int,
    stride: int,
    image_size: int,
    crop_fraction: float,
    clips: int = 10,
    world: World | None = None,
) -> dict[str, float]:
    """VCOP retrieval with a (pretrained, not fine-tuned) trunk: test videos query training videos.

    A video's feature is the mean of the clip features of ``clips`` windows (:func:`retrieval_windows`: evenly
    spaced starts, ``num_frames`` frames ``stride`` apart, coinciding starts kept once; ``clips=1``: one view over the
    whole clip). The means are standardised by the training videos' statistics; :func:`retrieval_topk` compares them
    by cosine similarity. Each rank computes its share of the videos (memory-mapped caches are read a few videos at
    a time), then the shares are gathered.

    Args:
        trunk: the frame encoder.
        data: the labelled train (gallery) and test (query) clips.
        num_frames, stride, image_size, crop_fraction: the fine-tuning test windows' frames, frame gap, input size
            and centre-crop fraction.
        clips: windows averaged per video.
        world: the run's processes (default: this one only).

    Returns:
        ``retrieval/top{k}`` for each k of ``RETRIEVAL_KS`` up to the number of training videos, and
        ``retrieval/windows``, the number of distinct windows averaged per video.
    """
    world = world or World()
    windows = retrieval_windows(data.train_clips.shape[1], num_frames, stride, clips)

    def features(videos: torch.Tensor) -> torch.Tensor:
        mine = world.shard(len(videos))
        local = video_features(trunk, videos[mine], windows, image_size, crop_fraction=crop_fraction)
        return gather_shards(local.to(world.device), world, len(videos)).cpu()

    gallery, query = standardize(features(data.train_clips), features(data.test_clips))
    ks = tuple(k for k in RETRIEVAL_KS if k <= len(gallery))
    topk = retrieval_topk(query, data.test_labels, gallery, data.train_labels, ks=ks)
    return {**{f"retrieval/{name}": value for name, value in topk.items()}, "retrieval/windows": float(len(windows))}
