"""System targets: what the operator asks of a group of feeders, and the decision on each ask.

A target payload (on ``<topic_root>/target`` or from ``feederd coordinate target``)::

    {"id": "evening", "group": "north", "type": "reduce_by" | "import_limit", "kw": 900,
     "start": RFC3339, "end": RFC3339, "priority": 0}
    {"id": "evening", "cancel": true}

``parse_target`` returns a ``Target`` or a ``TargetCancel``, or raises ``TargetRejected`` with
one line saying what is wrong. Everything a sender controls is bounded as for a DR event
(``controller.dr.events``): the payload's size and nesting, the id (``[A-Za-z0-9_.:-]{1,64}``:
it becomes part of the feeders' event ids), ``kw`` (finite, at most the group's rating sum),
time (``start`` before ``end``, ``end`` in the future and within ``HORIZON`` of now).
``overlap`` finds a live target that would put one feeder under two targets at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from controller.dr.events import EventRejected, json_object, parse_time, short
from coordinator.settings import MAX_PRIORITY, FleetSettings

__all__ = [
    "HORIZON",
    "MAX_TARGET_BYTES",
    "Target",
    "TargetCancel",
    "TargetDecision",
    "TargetRejected",
    "TargetResult",
    "TargetType",
    "overlap",
    "parse_target",
]

MAX_TARGET_BYTES = 4096
MAX_DEPTH = 4
HORIZON = timedelta(days=7)
"""A target ends within this of its arrival, and lasts at most as long."""
TARGET_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_KEYS = {"id", "group", "type", "kw", "start", "end", "priority"}


class TargetType(StrEnum):
    IMPORT_LIMIT = "import_limit"  # the group's import <= kw
    REDUCE_BY = "reduce_by"  # the group's import <= its max_kw sum (frozen) - kw


class TargetResult(StrEnum):
    ACCEPTED = "accepted"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class TargetRejected(ValueError):
    """A target message refused; ``reason`` is one line, ``target_id`` the id if it had one."""

    def __init__(self, reason: str, *, target_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.target_id = target_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One accepted system target; ``priority`` ``None``: the fleet's own (``[fleet] priority``)."""

    id: str
    group: str
    type: TargetType
    kw: float
    start: datetime
    end: datetime
    priority: int | None = None

    def live_at(self, now: datetime) -> bool:
        return now < self.end

    def active_at(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "group": self.group,
            "type": self.type.value,
            "kw": self.kw,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
        }
        if self.priority is not None:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetCancel:
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetDecision:
    """How one target message ended: ``result`` accepted, cancelled or rejected (``reason``
    says why), from ``source`` (``mqtt``, ``cli``), decided ``at``."""

    id: str | None
    result: TargetResult
    reason: str | None
    source: str
    at: datetime

    @property
    def accepted(self) -> bool:
        return self.result is not TargetResult.REJECTED

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "result": self.result.value,
            "reason": self.reason,
            "source": self.source,
            "at": self.at.isoformat(),
        }


def parse_target(
    payload: bytes | str | dict[str, Any], *, now: datetime, settings: FleetSettings
) -> Target | TargetCancel:
    """One target message read at ``now``; see the module docstring."""
    if isinstance(payload, dict):
        data = payload
    else:
        data = json_object(
            payload, max_bytes=MAX_TARGET_BYTES, max_depth=MAX_DEPTH, reject=TargetRejected
        )
    raw_id = data.get("id")
    if not isinstance(raw_id, str) or not TARGET_ID.fullmatch(raw_id):
        raise TargetRejected("'id' must match [A-Za-z0-9_.:-]{1,64}")
    try:
        if "cancel" in data:
            if data["cancel"] is not True or set(data) != {"id", "cancel"}:
                raise TargetRejected('a cancel is exactly {"id": ..., "cancel": true}')
            return TargetCancel(id=raw_id)
        return _target(data, raw_id, now, settings)
    except TargetRejected as err:
        raise TargetRejected(err.reason, target_id=raw_id) from None


def _target(data: dict[str, Any], target_id: str, now: datetime, settings: FleetSettings) -> Target:
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise TargetRejected(f"unknown key {short(repr(unknown[0]), 40)}")
    missing = [k for k in ("group", "type", "kw", "start", "end") if k not in data]
    if missing:
        raise TargetRejected(f"missing key {missing[0]!r}")
    group = data["group"]
    sites = settings.group_sites(group) if isinstance(group, str) else None
    if sites is None:
        raise TargetRejected(f"unknown group {short(repr(group), 70)}")
    try:
        kind = TargetType(data["type"])
    except (ValueError, TypeError):
        allowed = ", ".join(t.value for t in TargetType)
        raise TargetRejected(
            f"'type' must be one of {allowed}, got {short(repr(data['type']), 40)}"
        ) from None
    kw = data["kw"]
    if isinstance(kw, bool) or not isinstance(kw, int | float) or not _finite(kw):
        raise TargetRejected(f"'kw' must be a finite number, got {short(repr(kw), 40)}")
    rating = settings.rating_sum_kw(sites)
    if kw > rating:
        raise TargetRejected(
            f"'kw' {kw:g} is more than group {group!r} is rated for ({rating:g} kW)"
        )
    if kind is TargetType.REDUCE_BY and kw <= 0:
        raise TargetRejected(f"'kw' of a reduce_by target must be positive, got {kw!r}")
    if kw < 0:
        raise TargetRejected(f"'kw' of an import_limit target must not be negative, got {kw!r}")
    priority = data.get("priority")
    if priority is not None and (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not 0 <= priority <= MAX_PRIORITY
    ):
        raise TargetRejected(
            f"'priority' must be an integer in 0..{MAX_PRIORITY}, got {short(repr(priority), 40)}"
        )
    try:
        start = parse_time(data["start"], "start")
        end = parse_time(data["end"], "end")
    except EventRejected as err:
        raise TargetRejected(err.reason) from None
    if not start < end:
        raise TargetRejected(
            f"'start' ({start.isoformat()}) must be before 'end' ({end.isoformat()})"
        )
    if end <= now:
        raise TargetRejected(f"the target ended already ('end' {end.isoformat()})")
    if end - now > HORIZON or end - start > HORIZON:
        days = HORIZON / timedelta(days=1)
        raise TargetRejected(
            f"the target must end within {days:g} days of now and last at most as long"
            f" ('end' {end.isoformat()})"
        )
    return Target(
        id=target_id,
        group=group,
        type=kind,
        kw=float(kw),
        start=start,
        end=end,
        priority=priority,
    )


def overlap(target: Target, live: Iterable[Target], settings: FleetSettings) -> str | None:
    """Why ``target`` cannot be taken next to the ``live`` targets (one feeder under two
    targets at the same time), or ``None``."""
    mine = set(settings.group_sites(target.group) or ())
    for other in live:
        if other.id == target.id:
            continue
        if not (target.start < other.end and other.start < target.end):
            continue
        shared = sorted(mine & set(settings.group_sites(other.group) or ()))
        if shared:
            names = ", ".join(shared[:3]) + (
                f" and {len(shared) - 3} more" if len(shared) > 3 else ""
            )
            return (
                f"feeder(s) {names} are under target {other.id!r} from"
                f" {other.start.isoformat()} to {other.end.isoformat()}"
            )
    return None


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
