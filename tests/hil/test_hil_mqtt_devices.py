"""PV inverters behind MQTT in the rig: a real Mosquitto, the daemon's own MQTT driver.

The daemon and the rig run on a simulated clock (``tests.support.feeder``); MQTT runs in real
time by nature, so between intervals the test waits for what travels over the broker (the
setpoints applied by the rig's bridge, fresh telemetry back), never for a fixed time.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.clock import FakeClock
from controller.commands.rig.simulation import Simulation
from controller.records import CycleRecord, CycleStatus
from devices import MqttDevice
from hil import HilRig
from hil.broker import find_mosquitto
from tests.support.feeder import feeder
from tests.support.wait import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

MQTT_BUSES = (18, 33)
RIG_MQTT: dict[str, Any] = {
    "load_scale": lambda _t: 0.02,
    "pv_available_frac": lambda _t: 1.0,
    "pv_buses": MQTT_BUSES,
    "battery_buses": (),
    "mqtt_pv_buses": MQTT_BUSES,
}
"""Real seconds to wait for the broker before calling it a hang (it takes milliseconds)."""


def _mqtt_drivers(sim: Simulation) -> list[MqttDevice]:
    return [d for d in sim.daemon.fleet.values() if isinstance(d, MqttDevice)]


async def _fresh_telemetry(sim: Simulation) -> None:
    """Wait until every MQTT driver holds telemetry received at the clock's current time."""
    drivers = _mqtt_drivers(sim)
    await until(lambda: all(d.age_s() == 0.0 for d in drivers), "fresh MQTT telemetry")


async def _step(sim: Simulation) -> CycleRecord:
    """One interval, with MQTT's side of it: the physics, one cycle, the setpoints over the
    broker to the inverters, then the clock moved on and fresh telemetry back."""
    bridge = sim.rig._bridge  # the rig's own bridge: it counts the setpoints it applied
    assert bridge is not None
    applied = bridge.applied_setpoints
    await sim.rig.step()
    rec = await sim.daemon.controller.cycle()
    sent = sum(1 for d in _mqtt_drivers(sim) if d.name in rec.setpoints_kw)
    await until(lambda: bridge.applied_setpoints >= applied + sent, "the setpoints applied")
    sim.clock.advance(sim.interval_s)
    await _fresh_telemetry(sim)
    return rec


async def test_the_daemon_curtails_mqtt_inverters_through_the_broker() -> None:
    async with feeder(rig=RIG_MQTT) as sim:
        state = await sim.physics()
        mqtt = [d for d in sim.rig.devices if d.mqtt_root is not None]
        assert [d.name for d in mqtt] == ["pv18", "pv33"]
        exporting_kw = -state.head_p_kw
    assert exporting_kw > 150.0, "light load and full sun: the feeder exports"
    export_limit_kw = exporting_kw - 120.0
    async with feeder(rig=RIG_MQTT, dr={"export_limit_kw": export_limit_kw}) as sim:
        loaded = sim.loaded
        assert {d.transport.type for d in loaded.config.devices} == {"tcp", "mqtt"}
        await _fresh_telemetry(sim)  # the drivers are connected and have heard the inverters
        statuses = []
        for _ in range(8):
            rec = await _step(sim)
            statuses.append(rec.status)
        assert CycleStatus.OPTIMAL in statuses, statuses
        assert not rec.devices_missing, rec.devices_missing
        # the physics: the export is down to the limit, by limits that came over MQTT
        state = await sim.physics()
        assert -state.head_p_kw <= export_limit_kw * 1.02, (state.head_p_kw, export_limit_kw)
        assert any(sim.rig.sim(d.name).limit_enabled for d in mqtt)  # type: ignore[attr-defined]
        assert sim.rig.curtailed_kw > 100.0


async def test_a_bad_setpoint_is_counted_and_changes_nothing() -> None:
    clock = FakeClock()
    async with HilRig(
        monotonic=clock.monotonic,
        physics_period_s=None,
        pv_buses=(18,),
        battery_buses=(),
        mqtt_pv_buses=(18,),
    ) as rig:
        bridge = rig._bridge  # the rig's own bridge: feed it what a broken client might send
        assert bridge is not None
        for payload in (b"not json", b'{"limit_pct": 50}', b'{"limit_pct": 250, "revert_s": 10}'):
            assert not bridge.handle("hil/pv18/setpoint", payload)
        assert bridge.bad_setpoints == 3
        assert not rig.inverters["pv18"].limit_enabled
        assert bridge.handle("hil/pv18/setpoint", b'{"limit_pct": 50, "revert_s": 10}')
        assert rig.inverters["pv18"].limit_pct == 50.0
