"""Shared by the bench scripts: machine description, medians, and writing one section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from permgym.benchmarks import write_section as _write_section

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine_info() -> str:
    """CPU model, usable cores, current load, and the Python/torch versions."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        model = found.group(1).strip() if found else model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f", load average {os.getloadavg()[0]:.1f} at the start" if hasattr(os, "getloadavg") else ""
    return f"{model}, {cores} cores available{load}; Python {platform.python_version()}, torch {torch.__version__}"


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_section(heading: str, text: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section ``heading`` of BENCHMARKS.md by ``text``."""
    _write_section(heading, text, path)


def publish(heading: str, lines: list[str], write: bool = True) -> str:
    """Print a bench's report (its ``lines``) and, when ``write``, make it the section ``heading`` of BENCHMARKS.md.

    Returns:
        The report's text.
    """
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        write_section(heading, text)
    return text
