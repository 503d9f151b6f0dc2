"""The M&V baselines (optimizer/baselines.py) on meters simple enough to check by hand: constant
days, a level per day, a ramp, local-hour profiles across a DST change and across midnight."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from optimizer.baselines import meter_before_after, ten_of_ten

TZ = "Europe/Berlin"
ZONE = ZoneInfo(TZ)
STEP = timedelta(minutes=15)


def meter(
    first: datetime, last: datetime, kw: Callable[[datetime], float], step: timedelta = STEP
) -> pd.Series:
    """The head import from `first` to `last` (local, aware) every `step`, `kw(local time)`."""
    idx = pd.date_range(first, last, freq=step, inclusive="left").tz_convert("UTC")
    local = [ts.tz_convert(ZONE).to_pydatetime() for ts in idx]
    return pd.Series([kw(t) for t in local], index=idx, dtype=float)


def local(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=ZONE)


# Wednesday 2026-06-17, 14:00-16:00 local; history from mid-April.
EVENT_START = local(2026, 6, 17, 14)
EVENT_END = local(2026, 6, 17, 16)
HISTORY_FROM = local(2026, 4, 20)
DAY_AFTER = local(2026, 6, 18)


def weekdays_before(day: date, n: int, skip: set[date] | None = None) -> tuple[date, ...]:
    out: list[date] = []
    d = day
    while len(out) < n:
        d -= timedelta(days=1)
        if d.weekday() < 5 and d not in (skip or set()):
            out.append(d)
    return tuple(out)


def test_constant_days_give_the_constant_and_no_adjustment() -> None:
    def kw(t: datetime) -> float:
        in_event = t.date() == EVENT_START.date() and 14 <= t.hour < 16
        return 300.0 if in_event else 500.0  # the event cut 200 kW

    b = ten_of_ten(meter(HISTORY_FROM, DAY_AFTER, kw), EVENT_START, EVENT_END, tz=TZ)
    assert b.method == "10of10"
    assert len(b.kw) == 8  # 2 h of 15 min intervals
    assert b.kw.index[0] == pd.Timestamp(EVENT_START).tz_convert("UTC")
    assert np.allclose(b.kw.to_numpy(), 500.0)
    assert b.adjustment == pytest.approx(1.0)
    assert b.days_used == weekdays_before(EVENT_START.date(), 10)
    assert b.note is None


def level_per_day(base: float = 100.0) -> Callable[[datetime], float]:
    """Each day a level of its own: ``base + day of the year`` kW, all day."""
    return lambda t: base + t.timetuple().tm_yday


def test_mean_of_the_ten_latest_weekdays_scaled_by_the_same_day_adjustment() -> None:
    # the event day's level (100 + 168 = 268) is above the ten days' mean: the adjustment is
    # the ratio, below the 20 % cap
    days_used = weekdays_before(EVENT_START.date(), 10)
    mean = float(np.mean([100.0 + d.timetuple().tm_yday for d in days_used]))
    b = ten_of_ten(meter(HISTORY_FROM, DAY_AFTER, level_per_day()), EVENT_START, EVENT_END, tz=TZ)
    assert b.days_used == days_used
    ratio = 268.0 / mean
    assert b.adjustment == pytest.approx(ratio)
    assert ratio < 1.2
    assert np.allclose(b.kw.to_numpy(), mean * ratio)  # i.e. the event day's own level


def test_event_days_are_not_eligible() -> None:
    skip = {date(2026, 6, 16), date(2026, 6, 10)}  # the day before, and a week before
    b = ten_of_ten(
        meter(HISTORY_FROM, DAY_AFTER, level_per_day()),
        EVENT_START,
        EVENT_END,
        tz=TZ,
        excluded_days=skip,
        adjustment_cap=0.0,  # factor 1: the mean itself
    )
    used = weekdays_before(EVENT_START.date(), 10, skip)
    assert b.days_used == used
    assert date(2026, 6, 16) not in b.days_used
    assert np.allclose(b.kw.to_numpy(), np.mean([100.0 + d.timetuple().tm_yday for d in used]))
    assert b.adjustment == pytest.approx(1.0)


def test_a_weekend_event_uses_weekend_days_only() -> None:
    def kw(t: datetime) -> float:
        return 200.0 if t.weekday() >= 5 else 900.0

    start, end = local(2026, 6, 20, 10), local(2026, 6, 20, 12)  # Saturday
    b = ten_of_ten(meter(HISTORY_FROM, local(2026, 6, 21), kw), start, end, tz=TZ)
    assert all(d.weekday() >= 5 for d in b.days_used)
    assert len(b.days_used) == 10
    assert b.days_used[:2] == (date(2026, 6, 14), date(2026, 6, 13))
    assert np.allclose(b.kw.to_numpy(), 200.0)


@pytest.mark.parametrize(("morning_kw", "factor"), [(900.0, 1.2), (300.0, 0.8), (550.0, 1.1)])
def test_the_same_day_adjustment_is_capped_both_ways(morning_kw: float, factor: float) -> None:
    # history 500 kW flat; on the event day 10:00-13:00 (three hours ending one hour before the
    # 14:00 start) the feeder drew `morning_kw`
    def kw(t: datetime) -> float:
        if t.date() == EVENT_START.date() and 10 <= t.hour < 13:
            return morning_kw
        return 500.0

    b = ten_of_ten(meter(HISTORY_FROM, DAY_AFTER, kw), EVENT_START, EVENT_END, tz=TZ)
    assert b.adjustment == pytest.approx(factor)
    assert np.allclose(b.kw.to_numpy(), 500.0 * factor)
    capped = factor != 1.1
    assert (b.note is not None and "capped" in b.note) == capped


def test_the_hour_just_before_the_event_is_outside_the_adjustment_window() -> None:
    # a pre-event dip at 13:00-14:00 (the gap hour) changes nothing
    def kw(t: datetime) -> float:
        return 100.0 if t.date() == EVENT_START.date() and t.hour == 13 else 500.0

    b = ten_of_ten(meter(HISTORY_FROM, DAY_AFTER, kw), EVENT_START, EVENT_END, tz=TZ)
    assert b.adjustment == pytest.approx(1.0)


def test_too_few_days_are_used_and_said_and_none_gives_nan() -> None:
    m = meter(local(2026, 6, 10), DAY_AFTER, lambda t: 400.0)  # 5 weekdays before the event
    b = ten_of_ten(m, EVENT_START, EVENT_END, tz=TZ)
    assert len(b.days_used) == 5
    assert b.note is not None
    assert "only 5 eligible weekdays in the last 45 days" in b.note
    assert np.allclose(b.kw.to_numpy(), 400.0)

    bare = meter(local(2026, 6, 17), DAY_AFTER, lambda t: 400.0)  # the event day alone
    none = ten_of_ten(bare, EVENT_START, EVENT_END, tz=TZ)
    assert len(none.kw) == 8
    assert none.kw.isna().all()
    assert none.days_used == ()
    assert none.adjustment is None
    assert none.note == "no eligible weekday in the last 45 days"


def test_a_day_with_a_gap_in_the_event_hours_is_not_eligible() -> None:
    m = meter(HISTORY_FROM, DAY_AFTER, level_per_day())
    gap = (m.index >= pd.Timestamp(local(2026, 6, 16, 14, 30))) & (
        m.index < pd.Timestamp(local(2026, 6, 16, 15, 30))
    )
    m = m[~gap]  # half the event's slots missing on the day before
    b = ten_of_ten(m, EVENT_START, EVENT_END, tz=TZ)
    assert date(2026, 6, 16) not in b.days_used
    assert len(b.days_used) == 10
    # one missing slot of eight (87.5 %) is below the 90 % default too, and above 85 %
    m2 = meter(HISTORY_FROM, DAY_AFTER, level_per_day())
    m2 = m2.drop(pd.Timestamp(local(2026, 6, 16, 15)).tz_convert("UTC"))
    assert date(2026, 6, 16) not in ten_of_ten(m2, EVENT_START, EVENT_END, tz=TZ).days_used
    kept = ten_of_ten(m2, EVENT_START, EVENT_END, tz=TZ, min_coverage=0.85)
    assert date(2026, 6, 16) in kept.days_used


def test_slots_match_by_local_time_across_a_dst_change() -> None:
    # 2026-03-29: Europe/Berlin springs forward. The load follows the local clock, 100 kW + 10
    # per hour of the day; the event on Wednesday 2026-04-01 takes days on both sides of the
    # change, which a UTC match would shift by an hour
    def kw(t: datetime) -> float:
        return 100.0 + 10.0 * t.hour

    start, end = local(2026, 4, 1, 14), local(2026, 4, 1, 16)
    b = ten_of_ten(meter(local(2026, 2, 20), local(2026, 4, 2), kw), start, end, tz=TZ)
    assert b.days_used[-1] < date(2026, 3, 29) < b.days_used[0]
    assert np.allclose(b.kw.to_numpy(), [240.0] * 4 + [250.0] * 4)
    assert b.adjustment == pytest.approx(1.0)


def test_a_time_the_spring_forward_skipped_leaves_that_day_out() -> None:
    # Saturday 2026-04-04, 02:00-03:00: on Sunday 03-29 that hour did not exist in Berlin
    start, end = local(2026, 4, 4, 2), local(2026, 4, 4, 3)
    b = ten_of_ten(meter(local(2026, 1, 20), local(2026, 4, 5), lambda t: 300.0), start, end, tz=TZ)
    assert date(2026, 3, 28) in b.days_used
    assert date(2026, 3, 29) not in b.days_used
    assert len(b.days_used) == 10
    assert np.allclose(b.kw.to_numpy(), 300.0)


def test_a_time_the_fall_back_repeated_takes_its_first_occurrence() -> None:
    # Sunday 2026-10-25, Berlin: 02:00-03:00 came twice, at 00:00 and 01:00 UTC; the feeder
    # drew 1000 kW the first time, 2000 kW the second, 500 kW otherwise. The Saturday after,
    # with one day to average, the baseline of 02:00-03:00 is that Sunday's first hour.
    first = pd.Timestamp("2026-10-25T00:00Z"), pd.Timestamp("2026-10-25T01:00Z")
    second = pd.Timestamp("2026-10-25T01:00Z"), pd.Timestamp("2026-10-25T02:00Z")
    m = meter(local(2026, 10, 10), local(2026, 11, 1), lambda t: 500.0)
    m[(m.index >= first[0]) & (m.index < first[1])] = 1000.0
    m[(m.index >= second[0]) & (m.index < second[1])] = 2000.0
    start, end = local(2026, 10, 31, 2), local(2026, 10, 31, 3)
    b = ten_of_ten(m, start, end, tz=TZ, days=1)
    assert b.days_used == (date(2026, 10, 25),)
    assert np.allclose(b.kw.to_numpy(), 1000.0)
    assert b.adjustment == pytest.approx(1.0)


def test_an_event_across_midnight_reads_the_next_morning_of_each_day() -> None:
    # the load is the day's level (100 + day of year) + the hour; event Wed 23:00 - Thu 01:00
    def kw(t: datetime) -> float:
        return 100.0 + t.timetuple().tm_yday + t.hour

    start, end = local(2026, 6, 17, 23), local(2026, 6, 18, 1)
    b = ten_of_ten(
        meter(HISTORY_FROM, local(2026, 6, 19), kw), start, end, tz=TZ, adjustment_cap=0.0
    )
    used = b.days_used
    assert used == weekdays_before(date(2026, 6, 17), 10)
    evening = np.mean([100.0 + d.timetuple().tm_yday + 23 for d in used])
    morning = np.mean([100.0 + d.timetuple().tm_yday + 1 + 0 for d in used])
    assert np.allclose(b.kw.to_numpy(), [evening] * 4 + [morning] * 4)


def test_meter_intervals_that_moved_by_seconds_still_match() -> None:
    # a restart shifts the interval grid by 7 s: the nearest interval within half a step counts
    m = meter(HISTORY_FROM, DAY_AFTER, lambda t: 500.0)
    shifted = m.index.where(
        m.index < pd.Timestamp(local(2026, 6, 1)), m.index + pd.Timedelta(7, "s")
    )
    m.index = pd.DatetimeIndex(shifted)
    b = ten_of_ten(m, EVENT_START + timedelta(seconds=7), EVENT_END, tz=TZ)
    assert len(b.days_used) == 10
    assert np.allclose(b.kw.to_numpy(), 500.0)


def ramp(t: datetime) -> float:
    """A load rising 2 kW per minute from midnight."""
    return 2.0 * (t.hour * 60 + t.minute)


def test_meter_before_after_follows_a_ramp_exactly() -> None:
    m = meter(local(2026, 6, 17), DAY_AFTER, ramp, step=timedelta(minutes=5))
    b = meter_before_after(m, EVENT_START, EVENT_END)
    assert b.method == "meter_before_after"
    assert b.note is None
    expected = [ramp(ts.tz_convert(ZONE).to_pydatetime()) for ts in b.kw.index]
    assert len(expected) == 24
    assert np.allclose(b.kw.to_numpy(), expected)


def test_meter_before_alone_until_the_after_window_has_data() -> None:
    # history up to the event's end: before = the ramp's mean over 13:30..13:55 = 2 × 822.5 min
    m = meter(local(2026, 6, 17), EVENT_END, ramp, step=timedelta(minutes=5))
    b = meter_before_after(m, EVENT_START, EVENT_END)
    assert np.allclose(b.kw.to_numpy(), 2.0 * (13 * 60 + 42.5))
    assert b.note == "no meter after yet: the baseline is the meter before alone"


def test_meter_after_skips_the_rebound_gap() -> None:
    # flat 500 kW, but a rebound of 800 kW in the 30 min after the event: with a 30 min gap the
    # after window sees the flat load again
    def kw(t: datetime) -> float:
        return 800.0 if t.hour == 16 and t.minute < 30 else 500.0

    m = meter(local(2026, 6, 17), DAY_AFTER, kw)
    rebound = meter_before_after(m, EVENT_START, EVENT_END)
    assert rebound.kw.iloc[-1] > 700.0
    gapped = meter_before_after(m, EVENT_START, EVENT_END, after_gap_s=1800.0)
    assert np.allclose(gapped.kw.to_numpy(), 500.0)


def test_nothing_around_the_event_gives_nan_and_a_note() -> None:
    m = meter(EVENT_START, EVENT_END, lambda t: 1.0)
    b = meter_before_after(m, EVENT_START, EVENT_END)
    assert b.kw.isna().all()
    assert b.note is not None
    assert "neither" in b.note


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: ten_of_ten(m, EVENT_END, EVENT_START, tz=TZ), "is not after its start"),
        (
            lambda m: ten_of_ten(m, EVENT_START.replace(tzinfo=None), EVENT_END, tz=TZ),
            "timezone-aware",
        ),
        (lambda m: ten_of_ten(m, EVENT_START, EVENT_END, tz="Mars/Olympus"), "unknown time zone"),
        (lambda m: ten_of_ten(m.tz_localize(None), EVENT_START, EVENT_END, tz=TZ), "index"),
        (lambda m: meter_before_after(m, EVENT_START, EVENT_END, window_s=0), "window_s"),
        (lambda m: ten_of_ten(m, EVENT_START, EVENT_END, tz=TZ, adjustment_cap=1.5), "cap"),
    ],
)
def test_bad_input_is_one_clear_value_error(
    call: Callable[[pd.Series], object], message: str
) -> None:
    m = meter(local(2026, 6, 16), DAY_AFTER, lambda t: 1.0)
    with pytest.raises(ValueError, match=message):
        call(m)
