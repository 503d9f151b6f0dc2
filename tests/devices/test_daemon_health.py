"""The daemon's view of device health: up, degraded, stale, the age of the last good reading,
and one log line per change of state.

The daemon and the rig run on one simulated clock (``tests.support.feeder``): an interval costs
no wall time, and the age of a reading is exact. Only a silent device's request timeout is real
(it is what makes the device silent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import structlog

from controller.records import CycleStatus
from devices import DeviceState
from tests.support.feeder import feeder


async def test_a_silent_device_degrades_then_goes_stale_and_recovers() -> None:
    async with feeder(poll={"stale_after_intervals": 2}) as sim:
        ctl = sim.daemon.controller
        interval = sim.interval_s
        victim = next(d.name for d in sim.rig.devices if d.kind == "pv")
        other = next(d.name for d in sim.rig.devices if d.kind == "battery")
        await sim.step()
        assert ctl.health[victim].state is DeviceState.UP
        sim.rig.set_silent(victim, True)
        await sim.step()
        assert ctl.health[victim].state is DeviceState.DEGRADED
        assert ctl.health[victim].failures == 1
        await sim.step()
        health = ctl.health[victim]
        assert health.state is DeviceState.STALE  # was DOWN: given up after two misses
        assert health.stale
        age = health.age_s()
        assert age is not None
        # was: more than 0.1 s of wall time. On the simulated clock: its last good reading is
        # from the first of three intervals
        assert age == pytest.approx(3 * interval)
        assert ctl.health[other].state is DeviceState.UP
        assert ctl.health[other].age_s() == pytest.approx(interval)
        assert (ctl.health[other].age_s() or 0.0) < age
        sim.rig.set_silent(victim, False)
        # was: a sleep, then up to five cycles until it answered. The next poll is enough.
        rec = await sim.step()
        assert ctl.health[victim].state is DeviceState.UP
        assert victim not in rec.devices_missing
        assert ctl.health[victim].failures == 0
        assert ctl.health[victim].errors == 2
        assert ctl.health[victim].age_s() == pytest.approx(interval)


def _lines(logs: Sequence[Mapping[str, Any]], device: str) -> list[tuple[str, str]]:
    return [(e["event"], e["log_level"]) for e in logs if e.get("device") == device]


async def test_an_outage_logs_one_line_per_transition_and_nothing_while_it_lasts() -> None:
    silent_intervals = 4  # degraded after one, stale after two, two more while stale
    async with feeder(poll={"stale_after_intervals": 2}) as sim:
        victim = next(d.name for d in sim.rig.devices if d.kind == "pv")
        others = [d.name for d in sim.rig.devices if d.name != victim]
        per_interval: list[list[tuple[str, str]]] = []
        with structlog.testing.capture_logs() as logs:
            for i in range(1 + silent_intervals + 2):
                sim.rig.set_silent(victim, 1 <= i <= silent_intervals)
                start = len(logs)
                rec = await sim.step()
                assert rec.status is CycleStatus.OPTIMAL, rec
                per_interval.append(_lines(logs[start:], victim))
    assert _lines(logs, victim) == [
        ("device_up", "debug"),  # first contact
        ("device_degraded", "warning"),
        ("device_stale", "error"),
        ("device_recovered", "info"),
    ]
    # each line in the interval where the state changed, and nothing in between
    assert per_interval == [
        [("device_up", "debug")],
        [("device_degraded", "warning")],
        [("device_stale", "error")],
        [],
        [],
        [("device_recovered", "info")],
        [],
    ]
    degraded, stale, recovered = (
        next(e for e in logs if e.get("device") == victim and e["event"] == event)
        for event in ("device_degraded", "device_stale", "device_recovered")
    )
    assert degraded["reason"]  # why it is missing
    assert stale["missed_intervals"] == 2
    assert stale["last_good_age_s"] == pytest.approx(2 * sim.interval_s)
    assert recovered["after_intervals"] == silent_intervals
    # the devices that kept answering said nothing beyond their first contact
    for name in others:
        assert _lines(logs, name) == [("device_up", "debug")], name
