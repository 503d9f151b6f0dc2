"""DR events (DESIGN.md §5): the record, and the pure parser that validates a payload.

A payload is a JSON object: ``id``, ``type`` (``import_limit``, ``export_limit``,
``reduce_by``), ``kw``, ``start`` and ``end`` in RFC 3339 with a time zone, optional integer
``priority`` (default 0); ``{"id": ..., "cancel": true}`` cancels. ``parse_payload`` returns a
``DrEvent`` or a ``Cancel``, or raises ``EventRejected`` whose ``reason`` says what is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["Cancel", "DrEvent", "EventRejected", "EventType", "parse_payload", "parse_time"]

MAX_PAYLOAD_BYTES = 4096
_ID_MAX = 128
_KEYS = {"id", "type", "kw", "start", "end", "priority"}


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
    except ValueError:
        raise EventRejected(f"'{key}' is not an RFC 3339 timestamp: {value!r}") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise EventRejected(f"'{key}' needs a time zone (Z or +hh:mm): {value!r}")
    return at


def _event_id(data: dict[str, Any]) -> str:
    raw = data.get("id")
    if not isinstance(raw, str) or not raw.strip():
        raise EventRejected("'id' must be a non-empty string")
    if len(raw) > _ID_MAX or any(not c.isprintable() for c in raw):
        raise EventRejected(f"'id' must be at most {_ID_MAX} printable characters")
    return raw


def parse_payload(payload: bytes | str | dict[str, Any], *, now: datetime) -> DrEvent | Cancel:
    """Validate one ``dr/event`` payload received at ``now``."""
    if isinstance(payload, dict):
        data: object = payload
    else:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise EventRejected(f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as err:
            raise EventRejected(f"not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise EventRejected(f"payload must be a JSON object, got {type(data).__name__}")
    event_id = _event_id(data)
    try:
        if "cancel" in data:
            if data["cancel"] is not True or set(data) != {"id", "cancel"}:
                raise EventRejected('a cancel is exactly {"id": ..., "cancel": true}')
            return Cancel(id=event_id)
        return _event(data, event_id, now)
    except EventRejected as err:
        raise EventRejected(err.reason, event_id=event_id) from None


def _event(data: dict[str, Any], event_id: str, now: datetime) -> DrEvent:
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise EventRejected(f"unknown key {unknown[0]!r}")
    missing = [k for k in ("type", "kw", "start", "end") if k not in data]
    if missing:
        raise EventRejected(f"missing key {missing[0]!r}")
    try:
        kind = EventType(data["type"])
    except ValueError:
        allowed = ", ".join(t.value for t in EventType)
        raise EventRejected(f"'type' must be one of {allowed}, got {data['type']!r}") from None
    kw = data["kw"]
    if isinstance(kw, bool) or not isinstance(kw, int | float) or not math.isfinite(kw):
        raise EventRejected(f"'kw' must be a finite number, got {kw!r}")
    if kind is EventType.REDUCE_BY and kw <= 0:
        raise EventRejected(f"'kw' of a reduce_by event must be positive, got {kw!r}")
    if kw < 0:
        raise EventRejected(f"'kw' of an {kind.value} event must not be negative, got {kw!r}")
    priority = data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise EventRejected(f"'priority' must be an integer, got {priority!r}")
    start = parse_time(data["start"], "start")
    end = parse_time(data["end"], "end")
    if not start < end:
        raise EventRejected(f"'start' ({data['start']}) must be before 'end' ({data['end']})")
    if end <= now:
        raise EventRejected(f"the event ended already ('end' {data['end']})")
    return DrEvent(
        id=event_id, type=kind, kw=float(kw), start=start, end=end, priority=int(priority)
    )
