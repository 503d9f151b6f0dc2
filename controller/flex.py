"""The flexibility contract: what each feederd publishes on ``<root>/flex`` (retained, QoS 1,
every interval) and what the fleet coordinator reads from it.

One JSON object (``Flexibility.to_json``)::

    {"v": 1, "site": "north-1", "at": "2030-06-04T12:00:05+00:00", "seq": 812,
     "interval_s": 5.0, "window_s": 3600.0,
     "import_kw": 2311.4, "limit_kw": null,
     "min_kw": 1740.0, "max_kw": 2380.0,
     "curve": [[1740.0, 61.2], [1953.3, 18.0], [2166.7, 4.1], [2380.0, 0.0]],
     "health": "ok", "devices_up": 17, "devices": 17,
     "events": [{"id": "fleet:evening:3", "type": "import_limit", "kw": 2000.0,
                 "start": "...", "end": "...", "source": "mqtt", "active": true}]}

- ``import_kw``: the head import measured in the last interval (kW; ``null`` when unknown);
  ``limit_kw`` the import limit in force now (``null``: none).
- ``min_kw`` / ``max_kw``: over the next ``window_s`` seconds (an hour, or the plan's span if
  shorter), the lowest import limit the feeder can hold at every step, and the peak head import
  it plans without the coordinator's events (ids starting ``fleet:``): what it draws if left
  alone. Both ``null`` when the interval's flexibility could not be computed (the fallback rule
  dispatched, the solver failed or ran out of time): the coordinator then counts the feeder at
  its measured import and asks nothing of it.
- ``curve``: the extra cost (the dispatch's own objective, in the price's currency, over the
  window) of holding an import limit of ``kw``, as ``[kw, cost]`` points ascending in ``kw``
  from ``min_kw`` to ``max_kw`` (cost 0 there); between points it is linear. It comes from
  parametric solves of the feeder's kept LP, so it is convex and non-increasing.
- ``health``: ``ok``, ``degraded`` (a device down or stale, or a limit relaxed), ``fallback``
  (this interval was not dispatched by the LP) or ``starting`` (no complete snapshot yet).
- ``events``: the DR events in force and coming (at most ``MAX_EVENTS``), as on ``dr/status``.

``parse_flex`` is the coordinator's reading: bounded before it is parsed, every field checked,
and a message that is malformed, stale, from the future, for another site or claiming more than
the feeder's rating refused with one line that says why (``FlexRejected.reason``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.dr.events import json_object, parse_time, short

__all__ = [
    "FLEET_EVENT_PREFIX",
    "FLEX_VERSION",
    "HEALTH",
    "MAX_CURVE_POINTS",
    "MAX_EVENTS",
    "MAX_FLEX_BYTES",
    "FlexEvent",
    "FlexRejected",
    "Flexibility",
    "parse_flex",
]

FLEX_VERSION = 1
MAX_FLEX_BYTES = 16_384
MAX_DEPTH = 4
MAX_CURVE_POINTS = 16
MAX_EVENTS = 10
MAX_KW = 1e6
FUTURE_TOLERANCE = timedelta(seconds=60)
"""A message stamped this far ahead of the coordinator's clock is refused (clock skew beyond)."""
COST_TOLERANCE = 1e-6
"""Relative slack on the curve's monotonicity (the solver's rounding)."""
FLEET_EVENT_PREFIX = "fleet:"
"""The coordinator's DR events: ``fleet:<target>:<revision>``. A feeder leaves them out of its
``max_kw`` so that what it reports does not chase what it was asked."""
HEALTH = ("ok", "degraded", "fallback", "starting")
_KEYS = {
    "v",
    "site",
    "at",
    "seq",
    "interval_s",
    "window_s",
    "import_kw",
    "limit_kw",
    "min_kw",
    "max_kw",
    "curve",
    "health",
    "devices_up",
    "devices",
    "events",
}


class FlexRejected(ValueError):
    """A flexibility message refused; ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class FlexEvent:
    id: str
    type: str
    kw: float
    start: datetime
    end: datetime
    source: str
    active: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "kw": self.kw,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "source": self.source,
            "active": self.active,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Flexibility:
    site: str
    at: datetime
    seq: int
    interval_s: float
    window_s: float
    import_kw: float | None
    limit_kw: float | None
    min_kw: float | None
    max_kw: float | None
    curve: tuple[tuple[float, float], ...] = ()
    health: str = "ok"
    devices_up: int = 0
    devices: int = 0
    events: tuple[FlexEvent, ...] = ()

    @property
    def flexible(self) -> bool:
        """Whether this interval's range and curve were computed."""
        return self.min_kw is not None and self.max_kw is not None

    def cost_at(self, kw: float) -> float:
        """The curve's cost of holding ``kw`` (linear between points; 0 at or above
        ``max_kw``; the first point's cost below ``min_kw``, which cannot be held)."""
        if not self.curve:
            return 0.0
        if kw <= self.curve[0][0]:
            return self.curve[0][1]
        for (k0, c0), (k1, c1) in itertools.pairwise(self.curve):
            if kw <= k1:
                return c0 + (c1 - c0) * (kw - k0) / (k1 - k0) if k1 > k0 else c1
        return self.curve[-1][1]

    def to_json(self) -> dict[str, Any]:
        return {
            "v": FLEX_VERSION,
            "site": self.site,
            "at": self.at.isoformat(),
            "seq": self.seq,
            "interval_s": self.interval_s,
            "window_s": self.window_s,
            "import_kw": _r(self.import_kw),
            "limit_kw": _r(self.limit_kw),
            "min_kw": _r(self.min_kw),
            "max_kw": _r(self.max_kw),
            "curve": [[_r(k), _r(c, 4)] for k, c in self.curve],
            "health": self.health,
            "devices_up": self.devices_up,
            "devices": self.devices,
            "events": [e.to_json() for e in self.events[:MAX_EVENTS]],
        }


def parse_flex(
    payload: bytes | str,
    *,
    now: datetime,
    max_age_s: float,
    site: str | None = None,
    rating_kw: float | None = None,
) -> Flexibility:
    """One ``<root>/flex`` message read at ``now``; ``FlexRejected`` says why it is refused.

    ``site``: the site the topic says it is from (the payload must agree); ``max_age_s``: older
    messages are stale (a retained message from a feeder long gone); ``rating_kw``: the
    feeder's rating as the coordinator's config states it, which no figure may exceed."""
    data = json_object(payload, max_bytes=MAX_FLEX_BYTES, max_depth=MAX_DEPTH, reject=FlexRejected)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise FlexRejected(f"unknown key(s): {short(', '.join(unknown), 80)}")
    if data.get("v") != FLEX_VERSION:
        raise FlexRejected(f"'v' must be {FLEX_VERSION}, got {short(repr(data.get('v')), 20)}")
    name = data.get("site")
    if not isinstance(name, str) or not name or len(name) > 128:
        raise FlexRejected("'site' must be a non-empty string of at most 128 characters")
    if site is not None and name != site:
        raise FlexRejected(f"'site' is {short(repr(name), 40)} on the topic of {site!r}")
    at = _time(data.get("at"), "at")
    if at - now > FUTURE_TOLERANCE:
        raise FlexRejected(f"from the future: 'at' is {(at - now).total_seconds():.0f} s ahead")
    age = (now - at).total_seconds()
    if age > max_age_s:
        raise FlexRejected(f"stale: made {age:.0f} s ago (more than {max_age_s:g} s)")
    bound = MAX_KW if rating_kw is None else rating_kw
    import_kw = _kw(data, "import_kw", bound)
    limit_kw = _kw(data, "limit_kw", MAX_KW)
    min_kw = _kw(data, "min_kw", bound)
    max_kw = _kw(data, "max_kw", bound)
    if (min_kw is None) != (max_kw is None):
        raise FlexRejected("'min_kw' and 'max_kw' are both numbers or both null")
    if min_kw is not None and max_kw is not None and min_kw > max_kw + 1e-6:
        raise FlexRejected(f"'min_kw' {min_kw:g} is above 'max_kw' {max_kw:g}")
    curve = _curve(data.get("curve"), min_kw, max_kw)
    health = data.get("health")
    if health not in HEALTH:
        raise FlexRejected(f"'health' must be one of {', '.join(HEALTH)}")
    return Flexibility(
        site=name,
        at=at,
        seq=_count(data, "seq"),
        interval_s=_positive(data, "interval_s"),
        window_s=_positive(data, "window_s"),
        import_kw=import_kw,
        limit_kw=limit_kw,
        min_kw=min_kw,
        max_kw=max_kw,
        curve=curve,
        health=str(health),
        devices_up=_count(data, "devices_up"),
        devices=_count(data, "devices"),
        events=_events(data.get("events")),
    )


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _time(value: object, key: str) -> datetime:
    try:
        return parse_time(value, key)
    except ValueError as err:
        raise FlexRejected(str(err)) from None


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FlexRejected(f"'{key}' must be a number, got {type(value).__name__}")
    try:
        out = float(value)
    except OverflowError:
        raise FlexRejected(f"'{key}' is out of range") from None
    if not math.isfinite(out):
        raise FlexRejected(f"'{key}' must be finite")
    return out


def _kw(data: Mapping[str, Any], key: str, bound: float) -> float | None:
    if data.get(key) is None:
        return None
    value = _number(data[key], key)
    if abs(value) > bound:
        raise FlexRejected(f"'{key}' {value:g} kW is beyond the feeder's rating of {bound:g} kW")
    return value


def _positive(data: Mapping[str, Any], key: str) -> float:
    value = _number(data.get(key), key)
    if not 0 < value <= 86_400:
        raise FlexRejected(f"'{key}' must be in (0, 86400] s, got {value:g}")
    return value


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise FlexRejected(f"'{key}' must be a non-negative integer")
    return value


def _curve(
    raw: object, min_kw: float | None, max_kw: float | None
) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list):
        raise FlexRejected("'curve' must be a list of [kw, cost] points")
    if min_kw is None:
        if raw:
            raise FlexRejected("'curve' must be empty when 'min_kw' is null")
        return ()
    assert max_kw is not None
    if not 1 <= len(raw) <= MAX_CURVE_POINTS:
        raise FlexRejected(f"'curve' must have 1 to {MAX_CURVE_POINTS} points")
    points: list[tuple[float, float]] = []
    for n, point in enumerate(raw):
        if not isinstance(point, list) or len(point) != 2:
            raise FlexRejected(f"curve point {n} must be [kw, cost]")
        kw, cost = _number(point[0], f"curve[{n}].kw"), _number(point[1], f"curve[{n}].cost")
        if cost < 0 or cost > 1e12:
            raise FlexRejected(f"curve point {n} has a cost of {cost:g} (0 to 1e12)")
        points.append((kw, cost))
    _check_curve(points, min_kw, max_kw)
    return tuple(points)


def _check_curve(points: Sequence[tuple[float, float]], min_kw: float, max_kw: float) -> None:
    tol_kw = 1e-3 + 1e-6 * abs(max_kw)
    if abs(points[0][0] - min_kw) > tol_kw or abs(points[-1][0] - max_kw) > tol_kw:
        raise FlexRejected("'curve' must run from 'min_kw' to 'max_kw'")
    scale = max(1.0, *(c for _, c in points))
    for n, ((k0, c0), (k1, c1)) in enumerate(itertools.pairwise(points), start=1):
        if k1 <= k0:
            raise FlexRejected(f"curve point {n} is not above the one before it in kW")
        if c1 > c0 + COST_TOLERANCE * scale:
            raise FlexRejected(f"curve point {n} costs more than the one before it")


def _events(raw: object) -> tuple[FlexEvent, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_EVENTS:
        raise FlexRejected(f"'events' must be a list of at most {MAX_EVENTS}")
    out = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            raise FlexRejected(f"event {n} must be an object")
        event_id, kind, source = item.get("id"), item.get("type"), item.get("source")
        if not all(isinstance(v, str) and 0 < len(v) <= 128 for v in (event_id, kind, source)):
            raise FlexRejected(f"event {n} needs string 'id', 'type' and 'source'")
        active = item.get("active")
        if not isinstance(active, bool):
            raise FlexRejected(f"event {n}: 'active' must be true or false")
        out.append(
            FlexEvent(
                id=str(event_id),
                type=str(kind),
                kw=_number(item.get("kw"), f"events[{n}].kw"),
                start=_time(item.get("start"), f"events[{n}].start"),
                end=_time(item.get("end"), f"events[{n}].end"),
                source=str(source),
                active=active,
            )
        )
    return tuple(out)
