"""The daemon's view of device health: up, degraded, down, and the age of the last good reading."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controller.clock import SystemClock
from controller.config import LoadedConfig
from controller.daemon import Controller
from devices import DeviceState
from hil import HilRig


async def test_a_silent_device_degrades_then_goes_down_and_recovers(
    rig: HilRig, make_config: Callable[..., LoadedConfig]
) -> None:
    loaded = make_config(interval_s=0.5, stale_after_intervals=2)
    ctl = Controller(loaded, clock=SystemClock())
    victim = next(d.name for d in rig.devices if d.kind == "pv")
    other = next(d.name for d in rig.devices if d.kind == "battery")
    try:
        await ctl.cycle()
        assert ctl.health[victim].state is DeviceState.UP
        rig.set_silent(victim, True)
        await ctl.cycle()
        assert ctl.health[victim].state is DeviceState.DEGRADED
        await ctl.cycle()
        health = ctl.health[victim]
        assert health.state is DeviceState.DOWN
        age = health.age_s()
        assert age is not None
        assert age > 0.1  # two polls ago
        assert ctl.health[other].state is DeviceState.UP
        assert (ctl.health[other].age_s() or 0.0) < age
        rig.set_silent(victim, False)
        await asyncio.sleep(0.1)
        for _ in range(5):
            await ctl.cycle()
            if ctl.health[victim].state is DeviceState.UP:
                break
        assert ctl.health[victim].state is DeviceState.UP
    finally:
        await ctl.close()
