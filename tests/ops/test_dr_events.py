"""DR events, pure: validation of payloads and overlap resolution (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.dr import (
    Cancel,
    DrEvent,
    EventRejected,
    EventType,
    StoredEvent,
    parse_payload,
    resolve,
)

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def payload(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "e1",
        "type": "import_limit",
        "kw": 1500,
        "start": "2026-07-01T11:00:00Z",
        "end": "2026-07-01T13:00:00+00:00",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def test_a_valid_event_parses_with_its_times_and_default_priority() -> None:
    ev = parse_payload(payload(), now=NOW)
    assert isinstance(ev, DrEvent)
    assert ev.type is EventType.IMPORT_LIMIT
    assert ev.kw == 1500.0
    assert ev.priority == 0
    assert ev.active_at(NOW)
    assert parse_payload(b'{"id": "e1", "cancel": true}', now=NOW) == Cancel(id="e1")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (payload(id=""), "'id' must be a non-empty string"),
        (payload(type="shed_all"), "'type' must be one of"),
        (payload(kw="1500"), "'kw' must be a finite number"),
        (payload(kw=True), "'kw' must be a finite number"),
        (payload(kw=-10), "must not be negative"),
        (payload(type="reduce_by", kw=0), "must be positive"),
        (payload(start="2026-07-01T14:00:00Z"), "must be before 'end'"),
        (payload(start="2026-07-01T11:00:00"), "needs a time zone"),
        (payload(end="tomorrow"), "not an RFC 3339 timestamp"),
        (payload(end="2026-07-01T11:30:00Z", start="2026-07-01T11:00:00Z"), "ended already"),
        (payload(priority=1.5), "'priority' must be an integer"),
        (payload(colour="red"), "unknown key 'colour'"),
        (payload(start=None), "missing key 'start'"),
        (b'{"id": "e1", "cancel": "yes"}', "a cancel is exactly"),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(
    data: bytes | dict[str, object], reason: str
) -> None:
    with pytest.raises(EventRejected) as info:
        parse_payload(data, now=NOW)
    assert reason in info.value.reason


def stored(
    seq: int, kind: str, kw: float, *, prio: int = 0, hours: float = 1.0, **extra: object
) -> StoredEvent:
    ev = DrEvent(
        id=f"e{seq}",
        type=EventType(kind),
        kw=kw,
        start=NOW - timedelta(hours=hours),
        end=NOW + timedelta(hours=hours),
        priority=prio,
    )
    return StoredEvent(event=ev, seq=seq, received_at=NOW, source="test", **extra)  # type: ignore[arg-type]


def test_overlaps_resolve_by_priority_then_latest() -> None:
    events = [
        stored(1, "import_limit", 1000, prio=5),
        stored(2, "import_limit", 1200, prio=5),  # same priority, later: wins
        stored(3, "import_limit", 800, prio=1),  # lower priority: loses
        stored(4, "export_limit", 300),
    ]
    active = resolve(events, NOW, default_import_kw=2500, default_export_kw=None)
    assert (active.import_kw, active.import_event) == (1200, "e2")
    assert (active.export_kw, active.export_event) == (300, "e4")


def test_no_active_event_keeps_the_defaults_and_cancelled_events_do_not_act() -> None:
    events = [
        stored(1, "import_limit", 1000, cancelled_at=NOW),
        stored(2, "import_limit", 900, hours=-1),
    ]
    active = resolve(events, NOW, default_import_kw=2500, default_export_kw=400)
    assert (active.import_kw, active.export_kw, active.event_ids) == (2500, 400, ())


def test_reduce_by_acts_from_its_measured_baseline() -> None:
    waiting = resolve(
        [stored(1, "reduce_by", 300)], NOW, default_import_kw=None, default_export_kw=None
    )
    assert waiting.import_kw is None  # no baseline measured yet
    acting = resolve(
        [stored(1, "reduce_by", 300, baseline_import_kw=2100.0)],
        NOW,
        default_import_kw=None,
        default_export_kw=None,
    )
    assert acting.import_kw == pytest.approx(1800.0)
