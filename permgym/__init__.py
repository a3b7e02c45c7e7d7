"""permgym: learned permutation sampling for ordering-based self-supervision, as a Gymnasium environment.

``import permgym`` registers the environments; ``gym.make("permgym:PermSampling-v0")`` works without the import.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

#: (env id, preset name, nondeterministic) — every id is backed by permgym.env:PermSamplingEnv.
ENV_IDS: tuple[tuple[str, str, bool], ...] = (
    ("PermSampling-v0", "tiny", False),
    ("PermSampling-Spatial-v0", "tiny-spatial", False),
    ("PermSampling-Joint-v0", "tiny-joint", False),
    ("PermSampling-UCF101-v0", "ucf101", True),
)


def register_envs() -> None:
    """Register every PermSampling id (idempotent: ids already in the registry are skipped)."""
    for env_id, preset, nondeterministic in ENV_IDS:
        if env_id not in registry:
            register(
                id=env_id,
                entry_point="permgym.env:PermSamplingEnv",
                kwargs={"config": preset},
                nondeterministic=nondeterministic,
            )


register_envs()
