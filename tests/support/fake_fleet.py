"""Many lightweight feeders on one broker, for the coordinator's scale benchmark and its
end-to-end test: each speaks feederd's side of the fleet contract and obeys its limits, without
a rig or a dispatch behind it.

``FakeFeeder`` is one feeder's logic, pure (no I/O, the time passed in):

- its flexibility (``controller.flex.Flexibility``): ``max_kw`` is its baseline (what it draws
  left alone), ``min_kw`` the least it can hold, the curve a few convex segments between them
  (cost non-increasing, 0 at ``max_kw``); ``import_kw`` is what it draws now:
  ``min(baseline, limit)``, never below ``min_kw`` (a limit it cannot reach it misses);
- its DR events, taken as feederd takes them: each ``dr/event`` payload validated with
  ``controller.dr.events.parse_payload`` and answered by a decision (``accepted``,
  ``cancelled`` or ``rejected`` with the reason); of the import limits in force the highest
  priority wins, then the later accepted (feederd's overlap rule);
- its ``dr/status`` document, in the shape of ``controller.dr.service.DrService.status``
  (``last``, ``recent``, ``active``, ``events`` with ``ready`` and ``predicted_shortfall_kw``,
  ``compliance``).

``make_feeders(n, seed=...)`` draws ``n`` of them, seeded: baselines from 0.5 to 6 MW, ratings
above them, 5-40 % of the baseline flexible, 1-5 curve segments.

``FakeFleet`` puts them on a broker over a few MQTT connections (``connections``; each carries
its share of the feeders and subscribes to each one's ``dr/event``): ``publish_flex()`` sends
every feeder's flexibility (retained, QoS 1), each event is answered by that feeder's
``dr/status`` (retained, QoS 1) as soon as it is decided, and each feeder's ``online`` is
``true`` (retained) from the start. ``received_at`` and ``acked_at`` keep when each (site,
event id) arrived and was answered (the loop's clock: ``time.monotonic``, comparable between
processes), and ``on_answer`` hears of each answer as it goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiomqtt

from controller.dr.events import Cancel, DrEvent, EventRejected, EventType, parse_payload
from controller.flex import MAX_EVENTS, FlexEvent, Flexibility
from devices.tasks import cancel_and_wait

__all__ = [
    "FakeFeeder",
    "FakeFleet",
    "acknowledged",
    "holds_latest",
    "make_feeders",
]

COMPLIANCE_TOLERANCE = 0.02
"""feederd's own: a limit is held within 2 % of it."""
RECENT = 20
"""As many decisions as feederd's ``dr/status`` lists."""


@dataclass(slots=True)
class _Held:
    event: DrEvent
    seq: int


@dataclass(slots=True, kw_only=True)
class FakeFeeder:
    """One simulated feeder (see the module docstring)."""

    site: str
    rating_kw: float
    baseline_kw: float
    min_kw: float
    curve: tuple[tuple[float, float], ...]
    interval_s: float = 30.0
    seq: int = 0
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT), init=False)
    _events: dict[str, _Held] = field(default_factory=dict, init=False, repr=False)
    _accepted: int = field(default=0, init=False, repr=False)

    # -- the physics of a feeder that obeys -----------------------------------------------

    def in_force(self, now: datetime) -> list[DrEvent]:
        """The import limits in force at ``now``, the winning one first."""
        held = [
            h
            for h in self._events.values()
            if h.event.type is EventType.IMPORT_LIMIT and h.event.active_at(now)
        ]
        held.sort(key=lambda h: (-h.event.priority, -h.seq))
        return [h.event for h in held]

    def limit_kw(self, now: datetime) -> float | None:
        winning = self.in_force(now)
        return winning[0].kw if winning else None

    def import_kw(self, now: datetime) -> float:
        """What it draws: its baseline, or the limit if lower, but never below ``min_kw``."""
        limit = self.limit_kw(now)
        held = self.baseline_kw if limit is None else min(self.baseline_kw, limit)
        return max(self.min_kw, held)

    # -- the contract ---------------------------------------------------------------------

    def flex(self, now: datetime) -> Flexibility:
        self.seq += 1
        self._expire(now)
        return Flexibility(
            site=self.site,
            at=now,
            seq=self.seq,
            interval_s=self.interval_s,
            window_s=3600.0,
            import_kw=self.import_kw(now),
            limit_kw=self.limit_kw(now),
            min_kw=self.min_kw,
            max_kw=self.baseline_kw,
            curve=self.curve,
            health="ok",
            devices_up=10,
            devices=10,
            events=tuple(
                FlexEvent(
                    id=h.event.id,
                    type=h.event.type.value,
                    kw=h.event.kw,
                    start=h.event.start,
                    end=h.event.end,
                    source="mqtt",
                    active=h.event.active_at(now),
                )
                for h in list(self._events.values())[:MAX_EVENTS]
            ),
        )

    def decide(self, payload: bytes, now: datetime) -> dict[str, Any]:
        """One ``dr/event`` payload: the decision, recorded in ``recent``."""
        try:
            parsed = parse_payload(payload, now=now)
        except EventRejected as err:
            return self._decision(err.event_id, "rejected", err.reason, now)
        if isinstance(parsed, Cancel):
            if self._events.pop(parsed.id, None) is None:
                return self._decision(parsed.id, "rejected", "no such event", now)
            return self._decision(parsed.id, "cancelled", None, now)
        if parsed.end <= now:
            return self._decision(parsed.id, "rejected", "already over", now)
        self._accepted += 1
        self._events[parsed.id] = _Held(parsed, self._accepted)
        return self._decision(parsed.id, "accepted", None, now)

    def status(self, now: datetime) -> dict[str, Any]:
        """The retained ``dr/status`` document (``DrService.status``'s shape)."""
        self._expire(now)
        winning = self.in_force(now)
        limit = winning[0] if winning else None
        events = sorted(self._events.values(), key=lambda h: (h.event.start, h.event.id))
        importing = self.import_kw(now)
        return {
            "site": self.site,
            "at": now.isoformat(),
            "last": self.recent[-1] if self.recent else None,
            "recent": list(self.recent),
            "active": {
                "import_limit_kw": None if limit is None else limit.kw,
                "export_limit_kw": None,
                "import_event": None if limit is None else limit.id,
                "export_event": None,
            },
            "events": [
                {
                    **h.event.to_json(),
                    "active": h.event.active_at(now),
                    "source": "mqtt",
                    **self._readiness(h.event),
                }
                for h in events[:MAX_EVENTS]
            ],
            "events_active": sum(h.event.active_at(now) for h in events),
            "events_coming": sum(h.event.start > now for h in events),
            "events_stored": len(events),
            "compliance": {
                "import_kw": round(importing, 2),
                "within_limit": limit is None or importing <= limit.kw * (1 + COMPLIANCE_TOLERANCE),
                "tolerance": COMPLIANCE_TOLERANCE,
            },
        }

    def _readiness(self, event: DrEvent) -> dict[str, Any]:
        if event.type is not EventType.IMPORT_LIMIT:
            return {"predicted_shortfall_kw": None, "predicted_shortfall_kwh": None, "ready": None}
        short_kw = max(0.0, min(self.min_kw, self.baseline_kw) - event.kw)
        hours = (event.end - event.start).total_seconds() / 3600.0
        return {
            "predicted_shortfall_kw": round(short_kw, 2),
            "predicted_shortfall_kwh": round(short_kw * hours, 2),
            "ready": short_kw <= COMPLIANCE_TOLERANCE * event.kw,
        }

    def _decision(
        self, event_id: str | None, result: str, reason: str | None, now: datetime
    ) -> dict[str, Any]:
        decision = {
            "id": event_id,
            "result": result,
            "reason": reason,
            "source": "mqtt",
            "at": now.isoformat(),
        }
        self.recent.append(decision)
        return decision

    def _expire(self, now: datetime) -> None:
        for event_id in [i for i, h in self._events.items() if h.event.end <= now]:
            del self._events[event_id]


def _curve(rng: random.Random, min_kw: float, max_kw: float) -> tuple[tuple[float, float], ...]:
    """1-5 segments from ``min_kw`` to ``max_kw``, convex: the cost per kW (the slope's
    magnitude) falls segment by segment towards ``max_kw``, where the cost is 0."""
    segments = rng.randint(1, 5)
    cuts = sorted(rng.uniform(min_kw, max_kw) for _ in range(segments - 1))
    kws = [min_kw, *cuts, max_kw]
    slopes = sorted((rng.uniform(0.01, 2.0) for _ in range(segments)), reverse=True)
    costs = [0.0]
    for n in range(segments, 0, -1):  # from max_kw down: each segment left costs more per kW
        costs.append(costs[-1] + slopes[n - 1] * (kws[n] - kws[n - 1]))
    costs.reverse()
    return tuple((round(k, 2), round(c, 4)) for k, c in zip(kws, costs, strict=True))


def make_feeders(
    n: int, *, seed: int = 17, interval_s: float = 30.0, prefix: str = "f"
) -> list[FakeFeeder]:
    """``n`` feeders named ``<prefix>0000``..., drawn from ``seed`` (see the module docstring)."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        baseline = round(rng.uniform(500.0, 6000.0), 2)
        flexible = baseline * rng.uniform(0.05, 0.40)
        min_kw = round(baseline - flexible, 2)
        out.append(
            FakeFeeder(
                site=f"{prefix}{k:04d}",
                rating_kw=round(baseline * rng.uniform(1.2, 1.6), 1),
                baseline_kw=baseline,
                min_kw=min_kw,
                curve=_curve(rng, min_kw, baseline),
                interval_s=interval_s,
            )
        )
    return out


@dataclass(slots=True)
class _Link:
    feeders: dict[str, FakeFeeder]
    client: aiomqtt.Client | None = None


class FakeFleet:
    """``feeders`` on the broker at ``host:port`` over ``connections`` MQTT clients (see the
    module docstring); ``now`` is the feeders' clock (the coordinator's, in a test)."""

    def __init__(
        self,
        feeders: Sequence[FakeFeeder],
        *,
        host: str = "127.0.0.1",
        port: int,
        now: Callable[[], datetime],
        root: str = "feederd",
        connections: int = 10,
    ) -> None:
        self.feeders = {f.site: f for f in feeders}
        self.host = host
        self.port = port
        self.now = now
        self.root = root
        self.connections = max(1, min(connections, len(feeders)))
        sites = list(self.feeders)
        self._links = [
            _Link({s: self.feeders[s] for s in sites[k :: self.connections]})
            for k in range(self.connections)
        ]
        self.on_answer: Callable[[str, dict[str, Any], float, float], None] | None = None
        """Called with (site, decision, when the event arrived, when the status went out)."""
        self.decisions: Counter[str] = Counter()
        self._sending: set[asyncio.Task[None]] = set()
        self.received_at: dict[tuple[str, str], float] = {}
        """(site, event id) → when it arrived (the loop's clock, real seconds)."""
        self.acked_at: dict[tuple[str, str], float] = {}
        """(site, event id) → when its decision went out (the loop's clock, real seconds)."""

    def topic(self, site: str, leaf: str) -> str:
        return f"{self.root}/{site}/{leaf}"

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, feeders: Sequence[FakeFeeder], **kwargs: Any) -> AsyncIterator[FakeFleet]:
        """Connected and subscribed, each feeder online with its first flexibility out."""
        fleet = cls(feeders, **kwargs)
        async with contextlib.AsyncExitStack() as stack:
            ready = []
            for n, link in enumerate(fleet._links):
                link.client = await stack.enter_async_context(
                    aiomqtt.Client(
                        fleet.host, fleet.port, identifier=f"fake-fleet-{n}", keepalive=30
                    )
                )
                await link.client.subscribe([(fleet.topic(s, "dr/event"), 1) for s in link.feeders])
                ready.append(link)
            tasks = [
                asyncio.create_task(fleet._serve(link), name=f"fake-fleet.{n}")
                for n, link in enumerate(ready)
            ]
            try:
                await fleet._publish_all(lambda f, _now: "true", "online")
                now = fleet.now()
                await fleet._publish_all(lambda f, _now: json.dumps(f.status(now)), "dr/status")
                await fleet.publish_flex()
                yield fleet
            finally:
                await cancel_and_wait([*tasks, *fleet._sending])

    async def publish_flex(self) -> None:
        """Every feeder's flexibility now (retained, QoS 1)."""
        await self._publish_all(
            lambda f, now: json.dumps(f.flex(now).to_json(), separators=(",", ":")), "flex"
        )

    async def _publish_all(self, body: Callable[[FakeFeeder, datetime], str], leaf: str) -> None:
        now = self.now()

        async def one(link: _Link) -> None:
            assert link.client is not None
            for site, feeder in link.feeders.items():
                await link.client.publish(
                    self.topic(site, leaf), body(feeder, now), qos=1, retain=True
                )

        await asyncio.gather(*(one(link) for link in self._links))

    async def _serve(self, link: _Link) -> None:
        assert link.client is not None
        loop = asyncio.get_running_loop()
        prefix = self.root + "/"
        async for message in link.client.messages:
            site = str(message.topic).removeprefix(prefix).partition("/")[0]
            feeder = link.feeders.get(site)
            if feeder is None:
                continue
            payload = message.payload
            raw = payload if isinstance(payload, bytes) else str(payload).encode()
            arrived, now = loop.time(), self.now()
            decision = feeder.decide(raw, now)
            if decision["id"] is not None:
                self.received_at.setdefault((site, str(decision["id"])), arrived)
            self.decisions[decision["result"]] += 1
            body = json.dumps(feeder.status(now), separators=(",", ":"))
            # answered without waiting for the broker's PUBACK before the next message (as many
            # feeders would, each on its own box); ``acked_at`` once the broker has it
            sending = asyncio.create_task(
                link.client.publish(self.topic(site, "dr/status"), body, qos=1, retain=True)
            )
            self._sending.add(sending)
            sending.add_done_callback(functools.partial(self._sent, site, decision, arrived))

    def _sent(
        self, site: str, decision: dict[str, Any], arrived: float, task: asyncio.Task[None]
    ) -> None:
        self._sending.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        sent = asyncio.get_running_loop().time()
        if decision["id"] is not None:
            self.acked_at[(site, str(decision["id"]))] = sent
        if self.on_answer is not None:
            self.on_answer(site, decision, arrived, sent)


def acknowledged(core: Any, target_id: str) -> tuple[int, int]:
    """(feeders the coordinator asked for ``target_id``, those whose ``accepted`` decision
    it has collected), read from the core (``coordinator.core.Coordinator``, on its worker
    thread: ``FleetDaemon.call``)."""
    prefix = f"fleet:{target_id}:"
    asked = [s for s in core.feeders if s.event_id is not None and s.event_id.startswith(prefix)]
    return len(asked), sum(1 for s in asked if s.accepted)


def holds_latest(core: Any, feeders: Sequence[FakeFeeder]) -> bool:
    """Whether the coordinator's core holds every feeder's latest flexibility (its ``seq``)."""
    seqs = {f.site: f.seq for f in feeders}
    return all(s.flex is not None and s.flex.seq >= seqs.get(s.site, 0) for s in core.feeders)
