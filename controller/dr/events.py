"""DR events (DESIGN.md §5): the record, and the pure parser that validates a payload.

A payload is a JSON object: ``id``, ``type`` (``import_limit``, ``export_limit``,
``reduce_by``), ``kw``, ``start`` and ``end`` in RFC 3339 with a time zone, optional integer
``priority`` (default 0); ``{"id": ..., "cancel": true}`` cancels. ``parse_payload`` returns a
``DrEvent`` or a ``Cancel``, or raises ``EventRejected`` whose ``reason`` says what is wrong.

Nothing a sender controls is unbounded (``EventBounds``): the payload's size and nesting, the
id's length, ``priority`` (a small integer), ``kw`` (finite, at most ``max_kw``: a multiple of
the feeder's rating), and time (an event ends within ``horizon`` of its arrival and lasts at
most as long). Whatever the bytes, the parser returns or raises ``EventRejected``; it never
raises anything else.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Cancel",
    "DrEvent",
    "EventBounds",
    "EventRejected",
    "EventType",
    "parse_payload",
    "parse_time",
]

MAX_PAYLOAD_BYTES = 4096
MAX_DEPTH = 4
"""A valid payload is one flat object; a little nesting is tolerated (and then refused by the
key checks), deep nesting is refused before it is parsed."""
MAX_PRIORITY = 1000
_ID_MAX = 128
_KEYS = {"id", "type", "kw", "start", "end", "priority"}


@dataclass(frozen=True, slots=True, kw_only=True)
class EventBounds:
    """What a DR event may ask: at most ``max_kw``, within ``horizon`` of its arrival."""

    max_kw: float = 1e6
    horizon: timedelta = timedelta(days=7)


class EventType(StrEnum):
    IMPORT_LIMIT = "import_limit"  # head import <= kw
    EXPORT_LIMIT = "export_limit"  # head export <= kw
    REDUCE_BY = "reduce_by"  # head import <= (import measured when the event began) - kw


class EventRejected(ValueError):
    """A DR event that cannot be used; ``reason`` is the one-line reason published on status."""

    def __init__(self, reason: str, *, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


@dataclass(frozen=True, slots=True, kw_only=True)
class DrEvent:
    id: str
    type: EventType
    kw: float
    start: datetime
    end: datetime
    priority: int = 0

    def active_at(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type.value,
            "kw": self.kw,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "priority": self.priority,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    id: str


def parse_time(value: object, key: str) -> datetime:
    """An RFC 3339 timestamp with a time zone (``Z`` or an offset)."""
    if not isinstance(value, str):
        raise EventRejected(f"'{key}' must be an RFC 3339 string, got {type(value).__name__}")
    try:
        at = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise EventRejected(
            f"'{key}' is not an RFC 3339 timestamp: {short(repr(value), 60)}"
        ) from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise EventRejected(f"'{key}' needs a time zone (Z or +hh:mm): {short(repr(value), 60)}")
    return at


def message_id(data: dict[str, Any], reject: type[ValueError] = EventRejected) -> str:
    """The ``id`` of a command-channel message (a DR event, a price feed): a non-empty string
    of at most ``_ID_MAX`` printable characters, else ``reject(reason)``."""
    raw = data.get("id")
    if not isinstance(raw, str) or not raw.strip():
        raise reject("'id' must be a non-empty string")
    if len(raw) > _ID_MAX or any(not c.isprintable() for c in raw):
        raise reject(f"'id' must be at most {_ID_MAX} printable characters")
    return raw


def json_object(
    payload: bytes | str,
    *,
    max_bytes: int,
    max_depth: int,
    reject: type[ValueError] = EventRejected,
) -> dict[str, Any]:
    """A command-channel payload as a JSON object, bounded before it is parsed: at most
    ``max_bytes``, nesting at most ``max_depth``; else ``reject(reason)``, one line."""
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    if len(raw) > max_bytes:
        raise reject(f"payload larger than {max_bytes} bytes")
    if _depth(raw) > max_depth:
        raise reject(f"payload nested deeper than {max_depth} levels")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise reject(f"not valid JSON: {short(str(err))}") from None
    if not isinstance(data, dict):
        raise reject(f"payload must be a JSON object, got {type(data).__name__}")
    return data


def _depth(text: bytes) -> int:
    """How deeply arrays and objects nest in JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def parse_payload(
    payload: bytes | str | dict[str, Any],
    *,
    now: datetime,
    bounds: EventBounds | None = None,
) -> DrEvent | Cancel:
    """Validate one ``dr/event`` payload received at ``now``; see the module docstring."""
    bounds = bounds or EventBounds()
    if isinstance(payload, dict):
        data = payload
    else:
        data = json_object(payload, max_bytes=MAX_PAYLOAD_BYTES, max_depth=MAX_DEPTH)
    event_id = message_id(data)
    try:
        if "cancel" in data:
            if data["cancel"] is not True or set(data) != {"id", "cancel"}:
                raise EventRejected('a cancel is exactly {"id": ..., "cancel": true}')
            return Cancel(id=event_id)
        return _event(data, event_id, now, bounds)
    except EventRejected as err:
        raise EventRejected(err.reason, event_id=event_id) from None


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def short(text: str, limit: int = 120) -> str:
    """A sender's text as it may appear in a reason: bounded, on one line."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def _event(data: dict[str, Any], event_id: str, now: datetime, bounds: EventBounds) -> DrEvent:
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise EventRejected(f"unknown key {short(repr(unknown[0]), 40)}")
    missing = [k for k in ("type", "kw", "start", "end") if k not in data]
    if missing:
        raise EventRejected(f"missing key {missing[0]!r}")
    try:
        kind = EventType(data["type"])
    except (ValueError, TypeError):
        allowed = ", ".join(t.value for t in EventType)
        got = short(repr(data["type"]), 40)
        raise EventRejected(f"'type' must be one of {allowed}, got {got}") from None
    kw = data["kw"]
    if isinstance(kw, bool) or not isinstance(kw, int | float) or not _finite(kw):
        raise EventRejected(f"'kw' must be a finite number, got {short(repr(kw), 40)}")
    if kw > bounds.max_kw:
        raise EventRejected(
            f"'kw' {kw:g} is more than this feeder can move (at most {bounds.max_kw:g} kW)"
        )
    if kind is EventType.REDUCE_BY and kw <= 0:
        raise EventRejected(f"'kw' of a reduce_by event must be positive, got {kw!r}")
    if kw < 0:
        raise EventRejected(f"'kw' of an {kind.value} event must not be negative, got {kw!r}")
    priority = data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise EventRejected(f"'priority' must be an integer, got {short(repr(priority), 40)}")
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise EventRejected(
            f"'priority' must be within -{MAX_PRIORITY}..{MAX_PRIORITY}, got {short(str(priority), 40)}"
        )
    start = parse_time(data["start"], "start")
    end = parse_time(data["end"], "end")
    if not start < end:
        raise EventRejected(
            f"'start' ({start.isoformat()}) must be before 'end' ({end.isoformat()})"
        )
    if end <= now:
        raise EventRejected(f"the event ended already ('end' {end.isoformat()})")
    if end - now > bounds.horizon or end - start > bounds.horizon:
        days = bounds.horizon / timedelta(days=1)
        raise EventRejected(
            f"the event reaches beyond the horizon: it must end within {days:g} days of now"
            f" and last at most as long ('end' {end.isoformat()})"
        )
    return DrEvent(
        id=event_id, type=kind, kw=float(kw), start=start, end=end, priority=int(priority)
    )
