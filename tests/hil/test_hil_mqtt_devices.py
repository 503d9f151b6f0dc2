"""PV inverters behind MQTT in the rig: a real Mosquitto, the daemon's own MQTT driver."""

from __future__ import annotations

import asyncio
import time

import pytest

from controller.clock import SystemClock
from controller.daemon import Controller
from hil import HilRig
from hil.broker import find_mosquitto
from tests.conftest import rig_config

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

MQTT_BUSES = (18, 33)


async def test_the_daemon_curtails_mqtt_inverters_through_the_broker() -> None:
    async with HilRig(
        monotonic=time.monotonic,
        load_scale=lambda t: 0.02,
        pv_available_frac=lambda t: 1.0,
        pv_buses=MQTT_BUSES,
        battery_buses=(),
        mqtt_pv_buses=MQTT_BUSES,
    ) as rig:
        await rig.step()
        mqtt = [d for d in rig.devices if d.mqtt_root is not None]
        assert [d.name for d in mqtt] == ["pv18", "pv33"]
        exporting_kw = -rig.state.head_p_kw
        assert exporting_kw > 150.0, "light load and full sun: the feeder exports"
        export_limit_kw = exporting_kw - 120.0
        loaded = rig_config(rig, interval_s=0.5)
        assert {d.transport for d in loaded.config.devices} == {"modbus-tcp", "mqtt"}
        ctl = Controller(loaded, clock=SystemClock())
        ctl.set_limits(import_kw=None, export_kw=export_limit_kw)
        try:
            statuses = []
            for _ in range(8):
                rec = await ctl.cycle()
                statuses.append(rec.status)
                await asyncio.sleep(0.3)  # setpoints travel over the broker
                await rig.step()
        finally:
            await ctl.close()
        assert "optimal" in statuses, statuses
        assert not rec.devices_missing, rec.devices_missing
        # the physics: the export is down to the limit, by limits that came over MQTT
        assert -rig.state.head_p_kw <= export_limit_kw * 1.02, (
            rig.state.head_p_kw,
            export_limit_kw,
        )
        assert any(rig.sim(d.name).limit_enabled for d in mqtt)  # type: ignore[attr-defined]
        assert rig.curtailed_kw > 100.0


async def test_a_bad_setpoint_is_counted_and_changes_nothing() -> None:
    async with HilRig(
        monotonic=time.monotonic,
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
