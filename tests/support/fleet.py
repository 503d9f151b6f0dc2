"""Three real feederd daemons, each with its own HIL rig, on one simulated clock and one Mosquitto:
the fleet the coordinator's end-to-end tests run against.

``async with Fleet.open(workdir) as fleet`` starts a Mosquitto on a free loopback port and, for
each of ``RIGS``, an IEEE 33-bus rig with its DERs and the real daemon (``Simulation.open``, the
product's own) on the shared ``FakeClock``, its MQTT intake on ``feederd/<site>`` (short
backoffs, so a reconnect costs a test a fraction of a second). The rigs are not copies: each has
its own load level, sun and seeded variation (impedances, customer classes, meter errors).

``await fleet.step()`` is one interval of the fleet: every rig's physics advanced to the tick,
every live daemon's control cycle, then the clock moved on once. What it returns is the physics
at the tick (pandapower's AC power flow of each rig with the setpoints of the interval before):
the fleet's import is the sum of the three heads as the rigs measure them, never the daemons'
own estimate. The three cycles run concurrently (their solves on worker threads); nothing in a
cycle sleeps on the clock, so sharing it is safe. A step takes 0.9-1.3 s of wall time on the
2-core test box (each daemon's dispatch with its 24 h plan, and its flexibility's parametric
solves); opening the fleet about 4 s.

``await fleet.kill(site)`` is the daemon's death as by SIGKILL: its MQTT connection is cut
without a DISCONNECT (the socket shut down under the client), so the broker publishes its will
(``<root>/online`` = ``false``); its intake never reconnects and its controller never cycles
again, while its rig's physics go on stepping (its devices revert on their own when their
revert timers lapse, on the simulated clock). ``await fleet.broker_restart()`` stops the
Mosquitto and starts it again on the same port (without persistence: retained messages and
sessions are lost). Mosquitto stopped by SIGTERM first publishes every connected client's will
to the subscribers still connected: a restart says ``online = false`` for every feeder.

``Recorder`` is a plain MQTT client of the test's (it reconnects after a broker restart) that
keeps every message it sees (``log``), the last of each topic and their counts: what a dashboard
or an operator on the broker would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

from controller.clock import FakeClock
from controller.commands.rig.config import merge
from controller.commands.rig.simulation import Simulation
from controller.dr.intake import MqttIntake, MqttSettings
from devices.tasks import cancel_and_wait
from hil import PhysicsState
from hil.variation import RigVariation
from tests.support.mosquitto import Mosquitto
from tests.support.wait import until

__all__ = [
    "FEEDER_ROOT",
    "INTERVAL_S",
    "RIGS",
    "SIM_START",
    "Fleet",
    "FleetStep",
    "Recorder",
    "RigSpec",
]

FEEDER_ROOT = "feederd"
"""Each feeder's topics are under ``feederd/<site>``."""
INTERVAL_S = 5.0
"""The feeders' control interval (simulated: it costs no wall time)."""
SIM_START = datetime(2030, 6, 4, 12, tzinfo=UTC)
"""A fixed Tuesday noon (UTC), so the customer classes' hours are the same whenever it runs."""
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.05, 0.5
"""Reconnect backoffs in real seconds: short, so a broker restart costs a test little."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RigSpec:
    """One feeder of the fleet: its site name and how its rig differs from the others."""

    site: str
    load_scale: float
    """The 33-bus case's loads times this (1.0: about 3.7 MW of load)."""
    pv_frac: float
    """The PV inverters' available power, a fraction of their rating."""
    seed: int
    """The rig's variation (``hil.variation.RigVariation``): impedances, classes, meters."""
    battery_soc_pct: float = 60.0

    def rig_options(self) -> dict[str, Any]:
        load, sun = self.load_scale, self.pv_frac
        return {
            "load_scale": lambda _t: load,
            "pv_available_frac": lambda _t: sun,
            "variation": RigVariation(seed=self.seed),
            "battery_soc_pct": self.battery_soc_pct,
            "solve_on_write": False,
        }


RIGS = (
    RigSpec(site="north-1", load_scale=0.9, pv_frac=0.8, seed=11),
    RigSpec(site="north-2", load_scale=1.0, pv_frac=0.6, seed=22),
    RigSpec(site="north-3", load_scale=1.1, pv_frac=0.7, seed=33, battery_soc_pct=70.0),
)
CONFIG: dict[str, Any] = {"interval_s": INTERVAL_S, "poll": {"timeout_s": 2.0}}
"""Each daemon's config over the rig's base: the tests' interval, a 2 s request timeout (real
seconds, generous on a busy machine; only a silent device pays it)."""


@dataclass(frozen=True, slots=True)
class FleetStep:
    """One fleet interval: the physics of each rig at the tick (by site)."""

    at: datetime
    physics: Mapping[str, PhysicsState]

    @property
    def import_kw(self) -> float:
        """The fleet's import: the sum of the heads, as the physics measure them."""
        return sum(s.head_p_kw for s in self.physics.values())


@dataclass(slots=True)
class _Member:
    spec: RigSpec
    sim: Simulation
    clients: list[aiomqtt.Client] = field(default_factory=list)
    alive: bool = True


class Fleet:
    """The running fleet (made by ``Fleet.open``)."""

    def __init__(self, *, clock: FakeClock, broker: Mosquitto) -> None:
        self.clock = clock
        self.broker = broker
        self._members: dict[str, _Member] = {}

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(self._members)

    @property
    def alive(self) -> tuple[str, ...]:
        return tuple(s for s, m in self._members.items() if m.alive)

    @property
    def interval_s(self) -> float:
        """The feeders' interval (``INTERVAL_S`` unless the overrides say otherwise)."""
        (interval,) = {m.sim.interval_s for m in self._members.values()}
        return interval

    def sim(self, site: str) -> Simulation:
        return self._members[site].sim

    def intake(self, site: str) -> MqttIntake:
        intake = self._members[site].sim.daemon.intake
        assert intake is not None
        return intake

    @staticmethod
    def root(site: str) -> str:
        return f"{FEEDER_ROOT}/{site}"

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        workdir: Path,
        *,
        rigs: Sequence[RigSpec] = RIGS,
        overrides: Mapping[str, Any] | None = None,
        start: datetime = SIM_START,
    ) -> AsyncIterator[Fleet]:
        """The broker and the three feeders, each connected to it; ``overrides`` is more of
        every daemon's config (a partial feederd.toml)."""
        broker = Mosquitto(workdir)
        await broker.start()
        clock = FakeClock(start)
        fleet = cls(clock=clock, broker=broker)
        try:
            async with contextlib.AsyncExitStack() as stack:
                for spec in rigs:
                    sim = await stack.enter_async_context(
                        Simulation.open(
                            overrides=merge(CONFIG, overrides or {}),
                            rig_options=spec.rig_options(),
                            mqtt=MqttSettings(
                                host="127.0.0.1",
                                port=broker.port,
                                topic_root=cls.root(spec.site),
                                client_id=f"feederd-{spec.site}",
                                keepalive_s=5,
                                backoff_min_s=BACKOFF_MIN_S,
                                backoff_max_s=BACKOFF_MAX_S,
                            ),
                            site=spec.site,
                            clock=clock,
                        )
                    )
                    member = _Member(spec=spec, sim=sim)
                    _capture_clients(member)
                    fleet._members[spec.site] = member
                await fleet.connected()
                yield fleet
        finally:
            broker.stop()

    async def connected(self) -> None:
        """Wait until every live feeder's intake is connected to the broker."""
        for site in self.alive:
            intake = self.intake(site)
            await until(intake.connected.is_set, f"{site} connected to the broker")

    async def physics(self) -> FleetStep:
        """Every rig's physics advanced to the clock (each rig's solve on a thread of its own)."""
        states = await asyncio.gather(*(m.sim.physics() for m in self._members.values()))
        return FleetStep(at=self.clock.now(), physics=dict(zip(self.sites, states, strict=True)))

    async def step(self) -> FleetStep:
        """One interval: the physics at the tick, each live daemon's cycle, the clock moved on.
        Returns the physics at the tick."""
        state = await self.physics()
        live = [m.sim.daemon.controller for m in self._members.values() if m.alive]
        await asyncio.gather(*(controller.cycle() for controller in live))
        self.clock.advance(self.interval_s)
        return state

    async def kill(self, site: str) -> None:
        """``site``'s daemon dies as by SIGKILL (see the module docstring)."""
        member = self._members[site]
        if not member.alive:
            return
        member.alive = False
        intake = self.intake(site)
        live = [c for c in member.clients if c._client.socket() is not None]
        if len(live) != 1:
            raise RuntimeError(f"{site}: {len(live)} live MQTT connections, expected one")
        sock = live[0]._client.socket()
        assert isinstance(sock, socket.socket)
        # the kernel ends the TCP connection as it would for a dead process: no DISCONNECT,
        # so the broker publishes the will; nothing is written on this socket any more
        sock.shutdown(socket.SHUT_RDWR)
        # and the process is gone: its MQTT loop does not reconnect
        name = f"feederd[{site}].mqtt"
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == name]
        if len(tasks) != 1:
            raise RuntimeError(f"{site}: no task named {name}")
        await cancel_and_wait(tasks)
        intake.connected.clear()
        lost = live[0]._disconnected  # its "unexpected disconnection", seen (not left unread)
        if lost.done() and not lost.cancelled():
            lost.exception()

    async def broker_restart(self) -> None:
        """Stop the Mosquitto and start it again on the same port; wait for the live feeders
        to be back."""
        self.broker.stop()
        for site in self.alive:
            up = self.intake(site).connected
            await until(lambda: not up.is_set(), f"{site} to see the broker gone")  # noqa: B023
        await self.broker.start()
        await self.connected()


def _capture_clients(member: _Member) -> None:
    """Keep each aiomqtt client the daemon's intake makes (to cut its connection in ``kill``).
    The intake's task has not run yet when ``Simulation.open`` hands the daemon over, so the
    first connection is captured too (``kill`` checks there is one)."""
    intake = member.sim.daemon.intake
    assert intake is not None
    make = intake._client

    def capturing() -> aiomqtt.Client:
        client = make()
        member.clients.append(client)
        return client

    intake._client = capturing  # type: ignore[method-assign]


class Recorder:
    """A test's own MQTT client: the last payload of each topic under ``filters`` and how many
    messages each topic carried (``counts``). It reconnects after a broker restart (retained
    messages then arrive again, and are counted again)."""

    def __init__(self, port: int, filters: Sequence[str]) -> None:
        self.port = port
        self.filters = tuple(filters)
        self.last: dict[str, bytes] = {}
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[str, bytes]] = []
        """Every message, in order (a test's few hundred)."""
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None

    def json(self, topic: str) -> Any:
        body = self.last.get(topic)
        return None if body is None else json.loads(body)

    async def publish(self, topic: str, payload: bytes | str | Mapping[str, Any]) -> None:
        body = json.dumps(payload) if isinstance(payload, Mapping) else payload
        await until(self.connected.is_set, "the recorder connected")
        assert self._client is not None
        await self._client.publish(topic, body, qos=1)

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, keepalive=5) as client:
                    for topic in self.filters:
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self.connected.set()
                    async for message in client.messages:
                        topic = str(message.topic)
                        payload = message.payload
                        body = payload if isinstance(payload, bytes) else str(payload).encode()
                        self.last[topic] = body
                        self.counts[topic] += 1
                        self.log.append((topic, body))
            except aiomqtt.MqttError:
                self.connected.clear()
                self._client = None
                await asyncio.sleep(0.05)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, port: int, filters: Sequence[str]) -> AsyncIterator[Recorder]:
        recorder = cls(port, filters)
        task = asyncio.create_task(recorder.run(), name="test.recorder")
        try:
            await until(recorder.connected.is_set, "the recorder connected")
            yield recorder
        finally:
            await cancel_and_wait([task])
