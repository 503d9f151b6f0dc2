"""AMI meters over MQTT: smart meters that report at their own cadence, some late, some never.

A utility's head-end forwards each meter's interval readings when they arrive, not when the
controller would like them. ``AmiSchedule`` (pure, seeded) decides for each meter

* its cadence (uniform within ``cadence_s``) and phase (uniform within one cadence);
* for each reading, whether it is lost (``missing_frac``) or held back (``late_frac``, by a
  delay uniform within ``late_s``): a late reading keeps its own timestamp and is published
  when the delay ends; the readings behind it wait their turn (store and forward: a meter's
  readings are published in the order they were taken).

``AmiPublisher`` publishes what the schedule releases on a real broker, from a bounded queue in
a background task (the rig's step never waits on the broker; a reconnect loop rides out an
outage, and what the queue cannot hold is counted in ``dropped``). Payload on
``<root>/ami/<name>/telemetry`` (not retained)::

    {"ts": <Unix seconds of the measurement, float>, "p_w": ..., "q_var": ..., "v_v": ...}

``p_w``/``q_var`` are the customers' consumption at the bus (positive), ``v_v`` the bus's
line-line voltage, rounded to the meter's resolution.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiomqtt
import numpy as np
import structlog

from devices.tasks import cancel_and_wait

__all__ = ["AmiPublication", "AmiPublisher", "AmiSchedule", "AmiSettings", "ami_topic"]

log = structlog.get_logger("feederd.hil.ami")

_STREAM_CADENCE, _STREAM_FATE = 11, 12


def ami_topic(root: str, name: str) -> str:
    """Where meter ``name`` publishes its readings."""
    return f"{root}/ami/{name}/telemetry"


def _range(name: str, pair: tuple[float, float]) -> None:
    lo, hi = pair
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"AmiSettings.{name} must be (low, high) with 0 < low <= high")


@dataclass(frozen=True, slots=True, kw_only=True)
class AmiSettings:
    """How the AMI meters behave (see the module docstring); every draw comes from ``seed``."""

    seed: int = 1
    cadence_s: tuple[float, float] = (15.0, 60.0)
    late_frac: float = 0.1
    late_s: tuple[float, float] = (10.0, 60.0)
    missing_frac: float = 0.05
    resolution_w: float = 10.0
    """P and Q are rounded to this (W, var)."""
    resolution_v: float = 0.1
    """V is rounded to this (volts)."""

    def __post_init__(self) -> None:
        _range("cadence_s", self.cadence_s)
        _range("late_s", self.late_s)
        for name in ("late_frac", "missing_frac"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"AmiSettings.{name} must be within 0..1, got {value!r}")
        if not (self.resolution_w > 0 and self.resolution_v > 0):
            raise ValueError("AmiSettings resolutions must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class AmiPublication:
    """One reading on its way to the broker."""

    name: str
    taken_s: float
    """The rig's seconds when it was measured."""
    publish_s: float
    """The rig's seconds when it is released."""
    payload: dict[str, float]


@dataclass(slots=True)
class _Meter:
    cadence_s: float
    next_s: float
    taken: int = 0
    queue: deque[AmiPublication] = field(default_factory=deque)


class AmiSchedule:
    """Which meters measure when, and when their readings are released (pure, seeded)."""

    def __init__(self, names: Sequence[str], settings: AmiSettings, *, t0_s: float = 0.0) -> None:
        self.settings = settings
        self.names = tuple(names)
        rng = np.random.default_rng([settings.seed, _STREAM_CADENCE])
        lo, hi = settings.cadence_s
        cadences = rng.uniform(lo, hi, size=len(self.names))
        phases = rng.uniform(0.0, 1.0, size=len(self.names))
        self._index = {name: i for i, name in enumerate(self.names)}
        self._meters = {
            name: _Meter(cadence_s=float(c), next_s=t0_s + float(p) * float(c))
            for name, c, p in zip(self.names, cadences, phases, strict=True)
        }
        self.taken = 0
        self.missing = 0
        self.late = 0

    @property
    def queued(self) -> int:
        """Readings taken and not yet released."""
        return sum(len(m.queue) for m in self._meters.values())

    def cadence_s(self, name: str) -> float:
        return self._meters[name].cadence_s

    def due(self, t_s: float) -> list[str]:
        """The meters whose next reading is due by ``t_s`` (each once, its schedule moved on)."""
        out = []
        for name, meter in self._meters.items():
            if meter.next_s <= t_s:
                out.append(name)
                while meter.next_s <= t_s:  # readings missed between steps are not made up
                    meter.next_s += meter.cadence_s
        return out

    def take(self, name: str, t_s: float, payload: dict[str, float]) -> AmiPublication | None:
        """A reading of ``name`` taken at ``t_s``: queued for release, or ``None`` if lost."""
        meter = self._meters[name]
        meter.taken += 1
        self.taken += 1
        s = self.settings
        rng = np.random.default_rng([s.seed, _STREAM_FATE, self._index[name], meter.taken])
        lost, late, delay = rng.uniform(size=3)
        if lost < s.missing_frac:
            self.missing += 1
            return None
        publish_s = t_s
        if late < s.late_frac:
            self.late += 1
            publish_s += s.late_s[0] + (s.late_s[1] - s.late_s[0]) * float(delay)
        if meter.queue:  # store and forward: never ahead of the reading before it
            publish_s = max(publish_s, meter.queue[-1].publish_s)
        pub = AmiPublication(name=name, taken_s=t_s, publish_s=publish_s, payload=payload)
        meter.queue.append(pub)
        return pub

    def ready(self, t_s: float) -> list[AmiPublication]:
        """The readings released by ``t_s``, in order per meter."""
        out = []
        for meter in self._meters.values():
            while meter.queue and meter.queue[0].publish_s <= t_s:
                out.append(meter.queue.popleft())
        return out

    def reading(self, *, ts: float, p_kw: float, q_kvar: float, v_ll_v: float) -> dict[str, float]:
        """The JSON body of one reading, rounded to the meter's resolution."""
        rw, rv = self.settings.resolution_w, self.settings.resolution_v
        return {
            "ts": round(ts, 3),
            "p_w": round(round(p_kw * 1000.0 / rw) * rw, 3),
            "q_var": round(round(q_kvar * 1000.0 / rw) * rw, 3),
            "v_v": round(round(v_ll_v / rv) * rv, 3),
        }


class AmiPublisher:
    """Publishes AMI readings on the broker at ``host:port`` (``async with``)."""

    def __init__(self, *, host: str, port: int, root: str = "hil", queue_size: int = 10000) -> None:
        self.host = host
        self.port = port
        self.root = root
        self.submitted = 0
        """Readings handed over by the rig (``published`` + ``dropped`` + still queued)."""
        self.published = 0
        self.dropped = 0
        self._queue: asyncio.Queue[AmiPublication] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False

    def submit(self, pubs: Sequence[AmiPublication]) -> None:
        """Queue readings for the broker (never blocks; a full queue drops and counts)."""
        for pub in pubs:
            self.submitted += 1
            try:
                self._queue.put_nowait(pub)
            except asyncio.QueueFull:
                self.dropped += 1

    async def __aenter__(self) -> AmiPublisher:
        self._task = asyncio.create_task(self._run(), name="hil.ami")
        await asyncio.wait_for(self._connected.wait(), timeout=10.0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._closing = True
            await cancel_and_wait([self._task])
            self._task = None

    async def _run(self) -> None:
        pending: AmiPublication | None = None
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port) as client:
                    self._connected.set()
                    while True:
                        if pending is None:
                            pending = await self._queue.get()
                        body = json.dumps(pending.payload)
                        await client.publish(ami_topic(self.root, pending.name), body, qos=1)
                        pending = None
                        self.published += 1
            except aiomqtt.MqttError as err:  # the broker went away: try again shortly
                if self._closing:
                    return
                log.info("hil_ami_reconnecting", error=str(err))
                await asyncio.sleep(0.5)
