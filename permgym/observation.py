"""The observation of PermSampling: the CNN's training statistics squashed to [-1, 1].

Layout (for each task in ``("temporal", "spatial")`` that the config uses, bank size K, then the globals):

| block | size | feature | scaling to [-1, 1] |
|---|---|---|---|
| task | K | held-out loss of each permutation / log K | ``clip(x - 1, -1, 1)``: 0 = chance level, -1 = solved |
| task | K | held-out accuracy of each permutation | ``2x - 1`` |
| task | K | entropy of the prediction for each permutation / log K | ``2x - 1`` |
| task | K | largest confusion: mean probability on the most-confused *other* permutation | ``2x - 1`` |
| task | K | recent selection frequency (EMA of the share of samples trained on each permutation) | ``clip(x K - 1, -1, 1)``: 0 = uniform |
| task | K | last action: share of the last step's samples trained on each permutation | ``clip(x K - 1, -1, 1)`` |
| task | 1 | EMA of the training loss / log K (bias-corrected) | ``clip(x - 1, -1, 1)`` |
| task | 1 | mean held-out loss / log K | ``clip(x - 1, -1, 1)`` |
| task | 1 | mean held-out accuracy | ``2x - 1`` |
| global | 1 | progress t / T | ``2x - 1`` |
| global | 1 | gradient norm of the last update | ``tanh(log10(x) / 2)`` |
| global | 1 | update/weight norm ratio of the last update | ``tanh((log10(x) + 3) / 2)``: 0 at 1e-3 |

So ``D = sum over tasks of (6 K + 3) + 3``; with the default temporal bank (K = 24) D = 150.
:func:`observation_slices` names every block's position, for agents that read the observation by feature.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

PER_PERMUTATION_FEATURES = ("val_loss", "val_accuracy", "entropy", "max_confusion", "frequency", "last_action")
PER_TASK_SCALARS = ("train_loss_ema", "mean_val_loss", "mean_val_accuracy")
GLOBAL_SCALARS = ("progress", "grad_norm", "update_ratio")


def observation_size(bank_sizes: dict[str, int]) -> int:
    """D for banks of the given sizes."""
    per_task = sum(len(PER_PERMUTATION_FEATURES) * k + len(PER_TASK_SCALARS) for k in bank_sizes.values())
    return per_task + len(GLOBAL_SCALARS)


def observation_slices(bank_sizes: dict[str, int]) -> dict[str, dict[str, slice]]:
    """Where each feature of the table above lies in the flat observation.

    Args:
        bank_sizes: K per task, in observation order (as given to :class:`ObservationTracker`).

    Returns:
        ``{task: {feature: slice}}`` for each task (the names of :data:`PER_PERMUTATION_FEATURES`, K entries each,
        and :data:`PER_TASK_SCALARS`, one entry each), plus ``{"global": {name: slice}}`` for
        :data:`GLOBAL_SCALARS`; e.g. ``obs[slices["temporal"]["val_loss"]]`` is the per-permutation held-out loss.
    """
    layout: dict[str, dict[str, slice]] = {}
    start = 0
    for task, k in bank_sizes.items():
        widths = [(name, k) for name in PER_PERMUTATION_FEATURES] + [(name, 1) for name in PER_TASK_SCALARS]
        layout[task] = {}
        for name, width in widths:
            layout[task][name] = slice(start, start + width)
            start += width
    layout["global"] = {name: slice(start + i, start + i + 1) for i, name in enumerate(GLOBAL_SCALARS)}
    return layout


def _unit(x: np.ndarray | float) -> np.ndarray:
    """[0, 1] -> [-1, 1]."""
    return np.clip(2 * np.asarray(x, dtype=np.float64) - 1, -1, 1)


def _centred(x: np.ndarray | float) -> np.ndarray:
    """[0, 2] (1 = reference level) -> [-1, 1]."""
    return np.clip(np.asarray(x, dtype=np.float64) - 1, -1, 1)


class ObservationTracker:
    """Keeps the moving averages the observation needs and turns statistics into the flat vector.

    Args:
        bank_sizes: K per task, in observation order.
        ema_decay: decay of the training-loss and selection-frequency averages.
    """

    def __init__(self, bank_sizes: dict[str, int], ema_decay: float) -> None:
        self.bank_sizes = dict(bank_sizes)
        self.ema_decay = ema_decay
        self.size = observation_size(bank_sizes)
        self.reset()

    def reset(self) -> None:
        """Forget all averages (start of an episode)."""
        self._loss_ema = dict.fromkeys(self.bank_sizes, 0.0)
        self._loss_weight = 0.0
        self._frequency = {t: np.full(k, 1.0 / k) for t, k in self.bank_sizes.items()}
        self._last = {t: np.full(k, 1.0 / k) for t, k in self.bank_sizes.items()}

    def record_step(self, train_loss: dict[str, float], counts: dict[str, np.ndarray]) -> None:
        """Fold one env step in: mean training loss per task and how many samples used each permutation."""
        d = self.ema_decay
        self._loss_weight = d * self._loss_weight + (1 - d)
        for task in self.bank_sizes:
            self._loss_ema[task] = d * self._loss_ema[task] + (1 - d) * train_loss[task]
            share = counts[task] / max(1, counts[task].sum())
            self._frequency[task] = d * self._frequency[task] + (1 - d) * share
            self._last[task] = share

    def state_dict(self) -> dict:
        """The moving averages, for checkpoints."""
        return copy.deepcopy({k: getattr(self, k) for k in ("_loss_ema", "_loss_weight", "_frequency", "_last")})

    def load_state_dict(self, state: dict) -> None:
        for key, value in copy.deepcopy(state).items():
            setattr(self, key, value)

    def train_loss_ema(self, task: str) -> float:
        """Bias-corrected EMA of the training loss (chance level before any update)."""
        if self._loss_weight == 0:
            return math.log(self.bank_sizes[task])
        return self._loss_ema[task] / self._loss_weight

    def build(
        self, val: dict[str, dict[str, torch.Tensor]], progress: float, grad_norm: float, update_ratio: float
    ) -> np.ndarray:
        """The observation vector (a fresh ``float32`` array of :attr:`size`)."""
        parts: list[np.ndarray] = []
        for task, k in self.bank_sizes.items():
            log_k = math.log(k)
            loss = val[task]["loss"].double().numpy()
            accuracy = val[task]["accuracy"].double().numpy()
            confusion = val[task]["confusion"].double().numpy()
            entropy = -(confusion * np.log(np.clip(confusion, 1e-12, None))).sum(1) / log_k
            off_diagonal = confusion.copy()
            np.fill_diagonal(off_diagonal, 0.0)
            parts += [
                _centred(loss / log_k),
                _unit(accuracy),
                _unit(entropy),
                _unit(off_diagonal.max(1)),
                _centred(self._frequency[task] * k),
                _centred(self._last[task] * k),
                _centred(np.array([self.train_loss_ema(task) / log_k, loss.mean() / log_k])),
                _unit(np.array([accuracy.mean()])),
            ]
        safe_grad = max(grad_norm, 1e-12) if math.isfinite(grad_norm) else 1e12
        safe_ratio = max(update_ratio, 1e-12) if math.isfinite(update_ratio) else 1e12
        parts.append(
            np.array(
                [
                    _unit(progress),
                    math.tanh(math.log10(safe_grad) / 2),
                    math.tanh((math.log10(safe_ratio) + 3) / 2),
                ]
            )
        )
        obs = np.concatenate(parts).astype(np.float32)
        return np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=-1.0)
