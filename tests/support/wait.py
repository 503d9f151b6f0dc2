"""Waiting for something a real server or broker does, on the event loop.

``until`` polls a condition every few milliseconds (``eventually``: one that must be awaited,
e.g. asked of a daemon's worker thread); its guard only turns a hang into a clear failure (it is
never what a test measures: the condition is).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["HANG_GUARD_S", "eventually", "until"]

HANG_GUARD_S = 30.0
"""How long (real seconds) a wait may take before it is a failure, not a slow machine."""


async def until(done: Callable[[], bool], what: str, *, guard_s: float = HANG_GUARD_S) -> None:
    """Return once ``done()`` is true; fail naming ``what`` after ``guard_s`` real seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + guard_s
    while not done():
        if loop.time() > deadline:
            raise AssertionError(f"gave up after {guard_s:g} s waiting for {what}")
        await asyncio.sleep(0.005)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, *, guard_s: float = HANG_GUARD_S
) -> None:
    """``until`` for a condition that must be awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + guard_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up after {guard_s:g} s waiting for {what}")
        await asyncio.sleep(0.005)
