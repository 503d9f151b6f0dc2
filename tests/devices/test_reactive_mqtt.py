"""An MQTT PV inverter has no reactive points: a setpoint with vars publishes its ceiling alone,
and the daemon says so once per run (against a real Mosquitto)."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiomqtt
from structlog.testing import capture_logs

from controller.clock import FakeClock
from devices import PvSetpoint
from tests.devices.dev_helpers import HANG_GUARD_S, Mosquitto, WatchedMqttDevice, serving


async def test_an_mqtt_inverter_gets_its_ceiling_alone_and_one_log_line(
    mosquitto: Mosquitto,
) -> None:
    root = f"test/{uuid.uuid4().hex[:8]}"
    dev = WatchedMqttDevice(
        "pv1",
        "pv",
        host="127.0.0.1",
        port=mosquitto.port,
        telemetry_topic=f"{root}/telemetry",
        setpoint_topic=f"{root}/setpoint",
        paths={"p_kw": "p_kw"},
        rating_kw=50.0,
        revert_s=30,
        monotonic=FakeClock().monotonic,
    )
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as watcher, serving(dev):
        await watcher.subscribe(f"{root}/setpoint", qos=1)
        assert await dev.wait_connected(HANG_GUARD_S)
        messages = aiter(watcher.messages)
        with capture_logs() as logs:
            results = [
                await dev.write(PvSetpoint(device="pv1", p_max_kw=kw, q_kvar=-10.0))
                for kw in (40.0, 30.0)
            ]
        bodies = [
            json.loads(bytes((await asyncio.wait_for(anext(messages), HANG_GUARD_S)).payload))
            for _ in results
        ]
    assert [r.q_kvar for r in results] == [None, None]
    assert [b["p_max_kw"] for b in bodies] == [40.0, 30.0]
    assert all("q_kvar" not in b for b in bodies)
    said = [e for e in logs if e["event"] == "reactive_unsupported"]
    assert len(said) == 1
    assert said[0]["device"] == "pv1"
