"""End to end with real parts: three real feederd daemons, each with its own HIL rig (the IEEE
33-bus feeder with PV and batteries, each at its own load, sun and seeded variation), and the
fleet coordinator daemon, all on one Mosquitto and one simulated clock
(``tests.support.fleet``). A system reduction over the three is graded on the physics: the sum
of the three rigs' head import as pandapower computes it, never a daemon's own figure.

The coordinator's ticks are driven on the shared clock (``FleetDaemon(ticker=False)``: one
``tick()`` after each fleet interval, once every feeder's flexibility of that interval has
reached it); the ticks a message makes due (a target, a feeder's will) happen on their own, as
in production. Before the feeders' next interval, every event and cancel the coordinator sent
has been decided by its feeder: the network's speed never decides what an interval sees.

Tolerances:

- ``COMPLIANCE_TOLERANCE`` (2 %): the product's own definition of a limit held (each feeder
  holds its import within 2 % of its limit; the fleet, within 2 % of the target's).
- "From the second interval of the event on": the physics at a tick reflects the setpoints
  written at the cycle one interval before, so the import of interval ``j`` of the event (the
  event starts at tick 0, with the cycle that starts interval 1) is the physics at tick ``j``:
  ``start + j·interval``. Interval 1 may hold the ramp of whatever the batteries did before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.records import COMPLIANCE_TOLERANCE
from coordinator.config import parse_fleet
from coordinator.core import Outgoing
from coordinator.daemon import FleetDaemon
from tests.support.fleet import FEEDER_ROOT, INTERVAL_S, Fleet, FleetStep, Recorder
from tests.support.wait import HANG_GUARD_S, eventually, until

FLEET_ROOT = "feederd-fleet/district-north"
ALLOCATIONS = "feederd_fleet_allocations_total"
EVENT_INTERVALS = 20
"""The target's length, in the feeders' intervals."""
WARM_UP = 3
"""Intervals before the target: every feeder's flexibility is in, its batteries settled."""
KILL_AT = 5
"""The feeder dies at tick 5 of the event, before the cycle that starts interval 6."""
TWO_CAN_HOLD = 0.75
"""The reduction as a fraction of the least flexibility two feeders have together: two can
hold it (with a quarter to spare, for what the third draws once it is lost), and no one can.
The three publish ``max_kw − min_kw`` of about 980, 980 and 1,030 kW (their batteries: 4 x
250 kW each, less the losses), so the reduction comes to about 1,470 kW."""


def _fleet_table(port: int, workdir: Path) -> dict[str, Any]:
    """The ``fleet.toml`` of the three: 6 MW feeders, a 9 MW transformer over two of them, the
    reduction shared in proportion to each one's flexibility (``fair``: all three take part;
    least cost would leave the dearest out when two can hold it)."""
    return {
        "name": "district-north",
        "mode": "fair",
        "topic_root": FLEET_ROOT,
        "feeder_root": FEEDER_ROOT,
        "interval_s": INTERVAL_S,
        "silent_after_s": 3 * INTERVAL_S,
        "max_age_s": 4 * INTERVAL_S,
        "journal": {"path": str(workdir / "fleet.sqlite")},
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive_s": 5},
        "metrics": {"enabled": False},
        "feeders": [
            {"site": "north-1", "rating_kw": 6000.0, "transformer": "T1"},
            {"site": "north-2", "rating_kw": 6000.0, "transformer": "T1"},
            {"site": "north-3", "rating_kw": 6000.0},
        ],
        "transformers": [{"name": "T1", "rating_kw": 9000.0}],
        "groups": {"north": ["north-1", "north-2", "north-3"]},
    }


class District:
    """The fleet, its coordinator and an operator's view of the broker."""

    def __init__(
        self, fleet: Fleet, daemon: FleetDaemon, operator: Recorder, sent: list[Outgoing]
    ) -> None:
        self.fleet = fleet
        self.daemon = daemon
        self.operator = operator
        self.sent = sent
        """Every event and cancel the coordinator's ticks returned, in order."""

    @property
    def now(self) -> datetime:
        return self.fleet.clock.now()

    def metric(self, name: str, **labels: str) -> float:
        value = self.daemon.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else float(value)

    async def step(self) -> FleetStep:
        """One interval of the fleet, then the coordinator's tick on what it reported."""
        cycle_at = self.now
        state = await self.fleet.step()
        await self.heard(cycle_at)
        await self.daemon.tick()
        await self.delivered()
        return state

    async def heard(self, cycle_at: datetime) -> None:
        """Until the coordinator holds each live feeder's flexibility of the cycle at
        ``cycle_at``."""
        live = self.fleet.alive

        async def heard() -> bool:
            return await self.daemon.call(
                lambda core: all(
                    (f := core.feeders[site].flex) is not None and f.at >= cycle_at for site in live
                )
            )

        await eventually(heard, f"the flexibility of {cycle_at}", guard_s=HANG_GUARD_S)

    async def delivered(self) -> None:
        """Until the coordinator's queue is out and each live feeder has decided on what it
        got: the event in force for it, and the cancel of every earlier event it accepted. (An
        event cancelled while still queued is never sent, nor its cancel: ``FleetBroker``.)
        A feeder takes one topic's messages in order, so once it has decided on the event in
        force it has decided on every event sent before it."""
        broker = self.daemon.broker
        assert broker is not None
        await until(lambda: broker.pending == 0, "the coordinator's queue out")
        for site in self.fleet.alive:
            dr = self.fleet.sim(site).daemon.dr
            sent = [o.payload for o in self.sent if o.topic == f"{FEEDER_ROOT}/{site}/dr/event"]
            cancelled = {p["id"] for p in sent if "cancel" in p}
            live = [p["id"] for p in sent if "cancel" not in p and p["id"] not in cancelled]
            for event_id in live[-1:]:
                await until(
                    functools.partial(_decided, dr, event_id, "accepted", "rejected"),
                    f"{site} to decide on {event_id}",
                )
            for event_id in cancelled:
                await until(
                    functools.partial(_cancelled_if_held, dr, event_id),
                    f"{site} to cancel {event_id}",
                )

    def flex(self) -> dict[str, dict[str, Any]]:
        return {s: self.operator.json(f"{FEEDER_ROOT}/{s}/flex") for s in self.fleet.sites}

    async def target(self, kw: float, *, intervals: int = EVENT_INTERVALS) -> dict[str, Any]:
        """A ``reduce_by`` over the group from now, given over MQTT; returns the coordinator's
        status of it once its events are decided by the feeders."""
        start = self.now
        await self.operator.publish(
            f"{FLEET_ROOT}/target",
            {
                "id": "evening",
                "group": "north",
                "type": "reduce_by",
                "kw": kw,
                "start": start.isoformat(),
                "end": (start + timedelta(seconds=intervals * INTERVAL_S)).isoformat(),
            },
        )
        await until(lambda: bool(self.sent), "the coordinator's events")
        await self.delivered()
        status = await self.daemon.call(lambda core: core.status())
        (target,) = status["targets"]
        return dict(target)

    def accepted(self, site: str) -> list[str]:
        """The coordinator's events the feeder's retained ``dr/status`` lists as accepted."""
        status = self.operator.json(f"{FEEDER_ROOT}/{site}/dr/status") or {}
        return [
            d["id"]
            for d in status.get("recent", [])
            if d["result"] == "accepted" and str(d["id"]).startswith("fleet:")
        ]

    def accepts(self, site: str, event_id: str) -> bool:
        return event_id in self.accepted(site)

    def events_to(self, site: str, *, since: int = 0) -> list[dict[str, Any]]:
        """The events (not the cancels) sent to ``site``, from the ``since``-th message on."""
        return [
            o.payload
            for o in self.sent[since:]
            if o.topic == f"{FEEDER_ROOT}/{site}/dr/event" and "cancel" not in o.payload
        ]


@asynccontextmanager
async def district(tmp_path: Path) -> AsyncIterator[District]:
    async with Fleet.open(tmp_path) as fleet:
        config = parse_fleet(
            _fleet_table(fleet.broker.port, tmp_path), source="<test>", base_dir=tmp_path
        )
        mqtt = dataclasses.replace(config.mqtt_settings(), backoff_min_s=0.05, backoff_max_s=0.5)
        sent: list[Outgoing] = []

        def on_tick(out: list[Outgoing]) -> None:
            sent.extend(o for o in out if not o.retain)

        async with (
            Recorder.open(fleet.broker.port, [f"{FEEDER_ROOT}/#", f"{FLEET_ROOT}/#"]) as operator,
            FleetDaemon.open(
                config, clock=fleet.clock, mqtt=mqtt, ticker=False, on_tick=on_tick
            ) as daemon,
        ):
            d = District(fleet, daemon, operator, sent)
            stop = asyncio.Event()
            running = asyncio.create_task(daemon.run(stop), name="test.coordinator")
            try:
                assert daemon.broker is not None
                await until(daemon.broker.connected.is_set, "the coordinator connected")
                yield d
            finally:
                stop.set()
                await asyncio.wait({running}, timeout=10.0)


def _reduction(flex: dict[str, dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """The reduction to ask, from the feeders' own published flexibility: ``max_kw − min_kw``
    each; large enough that no one feeder can hold it, small enough that any two can."""
    room = {s: f["max_kw"] - f["min_kw"] for s, f in flex.items()}
    two = sorted(room.values())[0] + sorted(room.values())[1]
    kw = round(TWO_CAN_HOLD * two, 1)
    assert kw > max(room.values()), f"one feeder could hold {kw} kW alone: {room}"
    return kw, room


def _decided(dr: Any, event_id: str, *results: str) -> bool:
    """Whether the feeder's DR service decided ``event_id`` with one of ``results``."""
    return any(d.id == event_id and d.result in results for d in dr.recent)


def _cancelled_if_held(dr: Any, event_id: str) -> bool:
    """Whether the feeder either never took ``event_id`` or has cancelled it."""
    return not _decided(dr, event_id, "accepted") or _decided(dr, event_id, "cancelled")


def _held(import_kw: float, limit_kw: float) -> bool:
    return import_kw <= limit_kw * (1 + COMPLIANCE_TOLERANCE)


async def _warm_up(d: District) -> tuple[float, float]:
    """``WARM_UP`` intervals; then the reduction (from the published flexibility) and the
    group's ``max_kw`` sum the coordinator will freeze."""
    for _ in range(WARM_UP):
        await d.step()
    last_cycle = d.now - timedelta(seconds=INTERVAL_S)

    def latest(f: dict[str, Any] | None) -> bool:  # the last cycle's, as the coordinator has
        return f is not None and datetime.fromisoformat(f["at"]) >= last_cycle

    await until(
        lambda: all(latest(f) for f in d.flex().values()), "every feeder's last flexibility"
    )
    flex = d.flex()
    assert all(f["min_kw"] is not None for f in flex.values()), flex
    kw, _room = _reduction(flex)
    return kw, sum(f["max_kw"] for f in flex.values())


async def test_a_reduction_is_held_by_three_feeders_through_a_broker_restart(
    tmp_path: Path,
) -> None:
    """(a) each feeder accepts its ``fleet:`` event, (b) from the second interval on the
    physics' fleet import is within the target + 2 %, (d) with the broker restarted mid-event:
    the feeders hold, the coordinator comes back and publishes no event twice."""
    async with district(tmp_path) as d:
        kw, max_sum = await _warm_up(d)
        target = await d.target(kw)
        limit = target["limit_kw"]
        # reduce_by: the limit is the group's max_kw sum at the first allocation (what the
        # feeders published last, each rounded to 0.01 kW), minus kw
        assert abs(limit - (max_sum - kw)) <= 0.05, (limit, max_sum, kw)
        for site in d.fleet.sites:
            (event,) = d.events_to(site)
            assert event["id"] == "fleet:evening:1"
            await until(functools.partial(d.accepts, site, "fleet:evening:1"), f"{site} accepts")
        ends: dict[int, float] = {}  # the fleet's import at the end of interval j (tick j)
        for j in range(EVENT_INTERVALS + 1):
            if j == EVENT_INTERVALS // 2:  # mid-event: the broker goes down and comes back
                await d.fleet.broker_restart()
                assert d.daemon.broker is not None
                await until(d.daemon.broker.connected.is_set, "the coordinator back")
            ends[j] = (await d.step()).import_kw
        # (b) the physics, from the second interval to the last
        late = {j: round(i, 1) for j, i in ends.items() if j >= 2}
        print(
            f"\nfleet limit {limit:.1f} kW (reduce_by {kw:.1f}); physics by interval: "
            f"{ {j: round(i, 1) for j, i in ends.items()} }"
        )
        assert all(_held(i, limit) for i in late.values()), (limit, late)
        # (d) nothing published twice: the ids the coordinator sent, and what the feeders got
        ids = Counter((o.topic, o.payload["id"], "cancel" in o.payload) for o in d.sent)
        assert max(ids.values()) == 1, ids
        events = d.metric("feederd_fleet_events_published_total", kind="event")
        assert events == sum(1 for _, _, c in ids if not c)
        on_the_wire = Counter(
            (topic, json.loads(body)["id"], b'"cancel"' in body)
            for topic, body in d.operator.log
            if topic.endswith("/dr/event")
        )
        assert max(on_the_wire.values()) == 1, on_the_wire  # as far as the operator saw
        for site in d.fleet.sites:  # each event accepted once by its feeder
            dr = d.fleet.sim(site).daemon.dr
            accepted = Counter(x.id for x in dr.recent if x.result == "accepted")
            assert max(accepted.values()) == 1, (site, accepted)
        # a broker restart is not a feeder lost: no re-allocation for silence or a return
        for reason in ("feeder_silent", "feeder_back"):
            allocations = d.metric(ALLOCATIONS, reason=reason)
            assert allocations == 0, (reason, allocations)


async def test_a_feeder_killed_mid_event_is_taken_up_by_the_other_two(tmp_path: Path) -> None:
    """(c) the feeder with the largest share dies (SIGKILL-like: its will says offline) at tick
    ``KILL_AT`` of the event. The coordinator believes a will after its grace
    (``coordinator.feeders.OFFLINE_GRACE_S``, 2 s: a broker shutting down says every will), so
    it re-splits at its first tick after that: within two intervals of the death, the other two
    have accepted their new, lower limits, and from the second interval under those on, the
    fleet's import (the dead feeder's included, whose batteries revert to idle on their own ten
    intervals after its last write) is within the target + 2 %, to the event's end. A malformed
    flexibility message on a live feeder's topic meanwhile is refused and counted; the fleet
    goes on."""
    async with district(tmp_path) as d:
        kw, _ = await _warm_up(d)
        target = await d.target(kw)
        limit = target["limit_kw"]
        ends: dict[int, FleetStep] = {}  # the physics at the end of interval j (tick j)
        for j in range(KILL_AT):
            ends[j] = await d.step()
        status = await d.daemon.call(lambda core: core.status())
        reductions = {s: f["reduction_kw"] for s, f in status["feeders"].items()}
        victim = max(reductions, key=lambda s: reductions[s])
        survivors = [s for s in d.fleet.sites if s != victim]
        await d.fleet.kill(victim)  # at tick KILL_AT, before the cycle that starts its interval
        await until(
            lambda: d.operator.last.get(f"{FEEDER_ROOT}/{victim}/online") == b"false",
            "the will of the killed feeder",
        )
        dead = d.fleet.sim(victim)
        at_kill = ends[KILL_AT - 1].physics[victim].head_p_kw
        resplit: int | None = None
        """The tick at which the coordinator re-split (its tick after step j is at tick j + 1,
        before the cycle that starts interval j + 2)."""
        for j in range(KILL_AT, EVENT_INTERVALS + 1):
            if j == KILL_AT + 3:  # bad input on a live feeder's topic: refused, counted
                await d.operator.publish(f"{FEEDER_ROOT}/{survivors[0]}/flex", b'{"v": 1')
                await until(
                    lambda: d.metric("feederd_fleet_flex_refused_total", reason="malformed") == 1,
                    "the malformed flexibility refused and counted",
                )
            mark = len(d.sent)
            ends[j] = await d.step()
            if resplit is None and d.metric(ALLOCATIONS, reason="feeder_silent") > 0:
                resplit = j + 1
                await _taken_up(d, victim, survivors, mark)
        assert resplit is not None, "no re-allocation after the feeder died"
        assert resplit - KILL_AT <= 2, (KILL_AT, resplit)
        # the new limits hold from the cycle at tick `resplit` (the interval ending at tick
        # resplit + 1); the second interval under them ends at tick resplit + 2
        late = {j: round(s.import_kw, 1) for j, s in ends.items() if j >= resplit + 2}
        print(
            f"\nfleet limit {limit:.1f} kW; {victim} killed at tick {KILL_AT}, re-split at tick "
            f"{resplit}; physics by interval: { {j: round(s.import_kw, 1) for j, s in ends.items()} }"
        )
        assert all(_held(i, limit) for i in late.values()), (limit, late)
        # the dead feeder's batteries reverted to idle (their timers, on the simulated clock),
        # and its import rose: the survivors held through that too
        assert all(abs(b.p_kw) < 1.0 for b in dead.rig.batteries.values())
        # its reduction came from its batteries alone (curtailing PV only raises import):
        # idle, they give it back, less the losses they saved
        rise = ends[EVENT_INTERVALS].physics[victim].head_p_kw - at_kill
        assert rise > 0.5 * reductions[victim], (rise, reductions[victim])
        silent = d.metric("feederd_fleet_feeders", state="silent")
        assert silent == 1.0
        doc = json.loads(d.operator.last[f"{FLEET_ROOT}/status"])
        assert doc["feeders"][victim]["state"] == "silent"


async def _taken_up(d: District, victim: str, survivors: list[str], since: int) -> None:
    """The re-split: one new event for each survivor, lower than its last (each takes a part
    of the dead feeder's share), accepted by it; none for the dead; nothing left short (two
    can hold the reduction)."""
    for site in survivors:
        (new,) = d.events_to(site, since=since)
        old = d.events_to(site)[-2]
        assert new["kw"] < old["kw"], (site, old, new)
        await until(functools.partial(d.accepts, site, new["id"]), f"{site} accepts")
    assert d.events_to(victim, since=since) == []
    status = await d.daemon.call(lambda core: core.status())
    (after,) = status["targets"]
    assert not after["shortfall_kw"], after
