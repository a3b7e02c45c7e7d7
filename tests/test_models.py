"""Ordering CNNs: shared-trunk scoring equals the naive per-permutation forward; checkpoints; statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from permgym.models import OrderingNet, build_trunk, load_trunk, per_permutation_statistics, save_trunk
from permgym.permutations import make_bank


@pytest.mark.parametrize(
    ("trunk", "n", "size", "side", "centre", "uncentred"),
    [
        ("tiny", 4, None, 32, True, False),
        ("tiny", 9, 30, 24, True, False),
        ("caffenet", 4, None, 64, True, False),
        ("tiny", 4, None, 32, False, False),
        ("tiny-wide", 4, None, 32, True, True),
    ],
)
def test_shared_trunk_scoring_equals_naive_forward(
    trunk: str, n: int, size: int | None, side: int, centre: bool, uncentred: bool
) -> None:
    torch.manual_seed(0)
    bank = make_bank(n, size)
    heads = {"task": (n, bank.size)}
    net = OrderingNet(build_trunk(trunk), heads, projection_dim=16, hidden=32, centre=centre, uncentred=uncentred)
    net.eval()
    elements = torch.randn(3, n, 3, side, side)
    with torch.no_grad():
        shared = net.score_all_permutations(elements, bank.perms, "task")
        naive = torch.stack([net(elements[:, perm], "task") for perm in bank.perms], dim=1)
    assert shared.shape == (3, bank.size, bank.size)
    torch.testing.assert_close(shared, naive, rtol=1e-4, atol=1e-5)
    means = net.element_features(elements)[..., :16].mean(dim=1).abs().max()
    assert (means < 1e-5) == centre  # centred features average to zero over a sample's elements


def test_uncentred_features_follow_the_centred_ones_and_the_default_is_centred_only() -> None:
    torch.manual_seed(0)
    elements = torch.randn(2, 4, 3, 32, 32)
    both = OrderingNet(build_trunk("tiny"), {"task": (4, 24)}, projection_dim=8, uncentred=True).eval()
    default = OrderingNet(build_trunk("tiny"), {"task": (4, 24)}, projection_dim=8).eval()
    default.load_state_dict({k: v for k, v in both.state_dict().items() if not k.startswith("heads.")}, strict=False)
    with torch.no_grad():
        raw = both.project(both.trunk(elements.flatten(0, 1))).view(2, 4, 8)
        centred = raw - raw.mean(dim=1, keepdim=True)
        assert torch.equal(both.element_features(elements), torch.cat([centred, raw], dim=-1))
        assert torch.equal(default.element_features(elements), centred)
    assert both.heads["task"].fuse.in_features == 4 * 16 and default.heads["task"].fuse.in_features == 4 * 8
    with pytest.raises(ValueError, match=r"uncentred=True .* needs centre=True"):
        OrderingNet(build_trunk("tiny"), {"task": (4, 24)}, centre=False, uncentred=True)


def test_tiny_wide_trunk_doubles_the_tiny_channels() -> None:
    tiny, wide = build_trunk("tiny"), build_trunk("tiny-wide")
    assert (tiny.out_dim, wide.out_dim) == (576, 1152)
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 1152)
    convs = [[m.out_channels for m in t.modules() if isinstance(m, nn.Conv2d)] for t in (tiny, wide)]
    assert convs == [[32, 64, 64], [64, 128, 128]]


def test_classify_ordered_equals_forward_on_shuffled_inputs() -> None:
    torch.manual_seed(1)
    bank = make_bank(4)
    net = OrderingNet(build_trunk("tiny"), {"temporal": (4, 24)}).eval()
    elements = torch.randn(5, 4, 3, 32, 32)
    index = torch.tensor([0, 5, 11, 17, 23])
    order = bank.perms[index]
    shuffled = elements[torch.arange(5)[:, None], order]
    with torch.no_grad():
        gathered = net.classify_ordered(net.element_features(elements), order, "temporal")
        torch.testing.assert_close(gathered, net(shuffled, "temporal"), rtol=1e-4, atol=1e-5)


def test_resnet18_trunk_shape() -> None:
    trunk = build_trunk("resnet18")
    assert trunk(torch.randn(2, 3, 32, 32)).shape == (2, trunk.out_dim)


def test_unknown_trunk_lists_choices() -> None:
    with pytest.raises(ValueError, match="choose one of tiny, tiny-wide, caffenet, resnet18"):
        build_trunk("vgg")


def test_trunk_checkpoint_round_trip(tmp_path) -> None:
    trunk = build_trunk("tiny")
    save_trunk(trunk, tmp_path / "trunk.pth", note="test")
    loaded = load_trunk(tmp_path / "trunk.pth").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), trunk.eval()(x))
    with pytest.raises(FileNotFoundError, match="ssl_ucf101"):
        load_trunk(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("garbage")
    torch.save({"trunk": trunk.state_dict(), "log": [Path("a")]}, tmp_path / "run.pth")  # e.g. a run's checkpoint
    for name in ("text.pth", "run.pth"):  # torch's own message advises weights_only=False (and carries ANSI codes)
        with pytest.raises(ValueError) as error:
            load_trunk(tmp_path / name)
        assert str(error.value).endswith(
            "torch.load cannot read it as tensors (UnpicklingError); a run's checkpoint.pth is not one"
        )


def test_per_permutation_statistics_by_hand() -> None:
    # two samples, two permutations; sample 0 always right, sample 1 always wrong
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0]], [[0.0, 5.0], [5.0, 0.0]]])
    stats = per_permutation_statistics(logits)
    assert stats["accuracy"].tolist() == [0.5, 0.5]
    torch.testing.assert_close(stats["confusion"].sum(1), torch.ones(2))
    assert stats["loss"][0] == pytest.approx((0.00671534 + 5.00671534) / 2, rel=1e-5)
