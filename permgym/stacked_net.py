"""The forward pass of N ordering CNNs whose weights are stacked, written out for ordinary autograd.

:class:`~permgym.batched_trainer.BatchedTrainer` keeps the weights of ``N`` :class:`~permgym.models.OrderingNet`
of one structure stacked (a leading slot dimension on every parameter and buffer). This module runs those ``N``
networks with plain ``torch.nn.functional`` calls, so that one ordinary backward pass gives each slot its gradients
(no ``torch.func.vmap``, whose batching rules for convolutions and BatchNorm take slow paths on the CPU):

* the trunk (convolutions, BatchNorm, ReLU, pooling) runs slot by slot in ``channels_last`` memory, with the single
  network's kernels: it is almost all of a step's arithmetic, and on the CPU a grouped convolution over the slots
  (one call for all N) measured slower (``bench/vector_env.py``, BENCHMARKS.md);
* the projection and the fusion heads are ``torch.baddbmm`` over the slot dimension.

Each slot computes what the single network computes on its inputs, in the same order of operations; only float32
rounding differs (memory layout and batched matrix products sum in other orders). Trunks that are not a plain
``nn.Sequential`` of convolutions, BatchNorm, ReLU and pooling (``resnet18``) are refused by
:func:`supports_stacked`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from permgym.models import OrderingNet, head_inputs

Tensors = dict[str, torch.Tensor]

#: Parameter-free trunk layers that act on each channel alone (so on the stacked channels as they are).
_CHANNELWISE = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity)


def supports_stacked(model: OrderingNet) -> bool:
    """Whether :func:`element_features` can run ``model``'s structure (a sequential conv/BN/ReLU/pool trunk, no
    head dropout)."""
    body = model.trunk.body
    if not isinstance(body, nn.Sequential):
        return False
    for layer in body:
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
                return False
        elif isinstance(layer, nn.BatchNorm2d):
            if not layer.affine or not layer.track_running_stats or layer.momentum is None:
                return False
        elif not isinstance(layer, _CHANNELWISE):
            return False
    return all(head.classify[1].p == 0 for head in model.heads.values())


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-slot ``F.linear``: ``x [N, ..., in]``, ``weight [N, out, in]``, ``bias [N, out]`` -> ``[N, ..., out]``."""
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    out = torch.baddbmm(bias[:, None, :], flat, weight.transpose(1, 2))
    return out.view(*x.shape[:-1], weight.shape[1])


def _trunk(model: OrderingNet, params: Tensors, buffers: Tensors, images: torch.Tensor, training: bool) -> torch.Tensor:
    """``[N, M, 3, H, W]`` images -> ``[N, M, out_dim]`` trunk features of each slot's network.

    One slot at a time, in ``channels_last`` memory: on the CPU a grouped convolution over the N slots (one call for
    all) measured slower than N ordinary ones, and a slot's activations stay in cache. BatchNorm running statistics
    are views of the stacks, updated in place."""
    layers = list(enumerate(model.trunk.body))
    names = {i: f"trunk.body.{i}" for i, _ in layers}
    slot_params = {n: p.unbind(0) for n, p in params.items() if n.startswith("trunk.")}
    outputs = []
    for s in range(images.shape[0]):
        x = images[s].contiguous(memory_format=torch.channels_last)
        for index, layer in layers:
            name = names[index]
            if isinstance(layer, nn.Conv2d):
                weight = slot_params[f"{name}.weight"][s].contiguous(memory_format=torch.channels_last)
                bias = slot_params[f"{name}.bias"][s] if layer.bias is not None else None
                x = F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
            elif isinstance(layer, nn.BatchNorm2d):
                x = F.batch_norm(
                    x,
                    buffers[f"{name}.running_mean"][s],
                    buffers[f"{name}.running_var"][s],
                    slot_params[f"{name}.weight"][s],
                    slot_params[f"{name}.bias"][s],
                    training,
                    layer.momentum,
                    layer.eps,
                )
            else:
                x = layer(x)
        outputs.append(x.flatten(1))
    if training:
        for index, layer in layers:
            if isinstance(layer, nn.BatchNorm2d):
                buffers[f"{names[index]}.num_batches_tracked"].add_(1)
    return torch.stack(outputs)


def element_features(
    model: OrderingNet, params: Tensors, buffers: Tensors, elements: torch.Tensor, training: bool
) -> torch.Tensor:
    """:meth:`OrderingNet.element_features` of every slot.

    Args:
        model: the shared structure (its own weights are not used).
        params, buffers: the model's names -> stacked ``[N, ...]`` tensors; BatchNorm running statistics are updated
            in place when ``training`` (pass views of the stacks to keep the update).
        elements: ``[N, B, n, 3, h, w]`` natural-order elements of each slot.
        training: BatchNorm in training mode (batch statistics) or eval mode (running statistics).

    Returns:
        ``[N, B, n, P]`` element features.
    """
    slots, b, n = elements.shape[:3]
    trunk = _trunk(model, params, buffers, elements.flatten(1, 2), training)
    features = F.relu(_linear(trunk, params["project.0.weight"], params["project.0.bias"])).view(slots, b, n, -1)
    return head_inputs(features, model.centre, model.uncentred)


def _classify(head: str, params: Tensors, hidden: torch.Tensor) -> torch.Tensor:
    """The head's ``ReLU -> Dropout(0) -> Linear`` on ``[N, ..., hidden]``."""
    prefix = f"heads.{head}.classify.2"
    return _linear(F.relu(hidden), params[f"{prefix}.weight"], params[f"{prefix}.bias"])


def classify_ordered(
    model: OrderingNet, params: Tensors, features: torch.Tensor, perms: torch.Tensor, task: str
) -> torch.Tensor:
    """:meth:`OrderingNet.classify_ordered` of every slot: ``features [N, B, n, P]``, ``perms [N, B, n]`` ->
    ``[N, B, K]`` logits."""
    ordered = torch.gather(features, 2, perms[..., None].expand(-1, -1, -1, features.shape[-1]))
    fuse = _linear(ordered.flatten(2), params[f"heads.{task}.fuse.weight"], params[f"heads.{task}.fuse.bias"])
    return _classify(task, params, fuse)


def score_all_permutations(
    model: OrderingNet, params: Tensors, buffers: Tensors, elements: torch.Tensor, perms: torch.Tensor, task: str
) -> torch.Tensor:
    """:meth:`OrderingNet.score_all_permutations` of every slot in eval mode: ``elements [N, B, n, 3, h, w]``,
    ``perms [Kp, n]`` -> ``[N, B, Kp, K]`` logits."""
    features = element_features(model, params, buffers, elements, training=False)
    head = model.heads[task]
    weight = params[f"heads.{task}.fuse.weight"]  # [N, hidden, n * P]
    blocks = weight.view(weight.shape[0], -1, head.num_elements, head.feature_dim)  # [N, hidden, n_pos, P]
    proj = torch.einsum("sbjp,ship->sbijh", features, blocks)  # [N, B, n_pos, n_elem, hidden]
    positions = torch.arange(head.num_elements, device=perms.device)
    picked = proj[:, :, positions[None, :], perms]  # [N, B, Kp, n, hidden]
    hidden = picked.sum(dim=3) + params[f"heads.{task}.fuse.bias"][:, None, None, :]
    return _classify(task, params, hidden)
