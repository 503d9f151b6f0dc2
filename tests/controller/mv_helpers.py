"""Journals for the M&V tests, made with the real ``Journal`` API: weeks of head-meter intervals
from a function of local time, and DR events stored as the DR service stores them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from controller.dr.events import DrEvent, EventType
from controller.journal import Journal
from controller.records import CycleRecord, CycleStatus

TZ = "Europe/Berlin"
ZONE = ZoneInfo(TZ)
STEP = timedelta(minutes=15)

# Wednesday 2026-06-17, 14:00-16:00 in Berlin (12:00-14:00 UTC); the meter from 2026-05-25
# (a Monday: 17 weekdays before the event, within the journal's 30 days of retention)
EVENT_START = datetime(2026, 6, 17, 14, tzinfo=ZONE)
EVENT_END = datetime(2026, 6, 17, 16, tzinfo=ZONE)
HISTORY_FROM = datetime(2026, 5, 25, tzinfo=ZONE)
HISTORY_TO = datetime(2026, 6, 17, 18, tzinfo=ZONE)


def record(cycle: int, import_kw: float | None, limit_kw: float | None) -> CycleRecord:
    return CycleRecord(
        cycle=cycle,
        status=CycleStatus.OPTIMAL,
        at_s=float(cycle),
        import_kw=import_kw,
        import_estimate_kw=import_kw,
        import_limit_kw=limit_kw,
        export_limit_kw=None,
        losses_kw=10.0,
        curtailed_kw=0.0,
        v_min_pu=0.97,
        setpoints_kw={},
        devices_up=1,
        devices_missing=(),
        poll_ms=1.0,
        solve_ms=1.0,
        write_ms=1.0,
        cycle_ms=3.0,
    )


def fill(
    journal: Journal,
    kw: Callable[[datetime], float | None],
    *,
    first: datetime = HISTORY_FROM,
    last: datetime = HISTORY_TO,
    limit: Callable[[datetime], float | None] = lambda t: None,
    skip: Callable[[datetime], bool] = lambda t: False,
) -> int:
    """Append an interval every ``STEP`` from ``first`` to ``last`` (local times given to
    ``kw``, ``limit`` and ``skip``; a skipped interval is not written); returns how many."""
    at = first.astimezone(ZoneInfo("UTC"))
    n = 0
    while at < last:
        t = at.astimezone(ZONE)
        if not skip(t):
            journal.append(record(n, kw(t), limit(t)), at)
            n += 1
        at += STEP
    return n


def event(
    journal: Journal,
    event_id: str,
    *,
    kind: EventType = EventType.REDUCE_BY,
    kw: float = 100.0,
    start: datetime = EVENT_START,
    end: datetime = EVENT_END,
    cancelled_at: datetime | None = None,
) -> None:
    """Store an event (accepted a day before it starts), and its cancellation."""
    journal.put_event(
        DrEvent(id=event_id, type=kind, kw=kw, start=start, end=end),
        received_at=start - timedelta(days=1),
        source="mqtt",
    )
    if cancelled_at is not None:
        assert journal.cancel_event(event_id, at=cancelled_at)


def in_event(t: datetime, start: datetime = EVENT_START, end: datetime = EVENT_END) -> bool:
    return start <= t < end


def journal_at(path: Path) -> Journal:
    return Journal(path, retention_days=30)
