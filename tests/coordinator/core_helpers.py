"""Feeders' messages for the coordinator core's tests, as feederd publishes them: real
``Flexibility`` JSON (``controller.flex``), ``dr/status`` documents in the shape of
``controller.dr.service.DrService.status`` and ``online`` flags; and a small fleet."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.clock import FakeClock
from controller.flex import FlexEvent, Flexibility
from coordinator.core import Coordinator, Outgoing
from coordinator.journal import FleetJournal
from coordinator.settings import FeederSpec, FleetSettings, TransformerSpec

START = datetime(2030, 6, 4, 12, tzinfo=UTC)


def settings(**overrides: Any) -> FleetSettings:
    """Three feeders of 1 MW; north-1 and north-2 share transformer T1 (1.5 MW)."""
    base: dict[str, Any] = {
        "name": "test",
        "topic_root": "feederd-fleet/test",
        "feeder_root": "feederd",
        "feeders": (
            FeederSpec("north-1", 1000.0, "T1"),
            FeederSpec("north-2", 1000.0, "T1"),
            FeederSpec("north-3", 1000.0),
        ),
        "transformers": (TransformerSpec("T1", 1500.0),),
        "groups": {"north": ("north-1", "north-2", "north-3"), "pair": ("north-1", "north-2")},
        "deadband_kw": 5.0,
    }
    base.update(overrides)
    return FleetSettings(**base)


def flex(
    site: str,
    at: datetime,
    *,
    min_kw: float | None = 400.0,
    max_kw: float | None = 600.0,
    slope: float = 1.0,
    import_kw: float | None = None,
    seq: int = 1,
    events: tuple[FlexEvent, ...] = (),
) -> bytes:
    """A feeder's flexibility: linear cost ``slope`` per kW below ``max_kw`` (three points)."""
    curve: tuple[tuple[float, float], ...] = ()
    if min_kw is not None and max_kw is not None:
        mid = (min_kw + max_kw) / 2
        curve = ((min_kw, slope * (max_kw - min_kw)), (mid, slope * (max_kw - mid)), (max_kw, 0.0))
    doc = Flexibility(
        site=site,
        at=at,
        seq=seq,
        interval_s=30.0,
        window_s=3600.0,
        import_kw=max_kw if import_kw is None else import_kw,
        limit_kw=None,
        min_kw=min_kw,
        max_kw=max_kw,
        curve=curve,
        health="ok",
        devices_up=3,
        devices=3,
        events=events,
    )
    return json.dumps(doc.to_json()).encode()


def active(event: dict[str, Any]) -> FlexEvent:
    """The feeder's view of one of the coordinator's events, in force."""
    return FlexEvent(
        id=event["id"],
        type="import_limit",
        kw=event["kw"],
        start=datetime.fromisoformat(event["start"]),
        end=datetime.fromisoformat(event["end"]),
        source="mqtt",
        active=True,
    )


def dr_status(
    site: str, at: datetime, decisions: list[dict[str, Any]], events: list[dict[str, Any]] = ()
) -> bytes:
    """A feeder's ``dr/status``: ``decisions`` as ``recent``, ``events`` as its events."""
    return json.dumps(
        {
            "site": site,
            "at": at.isoformat(),
            "last": decisions[-1] if decisions else None,
            "recent": decisions,
            "active": {},
            "events": list(events),
            "events_active": 0,
            "events_coming": 0,
            "events_stored": 0,
            "compliance": {"import_kw": None, "within_limit": True, "tolerance": 0.02},
        }
    ).encode()


def target(
    target_id: str = "evening",
    *,
    kw: float = 1500.0,
    group: str = "north",
    kind: str = "import_limit",
    start: datetime = START,
    minutes: float = 60.0,
) -> dict[str, Any]:
    return {
        "id": target_id,
        "group": group,
        "type": kind,
        "kw": kw,
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(),
    }


class Fleet:
    """A coordinator on a file journal with a fake clock, fed like the daemon feeds it."""

    def __init__(self, path: str, fleet: FleetSettings | None = None) -> None:
        self.settings = fleet or settings()
        self.clock = FakeClock(START)
        self.path = path
        self.journal = FleetJournal(path)
        self.core = Coordinator(self.settings, journal=self.journal, clock=self.clock)
        self.core.connected(True)

    def restart(self) -> None:
        self.journal.close()
        self.journal = FleetJournal(self.path)
        self.core = Coordinator(self.settings, journal=self.journal, clock=self.clock)
        self.core.connected(True)

    def flex(self, site: str, **kw: Any) -> None:
        self.core.flex_received(f"feederd/{site}/flex", flex(site, self.clock.now(), **kw))

    def flex_all(self, **kw: Any) -> None:
        for site in self.settings.sites:
            self.flex(site, **kw)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


def events(out: list[Outgoing]) -> list[tuple[str, dict[str, Any]]]:
    """The DR events and cancels among ``out``, as (site, payload)."""
    return [(o.topic.split("/")[1], o.payload) for o in out if o.topic.endswith("/dr/event")]


def limits(out: list[Outgoing]) -> dict[str, float]:
    """Each site's new import limit among ``out``."""
    return {site: p["kw"] for site, p in events(out) if "kw" in p}
