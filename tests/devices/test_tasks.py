"""Background tasks stop for sure, even when one cancellation is swallowed (Python 3.11)."""

from __future__ import annotations

import asyncio
import contextlib

from devices.tasks import cancel_and_wait


async def _swallows_one_cancellation(started: asyncio.Event) -> None:
    # what asyncio.wait_for in 3.11 can do to a task cancelled as its future completes
    started.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(30)
    await asyncio.sleep(30)


async def _ignores_cancellation(
    started: asyncio.Event, release: asyncio.Event, cancellations: list[int]
) -> None:
    started.set()
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancellations.append(1)


async def _fails() -> None:
    raise RuntimeError("boom")


async def test_a_task_that_swallowed_a_cancellation_is_cancelled_again() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(_swallows_one_cancellation(started))
    await started.wait()  # inside the first sleep, where the cancellation is swallowed
    assert await cancel_and_wait([task], round_s=0.05)
    assert task.done()
    assert task.cancelled()


async def test_a_task_that_ignores_cancellation_is_reported_within_the_bound() -> None:
    # was: cancel_and_wait returned within 2 s of wall time. What that protects: it gives up
    # after its bounded number of rounds instead of waiting for ever; count the rounds.
    started, release = asyncio.Event(), asyncio.Event()
    cancellations: list[int] = []
    task = asyncio.create_task(_ignores_cancellation(started, release, cancellations))
    await started.wait()
    assert not await cancel_and_wait([task], rounds=3, round_s=0.05)
    assert len(cancellations) == 3  # one cancellation per round, then it reports failure
    assert not task.done()
    release.set()  # leave nothing behind
    await task


async def test_finished_and_failed_tasks_are_consumed() -> None:
    failed = asyncio.create_task(_fails())
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.wait({failed, done})
    assert await cancel_and_wait([failed, done])
    assert isinstance(failed.exception(), RuntimeError)
    assert not done.cancelled()
