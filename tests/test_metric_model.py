from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from metric.model import EmbeddingNet, build_backbone, imagenet_weights_path
from permgym.models import build_trunk, save_trunk


def _net(num_learners: int = 4, frozen_bn: bool = False) -> EmbeddingNet:
    torch.manual_seed(0)
    return EmbeddingNet(build_backbone("tiny"), embedding_dim=32, num_learners=num_learners, frozen_bn=frozen_bn)


def test_slices_are_normalised_independently() -> None:
    net = _net()
    x = torch.randn(6, 3, 16, 16)
    emb = net(x)
    assert emb.shape == (6, 32)
    torch.testing.assert_close(emb.view(6, 4, 8).norm(dim=-1), torch.ones(6, 4))
    with torch.no_grad():  # rescaling one learner's rows changes nothing; changing them changes only its slice
        net.learners[1].weight.mul_(10.0)
        net.learners[1].bias.mul_(10.0)
    torch.testing.assert_close(net(x), emb)
    with torch.no_grad():
        net.learners[2].weight.add_(torch.randn_like(net.learners[2].weight))
    changed = (net(x) - emb).abs().view(6, 4, 8).amax(dim=(0, 2))
    assert changed[2] > 1e-3 and changed[[0, 1, 3]].max() < 1e-5


def test_learner_forward_is_its_slice_of_the_full_embedding() -> None:
    net = _net().eval()
    x = torch.randn(5, 3, 16, 16)
    full = net(x)
    for k in range(4):
        torch.testing.assert_close(net(x, learner=k), full[:, 8 * k : 8 * (k + 1)])


@pytest.mark.parametrize("path", ["learner", "slice_of_full"])
def test_only_the_learners_rows_get_gradients(path: str) -> None:
    net = _net()
    x = torch.randn(8, 3, 16, 16)
    emb = net(x, learner=1) if path == "learner" else net(x)[:, 8:16]
    emb.pow(3).sum().backward()
    grads = torch.cat(
        [torch.zeros_like(layer.weight) if layer.weight.grad is None else layer.weight.grad for layer in net.learners]
    )  # the full [d, F] embedding layer
    assert grads[8:16].abs().sum() > 0
    assert grads[:8].abs().sum() == 0 and grads[16:].abs().sum() == 0
    assert all(p.grad is not None for p in net.backbone.parameters())
    if path == "learner":  # other learners are not even in the graph: the optimizer skips them
        assert all(net.learners[k].weight.grad is None for k in (0, 2, 3))


def test_frozen_bn_keeps_running_statistics() -> None:
    net = _net(frozen_bn=True).train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns) and net.learners.training
    before = [m.running_mean.clone() for m in bns]
    net(torch.randn(4, 3, 16, 16) + 3)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns, strict=True))
    unfrozen = _net(frozen_bn=False).train()
    unfrozen(torch.randn(4, 3, 16, 16) + 3)
    assert not torch.equal(unfrozen.backbone.body[1].running_mean, before[0])


def test_embedding_weight_concatenates_learners() -> None:
    net = _net()
    weight, bias = net.embedding_weight()
    assert weight.shape == (32, net.backbone.out_dim) and bias.shape == (32,)
    torch.testing.assert_close(weight[8:16], net.learners[1].weight)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=re.escape("embedding_dim (30) must be a positive multiple of num_learners")):
        EmbeddingNet(build_trunk("tiny"), embedding_dim=30, num_learners=4)
    with pytest.raises(
        ValueError, match="unknown backbone 'vgg'; choose one of resnet50, tiny, tiny-wide, caffenet, resnet18"
    ):
        build_backbone("vgg")
    with pytest.raises(ValueError, match="unknown init 'moco'"):
        build_backbone("tiny", "moco")
    with pytest.raises(ValueError, match="ImageNet weights exist only for resnet50, resnet18"):
        build_backbone("tiny", "imagenet")


def test_imagenet_weights_missing_says_how_to_get_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert imagenet_weights_path("resnet18").parent == tmp_path / "checkpoints"
    with pytest.raises(FileNotFoundError, match=r"not in the local torch cache .*weights='IMAGENET1K_V1'"):
        build_backbone("resnet18", "imagenet")


def test_imagenet_weights_from_cache(tmp_path, monkeypatch) -> None:
    from torchvision.models import resnet18

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    torch.manual_seed(1)
    reference = resnet18()
    path = imagenet_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    trunk = build_backbone("resnet18", "imagenet")
    torch.testing.assert_close(trunk.body.conv1.weight, reference.conv1.weight)


def test_ssl_checkpoint(tmp_path) -> None:
    trunk = build_trunk("tiny")
    save_trunk(trunk, tmp_path / "trunk.pth")
    loaded = build_backbone(None, f"ssl:{tmp_path / 'trunk.pth'}")
    assert loaded.name == "tiny"
    torch.testing.assert_close(loaded.state_dict(), trunk.state_dict())
    with pytest.raises(ValueError, match="holds a 'tiny' trunk, not 'resnet18'"):
        build_backbone("resnet18", f"ssl:{tmp_path / 'trunk.pth'}")
