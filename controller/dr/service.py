"""The DR service: decides on events, keeps them in the journal, sets the active limits.

``submit`` validates a payload, persists an accepted event (or a cancel) and only then returns
the decision, so an intake acknowledges a message after it is safe on disk. ``limits_for_cycle``
is what the controller asks at the start of every interval; ``cycle_done`` records the
interval's compliance. ``status()`` is the retained ``dr/status`` document. Every decision and
every change of the active limits is handed to the listeners (the MQTT intake publishes them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from controller.clock import Clock
from controller.dr.events import Cancel, DrEvent, EventRejected, EventType, parse_payload
from controller.dr.overlap import StoredEvent, resolve
from controller.journal import Journal
from controller.metrics import Metrics
from controller.records import ActiveLimits, CycleRecord

__all__ = ["COMPLIANCE_TOLERANCE", "Decision", "DrService"]

log = structlog.get_logger("feederd.dr")

COMPLIANCE_TOLERANCE = 0.02  # measured import within limit + 2% counts as compliant
_RECENT = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What became of one submitted payload."""

    id: str | None
    result: str  # accepted | cancelled | rejected
    reason: str | None = None
    source: str = "mqtt"
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "result": self.result,
            "reason": self.reason,
            "source": self.source,
            "at": self.at.isoformat(),
        }


class DrService:
    def __init__(
        self,
        journal: Journal,
        *,
        clock: Clock,
        site: str,
        default_import_kw: float | None,
        default_export_kw: float | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.site = site
        self.default_import_kw = default_import_kw
        self.default_export_kw = default_export_kw
        self.metrics = metrics
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.record_listeners: list[Callable[[CycleRecord], None]] = []
        self.recent: deque[Decision] = deque(maxlen=_RECENT)
        self.active = ActiveLimits(import_kw=default_import_kw, export_kw=default_export_kw)
        self.last_import_kw: float | None = None
        self.compliant: bool | None = None
        self._known_seqs = {s.seq for s in journal.events()}

    # -- decisions ------------------------------------------------------------------------

    def submit(self, payload: bytes | str | dict[str, Any], *, source: str = "mqtt") -> Decision:
        """Validate and persist one payload; never raises for bad input."""
        now = self.clock.now()
        try:
            parsed = parse_payload(payload, now=now)
            if isinstance(parsed, Cancel):
                if not self.journal.cancel_event(parsed.id, at=now):
                    raise EventRejected(
                        f"no live event with id {parsed.id!r} to cancel", event_id=parsed.id
                    )
                decision = Decision(id=parsed.id, result="cancelled", source=source, at=now)
            else:
                if self._is_new(parsed):
                    stored = self.journal.put_event(parsed, received_at=now, source=source)
                    self._known_seqs.add(stored.seq)
                decision = Decision(id=parsed.id, result="accepted", source=source, at=now)
        except EventRejected as err:
            decision = Decision(
                id=err.event_id, result="rejected", reason=err.reason, source=source, at=now
            )
            log.warning("dr_event_rejected", id=err.event_id, reason=err.reason, source=source)
        else:
            log.info("dr_event_" + decision.result, id=decision.id, source=source)
        self._decided(decision)
        self._refresh(now)
        self._notify()
        return decision

    def _is_new(self, event: DrEvent) -> bool:
        """False for a repeat of a stored event (QoS 1 redelivery, a retained message)."""
        old = self.journal.event(event.id)
        if old is None:
            return True
        if not old.live:
            raise EventRejected(
                f"event {event.id!r} was cancelled; send a new id", event_id=event.id
            )
        return old.event != event

    def _decided(self, decision: Decision) -> None:
        self.recent.append(decision)
        if self.metrics is not None:
            self.metrics.dr_events.labels(decision.result).inc()

    # -- the controller's side ------------------------------------------------------------

    def limits_for_cycle(self) -> ActiveLimits:
        """The limits for the interval starting now (events added by the CLI are seen here)."""
        now = self.clock.now()
        stored = self.journal.events()
        for s in stored:
            if s.seq not in self._known_seqs:
                self._known_seqs.add(s.seq)
                self._decided(Decision(id=s.event.id, result="accepted", source=s.source, at=now))
        self._refresh(now, stored)
        return self.active

    def cycle_done(self, record: CycleRecord) -> None:
        if record.import_kw is not None:
            self.last_import_kw = record.import_kw
        self.compliant = record.compliant
        if self.metrics is not None and self.compliant is not None:
            self.metrics.dr_compliant.set(1 if self.compliant else 0)
        for listener in self.record_listeners:
            listener(record)
        self._notify()

    def _refresh(self, now: datetime, stored: list[StoredEvent] | None = None) -> None:
        events = stored if stored is not None else self.journal.events()
        if self.last_import_kw is not None:
            for s in events:
                if (
                    s.event.type is EventType.REDUCE_BY
                    and s.live
                    and s.event.active_at(now)
                    and s.baseline_import_kw is None
                ):
                    self.journal.set_baseline(s.event.id, self.last_import_kw)
                    events = self.journal.events()
        active = resolve(
            events,
            now,
            default_import_kw=self.default_import_kw,
            default_export_kw=self.default_export_kw,
        )
        if active != self.active:
            log.info(
                "dr_limits",
                import_limit_kw=active.import_kw,
                export_limit_kw=active.export_kw,
                events=list(active.event_ids),
            )
            self.active = active
        if self.metrics is not None:
            self.metrics.dr_active_events.set(
                sum(1 for s in events if s.live and s.event.active_at(now))
            )

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.clock.now()
        events = [s for s in self.journal.events() if s.live and s.event.end > now]
        return {
            "site": self.site,
            "at": now.isoformat(),
            "last": self.recent[-1].to_json() if self.recent else None,
            "recent": [d.to_json() for d in self.recent],
            "active": {
                "import_limit_kw": self.active.import_kw,
                "export_limit_kw": self.active.export_kw,
                "import_event": self.active.import_event,
                "export_event": self.active.export_event,
            },
            "events": [
                {**s.event.to_json(), "active": s.event.active_at(now), "source": s.source}
                for s in events
            ],
            "compliance": {
                "import_kw": self.last_import_kw,
                "within_limit": self.compliant,
                "tolerance": COMPLIANCE_TOLERANCE,
            },
        }

    def _notify(self) -> None:
        if not self.listeners:
            return
        doc = self.status()
        for listener in self.listeners:
            listener(doc)
