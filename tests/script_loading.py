"""Loading a script that is not part of a package (``experiments/*.py``, ``bench/*.py``) as a module in a test."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_script(path: Path, name: str, monkeypatch: pytest.MonkeyPatch | None = None) -> ModuleType:
    """Execute the script at ``path`` as the module ``name`` and return it.

    The script's folder goes on ``sys.path`` (scripts import their siblings, e.g. ``experiments/reporting.py``, as
    when run as ``python path``) and the module into ``sys.modules`` under ``name`` (dataclasses look their module
    up there). With ``monkeypatch`` both are undone after the test; without, they stay for the session (a script
    loaded once at a test module's import).
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if monkeypatch is None:
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        sys.modules[name] = module
    else:
        monkeypatch.syspath_prepend(str(path.parent))
        monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module
