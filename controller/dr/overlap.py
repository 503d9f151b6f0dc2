"""Overlap resolution (pure): which accepted events set the limits at a given time.

Events act on two axes: ``import_limit`` and ``reduce_by`` set the import limit,
``export_limit`` the export limit. Among the events of one axis active at ``now`` the winner
has the highest ``priority``, then the latest acceptance (``seq``). A ``reduce_by`` event
limits import to the import measured when it began minus its ``kw``; until a baseline is
measured it does not act. With no active event an axis keeps the configured default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from controller.dr.events import DrEvent, EventType
from controller.records import ActiveLimits

__all__ = ["StoredEvent", "resolve"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """An accepted event as the store keeps it."""

    event: DrEvent
    seq: int
    received_at: datetime
    source: str
    cancelled_at: datetime | None = None
    baseline_import_kw: float | None = None
    rev: int = 0
    """The journal's revision of its last write."""

    @property
    def live(self) -> bool:
        return self.cancelled_at is None


def _winner(candidates: Iterable[StoredEvent]) -> StoredEvent | None:
    return max(candidates, key=lambda s: (s.event.priority, s.seq), default=None)


def resolve(
    events: Iterable[StoredEvent],
    now: datetime,
    *,
    default_import_kw: float | None,
    default_export_kw: float | None,
) -> ActiveLimits:
    active = [s for s in events if s.live and s.event.active_at(now)]
    imports = [
        s
        for s in active
        if s.event.type is EventType.IMPORT_LIMIT
        or (s.event.type is EventType.REDUCE_BY and s.baseline_import_kw is not None)
    ]
    exports = [s for s in active if s.event.type is EventType.EXPORT_LIMIT]
    imp, exp = _winner(imports), _winner(exports)
    import_kw = default_import_kw
    if imp is not None:
        if imp.event.type is EventType.REDUCE_BY:
            assert imp.baseline_import_kw is not None
            import_kw = imp.baseline_import_kw - imp.event.kw
        else:
            import_kw = imp.event.kw
    return ActiveLimits(
        import_kw=import_kw,
        export_kw=default_export_kw if exp is None else exp.event.kw,
        import_event=None if imp is None else imp.event.id,
        export_event=None if exp is None else exp.event.id,
    )
