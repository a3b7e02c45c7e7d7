"""Helpers for tests that start several processes (torch.multiprocessing.spawn of a script's ``main``)."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 now: one ``MASTER_PORT`` per process group a test starts."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports
