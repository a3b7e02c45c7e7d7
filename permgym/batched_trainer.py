"""N ordering CNNs stacked into batched tensors: one call updates or validates all of them.

:class:`BatchedTrainer` holds the weights, BatchNorm statistics and optimiser state of ``N`` slots, each the CNN of one
:class:`~permgym.trainer.OrderingTrainer` (which keeps its data order, augmentation and permutation draws). On the CPU,
for the sequential conv trunks (``tiny``, ``caffenet``), an update runs the forward pass of :mod:`permgym.stacked_net`
(the trunk slot by slot with the single network's kernels, the heads as batched matrix products) and one ordinary
backward pass; other trunks (``resnet18``) and GPUs run ``torch.func.vmap`` of ``torch.func.grad`` over
``torch.func.functional_call`` of the trainer's own :class:`OrderingLoss`. BatchNorm running statistics are stacked
buffers, updated in place per slot. The optimiser step (AdamW or SGD with momentum) is written out here over the stacked
tensors with a step count per slot, following ``torch.optim``'s single-tensor implementation term by term, so slot ``i``
follows the trainer it adopted as if that trainer had run alone, within float32 rounding (memory layout and batched
products sum in other orders; ``tests/test_vector_env.py`` states the tolerance).

Each adopted trainer's model parameters and buffers are re-pointed at its slot (views of the stacks), so
``trainer.model`` always shows the current weights; its own ``torch.optim`` optimiser is not used (its state stays
empty).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from permgym import stacked_net
from permgym.config import PermSamplingConfig
from permgym.models import OrderingNet, per_permutation_statistics
from permgym.trainer import OrderingLoss, OrderingTrainer, UpdateStats

#: AdamW defaults of ``torch.optim.AdamW`` that the trainer does not override.
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


def check_batchable(config: PermSamplingConfig) -> None:
    """Raise ``ValueError`` naming the option when ``config`` asks for something the batched trainer cannot do."""
    if config.reward == "uniform_relative":
        raise ValueError(
            "the batched vector env cannot run reward='uniform_relative' (its counterfactual branch snapshots and "
            "restores one trainer); use reward='val_loss_delta' or 'val_acc_delta', or "
            "gym.make_vec(..., vectorization_mode='sync'|'async') for this reward"
        )


class _Scorer(nn.Module):
    """``functional_call`` entry for :meth:`OrderingNet.score_all_permutations` (parameter names as in OrderingLoss)."""

    def __init__(self, model: OrderingNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, elements: torch.Tensor, perms: torch.Tensor, task: str) -> torch.Tensor:
        return self.model.score_all_permutations(elements, perms, task)


class BatchedTrainer:
    """The CNNs of ``num_slots`` ordering trainers, updated and validated together.

    Args:
        config: the environment configuration shared by every slot (see :func:`check_batchable`).
        num_slots: N.
        like: a trainer built from ``config``; gives the network's structure, shapes, banks and device.
    """

    def __init__(self, config: PermSamplingConfig, num_slots: int, like: OrderingTrainer) -> None:
        check_batchable(config)
        self.config = config
        self.num_slots = num_slots
        self.device = like.device
        self.perms = {name: bank.perms.to(self.device) for name, bank in like.banks.items()}
        self._structure = like.model
        # the stacked forward runs the trunk slot by slot: right on the CPU (compute-bound), while on a GPU vmap's
        # grouped convolutions save N - 1 kernel launches per layer
        self.stacked = self.device.type == "cpu" and stacked_net.supports_stacked(like.model)
        self._modules: tuple[OrderingLoss, _Scorer] | None = None

        def zeros(t: torch.Tensor) -> torch.Tensor:
            return torch.zeros((num_slots, *t.shape), dtype=t.dtype, device=self.device)

        self._shapes = {n: p.shape for n, p in like.model.named_parameters()}
        #: All parameters of a slot in one row, so that the optimiser is a few operations on ``[N, P]`` tensors.
        self.flat = torch.zeros((num_slots, sum(s.numel() for s in self._shapes.values())), device=self.device)
        self.params = self._views(self.flat)
        self.buffers = {n: zeros(b) for n, b in like.model.named_buffers()}
        self.val_elements = {t: zeros(e) for t, e in like.val_elements.items()}
        moments = ("exp_avg", "exp_avg_sq") if config.optimizer == "adam" else ("momentum_buffer",)
        self.optimizer_state = {m: torch.zeros_like(self.flat) for m in moments}
        self.steps = torch.zeros(num_slots, dtype=torch.float64, device=self.device)
        self.trainers: list[OrderingTrainer | None] = [None] * num_slots

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameter name -> ``[N, *shape]`` view of its columns of ``flat`` (``[N, P]``)."""
        views, start = {}, 0
        for n, shape in self._shapes.items():
            views[n] = flat[:, start : start + shape.numel()].view(len(flat), *shape)
            start += shape.numel()
        return views

    # ------------------------------------------------------------------ slots
    def adopt(self, slot: int, trainer: OrderingTrainer) -> None:
        """Load ``trainer``'s weights, BatchNorm statistics and validation batch into ``slot`` with a fresh optimiser
        state, then point ``trainer.model`` at the slot."""
        with torch.no_grad():
            for n, p in trainer.model.named_parameters():
                self.params[n][slot].copy_(p)
            for n, b in trainer.model.named_buffers():
                self.buffers[n][slot].copy_(b)
            for t, e in trainer.val_elements.items():
                self.val_elements[t][slot].copy_(e)
            for state in self.optimizer_state.values():
                state[slot].zero_()
            self.steps[slot] = 0
        self.trainers[slot] = trainer
        self._link(slot)

    def _link(self, slot: int) -> None:
        trainer = self.trainers[slot]
        assert trainer is not None
        for n, p in trainer.model.named_parameters():
            p.data = self.params[n][slot]
        for n in self.buffers:
            owner, _, leaf = n.rpartition(".")
            trainer.model.get_submodule(owner)._buffers[leaf] = self.buffers[n][slot]
        trainer.val_elements = {t: e[slot] for t, e in self.val_elements.items()}

    def _templates(self) -> tuple[OrderingLoss, _Scorer]:
        """Weightless copies of the network (on the meta device) that ``functional_call`` fills with a slot."""
        if self._modules is None:
            model = copy.deepcopy(self._structure).to("meta")
            self._modules = OrderingLoss(model, self.perms), _Scorer(model)
        return self._modules

    def _select(self, tensors: dict[str, torch.Tensor], index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {n: self._select_one(t, index) for n, t in tensors.items()}

    def _index(self, slots: list[int]) -> torch.Tensor | None:
        """``None`` when ``slots`` is every slot in order (then the stacks are used in place), else an index."""
        if slots == list(range(self.num_slots)):
            return None
        return torch.as_tensor(slots, dtype=torch.int64, device=self.device)

    # ------------------------------------------------------------------ update
    def update(
        self, slots: list[int], elements: list[dict[str, torch.Tensor]], perm_index: list[dict[str, torch.Tensor]]
    ) -> list[UpdateStats]:
        """One SGD update of each slot in ``slots``, as :meth:`OrderingTrainer.update` would do it.

        Args:
            slots: distinct slot numbers, ascending.
            elements: per slot, task -> ``[B_task, n, 3, h, w]`` natural-order elements.
            perm_index: per slot, task -> ``[B_task]`` int64 bank rows to show them in.

        Returns:
            Per slot, the statistics the single trainer reports.
        """
        index = self._index(slots)
        params = self._select(self.params, index)
        buffers = self._select(self.buffers, index)  # a copy when selecting: written back below
        stacked = {t: torch.stack([e[t] for e in elements]).to(self.device) for t in elements[0]}
        rows = {t: torch.stack([p[t] for p in perm_index]).to(self.device) for t in perm_index[0]}
        total = sum(len(r) for r in perm_index[0].values())
        gradients = self._stacked_gradients if self.stacked else self._vmap_gradients
        grads, loss, task_sums = gradients(params, buffers, stacked, rows, total)
        with torch.no_grad():
            if index is not None:
                for n, b in buffers.items():
                    self.buffers[n].index_copy_(0, index, b)
            grad_norm, ratio = self._optimizer_step(index, grads)
            sizes = torch.tensor([len(perm_index[0][t]) for t in stacked], dtype=task_sums.dtype)
            report = torch.cat([loss[:, None], task_sums / sizes.to(task_sums.device), grad_norm[:, None],
                                ratio[:, None].to(loss.dtype)], dim=1).tolist()  # fmt: skip
        stats = []
        for slot, (loss_value, *rest) in zip(slots, report, strict=True):
            *task_means, norm_value, ratio_value = rest
            trainer = self.trainers[slot]
            assert trainer is not None
            trainer.updates_done += 1
            finite = math.isfinite(loss_value) and math.isfinite(norm_value) and math.isfinite(ratio_value)
            task_loss = dict(zip(stacked, task_means, strict=True))
            stats.append(UpdateStats(loss_value, norm_value, ratio_value, finite, task_loss))
        return stats

    def _stacked_gradients(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        elements: dict[str, torch.Tensor],
        rows: dict[str, torch.Tensor],
        total: int,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Per-slot gradients, loss ``[N]`` and task sums ``[N, tasks]`` of :class:`OrderingLoss`, by the
        forward of :mod:`permgym.stacked_net` and one ordinary backward pass (slots share no weight, so the
        gradient of the summed loss is each slot's own)."""
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        model = self._structure
        loss = torch.zeros(len(next(iter(rows.values()))), device=self.device)
        task_sums = []
        for task, natural in elements.items():
            features = stacked_net.element_features(model, leaves, buffers, natural, training=True)
            logits = stacked_net.classify_ordered(model, leaves, features, self.perms[task][rows[task]], task)
            per_sample = F.cross_entropy(logits.flatten(0, 1).float(), rows[task].flatten(), reduction="none")
            task_sum = per_sample.view(logits.shape[:2]).sum(1)
            loss = loss + task_sum / total
            task_sums.append(task_sum.detach())
        grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
        return dict(zip(leaves, grads, strict=True)), loss.detach(), torch.stack(task_sums, dim=1)

    def _vmap_gradients(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        elements: dict[str, torch.Tensor],
        rows: dict[str, torch.Tensor],
        total: int,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """As :meth:`_stacked_gradients`, for any network: ``vmap`` of ``grad`` over ``functional_call`` of the
        trainer's own :class:`OrderingLoss`."""
        loss_module, _ = self._templates()
        loss_module.train()

        def loss_fn(p: dict, b: dict, e: dict, r: dict) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            state = {f"model.{n}": v for n, v in {**p, **b}.items()}
            loss, task_sums = functional_call(loss_module, state, (e, r, total))
            return loss, (loss.detach(), task_sums)

        grads, (loss, task_sums) = vmap(grad(loss_fn, has_aux=True))(params, buffers, elements, rows)
        return grads, loss, task_sums

    def _optimizer_step(
        self, index: torch.Tensor | None, grads: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply each selected slot's optimiser step in place; returns per-slot gradient norm and update ratio.

        Args:
            index: the selected slots (``None``: all, in order).
            grads: parameter name -> ``[len(index), *shape]`` gradients of the selected slots.

        Mirrors the single trainer: ``clip_grad_norm_(params, inf)`` (which multiplies the gradients by
        ``min(inf / (norm + 1e-6), 1)``, i.e. 1, or NaN when the norm is not finite), then ``torch.optim``'s
        single-tensor AdamW or SGD, term by term, on every parameter of a slot at once (one ``[N, P]`` row each).
        """
        c = self.config
        g = torch.cat([grads[n].flatten(1) for n in self._shapes], dim=1)
        p = self._select_one(self.flat, index)
        state = {m: self._select_one(s, index) for m, s in self.optimizer_state.items()}
        grad_norm = torch.linalg.vector_norm(g, dim=1)
        g = g * (math.inf / (grad_norm + 1e-6)).clamp(max=1.0)[:, None]
        steps = (self.steps if index is None else self.steps[index]) + 1
        self._write(self.steps, index, steps)
        if c.optimizer == "adam":
            new = p * (1 - c.lr * c.weight_decay)
            exp_avg = state["exp_avg"].lerp(g, 1 - _BETA1)
            exp_avg_sq = state["exp_avg_sq"] * _BETA2 + (1 - _BETA2) * g * g
            step_size = (c.lr / (1 - _BETA1**steps)).to(p.dtype)[:, None]
            correction2_sqrt = (1 - _BETA2**steps).sqrt().to(p.dtype)[:, None]
            new = new - step_size * (exp_avg / (exp_avg_sq.sqrt() / correction2_sqrt + _EPS))
            updated = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        else:
            d = g + c.weight_decay * p if c.weight_decay else g
            if c.momentum:
                d = state["momentum_buffer"] * c.momentum + d  # a zero buffer makes step 1 the plain gradient
            updated = {"momentum_buffer": d} if c.momentum else {}
            new = p - c.lr * d
        ratio = torch.linalg.vector_norm(new - p, dim=1) / torch.linalg.vector_norm(p, dim=1).clamp_min(1e-12)
        self._write(self.flat, index, new)
        for m, value in updated.items():
            self._write(self.optimizer_state[m], index, value)
        return grad_norm, ratio

    @staticmethod
    def _select_one(tensor: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        return tensor if index is None else tensor[index]

    @staticmethod
    def _write(target: torch.Tensor, index: torch.Tensor | None, value: torch.Tensor) -> None:
        if index is None:
            target.copy_(value)
        else:
            target.index_copy_(0, index, value)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, slots: list[int]) -> list[dict[str, dict[str, torch.Tensor]]]:
        """Per slot, what :meth:`OrderingTrainer.validate` returns: per task ``loss [K]``, ``accuracy [K]`` and
        ``confusion [K, K]`` (on the CPU) of the slot's validation batch in every bank permutation."""
        index = self._index(slots)
        params, buffers = self._select(self.params, index), self._select(self.buffers, index)
        results: list[dict[str, dict[str, torch.Tensor]]] = [{} for _ in slots]
        for task, perms in self.perms.items():
            elements = self._select_one(self.val_elements[task], index)
            if self.stacked:
                logits = stacked_net.score_all_permutations(self._structure, params, buffers, elements, perms, task)
                per_slot = [per_permutation_statistics(x.float()) for x in logits]
                stats = {k: torch.stack([s[k] for s in per_slot]).cpu() for k in per_slot[0]}
            else:
                stats = self._vmap_statistics(params, buffers, elements, perms, task)
            for j, result in enumerate(results):
                result[task] = {k: v[j] for k, v in stats.items()}
        return results

    def _vmap_statistics(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        elements: torch.Tensor,
        perms: torch.Tensor,
        task: str,
    ) -> dict[str, torch.Tensor]:
        """Stacked :func:`per_permutation_statistics` of every slot, by ``vmap`` over ``functional_call``."""
        _, scorer = self._templates()
        scorer.eval()
        state = {f"model.{n}": v for n, v in {**params, **buffers}.items()}

        def score(s: dict, e: torch.Tensor) -> dict[str, Any]:
            logits = functional_call(scorer, s, (e, perms, task)).float()
            return per_permutation_statistics(logits)

        return {k: v.cpu() for k, v in vmap(score)(state, elements).items()}

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_modules"] = None  # meta-device templates are rebuilt on use
        del state["params"]  # views of flat, rebuilt on load (pickle would copy them apart)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.params = self._views(self.flat)
        for slot, trainer in enumerate(self.trainers):
            if trainer is not None:
                self._link(slot)  # pickling copies the views apart: point the trainers at the stacks again
