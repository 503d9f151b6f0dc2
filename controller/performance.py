"""What a DR event delivered (M&V), from the journal alone.

``assess(journal, event_id, settings=..., now=...)`` reads the head meter (the ``interval``
table's ``at``, ``import_kw`` and ``import_limit_kw``) from the baselines' lookback to the end
of the meter-after window, the event, and the days of every DR event the journal keeps (not
eligible as baseline days), and computes each baseline of ``optimizer.baselines`` over the
event as it ran: from its start to its end, or to its cancellation.

Per interval, against each baseline: the delivered reduction (baseline − measured, kW) and
what the event asked (``reduce_by``: its kW; ``import_limit``: ``max(0, baseline − limit)``;
``export_limit`` events ask nothing of the import: NaN). Energies are each interval's kW times
its length (up to the next interval, at most the meter's step, never past the end), summed over
the intervals where measured, baseline and request are all known, so delivered and requested
kWh cover the same intervals; the performance ratio is delivered over requested kWh (None when
nothing was requested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from controller.dr.events import EventType
from controller.dr.overlap import StoredEvent
from controller.journal import Journal, PerformanceRow
from optimizer.baselines import Baseline, meter_before_after, ten_of_ten

if TYPE_CHECKING:
    from controller.config import Config

__all__ = [
    "BASELINES",
    "BaselineSummary",
    "EventPerformance",
    "MvSettings",
    "UnknownEvent",
    "assess",
    "effective_end",
    "event_days",
]

BASELINES = ("10of10", "meter_before_after")
"""The baselines every event is assessed against, in the order reports list them."""


class UnknownEvent(LookupError):
    """The journal keeps no event with that id (never stored, or pruned by the retention)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MvSettings:
    """The ``[mv]`` table as plain numbers (see ``controller.config.models.MvConfig``)."""

    timezone: str = "UTC"
    days: int = 10
    lookback_days: int = 45
    adjustment_hours: float = 3.0
    adjustment_gap_h: float = 1.0
    adjustment_cap: float = 0.2
    meter_window_min: float = 30.0
    after_gap_min: float = 0.0

    @classmethod
    def from_config(cls, config: Config) -> MvSettings:
        """``[mv]``, its time zone defaulting to ``[forecast] timezone``."""
        mv = config.mv
        return cls(
            timezone=mv.timezone or config.forecast.timezone,
            days=mv.days,
            lookback_days=mv.lookback_days,
            adjustment_hours=mv.adjustment_hours,
            adjustment_gap_h=mv.adjustment_gap_h,
            adjustment_cap=mv.adjustment_cap,
            meter_window_min=mv.meter_window_min,
            after_gap_min=mv.after_gap_min,
        )

    @property
    def after_s(self) -> float:
        """How long after an event's end its meter-after window closes (s)."""
        return 60.0 * (self.after_gap_min + self.meter_window_min)


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineSummary:
    """What the event delivered against one baseline: energies (kWh) and their ratio (None:
    nothing measurable, or nothing requested), the days the baseline averaged, its same-day
    adjustment and its note."""

    baseline: str
    delivered_kwh: float | None
    requested_kwh: float | None
    performance_ratio: float | None
    days_used: tuple[date, ...] = ()
    adjustment: float | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventPerformance:
    """One event's assessment.

    `intervals` is indexed by the meter's interval starts inside the event (UTC, named
    ``time``) with columns ``measured_kw``, ``limit_kw`` (the import limit the controller held)
    and, per baseline ``b`` of `BASELINES`, ``baseline_kw_<b>``, ``delivered_kw_<b>`` and
    ``requested_kw_<b>``. `context` holds ``measured_kw`` and ``limit_kw`` around the event,
    from the start of the windows the baselines read on the event's day (the same-day
    adjustment's, the meter before's) to the end of the meter after's, for a plot. `end` is
    the end assessed (the cancellation of a cancelled event), `note` what a reader should know
    of the event as a whole (cancelled, still running)."""

    event: StoredEvent
    start: datetime
    end: datetime
    intervals: pd.DataFrame
    summary: tuple[BaselineSummary, ...]
    context: pd.DataFrame
    note: str | None = None

    def rows(self, assessed_at: datetime) -> list[PerformanceRow]:
        """The journal's ``performance`` rows of this assessment."""
        return [
            PerformanceRow(
                event_id=self.event.event.id,
                baseline=s.baseline,
                delivered_kwh=s.delivered_kwh,
                requested_kwh=s.requested_kwh,
                performance_ratio=s.performance_ratio,
                days_used=len(s.days_used),
                adjustment=s.adjustment,
                note=s.note,
                end=self.end,
                assessed_at=assessed_at,
            )
            for s in self.summary
        ]


def effective_end(stored: StoredEvent) -> datetime:
    """When the event stopped acting: its end, or its cancellation if that came first."""
    cancelled = stored.cancelled_at
    return stored.event.end if cancelled is None else min(stored.event.end, cancelled)


def event_days(events: list[StoredEvent], tz: str) -> set[date]:
    """The local dates on which any of ``events`` acted (not those cancelled before they
    began): no baseline day may be one of them. `ValueError` for an unknown time zone."""
    zone = _zone(tz)
    days: set[date] = set()
    for s in events:
        start, end = s.event.start, effective_end(s)
        if end <= start:
            continue
        day = start.astimezone(zone).date()
        last = (end - timedelta(microseconds=1)).astimezone(zone).date()
        while day <= last:
            days.add(day)
            day += timedelta(days=1)
    return days


def assess(
    journal: Journal, event_id: str, *, settings: MvSettings, now: datetime
) -> EventPerformance:
    """The event's assessment from what the journal holds at ``now`` (see the module
    docstring). `UnknownEvent` when the journal has no such event; `ValueError` for settings
    the baselines refuse (an unknown time zone)."""
    _zone(settings.timezone)
    stored = journal.event(event_id)
    if stored is None:
        raise UnknownEvent(event_id)
    event = stored.event
    start = event.start.astimezone(UTC)
    end = effective_end(stored).astimezone(UTC)
    notes: list[str] = []
    if stored.cancelled_at is not None:
        if stored.cancelled_at <= event.start:
            notes.append("cancelled before it began: nothing to assess")
        elif stored.cancelled_at < event.end:
            notes.append(
                f"cancelled at {stored.cancelled_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
            )
    if now < end:
        notes.append(f"still running: assessed up to {now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
    end = max(start, end)  # cancelled before its start: an empty assessment
    window_s = 60.0 * settings.meter_window_min
    after_gap_s = 60.0 * settings.after_gap_min
    lead = timedelta(
        hours=max(settings.adjustment_hours + settings.adjustment_gap_h, window_s / 3600.0)
    )
    until = min(now, end + timedelta(seconds=after_gap_s + window_s))
    rows = []
    for since, upto in _windows(start - lead, end, until, settings.lookback_days):
        rows += journal.meter(since, upto)
    meter, limit = _meter(rows)
    excluded = event_days(journal.events(), settings.timezone)
    baselines: list[Baseline] = []
    if end > start:
        baselines = [
            ten_of_ten(
                meter,
                start,
                end,
                tz=settings.timezone,
                excluded_days=excluded,
                days=settings.days,
                lookback_days=settings.lookback_days,
                adjustment_hours=settings.adjustment_hours,
                adjustment_gap_h=settings.adjustment_gap_h,
                adjustment_cap=settings.adjustment_cap,
            ),
            meter_before_after(meter, start, end, window_s=window_s, after_gap_s=after_gap_s),
        ]
    inside = (meter.index >= start) & (meter.index < end)
    times = pd.DatetimeIndex(meter.index[inside], name="time")
    hours = _hours(pd.DatetimeIndex(meter.index), inside, end)
    frame = pd.DataFrame(
        {"measured_kw": meter[inside].to_numpy(), "limit_kw": limit[inside].to_numpy()},
        index=times,
    )
    summaries: list[BaselineSummary] = []
    for method in BASELINES:
        found = [b for b in baselines if b.method == method]
        if found:
            base = found[0].kw.reindex(times).to_numpy(dtype=float)
        else:
            base = np.full(len(times), np.nan)
        requested = _requested(stored, base)
        delivered = base - frame["measured_kw"].to_numpy(dtype=float)
        frame[f"baseline_kw_{method}"] = base
        frame[f"delivered_kw_{method}"] = delivered
        frame[f"requested_kw_{method}"] = requested
        known = np.isfinite(delivered) & np.isfinite(requested)
        delivered_kwh = float(np.sum(delivered[known] * hours[known])) if known.any() else None
        requested_kwh = float(np.sum(requested[known] * hours[known])) if known.any() else None
        ratio = None
        if delivered_kwh is not None and requested_kwh is not None and requested_kwh > 1e-9:
            ratio = delivered_kwh / requested_kwh
        note = found[0].note if found else None
        if event.type is EventType.EXPORT_LIMIT:
            note = _join(note, "an export limit asks nothing of the import: no ratio")
        elif known.any() and ratio is None:
            note = _join(note, "nothing requested: the baseline stayed under the limit")
        elif not known.any() and len(times):
            note = _join(note, "no interval with both a measurement and a baseline")
        summaries.append(
            BaselineSummary(
                baseline=method,
                delivered_kwh=delivered_kwh,
                requested_kwh=requested_kwh,
                performance_ratio=ratio,
                days_used=found[0].days_used if found else (),
                adjustment=found[0].adjustment if found else None,
                note=note,
            )
        )
    if len(times) == 0 and end > start:
        notes.append("no interval measured during the event")
    near = meter.index >= start - lead
    context = pd.DataFrame({"measured_kw": meter[near], "limit_kw": limit[near]})
    return EventPerformance(
        event=stored,
        start=start,
        end=end,
        intervals=frame,
        summary=tuple(summaries),
        context=context,
        note="; ".join(notes) or None,
    )


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None


def _windows(
    first: datetime, end: datetime, until: datetime, lookback_days: int
) -> list[tuple[datetime, datetime]]:
    """The spans of the journal the baselines read, in time order, overlaps merged: the
    event's day from `first` (the earliest window before the start) to `until` (the end of
    the meter after), and the same hours on each day of the lookback, widened by two hours
    either side for a daylight-saving shift. A fraction of the whole lookback: the journal's
    intervals outside them are never read."""
    slack = timedelta(hours=2)
    spans = [(first, max(first, until))]
    spans += [
        (first - timedelta(days=k) - slack, end - timedelta(days=k) + slack)
        for k in range(1, lookback_days + 2)
    ]
    merged: list[tuple[datetime, datetime]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return [(a, b) for a, b in merged if b > a]


def _meter(rows: list[tuple[float, float | None, float | None]]) -> tuple[pd.Series, pd.Series]:
    """The head import and the import limit (NaN: none), indexed by UTC interval start."""
    table = np.array(rows, dtype=float).reshape(-1, 3)  # None: NaN
    table[~np.isfinite(table)] = math.nan  # a non-finite reading is no reading
    ms = np.round(table[:, 0] * 1000.0).astype(np.int64)  # SQLite's times are in ms
    index = pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True), name="time").as_unit("ns")
    meter = pd.Series(table[:, 1], index=index, name="import_kw")
    limit = pd.Series(table[:, 2], index=index, name="import_limit_kw")
    keep = ~index.duplicated(keep="last")
    return meter[keep], limit[keep]


def _hours(index: pd.DatetimeIndex, inside: np.ndarray, end: datetime) -> np.ndarray:
    """Each event interval's length in hours: to the next interval's start, at most the
    meter's usual step (a gap is not measured time), never past the event's end."""
    starts = index.asi8
    if len(starts) == 0:
        return np.zeros(0)
    spacing = np.diff(starts)
    step = float(np.median(spacing[spacing > 0])) if (spacing > 0).any() else 0.0
    nxt = np.append(starts[1:], np.iinfo(np.int64).max).astype(float)
    own = starts.astype(float)
    stop = np.minimum(np.minimum(nxt, own + step), float(pd.Timestamp(end).value))
    lengths: np.ndarray = (np.clip(stop - own, 0.0, None) / 3.6e12)[inside]
    return lengths


def _requested(stored: StoredEvent, baseline: np.ndarray) -> np.ndarray:
    """What the event asked of the import in each interval (kW)."""
    event = stored.event
    if event.type is EventType.REDUCE_BY:
        return np.full(len(baseline), float(event.kw))
    if event.type is EventType.IMPORT_LIMIT:
        asked: np.ndarray = np.clip(baseline - event.kw, 0.0, None)
        return asked
    return np.full(len(baseline), np.nan)


def _join(a: str | None, b: str) -> str:
    return b if a is None else f"{a}; {b}"
