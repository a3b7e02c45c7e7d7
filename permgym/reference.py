"""Reference scores of the registered CPU ids: uniform, stratified and look-ahead oracle samplers (D4RL-style).

The numbers live in ``permgym/reference_scores.json``, written by ``python bench/reference_scores.py`` (never typed
by hand): per env id, the config the references were measured with, the command, the evaluation seeds and, per
sampler, mean ± 95 % t-interval over those seeds of the episode return, held-out ordering accuracy (report pool),
linear-probe top-1 and retrieval top-1 (SyntheticActions test clips). The normalised score of an episode is
``(return - stratified) / (oracle - stratified)`` with the stratified sampler's and the best oracle's mean returns:
0 is the static baseline every learned sampler must beat, 1 the greedy look-ahead oracle.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from permgym.config import PermSamplingConfig

REFERENCE_PATH = Path(__file__).with_name("reference_scores.json")
#: Config fields that do not change an episode's return, so a reference applies whatever their value (the
#: references are measured in per_sample mode; the reward does not depend on how the action is expressed).
IGNORED_FIELDS = ("action_mode", "temperature", "discrete_groups", "torch_threads", "device")


def _load() -> dict[str, Any]:
    return _read(REFERENCE_PATH)


@lru_cache(maxsize=4)
def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def reference_scores(env_id: str) -> dict[str, Any]:
    """The reference entry of ``env_id`` (see the module docstring), a fresh copy.

    Raises:
        KeyError: no reference was measured for ``env_id``; the message lists the ids that have one.
    """
    table = _load()
    if env_id not in table:
        raise KeyError(f"no reference scores for {env_id!r}; ids with references: {', '.join(table) or 'none'}")
    return copy.deepcopy(table[env_id])


def normalization_bounds(entry: dict[str, Any]) -> tuple[float, float]:
    """``(stratified, oracle)`` mean returns of a reference entry (the best oracle's)."""
    samplers = entry["samplers"]
    oracles = [v["return"]["mean"] for k, v in samplers.items() if k.startswith("oracle")]
    return samplers["stratified"]["return"]["mean"], max(oracles)


def comparable(config: PermSamplingConfig) -> dict[str, Any]:
    """The fields of ``config`` that a reference must match."""
    return {k: v for k, v in config.to_dict().items() if k not in IGNORED_FIELDS}


def reference_for(config: PermSamplingConfig) -> dict[str, Any] | None:
    """The reference entry measured with ``config`` (up to :data:`IGNORED_FIELDS`), or None."""
    wanted = comparable(config)
    for entry in _load().values():
        if comparable(PermSamplingConfig(**entry["config"])) == wanted:  # fields added since: their defaults
            return entry
    return None


def normalized_score(episode_return: float, entry: dict[str, Any]) -> float:
    """``(return - stratified) / (oracle - stratified)`` for a reference entry; NaN when the oracle's mean return is
    not above stratified's (no headroom was measured, so there is no scale to normalise by)."""
    stratified, oracle = normalization_bounds(entry)
    span = oracle - stratified
    return (episode_return - stratified) / span if span > 0 else float("nan")


def markdown_table() -> str:
    """The reference scores of every id as a Markdown table (for the env's docstring); empty when none exist."""
    table = _load()
    if not table:
        return ""
    lines = ["| id | sampler | return | held-out ordering acc % | probe top-1 % | retrieval top-1 % |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for env_id, entry in table.items():
        for name, row in entry["samplers"].items():
            cells = [f"{row['return']['mean']:.3f} ± {row['return']['ci95']:.3f}"]
            cells += [f"{100 * row[k]['mean']:.1f} ± {100 * row[k]['ci95']:.1f}"
                      for k in ("heldout_accuracy", "probe_top1", "retrieval_top1")]  # fmt: skip
            lines.append(f"| ``{env_id}`` | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
