"""Time, injected: the daemon never calls ``time`` or ``asyncio.sleep`` directly.

A ``Clock`` gives monotonic seconds, the wall-clock time, ``sleep`` and ``wait`` (a set of tasks
with a deadline: the poll, solve and write phases). ``SystemClock`` is the real one.
``FakeClock`` is shipped for tests and the HIL: it moves only when told to or when someone
sleeps on it, so the real daemon runs in simulated time. Under it, I/O takes no simulated time:
``wait`` lets every task finish (each bounds itself: a Modbus request has its own timeout) and
cuts only what stalls for ``stall_s`` real seconds, so a deadline never depends on how busy the
machine is.

Below the controller (device links, health, the HIL rig) time is the bound method
``clock.monotonic``: one clock, seen there as a function.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]

Tasks = tuple[set[asyncio.Future[Any]], set[asyncio.Future[Any]]]


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, tasks: Iterable[asyncio.Future[Any]], timeout_s: float) -> Tasks:
        """Wait for ``tasks`` until ``timeout_s`` has passed; returns (done, pending)."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    async def wait(self, tasks: Iterable[asyncio.Future[Any]], timeout_s: float) -> Tasks:
        pending = set(tasks)
        if not pending:
            return set(), set()
        return await asyncio.wait(pending, timeout=max(timeout_s, 0.0))


class FakeClock:
    """A clock that only moves when told to, or when someone sleeps on it."""

    def __init__(self, start: datetime | None = None, *, stall_s: float = 60.0) -> None:
        self._t = 0.0
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.stall_s = stall_s
        """Real seconds after which ``wait`` gives up on a task that never ends (a hang)."""

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._t)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self._t += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    async def wait(self, tasks: Iterable[asyncio.Future[Any]], timeout_s: float) -> Tasks:
        pending = set(tasks)
        if not pending:
            return set(), set()
        return await asyncio.wait(pending, timeout=self.stall_s)
