"""PermSampling-v0: choosing which permutations an ordering CNN trains on, as a Gymnasium environment."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from permgym.clip_pools import IndexedClips, load_clip_pools, split_validation
from permgym.config import PermSamplingConfig, make_config
from permgym.distributed import World, resolve_device
from permgym.observation import ObservationTracker
from permgym.reference import markdown_table, normalized_score, reference_for
from permgym.threads import torch_threads
from permgym.trainer import OrderingTrainer, UpdateStats, batch_split, build_tasks, chance_loss

#: Names of the tasks in action / observation order.
TASK_ORDER = ("temporal", "spatial")


class PermSamplingEnv(gym.Env):
    """Learned permutation sampling for ordering-based self-supervision (Büchler, Brattoli, Ommer, ECCV 2018).

    ## Description
    An episode is one training run of an ordering CNN (a shared trunk over frames or jigsaw tiles, a fusion head per
    task). At each step the agent chooses the permutations the CNN trains on for the next ``updates_per_step`` SGD
    updates; it sees the CNN's training statistics and is rewarded by the utility of those updates.

    ## Action Space
    ``K`` is the bank size of each task (temporal: ``num_frames!`` or ``temporal_bank_size``; spatial: ``(g*g)!`` or
    ``spatial_bank_size``); for the joint task the temporal bank comes first. Bank row ``k`` maps the natural order
    to presentation order: position ``i`` shows element ``bank.perms[k, i]``.

    | action_mode | space | meaning |
    |---|---|---|
    | ``distribution`` | ``Box(-1, 1, (sum K,))`` | per task, ``softmax(action / temperature)`` over its bank; each sample's permutation is drawn from it |
    | ``per_sample`` | ``MultiDiscrete([K_t] * B_t + [K_s] * B_s)`` | every sample's permutation (the paper's granularity), reused for the step's updates |
    | ``discrete`` | ``Discrete(G)`` | a difficulty group: each bank sorted by Hamming distance from the identity and cut into G near-equal groups; samples are drawn uniformly within group ``a`` of each bank |

    ## Observation
    ``Box(-1, 1, (D,), float32)``; per-permutation held-out loss, accuracy, prediction entropy, largest confusion,
    recent and last selection frequency, the task's losses and accuracy, then progress and optimisation health. The
    held-out statistics come from a validation batch of ``val_batch_size`` clips scored over all K permutations with
    one trunk pass; ``reset`` redraws the batch (seeded: equal seeds, equal clips) from the *reward pool*, one half of
    the held-out training clips. The other half, the *report pool*, is never shown to reward or observation: evaluations
    report held-out ordering metrics on it (:meth:`heldout_statistics`). The full table is in :mod:`permgym.observation`.

    ## Reward
    ``reward="val_loss_delta"`` (default): drop of the mean held-out loss over the step divided by ``log K`` (summed
    over tasks for joint), so an episode's return telescopes to the total improvement. ``"val_acc_delta"``: rise of
    mean held-out accuracy. ``"uniform_relative"``: ``val_loss_delta`` minus the drop that uniform sampling achieves
    from the same weights on the same images (paired counterfactual; lower variance, twice the cost). Every reward
    is multiplied by ``reward_scale`` and clipped to ``[-reward_clip, reward_clip]``; a Python ``float``.

    Measured (``bench/reward_variance.py``, BENCHMARKS.md): at a fixed state, re-drawing only the step's permutations
    varies the reward about as much as re-drawing permutations and data; yet greedily keeping the best of a few draws
    per step does not raise the return over stratified sampling (``bench/reference_scores.py``), so this per-step
    variation does not accumulate into a better CNN.

    ## Termination / Truncation
    Never terminated. Every id registers ``max_episode_steps`` (its preset's ``steps_per_episode``); to override the
    length through ``gym.make`` use :func:`permgym.make`, which moves the ``TimeLimit`` along. Truncated after
    ``steps_per_episode`` steps, or at once when training diverges (non-finite
    loss, gradients or weights): the reward is then ``crash_penalty`` and ``info["diverged"]`` is True.

    ## Seeding
    ``reset(seed=s)`` seeds ``np_random``; a ``torch.Generator`` derived from it drives CNN initialisation, data
    order, augmentation and permutation draws. On the CPU presets equal seeds and actions give identical episodes.

    ## Registered Configurations
    ``PermSampling-v0`` (preset ``tiny``: temporal, 4 frames, K=24), ``PermSampling-Spatial-v0`` (``tiny-spatial``:
    2x2 jigsaw, K=24), ``PermSampling-Joint-v0`` (``tiny-joint``), ``PermSampling-Calibrated-v0``
    (``tiny-calibrated``: temporal, an occluder bar over the object in every frame, 50 steps of 4 updates: the regime
    where the downstream yardstick rises with every doubling of pretraining, so a sampler's downstream gain can
    show), ``PermSampling-UCF101-v0`` (``ucf101``: joint, CaffeNet, UCF101 frame cache, nondeterministic). Every field of :class:`~permgym.config.PermSamplingConfig` can
    be overridden as a keyword: ``gym.make("PermSampling-v0", reward="uniform_relative", lr=1e-3)``.

    ## Training options (applied to the trainer at every reset)
    ``world`` (a :class:`~permgym.distributed.World` from ``permgym.run.init_distributed``: under torchrun every
    rank steps its own env in lock-step and DDP splits each update's batch), ``amp`` (float16 mixed precision, CUDA
    only) and ``sync_bn`` (SyncBatchNorm across ranks on GPUs; default True).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        config: PermSamplingConfig | str = "tiny",
        render_mode: str | None = None,
        *,
        world: World | None = None,
        amp: bool = False,
        sync_bn: bool = True,
        **overrides: Any,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r} "
                "(SB3's make_vec_env passes 'rgb_array' for string ids: give it env_kwargs={'render_mode': None})"
            )
        self.config = make_config(config, **overrides)
        self.render_mode = render_mode
        if amp and resolve_device(self.config.device).type != "cuda":
            raise ValueError(f"amp=True needs a CUDA device, the env's config has device={self.config.device!r}")
        self.world, self.amp, self.sync_bn = world or World(), amp, sync_bn
        with torch_threads(self.config.torch_threads):
            self._load_clips()
        self.banks = {name: task.bank for name, task in build_tasks(self.config).items()}
        self.tasks = [t for t in TASK_ORDER if t in self.banks]
        self.batch_split = batch_split(self.config, self.tasks)
        self.action_space = self._make_action_space()
        self._groups = {t: difficulty_groups(self.banks[t].hamming_to_identity(), self.config.discrete_groups)
                        for t in self.tasks}  # fmt: skip
        self._tracker = ObservationTracker({t: self.banks[t].size for t in self.tasks}, self.config.ema_decay)
        self.observation_space = spaces.Box(-1.0, 1.0, (self._tracker.size,), np.float32)
        self.trainer: OrderingTrainer | None = None
        self._val: dict[str, dict[str, torch.Tensor]] = {}
        self._step = 0
        self._last_update = UpdateStats(0.0, 0.0, 0.0, True)
        self.validation_index = torch.zeros(0, dtype=torch.int64)
        self._return = 0.0
        self._reference = reference_for(self.config)

    def _load_clips(self) -> None:
        """Training clips, the pool each episode's validation batch is drawn from, and the report pool."""
        self._train_clips, val_clips = load_clip_pools(self.config)
        self._reward_pool, self._report_pool = split_validation(val_clips)

    # ------------------------------------------------------------------ spaces and actions
    def _make_action_space(self) -> spaces.Space:
        sizes = [self.banks[t].size for t in self.tasks]
        if self.config.action_mode == "distribution":
            return spaces.Box(-1.0, 1.0, (sum(sizes),), np.float32)
        if self.config.action_mode == "per_sample":
            nvec = [self.banks[t].size for t in self.tasks for _ in range(self.batch_split[t])]
            return spaces.MultiDiscrete(nvec)
        groups = self.config.discrete_groups
        if groups > min(sizes):
            raise ValueError(f"discrete_groups={groups} exceeds the smallest bank ({min(sizes)} permutations)")
        return spaces.Discrete(groups)

    def _permutation_choice(self, action: Any) -> dict[str, torch.Tensor]:
        """The action as per-task ``[K]`` probabilities (distribution, discrete) or ``[B_task]`` indices
        (per_sample). Raises ``ValueError`` on an action outside the action space."""
        mode = self.config.action_mode
        array = np.asarray(action)
        if mode == "discrete":
            if array.shape not in ((), (1,)) or not self.action_space.contains(int(array.reshape(-1)[0])):
                raise ValueError(f"expected an integer in [0, {self.action_space.n}), got {action!r}")
            group = int(array.reshape(-1)[0])
            return {t: (self._groups[t] == group).double() / (self._groups[t] == group).sum() for t in self.tasks}
        if array.shape != self.action_space.shape:
            raise ValueError(f"{mode} action must have shape {self.action_space.shape}, got {array.shape}")
        if mode == "per_sample":
            if not self.action_space.contains(array.astype(np.int64)):
                raise ValueError(
                    f"per_sample action out of range: every entry must be < its bank size {self.action_space.nvec}"
                )
            split = np.cumsum([self.batch_split[t] for t in self.tasks])[:-1]
            return {
                t: torch.as_tensor(part, dtype=torch.int64)
                for t, part in zip(self.tasks, np.split(array, split), strict=True)
            }
        if not np.all(np.isfinite(array)):
            raise ValueError("distribution action contains NaN or inf")
        logits = torch.as_tensor(np.clip(array, -1, 1), dtype=torch.float64) / self.config.temperature
        split = [self.banks[t].size for t in self.tasks]
        return {t: part.softmax(0) for t, part in zip(self.tasks, logits.split(split), strict=True)}

    def _draw(self, choice: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        assert self.trainer is not None
        if self.config.action_mode == "per_sample":
            return choice
        return self.trainer.draw_permutations(choice)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        with torch_threads(self.config.torch_threads):  # the process's thread count is restored afterwards
            return self._run_reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        with torch_threads(self.config.torch_threads):
            return self._run_step(action)

    def _run_reset(self, *, seed: int | None, options: dict[str, Any] | None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        torch_seed = int(self.np_random.integers(2**62))
        count = min(self.config.val_batch_size, len(self._reward_pool))
        self.validation_index = torch.as_tensor(np.sort(self.np_random.choice(len(self._reward_pool), count, False)))
        val_clips = self._reward_pool[self.validation_index]
        self.trainer = OrderingTrainer(self.config, self._train_clips, val_clips, torch_seed, self.sync_bn)
        self.trainer.distribute(self.world)  # no-op in one process
        if self.amp:
            self.trainer.enable_amp()
        self._tracker.reset()
        self._step = 0
        self._return = 0.0
        self._last_update = UpdateStats(0.0, 0.0, 0.0, True)
        self._val = self.trainer.validate()
        return self._observation(), self._info(diverged=False)

    def _run_step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.trainer is None:
            raise RuntimeError("call reset() before step()")
        choice = self._permutation_choice(action)
        batches = [self.trainer.sample_batch() for _ in range(self.config.updates_per_step)]
        uniform_val = None
        if self.config.reward == "uniform_relative":
            snapshot = self.trainer.snapshot()
            for batch in batches:
                self.trainer.update(batch, self.trainer.uniform_permutations())
            uniform_val = self.trainer.validate()
            generator_after = self.trainer.generator.get_state()
            self.trainer.load_state_dict(snapshot)
            self.trainer.generator.set_state(generator_after)  # both branches consume fresh randomness
        record = self._new_record()
        for batch in batches:
            perms = self._draw(choice)
            self._record_update(record, perms, self.trainer.update(batch, perms))
            if record.diverged:
                break
        return self._finish_step(record, self.trainer.validate(), uniform_val)

    # ------------------------------------------------------------------ pieces of a step (the batched env reuses them)
    def _new_record(self) -> StepRecord:
        return StepRecord(
            {t: np.zeros(self.banks[t].size, dtype=np.int64) for t in self.tasks}, {t: [] for t in self.tasks}
        )

    def _record_update(self, record: StepRecord, perms: dict[str, torch.Tensor], stats: UpdateStats) -> None:
        """Fold one update (its permutations and statistics) into the step's record."""
        for t in self.tasks:
            record.counts[t] += np.bincount(perms[t].numpy(), minlength=self.banks[t].size)
            record.losses[t].append(stats.task_loss[t])
        self._last_update = stats
        record.diverged = not stats.finite

    def _finish_step(
        self,
        record: StepRecord,
        val: dict[str, dict[str, torch.Tensor]],
        uniform_val: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> tuple[np.ndarray, float, bool, bool, dict]:
        """The step's result, from its record and the validation statistics ``val`` after its updates."""
        self._step += 1
        before, self._val = self._val, val
        diverged = record.diverged or not all(torch.isfinite(v["loss"]).all() for v in self._val.values())
        self._tracker.record_step({t: float(np.mean(record.losses[t])) for t in self.tasks}, record.counts)
        if diverged:
            reward = float(self.config.crash_penalty)
        else:
            raw = self._utility(before, self._val)
            if uniform_val is not None:
                raw -= self._utility(before, uniform_val)
            reward = float(np.clip(raw * self.config.reward_scale, -self.config.reward_clip, self.config.reward_clip))
        truncated = diverged or self._step >= self.config.steps_per_episode
        self._return += reward
        info = self._info(diverged=diverged)
        if truncated and self._reference is not None:
            info["normalized_score"] = normalized_score(self._return, self._reference)
        info["selection_counts"] = {t: record.counts[t].copy() for t in self.tasks}
        return self._observation(), reward, False, bool(truncated), info

    def _utility(self, before: dict[str, dict[str, torch.Tensor]], after: dict[str, dict[str, torch.Tensor]]) -> float:
        """Improvement from ``before`` to ``after`` in the configured reward's unit, summed over tasks."""
        total = 0.0
        for t in self.tasks:
            if self.config.reward == "val_acc_delta":
                total += float(after[t]["accuracy"].mean() - before[t]["accuracy"].mean())
            else:
                total += float(before[t]["loss"].mean() - after[t]["loss"].mean()) / chance_loss(self.banks[t])
        return total

    def _observation(self) -> np.ndarray:
        progress = self._step / self.config.steps_per_episode
        s = self._last_update
        return self._tracker.build(self._val, progress, s.grad_norm, s.update_ratio)

    def _info(self, diverged: bool) -> dict[str, Any]:
        """Raw statistics for logging (deterministic: no timings)."""
        info: dict[str, Any] = {"step": self._step, "diverged": bool(diverged), "train_loss": self._last_update.loss,
                                "grad_norm": self._last_update.grad_norm, "update_ratio": self._last_update.update_ratio}  # fmt: skip
        for t in self.tasks:
            info[f"{t}/val_loss"] = float(self._val[t]["loss"].mean())
            info[f"{t}/val_accuracy"] = float(self._val[t]["accuracy"].mean())
            info[f"{t}/val_loss_per_permutation"] = self._val[t]["loss"].numpy().copy()
        return info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        lines = [f"step {self._step}/{self.config.steps_per_episode}  train loss {self._last_update.loss:.3f}  "
                 f"grad norm {self._last_update.grad_norm:.3g}  update/weight {self._last_update.update_ratio:.2e}"]  # fmt: skip
        for t in self.tasks:
            v = self._val.get(t)
            if v is None:
                continue
            lines.append(f"{t}: val loss {float(v['loss'].mean()):.3f} (chance {chance_loss(self.banks[t]):.3f})  "
                         f"val acc {float(v['accuracy'].mean()):.3f}")  # fmt: skip
            lines.append("  perm  order      loss   acc")
            for k in range(self.banks[t].size):
                order = "".join(str(int(i)) for i in self.banks[t].perms[k])
                lines.append(f"  {k:4d}  {order:<9}  {float(v['loss'][k]):.3f}  {float(v['accuracy'][k]):.2f}")
        return "\n".join(lines)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the episode later (checkpoint/resume of long pretraining runs).

        The state is a copy: later steps do not change it (torch's ``state_dict`` methods return the live weight and
        optimiser tensors), so it can be kept in memory, loaded into several envs, or saved later.
        """
        if self.trainer is None:
            raise RuntimeError("call reset() before state_dict()")
        return copy.deepcopy(
            {
                "trainer": self.trainer.state_dict(),
                "tracker": self._tracker.state_dict(),
                "step": self._step,
                "return": self._return,
                "val": self._val,
                "last_update": self._last_update,
                "np_random": self.np_random.bit_generator.state,
                "validation_index": self.validation_index,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (call ``reset`` first so the trainer exists): the env then steps exactly
        as the one that saved it. ``state`` is copied, never shared (an optimiser loads its state tensors without
        copying them, so two envs loaded from one state would otherwise update the same moments)."""
        if self.trainer is None:
            raise RuntimeError("call reset() before load_state_dict()")
        state = copy.deepcopy(state)
        self.trainer.load_state_dict(state["trainer"])
        self._tracker.load_state_dict(state["tracker"])
        self._step = int(state["step"])
        self._return = float(state.get("return", 0.0))
        self._val = state["val"]
        self._last_update = state["last_update"]
        self.np_random.bit_generator.state = state["np_random"]
        self.validation_index = state.get("validation_index", self.validation_index)

    @property
    def reward_pool(self) -> IndexedClips:
        """Held-out training clips each episode's validation batch (observation and reward) is drawn from."""
        return self._reward_pool

    @property
    def report_pool(self) -> IndexedClips:
        """Held-out training clips no validation batch ever contains (see :meth:`heldout_statistics`)."""
        return self._report_pool

    @property
    def train_pool(self) -> IndexedClips:
        """The clips the CNN trains on."""
        return self._train_clips

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of everything a step changes, for look-ahead: :meth:`restore` returns the env to it, so that
        ``step`` can be tried with several actions from the same weights, optimiser, data order and RNG states."""
        if self.trainer is None:
            raise RuntimeError("call reset() before snapshot()")
        return {
            "trainer": self.trainer.snapshot(),
            "tracker": self._tracker.state_dict(),
            "step": self._step,
            "return": self._return,
            "val": self._val,  # replaced, never changed in place, by step
            "last_update": self._last_update,
            "np_random": copy.deepcopy(self.np_random.bit_generator.state),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Return to a :meth:`snapshot` (which stays valid: it can be restored again)."""
        if self.trainer is None:
            raise RuntimeError("call reset() before restore()")
        # the optimiser may adopt the snapshot's state tensors and update them in place: give it a copy
        self.trainer.load_state_dict(
            {**snapshot["trainer"], "optimizer": copy.deepcopy(snapshot["trainer"]["optimizer"])}
        )
        self._tracker.load_state_dict(snapshot["tracker"])
        self._step = snapshot["step"]
        self._return = snapshot["return"]
        self._val = snapshot["val"]
        self._last_update = snapshot["last_update"]
        self.np_random.bit_generator.state = copy.deepcopy(snapshot["np_random"])

    @torch.no_grad()
    def heldout_statistics(self, max_clips: int = 512) -> dict[str, dict[str, torch.Tensor]]:
        """Per task: ``loss [K]``, ``accuracy [K]``, ``confusion [K, K]`` of the current CNN on the report pool.

        The report pool (:func:`permgym.clip_pools.split_validation`) is the half of the held-out training clips that
        no validation batch is ever drawn from: no reward or observation saw them, so a sampler cannot have fitted
        them. Elements are cut with a fixed augmentation seed; the model's train/eval mode is restored.

        Args:
            max_clips: use the first ``max_clips`` clips of the pool at most (memory on large datasets).
        """
        if self.trainer is None:
            raise RuntimeError("call reset() before heldout_statistics()")
        trainer = self.trainer
        clips = self._report_pool[: max(1, max_clips)]
        generator = torch.Generator().manual_seed(0)
        elements = {name: task.elements(clips, generator).to(trainer.device) for name, task in trainer.tasks.items()}
        was_training = trainer.model.training
        statistics = trainer.permutation_statistics(elements)
        trainer.model.train(was_training)
        return statistics

    def close(self) -> None:
        self.trainer = None
        self._val = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for pool in ("_train_clips", "_reward_pool", "_report_pool"):
            state[pool] = None  # reloaded from the config, never pickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load_clips()
        if self.trainer is not None:
            self.trainer.train_clips = self._train_clips


if PermSamplingEnv.__doc__ is not None and markdown_table():  # the measured references, read from their data file
    PermSamplingEnv.__doc__ += (
        "\n    ## Reference scores (``permgym/reference_scores.json``, by ``bench/reference_scores.py``)\n"
        "    Mean ± 95 % t-interval over held-out seeds, per_sample mode; ``permgym.reference_scores(env_id)`` returns\n"
        "    them and ``info['normalized_score']`` at an episode's end is 0 at stratified's mean return, 1 at the best\n"
        "    oracle's, when the env's config is the one measured (any action mode). Where the oracle's mean return is\n"
        "    not above stratified's, no headroom over stratified was found and the normalised score is NaN. No sampler,\n"
        "    learned or look-ahead oracle, beat stratified on both probe and retrieval top-1 in any of these regimes,\n"
        "    the calibrated one included (BENCHMARKS.md): stratified sampling is the score to beat.\n\n    "
        + markdown_table().replace("\n", "\n    ")
        + "\n"
    )


@dataclass
class StepRecord:
    """What the updates of one step did: samples per bank row, per-task training loss per update, divergence."""

    counts: dict[str, np.ndarray]
    losses: dict[str, list[float]]
    diverged: bool = False


def difficulty_groups(distance: torch.Tensor, groups: int) -> torch.Tensor:
    """Group id per bank row: rows sorted by Hamming distance from the identity, cut into ``groups`` chunks."""
    order = torch.sort(distance, stable=True).indices
    group = torch.empty_like(order)
    group[order] = torch.arange(len(order)) * groups // len(order)
    return group
