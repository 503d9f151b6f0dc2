"""Day-to-day variation of the rig's truth: no two simulated days alike (seeded, pure).

A scenario that spans days must not show the controller's forecasts the same curve every day:
a forecast that only replays yesterday would then look perfect, and one that learns nothing
real would pass. ``DaySettings`` says how far the days stray; ``DayVariation`` is one seeded
draw of it for a feeder's load buses, from a start date and hour. For each day ``d`` (local
calendar days from the start date) it holds

* **a load level** for the feeder, uniform within ``1 ± level_spread``, times
  ``weekend_level`` on Saturdays and Sundays;
* **each bus's own level**, uniform within ``1 ± bus_spread``, and **its own timing**: the
  bus's day runs up to ``shift_h`` early or late (``weekend_shift_h`` later at the weekend),
  applied as the ratio ``LOAD_SHAPE(h - shift) / LOAD_SHAPE(h)`` of the feeder's day shape, so
  the morning rise and the evening peak move bus by bus (a day's energy stays the level's: the
  shape is periodic, a shift moves energy within the day);
* **a sky**: ``clear`` (the sun times a haze factor within ``1 - haze .. 1``),
  ``partly_cloudy`` (the haze, and three to six cumulus passes starting between 09:00 and
  17:00, each 15-60 minutes, 30-80 % deep, with five-minute edges) or ``overcast`` (a deck
  taking 55-75 % of the sun from 07:00 to 19:00); given in order by ``sky``, drawn for the
  days beyond it (partly cloudy with probability ``cloudy_frac``).

Each day's draws come from their own seeded generator (``default_rng([seed, stream, d])``),
so a day's truth does not depend on how many days the run covers or where it starts. A new
day's load draws take over from the last day's linearly over its first ``blend_h`` hours (the
night trough): no step at midnight. The load factors multiply whatever the rig's other
variation gives each bus; the sky's cloud passes are ``CloudPass``es in scenario seconds, for
the rig to lay over its inverters like a scenario's own ``[[cloud]]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from hil.profiles import CloudPass, load_shape

__all__ = ["SKIES", "DayDraw", "DaySettings", "DayVariation"]

SKIES = ("clear", "partly_cloudy", "overcast")
_STREAM_DAYS = 21
_DAY_S = 86400.0


def _within(name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"DaySettings.{name} must be within {low:g}..{high:g}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DaySettings:
    """How far the days stray from one another (see the module docstring)."""

    seed: int = 1
    level_spread: float = 0.06
    """The feeder's load level each day within 1 ± this."""
    bus_spread: float = 0.04
    """Each bus's own level each day within 1 ± this (on top of the feeder's)."""
    shift_h: float = 0.5
    """Each bus's day runs up to this many hours early or late."""
    weekend_level: float = 0.9
    """The load level on Saturdays and Sundays times this."""
    weekend_shift_h: float = 1.0
    """Weekend days run this many hours later (a lie-in)."""
    sky: tuple[str, ...] = ()
    """Each day's sky, in order from the start date; the days beyond are drawn."""
    cloudy_frac: float = 0.3
    """A drawn day is partly cloudy with this probability (else clear)."""
    haze: float = 0.06
    """A day's sun within ``1 - haze .. 1`` of the clear-sky profile."""
    blend_h: float = 1.0
    """A day's load draws take over from the last day's over its first hours."""

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"DaySettings.seed must be an integer >= 0, got {self.seed!r}")
        _within("level_spread", self.level_spread, 0.0, 0.5)
        _within("bus_spread", self.bus_spread, 0.0, 0.5)
        _within("shift_h", self.shift_h, 0.0, 3.0)
        _within("weekend_level", self.weekend_level, 0.3, 1.5)
        _within("weekend_shift_h", self.weekend_shift_h, -3.0, 3.0)
        _within("cloudy_frac", self.cloudy_frac, 0.0, 1.0)
        _within("haze", self.haze, 0.0, 0.5)
        _within("blend_h", self.blend_h, 0.0, 6.0)
        for i, sky in enumerate(self.sky):
            if sky not in SKIES:
                raise ValueError(
                    f"DaySettings.sky[{i}] must be one of {', '.join(SKIES)}, got {sky!r}"
                )


@dataclass(frozen=True, slots=True, kw_only=True)
class DayDraw:
    """One day's draws."""

    day: int
    """Days since the start date."""
    date: date
    weekend: bool
    level: float
    """The feeder's load level (the weekend's factor included)."""
    bus_level: np.ndarray
    """Each bus's own level (in ``DayVariation.buses`` order)."""
    bus_shift_h: np.ndarray
    """Each bus's timing shift, hours (the weekend's included)."""
    sky: str
    sun: float
    """The day's haze factor on the clear-sky sun."""
    clouds: tuple[tuple[float, float, float], ...]
    """Cloud passes: (start hour, end hour, depth) in the day's local hours."""


class DayVariation:
    """One seeded draw of ``DaySettings`` for the load ``buses`` of a feeder, for a run that
    starts on ``start_date`` at ``start_hour`` (local time, 0..24). Without ``buses`` it holds
    the sky only, until ``for_buses`` binds it to a feeder (as the rig does)."""

    def __init__(
        self,
        settings: DaySettings,
        *,
        start_date: date,
        start_hour: float,
        buses: Sequence[int] = (),
    ) -> None:
        if not 0.0 <= start_hour < 24.0:
            raise ValueError(f"start_hour must be within 0..24, got {start_hour!r}")
        self.settings = settings
        self.buses = tuple(buses)
        self.start_date = start_date
        self.start_hour = start_hour
        self._days: dict[int, DayDraw] = {}

    def for_buses(self, buses: Sequence[int]) -> DayVariation:
        """The same draw for the load ``buses`` of a feeder (itself if it has them)."""
        if tuple(buses) == self.buses:
            return self
        return DayVariation(
            self.settings, start_date=self.start_date, start_hour=self.start_hour, buses=buses
        )

    # --- time ------------------------------------------------------------------------------

    def local_hours(self, t_s: float) -> float:
        """Hours since the start date's midnight at scenario second ``t_s``."""
        return self.start_hour + t_s / 3600.0

    def day_index(self, t_s: float) -> int:
        return math.floor(self.local_hours(t_s) / 24.0)

    def date_at(self, t_s: float) -> date:
        return self.start_date + timedelta(days=self.day_index(t_s))

    # --- draws -----------------------------------------------------------------------------

    def day(self, d: int) -> DayDraw:
        """Day ``d``'s draws (cached; a function of the seed and ``d`` only)."""
        draw = self._days.get(d)
        if draw is None:
            draw = self._draw(d)
            self._days[d] = draw
        return draw

    def _draw(self, d: int) -> DayDraw:
        s = self.settings
        rng = np.random.default_rng([s.seed, _STREAM_DAYS, d + 1_000_000])
        n = len(self.buses)
        level = float(rng.uniform(1.0 - s.level_spread, 1.0 + s.level_spread))
        bus_level = rng.uniform(1.0 - s.bus_spread, 1.0 + s.bus_spread, size=n)
        bus_shift = rng.uniform(-s.shift_h, s.shift_h, size=n)
        drawn_sky = "partly_cloudy" if rng.uniform() < s.cloudy_frac else "clear"
        haze = float(rng.uniform(1.0 - s.haze, 1.0))
        n_clouds = int(rng.integers(3, 7))
        starts = rng.uniform(9.0, 17.0, size=n_clouds)
        lengths = rng.uniform(0.25, 1.0, size=n_clouds)
        depths = rng.uniform(0.3, 0.8, size=n_clouds)
        deck = float(rng.uniform(0.55, 0.75))
        day_date = self.start_date + timedelta(days=d)
        weekend = day_date.weekday() >= 5
        if weekend:
            level *= s.weekend_level
            bus_shift = bus_shift + s.weekend_shift_h
        sky = s.sky[d] if 0 <= d < len(s.sky) else drawn_sky
        clouds: tuple[tuple[float, float, float], ...] = ()
        if sky == "partly_cloudy":
            clouds = tuple(
                (float(a), float(a + w), float(x))
                for a, w, x in zip(starts, lengths, depths, strict=True)
            )
        elif sky == "overcast":
            clouds = ((7.0, 19.0, deck),)
        return DayDraw(
            day=d,
            date=day_date,
            weekend=weekend,
            level=level,
            bus_level=bus_level,
            bus_shift_h=bus_shift,
            sky=sky,
            sun=haze,
            clouds=clouds,
        )

    # --- what the rig applies ----------------------------------------------------------------

    def bus_factors(self, t_s: float) -> np.ndarray:
        """Each load bus's factor at scenario second ``t_s`` (in ``buses`` order): the day's
        level, the bus's own level and its timing, blended from the last day's over the
        first ``blend_h`` hours of the day."""
        hours = self.local_hours(t_s)
        d = math.floor(hours / 24.0)
        h = hours - 24.0 * d
        today = self.day_factors(self.day(d), h)
        blend = self.settings.blend_h
        if blend <= 0.0 or h >= blend:
            return today
        w = h / blend
        yesterday = self.day_factors(self.day(d - 1), h + 24.0)
        out: np.ndarray = w * today + (1.0 - w) * yesterday
        return out

    @staticmethod
    def day_factors(draw: DayDraw, hour: float) -> np.ndarray:
        """Each bus's factor at ``hour`` (0..24 and on) of the day ``draw``, unblended."""
        base = load_shape(hour)
        shifted = np.array([load_shape(hour - x) for x in draw.bus_shift_h])
        out: np.ndarray = draw.level * draw.bus_level * shifted / base
        return out

    def sun_factor(self, t_s: float) -> float:
        """The day's haze at scenario second ``t_s`` (the clouds are ``clouds()``)."""
        return self.day(self.day_index(t_s)).sun

    def clouds(self, duration_s: float) -> tuple[CloudPass, ...]:
        """The cloud passes of the days the run covers, in scenario seconds."""
        out: list[CloudPass] = []
        first, last = self.day_index(0.0), self.day_index(max(duration_s, 0.0))
        offset_s = self.start_hour * 3600.0
        for d in range(first, last + 1):
            for a, b, depth in self.day(d).clouds:
                start = (24.0 * d + a) * 3600.0 - offset_s
                end = (24.0 * d + b) * 3600.0 - offset_s
                if end <= 0.0 or start >= duration_s:
                    continue
                edge = 300.0 if b - a < 2.0 else 3600.0
                out.append(CloudPass(start_s=start, end_s=end, depth=depth, edge_s=edge))
        return tuple(out)

    def skies(self, duration_s: float) -> list[tuple[date, str]]:
        """Each day the run covers and its sky."""
        first, last = self.day_index(0.0), self.day_index(max(duration_s - 1e-9, 0.0))
        return [(self.day(d).date, self.day(d).sky) for d in range(first, last + 1)]
