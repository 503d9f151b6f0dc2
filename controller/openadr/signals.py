"""From an OpenADR 2.0b event (as openleadr parses it) to feederd DR events: pure, no I/O.

One VTN event becomes one feederd event per run of equal intervals, with the id
``oadr:<event id>:<modification number>:<n>`` (so a modification never reuses the id of an event
it replaces), the source ``openadr`` and the VEN's configured priority. The signals taken:

- ``SIMPLE`` (type ``level``): level 0 is normal operation (no event in that interval); levels
  1-3 ask what ``[openadr.simple]`` says (an import limit, or a reduction).
- ``LOAD_DISPATCH``: ``setpoint`` is an import limit at the feeder head; ``delta`` below zero is
  a reduction by its size, zero is no event; a positive delta (a load increase) is refused.
  Values are in kW unless the signal's item base says otherwise (``powerReal`` with an SI scale:
  ``none`` is W, ``k`` kW, ``M`` MW).

Anything else is refused with an OpenADR status code and a one-line reason (``Refused``), which
the VEN sends back to the VTN and logs: an unknown signal, a level with no meaning configured, an
interval of zero duration, an event that is over, one from a market context this VEN does not
serve, more than one signal, more intervals than ``MAX_INTERVALS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.config.openadr import SimpleLevels

__all__ = [
    "MAX_EVENT_ID",
    "MAX_INTERVALS",
    "EventKey",
    "Mapped",
    "Refused",
    "Window",
    "event_key",
    "feederd_id",
    "map_event",
    "parse_feederd_id",
]

MAX_EVENT_ID = 64
MAX_INTERVALS = 96
PREFIX = "oadr:"

# OpenADR 2.0b status codes (openleadr.enums.STATUS_CODES)
INVALID_ID = 452
NOT_RECOGNIZED = 453
INVALID_DATA = 454
NOT_ALLOWED = 451
SIGNAL_NOT_SUPPORTED = 460
DEPLOYMENT_ERROR = 469

_SCALE_TO_KW = {"none": 1e-3, "k": 1.0, "M": 1e3, "G": 1e6}


class Refused(ValueError):
    """An event this VEN does not take: ``code`` goes back to the VTN, ``reason`` too."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EventKey:
    event_id: str
    modification: int


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Mapped:
    """What a VTN event asks of the feeder."""

    key: EventKey
    status: str
    """The VTN's event status: far, near, active, completed, cancelled."""
    payloads: tuple[dict[str, Any], ...]
    """The feederd DR event payloads (``controller.dr.events`` form), soonest first; empty
    for a cancellation or an event whose every interval is level 0."""
    window: Window | None
    """From the first interval's start to the last one's end."""
    market_context: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"


def feederd_id(key: EventKey, n: int) -> str:
    return f"{PREFIX}{key.event_id}:{key.modification}:{n}"


def parse_feederd_id(event_id: str) -> EventKey | None:
    """The VTN event a feederd id came from (``None``: not one of the VEN's)."""
    if not event_id.startswith(PREFIX):
        return None
    body, _, n = event_id[len(PREFIX) :].rpartition(":")
    eid, _, mod = body.rpartition(":")
    if not eid or not mod.isdigit() or not n.isdigit():
        return None
    return EventKey(eid, int(mod))


def _short(value: object, limit: int = 60) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_key(event: Mapping[str, Any]) -> EventKey:
    """The event's id and modification number, checked (``Refused`` when unusable)."""
    descriptor = event.get("event_descriptor")
    if not isinstance(descriptor, Mapping):
        raise Refused(INVALID_DATA, "the event has no eventDescriptor")
    eid = descriptor.get("event_id")
    if not isinstance(eid, str) or not eid or len(eid) > MAX_EVENT_ID:
        raise Refused(INVALID_ID, f"eventID must be 1 to {MAX_EVENT_ID} characters")
    if any(not c.isprintable() or c.isspace() for c in eid):
        raise Refused(INVALID_ID, "eventID must be printable, without spaces")
    mod = descriptor.get("modification_number", 0)
    if isinstance(mod, bool) or not isinstance(mod, int) or not 0 <= mod < 10**9:
        raise Refused(INVALID_DATA, f"modificationNumber {_short(mod)} is not a small integer")
    return EventKey(eid, mod)


def map_event(
    event: Mapping[str, Any],
    *,
    now: datetime,
    simple: SimpleLevels,
    priority: int,
    market_contexts: Sequence[str] = (),
) -> Mapped:
    """The feederd events ``event`` asks for at ``now``; ``Refused`` says why it cannot be
    taken."""
    key = event_key(event)
    descriptor = event["event_descriptor"]
    status = str(descriptor.get("event_status") or "far")
    context = descriptor.get("market_context")
    context = context if isinstance(context, str) else None
    if market_contexts and context not in market_contexts:
        raise Refused(
            NOT_RECOGNIZED,
            f"market context {_short(context)!r} is not one this VEN serves "
            f"({', '.join(market_contexts)})",
        )
    if status == "cancelled":
        return Mapped(key=key, status=status, payloads=(), window=None, market_context=context)
    signals = event.get("event_signals")
    if isinstance(signals, Mapping):  # openleadr nests them once more in some messages
        signals = signals.get("event_signals")
    if not isinstance(signals, list) or not signals:
        raise Refused(INVALID_DATA, "the event has no signal")
    names = [s.get("signal_name") if isinstance(s, Mapping) else None for s in signals]
    for name in names:
        if name not in ("SIMPLE", "simple", "LOAD_DISPATCH"):
            raise Refused(
                SIGNAL_NOT_SUPPORTED,
                f"signal {_short(name, 40)!r} is not supported (SIMPLE, LOAD_DISPATCH)",
            )
    if len(signals) > 1:
        raise Refused(
            SIGNAL_NOT_SUPPORTED,
            f"the event has {len(signals)} signals; this VEN takes one SIMPLE or LOAD_DISPATCH "
            "signal per event",
        )
    signal = signals[0]
    intervals = _intervals(signal, event)
    asks = [_ask(signal, payload, simple, i) for i, (_w, payload) in enumerate(intervals)]
    window = Window(intervals[0][0].start, intervals[-1][0].end)
    if window.end <= now and status != "completed":
        raise Refused(
            INVALID_DATA, f"the event is over already (it ended {window.end.isoformat()})"
        )
    payloads: list[dict[str, Any]] = []
    run: tuple[Window, tuple[str, float]] | None = None
    for (w, _p), ask in zip(intervals, asks, strict=True):
        if run is not None and ask is not None and run[1] == ask and run[0].end == w.start:
            run = (Window(run[0].start, w.end), ask)
            continue
        if run is not None:
            payloads.append(_payload(key, len(payloads), run, priority))
        run = None if ask is None else (w, ask)
    if run is not None:
        payloads.append(_payload(key, len(payloads), run, priority))
    # an interval already over is not asked again (a modification during the event)
    kept = [p for p in payloads if datetime.fromisoformat(p["end"]) > now]
    return Mapped(
        key=key, status=status, payloads=tuple(kept), window=window, market_context=context
    )


def _payload(
    key: EventKey, n: int, run: tuple[Window, tuple[str, float]], priority: int
) -> dict[str, Any]:
    window, (kind, kw) = run
    return {
        "id": feederd_id(key, n),
        "type": kind,
        "kw": kw,
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "priority": priority,
    }


def _intervals(signal: Mapping[str, Any], event: Mapping[str, Any]) -> list[tuple[Window, Any]]:
    raw = signal.get("intervals")
    if not isinstance(raw, list) or not raw:
        raise Refused(INVALID_DATA, "the signal has no intervals")
    if len(raw) > MAX_INTERVALS:
        raise Refused(
            INVALID_DATA, f"the signal has {len(raw)} intervals, more than {MAX_INTERVALS}"
        )
    period = event.get("active_period")
    cursor = period.get("dtstart") if isinstance(period, Mapping) else None
    out: list[tuple[Window, Any]] = []
    for i, interval in enumerate(raw, start=1):
        if not isinstance(interval, Mapping):
            raise Refused(INVALID_DATA, f"interval {i} is not an interval")
        start = interval.get("dtstart", cursor)
        duration = interval.get("duration")
        if not isinstance(start, datetime) or start.tzinfo is None:
            raise Refused(INVALID_DATA, f"interval {i} has no start time with a time zone")
        if not isinstance(duration, timedelta):
            raise Refused(INVALID_DATA, f"interval {i} has no duration")
        if duration <= timedelta(0):
            raise Refused(
                INVALID_DATA,
                f"interval {i} has a duration of {duration.total_seconds():g} s; this VEN "
                "takes intervals with an end",
            )
        if out and start < out[-1][0].end:
            raise Refused(INVALID_DATA, f"interval {i} begins before interval {i - 1} ends")
        out.append((Window(start, start + duration), interval.get("signal_payload")))
        cursor = start + duration
    return out


def _number(value: object, i: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Refused(INVALID_DATA, f"interval {i + 1}: payload {_short(value)!r} is not a number")
    return float(value)


def _ask(
    signal: Mapping[str, Any], payload: object, simple: SimpleLevels, i: int
) -> tuple[str, float] | None:
    """What interval ``i`` asks: (feederd type, kW), or ``None`` for no event."""
    name = signal.get("signal_name")
    kind = signal.get("signal_type")
    value = _number(payload, i)
    if name in ("SIMPLE", "simple"):
        if kind != "level":
            raise Refused(
                SIGNAL_NOT_SUPPORTED, f"a SIMPLE signal is of type 'level', not {_short(kind)!r}"
            )
        if value != int(value) or not 0 <= value <= 3:
            raise Refused(INVALID_DATA, f"interval {i + 1}: SIMPLE level {value:g} is not 0-3")
        if value == 0:
            return None
        level = simple.level(int(value))
        if level is None:
            raise Refused(
                SIGNAL_NOT_SUPPORTED,
                f"SIMPLE level {int(value)} has no meaning here ([openadr.simple] "
                f"level_{int(value)} is not set)",
            )
        return level.type, level.kw
    kw = value * _kw_per_unit(signal)
    if kind == "setpoint":
        return "import_limit", kw
    if kind == "delta":
        if kw > 0:
            raise Refused(
                SIGNAL_NOT_SUPPORTED,
                f"interval {i + 1}: a LOAD_DISPATCH delta of +{kw:g} kW asks for more load; "
                "this VEN takes reductions (negative deltas)",
            )
        return None if kw == 0 else ("reduce_by", -kw)
    raise Refused(
        SIGNAL_NOT_SUPPORTED,
        f"a LOAD_DISPATCH signal of type {_short(kind)!r} is not supported (setpoint, delta)",
    )


def _kw_per_unit(signal: Mapping[str, Any]) -> float:
    item = signal.get("measurement")
    if not isinstance(item, Mapping):
        return 1.0
    name = item.get("name")
    if name not in (None, "powerReal", "customUnit"):
        raise Refused(INVALID_DATA, f"a LOAD_DISPATCH in {_short(name)!r} is not real power")
    scale = item.get("scale") or "k"
    if scale not in _SCALE_TO_KW:
        raise Refused(INVALID_DATA, f"SI scale {_short(scale)!r} is not one of none, k, M, G")
    unit = item.get("unit")
    if unit not in (None, "W"):
        raise Refused(INVALID_DATA, f"a LOAD_DISPATCH in unit {_short(unit)!r}: this VEN takes W")
    return _SCALE_TO_KW[scale]
