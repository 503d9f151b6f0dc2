"""An AMI meter over MQTT in the daemon (a real Mosquitto): what it refuses is counted in the
metrics by reason, what it accepts enters the state estimate, and the journal and
``feederd report`` carry the estimate's summary."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import aiomqtt

from controller.records import CycleStatus
from devices import MqttDevice
from devices.mqtt_device import FUTURE_TOLERANCE_S
from tests.controller.estimation_helpers import metered_feeder
from tests.controller.test_bus_meters_config import ami_meter
from tests.controller.test_config_cli import cli
from tests.support.mosquitto import Mosquitto

AMI_BUS = 5
GUARD_S = 10.0
"""Real seconds to wait for a message to reach the device through the broker (a hang guard)."""


async def _until(condition: Callable[[], bool]) -> None:
    async def wait() -> None:
        # the daemon's own device has no hook to await: look again, bounded by the guard
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), GUARD_S)


async def test_refusals_are_counted_by_reason_and_good_readings_are_estimated(
    tmp_path: Path,
) -> None:
    broker = Mosquitto(tmp_path)
    await broker.start()
    root = f"t{uuid.uuid4().hex[:8]}"
    journal = tmp_path / "journal.sqlite"
    buses = [b for b in range(2, 34) if b != AMI_BUS]
    try:
        async with metered_feeder(
            buses,
            extra_devices=[ami_meter(AMI_BUS, port=broker.port, root=root)],
            overrides={"journal": {"path": str(journal)}},
        ) as fm:
            ami = fm.daemon.fleet[f"ami{AMI_BUS:02d}"]
            assert isinstance(ami, MqttDevice)
            assert await ami.wait_connected(GUARD_S)
            now = fm.clock.now().timestamp()
            true_w = 1000.0 * fm.rig.physics.base_bus_load_kw[AMI_BUS]  # at a load scale of 1
            good = {"ts": now, "p_w": true_w, "q_var": 0.4 * true_w, "v_v": 12_500.0}
            payloads = [
                b"{garbage",
                json.dumps({**good, "ts": now - 500.0}).encode(),
                json.dumps({**good, "ts": now + FUTURE_TOLERANCE_S + 100.0}).encode(),
                json.dumps(good).encode(),
            ]
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                for payload in payloads:
                    await client.publish(ami.telemetry_topic, payload, qos=1)
            await _until(lambda: ami.age_s() is not None)
            records = [await fm.step() for _ in range(2)]
            metrics = fm.daemon.metrics
            refused = {
                reason: metrics.refused_messages.labels(ami.name, reason)._value.get()
                for reason in ("garbage", "too_old", "future")
            }
            used = metrics.estimation_measurements._value.get()
    finally:
        broker.stop()
    assert refused == {"garbage": 1, "too_old": 1, "future": 1}
    assert all(r.status is CycleStatus.OPTIMAL for r in records)
    assert ami.name not in records[-1].devices_missing
    assert used == 3 + 3 * (len(buses) + 1)  # head P, Q, V; the AMI meter's P, Q, V among them
    assert records[-1].estimation_dropped == ()
    proc = cli("report", "--journal", str(journal))
    assert proc.returncode == 0, proc.stderr
    assert "intervals with a state estimate" in proc.stdout
    assert "2/2" in proc.stdout
    assert "meters dropped as bad data" in proc.stdout
