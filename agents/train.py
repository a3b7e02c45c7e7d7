"""Train a Stable-Baselines3 agent (PPO, A2C or DQN) in a PermSampling env.

    python -m agents.train --algo ppo --env-id PermSampling-v0 --n-envs 2 --total-timesteps 5000
    python -m agents.train --algo dqn --env-kwargs steps_per_episode=40 batch_size=16
    python -m agents.train --algo ppo --resume runs/agents_train/ppo/checkpoints/ppo_500_steps.zip

Training episodes cycle through ``--train-seeds`` (one list per env worker), ``EvalCallback`` evaluates on the
disjoint ``--eval-seeds`` and keeps the best model; checkpoints, TensorBoard logs, ``config.json`` and the final
``model.zip`` go to ``--out/ALGO``. DQN needs a discrete action space, so ``action_mode="discrete"`` (difficulty
groups) is set for it automatically. There is no MaskablePPO option: no action is ever invalid.
"""

from __future__ import annotations

import argparse
import importlib
import json
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback

import permgym  # registers the env ids
from agents.sb3 import ALGOS, default_algo_kwargs, make_seeded_vec_env, require_algo
from permgym.config import PermSamplingConfig, make_config
from permgym.run import (
    RunFolder,
    check_same_config,
    parse_key_value,
    require_at_least,
    require_positive,
    run_cli,
)


def env_config(env_id: str, env_kwargs: dict[str, Any]) -> PermSamplingConfig:
    """The config ``gym.make(env_id, **env_kwargs)`` builds (its preset plus the overrides), without building it.

    Raises:
        ValueError: ``env_id`` is not registered, or an override is unknown or of the wrong type (the message names
            it and the valid options).
    """
    ids = ", ".join(known for known, _, _ in permgym.ENV_IDS)
    module, _, name = env_id.rpartition(":")  # gym.make's "module:Id" form imports the module first
    try:
        if module:
            importlib.import_module(module)
        spec = gym.spec(name)
    except ImportError as err:
        raise ValueError(
            f"--env-id {env_id!r}: cannot import {module!r} ({err}); PermSampling's ids are {ids}"
        ) from None
    except gym.error.Error as err:
        raise ValueError(f"--env-id {env_id!r}: {err}; PermSampling's ids are {ids}") from None
    if "config" not in spec.kwargs:
        raise ValueError(f"--env-id {env_id!r} is not a PermSampling env; choose one of {ids}")
    try:
        return make_config(spec.kwargs.get("config", "tiny"), **env_kwargs)
    except TypeError as err:
        raise ValueError(f"--env-kwargs: {err}") from None


def resolve_env_kwargs(algo: str, env_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The env kwargs for ``algo``: ``overrides`` plus ``action_mode="discrete"`` for DQN (refusing another mode)."""
    kwargs = dict(overrides)
    if algo == "dqn":
        if kwargs.get("action_mode", "discrete") != "discrete":
            raise ValueError(f"dqn needs action_mode='discrete' (a Discrete space), got {kwargs['action_mode']!r}")
        if "action_mode" not in kwargs:
            print("agents.train: dqn acts in a Discrete space: using action_mode='discrete' (difficulty groups)")
        kwargs["action_mode"] = "discrete"
    env_config(env_id, kwargs)  # fail early on a bad override
    return kwargs


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--algo", choices=sorted(ALGOS), default="ppo", help="SB3 algorithm (default: ppo)")
    parser.add_argument("--env-id", default="PermSampling-v0", help="registered env id (default: PermSampling-v0)")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", type=parse_key_value,
                        help="env config overrides (JSON values, else strings), e.g. steps_per_episode=40 "
                        "batch_size=16 warm_start=null (default: none)")  # fmt: skip
    parser.add_argument("--n-envs", type=int, default=2, help="parallel envs, SubprocVecEnv if > 1 (default: 2)")
    parser.add_argument("--total-timesteps", type=int, default=2000, help="env steps in total (default: 2000)")
    parser.add_argument("--n-steps", type=int, default=None,
                        help="rollout length per env for ppo/a2c (default: ppo one episode, a2c 5)")  # fmt: skip
    parser.add_argument("--learning-rate", type=float, default=None, help="override the algorithm's step size")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=list(range(5)),
                        help="instance seeds of training episodes (default: 0 1 2 3 4)")  # fmt: skip
    parser.add_argument("--eval-seeds", type=int, nargs="*", default=[100, 101, 102],
                        help="held-out instance seeds for EvalCallback; none disables it (default: 100 101 102)")  # fmt: skip
    parser.add_argument("--eval-freq", type=int, default=None,
                        help="evaluate every this many steps per env (default: 4 episodes)")  # fmt: skip
    parser.add_argument("--checkpoint-freq", type=int, default=None,
                        help="checkpoint every this many steps per env (default: 2 episodes)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the agent's initialisation and sampling")
    parser.add_argument("--out", default="runs/agents_train", help="output folder (default: runs/agents_train)")
    parser.add_argument("--resume", default=None, metavar="PATH.zip",
                        help="continue from this checkpoint .zip up to --total-timesteps")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --out/ALGO that holds another run: its files are moved to "
                        "--out/ALGO.previous/ (replacing an older backup there), never mixed with the new run's")  # fmt: skip
    parser.add_argument("--no-progress-bar", action="store_true", help="do not show SB3's progress bar")
    parser.add_argument("--verbose", type=int, default=0, help="SB3 verbosity (default: 0)")
    return parser


def train(args: argparse.Namespace) -> Path:
    """Train (or resume) as ``args`` say; returns the path of the final ``model.zip``.

    Raises:
        ValueError: a bad option (the message names it), or ``--out/ALGO`` holds another run (without ``--resume``
            or ``--overwrite``) or is in use by a running one.
        FileNotFoundError: the ``--resume`` checkpoint does not exist.
    """
    require_at_least(args, 1, "n_envs", "total_timesteps", "n_steps", "eval_freq", "checkpoint_freq")
    require_positive(args, "learning_rate")
    overlap = sorted(set(args.train_seeds) & set(args.eval_seeds))
    if overlap:
        raise ValueError(f"--train-seeds and --eval-seeds must be disjoint; both contain {overlap}")
    if args.resume is not None:
        if not Path(args.resume).is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {args.resume!r} (give the .zip file itself)")
        try:
            require_algo(args.resume, args.algo)
        except ValueError as err:
            raise ValueError(f"--resume: {err}") from None
    env_kwargs = resolve_env_kwargs(args.algo, args.env_id, dict(args.env_kwargs))
    algo_kwargs = None if args.resume else new_algo_kwargs(args, env_config(args.env_id, env_kwargs).steps_per_episode)
    with RunFolder(Path(args.out) / args.algo, resume=args.resume is not None, overwrite=args.overwrite) as run:
        return _train(args, env_kwargs, algo_kwargs, run.path)


def new_algo_kwargs(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """The SB3 constructor settings of a new agent: the defaults for episodes of ``steps`` steps and the flags.

    Raises:
        ValueError: PPO with rollouts of one step (its minibatch is one rollout, and SB3 needs >= 2 samples).
    """
    kwargs = default_algo_kwargs(args.algo, steps)
    if args.n_steps is not None and args.algo != "dqn":
        kwargs["n_steps"] = args.n_steps
        if args.algo == "ppo":
            kwargs["batch_size"] = args.n_steps
    if args.learning_rate is not None:
        kwargs["learning_rate"] = args.learning_rate
    if args.algo == "ppo" and kwargs["batch_size"] < 2:
        given = f"--n-steps {args.n_steps}" if args.n_steps is not None else f"steps_per_episode={steps}"
        raise ValueError(f"ppo needs rollouts of >= 2 steps (a minibatch is one rollout), got {given}; pass --n-steps 2 "
                         "or more")  # fmt: skip
    return kwargs


#: Options that do not change how the agent trains: they may differ between a run and its --resume (the env's
#: options are compared through ``resolved_env_kwargs``).
RESUME_IGNORES = ("resume", "total_timesteps", "out", "overwrite", "no_progress_bar", "verbose", "eval_seeds",
                  "eval_freq", "checkpoint_freq", "env_kwargs")  # fmt: skip


def checkpoint_config(checkpoint: Path, out: Path) -> dict[str, Any] | None:
    """The config of the agents.train run that ``--resume`` continues: ``out``'s ``config.json``, else that of the
    run folder the checkpoint lies in (``ALGO/model.zip``, ``ALGO/checkpoints/*.zip``, ``ALGO/best/*.zip``); None
    for a zip from elsewhere."""
    for folder in (out, checkpoint.parent, checkpoint.parent.parent):
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):  # no config.json there, or not JSON
            continue
        if isinstance(config, dict) and "resolved_env_kwargs" in config:  # written by this program
            return config
    return None


def _train(args: argparse.Namespace, env_kwargs: dict[str, Any], algo_kwargs: dict[str, Any] | None,
           out: Path) -> Path:  # fmt: skip
    steps = env_config(args.env_id, env_kwargs).steps_per_episode
    config = json.loads(json.dumps({**vars(args), "resolved_env_kwargs": env_kwargs}))  # as config.json holds it
    if args.resume is not None:  # SB3 restores the agent's own settings; the env's and the seeds' are compared
        saved = checkpoint_config(Path(args.resume), out)
        if saved is not None:
            check_same_config(saved, config, RESUME_IGNORES)

    venv = make_seeded_vec_env(args.env_id, args.train_seeds, args.n_envs, env_kwargs)
    callbacks: list[BaseCallback] = [
        CheckpointCallback(args.checkpoint_freq or 2 * steps, str(out / "checkpoints"), name_prefix=args.algo)
    ]
    if args.eval_seeds:
        eval_env = make_seeded_vec_env(args.env_id, args.eval_seeds, 1, env_kwargs)
        callbacks.append(
            EvalCallback(eval_env, n_eval_episodes=len(args.eval_seeds), eval_freq=args.eval_freq or 4 * steps,
                         log_path=str(out / "eval"), best_model_save_path=str(out / "best"), verbose=args.verbose)
        )  # fmt: skip
    algo = ALGOS[args.algo]
    if algo_kwargs is None:
        model = algo.load(args.resume, env=venv, device="cpu", tensorboard_log=str(out / "tb"))
        remaining = max(0, args.total_timesteps - model.num_timesteps)
    else:
        model = algo("MlpPolicy", venv, seed=args.seed, device="cpu", tensorboard_log=str(out / "tb"),
                     verbose=args.verbose, **algo_kwargs)  # fmt: skip
        remaining = args.total_timesteps
    (out / "config.json").write_text(json.dumps(config, indent=2))  # once the agent exists (a refused load: no run)
    with warnings.catch_warnings():  # SubprocVecEnv training, DummyVecEnv evaluation (one process): as intended
        warnings.filterwarnings("ignore", message="Training and eval env are not of the same type")
        model.learn(remaining, callback=callbacks, reset_num_timesteps=not args.resume,
                    progress_bar=not args.no_progress_bar, tb_log_name=args.algo)  # fmt: skip
    path = out / "model.zip"
    model.save(path)
    venv.close()
    if args.eval_seeds:
        eval_env.close()
    return path


def run(args: argparse.Namespace) -> Path:
    """Train as the parsed ``args`` say and report where the model went."""
    path = train(args)
    print(f"agents.train: saved {path}")
    return path


def main(argv: list[str] | None = None) -> Path:
    """:func:`run` for command-line arguments ``argv`` (default: ``sys.argv[1:]``)."""
    return run(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    run_cli(run, get_args_parser())
