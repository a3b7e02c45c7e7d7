"""Ordering CNNs: one shared trunk per element, a per-element projection, a fusion head per task.

The network sees ``n`` elements (frames or tiles) in some order and predicts which permutation of the bank produced
that order. The trunk is applied to each element independently, so the per-element features of a clip are computed
once and every permutation is a cheap gather (:meth:`OrderingNet.score_all_permutations`). Its first fusion layer is
linear in the concatenated features, so it splits into per-position projections ``W_i f_j`` that are computed once
for all (position, element) pairs: scoring K permutations then costs ``K * n`` additions of hidden vectors instead
of ``K`` full head passes over ``n * P`` inputs.

Trunks: ``tiny`` (a fast CPU net for tests and the env), ``tiny-wide`` (the same net with twice the channels),
``caffenet`` (AlexNet-style with BatchNorm, the paper's
class of network) and ``resnet18`` (torchvision, random init). Every trunk maps ``[B, 3, H, W]`` float images to
``[B, out_dim]`` features and accepts any input size (adaptive pooling).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

TRUNKS = ("tiny", "tiny-wide", "caffenet", "resnet18")


class Trunk(nn.Module):
    """A feature extractor ``[B, 3, H, W] -> [B, out_dim]`` with its name, for checkpoints."""

    def __init__(self, name: str, body: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.name, self.body, self.out_dim = name, body, out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images).flatten(1)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def build_trunk(name: str) -> Trunk:
    """Build a randomly initialised trunk by name (one of :data:`TRUNKS`)."""
    if name in ("tiny", "tiny-wide"):
        w = 2 if name == "tiny-wide" else 1  # channel multiplier
        body = nn.Sequential(
            *_conv_bn(3, 32 * w, 3, 2, 1), *_conv_bn(32 * w, 64 * w, 3, 2, 1), *_conv_bn(64 * w, 64 * w, 3, 2, 1),
            nn.AdaptiveAvgPool2d(3),  # keep a coarse layout: ordering needs where things are, not only what
        )  # fmt: skip
        return Trunk(name, body, 64 * w * 3 * 3)
    if name == "caffenet":
        body = nn.Sequential(
            *_conv_bn(3, 96, 11, 4, 2), nn.MaxPool2d(3, 2),
            *_conv_bn(96, 256, 5, 1, 2), nn.MaxPool2d(3, 2),
            *_conv_bn(256, 384, 3, 1, 1), *_conv_bn(384, 384, 3, 1, 1), *_conv_bn(384, 256, 3, 1, 1),
            nn.AdaptiveMaxPool2d(3),
        )  # fmt: skip
        return Trunk(name, body, 256 * 3 * 3)
    if name == "resnet18":
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        net.fc = nn.Identity()
        return Trunk(name, net, 512)
    raise ValueError(f"unknown trunk {name!r}; choose one of {', '.join(TRUNKS)}")


def head_inputs(features: torch.Tensor, centre: bool, uncentred: bool) -> torch.Tensor:
    """What a fusion head sees of ``[..., n, P]`` element features: centred over the ``n`` elements when ``centre``,
    with the uncentred features concatenated after them when ``uncentred`` too (``[..., n, 2P]``)."""
    if not centre:
        return features
    centred = features - features.mean(dim=-2, keepdim=True)
    return torch.cat([centred, features], dim=-1) if uncentred else centred


class FusionHead(nn.Module):
    """Classifies the permutation from ``n`` element features given in presentation order.

    Layer 1 is ``Linear(n * P, hidden)`` stored as ``n`` per-position blocks so that it can be applied to every
    (position, element) pair once; the rest is ``ReLU -> Dropout -> Linear(hidden, K)``.
    """

    def __init__(self, num_elements: int, feature_dim: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.num_elements, self.feature_dim = num_elements, feature_dim
        self.fuse = nn.Linear(num_elements * feature_dim, hidden)
        self.classify = nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, ordered: torch.Tensor) -> torch.Tensor:
        """``[B, n, P]`` features in presentation order -> ``[B, K]`` logits."""
        return self.classify(self.fuse(ordered.flatten(1)))

    def position_projections(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, n, P]`` -> ``[B, n_pos, n_elem, hidden]``: position block ``i`` of layer 1 applied to element ``j``."""
        blocks = self.fuse.weight.view(-1, self.num_elements, self.feature_dim)  # [hidden, n_pos, P]
        return torch.einsum("bjp,hip->bijh", features, blocks)

    def score_permutations(self, features: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
        """Logits for presenting the elements in every order of ``perms``.

        Args:
            features: ``[B, n, P]`` element features in natural order.
            perms: ``[Kp, n]`` int64; row ``k`` shows element ``perms[k, i]`` at position ``i``.

        Returns:
            ``[B, Kp, K]`` logits, equal to ``self(features[:, perms[k]])`` for every ``k``.
        """
        proj = self.position_projections(features)  # [B, n, n, hidden]
        positions = torch.arange(self.num_elements, device=perms.device)
        picked = proj[:, positions[None, :], perms]  # [B, Kp, n, hidden]
        return self.classify(picked.sum(dim=2) + self.fuse.bias)


class OrderingNet(nn.Module):
    """Shared trunk + per-element projection + one fusion head per ordering task.

    Args:
        trunk: the shared feature extractor.
        heads: task name -> ``(num_elements, num_classes)`` of that task's bank.
        projection_dim: per-element feature size P after the projection (the jigsaw net's fc6).
        hidden: width of each fusion head's hidden layer (fc7).
        dropout: dropout before each head's classifier.
        centre: subtract each sample's mean element feature (see :meth:`element_features`).
        uncentred: with ``centre``, also give the heads each element's uncentred features, concatenated after the
            centred ones (the heads then see ``2 * projection_dim`` features per element).
    """

    def __init__(
        self,
        trunk: Trunk,
        heads: dict[str, tuple[int, int]],
        projection_dim: int = 128,
        hidden: int = 256,
        dropout: float = 0.0,
        centre: bool = True,
        uncentred: bool = False,
    ) -> None:
        super().__init__()
        if uncentred and not centre:
            raise ValueError("uncentred=True adds uncentred features to centred ones: it needs centre=True "
                             "(without centring the heads already see only uncentred features)")  # fmt: skip
        self.trunk = trunk
        self.centre, self.uncentred = centre, uncentred
        self.project = nn.Sequential(nn.Linear(trunk.out_dim, projection_dim), nn.ReLU(inplace=True))
        feature_dim = projection_dim * (2 if uncentred else 1)
        self.heads = nn.ModuleDict(
            {task: FusionHead(n, feature_dim, hidden, k, dropout) for task, (n, k) in heads.items()}
        )

    def element_features(self, elements: torch.Tensor) -> torch.Tensor:
        """``[B, n, 3, H, W]`` -> ``[B, n, P]``: trunk and projection on each element independently, then centred
        over the sample's elements. Centring removes what the elements share (background, object appearance) so
        the head sees how they differ; it is order-independent, so every permutation still is a gather. Without
        ``centre`` the features are passed as they are; with ``uncentred`` both, concatenated (``[B, n, 2P]``)."""
        b, n = elements.shape[:2]
        features = self.project(self.trunk(elements.flatten(0, 1))).view(b, n, -1)
        return head_inputs(features, self.centre, self.uncentred)

    def forward(self, elements: torch.Tensor, task: str) -> torch.Tensor:
        """Naive path: ``[B, n, 3, H, W]`` elements already in presentation order -> ``[B, K]`` logits."""
        return self.heads[task](self.element_features(elements))

    def classify_ordered(self, features: torch.Tensor, perms: torch.Tensor, task: str) -> torch.Tensor:
        """Logits for one order per sample: ``features [B, n, P]`` (natural order), ``perms [B, n]`` -> ``[B, K]``."""
        ordered = torch.gather(features, 1, perms[:, :, None].expand(-1, -1, features.shape[2]))
        return self.heads[task](ordered)

    def score_all_permutations(self, elements: torch.Tensor, perms: torch.Tensor, task: str) -> torch.Tensor:
        """Shared-trunk path: ``[B, n, 3, H, W]`` natural-order elements -> ``[B, Kp, K]`` logits for every order."""
        return self.heads[task].score_permutations(self.element_features(elements), perms)


def save_trunk(trunk: Trunk, path: str | Path, **extra: object) -> None:
    """Write a trunk checkpoint ``{"trunk_name", "state_dict", **extra}`` that :func:`load_trunk` reads."""
    torch.save({"trunk_name": trunk.name, "state_dict": trunk.state_dict(), **extra}, path)


def load_trunk(path: str | Path, map_location: str | torch.device = "cpu") -> Trunk:
    """Rebuild a trunk from a checkpoint written by :func:`save_trunk` (e.g. by ``experiments/ssl_ucf101.py``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trunk checkpoint at {path}; run experiments/ssl_ucf101.py to write one")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        trunk = build_trunk(state["trunk_name"])
        trunk.load_state_dict(state["state_dict"])
    except (EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, (EOFError, pickle.UnpicklingError)):  # torch's text for these is advice on weights_only
            reason = f"torch.load cannot read it as tensors ({type(err).__name__}); a run's checkpoint.pth is not one"
        else:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} is not a trunk checkpoint written by save_trunk (e.g. experiments/ssl_ucf101.py's "
                         f"trunk.pth): {reason}") from None  # fmt: skip
    return trunk


def per_permutation_statistics(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Summarise ``[B, K, K]`` all-permutation logits (row k = samples shown in order k, target k).

    Returns:
        ``loss`` ``[K]`` mean cross-entropy per permutation, ``accuracy`` ``[K]``, ``confusion`` ``[K, K]`` mean
        softmax (row = true permutation).
    """
    b, k, _ = logits.shape
    targets = torch.arange(k, device=logits.device).expand(b, k)
    loss = F.cross_entropy(logits.reshape(b * k, k), targets.reshape(-1), reduction="none").view(b, k).mean(0)
    accuracy = (logits.argmax(-1) == targets).float().mean(0)
    confusion = logits.softmax(-1).mean(0)
    return {"loss": loss, "accuracy": accuracy, "confusion": confusion}
