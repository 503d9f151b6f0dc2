"""No two simulated days alike (``hil.days``): deterministic from the seed, days that differ,
bounded draws, no step at midnight; and the rig's pandapower physics carries them."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, date, datetime

import numpy as np
import pytest

from controller.clock import FakeClock
from hil import HilRig
from hil.days import DaySettings, DayVariation
from hil.profiles import LOAD_SHAPE, load_shape
from hil.scenario import parse_scenario

BUSES = tuple(range(2, 34))
WEDNESDAY = date(2026, 8, 26)


def _days(settings: DaySettings | None = None, *, start_hour: float = 0.0) -> DayVariation:
    return DayVariation(
        settings or DaySettings(), start_date=WEDNESDAY, start_hour=start_hour, buses=BUSES
    )


def _at(day: int, hour: float) -> float:
    """Scenario seconds of ``hour`` on day ``day`` of a run from midnight."""
    return (24.0 * day + hour) * 3600.0


def test_the_same_seed_gives_the_same_days_and_another_seed_others() -> None:
    a, b = _days(), _days()
    times = [_at(d, h) for d in range(3) for h in (3.0, 8.5, 13.0, 19.25)]
    for t in times:
        assert np.array_equal(a.bus_factors(t), b.bus_factors(t))
    assert a.clouds(3 * 86400.0) == b.clouds(3 * 86400.0)
    other = _days(DaySettings(seed=2))
    assert not np.allclose(a.bus_factors(_at(1, 19.0)), other.bus_factors(_at(1, 19.0)))
    # a day's draws do not depend on where the run starts or what was asked before
    late = DayVariation(DaySettings(), start_date=WEDNESDAY, start_hour=12.0, buses=BUSES)
    assert np.array_equal(late.bus_factors(_at(1, 19.0) - 12 * 3600.0), a.bus_factors(_at(1, 19.0)))


def test_days_differ_in_level_and_shape_bus_by_bus() -> None:
    days = _days()
    evenings = [days.bus_factors(_at(d, 19.0)) for d in range(6)]
    levels = [float(np.mean(e)) for e in evenings]
    assert np.std(levels) > 0.01, levels  # the feeder's level moves day to day
    assert not np.allclose(evenings[0], evenings[1], rtol=0.01)
    # shape: the ratio of the morning to the evening differs day to day at the same bus
    ratios = [days.bus_factors(_at(d, 7.0)) / days.bus_factors(_at(d, 19.0)) for d in range(2)]
    assert np.max(np.abs(ratios[0] - ratios[1])) > 0.02


def test_draws_are_bounded_by_the_settings() -> None:
    s = DaySettings()
    days = _days(s)
    grid = np.arange(0.0, 24.0, 0.25)
    # the largest and smallest ratio a shift of the day's shape can make (weekends later)
    ratios = [
        load_shape(h - x) / load_shape(h)
        for h in grid
        for x in np.linspace(-s.shift_h, s.shift_h + s.weekend_shift_h, 25)
    ]
    low = (1 - s.level_spread) * (1 - s.bus_spread) * min(ratios) * s.weekend_level
    high = (1 + s.level_spread) * (1 + s.bus_spread) * max(ratios)
    for d in range(7):  # a whole week, the weekend's lie-in included
        for h in (0.5, 6.0, 9.0, 13.0, 18.0, 21.5):
            f = days.bus_factors(_at(d, h))
            assert f.min() >= low - 1e-9, (d, h)
            assert f.max() <= high + 1e-9, (d, h)
        draw = days.day(d)
        assert 1 - s.haze <= draw.sun <= 1
        assert abs(draw.level / (s.weekend_level if draw.weekend else 1.0) - 1) <= s.level_spread
        # a shift moves energy within the day: each bus's energy that day is its level's
        hours = np.arange(0.0, 24.0, 0.05)
        shape = np.array([load_shape(h) for h in hours])
        energy = sum(load_shape(h) * days.day_factors(draw, h) for h in hours) / shape.sum()
        level = draw.level * draw.bus_level
        assert energy == pytest.approx(level, rel=1e-9)
        weekday = level / (s.weekend_level if draw.weekend else 1.0)
        assert weekday.max() <= (1 + s.level_spread) * (1 + s.bus_spread)
        assert weekday.min() >= (1 - s.level_spread) * (1 - s.bus_spread)


def test_the_weekend_is_lower_and_later() -> None:
    days = _days(DaySettings(level_spread=0.0, bus_spread=0.0, shift_h=0.0))
    saturday = 3  # from Wednesday
    assert days.day(saturday).weekend
    assert not days.day(0).weekend
    assert days.day(saturday).level == pytest.approx(0.9)
    # an hour later: Saturday 09:00 looks like a weekday's 08:00 (times the level)
    sat9 = days.bus_factors(_at(saturday, 9.0)) * load_shape(9.0)
    assert sat9 == pytest.approx(0.9 * load_shape(8.0))


def test_no_step_at_midnight() -> None:
    days = _days()
    for d in (1, 2, 3):
        before, after = days.bus_factors(_at(d, 0.0) - 1.0), days.bus_factors(_at(d, 0.0))
        assert after == pytest.approx(before, rel=1e-3)
        # an hour on, the new day's draws hold
        whole = DayVariation(
            dataclasses.replace(days.settings, blend_h=0.0),
            start_date=WEDNESDAY,
            start_hour=0.0,
            buses=BUSES,
        )
        assert days.bus_factors(_at(d, 1.0)) == pytest.approx(whole.bus_factors(_at(d, 1.0)))


def test_the_sky_each_day_as_given_then_drawn() -> None:
    days = _days(DaySettings(sky=("clear", "partly_cloudy", "overcast"), cloudy_frac=1.0))
    assert [sky for _d, sky in days.skies(4 * 86400.0)] == [
        "clear",
        "partly_cloudy",
        "overcast",
        "partly_cloudy",  # drawn: cloudy_frac 1
    ]
    clouds = days.clouds(3 * 86400.0)
    day2 = [c for c in clouds if _at(1, 0) <= c.start_s < _at(2, 0)]
    assert 3 <= len(day2) <= 6
    for c in day2:  # cumulus passes between 09:00 and 18:00, 15-60 minutes, 30-80 % deep
        assert _at(1, 9.0) <= c.start_s <= _at(1, 17.0)
        assert 900.0 <= c.end_s - c.start_s <= 3600.0
        assert 0.3 <= c.depth <= 0.8
    deck = [c for c in clouds if _at(2, 0) <= c.start_s < _at(3, 0)]
    assert len(deck) == 1
    assert 0.55 <= deck[0].depth <= 0.75
    assert not [c for c in clouds if c.start_s < _at(1, 0)]  # the clear day


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("level_spread", 0.7, "DaySettings.level_spread must be within 0..0.5, got 0.7"),
        ("haze", math.nan, "DaySettings.haze must be within 0..0.5, got nan"),
        ("sky", ("rainy",), "DaySettings.sky[0] must be one of clear, partly_cloudy, overcast"),
        ("seed", -1, "DaySettings.seed must be an integer >= 0, got -1"),
    ],
)
def test_bad_settings_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DaySettings(**{field: value})  # type: ignore[arg-type]


async def test_the_rig_s_physics_carries_the_days() -> None:
    """Graded by pandapower: the feeder's total load at the same hour differs between two days
    by the days' own draws, and the PV available by the days' haze."""
    scenario = parse_scenario(
        {
            "name": "days",
            "duration_s": 2 * 86400,
            "date": "2026-08-26",
            "timezone": "Europe/Berlin",
            "feeder": {"varied": False, "meters": "none", "days": {"sky": ["clear", "clear"]}},
        },
        source="<days>",
    )
    clock = FakeClock(start=scenario.start_utc)
    options = scenario.rig_options()
    days = options["days"]
    async with HilRig(
        monotonic=clock.monotonic,
        now=clock.now,
        physics_period_s=None,
        solve_on_write=False,
        **options,
    ) as rig:
        seen = []
        for d in (0, 1):
            clock.advance(_at(d, 13.0) - clock.monotonic())
            state = await rig.step()
            seen.append((state.load_kw, rig.pv_available_kw))
        base = rig.physics.base_bus_load_kw
        expected = []
        for d in (0, 1):
            f = days.for_buses(rig.physics.load_buses).bus_factors(_at(d, 13.0))
            total = sum(base[b] * x for b, x in zip(rig.physics.load_buses, f, strict=True))
            expected.append(total * load_shape(13.0))
    assert seen[0][0] == pytest.approx(expected[0], rel=1e-6)
    assert seen[1][0] == pytest.approx(expected[1], rel=1e-6)
    assert abs(seen[1][0] / seen[0][0] - 1) > 0.005  # the days differ
    haze = [days.day(d).sun for d in (0, 1)]
    assert seen[1][1] / seen[0][1] == pytest.approx(haze[1] / haze[0], rel=1e-6)
    assert max(LOAD_SHAPE) == 1.0
    assert clock.now().astimezone(UTC) > datetime(2026, 8, 27, tzinfo=UTC)
