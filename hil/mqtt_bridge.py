"""Simulated PV inverters that speak MQTT JSON instead of Modbus, through a real broker.

Each inverter ``NAME`` publishes, every ``period_s`` of real time,

* ``<root>/NAME/telemetry``: ``{"ac": {"p_w": ...}, "limit_pct": ...}`` (``limit_pct`` is
  100 while no limit is enabled);
* ``<root>/NAME/status``: ``online`` (retained; the broker publishes ``offline`` as the
  bridge's last will);

and takes ``<root>/NAME/setpoint``: ``{"limit_pct": ..., "revert_s": ...}`` (what
``devices.mqtt_device.MqttDevice`` publishes). A setpoint is applied as the same model-123
register write a Modbus client would make, so the inverter's checks, revert timer and the rig's
physics all see it; a payload that is not such JSON is counted in ``bad_setpoints`` and
dropped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from types import TracebackType

import aiomqtt
import structlog

from devices.sunspec import encode_point, layout
from devices.tasks import cancel_and_wait
from hil.sim_devices import SimInverter

__all__ = ["MqttPvBridge"]

log = structlog.get_logger("feederd.hil.mqtt")


class MqttPvBridge:
    """Serves ``inverters`` on the broker at ``host:port``; see the module docstring."""

    def __init__(
        self,
        inverters: Mapping[str, SimInverter],
        *,
        host: str,
        port: int,
        root: str = "hil",
        period_s: float = 0.2,
    ) -> None:
        for name, inv in inverters.items():
            if inv.control_model != 123:
                raise ValueError(f"{name}: the MQTT bridge drives model-123 inverters only")
        self.inverters = dict(inverters)
        self.host = host
        self.port = port
        self.root = root
        self.period_s = period_s
        self.bad_setpoints = 0
        self.applied_setpoints = 0
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False

    def topic(self, name: str, leaf: str) -> str:
        return f"{self.root}/{name}/{leaf}"

    async def __aenter__(self) -> MqttPvBridge:
        self._task = asyncio.create_task(self._run(), name="hil.mqtt-bridge")
        await asyncio.wait_for(self._connected.wait(), timeout=10.0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            # aiomqtt may turn the cancellation into an MqttError on its way out: the flag
            # keeps _run from taking that for a lost broker and reconnecting
            self._closing = True
            await cancel_and_wait([self._task])
            self._task = None

    async def _run(self) -> None:
        will = aiomqtt.Will(self.topic("bridge", "status"), b"offline", qos=1, retain=True)
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, will=will) as client:
                    await client.subscribe(self.topic("+", "setpoint"), qos=1)
                    for name in self.inverters:
                        await client.publish(self.topic(name, "status"), b"online", retain=True)
                    self._connected.set()
                    stop = asyncio.Event()
                    publisher = asyncio.create_task(self._publish(client, stop))
                    try:
                        async for message in client.messages:
                            self.handle(str(message.topic), _bytes(message.payload))
                    finally:
                        stop.set()
                        await cancel_and_wait([publisher])
            except aiomqtt.MqttError as err:  # the broker went away: try again shortly
                if self._closing:
                    return
                log.info("hil_mqtt_bridge_reconnecting", error=str(err))
                await asyncio.sleep(0.5)

    async def _publish(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name, inv in self.inverters.items():
                body = {
                    "ac": {"p_w": round(inv.p_kw * 1000.0, 1)},
                    "limit_pct": inv.limit_pct if inv.limit_enabled else 100.0,
                }
                await client.publish(self.topic(name, "telemetry"), json.dumps(body))
            await asyncio.sleep(self.period_s)

    def handle(self, topic: str, payload: bytes) -> bool:
        """Apply one setpoint message; ``False`` (and counted) when it cannot be applied."""
        parts = topic.split("/")
        inv = self.inverters.get(parts[-2]) if len(parts) >= 2 else None
        try:
            doc = json.loads(payload)
            pct, revert_s = float(doc["limit_pct"]), int(doc["revert_s"])
        except (ValueError, TypeError, KeyError) as err:
            doc, pct, revert_s = None, 0.0, 0
            log.warning("hil_mqtt_bridge_bad_setpoint", topic=topic, error=str(err))
        if inv is None or doc is None or not self._write_limit(inv, pct, revert_s):
            self.bad_setpoints += 1
            return False
        self.applied_setpoints += 1
        return True

    @staticmethod
    def _write_limit(inv: SimInverter, pct: float, revert_s: int) -> bool:
        """The model-123 write a Modbus client makes: limit, window, revert, ramp, enable."""
        model = layout(123)
        sf = inv.values(123).get("WMaxLimPct_SF")
        exponent = int(sf) if isinstance(sf, int) else 0
        try:
            registers = (
                encode_point(model.point("WMaxLimPct"), pct, exponent)
                + [0]
                + encode_point(model.point("WMaxLimPct_RvrtTms"), revert_s)
                + [0, 1]
            )
        except (ValueError, OverflowError):
            return False
        return inv.apply_write(inv.point_address(123, "WMaxLimPct"), registers)


def _bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()
