"""Background tasks stop for sure, even when one cancellation is swallowed (Python 3.11)."""

from __future__ import annotations

import asyncio
import contextlib

from devices.tasks import cancel_and_wait


async def _swallows_one_cancellation() -> None:
    # what asyncio.wait_for in 3.11 can do to a task cancelled as its future completes
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(30)
    await asyncio.sleep(30)


async def _ignores_cancellation(release: asyncio.Event) -> None:
    while not release.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await release.wait()


async def _fails() -> None:
    raise RuntimeError("boom")


async def test_a_task_that_swallowed_a_cancellation_is_cancelled_again() -> None:
    task = asyncio.create_task(_swallows_one_cancellation())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], round_s=0.2)
    assert task.done()


async def test_a_task_that_ignores_cancellation_is_reported_within_the_bound() -> None:
    release = asyncio.Event()
    task = asyncio.create_task(_ignores_cancellation(release))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await cancel_and_wait([task], rounds=3, round_s=0.1)
    assert loop.time() - started < 2.0  # three rounds of 0.1 s, with room for a busy machine
    release.set()  # leave nothing behind
    await task


async def test_finished_and_failed_tasks_are_consumed() -> None:
    failed = asyncio.create_task(_fails())
    await asyncio.sleep(0)
    assert await cancel_and_wait([failed])
    assert isinstance(failed.exception(), RuntimeError)
