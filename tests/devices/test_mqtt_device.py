"""MQTT devices against a real Mosquitto: telemetry, status, setpoints, bad payloads, reconnects.

Each device runs ``serve(stop)`` as a task, as the daemon's task group runs it; its telemetry ages
on a simulated clock, and the tests await what the device did (a message handled, a session
begun or ended) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiomqtt
import pytest
import structlog

from controller.clock import FakeClock
from devices import (
    DeviceUnavailable,
    MeterReading,
    MqttDevice,
    PvReading,
    PvSetpoint,
    Ramp,
    UnsafeWriteError,
)
from devices.mqtt_device import PayloadError, extract
from tests.devices.dev_helpers import HANG_GUARD_S, Mosquitto, WatchedMqttDevice, serving


async def _publish(port: int, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(topic, payload, qos=1, retain=retain)


def _topics() -> tuple[str, str, str]:
    root = f"test/{uuid.uuid4().hex[:8]}"
    return f"{root}/telemetry", f"{root}/status", f"{root}/setpoint"


def _meter(port: int, clock: FakeClock, **kw: Any) -> WatchedMqttDevice:
    return WatchedMqttDevice(
        "m1", "meter", host="127.0.0.1", port=port, monotonic=clock.monotonic, **kw
    )


async def _raises(dev: MqttDevice) -> bool:
    try:
        await dev.read()
    except DeviceUnavailable:
        return True
    return False


async def test_meter_telemetry_from_json_paths(mosquitto: Mosquitto) -> None:
    telemetry, status, _ = _topics()
    clock = FakeClock()
    dev = _meter(
        mosquitto.port,
        clock,
        telemetry_topic=telemetry,
        status_topic=status,
        paths={"p_kw": "ac.p_w", "v_ll_v": "ac.phases.0.v"},
        scale={"p_kw": 0.001},
        max_age_s=10.0,
    )
    async with serving(dev):
        assert await dev.wait_connected(HANG_GUARD_S)
        with pytest.raises(DeviceUnavailable, match="no telemetry yet") as info:
            await dev.read()
        assert info.value.device == "m1"
        assert not str(info.value).startswith("m1")  # the message alone; the log names it
        await _publish(
            mosquitto.port, telemetry, json.dumps({"ac": {"p_w": 1500, "phases": [{"v": 400.5}]}})
        )
        await dev.until(lambda: dev.handled == 1)
        reading = await dev.read()
        assert isinstance(reading, MeterReading)
        assert reading.p_kw == pytest.approx(1.5)
        assert reading.v_ll_v == pytest.approx(400.5)
        # telemetry older than max_age_s is never used as if fresh
        clock.advance(10.5)
        with pytest.raises(DeviceUnavailable, match="stale"):
            await dev.read()
        await _publish(mosquitto.port, telemetry, json.dumps({"ac": {"p_w": 2500, "phases": []}}))
        await dev.until(lambda: dev.handled == 2)
        assert dev.bad_payloads == 1  # the voltage path is gone: counted, not used
        with pytest.raises(DeviceUnavailable, match="stale"):
            await dev.read()  # the previous good values age out, they are not refreshed
        await _publish(
            mosquitto.port, telemetry, json.dumps({"ac": {"p_w": 2500, "phases": [{"v": 399}]}})
        )
        await dev.until(lambda: dev.handled == 3)
        assert (await dev.read()).p_kw == pytest.approx(2.5)
        # the device's last will says it is gone: its values are no longer used
        await _publish(mosquitto.port, status, "offline", retain=True)
        await dev.until(lambda: dev.handled == 4)
        assert await _raises(dev)
        with pytest.raises(DeviceUnavailable, match="offline"):
            await dev.read()


@pytest.mark.parametrize(
    "payload",
    [b"not json", b'{"ac": {}}', b'{"ac": {"p_w": "high"}}', b'{"ac": {"p_w": NaN}}', b"\xff\xfe"],
)
async def test_bad_payloads_are_counted_and_never_used(
    mosquitto: Mosquitto, payload: bytes
) -> None:
    telemetry, _, _ = _topics()
    dev = _meter(mosquitto.port, FakeClock(), telemetry_topic=telemetry, paths={"p_kw": "ac.p_w"})
    async with serving(dev):
        assert await dev.wait_connected(HANG_GUARD_S)
        await _publish(mosquitto.port, telemetry, payload)
        await dev.until(lambda: dev.handled == 1)
        assert dev.bad_payloads == 1
        with pytest.raises(DeviceUnavailable):
            await dev.read()
        await _publish(mosquitto.port, telemetry, b'{"ac": {"p_w": 7}}')  # still alive
        await dev.until(lambda: dev.handled == 2)
        assert (await dev.read()).p_kw == pytest.approx(7.0)
        assert dev.bad_payloads == 1


async def test_bad_payloads_log_once_per_turn_from_good_to_bad(mosquitto: Mosquitto) -> None:
    telemetry, _, _ = _topics()
    dev = _meter(mosquitto.port, FakeClock(), telemetry_topic=telemetry, paths={"p_kw": "p"})
    payloads = [b"x", b"y", b"z", b'{"p": 1}', b'{"p": 2}', b"w", b"v"]
    with structlog.testing.capture_logs() as logs:
        async with serving(dev):
            assert await dev.wait_connected(HANG_GUARD_S)
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
                for payload in payloads:  # qos 1 from one client: they arrive in order
                    await client.publish(telemetry, payload, qos=1)
            await dev.until(lambda: dev.handled == len(payloads))
    assert dev.bad_payloads == 5
    events = [(e["event"], e["log_level"]) for e in logs if e.get("device") == "m1"]
    assert events == [
        ("mqtt_device_bad_payload", "warning"),
        ("mqtt_device_payloads_good", "info"),
        ("mqtt_device_bad_payload", "warning"),
    ]
    first = next(e for e in logs if e["event"] == "mqtt_device_bad_payload")
    assert first["topic"] == telemetry
    assert "not JSON" in first["reason"]


async def test_pv_setpoint_is_published_clamped_with_its_revert_time(mosquitto: Mosquitto) -> None:
    telemetry, _, setpoint = _topics()
    dev = WatchedMqttDevice(
        "pv1",
        "pv",
        host="127.0.0.1",
        port=mosquitto.port,
        telemetry_topic=telemetry,
        setpoint_topic=setpoint,
        paths={"p_kw": "p_kw"},
        rating_kw=50.0,
        revert_s=30,
        ramp=Ramp(kw_per_s=2.0, interval_s=5.0),  # 10 kW per write
        monotonic=FakeClock().monotonic,
    )
    assert dev.capabilities.writable
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as watcher, serving(dev):
        await watcher.subscribe(setpoint, qos=1)
        assert await dev.wait_connected(HANG_GUARD_S)
        await _publish(mosquitto.port, telemetry, b'{"p_kw": 40}')
        await dev.until(lambda: dev.handled == 1)
        reading = await dev.read()
        assert isinstance(reading, PvReading)
        messages = aiter(watcher.messages)
        result = await dev.write(PvSetpoint(device="pv1", p_max_kw=1e9))
        assert result.clamped
        message = await asyncio.wait_for(anext(messages), HANG_GUARD_S)
        body = json.loads(bytes(message.payload))
        assert body == {"p_max_kw": 50.0, "limit_pct": 100.0, "revert_s": 30}
        # a PV write honours the ramp too: from 50 kW, one write goes down by 10 kW at most
        result = await dev.write(PvSetpoint(device="pv1", p_max_kw=5.0))
        assert result.written == pytest.approx(40.0)
        assert result.clamped
        message = await asyncio.wait_for(anext(messages), HANG_GUARD_S)
        body = json.loads(bytes(message.payload))
        assert body == {"p_max_kw": pytest.approx(40.0), "limit_pct": 80.0, "revert_s": 30}


async def test_a_meter_over_mqtt_takes_no_setpoint(mosquitto: Mosquitto) -> None:
    telemetry, _, setpoint = _topics()
    dev = _meter(
        mosquitto.port,
        FakeClock(),
        telemetry_topic=telemetry,
        setpoint_topic=setpoint,
        paths={"p_kw": "p"},
    )
    assert not dev.capabilities.writable
    assert not dev.capabilities.releasable
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as watcher, serving(dev):
        await watcher.subscribe(setpoint, qos=1)
        assert await dev.wait_connected(HANG_GUARD_S)
        with pytest.raises(UnsafeWriteError):
            await dev.write(PvSetpoint(device="m1", p_max_kw=1.0))
        # nothing was published: the next message the watcher sees is the test's own
        await _publish(mosquitto.port, setpoint, b"marker")
        message = await asyncio.wait_for(anext(aiter(watcher.messages)), HANG_GUARD_S)
        assert bytes(message.payload) == b"marker"


async def test_reconnects_after_the_broker_restarts(mosquitto: Mosquitto) -> None:
    telemetry, _, _ = _topics()
    dev = _meter(
        mosquitto.port,
        FakeClock(),
        telemetry_topic=telemetry,
        paths={"p_kw": "p"},
        keepalive_s=5,
        backoff_min_s=0.1,
        backoff_max_s=0.5,
    )
    with structlog.testing.capture_logs() as logs:
        async with serving(dev):
            assert await dev.wait_connected(HANG_GUARD_S)
            mosquitto.stop()
            await dev.until(lambda: dev.sessions_ended == 1)  # it saw the connection go
            await mosquitto.start()
            await dev.until(lambda: dev.connects == 2)
            assert await dev.wait_connected(HANG_GUARD_S)
            assert dev.connects == 2
            await _publish(mosquitto.port, telemetry, b'{"p": 3}')  # resubscribed
            await dev.until(lambda: dev.handled == 1)
            assert (await dev.read()).p_kw == pytest.approx(3.0)
    # one line when the connection went, one when it came back, whatever the attempts between
    events = [e["event"] for e in logs if e.get("device") == "m1"]
    assert events == ["mqtt_device_disconnected", "mqtt_device_reconnected"]


async def test_serve_ends_on_its_own_when_stop_is_set(mosquitto: Mosquitto) -> None:
    telemetry, _, _ = _topics()
    dev = _meter(mosquitto.port, FakeClock(), telemetry_topic=telemetry, paths={"p_kw": "p"})
    stop = asyncio.Event()
    task = asyncio.create_task(dev.serve(stop))
    try:
        assert await dev.wait_connected(HANG_GUARD_S)
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=HANG_GUARD_S)
        assert task in done  # cooperatively, not by cancellation
        assert not task.cancelled()
        assert task.exception() is None
        assert not dev._connected.is_set()
        await dev.close()  # a no-op: the connection lived in serve
    finally:
        task.cancel()


def test_extract_names_what_is_wrong() -> None:
    assert extract(b'{"a": [{"b": 2}]}', {"x": "a.0.b"}) == {"x": 2.0}
    with pytest.raises(PayloadError, match="not JSON"):
        extract(b"{", {"x": "a"})
    with pytest.raises(PayloadError, match=r"path 'a\.c' not found"):
        extract(b'{"a": {}}', {"x": "a.c"})
    with pytest.raises(PayloadError, match="not a number"):
        extract(b'{"a": true}', {"x": "a"})
