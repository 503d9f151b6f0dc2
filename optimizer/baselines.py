"""Measurement and verification (M&V) baselines: what the feeder head would have imported during
a demand-response event had there been no event. Pure: a meter series in, a `Baseline` out; no
clock, no I/O, no log.

The meter is the head import in kW, one value per control interval, indexed by the interval's
start (a timezone-aware, sorted `DatetimeIndex`; gaps and NaN values are allowed: they are
"not measured"). A baseline is given for each of the meter's own intervals inside the event,
``[start, end)``; the delivered reduction of an interval is its baseline minus its measured
import (the controller computes that, and the energy, from these series).

Two families of the North American practice (NAESB WEQ-015 names them "Baseline Type-I" and
"Meter Before / Meter After"):

- `ten_of_ten`: the CAISO-style "10 in 10" customer baseline: the mean of the same local times
  of day on the last ten eligible days, with a same-day (load point) adjustment capped at ±20 %.
- `meter_before_after`: the import just before the event, interpolated toward the import just
  after it.

Where ours differs from the tariffs is said in each function's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["Baseline", "meter_before_after", "ten_of_ten"]

FloatArray = npt.NDArray[np.float64]

TEN_OF_TEN = "10of10"
METER_BEFORE_AFTER = "meter_before_after"


@dataclass(frozen=True, slots=True, kw_only=True)
class Baseline:
    """One baseline of one event.

    `kw` holds the baseline import (kW) of each of the meter's intervals inside the event,
    indexed like the meter (UTC interval starts in ``[start, end)``); NaN where the method had
    nothing to go on. `days_used` are the local dates averaged (10 of 10, most recent first),
    `adjustment` the same-day factor applied after the cap (None: none applied), `note` what a
    reader of the report should know about how it was made (too few days, a missing window, a
    capped adjustment), None when nothing is unusual."""

    method: str
    kw: pd.Series
    days_used: tuple[date, ...] = ()
    adjustment: float | None = None
    note: str | None = None


def ten_of_ten(
    meter: pd.Series,
    start: datetime,
    end: datetime,
    *,
    tz: str,
    excluded_days: Collection[date] = (),
    days: int = 10,
    lookback_days: int = 45,
    adjustment_hours: float = 3.0,
    adjustment_gap_h: float = 1.0,
    adjustment_cap: float = 0.2,
    min_coverage: float = 0.9,
) -> Baseline:
    """The "10 of 10" baseline with a capped same-day adjustment.

    1. Eligible days: the local dates (in `tz`) of the `lookback_days` before the event's local
       date (the date of `start`), of the same day type (Monday to Friday, or Saturday and
       Sunday), not in `excluded_days` (days with DR events), on which at least `min_coverage`
       of the event's slots were measured. The `days` most recent are used.
    2. Unadjusted baseline: for each of the event's intervals, the mean over the days used of
       the meter at the same local wall-clock time (an event that runs past midnight takes the
       next morning of each day used). Days on which a slot was not measured are left out of
       that slot's mean.
    3. Same-day adjustment: the mean measured import over the `adjustment_hours` that end
       `adjustment_gap_h` before the start, divided by the unadjusted baseline's mean over the
       same intervals (only intervals with both), clipped to ``[1 − cap, 1 + cap]``, multiplies
       the whole baseline. Without a measured window, or where the baseline's mean there is not
       positive (a feeder exporting), no adjustment is applied and the note says why.

    As CAISO's 10-in-10 with its day-of adjustment (three hours ending one hour before the
    event, ±20 %), except: the slots are the meter's control intervals (not hours); weekends use
    the same rule as weekdays (CAISO uses 4 in 4 there) and no holiday calendar is known; a day
    is eligible by its measured coverage of the event's hours (the tariffs exclude outage days
    by settlement flags); with fewer than `days` eligible days the ones there are are used (the
    note says how many), with none the baseline is NaN. Daylight saving: slots match by local
    wall-clock time; a time that does not exist on a day used (spring forward) leaves that day
    out of the slot, a repeated time (fall back) takes its first occurrence.

    `ValueError` for a meter that is not a series on a timezone-aware index, an event that
    does not end after it starts, naive datetimes, an unknown `tz` or parameters out of range.
    """
    series = _checked_meter(meter)
    start_ts, end_ts = _checked_window(start, end)
    zone = _zone(tz)
    if days < 1 or lookback_days < 1:
        raise ValueError(
            f"ten_of_ten: days ({days}) and lookback_days ({lookback_days}) must be ≥ 1"
        )
    if not (0.0 <= adjustment_cap < 1.0):
        raise ValueError(f"ten_of_ten: adjustment_cap {adjustment_cap} is not in [0, 1)")
    if adjustment_hours < 0 or adjustment_gap_h < 0:
        raise ValueError("ten_of_ten: adjustment_hours and adjustment_gap_h must be ≥ 0")
    if not (0.0 <= min_coverage <= 1.0):
        raise ValueError(f"ten_of_ten: min_coverage {min_coverage} is not in [0, 1]")

    index = pd.DatetimeIndex(series.index)
    event_idx = index[(index >= start_ts) & (index < end_ts)]
    event_date = start_ts.tz_convert(zone).date()
    if len(event_idx) == 0:
        return Baseline(
            method=TEN_OF_TEN,
            kw=_named(pd.Series(np.zeros(0), index=event_idx)),
            note="no meter interval inside the event",
        )

    weekend = event_date.weekday() >= 5
    excluded = set(excluded_days)
    candidates = [
        d
        for d in (event_date - timedelta(days=k) for k in range(1, lookback_days + 1))
        if (d.weekday() >= 5) == weekend and d not in excluded
    ]
    step = _step(index)
    values = series.to_numpy(dtype=float)
    history = _same_times(index, values, event_idx, event_date, candidates, tz, step)
    coverage = np.isfinite(history).sum(axis=1) / len(event_idx)
    used = [i for i, c in enumerate(coverage) if c >= min_coverage - 1e-12][:days]
    day_kind = "weekend" if weekend else "weekday"
    notes: list[str] = []
    if not used:
        return Baseline(
            method=TEN_OF_TEN,
            kw=_named(pd.Series(np.full(len(event_idx), np.nan), index=event_idx)),
            note=f"no eligible {day_kind} in the last {lookback_days} days",
        )
    if len(used) < days:
        notes.append(f"only {len(used)} eligible {day_kind}s in the last {lookback_days} days")
    days_used = tuple(candidates[i] for i in used)
    base = _nanmean(history[used])

    adjustment: float | None = None
    adj_end = start_ts - pd.Timedelta(hours=adjustment_gap_h)
    adj_start = adj_end - pd.Timedelta(hours=adjustment_hours)
    adj_idx = index[(index >= adj_start) & (index < adj_end)]
    adj_measured = series.loc[adj_idx].to_numpy(dtype=float)
    adj_history = _same_times(
        index, values, adj_idx, event_date, [candidates[i] for i in used], tz, step
    )
    adj_base = _nanmean(adj_history) if len(adj_idx) else np.zeros(0)
    both = np.isfinite(adj_measured) & np.isfinite(adj_base)
    if adjustment_hours == 0 or not both.any():
        notes.append("no same-day adjustment: the adjustment window was not measured")
    elif (mean_base := float(adj_base[both].mean())) <= 1e-9:
        notes.append(
            f"no same-day adjustment: the baseline's mean in the adjustment window is {mean_base:.1f} kW"
        )
    else:
        raw = float(adj_measured[both].mean()) / mean_base
        adjustment = min(max(raw, 1.0 - adjustment_cap), 1.0 + adjustment_cap)
        if adjustment != raw:
            notes.append(f"same-day adjustment {raw:.3f} capped to {adjustment:.3f}")
        base = base * adjustment
    return Baseline(
        method=TEN_OF_TEN,
        kw=_named(pd.Series(base, index=event_idx)),
        days_used=days_used,
        adjustment=adjustment,
        note="; ".join(notes) or None,
    )


def meter_before_after(
    meter: pd.Series,
    start: datetime,
    end: datetime,
    *,
    window_s: float = 1800.0,
    after_gap_s: float = 0.0,
) -> Baseline:
    """The "meter before / meter after" baseline.

    `before` is the mean measured import over the intervals starting in
    ``[start − window_s, start)``, `after` the mean over ``[end + after_gap_s, end +
    after_gap_s + window_s)``. The baseline is the straight line through (mean time of the
    before intervals, `before`) and (mean time of the after intervals, `after`), read at each
    event interval's start: a load ramping steadily through the event is followed exactly. Only
    `before` (a flat line) while the after window has no data yet, only `after` when the before
    window has none, NaN when neither has; the note says which.

    NAESB WEQ-015's Meter Before / Meter After compares the demand before deployment with the
    demand during it (a flat `before`); the interpolation to the demand after the event is ours:
    it credits neither a load's natural ramp nor its decline to the event. `after_gap_s` skips
    the rebound (the load's recovery) that follows a curtailment.

    `ValueError` as `ten_of_ten`, and for a window that is not positive or a negative gap."""
    series = _checked_meter(meter)
    start_ts, end_ts = _checked_window(start, end)
    if not (window_s > 0 and math.isfinite(window_s)):
        raise ValueError(f"meter_before_after: window_s {window_s} must be a positive number")
    if not (after_gap_s >= 0 and math.isfinite(after_gap_s)):
        raise ValueError(f"meter_before_after: after_gap_s {after_gap_s} must be ≥ 0")
    index = pd.DatetimeIndex(series.index)
    window = pd.Timedelta(seconds=window_s)
    event_idx = index[(index >= start_ts) & (index < end_ts)]
    after_from = end_ts + pd.Timedelta(seconds=after_gap_s)
    before = series[(index >= start_ts - window) & (index < start_ts)].dropna()
    after = series[(index >= after_from) & (index < after_from + window)].dropna()
    t = _seconds(event_idx)
    note: str | None = None
    if len(before) and len(after):
        t0, y0 = float(_seconds(pd.DatetimeIndex(before.index)).mean()), float(before.mean())
        t1, y1 = float(_seconds(pd.DatetimeIndex(after.index)).mean()), float(after.mean())
        kw = y0 + (y1 - y0) * (t - t0) / (t1 - t0)
    elif len(before):
        kw = np.full(len(t), float(before.mean()))
        note = "no meter after yet: the baseline is the meter before alone"
    elif len(after):
        kw = np.full(len(t), float(after.mean()))
        note = "no meter before: the baseline is the meter after alone"
    else:
        kw = np.full(len(t), np.nan)
        note = "neither the window before nor the window after the event was measured"
    return Baseline(
        method=METER_BEFORE_AFTER,
        kw=pd.Series(kw, index=event_idx, name=METER_BEFORE_AFTER),
        note=note,
    )


# -- helpers ----------------------------------------------------------------------------------


def _checked_meter(meter: pd.Series) -> pd.Series:
    """The meter as floats on a sorted, unique, timezone-aware UTC index (the last value of a
    repeated start wins)."""
    if not isinstance(meter, pd.Series):
        raise ValueError(f"meter: must be a pandas Series, not {type(meter).__name__}")
    if not isinstance(meter.index, pd.DatetimeIndex) or meter.index.tz is None:
        raise ValueError("meter: its index must be a timezone-aware DatetimeIndex")
    try:
        out = meter.astype(float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"meter: values must be numbers ({err})") from None
    out.index = pd.DatetimeIndex(out.index).tz_convert("UTC").as_unit("ns")
    if not out.index.is_monotonic_increasing:
        out = out.sort_index()
    if out.index.has_duplicates:
        out = out[~out.index.duplicated(keep="last")]
    return out


def _checked_window(start: datetime, end: datetime) -> tuple[pd.Timestamp, pd.Timestamp]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("event start and end must be timezone-aware")
    start_ts = pd.Timestamp(start).tz_convert("UTC").as_unit("ns")
    end_ts = pd.Timestamp(end).tz_convert("UTC").as_unit("ns")
    if not end_ts > start_ts:
        raise ValueError(
            f"event end {end_ts.isoformat()} is not after its start {start_ts.isoformat()}"
        )
    return start_ts, end_ts


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"tz: unknown time zone {tz!r}") from None


def _step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The meter's interval: the median spacing of its starts (zero with fewer than two)."""
    if len(index) < 2:
        return pd.Timedelta(0)
    diffs = np.diff(index.asi8)
    diffs = diffs[diffs > 0]
    return pd.Timedelta(int(np.median(diffs)), unit="ns") if diffs.size else pd.Timedelta(0)


def _same_times(
    index: pd.DatetimeIndex,
    values: FloatArray,
    slots: pd.DatetimeIndex,
    event_date: date,
    day_list: list[date],
    tz: str,
    step: pd.Timedelta,
) -> FloatArray:
    """``out[d, k]``: the meter on day ``day_list[d]`` at the local wall-clock time of slot
    ``k`` (a slot on the day after the event's date is read on the day after each day), from
    the meter interval nearest that time within half an interval; NaN where there is none or
    the time does not exist that day."""
    out = np.full((len(day_list), len(slots)), np.nan)
    if not day_list or len(slots) == 0 or len(index) == 0:
        return out
    # the zone by name: pandas localizes a whole array at once (a ZoneInfo goes time by time)
    wall = slots.tz_convert(tz).tz_localize(None)  # the slots' local wall-clock times
    first = np.ones(len(slots), dtype=bool)  # a repeated time: its first (summer) occurrence
    keys = index.asi8
    tolerance = step.value // 2
    for d, day in enumerate(day_list):
        shifted = wall - pd.Timedelta(days=(event_date - day).days)
        targets = shifted.tz_localize(tz, ambiguous=first, nonexistent="NaT")
        real = np.asarray(targets.notna())  # NaT: skipped by a spring-forward that day
        t = targets.asi8[real]
        right = np.clip(np.searchsorted(keys, t), 0, len(keys) - 1)
        left = np.clip(right - 1, 0, len(keys) - 1)
        nearer = np.where(np.abs(keys[right] - t) < np.abs(t - keys[left]), right, left)
        close = np.abs(keys[nearer] - t) <= tolerance
        out[d, real] = np.where(close, values[nearer], np.nan)
    return out


def _nanmean(rows: FloatArray) -> FloatArray:
    """Column means over the finite entries (NaN where a column has none), without warnings."""
    ok = np.isfinite(rows)
    count = ok.sum(axis=0)
    total = np.where(ok, rows, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean: FloatArray = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean


def _seconds(index: pd.DatetimeIndex) -> FloatArray:
    secs: FloatArray = index.asi8.astype(float) / 1e9
    return secs


def _named(kw: pd.Series) -> pd.Series:
    kw.name = TEN_OF_TEN
    return kw
