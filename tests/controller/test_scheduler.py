"""The tick grid: t0 + k·interval on an injected clock, overruns counted and never queued."""

from __future__ import annotations

import asyncio
from pathlib import Path

from controller.clock import FakeClock
from controller.config import parse_config
from controller.loop import Controller
from controller.records import CycleRecord


def _config(interval_s: float) -> dict[str, object]:
    return {
        "site": "sched",
        "interval_s": interval_s,
        "feeder": {"case": "builtin:case33bw"},
        "devices": [
            {
                "name": "head",
                "kind": "meter",
                "head": True,
                "bus": 1,
                "host": "127.0.0.1",
                "port": 9,
            }
        ],
    }


class TimedController(Controller):
    """Runs no I/O: each cycle only records when it started and takes a scripted time."""

    def __init__(self, durations: list[float], clock: FakeClock) -> None:
        loaded = parse_config(_config(1.0), source="<test>", base_dir=Path.cwd())
        super().__init__(loaded, clock=clock, fleet={})
        self.fake = clock
        self.durations = durations
        self.starts: list[float] = []
        self.stop = asyncio.Event()

    async def cycle(self) -> CycleRecord:  # type: ignore[override]
        self.starts.append(self.fake.monotonic())
        self.fake.advance(self.durations[len(self.starts) - 1])
        if len(self.starts) == len(self.durations):
            self.stop.set()
        return None  # type: ignore[return-value]


async def test_ticks_stay_on_the_grid_and_an_overrun_skips_missed_ticks() -> None:
    clock = FakeClock()
    ctl = TimedController([0.2, 0.3, 2.5, 0.2, 0.9], clock)
    await asyncio.wait_for(ctl.run(ctl.stop), 5)
    # no drift despite the cycles' own durations; the overrun at t=2 (ending at 4.5) skips
    # the ticks at 3 and 4 instead of queueing them
    assert ctl.starts == [0.0, 1.0, 2.0, 5.0, 6.0]
    assert ctl.overruns == 1
    assert ctl.metrics.overruns._value.get() == 1


async def test_stop_interrupts_the_wait_for_the_next_tick() -> None:
    class SlowSleepClock(FakeClock):
        """Time that passes for real: a sleep until the next tick takes an hour."""

        def __init__(self) -> None:
            super().__init__()
            self.sleeping = asyncio.Event()

        async def sleep(self, seconds: float) -> None:
            self.sleeping.set()
            await asyncio.sleep(3600)

    clock = SlowSleepClock()
    ctl = TimedController([0.1] * 100, clock)
    task = asyncio.create_task(ctl.run(ctl.stop))
    await asyncio.wait_for(clock.sleeping.wait(), 10)  # the first cycle ran; now it waits
    ctl.stop.set()
    await asyncio.wait_for(task, 10)  # a hang guard: the stop ends the wait for the tick
    assert len(ctl.starts) == 1
