"""The run layer shared by every command-line program (experiments/, agents.train, permgym.data.prepare).

One place for what a run does around its science:

* **Output folder ownership** (:class:`RunFolder`): a run writes only into a new or empty folder, or into one that
  holds a run it continues (``--resume``) or replaces (``--overwrite``: the previous run is moved aside to
  ``<out>.previous/``, so the new run starts in an empty folder and never mixes with the old run's files); a folder
  of files that no run wrote (a run's folder holds the marker ``.permgym-run``) is refused whatever the flags; an
  exclusive lock file (``.lock``, ``fcntl.flock``) held for the whole run makes a second concurrent run on the same
  folder refuse at once.
* **Checkpoints** (:func:`save_checkpoint`, :func:`load_checkpoint`): one format, ``{"format", "config", "rng",
  ...}``, storing the run's full config and every rank's random states; resuming compares it with the new invocation's and refuses any difference in an
  option that changes results, naming each option and both values (:func:`check_same_config`).
* **Option parsing**: :func:`parse_key_value` (``KEY=VALUE``: the value as JSON if it parses, else the string),
  :class:`Presets` (named groups of defaults that fill options left unset, explicit flags win; their ``--help``
  text) and :func:`add_stop_argument` (the one stop flag, ``--stop-after N``, in the script's unit).
* **Validation before any work**: :func:`require_at_least`, :func:`require_positive`, :func:`require_finite`,
  :func:`require_apart` (``--out`` outside the data folder ``--root``).
* **Stopping**: :class:`Interrupted`, raised after a checkpoint when the ``--stop-after`` limit is reached;
  :func:`run_in_folder` ends the run there (its message printed, exit status 0).
* **Staged runs** (:class:`Checkpointer`): a run of several parts (e.g. one per sampler), each in stages, kept in
  one checkpoint with the finished parts, the part in progress and every rank's random states.
* **Distributed**: :func:`init_distributed` joins the process group torchrun describes (or runs as one process)
  and returns this process's ``permgym.distributed.World``.
* **Errors**: :func:`run_cli` runs a ``main`` and turns expected errors (``ValueError``, ``FileNotFoundError``,
  :class:`RunError`) into one line on stderr and exit status 2.

A new experiment script uses it like this::

    def main(args):
        PRESETS.fill(args, "quick" if args.quick else None, "default")
        require_at_least(args, 1, "epochs", "batch_size")  # every check before any work
        return run_in_folder(args, run)  # threads, process group, --out owned and locked, --stop-after

    def run(args, world):
        out = Path(args.out)
        state = load_checkpoint(out / "checkpoint.pth", vars(args), IGNORED) if args.resume else None
        write_config(world, out, args=vars(args))
        ...
        save_checkpoint(world, out / "checkpoint.pth", vars(args), {"model": ..., "epoch": epoch})

    if __name__ == "__main__":
        run_cli(main, get_args_parser())
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO, TypeVar

import torch
import torch.distributed as dist

from permgym.distributed import (
    World,
    broadcast_object,
    cleanup_distributed,
    gather_per_rank,
    own_entry,
    resolve_device,
    rng_states,
    save_on_main,
)

__all__ = [
    "BACKUP_MARKER",
    "BACKUP_SUFFIX",
    "CHECKPOINT_FORMAT",
    "LOCK_FILE",
    "RUN_MARKER",
    "Checkpointer",
    "Interrupted",
    "Presets",
    "RunError",
    "RunFolder",
    "add_device_arguments",
    "add_run_folder_arguments",
    "add_stop_argument",
    "check_same_config",
    "default_workers",
    "fill_defaults",
    "holds_run",
    "init_distributed",
    "load_checkpoint",
    "load_checkpoints",
    "parse_key_value",
    "require_apart",
    "require_at_least",
    "require_finite",
    "require_positive",
    "run_cli",
    "run_in_folder",
    "save_checkpoint",
    "write_config",
]

T = TypeVar("T")

CHECKPOINT_FORMAT = 1
LOCK_FILE = ".lock"
#: Every folder a run starts in gets this file: ``--overwrite`` and ``--resume`` act only on a folder that holds it
#: (a run's), never on a folder of other files, which they would move aside (and a later ``--overwrite`` delete).
RUN_MARKER = ".permgym-run"
#: Entries of a run folder that belong to the run layer, not to the run: a folder holding only these is empty.
LAYER_FILES = (LOCK_FILE, RUN_MARKER)
#: ``--overwrite`` moves the previous run in ``<out>`` to the sibling folder ``<out>`` + BACKUP_SUFFIX ...
BACKUP_SUFFIX = ".previous"
#: ... and marks it with this file, so that the next ``--overwrite`` may replace that backup (and nothing else).
BACKUP_MARKER = ".permgym-previous-run"


class RunError(ValueError):
    """A run cannot start as asked (folder taken, checkpoint missing or of another config); the message says why
    and what to do. A ``ValueError``, so callers and :func:`run_cli` treat it like any bad input."""


class Interrupted(Exception):
    """Raised after a checkpoint was written when the ``--stop-after`` limit is reached; continue with --resume."""


# ---------------------------------------------------------------------------------------------------- options
def parse_key_value(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(KEY, value)``: the value as JSON where it parses (``3``, ``1e-3``, ``true``, ``null``,
    ``[1, 2]``, ``{"a": 1}``), else the string itself (``reward=uniform_relative``). An argparse ``type``.

    Raises:
        argparse.ArgumentTypeError: no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def fill_defaults(args: argparse.Namespace, *presets: Mapping[str, Any]) -> argparse.Namespace:
    """Set every option of ``args`` that is still None from the first preset that names it (explicit flags win).

    Args:
        args: parsed options; preset-dependent ones default to None in the parser.
        presets: the presets in priority order (e.g. ``--quick``'s before the data regime's).

    Returns:
        ``args`` itself, filled in place.
    """
    for preset in presets:
        for name, value in preset.items():
            if getattr(args, name, None) is None:
                setattr(args, name, value)
    return args


class Presets(dict):
    """Named groups of defaults, ``{preset: {option: value}}``: the one preset mechanism of the experiments.

    Options that depend on a preset default to None in the parser; :meth:`fill` sets them from the chosen presets
    (explicit flags win) and :meth:`help` writes their defaults into ``--help``.

    Args:
        table: ``{preset name: {option: value}}``.
        labels: how ``--help`` names each preset, e.g. ``{"synthetic": "on synthetic", "quick": "with --quick"}``
            (a preset without a label is the plain default).
        overrides: presets that, when chosen, take priority over the others (e.g. ``("quick",)``); ``--help``
            lists them after a semicolon.
    """

    def __init__(self, table: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str] | None = None,
                 overrides: Iterable[str] = ()) -> None:  # fmt: skip
        super().__init__({name: dict(values) for name, values in table.items()})
        self.labels = dict(labels or {})
        self.overrides = tuple(overrides)

    def fill(self, args: argparse.Namespace, *names: str | None) -> argparse.Namespace:
        """Fill the options of ``args`` left unset (None) from the presets ``names`` in priority order (None entries
        are skipped, e.g. ``"quick" if args.quick else None``); returns ``args``. Preset entries that are not
        options of ``args`` (e.g. a dict of dataset arguments the script reads itself) are left alone."""
        chosen = [self[name] for name in names if name is not None]
        return fill_defaults(args, *({k: v for k, v in p.items() if hasattr(args, k)} for p in chosen))

    def help(self, option: str, text: str) -> str:
        """``text`` and the option's default in every preset: ``"epochs (default: 20; with --quick: 4)"``."""
        base = ", ".join(
            f"{self[name][option]}{' ' + self.labels[name] if self.labels.get(name) else ''}"
            for name in self
            if name not in self.overrides
        )
        extra = "".join(
            f"; {self.labels.get(name, name)}: {self[name][option]}" for name in self.overrides if option in self[name]
        )
        return f"{text} (default: {base}{extra})"


def add_stop_argument(parser: argparse.ArgumentParser | Any, unit: str, where: str = "") -> None:
    """Add the one stop flag, ``--stop-after N``: stop after N ``unit`` at the next checkpoint, as if interrupted.

    Args:
        parser: a parser or an argument group.
        unit: what N counts, e.g. ``"SGD updates"`` or ``"epochs"``.
        where: an optional clause saying where the count starts, e.g. ``" in this invocation"``.
    """
    parser.add_argument("--stop-after", default=None, type=int, metavar="N",
                        help=f"debugging: stop at the first checkpoint after N {unit}{where}, as if interrupted; "
                        "continue with --resume (default: run to the end)")  # fmt: skip


def default_workers(cpus: int | None = None) -> int:
    """DataLoader workers for image datasets: one core stays with the training process, at most 4 (0 on machines
    with 2 cores or fewer, where workers only compete with it)."""
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return 0 if cpus <= 2 else min(4, cpus - 1)


def require_finite(args: argparse.Namespace, *names: str) -> None:
    """Refuse a float option among ``names`` that is nan or infinite (None, an unset optional, is allowed).

    Raises:
        ValueError: ``--flag-name must be a finite number, got value``.
    """
    for name in names:
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")


def require_at_least(args: argparse.Namespace, minimum: float, *names: str) -> None:
    """Refuse any option among ``names`` below ``minimum`` (None, an unset optional, is allowed).

    Raises:
        ValueError: ``--flag-name must be >= minimum, got value``.
    """
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


def require_positive(args: argparse.Namespace, *names: str) -> None:
    """Refuse any option among ``names`` that is not above 0 (nan included; None, an unset optional, is allowed).

    Raises:
        ValueError: ``--flag-name must be > 0, got value``.
    """
    for name in names:
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")


def require_apart(
    out: str | Path, root: str | Path, data: str = "dataset", outputs: str = "run", option: str = "--out"
) -> None:
    """Refuse an output folder ``out`` (given as ``option``) that is, contains or lies inside the data folder
    ``--root``: a run would write into the data (a class-per-folder tree would read the run's folder as one more
    class) or, with ``--overwrite``, move it.

    Raises:
        ValueError: naming both folders.
    """
    root_path, out_path = Path(root).resolve(), Path(out).resolve()
    if out_path == root_path or root_path in out_path.parents or out_path in root_path.parents:
        raise ValueError(
            f"{option} {str(out)!r} overlaps the {data} folder --root {str(root)!r}; write the {outputs} to a "
            "separate folder"
        )


# ---------------------------------------------------------------------------------------------------- distributed
def init_distributed(device: str = "auto") -> World:
    """Join the process group that torchrun describes, or run as one process.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; with CUDA each process takes GPU ``LOCAL_RANK`` and the group
            uses NCCL, on the CPU gloo.

    Returns:
        This process's :class:`World`.

    Raises:
        ValueError: CUDA was asked for but is not available.
    """
    target = resolve_device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} needs CUDA, which is not available here; use --device cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ or world_size < 2:
        print("Not using distributed mode")
        return World(device=target)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if target.type == "cuda":
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    world = World(dist.get_rank(), dist.get_world_size(), target)
    if world.is_main:
        print(f"distributed mode: {world.world_size} processes, backend {dist.get_backend()}, device {target.type}")
    return world


# ---------------------------------------------------------------------------------------------------- folders
def add_run_folder_arguments(parser: argparse.ArgumentParser | Any, default_out: str) -> None:
    """Add ``--out``, ``--resume`` and ``--overwrite`` (to a parser or an argument group)."""
    parser.add_argument("--out", default=default_out, help=f"output folder (default: {default_out})")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint (same options that change results)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help=f"start afresh in an --out that holds another run: its files are moved to "
                        f"OUT{BACKUP_SUFFIX}/ (replacing an older backup there), never mixed with the new run's")  # fmt: skip


def add_device_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add ``--device``, ``--amp`` and ``--no-sync-bn`` (to a parser or an argument group)."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="device (default: auto = cuda if available)")  # fmt: skip
    parser.add_argument("--amp", action="store_true", help="mixed precision, CUDA only (default: off)")
    parser.add_argument("--no-sync-bn", dest="sync_bn", action="store_false",
                        help="keep per-process BatchNorm statistics under torchrun. By default multi-GPU runs (torchrun "
                        "on CUDA) turn train-mode BatchNorm into SyncBatchNorm, which normalises with the statistics of "
                        "the whole global batch; no effect on one process or on CPUs (gloo)")  # fmt: skip


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run of this run layer: the marker :data:`RUN_MARKER`, or, for runs written before
    the marker existed, both the lock file and a ``config.json``."""
    folder = Path(folder)
    return (folder / RUN_MARKER).is_file() or ((folder / LOCK_FILE).is_file() and (folder / "config.json").is_file())


class RunFolder:
    """Ownership of a run's output folder for the time of the run (a context manager).

    On entering (rank 0 checks, every rank learns the outcome):

    * the folder is created if needed; an existing one must be empty, or hold a run (:func:`holds_run`) and
      ``resume`` / ``overwrite`` must be set (a folder holding another run's files is never written over silently;
      one holding files that no run wrote, e.g. a dataset, is refused whatever the flags, so ``overwrite`` never
      moves it aside); whether it holds a checkpoint to resume from is :func:`load_checkpoint`'s check;
    * the folder gets the marker file ``RUN_MARKER``, which makes it a run's folder;
    * ``LOCK_FILE`` is locked exclusively (``fcntl.flock``) until exit: a second run on the same folder, in this or
      another process, refuses with a :class:`RunError` instead of mixing its files with this run's;
    * with ``overwrite``, once the lock is held, everything else the folder holds is moved (renamed, so nothing is
      copied or deleted) into the sibling backup folder ``<path>.previous/`` and one line says so: the new run
      starts in an empty folder, and no file of the old run (e.g. a ``K4/`` folder a new run with K = 1 never
      writes) survives next to its outputs. A backup folder there from an earlier ``overwrite`` (it holds the
      marker file ``BACKUP_MARKER``) is replaced; anything else at that path is refused, never deleted.

    On exit the lock is released; a folder created here that still holds only the lock and marker files is removed.

    Args:
        path: the output folder.
        world: only rank 0 touches the folder; under torchrun every rank raises the same error.
        resume: the run continues what the folder holds.
        overwrite: the run replaces the run the folder holds (moved to ``<path>.previous/``).
        resumable: the program has a ``--resume`` option (the refusal of an occupied folder offers it only then).

    Raises:
        RunError: the folder is taken (another run's files without ``resume``/``overwrite``, files no run wrote,
            or locked), is a file, or ``overwrite`` finds ``<path>.previous`` taken by something that is not a
            backup of a run.
    """

    def __init__(self, path: str | Path, world: World | None = None, *, resume: bool = False,
                 overwrite: bool = False, resumable: bool = True) -> None:  # fmt: skip
        if resume and overwrite:
            raise RunError("--resume and --overwrite contradict each other: continue the run, or start afresh")
        self.path = Path(path)
        self.world = world or World()
        self.resume, self.overwrite, self.resumable = resume, overwrite, resumable
        self._lock: TextIO | None = None
        self._created = False

    def _claim(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {str(self.path)!r} is a file, not a folder; choose another --out")
        held = self._held()
        if held:
            shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
            if not holds_run(self.path):
                raise RunError(
                    f"--out {str(self.path)!r} holds files that no permgym run wrote ({shown}); --resume and "
                    "--overwrite act only on a run's folder, so nothing there is moved or written: choose another --out"
                )
            if not (self.resume or self.overwrite):
                resume = "continue it with --resume, " if self.resumable else ""
                raise RunError(
                    f"--out {str(self.path)!r} already holds a run ({shown}): {resume}replace it with --overwrite, or "
                    "choose another --out"
                )
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = open(self.path / LOCK_FILE, "a")  # held open (and locked) for the run
        except OSError as err:  # a file on the way, no permission, a read-only file system
            raise RunError(
                f"--out {str(self.path)!r} cannot be written ({err.strerror or err}); choose another --out"
            ) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RunError(
                f"--out {str(self.path)!r} is in use by another run (it holds the lock {LOCK_FILE}); wait for it to "
                "finish or choose another --out"
            ) from None
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock
        held = self._held()  # as of now that it is locked
        if held and self.overwrite:
            try:
                self._move_aside(held)
            except RunError:
                self.close()
                raise
        (self.path / RUN_MARKER).write_text("a folder of a permgym run (permgym.run.RunFolder)\n")

    def _held(self) -> list[str]:
        """The folder's entries other than the run layer's own files (none if it does not exist)."""
        return sorted(p.name for p in self.path.iterdir() if p.name not in LAYER_FILES) if self.path.is_dir() else []

    def _move_aside(self, held: list[str]) -> None:
        """Move the entries ``held`` (all but the lock file, which stays locked) into the backup folder."""
        backup = self.path.resolve().with_name(self.path.resolve().name + BACKUP_SUFFIX)
        replaced = ""
        if backup.exists() or backup.is_symlink():
            if not (backup.is_dir() and not backup.is_symlink() and (backup / BACKUP_MARKER).is_file()):
                raise RunError(
                    f"--overwrite moves the run in --out {str(self.path)!r} to {str(backup)!r}, but that path holds "
                    "something that is not a backup of a run; move it away, or choose another --out"
                )
            shutil.rmtree(backup)  # an older run, moved aside by an earlier --overwrite
            replaced = " (replacing the older backup there)"
        backup.mkdir()
        (backup / BACKUP_MARKER).write_text(
            f"moved here from {self.path.resolve()} by --overwrite at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        )
        try:
            for name in held:
                os.rename(self.path / name, backup / name)
        except OSError as err:
            raise RunError(f"--overwrite could not move {str(self.path / name)!r} to {str(backup)!r} ({err}); "
                           "the entries moved so far are there; free --out by hand or choose another --out") from None  # fmt: skip
        print(f"--overwrite: the previous run in {str(self.path)!r} was moved to {str(backup)!r}{replaced}", flush=True)

    def __enter__(self) -> RunFolder:
        error = None
        if self.world.is_main:
            try:
                self._claim()
            except RunError as err:
                error = str(err)
        error = broadcast_object(error)
        if error is not None:
            raise RunError(error)
        return self

    def close(self) -> None:
        """Release the lock; a folder this run created and left holding nothing but the run layer's files (it
        failed before writing) is removed again."""
        if self._lock is None:
            return
        if self._created and not self._held():
            for name in LAYER_FILES:
                (self.path / name).unlink(missing_ok=True)
            self.path.rmdir()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        self._lock = None

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(world: World, path: str | Path, config: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Write ``state`` with the run's ``config`` and every rank's random states as one checkpoint, on rank 0,
    atomically. Call it on every rank: under torchrun it gathers the ranks' global RNG states.

    The checkpoint's ``rng`` entry is ``gather_per_rank(rng_states())`` (one entry per rank, in rank order); a
    resumed run restores its own with :func:`permgym.distributed.set_rng_states`, at the point where it continues.

    Args:
        world: only rank 0 writes.
        path: the checkpoint file (its folder is created).
        config: the run's full config (every option after presets), compared on resume by :func:`load_checkpoint`.
        state: everything else the run needs to continue (weights, optimiser, logs); its keys ``format``, ``config``
            and ``rng`` are replaced (a restored checkpoint may be passed back in).
    """
    rng = gather_per_rank(rng_states())  # collective: before rank 0 alone goes on
    if not world.is_main:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_on_main(world, {**state, "rng": rng, "format": CHECKPOINT_FORMAT, "config": dict(config)}, path)


def _same(saved: Any, current: Any) -> bool:
    """Equal values, or two strings naming the same path (relative to the working folder, or absolute)."""
    if saved == current:
        return True
    return isinstance(saved, str) and isinstance(current, str) and Path(saved).resolve() == Path(current).resolve()


def check_same_config(saved: Mapping[str, Any], current: Mapping[str, Any], ignored: Iterable[str] = ()) -> None:
    """Refuse to continue a run whose results-changing options differ from the checkpoint's.

    Args:
        saved: the checkpoint's config.
        current: this invocation's config.
        ignored: options that do not change results (progress bars, threads, stop limits...), which may differ.

    A string option counts as unchanged when it names the same path (``--root UCF-101`` then ``--root
    /data/UCF-101`` from the folder holding ``UCF-101``).

    Raises:
        RunError: naming every differing option with the checkpoint's and the new value.
    """
    skip = set(ignored)
    keys = sorted(k for k in saved.keys() | current.keys() if k not in skip and not _same(saved.get(k), current.get(k)))
    if keys:
        diff = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}" for k in keys)
        # --quick itself may differ (it only fills defaults), but a forgotten --quick is the usual cause of a diff
        quick = saved.get("quick")
        hint = ""
        if quick != current.get("quick"):
            hint = (
                "the run was started with --quick: give it again, or "
                if quick
                else "the run was started without --quick: drop it, or "
            )
        raise RunError(
            f"--resume with options that change results ({diff}): {hint}resume with the checkpoint's values, or "
            "start afresh with --overwrite or another --out"
        )


def load_checkpoint(
    path: str | Path, config: Mapping[str, Any], ignored: Iterable[str] = (), map_location: Any = "cpu"
) -> dict[str, Any]:
    """Read a :func:`save_checkpoint` file and check that it belongs to a run of ``config``.

    Args:
        path: the checkpoint file.
        config: this invocation's config.
        ignored: options that may differ (see :func:`check_same_config`).
        map_location: as for ``torch.load``.

    Returns:
        The checkpoint (``config`` included).

    Raises:
        RunError: no checkpoint at ``path``, another format, or a differing option.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"--resume: no checkpoint at {str(path)!r}; start without --resume")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except (EOFError, RuntimeError, pickle.UnpicklingError) as err:
        raise RunError(f"--resume: {str(path)!r} cannot be read as a checkpoint ({type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else 'empty'}); start afresh with --overwrite") from None  # fmt: skip
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise RunError(
            f"--resume: {str(path)!r} is not a checkpoint of format {CHECKPOINT_FORMAT} (written by another version); "
            "start afresh with --overwrite"
        )
    check_same_config(checkpoint["config"], config, ignored)
    return checkpoint


class Checkpointer:
    """The progress of a run made of parts (e.g. one per sampler), each in stages, kept as one checkpoint file.

    A checkpoint holds the finished parts' results (``done``), the part in progress (``variant``), its ``stage`` and
    partial ``result``, the stage's ``state`` (rank 0's: the ranks hold identical copies), every rank's random
    states (``rng``: one :func:`permgym.distributed.rng_states` per rank, in rank order), the units of work done
    (``updates``) and the wall-clock seconds so far (``elapsed_s``).

    Args:
        path: the checkpoint file.
        world: only rank 0 writes.
        config: the run's full config, saved with every checkpoint (a live mapping, e.g. ``vars(args)``).
        restored: a :func:`load_checkpoint` result to continue from (``--resume``), or None.
        stop_after: raise :class:`Interrupted` after the first stage checkpoint at or beyond this many units.
        unit: what ``updates`` counts, for the stop message.

    Raises:
        RunError: ``restored`` was written by another number of processes.
    """

    def __init__(self, path: Path, world: World, config: Mapping[str, Any], restored: dict[str, Any] | None = None,
                 stop_after: int | None = None, unit: str = "SGD updates") -> None:  # fmt: skip
        if restored is not None:
            try:
                own_entry(restored["rng"])  # one entry per process of the run that wrote it: the same number needed
            except ValueError as err:
                raise RunError(f"--resume: {err}") from None
        self.path, self.world, self.config = path, world, config
        self.stop_after, self.unit = stop_after, unit
        self.done: dict[str, dict[str, Any]] = restored["done"] if restored else {}
        self.updates: int = restored["updates"] if restored else 0
        self.elapsed_s: float = restored["elapsed_s"] if restored else 0.0
        self.started = time.perf_counter()
        self.restored = restored

    def total_seconds(self) -> float:
        """Wall-clock seconds of the run over all its invocations."""
        return self.elapsed_s + time.perf_counter() - self.started

    def resume_point(self, variant: str) -> dict[str, Any] | None:
        """The saved checkpoint if it stopped inside part ``variant``, else None."""
        if self.restored is None or self.restored.get("variant") != variant:
            return None
        return self.restored

    def save(self, variant: str | None, stage: str | None, result: dict[str, Any] | None, state: Any) -> None:
        """Write everything (call on every rank: it gathers the random states).

        Raises:
            Interrupted: inside a stage, ``stop_after`` units are reached.
        """
        checkpoint = {"done": self.done, "updates": self.updates, "variant": variant, "stage": stage,
                      "result": result, "state": state, "elapsed_s": self.total_seconds()}  # fmt: skip
        save_checkpoint(self.world, self.path, self.config, checkpoint)
        if self.stop_after is not None and self.updates >= self.stop_after and stage is not None:
            raise Interrupted(f"stopped after {self.updates} {self.unit} (--stop-after); continue with --resume")

    def finish(self, variant: str, result: dict[str, Any]) -> None:
        """Record part ``variant`` as done and write the checkpoint."""
        self.done[variant] = result
        self.save(None, None, None, None)


def load_checkpoints(
    folder: str | Path, paths: Mapping[Any, Path], config: Mapping[str, Any], ignored: Iterable[str] = ()
) -> dict[Any, dict[str, Any]]:
    """``--resume`` of a run with one checkpoint per part (e.g. per K): every part's checkpoint that exists, each
    checked by :func:`load_checkpoint`; parts without one start afresh.

    Args:
        folder: the run's folder (for the message).
        paths: ``{part: checkpoint file}``.
        config, ignored: as for :func:`load_checkpoint`.

    Raises:
        RunError: no part has a checkpoint (if a checkpoint of another part lies next to where they would, e.g. one
            of another K, the options in which its config differs are named), or one belongs to another config.
    """
    found = {part: Path(path) for part, path in paths.items() if Path(path).is_file()}
    if not found:
        siblings = {path for part in paths.values() for path in Path(part).parent.parent.glob(f"*/{Path(part).name}")}
        for path in sorted(siblings):  # another part's checkpoint, e.g. of another K: refused naming what differs
            load_checkpoint(path, config, ignored)
        expected = ", ".join(str(path) for path in paths.values())
        raise RunError(f"--resume: no checkpoint in {str(folder)!r} (looked for {expected}); start without --resume")
    return {part: load_checkpoint(path, config, ignored) for part, path in found.items()}


# ---------------------------------------------------------------------------------------------------- entry point
def run_in_folder(args: argparse.Namespace, body: Callable[[argparse.Namespace, World], T]) -> T | None:
    """Run ``body(args, world)`` as every experiment does: an ``args.root`` (when set) apart from ``args.out``
    (:func:`require_apart`), torch's CPU threads from ``args.threads`` (when set), the
    process group of ``args.device`` (:func:`init_distributed`), ``args.out`` owned for the whole run
    (:class:`RunFolder` with ``args.resume`` / ``args.overwrite``), a stop by ``--stop-after`` (:class:`Interrupted`:
    its message printed on rank 0) and, once done, the process group left (``cleanup_distributed``).

    Returns:
        What ``body`` returns; None when it was stopped by :class:`Interrupted`.
    """
    if getattr(args, "root", None) is not None:
        require_apart(args.out, args.root)
    if getattr(args, "threads", None) is not None:
        torch.set_num_threads(args.threads)
    world = init_distributed(args.device)
    with RunFolder(args.out, world, resume=getattr(args, "resume", False), overwrite=args.overwrite):
        try:
            result = body(args, world)
        except Interrupted as stop:
            if world.is_main:
                print(stop)
            result = None
    cleanup_distributed()  # not on errors: its barrier must not make one rank's error wait for the others
    return result


def write_config(world: World, out: str | Path, /, **content: Any) -> None:
    """Write ``out/config.json`` on rank 0: ``content`` (e.g. ``args=vars(args)``), the number of processes and the
    command line (values JSON cannot hold are written as strings)."""
    if world.is_main:
        config = {**content, "world_size": world.world_size, "command": sys.argv}
        (Path(out) / "config.json").write_text(json.dumps(config, indent=2, default=str))


def run_cli(main: Callable[[argparse.Namespace], Any], parser: argparse.ArgumentParser,
            argv: list[str] | None = None) -> None:  # fmt: skip
    """Parse ``argv``, run ``main(args)`` and exit: 0 on success, 2 with one line ``error: ...`` on stderr (a
    multi-line message joined into one) for an expected error (``ValueError``, ``FileNotFoundError``,
    :class:`RunError`; bad input, missing files, a taken folder), 130 with one line for Ctrl-C (naming ``--resume``
    where the program has it). Anything else is a bug and keeps its traceback."""
    args = parser.parse_args(argv)
    try:
        main(args)
    except (ValueError, FileNotFoundError) as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())  # one line
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)  # no barrier: under torchrun, one rank's error must not wait for the others
    except KeyboardInterrupt:
        hint = ": continue the run from its last checkpoint with --resume" if hasattr(args, "resume") else ""
        print(f"{parser.prog}: interrupted{hint}", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
