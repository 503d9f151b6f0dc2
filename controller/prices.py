"""Energy prices for the dispatch's horizon: a time-of-use tariff from the config, a price feed
over MQTT, and the price of each step (pure: no I/O, no clock; ``controller.pricefeed`` takes
the feed in).

Each step's import and export price is the time-weighted mean, over the step, of the price in
force at each instant: the price feed's where one of its periods covers the instant, else the
tariff's, else ``[dr] price_per_kwh``. An export price nobody gives is the import price (export
earns what import costs, as with one price).

A feed is a JSON object ``{"id": "...", "import": [{"start": RFC 3339, "end": RFC 3339,
"price": x}, ...], "export": [...]}`` (at least one of the two lists). ``parse_price_feed``
returns a ``PriceFeed`` or raises ``FeedRejected`` whose ``reason`` says what is wrong, whatever
the bytes. Nothing a sender controls is unbounded: the payload's size and nesting, the id, the
number of periods, the prices (finite, within ±``MAX_PRICE``), and time (every period ends
within ``MAX_SPAN`` of now, and the feed spans at most as long).
"""

from __future__ import annotations

import bisect
import itertools
import math
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.config import TariffConfig
from controller.config.outlook import minutes_of
from controller.dr.events import (
    EventRejected,
    json_object,
    message_id,
    parse_time,
    short,
)

__all__ = [
    "MAX_FEED_BYTES",
    "MAX_FEED_PERIODS",
    "MAX_SPAN",
    "FeedRejected",
    "PriceFeed",
    "PricePeriod",
    "StepPrices",
    "Tariff",
    "parse_price_feed",
    "step_prices",
]

MAX_FEED_BYTES = 512 * 1024
"""Enough for a week of five-minute prices, import and export (about 200 bytes a period)."""
MAX_FEED_DEPTH = 4
"""``{"import": [{...}]}`` nests three deep; a little more is refused by the key checks."""
MAX_FEED_PERIODS = 2016
"""Periods in one list: a week of five-minute prices."""
MAX_SPAN = timedelta(days=7)
MAX_PRICE = 1000.0
_PERIOD_KEYS = {"start", "end", "price"}


class FeedRejected(ValueError):
    """A price feed that cannot be used; ``reason`` is the one line published on its status."""

    def __init__(self, reason: str, *, feed_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.feed_id = feed_id


@dataclass(frozen=True, slots=True)
class PricePeriod:
    start: datetime
    end: datetime
    price: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceFeed:
    """A feed as accepted: its periods in order, none overlapping."""

    id: str
    import_periods: tuple[PricePeriod, ...]
    export_periods: tuple[PricePeriod, ...]
    received_at: datetime

    @property
    def end(self) -> datetime:
        """When its last period ends (after that it says nothing)."""
        return max(p.end for p in (*self.import_periods, *self.export_periods))

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "import_periods": len(self.import_periods),
            "export_periods": len(self.export_periods),
            "until": self.end.isoformat(),
            "received_at": self.received_at.isoformat(),
        }


def parse_price_feed(payload: bytes | str, *, now: datetime) -> PriceFeed:
    """Validate one ``<root>/price`` payload received at ``now``; see the module docstring."""
    data = json_object(
        payload, max_bytes=MAX_FEED_BYTES, max_depth=MAX_FEED_DEPTH, reject=FeedRejected
    )
    feed_id = message_id(data, FeedRejected)
    try:
        unknown = sorted(set(data) - {"id", "import", "export"})
        if unknown:
            raise FeedRejected(f"unknown key {short(repr(unknown[0]), 40)}")
        if "import" not in data and "export" not in data:
            raise FeedRejected("give 'import' or 'export' (or both): lists of periods")
        imp = _periods(data.get("import", []), "import", now)
        exp = _periods(data.get("export", []), "export", now)
        every = (*imp, *exp)
        if not every:
            raise FeedRejected("no periods: 'import' and 'export' are both empty")
        first, last = min(p.start for p in every), max(p.end for p in every)
        if last <= now:
            raise FeedRejected(f"every period has ended already (the last at {last.isoformat()})")
        if last - now > MAX_SPAN or last - first > MAX_SPAN:
            raise FeedRejected(
                f"the feed reaches beyond {MAX_SPAN.days} days: its periods must end within "
                f"{MAX_SPAN.days} days of now and span at most as long (last end "
                f"{last.isoformat()})"
            )
    except FeedRejected as err:
        raise FeedRejected(err.reason, feed_id=feed_id) from None
    return PriceFeed(id=feed_id, import_periods=imp, export_periods=exp, received_at=now)


def _periods(value: object, key: str, now: datetime) -> tuple[PricePeriod, ...]:
    if not isinstance(value, list):
        raise FeedRejected(f"'{key}' must be a list of periods, got {type(value).__name__}")
    if len(value) > MAX_FEED_PERIODS:
        raise FeedRejected(f"'{key}' has {len(value)} periods: at most {MAX_FEED_PERIODS}")
    out: list[PricePeriod] = []
    for i, item in enumerate(value):
        where = f"'{key}'[{i}]"
        if not isinstance(item, dict):
            raise FeedRejected(f"{where} must be an object {{start, end, price}}")
        unknown = sorted(set(item) - _PERIOD_KEYS)
        if unknown:
            raise FeedRejected(f"{where}: unknown key {short(repr(unknown[0]), 40)}")
        missing = [k for k in ("start", "end", "price") if k not in item]
        if missing:
            raise FeedRejected(f"{where}: missing key {missing[0]!r}")
        try:
            start = parse_time(item["start"], "start")
            end = parse_time(item["end"], "end")
        except EventRejected as err:
            raise FeedRejected(f"{where}: {err.reason}") from None
        price = item["price"]
        if isinstance(price, bool) or not isinstance(price, int | float) or not _finite(price):
            raise FeedRejected(
                f"{where}: 'price' must be a finite number, got {short(repr(price), 40)}"
            )
        if abs(price) > MAX_PRICE:
            raise FeedRejected(f"{where}: 'price' {price:g} is outside ±{MAX_PRICE:g} per kWh")
        if not start < end:
            raise FeedRejected(f"{where}: 'start' must be before 'end'")
        if out and start < out[-1].end:
            raise FeedRejected(
                f"{where} starts at {start.isoformat()}, before the period before it ends "
                f"({out[-1].end.isoformat()}): periods in order, not overlapping"
            )
        out.append(
            PricePeriod(start=start.astimezone(UTC), end=end.astimezone(UTC), price=float(price))
        )
    return tuple(out)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class Tariff:
    """The config's time-of-use tariff, in its time zone."""

    def __init__(self, config: TariffConfig, timezone: str) -> None:
        self.config = config
        self.zone = zoneinfo.ZoneInfo(timezone)

    def segments(
        self, start: datetime, end: datetime
    ) -> list[tuple[datetime, float, float | None]]:
        """The tariff's periods that begin before ``end``, in order, as (start, import,
        export), the first one in force at ``start``: a step function from ``start``."""
        local = start.astimezone(self.zone).date() - timedelta(days=1)
        last = end.astimezone(self.zone).date()
        out: list[tuple[datetime, float, float | None]] = []
        while local <= last:
            for p in self.config.day(local.weekday()):
                m = minutes_of(p.start)
                at = datetime(
                    local.year, local.month, local.day, m // 60, m % 60, tzinfo=self.zone
                ).astimezone(UTC)
                if at < end:
                    out.append((at, p.import_price, p.export_price))
            local += timedelta(days=1)
        out.sort(key=lambda s: s[0])
        first = max((i for i, s in enumerate(out) if s[0] <= start), default=0)
        return out[first:]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPrices:
    """Each step's mean import and export price (per kWh), and what set them."""

    import_per_kwh: tuple[float, ...]
    export_per_kwh: tuple[float, ...]
    feed_share: float
    """The share of the horizon's time the price feed priced (0: the tariff or the default)."""


class _Layer:
    """A piecewise-constant price over time (seconds from now), ``None`` where it says
    nothing."""

    def __init__(self, bounds: list[float], values: list[float | None]) -> None:
        self.bounds = bounds  # start of each piece; a piece ends where the next begins
        self.values = values

    def at(self, t: float) -> float | None:
        i = bisect.bisect_right(self.bounds, t) - 1
        return None if i < 0 else self.values[i]


def _feed_layer(periods: Sequence[PricePeriod], at: datetime) -> _Layer:
    bounds: list[float] = []
    values: list[float | None] = []
    for p in periods:
        s, e = (p.start - at).total_seconds(), (p.end - at).total_seconds()
        if bounds and bounds[-1] == s:
            values[-1] = p.price  # a hole of zero length closes
        else:
            bounds.append(s)
            values.append(p.price)
        bounds.append(e)
        values.append(None)
    return _Layer(bounds, values)


def step_prices(
    at: datetime,
    starts_s: Sequence[float],
    steps_s: Sequence[float],
    *,
    default_per_kwh: float,
    tariff: Tariff | None = None,
    feed: PriceFeed | None = None,
) -> StepPrices:
    """Each step's time-weighted mean price (see the module docstring)."""
    horizon_s = starts_s[-1] + steps_s[-1]
    end = at + timedelta(seconds=horizon_s)
    tariff_imp = tariff_exp = None
    cuts = set(starts_s) | {horizon_s}
    if tariff is not None:
        segs = tariff.segments(at, end)
        bounds = [max((s - at).total_seconds(), 0.0) for s, _i, _e in segs]
        tariff_imp = _Layer(bounds, [i for _s, i, _e in segs])
        tariff_exp = _Layer(bounds, [e for _s, _i, e in segs])
        cuts.update(bounds)
    feed_imp = feed_exp = None
    if feed is not None:
        feed_imp = _feed_layer(feed.import_periods, at)
        feed_exp = _feed_layer(feed.export_periods, at)
        cuts.update(feed_imp.bounds)
        cuts.update(feed_exp.bounds)
    points = sorted(c for c in cuts if 0.0 <= c <= horizon_s)
    n = len(starts_s)
    imp = [0.0] * n
    exp = [0.0] * n
    fed = 0.0
    step = 0
    for a, b in itertools.pairwise(points):
        if b <= a:
            continue
        mid = 0.5 * (a + b)
        while step + 1 < n and starts_s[step + 1] <= mid:
            step += 1
        i_price = feed_imp.at(mid) if feed_imp is not None else None
        if i_price is not None:
            fed += b - a
        elif tariff_imp is not None:
            i_price = tariff_imp.at(mid)
        if i_price is None:
            i_price = default_per_kwh
        e_price = feed_exp.at(mid) if feed_exp is not None else None
        if e_price is None and tariff_exp is not None:
            e_price = tariff_exp.at(mid)
        if e_price is None:
            e_price = i_price
        imp[step] += i_price * (b - a)
        exp[step] += e_price * (b - a)
    return StepPrices(
        import_per_kwh=tuple(v / d for v, d in zip(imp, steps_s, strict=True)),
        export_per_kwh=tuple(v / d for v, d in zip(exp, steps_s, strict=True)),
        feed_share=fed / horizon_s if horizon_s > 0 else 0.0,
    )
