"""permgym: learned permutation sampling for ordering-based self-supervision, as a Gymnasium environment."""

from __future__ import annotations

__version__ = "0.1.0"
