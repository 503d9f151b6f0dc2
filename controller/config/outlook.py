"""The config's tables for what the dispatch sees ahead: ``[tariff]`` (time-of-use import and
export prices) and ``[forecast]`` (the site, and how the load and PV forecasts learn).

A tariff is a list of periods a day, each ``{from = "HH:MM", import = x, export = y}`` in
force from its time until the next period's (the last until midnight), in the tariff's time
zone. ``periods`` is every day's; ``weekday`` (Monday to Friday) and ``weekend`` (Saturday and
Sunday) replace it on those days. ``export`` left out: export earns the import price.
"""

from __future__ import annotations

import itertools
import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from controller.config.fields import Strict

__all__ = [
    "MAX_TARIFF_PERIODS",
    "ForecastConfig",
    "TariffConfig",
    "TariffPeriod",
    "minutes_of",
]

MAX_PRICE = 1000.0
"""Prices per kWh are within ±1000 (any currency), as everywhere in the config."""
MAX_TARIFF_PERIODS = 96
"""Periods in one day's tariff (every quarter hour at most)."""


class _Strict(Strict):
    model_config = ConfigDict(populate_by_name=True)  # `from`, `import`: keywords, by alias


def _zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError('is not a known IANA time zone (e.g. "Europe/Paris", "UTC")') from None
    return value


TimeZone = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$"), AfterValidator(_zone)
]
Price = Annotated[float, Field(ge=-MAX_PRICE, le=MAX_PRICE)]
_HH_MM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def _clock_time(value: str) -> str:
    if not _HH_MM.match(value):
        raise ValueError('must be a time of day "HH:MM", 00:00 to 23:59')
    return value


ClockTime = Annotated[str, Field(max_length=16), AfterValidator(_clock_time)]
"""``"HH:MM"``, 00:00 to 23:59."""


def minutes_of(clock_time: str) -> int:
    """Minutes after midnight of an ``"HH:MM"``."""
    hours, minutes = clock_time.split(":")
    return int(hours) * 60 + int(minutes)


class TariffPeriod(_Strict):
    start: ClockTime = Field(alias="from")
    import_price: Price = Field(alias="import")
    export_price: Price | None = Field(default=None, alias="export")


def _check_day(periods: list[TariffPeriod]) -> list[TariffPeriod]:
    if periods[0].start != "00:00":
        raise ValueError(
            f"the first period starts at {periods[0].start}: a day's first period starts at "
            '"00:00" (the last one runs until midnight)'
        )
    for i, (a, b) in enumerate(itertools.pairwise(periods)):
        if not minutes_of(b.start) > minutes_of(a.start):
            raise ValueError(
                f"period [{i + 1}] (from {b.start}) does not start after period [{i}] "
                f"(from {a.start}): the periods must be in order of their start"
            )
    return periods


Periods = Annotated[
    list[TariffPeriod],
    Field(min_length=1, max_length=MAX_TARIFF_PERIODS),
    AfterValidator(_check_day),
]


class TariffConfig(_Strict):
    """Time-of-use prices (see the module docstring)."""

    # IANA time zone of the periods' times; unset: [forecast] timezone (itself UTC by default)
    timezone: TimeZone | None = None
    periods: Periods | None = None
    weekday: Periods | None = None
    weekend: Periods | None = None

    @model_validator(mode="after")
    def _days(self) -> TariffConfig:
        if self.periods is None and (self.weekday is None or self.weekend is None):
            given = "weekday" if self.weekday is not None else "weekend"
            if self.weekday is None and self.weekend is None:
                raise ValueError("give 'periods' (every day), or 'weekday' and 'weekend'")
            missing = "weekend" if given == "weekday" else "weekday"
            raise ValueError(
                f"'{given}' without '{missing}' or 'periods': {missing}s have no price"
            )
        return self

    def day(self, weekday: int) -> list[TariffPeriod]:
        """The periods of a day (``weekday`` 0 is Monday)."""
        own = self.weekend if weekday >= 5 else self.weekday
        day = own if own is not None else self.periods
        assert day is not None  # the validator saw to it
        return day


class ForecastConfig(_Strict):
    """How the per-bus load and per-inverter PV forecasts are made
    (``controller.forecasts``)."""

    # false: no forecast, each step of the plan sees the loads and sun of now (persistence)
    enabled: bool = True
    # the site, for the clear-sky shape of the PV forecast (both, or neither: without them
    # the PV forecast is the seasonal one of the measured history alone)
    latitude: Annotated[float, Field(ge=-90.0, le=90.0)] | None = None
    longitude: Annotated[float, Field(ge=-180.0, le=180.0)] | None = None
    # the local time zone: days and their types (weekday, weekend) as the site lives them
    timezone: TimeZone = "UTC"
    # how many days of history the forecasts learn from (1-366)
    history_days: Annotated[int, Field(ge=1, le=366)] = 28
    # the history's resolution (60-3600 s, a whole number of them a day)
    slot_s: Annotated[int, Field(ge=60, le=3600)] = 900
    # "auto": a statistical model where enough history exists, else the seasonal baseline;
    # "seasonal": the seasonal baseline always
    model: Literal["auto", "seasonal"] = "auto"

    @model_validator(mode="after")
    def _site(self) -> ForecastConfig:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both 'latitude' and 'longitude', or neither")
        if 86400 % self.slot_s:
            raise ValueError(
                f"'slot_s' {self.slot_s} does not divide a day (86400 s): e.g. 300, 900, 3600"
            )
        return self
