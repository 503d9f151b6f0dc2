"""Loopback helpers shared by the test folders: free ports, waiting for a listener.

A port a test hands to another program (Mosquitto, Prometheus, ``feederd sim --serve``) is
chosen below the kernel's ephemeral range, so no outgoing connection of any process can be
given it meanwhile, and in a slice of that space of its own per pytest-xdist worker, so two
workers never pick the same one; it is checked free by binding it. Servers of our own bind
port 0 instead and report the port they got.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from pathlib import Path

__all__ = ["free_block", "free_port", "wait_port"]

_LOWEST = 10000
_rng = random.Random()


def _ephemeral_low() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    return 32768


def _slice() -> tuple[int, int]:
    """This worker's ports: [lo, hi)."""
    top = _ephemeral_low()
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (top - _LOWEST) // workers
    lo = _LOWEST + (worker % workers) * size
    return lo, lo + size


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_block(size: int) -> int:
    """A base port with ``size`` free ports from it (checked, not reserved)."""
    lo, hi = _slice()
    if hi - lo < size + 1:  # no room below the ephemeral range: let the kernel choose
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for _ in range(200):
        base = _rng.randrange(lo, hi - size)
        if all(_bindable(p) for p in range(base, base + size)):
            return base
    raise RuntimeError(f"no {size} free ports in {lo}..{hi}")


def free_port() -> int:
    return free_block(1)


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
