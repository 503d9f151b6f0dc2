"""The fleet's OpenADR 2.0b VEN: the utility's VTN gives the coordinator its system targets.

It is feederd's own VEN (``controller.openadr.ven.Ven``: registration, polling at the VTN's
frequency, XML signatures both ways, the same refusals with their status codes, opting), hosted
by the coordinator with ``FleetEvents`` as its ``EventSink``. What the VEN maps from a VTN event
(``import_limit`` or ``reduce_by`` payloads with ids ``oadr:<event>:<modification>:<n>``)
becomes a system target for ``[openadr] group``, source ``openadr``, decided by the core on its
thread exactly as a target from MQTT or the CLI is. A modification replaces the targets of the
modification before (cancelled first, since the coordinator refuses two targets over the same
feeders at once, and put back if the new one is refused); a cancellation cancels them. The VEN opts in, then follows the allocation:
while the fleet cannot deliver a target (its shortfall on ``<topic_root>/status``) it opts out
with the figures, and in again once it can. A target the core refuses is refused to the VTN with
its reason. The VEN sends no reports: the fleet has no
head meter of its own to report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

from controller.clock import Clock
from controller.dr.events import DrEvent, EventBounds, EventType
from controller.dr.overlap import StoredEvent
from controller.horizon import EventOutlook
from controller.openadr.signals import parse_feederd_id
from coordinator.core import Outgoing
from coordinator.journal import TargetRecord
from coordinator.settings import FleetSettings
from coordinator.targets import TargetDecision, TargetResult

__all__ = ["FleetEvents"]

HORIZON = timedelta(days=7)
"""How far ahead a VTN event may begin (as a target from MQTT: ``coordinator.targets``)."""


class _Targets(Protocol):
    """What ``FleetEvents`` needs of the daemon: targets decided on the core's thread."""

    async def submit_target(self, payload: dict[str, Any], *, source: str) -> TargetDecision: ...

    async def targets(self) -> list[TargetRecord]: ...


class FleetEvents:
    """The coordinator's targets for ``group`` as the VEN's ``EventSink``: what it submits
    becomes a target; what it reads back (the targets it holds, each one's predicted shortfall)
    comes from the journal at start and from the ticks' status documents after."""

    def __init__(
        self, daemon: _Targets, settings: FleetSettings, *, group: str, clock: Clock
    ) -> None:
        sites = settings.group_sites(group)
        if not sites:
            raise ValueError(f"openadr.group {group!r} is not a group of this fleet")
        self.daemon = daemon
        self.settings = settings
        self.group = group
        self.clock = clock
        self.resources = f"the flexibility its {len(sites)} feeders offer"
        """What an optOut says the shortfall is with (the VEN's reason)."""
        self.bounds = EventBounds(max_kw=settings.rating_sum_kw(sites), horizon=HORIZON)
        self._held: dict[str, StoredEvent] = {}
        self._shortfall: dict[str, float] = {}
        self._seq = 0
        self._replaced: set[str] = set()
        """Targets cancelled here for a modification, whose cancel the VEN still sends."""
        self.listeners: list[Callable[[], None]] = []
        """Told when a held target's shortfall changes (the VEN revises its opt)."""

    async def load(self) -> None:
        """The VEN's targets the journal holds (after a restart): they stay in force, and a
        modification or a cancellation from the VTN finds them."""
        for record in await self.daemon.targets():
            if record.source == "openadr" and record.cancelled_at is None:
                self._hold(_event(record.target.to_json()), record.added_at)

    # -- EventSink -------------------------------------------------------------------------

    def events_now(self) -> list[StoredEvent]:
        now = self.clock.now()
        return sorted(
            (s for s in self._held.values() if s.event.end > now),
            key=lambda s: (s.event.start, s.event.id),
        )

    async def submit_async(self, payload: dict[str, Any], *, source: str) -> TargetDecision:
        """One VEN payload as a target for the group (or its cancellation).

        A modification's targets would overlap its predecessor's on the same feeders, which
        the coordinator refuses; so the predecessor's are cancelled first, and put back if
        the new one is refused (the VEN's own cancel of them, which follows, is then a no-op)."""
        tid = str(payload["id"])
        if payload.get("cancel") is True:
            if tid in self._replaced:
                self._replaced.discard(tid)
                return TargetDecision(
                    id=tid,
                    result=TargetResult.CANCELLED,
                    reason="replaced by a modification",
                    source=source,
                    at=self.clock.now(),
                )
            decision = await self.daemon.submit_target({"id": tid, "cancel": True}, source=source)
            self._held.pop(tid, None)
            self._shortfall.pop(tid, None)
            return decision
        body: dict[str, Any] = {
            k: payload[k] for k in ("id", "type", "kw", "start", "end") if k in payload
        }
        body["group"] = self.group
        if "priority" in payload:
            body["priority"] = payload["priority"]
        older = self._predecessors(tid)
        for stored in older:
            await self.daemon.submit_target({"id": stored.event.id, "cancel": True}, source=source)
            self._held.pop(stored.event.id, None)
            self._shortfall.pop(stored.event.id, None)
            self._replaced.add(stored.event.id)
        decision = await self.daemon.submit_target(body, source=source)
        if decision.accepted:
            self._hold(_event(body), self.clock.now())
            return decision
        for stored in older:  # refused: what it was to replace stays in force
            back = {**stored.event.to_json(), "group": self.group}
            if (await self.daemon.submit_target(back, source=source)).accepted:
                self._hold(stored.event, stored.received_at)
                self._replaced.discard(stored.event.id)
        return decision

    def _predecessors(self, target_id: str) -> list[StoredEvent]:
        """The held targets of the same VTN event under an older modification."""
        key = parse_feederd_id(target_id)
        if key is None:
            return []
        return [
            s
            for tid, s in self._held.items()
            if (k := parse_feederd_id(tid)) is not None
            and k.event_id == key.event_id
            and k.modification < key.modification
        ]

    def prediction(self, event_id: str) -> EventOutlook | None:
        """The allocation's shortfall for the target (``None`` until it has been allocated)."""
        held = self._held.get(event_id)
        shortfall = self._shortfall.get(event_id)
        if held is None or shortfall is None:
            return None
        now = self.clock.now()
        hours = max((held.event.end - max(held.event.start, now)).total_seconds(), 0.0) / 3600
        return EventOutlook(
            id=event_id, shortfall_kw=shortfall, shortfall_kwh=shortfall * hours, covered=True
        )

    # -- from the ticks ---------------------------------------------------------------------

    def ticked(self, out: Iterable[Outgoing]) -> None:
        """A tick's publications: the status document's shortfall of each held target; the
        listeners are told when one changed by more than a kW."""
        status = next((o.payload for o in out if o.topic == self.settings.status_topic), None)
        if status is None:
            return
        changed = False
        for target in status.get("targets", ()):
            tid = target.get("id")
            if tid not in self._held:
                continue
            raw = target.get("shortfall_kw")
            if not isinstance(raw, int | float) or not math.isfinite(raw):
                continue
            old = self._shortfall.get(tid)
            self._shortfall[tid] = float(raw)
            changed = changed or old is None or abs(old - raw) > 1.0
        if changed:
            for listener in self.listeners:
                listener()

    def _hold(self, body: DrEvent, at: datetime) -> None:
        self._seq += 1
        self._held[body.id] = StoredEvent(
            event=body, seq=self._seq, received_at=at, source="openadr"
        )


def _event(body: dict[str, Any]) -> DrEvent:
    """A target's JSON as the DR event the VEN submitted (the VEN reads id, window and kW)."""
    return DrEvent(
        id=str(body["id"]),
        type=EventType(body["type"]),
        kw=float(body["kw"]),
        start=_time(body["start"]),
        end=_time(body["end"]),
        priority=int(body.get("priority") or 0),
    )


def _time(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
