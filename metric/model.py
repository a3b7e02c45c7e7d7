"""The divide-and-conquer embedding network: a backbone and an embedding layer split into K learner slices.

The embedding layer maps backbone features ``[B, F]`` to ``d`` dimensions. Its ``d`` output rows are split into
``K`` contiguous slices of ``d // K`` rows, one per learner. Each learner slice is stored as its own
``nn.Linear(F, d // K)``, so a step that trains learner ``k`` gives the other learners no gradient at all and the
optimizer leaves them untouched (no momentum drift, no weight decay), as the method intends. The full embedding is
the concatenation of the K slices, each L2-normalised on its own (one ``view`` + ``normalize``); its norm is
``sqrt(K)``, which ranks neighbours the same as a globally normalised vector.

Backbones: torchvision ``resnet50`` / ``resnet18`` (random or ImageNet weights from the local torch cache) and the
permgym trunks (``tiny``, ``caffenet``, ``resnet18``), optionally loaded from an ``experiments/ssl_ucf101.py``
checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from permgym.models import TRUNKS, Trunk, build_trunk, load_trunk
from permgym.run import BACKUP_SUFFIX

BACKBONES: tuple[str, ...] = ("resnet50", *TRUNKS)
IMAGENET_BACKBONES: tuple[str, ...] = ("resnet50", "resnet18")


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision keeps the ImageNet (IMAGENET1K_V1) weights of backbone ``name`` in the local torch cache."""
    from torchvision.models import get_model_weights

    url = get_model_weights(name)["IMAGENET1K_V1"].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]


def _load_imagenet(net: nn.Module, name: str) -> None:
    path = imagenet_weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet weights for {name} are not in the local torch cache ({path}) and there is no network here. "
            f'On a machine with internet run `python -c "import torchvision; torchvision.models.{name}'
            f"(weights='IMAGENET1K_V1')\"` and copy {path.name} to {path.parent}/, or use --init random."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is replaced by Identity
    net.load_state_dict(state)


def init_argument(value: str) -> str:
    """``--init`` as an argparse ``type``: ``auto``, ``random``, ``imagenet`` or ``ssl:PATH`` (see :func:`resolve_init`)."""
    if value in ("auto", "random", "imagenet") or (value.startswith("ssl:") and len(value) > 4):
        return value
    raise argparse.ArgumentTypeError(f"invalid init {value!r} (choose from auto, random, imagenet, ssl:PATH)")


def resolve_init(init: str, backbone: str | None, runs: Path = Path("runs")) -> tuple[str, str, str]:
    """Resolve ``--init auto`` (the newest ``runs/ssl_ucf101*/trunk.pth`` if it fits ``backbone``, else random; runs
    moved aside by ``--overwrite``, ``*.previous/``, are left out) and
    the backbone name (an ssl checkpoint's trunk, else ``tiny``, unless ``backbone`` is given).

    Returns:
        ``(init, backbone, message)``: the init and backbone to use and a log line saying which and why.
    """
    if init == "auto":
        found = (p for p in runs.glob("ssl_ucf101*/trunk.pth") if not p.parent.name.endswith(BACKUP_SUFFIX))
        checkpoints = sorted(found, key=lambda p: p.stat().st_mtime)  # not a run that --overwrite moved aside
        if not checkpoints:
            message = f"init: random (no {runs}/ssl_ucf101*/trunk.pth; run experiments/ssl_ucf101.py to make one)"
            return "random", backbone or "tiny", message
        latest = checkpoints[-1]
        name = load_trunk(latest).name
        if backbone is not None and name != backbone:
            return (
                "random",
                backbone,
                f"init: random (the last ssl_ucf101 trunk {latest} is {name!r}, not {backbone!r})",
            )
        return f"ssl:{latest}", name, f"init: ssl checkpoint {latest} (the last ssl_ucf101 run, trunk {name!r})"
    if init.startswith("ssl:"):
        name = load_trunk(init[4:]).name
        return init, backbone or name, f"init: {init} (trunk {name!r})"
    return init, backbone or "tiny", f"init: {init}"


def build_backbone(name: str | None = None, init: str = "random") -> Trunk:
    """Build a backbone ``[B, 3, H, W] -> [B, out_dim]``.

    Args:
        name: one of :data:`BACKBONES`; ``None`` means the checkpoint's trunk for ``ssl:`` inits, else ``"tiny"``.
        init: ``"random"``, ``"imagenet"`` (torchvision IMAGENET1K_V1 weights from the local torch cache; only for
            :data:`IMAGENET_BACKBONES`) or ``"ssl:PATH"`` (a permgym trunk checkpoint, e.g. ``runs/ssl_ucf101/
            trunk.pth``).

    Returns:
        A :class:`permgym.models.Trunk` with ``out_dim`` features (2048 for resnet50, 512 for resnet18).

    Raises:
        ValueError: unknown name or init, or a name that does not match the checkpoint's trunk.
        FileNotFoundError: missing checkpoint or ImageNet weights (the message says how to get them).
    """
    if name is not None and name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if init.startswith("ssl:"):
        trunk = load_trunk(init[4:])
        if name is not None and trunk.name != name:
            raise ValueError(f"the checkpoint {init[4:]} holds a {trunk.name!r} trunk, not {name!r}; drop --backbone")
        return trunk
    if init not in ("random", "imagenet"):
        raise ValueError(f"unknown init {init!r}; choose random, imagenet or ssl:PATH")
    name = name or "tiny"
    if init == "imagenet" and name not in IMAGENET_BACKBONES:
        raise ValueError(f"ImageNet weights exist only for {', '.join(IMAGENET_BACKBONES)}, not {name!r}")
    if name == "resnet50":
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        net.fc = nn.Identity()
        trunk = Trunk(name, net, 2048)
    else:
        trunk = build_trunk(name)
    if init == "imagenet":
        _load_imagenet(trunk.body, name)
    return trunk


class EmbeddingNet(nn.Module):
    """Backbone -> ``d``-dim embedding made of ``K`` independently L2-normalised learner slices.

    Args:
        backbone: feature extractor ``[B, 3, H, W] -> [B, backbone.out_dim]``.
        embedding_dim: ``d``, the size of the full embedding; must be divisible by ``num_learners``.
        num_learners: ``K``; ``1`` is the single-metric baseline.
        frozen_bn: keep every BatchNorm of the backbone in eval mode (running statistics fixed, affine parameters
            still trained), as the reference code and Roth et al. 2020 do.

    Each learner's rows are initialised with Xavier-normal on their own, as the reference code does.
    """

    def __init__(self, backbone: Trunk, embedding_dim: int = 128, num_learners: int = 4, frozen_bn: bool = False):
        super().__init__()
        if num_learners < 1 or embedding_dim % num_learners:
            raise ValueError(
                f"embedding_dim ({embedding_dim}) must be a positive multiple of num_learners ({num_learners})"
            )
        self.backbone, self.embedding_dim = backbone, embedding_dim
        self.num_learners, self.frozen_bn = num_learners, frozen_bn
        self.learners = nn.ModuleList(
            nn.Linear(backbone.out_dim, embedding_dim // num_learners) for _ in range(num_learners)
        )
        for layer in self.learners:
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.train()

    @property
    def slice_dim(self) -> int:
        """``d // K``, the size of one learner slice."""
        return self.embedding_dim // self.num_learners

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        if self.frozen_bn:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def embedding_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The full embedding layer: weight ``[d, F]`` (rows of learner ``k`` at ``k*d/K:(k+1)*d/K``), bias ``[d]``."""
        return (
            torch.cat([layer.weight for layer in self.learners]),
            torch.cat([layer.bias for layer in self.learners]),
        )

    def embed(self, features: torch.Tensor, learner: int | None = None) -> torch.Tensor:
        """Backbone features ``[B, F]`` -> ``[B, d]`` full embedding, or ``[B, d/K]`` slice of ``learner``.

        Each slice is L2-normalised independently; only the chosen learner's rows enter the graph when ``learner``
        is given.
        """
        if learner is not None:
            return F.normalize(self.learners[learner](features), dim=-1)
        weight, bias = self.embedding_weight()
        x = F.linear(features, weight, bias)
        return F.normalize(x.view(len(x), self.num_learners, self.slice_dim), dim=-1).view(len(x), -1)

    def has_batch_statistics(self) -> bool:
        """Whether the backbone normalises with batch statistics in train mode (BatchNorm that is not frozen)."""
        return not self.frozen_bn and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.backbone.modules()
        )

    def forward(
        self, images: torch.Tensor, learner: int | None = None, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, 3, H, W]`` -> embedding ``[B, d]`` (or ``[B, d/K]`` for one ``learner``), see :meth:`embed`.

        With ``return_features`` it returns ``(embedding, backbone features [B, F])``.
        """
        features = self.backbone(images)
        embedding = self.embed(features, learner)
        return (embedding, features) if return_features else embedding
