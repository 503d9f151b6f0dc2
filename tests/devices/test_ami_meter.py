"""AMI meters over MQTT against a real Mosquitto: payloads with the measurement's own timestamp.

The meter entry the rig generates (``paths`` with a ``timestamp``, watts scaled to kW,
``max_age_s = 120``) publishes at its own cadence. A payload older than ``max_age_s`` by the
daemon's clock, or more than ``FUTURE_TOLERANCE_S`` ahead of it, is refused and counted by
reason, with one log line per run of refusals (never one per message); an accepted one ages
from its timestamp, not from its arrival. The daemon's wall clock is a ``FakeClock``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiomqtt
import pytest
import structlog

from controller.clock import FakeClock
from devices import DeviceUnavailable, MeterReading
from devices.mqtt_device import FUTURE_TOLERANCE_S
from tests.devices.dev_helpers import HANG_GUARD_S, Mosquitto, WatchedMqttDevice, serving

MAX_AGE_S = 120.0
PATHS = {"p_kw": "p_w", "q_kvar": "q_var", "v_ll_v": "v_v", "timestamp": "ts"}
SCALE = {"p_kw": 0.001, "q_kvar": 0.001}


def _ami(port: int, clock: FakeClock) -> tuple[WatchedMqttDevice, str]:
    topic = f"test/{uuid.uuid4().hex[:8]}/ami/ami05/telemetry"
    dev = WatchedMqttDevice(
        "ami05",
        "meter",
        host="127.0.0.1",
        port=port,
        telemetry_topic=topic,
        paths=PATHS,
        scale=SCALE,
        max_age_s=MAX_AGE_S,
        rating_kw=100_000.0,
        monotonic=clock.monotonic,
        wall_s=lambda: clock.now().timestamp(),
    )
    return dev, topic


def _payload(ts: float, p_w: float = 61_000.0) -> bytes:
    return json.dumps({"ts": ts, "p_w": p_w, "q_var": 29_000.0, "v_v": 12_400.0}).encode()


async def _publish_all(port: int, topic: str, payloads: list[bytes]) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for payload in payloads:  # qos 1 from one client: they arrive in order
            await client.publish(topic, payload, qos=1)


async def test_a_reading_ages_from_its_own_timestamp(mosquitto: Mosquitto) -> None:
    clock = FakeClock()
    clock.advance(1000.0)
    dev, topic = _ami(mosquitto.port, clock)
    now = clock.now().timestamp()
    async with serving(dev):
        assert await dev.wait_connected(HANG_GUARD_S)
        await _publish_all(mosquitto.port, topic, [_payload(now - 100.0)])
        await dev.until(lambda: dev.handled == 1)
        reading = await dev.read()
        assert isinstance(reading, MeterReading)
        assert reading.p_kw == pytest.approx(61.0)
        assert reading.q_kvar == pytest.approx(29.0)
        assert reading.v_ll_v == pytest.approx(12_400.0)
        assert reading.age_s == pytest.approx(100.0)
        assert dev.refused == {}
        clock.advance(21.0)  # 121 s after it was measured, though it arrived 21 s ago
        with pytest.raises(DeviceUnavailable, match="stale"):
            await dev.read()


@pytest.mark.parametrize(
    ("offset_s", "reason", "words"),
    [
        pytest.param(-(MAX_AGE_S + 30.0), "too_old", "150 s old", id="too-old"),
        pytest.param(
            FUTURE_TOLERANCE_S + 60.0, "future", "ahead of the daemon's clock", id="future"
        ),
    ],
)
async def test_timestamps_out_of_bounds_are_refused_counted_and_said_once(
    mosquitto: Mosquitto, offset_s: float, reason: str, words: str
) -> None:
    clock = FakeClock()
    dev, topic = _ami(mosquitto.port, clock)
    now = clock.now().timestamp()
    bad = [_payload(now + offset_s, p_w=1000.0 * i) for i in range(4)]
    with structlog.testing.capture_logs() as logs:
        async with serving(dev):
            assert await dev.wait_connected(HANG_GUARD_S)
            await _publish_all(mosquitto.port, topic, bad)
            await dev.until(lambda: dev.handled == len(bad))
            assert dev.refused == {reason: 4}
            with pytest.raises(DeviceUnavailable, match="no telemetry yet"):
                await dev.read()  # never used
            # within the tolerance: clock skew, taken (and not aged below zero)
            await _publish_all(mosquitto.port, topic, [_payload(now + FUTURE_TOLERANCE_S - 1)])
            await dev.until(lambda: dev.handled == len(bad) + 1)
            assert (await dev.read()).age_s == 0.0
    lines = [e for e in logs if e.get("device") == "ami05"]
    assert [(e["event"], e.get("refused")) for e in lines] == [
        ("mqtt_device_bad_payload", reason),
        ("mqtt_device_payloads_good", None),
    ]
    assert words in lines[0]["reason"]
    assert lines[0]["topic"] == topic


async def test_garbage_and_a_change_of_reason_are_each_said_once(mosquitto: Mosquitto) -> None:
    clock = FakeClock()
    dev, topic = _ami(mosquitto.port, clock)
    now = clock.now().timestamp()
    garbage: list[bytes] = [
        b"\x00\x01 not json",
        b'{"ts": 1.7e9}',  # no power
        json.dumps({"ts": now, "p_w": "lots", "q_var": 0, "v_v": 1}).encode(),
        b'{"ts": "yesterday", "p_w": 1, "q_var": 0, "v_v": 1}',
    ]
    stale = [_payload(now - 10 * MAX_AGE_S)] * 2
    payloads: list[Any] = [*garbage, *stale, _payload(now)]
    with structlog.testing.capture_logs() as logs:
        async with serving(dev):
            assert await dev.wait_connected(HANG_GUARD_S)
            await _publish_all(mosquitto.port, topic, payloads)
            await dev.until(lambda: dev.handled == len(payloads))
            assert (await dev.read()).p_kw == pytest.approx(61.0)  # the good one is used
    assert dev.refused == {"garbage": 4, "too_old": 2}
    assert dev.bad_payloads == 6
    said = [(e["event"], e.get("refused")) for e in logs if e.get("device") == "ami05"]
    assert said == [
        ("mqtt_device_bad_payload", "garbage"),
        ("mqtt_device_bad_payload", "too_old"),
        ("mqtt_device_payloads_good", None),
    ]
