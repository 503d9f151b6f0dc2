"""MQTT devices: telemetry from a topic and JSON paths, setpoints published to a topic.

``serve(stop)``, run in the daemon's task group, keeps one aiomqtt client connected to the
broker until ``stop`` is set: it subscribes to the telemetry topic and, when given, a status topic
(``online``/``offline`` or JSON with a boolean ``online``, typically the device's retained last
will), keeps the newest value of every path, and reconnects with capped, jittered backoff,
resubscribing each time. Incoming messages go through a bounded queue.

``read`` never waits on the network: it returns the newest telemetry if it is fresher than
``max_age_s`` and the device is online, else raises ``DeviceUnavailable``. A payload that is not
JSON, lacks a path, or holds a non-finite number is refused (``refused["garbage"]``); with a
``timestamp`` path (Unix epoch seconds, the measurement's own time, as AMI meters publish) a
payload older than ``max_age_s`` by the daemon's wall clock (``refused["too_old"]``) or more
than ``FUTURE_TOLERANCE_S`` ahead of it (``refused["future"]``) is refused too, and the age of an
accepted one counts from its timestamp, not from its arrival. Each refusal is counted; one log
line marks the device turning from good payloads to refused ones (or from one reason to
another), never one per message; the previous good values stay but age out.

Parsing is pure (``extract``), so it is tested without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiomqtt
import structlog

from devices.backoff import Backoff
from devices.errors import DeviceUnavailable, ImplausibleReading, UnsafeWriteError
from devices.protocol import Capabilities
from devices.records import (
    DeviceKind,
    LoadReading,
    LoadSetpoint,
    MeterReading,
    PvReading,
    PvSetpoint,
    Setpoint,
    WriteResult,
)
from devices.safety import Ramp, load_command, pv_command
from devices.tasks import cancel_and_wait

__all__ = ["FUTURE_TOLERANCE_S", "TIMESTAMP", "MqttDevice", "PayloadError", "extract"]

log = structlog.get_logger("feederd.devices.mqtt")

PLAUSIBLE_PV = 1.2
"""A PV inverter reporting more than this multiple of its rating is taken as a bad reading."""
PLAUSIBLE_LOAD = 1.5
"""A load drawing more than this multiple of its rating is taken as a bad reading."""
TIMESTAMP = "timestamp"
"""The reading field (a key of ``paths``) that holds the measurement's own time, Unix seconds."""
FUTURE_TOLERANCE_S = 5.0
"""A timestamp at most this far ahead of the daemon's clock is taken as clock skew, not refused."""


class PayloadError(ValueError):
    """A telemetry payload that cannot be used; the message says why."""


def _walk(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PayloadError(f"path {path!r} not found (stopped at {part!r})")
    return node


def extract(payload: bytes, paths: Mapping[str, str]) -> dict[str, float]:
    """Numbers at dotted ``paths`` (``ac.p_w``, ``phases.0.v``) of a JSON payload."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PayloadError(f"payload is not JSON: {err}") from None
    out: dict[str, float] = {}
    for name, path in paths.items():
        value = _walk(doc, path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PayloadError(f"path {path!r} holds {value!r}, not a number")
        if not math.isfinite(value):
            raise PayloadError(f"path {path!r} holds {value!r}, not a finite number")
        out[name] = float(value)
    return out


def parse_status(payload: bytes) -> bool | None:
    """``online``/``offline`` (any case), ``1``/``0``, or JSON ``{"online": bool}``."""
    text = payload.decode("utf-8", "replace").strip()
    lowered = text.lower()
    if lowered in ("online", "1", "true"):
        return True
    if lowered in ("offline", "0", "false"):
        return False
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    online = doc.get("online") if isinstance(doc, dict) else None
    return online if isinstance(online, bool) else None


class MqttDevice:
    """A meter, PV inverter or controllable load that speaks MQTT JSON.

    A load's setpoint is ``{"p_max_kw": ..., "revert_s": ...}`` on ``setpoint_topic``: the
    ceiling it may draw and how long it holds it without a new message (the device reverts to
    its unconstrained demand after that; feederd republishes every interval). A PV inverter's
    setpoint carries its ceiling only: a reactive setpoint is not sent (one
    ``reactive_unsupported`` line per run).
    """

    _said_no_reactive = False
    """Whether ``reactive_unsupported`` was logged (set on the instance when it is)."""

    def __init__(
        self,
        name: str,
        kind: DeviceKind | str,
        *,
        host: str,
        port: int = 1883,
        telemetry_topic: str,
        paths: Mapping[str, str],
        scale: Mapping[str, float] | None = None,
        setpoint_topic: str | None = None,
        status_topic: str | None = None,
        rating_kw: float | None = None,
        min_kw: float = 0.0,
        ramp: Ramp | None = None,
        revert_s: int = 60,
        max_age_s: float = 10.0,
        keepalive_s: int = 30,
        queue_size: int = 100,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        monotonic: Callable[[], float],
        wall_s: Callable[[], float] = time.time,
    ) -> None:
        kind = DeviceKind(kind)
        if kind is DeviceKind.BATTERY:
            raise ValueError(f"{name}: a battery over MQTT is not supported")
        if "p_kw" not in paths:
            raise ValueError(f"{name}: an MQTT device needs a path for 'p_kw'")
        if kind in (DeviceKind.PV, DeviceKind.LOAD) and rating_kw is None:
            raise ValueError(f"{name}: an MQTT {kind} device needs rating_kw")
        self.name = name
        self.kind = kind
        self.capabilities = Capabilities(
            writable=kind is not DeviceKind.METER and setpoint_topic is not None
        )
        self.host = host
        self.port = port
        self.telemetry_topic = telemetry_topic
        self.paths = dict(paths)
        self.scale = dict(scale or {})
        self.setpoint_topic = setpoint_topic
        self.status_topic = status_topic
        self.rating_kw = rating_kw
        self.min_kw = min_kw
        self.ramp = ramp
        self._last_written_kw: float | None = None
        self.revert_s = revert_s
        self.max_age_s = max_age_s
        self.keepalive_s = keepalive_s
        self.queue_size = queue_size
        self._backoff = Backoff(backoff_min_s, backoff_max_s)
        self._monotonic = monotonic
        self._wall_s = wall_s
        self._values: dict[str, float] = {}
        self._received_at: float | None = None
        self._online: bool | None = None
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._refusing: str | None = None  # the reason of the refusals under way, if any
        self.refused: dict[str, int] = {}
        """Payloads refused, by reason: ``garbage``, ``too_old``, ``future``."""
        self.connects = 0

    @property
    def bad_payloads(self) -> int:
        """Every payload refused, whatever the reason."""
        return sum(self.refused.values())

    # --- lifetime ------------------------------------------------------------------------

    async def wait_connected(self, timeout_s: float) -> bool:
        """Whether ``serve`` is connected to the broker within ``timeout_s`` (real seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self._connected.is_set()

    async def serve(self, stop: asyncio.Event) -> None:
        """Stay connected (reconnecting with backoff) until ``stop`` is set."""
        backoff = self._backoff
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=f"feederd-{self.name}-{random.getrandbits(32):08x}",
                    keepalive=self.keepalive_s,
                    max_queued_incoming_messages=self.queue_size,
                    timeout=5.0,
                ) as client:
                    await client.subscribe(self.telemetry_topic, qos=1)
                    if self.status_topic is not None:
                        await client.subscribe(self.status_topic, qos=1)
                    self._client = client
                    self.connects += 1
                    if backoff.failures:
                        log.info("mqtt_device_reconnected", device=self.name, host=self.host)
                    backoff.succeeded()
                    self._connected.set()
                    await self._consume(client, stop)
                    continue
            except aiomqtt.MqttError as err:
                delay = backoff.failed()
                if backoff.failures == 1:
                    log.error(
                        "mqtt_device_disconnected",
                        device=self.name,
                        host=self.host,
                        port=self.port,
                        error=str(err) or type(err).__name__,
                    )
            finally:
                self._client = None
                self._connected.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _consume(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Take messages until ``stop`` (returns) or the connection fails (raises)."""

        async def messages() -> None:
            async for message in client.messages:
                self.handle(str(message.topic), _payload_bytes(message.payload))

        reader = asyncio.create_task(messages(), name=f"feederd.mqtt-device.{self.name}.read")
        stopper = asyncio.create_task(stop.wait(), name=f"feederd.mqtt-device.{self.name}.stop")
        try:
            done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([reader, stopper])
        if reader in done and not reader.cancelled() and (err := reader.exception()) is not None:
            raise err

    async def close(self) -> None:
        """Nothing to close: the connection lives in ``serve``, which ends with its ``stop``."""

    async def release(self) -> None:
        """Nothing to give back: an MQTT control reverts after its ``revert_s``."""

    # --- messages (pure but for the clock) -----------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        """Take one message: telemetry updates the values, status the online state."""
        if self.status_topic is not None and topic == self.status_topic:
            online = parse_status(payload)
            if online is None:
                self._bad(topic, "garbage", f"status payload {payload[:64]!r} not understood")
            else:
                self._online = online
            return
        try:
            values = extract(payload, self.paths)
        except PayloadError as err:
            self._bad(topic, "garbage", str(err))
            return
        for key, factor in self.scale.items():
            if key in values:
                values[key] *= factor
        received = self._monotonic()
        stamp = values.pop(TIMESTAMP, None)
        if stamp is not None:
            ahead = stamp - self._wall_s()
            if ahead > FUTURE_TOLERANCE_S:
                self._bad(
                    topic,
                    "future",
                    f"timestamp {stamp:.0f} is {ahead:.0f} s ahead of the daemon's clock "
                    f"(tolerance {FUTURE_TOLERANCE_S:g} s)",
                )
                return
            if -ahead > self.max_age_s:
                self._bad(
                    topic,
                    "too_old",
                    f"timestamp {stamp:.0f} is {-ahead:.0f} s old (max_age_s {self.max_age_s:g})",
                )
                return
            received -= max(-ahead, 0.0)  # its age runs from when it was measured
        self._values = values
        self._received_at = received
        if self._refusing is not None:
            log.info("mqtt_device_payloads_good", device=self.name, topic=topic)
            self._refusing = None

    def _bad(self, topic: str, reason: str, detail: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if self._refusing != reason:  # the first of a run: later ones are counted only
            log.warning(
                "mqtt_device_bad_payload",
                device=self.name,
                topic=topic,
                refused=reason,
                reason=detail,
            )
            self._refusing = reason

    # --- the device protocol -------------------------------------------------------------

    def age_s(self) -> float | None:
        """Seconds since the last good telemetry, ``None`` before the first."""
        return None if self._received_at is None else self._monotonic() - self._received_at

    async def read(self) -> MeterReading | PvReading | LoadReading:
        if self._online is False:
            raise DeviceUnavailable(self.name, f"reports offline on {self.status_topic}")
        age = self.age_s()
        if age is None:
            raise DeviceUnavailable(self.name, f"no telemetry yet on {self.telemetry_topic}")
        if age > self.max_age_s:
            raise DeviceUnavailable(
                self.name, f"telemetry is {age:.1f} s old (limit {self.max_age_s:g} s): stale"
            )
        v = self._values
        p_kw = v["p_kw"]
        if self.kind is DeviceKind.METER:
            if self.rating_kw is not None and abs(p_kw) > self.rating_kw:
                raise ImplausibleReading(
                    self.name,
                    point="p_kw",
                    value=p_kw,
                    low=-self.rating_kw,
                    high=self.rating_kw,
                    unit="kW",
                )
            return MeterReading(
                device=self.name,
                p_kw=p_kw,
                q_kvar=v.get("q_kvar"),
                v_ll_v=v.get("v_ll_v"),
                a=v.get("a"),
                age_s=max(age, 0.0),
            )
        assert self.rating_kw is not None
        # as the Modbus drivers do: a little below zero is noise, beyond the rating a fault
        top = (PLAUSIBLE_LOAD if self.kind is DeviceKind.LOAD else PLAUSIBLE_PV) * self.rating_kw
        low = -0.05 * self.rating_kw
        if not low <= p_kw <= top:
            raise ImplausibleReading(
                self.name, point="p_kw", value=p_kw, low=low, high=top, unit="kW"
            )
        if self.kind is DeviceKind.LOAD:
            return LoadReading(
                device=self.name,
                p_kw=max(p_kw, 0.0),
                rating_kw=self.rating_kw,
                min_kw=self.min_kw,
                limit_kw=v.get("limit_kw"),
                limit_active=None,
            )
        return PvReading(
            device=self.name,
            p_kw=max(p_kw, 0.0),
            w_max_kw=self.rating_kw,
            limit_pct=v.get("limit_pct"),
            limit_enabled=v.get("limit_pct") is not None,
            limit_revert_s=self.revert_s,
        )

    async def write(self, setpoint: Setpoint) -> WriteResult:
        """Publish an absolute ceiling with its revert time (after the safety envelope)."""
        if not self.capabilities.writable or self.setpoint_topic is None:
            raise UnsafeWriteError(self.name, "this MQTT device has no setpoint topic")
        assert self.rating_kw is not None
        if isinstance(setpoint, LoadSetpoint) and self.kind is DeviceKind.LOAD:
            load = load_command(
                self.name,
                setpoint.p_max_kw,
                min_kw=self.min_kw,
                rating_kw=self.rating_kw,
                revert_s=self.revert_s,
                last_kw=self._last_written_kw,
                ramp=self.ramp,
            )
            written, clamped = load.p_max_kw, load.clamped
            body: dict[str, float] = {"p_max_kw": load.p_max_kw, "revert_s": load.revert_s}
        elif isinstance(setpoint, PvSetpoint) and self.kind is DeviceKind.PV:
            cmd = pv_command(
                self.name,
                setpoint.p_max_kw,
                w_max_kw=self.rating_kw,
                revert_s=self.revert_s,
                last_kw=self._last_written_kw,
                ramp=self.ramp,
            )
            written, clamped = cmd.p_max_kw, cmd.clamped
            body = {"p_max_kw": cmd.p_max_kw, "limit_pct": cmd.limit_pct, "revert_s": cmd.revert_s}
            if setpoint.q_kvar is not None and not self._said_no_reactive:
                self._said_no_reactive = True  # P only: said once per run
                log.warning(
                    "reactive_unsupported",
                    device=self.name,
                    reason="an MQTT PV device takes an active-power ceiling only",
                )
        else:
            raise UnsafeWriteError(
                self.name, f"a {type(setpoint).__name__} for a {self.kind} device"
            )
        client = self._client
        if client is None:
            raise DeviceUnavailable(self.name, f"not connected to {self.host}:{self.port}")
        payload = json.dumps(body)
        try:
            await client.publish(self.setpoint_topic, payload, qos=1)
        except aiomqtt.MqttError as err:
            raise DeviceUnavailable(self.name, f"publish to {self.setpoint_topic}: {err}") from err
        self._last_written_kw = written
        return WriteResult(
            device=self.name, requested=setpoint.p_max_kw, written=written, clamped=clamped
        )


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
