"""Torch's intra-op thread count, set for one block of compute and restored after it.

``torch.set_num_threads`` is process-global: an env that set it at construction would change the threads of the
agent, of other envs and of anything else in the process, and N processes that each keep torch's default (one
thread per core) oversubscribe the cores (on a shared 2-core machine the default preset fell from ~7 to ~0.3
steps/s with two such processes). Envs therefore run their own compute inside :func:`torch_threads` with the
config's ``torch_threads`` and leave the process's setting as they found it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads, then restore the count the process had.

    Args:
        threads: threads for the block; ``None`` leaves the process's setting alone.

    Raises:
        ValueError: ``threads`` is not ``None`` and smaller than 1.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"torch_threads must be None or >= 1, got {threads}")
    previous = torch.get_num_threads()
    if threads is None or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
