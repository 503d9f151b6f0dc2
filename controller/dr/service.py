"""The DR service: decides on events, keeps them in the journal, sets the active limits.

Every payload ends in a ``Decision`` (accepted, cancelled or rejected with its reason), counted
in ``feederd_dr_events_total{result}``, whatever the payload holds and whatever the journal
does: a journal that cannot store an event rejects it ("journal unavailable"); nothing raises.
An accepted event is on disk before the decision is returned, so an intake acknowledges a
message only once it is safe.

Two ways to use it:

- ``submit(payload)`` decides in the caller's thread (``feederd event``);
- in the daemon, ``await submit_async(payload)`` decides on the service's own worker thread,
  with its own connection to the journal, so the intake's work never runs on the control
  loop's thread; the loop thread then updates the in-memory index.

The index holds the events not yet over (at most ``max_events``: a new one is refused when the
store is full). ``limits_for_cycle`` resolves the interval's limits from it, in memory;
``refresh`` (each interval, on the worker thread) picks up what ``feederd event`` wrote from
another process and prunes what is over. ``status()`` is the bounded, retained ``dr/status``
document: the active limits, the events in force and the next few, the recent decisions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from controller.clock import Clock
from controller.dr.events import (
    Cancel,
    DrEvent,
    EventBounds,
    EventRejected,
    EventType,
    parse_payload,
)
from controller.dr.overlap import StoredEvent, resolve
from controller.journal import Journal
from controller.metrics import Metrics
from controller.records import COMPLIANCE_TOLERANCE, ActiveLimits, CycleRecord

if TYPE_CHECKING:  # `feederd event` needs no pandas
    from controller.horizon import EventOutlook

__all__ = ["Decision", "DrService"]

log = structlog.get_logger("feederd.dr")

_RECENT = 20
"""Decisions kept for ``dr/status``."""
_LISTED = 10
"""Events listed in ``dr/status``: the active ones that win first, then the next to begin."""
_REASON_MAX = 200
SHORTFALL_CHANGE_KW = 5.0
SHORTFALL_CHANGE_KWH = 5.0
"""A predicted shortfall that moves by no more than these is not republished."""


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


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A decision and what it changed in the store (for the index)."""

    decision: Decision
    stored: StoredEvent | None = None
    cancelled: str | None = None


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
        bounds: EventBounds | None = None,
        max_events: int = 1000,
        worker: concurrent.futures.Executor | None = None,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.site = site
        self.default_import_kw = default_import_kw
        self.default_export_kw = default_export_kw
        self.metrics = metrics
        self.bounds = bounds or EventBounds()
        self.max_events = max_events
        self._worker = worker
        self.listeners: list[Callable[[], None]] = []
        """Told that ``status()`` changed (they build it when they publish it)."""
        self.record_listeners: list[Callable[[CycleRecord], None]] = []
        self.recent: deque[Decision] = deque(maxlen=_RECENT)
        self.active = ActiveLimits(import_kw=default_import_kw, export_kw=default_export_kw)
        self.last_import_kw: float | None = None
        self.compliant: bool | None = None
        now = clock.now()
        self._index: dict[str, StoredEvent] = {s.event.id: s for s in journal.live_events(now)}
        self._rev = journal.revision()
        self._pending: set[asyncio.Future[Any]] = set()
        self._refreshing: asyncio.Future[None] | None = None
        self._predicted: dict[str, EventOutlook] = {}
        """Each event's predicted shortfall as last published on ``dr/status``."""

    # -- decisions ------------------------------------------------------------------------

    def submit(self, payload: bytes | str | dict[str, Any], *, source: str = "mqtt") -> Decision:
        """Decide on one payload in this thread (``feederd event``); never raises."""
        outcome = self._decide(payload, source)
        self._apply(outcome)
        return outcome.decision

    async def submit_async(
        self, payload: bytes | str | dict[str, Any], *, source: str = "mqtt"
    ) -> Decision:
        """Decide on one payload on the worker thread (the daemon's intakes); never raises."""
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self._worker, self._decide, payload, source)
        except Exception as err:  # the executor itself failed (shut down): still a decision
            outcome = _Outcome(decision=self._internal_error(err, source, self.clock.now()))
        self._apply(outcome)
        return outcome.decision

    def _decide(self, payload: bytes | str | dict[str, Any], source: str) -> _Outcome:
        """Validate and persist; every path ends in a decision (runs on the worker thread)."""
        now = self.clock.now()
        event_id: str | None = None
        try:
            parsed = parse_payload(payload, now=now, bounds=self.bounds)
            event_id = parsed.id
            if isinstance(parsed, Cancel):
                if not self.journal.cancel_event(parsed.id, at=now):
                    raise EventRejected(f"no live event with id {parsed.id!r} to cancel")
                return _Outcome(
                    decision=Decision(id=parsed.id, result="cancelled", source=source, at=now),
                    cancelled=parsed.id,
                )
            stored = self._store(parsed, now, source)
            decision = Decision(id=parsed.id, result="accepted", source=source, at=now)
            return _Outcome(decision=decision, stored=stored)
        except EventRejected as err:
            reason = err.reason
            event_id = event_id or err.event_id
        except (sqlite3.Error, OSError) as err:
            reason = f"journal unavailable: {err}"
            if self.metrics is not None:
                self.metrics.journal_errors.inc()
            log.error("journal_unavailable", id=event_id, error=str(err))
        except Exception as err:  # a bug: the sender still gets a decision, and it is said
            return _Outcome(decision=self._internal_error(err, source, now, event_id))
        return _Outcome(
            decision=Decision(
                id=event_id, result="rejected", reason=reason[:_REASON_MAX], source=source, at=now
            )
        )

    def _internal_error(
        self, err: BaseException, source: str, now: datetime, event_id: str | None = None
    ) -> Decision:
        log.error("dr_event_failed", id=event_id, error=f"{type(err).__name__}: {err}")
        return Decision(
            id=event_id,
            result="rejected",
            reason=f"internal error ({type(err).__name__}); the event was not stored",
            source=source,
            at=now,
        )

    def _store(self, event: DrEvent, now: datetime, source: str) -> StoredEvent | None:
        """Persist a new event; None for a repeat of a stored one (QoS 1 redelivery)."""
        old = self.journal.event(event.id)
        if old is not None and old.cancelled_at is not None:
            raise EventRejected(f"event {event.id!r} was cancelled; send a new id")
        if old is not None and old.event == event:
            return None
        if old is None and self.journal.count_live(now) >= self.max_events:
            raise EventRejected(
                f"event store full ({self.max_events} events not yet over); cancel one or"
                " wait for one to end"
            )
        return self.journal.put_event(event, received_at=now, source=source)

    def _apply(self, outcome: _Outcome) -> None:
        """The decision's effect on the index, the metrics, the log and the listeners."""
        decision = outcome.decision
        if outcome.stored is not None:
            self._index[outcome.stored.event.id] = outcome.stored
        if outcome.cancelled is not None:
            self._index.pop(outcome.cancelled, None)
            self._forget(outcome.cancelled)
        self._decided(decision)
        if decision.result == "rejected":
            log.warning(
                "dr_event_rejected", id=decision.id, reason=decision.reason, source=decision.source
            )
        else:
            log.info("dr_event_" + decision.result, id=decision.id, source=decision.source)
        self._notify()

    def _decided(self, decision: Decision) -> None:
        self.recent.append(decision)
        if self.metrics is not None:
            self.metrics.dr_events.labels(decision.result).inc()

    # -- what other processes wrote, and what is over --------------------------------------

    async def refresh(self) -> None:
        """Take in the events ``feederd event`` stored or cancelled since the last look, and
        prune what is over (on the worker thread); an error is logged, never raised."""
        loop = asyncio.get_running_loop()
        try:
            changed, rev = await loop.run_in_executor(self._worker, self._changes)
        except Exception as err:
            log.error("dr_refresh_failed", error=f"{type(err).__name__}: {err}")
            return
        self._merge(changed, rev)

    async def drain(self) -> None:
        """Wait for the worker's writes still under way (before closing the journal)."""
        pending = [p for p in (*self._pending, self._refreshing) if p is not None]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def refresh_now(self) -> None:
        """``refresh`` in this thread (a process without a worker)."""
        changed, rev = self._changes()
        self._merge(changed, rev)

    def _changes(self) -> tuple[list[StoredEvent], int]:
        now = self.clock.now()
        self.journal.prune(now)
        return self.journal.changes_since(self._rev)

    def _merge(self, changed: list[StoredEvent], rev: int) -> None:
        now = self.clock.now()
        for s in changed:
            known = self._index.get(s.event.id)
            if s.cancelled_at is not None or s.event.end <= now:
                self._index.pop(s.event.id, None)
            elif known is None or known.rev < s.rev:
                if known is None or known.seq != s.seq:  # another process's new event
                    self._decided(
                        Decision(id=s.event.id, result="accepted", source=s.source, at=now)
                    )
                self._index[s.event.id] = s
        self._rev = max(self._rev, rev)
        for name in [n for n, s in self._index.items() if s.event.end <= now]:
            del self._index[name]

    # -- the controller's side ------------------------------------------------------------

    def limits_for_cycle(self) -> ActiveLimits:
        """The limits for the interval starting now, from the in-memory index."""
        self._refresh_limits(self.clock.now())
        return self.active

    def cycle_done(self, record: CycleRecord) -> None:
        if self._worker is not None and (self._refreshing is None or self._refreshing.done()):
            # what other processes wrote, and pruning: on the worker thread, once an interval
            self._refreshing = asyncio.ensure_future(self.refresh())
        if record.import_kw is not None:
            self.last_import_kw = record.import_kw
        self.compliant = record.compliant
        for event_id in [i for i in self._predicted if i not in self._index]:
            self._forget(event_id)  # over: its prediction and metric label go
        if self.metrics is not None and self.compliant is not None:
            self.metrics.dr_compliant.set(1 if self.compliant else 0)
        for listener in self.record_listeners:
            listener(record)
        self._notify()

    def _refresh_limits(self, now: datetime) -> None:
        if self.last_import_kw is not None:
            for s in list(self._index.values()):
                if (
                    s.event.type is EventType.REDUCE_BY
                    and s.event.active_at(now)
                    and s.baseline_import_kw is None
                ):
                    self._set_baseline(s, self.last_import_kw)
        active = resolve(
            self._index.values(),
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
                sum(1 for s in self._index.values() if s.event.active_at(now))
            )

    def _set_baseline(self, s: StoredEvent, import_kw: float) -> None:
        """A ``reduce_by`` event begins: its baseline is the import measured now (kept in the
        index at once, written to the journal on the worker thread)."""
        self._index[s.event.id] = StoredEvent(
            event=s.event,
            seq=s.seq,
            received_at=s.received_at,
            source=s.source,
            cancelled_at=s.cancelled_at,
            baseline_import_kw=import_kw,
            rev=s.rev,
        )
        if self._worker is None:
            self._write_baseline(s.event.id, import_kw)
            return
        future = asyncio.get_running_loop().run_in_executor(
            self._worker, self._write_baseline, s.event.id, import_kw
        )
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _write_baseline(self, event_id: str, import_kw: float) -> None:
        try:
            self.journal.set_baseline(event_id, import_kw)
        except (sqlite3.Error, OSError) as err:
            log.error("journal_unavailable", id=event_id, error=str(err))

    # -- readiness ------------------------------------------------------------------------

    def predicted(self, outlook: Mapping[str, EventOutlook]) -> None:
        """What this interval's plan predicts for the events it covers (``controller.horizon
        .event_outlook``): the metric follows every interval; ``dr/status`` is republished
        when a prediction first appears, when an event turns short or ready, and when a
        shortfall moves by more than ``SHORTFALL_CHANGE_KW`` or ``SHORTFALL_CHANGE_KWH``
        (never for noise). The log says once per event when it is predicted short, and when it
        becomes ready again."""
        changed = False
        for event_id in [i for i in self._predicted if i not in self._index]:
            self._forget(event_id)
        for event_id, new in outlook.items():
            if event_id not in self._index:
                continue
            if self.metrics is not None:
                self.metrics.dr_predicted_shortfall_kw.labels(event_id).set(new.shortfall_kw)
            old = self._predicted.get(event_id)
            if (
                old is not None
                and old.ready == new.ready
                and (
                    abs(new.shortfall_kw - old.shortfall_kw) <= SHORTFALL_CHANGE_KW
                    and abs(new.shortfall_kwh - old.shortfall_kwh) <= SHORTFALL_CHANGE_KWH
                )
            ):
                continue
            self._predicted[event_id] = new
            changed = True
            if not new.ready and (old is None or old.ready):
                log.warning(
                    "dr_event_predicted_short",
                    id=event_id,
                    shortfall_kw=round(new.shortfall_kw, 1),
                    shortfall_kwh=round(new.shortfall_kwh, 1),
                    reason="the plan cannot hold the event's limit with the batteries, PV "
                    "and loads it has",
                )
            elif new.ready and old is not None and not old.ready:
                log.info("dr_event_ready", id=event_id)
        if changed:
            self._notify()

    def _forget(self, event_id: str) -> None:
        """An event over or cancelled: its prediction and its metric label go."""
        if self._predicted.pop(event_id, None) is not None and self.metrics is not None:
            with contextlib.suppress(KeyError):
                self.metrics.dr_predicted_shortfall_kw.remove(event_id)

    def prediction(self, event_id: str) -> EventOutlook | None:
        """The plan's last published prediction for an event (``None``: not reached yet)."""
        return self._predicted.get(event_id)

    def _readiness(self, event_id: str) -> dict[str, Any]:
        p = self._predicted.get(event_id)
        if p is None:  # not reached by the plan yet (beyond the horizon, or just accepted)
            return {"predicted_shortfall_kw": None, "predicted_shortfall_kwh": None, "ready": None}
        return {
            "predicted_shortfall_kw": round(p.shortfall_kw, 2),
            "predicted_shortfall_kwh": round(p.shortfall_kwh, 2),
            "ready": p.ready,
        }

    # -- status ---------------------------------------------------------------------------

    def events_now(self) -> list[StoredEvent]:
        """The events not yet over, soonest first."""
        return sorted(self._index.values(), key=lambda s: (s.event.start, s.event.id))

    def status(self) -> dict[str, Any]:
        """The retained ``dr/status`` document, bounded: up to ``_LISTED`` events in force
        (those that win first) and as many of the next to begin, the counts of both, and the
        last ``_RECENT`` decisions."""
        now = self.clock.now()
        self._refresh_limits(now)
        events = self.events_now()
        active = sorted(
            (s for s in events if s.event.active_at(now)),
            key=lambda s: (-s.event.priority, -s.seq),
        )
        coming = [s for s in events if s.event.start > now]
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
                {
                    **s.event.to_json(),
                    "active": s.event.active_at(now),
                    "source": s.source,
                    **self._readiness(s.event.id),
                }
                for s in [*active[:_LISTED], *coming[:_LISTED]]
            ],
            "events_active": len(active),
            "events_coming": len(coming),
            "events_stored": len(events),
            "compliance": {
                "import_kw": self.last_import_kw,
                "within_limit": self.compliant,
                "tolerance": COMPLIANCE_TOLERANCE,
            },
        }

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()


def bounds_for(max_kw: float, horizon_days: float) -> EventBounds:
    return EventBounds(max_kw=max_kw, horizon=timedelta(days=horizon_days))
