"""Shared test settings."""

from __future__ import annotations

import os

# Every process a test starts (scripts, torchrun, vector-env workers) computes on one thread too: pytest-xdist runs
# one test per core, so a child with torch's default of one thread per core would oversubscribe them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors on a 2-core machine: one intra-op thread avoids spin-waiting (and restores the count after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
