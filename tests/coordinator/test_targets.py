"""System targets: every message ends in a decision with one line of reason, whatever the bytes;
targets that would put a feeder under two at once are refused; the journal keeps the decision."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.journal import FleetJournal
from coordinator.targets import (
    Target,
    TargetCancel,
    TargetRejected,
    TargetResult,
    TargetType,
    parse_target,
)
from tests.coordinator.core_helpers import START, target
from tests.coordinator.core_helpers import settings as fleet_settings

FLEET = fleet_settings()


def test_a_target_is_parsed() -> None:
    parsed = parse_target(json.dumps(target(kw=900, kind="reduce_by")), now=START, settings=FLEET)
    assert parsed == Target(
        id="evening",
        group="north",
        type=TargetType.REDUCE_BY,
        kw=900.0,
        start=START,
        end=START + timedelta(hours=1),
    )
    assert parse_target(b'{"id": "evening", "cancel": true}', now=START, settings=FLEET) == (
        TargetCancel(id="evening")
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": "a/b"}, "'id' must match"),
        ({"id": "x" * 65}, "'id' must match"),
        ({"group": "south"}, "unknown group 'south'"),
        ({"type": "export_limit"}, "'type' must be one of"),
        ({"kw": float("nan")}, "'kw' must be a finite number"),
        ({"kw": "900"}, "'kw' must be a finite number"),
        ({"kw": 3000.5}, "more than group 'north' is rated for (3000 kW)"),
        ({"kw": -1}, "must not be negative"),
        ({"kw": 0, "type": "reduce_by"}, "must be positive"),
        ({"priority": 1001}, "'priority' must be an integer"),
        ({"priority": True}, "'priority' must be an integer"),
        ({"start": "2030-06-04T12:00:00"}, "needs a time zone"),
        ({"end": START.isoformat()}, "must be before 'end'"),
        (
            {
                "start": (START - timedelta(hours=3)).isoformat(),
                "end": (START - timedelta(hours=1)).isoformat(),
            },
            "ended already",
        ),
        ({"end": (START + timedelta(days=8)).isoformat()}, "within 7 days"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"cancel": True}, "a cancel is exactly"),
    ],
)
def test_a_bad_target_is_rejected_with_its_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(TargetRejected) as caught:
        parse_target(json.dumps({**target(), **change}), now=START, settings=FLEET)
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason


def test_oversized_and_deep_payloads_are_refused_before_parsing() -> None:
    with pytest.raises(TargetRejected, match="larger than 4096 bytes"):
        parse_target(b" " * 5000, now=START, settings=FLEET)
    with pytest.raises(TargetRejected, match="nested deeper"):
        parse_target(b"[" * 100 + b"]" * 100, now=START, settings=FLEET)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_end_in_a_target_or_a_one_line_rejection(payload: bytes) -> None:
    try:
        parse_target(payload, now=START, settings=FLEET)
    except TargetRejected as err:
        reason = err.reason
    else:
        return
    assert reason
    assert "\n" not in reason
    assert len(reason) < 300


def test_the_journal_decides_overlap_cancel_and_reuse(tmp_path: Path) -> None:
    journal = FleetJournal(tmp_path / "fleet.sqlite")
    ok = journal.add_target(target("evening", group="pair"), settings=FLEET, now=START)
    assert ok.result is TargetResult.ACCEPTED
    # north-1 is in both groups, at overlapping times
    clash = journal.add_target(
        target("late", start=START + timedelta(minutes=30)), settings=FLEET, now=START
    )
    assert clash.result is TargetResult.REJECTED
    assert "north-1, north-2 are under target 'evening'" in (clash.reason or "")
    # after it: fine; the same message again (a QoS 1 redelivery): accepted, nothing new
    after = target("late", start=START + timedelta(hours=1))
    assert journal.add_target(after, settings=FLEET, now=START).result is TargetResult.ACCEPTED
    again = journal.add_target(after, settings=FLEET, now=START)
    assert (again.result, again.reason) == (TargetResult.ACCEPTED, "already accepted")
    changed = journal.add_target({**after, "kw": 1000}, settings=FLEET, now=START)
    assert changed.result is TargetResult.REJECTED
    assert "cancel it first" in (changed.reason or "")
    assert journal.cancel_target("late", now=START).result is TargetResult.CANCELLED
    assert journal.cancel_target("late", now=START).result is TargetResult.REJECTED
    assert journal.cancel_target("nope", now=START).reason == "no target 'nope'"
    # the decisions, newest first, are what target/status lists
    assert [d.result for d in journal.decisions()][:3] == [
        TargetResult.REJECTED,
        TargetResult.REJECTED,
        TargetResult.CANCELLED,
    ]
    assert [r.target.id for r in journal.targets(START) if r.cancelled_at is None] == ["evening"]


def test_a_reader_sees_what_a_writer_journals(tmp_path: Path) -> None:
    path = tmp_path / "fleet.sqlite"
    writer = FleetJournal(path)
    reader = FleetJournal(path, read_only=True)
    before = reader.revision()
    writer.add_target(target(), settings=FLEET, now=START)
    assert reader.revision() > before
    assert [r.target.id for r in reader.targets(START)] == ["evening"]


def test_ended_targets_are_purged_after_the_retention(tmp_path: Path) -> None:
    journal = FleetJournal(tmp_path / "fleet.sqlite", retention_days=1)
    journal.add_target(target(), settings=FLEET, now=START)
    assert journal.purge(START + timedelta(hours=20)) == 0
    assert journal.purge(START + timedelta(days=1, hours=2)) == 1
    assert journal.targets() == []
