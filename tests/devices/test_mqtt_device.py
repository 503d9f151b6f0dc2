"""MQTT devices against a real Mosquitto: telemetry, status, setpoints, bad payloads, reconnects."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable

import aiomqtt
import pytest

from devices import DeviceUnavailable, MeterReading, MqttDevice, PvReading, PvSetpoint
from devices.mqtt_device import PayloadError, extract
from tests.devices.dev_helpers import Mosquitto


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _publish(port: int, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(topic, payload, qos=1, retain=retain)


def _topics() -> tuple[str, str, str]:
    root = f"test/{uuid.uuid4().hex[:8]}"
    return f"{root}/telemetry", f"{root}/status", f"{root}/setpoint"


async def test_meter_telemetry_from_json_paths(mosquitto: Mosquitto) -> None:
    telemetry, status, _ = _topics()
    dev = MqttDevice(
        "m1",
        "meter",
        host="127.0.0.1",
        port=mosquitto.port,
        telemetry_topic=telemetry,
        status_topic=status,
        paths={"p_kw": "ac.p_w", "v_ll_v": "ac.phases.0.v"},
        scale={"p_kw": 0.001},
    )
    try:
        assert await dev.wait_connected(5)
        with pytest.raises(DeviceUnavailable, match="no telemetry yet"):
            await dev.read()
        await _publish(
            mosquitto.port, telemetry, json.dumps({"ac": {"p_w": 1500, "phases": [{"v": 400.5}]}})
        )

        async def has_reading() -> bool:
            try:
                await dev.read()
            except DeviceUnavailable:
                return False
            return True

        await _until(has_reading)
        reading = await dev.read()
        assert isinstance(reading, MeterReading)
        assert reading.p_kw == pytest.approx(1.5)
        assert reading.v_ll_v == pytest.approx(400.5)
        # the device's last will says it is gone: its values are no longer used
        await _publish(mosquitto.port, status, "offline", retain=True)
        await _until(lambda: _raises(dev))
        with pytest.raises(DeviceUnavailable, match="offline"):
            await dev.read()
    finally:
        await dev.close()


async def _raises(dev: MqttDevice) -> bool:
    try:
        await dev.read()
    except DeviceUnavailable:
        return True
    return False


@pytest.mark.parametrize(
    "payload",
    [b"not json", b'{"ac": {}}', b'{"ac": {"p_w": "high"}}', b'{"ac": {"p_w": NaN}}', b"\xff\xfe"],
)
async def test_bad_payloads_are_counted_and_never_used(
    mosquitto: Mosquitto, payload: bytes
) -> None:
    telemetry, _, _ = _topics()
    dev = MqttDevice(
        "m1",
        "meter",
        host="127.0.0.1",
        port=mosquitto.port,
        telemetry_topic=telemetry,
        paths={"p_kw": "ac.p_w"},
    )
    try:
        assert await dev.wait_connected(5)
        await _publish(mosquitto.port, telemetry, payload)

        async def counted() -> bool:
            return dev.bad_payloads == 1

        await _until(counted)
        with pytest.raises(DeviceUnavailable):
            await dev.read()
        await _publish(mosquitto.port, telemetry, b'{"ac": {"p_w": 7}}')  # still alive
        await _until(lambda: _not_raises(dev))
    finally:
        await dev.close()


async def _not_raises(dev: MqttDevice) -> bool:
    return not await _raises(dev)


async def test_pv_setpoint_is_published_clamped_with_its_revert_time(mosquitto: Mosquitto) -> None:
    telemetry, _, setpoint = _topics()
    dev = MqttDevice(
        "pv1",
        "pv",
        host="127.0.0.1",
        port=mosquitto.port,
        telemetry_topic=telemetry,
        setpoint_topic=setpoint,
        paths={"p_kw": "p_kw"},
        rating_kw=50.0,
        revert_s=30,
    )
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as watcher:
        await watcher.subscribe(setpoint, qos=1)
        try:
            assert await dev.wait_connected(5)
            await _publish(mosquitto.port, telemetry, b'{"p_kw": 40}')
            await _until(lambda: _not_raises(dev))
            reading = await dev.read()
            assert isinstance(reading, PvReading)
            result = await dev.write(PvSetpoint(device="pv1", p_max_kw=1e9))
            assert result.clamped
            message = await asyncio.wait_for(anext(aiter(watcher.messages)), 5)
            body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            assert body == {"p_max_kw": 50.0, "limit_pct": 100.0, "revert_s": 30}
        finally:
            await dev.close()


async def test_reconnects_after_the_broker_restarts(mosquitto: Mosquitto) -> None:
    telemetry, _, _ = _topics()
    dev = MqttDevice(
        "m1",
        "meter",
        host="127.0.0.1",
        port=mosquitto.port,
        telemetry_topic=telemetry,
        paths={"p_kw": "p"},
        keepalive_s=5,
        backoff_min_s=0.1,
        backoff_max_s=0.5,
    )
    try:
        assert await dev.wait_connected(5)
        mosquitto.stop()

        async def lost() -> bool:
            return not dev._connected.is_set()

        await _until(lost)
        await mosquitto.start()
        assert await dev.wait_connected(10)
        assert dev.connects == 2
        await _publish(mosquitto.port, telemetry, b'{"p": 3}')  # resubscribed
        await _until(lambda: _not_raises(dev))
    finally:
        await dev.close()


def test_extract_names_what_is_wrong() -> None:
    assert extract(b'{"a": [{"b": 2}]}', {"x": "a.0.b"}) == {"x": 2.0}
    with pytest.raises(PayloadError, match="not JSON"):
        extract(b"{", {"x": "a"})
    with pytest.raises(PayloadError, match=r"path 'a\.c' not found"):
        extract(b'{"a": {}}', {"x": "a.c"})
    with pytest.raises(PayloadError, match="not a number"):
        extract(b'{"a": true}', {"x": "a"})
