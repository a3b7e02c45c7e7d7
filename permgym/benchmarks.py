"""Writing one section of BENCHMARKS.md (used by the bench scripts and ``python -m agents.evaluate``)."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(heading: str, text: str, path: str | Path) -> None:
    """Replace the section of ``path`` that starts with the line ``heading`` (up to the next ``## `` heading) by
    ``text``, or append ``text`` when there is no such section; every other section is left as it is.

    Args:
        heading: the section's heading line, e.g. ``"## Environment step (bench/env_step.py)"``.
        text: the new section, heading included.
        path: the Markdown file (created with a ``# Benchmarks`` title if missing).
    """
    path = Path(path)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    body = text.rstrip("\n") + "\n\n"
    new = pattern.sub(lambda _: body, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + body
    path.write_text(new.rstrip("\n") + "\n")
