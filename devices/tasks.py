"""Stopping background tasks for sure.

Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that arrives just as the awaited
future completes (CPython gh-86296, fixed in 3.12); aiomqtt awaits through ``wait_for`` in
``publish`` and ``connect``. A task cancelled at that instant carries on, and a plain
``task.cancel(); await task`` then waits for ever. ``cancel_and_wait`` cancels again until the
tasks end, within a bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], *, rounds: int = 4, round_s: float = 0.5
) -> bool:
    """Cancel ``tasks`` and wait for them to end, cancelling again each ``round_s`` for up to
    ``rounds`` rounds; ``True`` when all have ended. Their results and exceptions are consumed."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=round_s)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at shutdown
    return not pending
