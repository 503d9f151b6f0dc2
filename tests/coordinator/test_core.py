"""The coordinator's core, fed the feeders' real messages (``Flexibility`` JSON, ``dr/status``,
``online``) in simulated time on a file journal, as the daemon feeds it.

The fleet (``core_helpers.settings``): three feeders that can each go from 600 kW down to
400 kW, at 1, 2 and 3 per kW (north-1 is the cheapest); north-1 and north-2 share T1 (1.5 MW).
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from coordinator.feeders import OFFLINE_GRACE_S
from coordinator.journal import FleetJournal
from coordinator.settings import TransformerSpec
from coordinator.targets import TargetResult
from tests.coordinator.core_helpers import (
    START,
    Fleet,
    active,
    dr_status,
    events,
    flex,
    limits,
    settings,
    target,
)

SLOPES = {"north-1": 1.0, "north-2": 2.0, "north-3": 3.0}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def report(fleet: Fleet, *, skip: tuple[str, ...] = (), **per_site: dict[str, object]) -> None:
    """Every feeder's flexibility now (``per_site`` overrides, ``skip`` says nothing)."""
    for site, slope in SLOPES.items():
        if site not in skip:
            fleet.flex(site, **{"slope": slope, **per_site.get(site.replace("-", "_"), {})})


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    f = Fleet(str(tmp_path / "fleet.sqlite"))
    report(f)
    return f


def start_evening(fleet: Fleet, kw: float = 1500.0) -> dict[str, float]:
    assert fleet.core.target_received(target(kw=kw)).result is TargetResult.ACCEPTED
    assert fleet.core.due
    return limits(fleet.core.tick())


def test_a_target_is_split_cheapest_first_one_event_per_feeder(fleet: Fleet) -> None:
    out_limits = start_evening(fleet)
    # 1,800 kW left alone, 1,500 asked: north-1 gives all its 200 kW, north-2 the other 100
    assert out_limits == {"north-1": 400.0, "north-2": 500.0}
    status = fleet.core.status()
    assert status["targets"][0]["shortfall_kw"] == 0.0
    assert status["feeders"]["north-1"]["share"] == pytest.approx(2 / 3, abs=1e-3)
    assert status["feeders"]["north-3"]["limit_kw"] is None
    # nothing changes: nothing more is published
    fleet.advance(30)
    report(fleet)
    assert events(fleet.core.tick()) == []


def test_every_event_is_a_valid_dr_event_and_status_documents_are_retained(fleet: Fleet) -> None:
    fleet.core.target_received(target(kw=1500))
    out = fleet.core.tick()
    (_site, payload), *_ = events(out)
    assert payload == {
        "id": "fleet:evening:1",
        "type": "import_limit",
        "kw": 400.0,
        "start": START.isoformat(),
        "end": (START + timedelta(hours=1)).isoformat(),
        "priority": 0,
    }
    retained = {o.topic: o.payload for o in out if o.retain}
    assert retained["feederd-fleet/test/target/status"]["last"]["result"] == "accepted"
    assert retained["feederd-fleet/test/status"]["targets"][0]["id"] == "evening"
    assert fleet.journal.fleet_status() == retained["feederd-fleet/test/status"]


def test_a_silent_feeder_counts_at_its_max_and_the_others_take_its_share(fleet: Fleet) -> None:
    start_evening(fleet)
    registry = fleet.core.metrics.registry
    with capture_logs() as logs:
        for _ in range(3):  # 90 s without north-2's flexibility
            fleet.advance(30)
            report(fleet, skip=("north-2",))
            out = fleet.core.tick()
    # north-2 (asked 500) is now counted at 600: north-3 gives the 100 kW more
    assert limits(out) == {"north-3": 500.0}
    assert [p["id"] for _, p in events(out)] == ["fleet:evening:2"]
    assert [e["reason"] for e in logs if e["event"] == "fleet_reallocated"] == ["feeder_silent"]
    assert sample(registry, "feederd_fleet_feeders", state="silent") == 1
    assert sample(registry, "feederd_fleet_allocations_total", reason="feeder_silent") == 1
    assert fleet.core.status()["feeders"]["north-2"]["state"] == "silent"
    # back: it holds its 500 kW again (its event never went away), north-3 is let go
    fleet.advance(30)
    report(fleet)
    assert fleet.core.due
    assert events(fleet.core.tick()) == [("north-3", {"id": "fleet:evening:2", "cancel": True})]


def test_a_feeder_that_goes_offline_is_silent_once_its_will_is_believed(fleet: Fleet) -> None:
    start_evening(fleet)
    fleet.core.online_received("feederd/north-1/online", b"false")
    judged = fleet.clock.monotonic() + OFFLINE_GRACE_S
    assert fleet.core.next_judgement == judged
    assert events(fleet.core.tick()) == []  # a broker going down sends every will: not yet
    fleet.advance(OFFLINE_GRACE_S)
    assert fleet.core.next_judgement == judged
    out = fleet.core.tick()
    assert fleet.core.next_judgement is None
    # north-1 (asked 400) counted at 600: the 200 kW come from north-2 (100 more) and north-3
    assert limits(out) == {"north-2": 400.0, "north-3": 500.0}
    # its restart says true again, its flexibility still fresh: it is asked again at once
    fleet.core.online_received("feederd/north-1/online", b"true")
    assert fleet.core.due
    assert limits(fleet.core.tick()) == {"north-2": 500.0}
    assert fleet.core.status()["feeders"]["north-1"]["state"] == "up"


def test_the_wills_of_a_broker_going_down_reallocate_nothing(fleet: Fleet) -> None:
    """Mosquitto publishes every client's will as it stops, just before the coordinator's
    own connection drops: a broker restart must not re-split the fleet."""
    start_evening(fleet)
    for site in ("north-1", "north-2", "north-3"):
        fleet.core.online_received(f"feederd/{site}/online", b"false")
    fleet.core.connected(False)
    fleet.advance(OFFLINE_GRACE_S)
    fleet.core.connected(True)
    assert fleet.core.next_judgement is None
    report(fleet)
    assert events(fleet.core.tick()) == []
    assert all(f["state"] == "up" for f in fleet.core.status()["feeders"].values())


def test_silence_is_not_judged_while_the_broker_is_down(fleet: Fleet) -> None:
    start_evening(fleet)
    fleet.core.connected(False)
    fleet.advance(300)
    assert fleet.core.tick() == []  # nothing decided that could not be published
    fleet.core.connected(True)
    fleet.advance(60)  # less than silent_after_s after it came back
    assert events(fleet.core.tick()) == []
    assert all(f["state"] != "silent" for f in fleet.core.status()["feeders"].values())


def test_a_rejection_reallocates(fleet: Fleet) -> None:
    start_evening(fleet)
    decision = {"id": "fleet:evening:1", "result": "rejected", "reason": "its priority is lower"}
    fleet.core.dr_status_received(
        "feederd/north-2/dr/status", dr_status("north-2", fleet.clock.now(), [decision])
    )
    assert fleet.core.due
    with capture_logs() as logs:
        out = fleet.core.tick()
    assert limits(out) == {"north-3": 500.0}
    assert [e["reason"] for e in logs if e["event"] == "fleet_reallocated"] == ["feeder_rejected"]
    feeder = fleet.core.status()["feeders"]["north-2"]
    assert (feeder["state"], feeder["rejected"]) == ("rejected", "its priority is lower")


def test_a_feeder_falling_short_is_asked_no_more_than_it_delivers(fleet: Fleet) -> None:
    start_evening(fleet)
    held = active({"id": "fleet:evening:1", "kw": 400.0, **_times()})
    # north-1 holds 430 kW against its 400 kW limit (beyond the 2 % tolerance), twice
    for n in range(2):
        fleet.advance(30)
        report(fleet, north_1={"import_kw": 430.0, "events": (held,)})
        out = fleet.core.tick()
        if n == 0:
            assert events(out) == []  # once is not yet short
    assert limits(out) == {"north-1": 430.0, "north-2": 470.0}
    # each feeder's new event goes out before the cancel of the one it replaces
    assert [(s, p["id"], "cancel" in p) for s, p in events(out)] == [
        ("north-1", "fleet:evening:2", False),
        ("north-1", "fleet:evening:1", True),
        ("north-2", "fleet:evening:2", False),
        ("north-2", "fleet:evening:1", True),
    ]
    assert fleet.core.status()["feeders"]["north-1"]["state"] == "short"


def test_a_predicted_shortfall_reallocates(fleet: Fleet) -> None:
    start_evening(fleet)
    plan = {"id": "fleet:evening:1", "predicted_shortfall_kw": 60.0, "ready": False}
    fleet.core.dr_status_received(
        "feederd/north-1/dr/status", dr_status("north-1", fleet.clock.now(), [], [plan])
    )
    assert fleet.core.due
    assert limits(fleet.core.tick()) == {"north-1": 460.0, "north-2": 440.0}


def test_bad_flexibility_is_refused_with_its_reason_counted_and_logged_once(fleet: Fleet) -> None:
    registry = fleet.core.metrics.registry
    now = fleet.clock.now()
    stale = flex("north-1", now - timedelta(seconds=300))
    over = flex("north-2", now, max_kw=1200.0, min_kw=900.0)  # rated 1,000 kW
    with capture_logs() as logs:
        for _ in range(3):
            fleet.core.flex_received("feederd/north-1/flex", stale)
            fleet.core.flex_received("feederd/north-2/flex", over)
            fleet.core.flex_received("feederd/north-3/flex", b'{"v": 1, "site": ')
        fleet.core.flex_received("feederd/south-9/flex", flex("south-9", now))
        fleet.core.flex_received("feederd/south-9/flex", flex("south-9", now))
    refused = [(e["site"], e["reason"]) for e in logs if e["event"] == "fleet_flex_refused"]
    assert len(refused) == 3  # once per feeder and reason
    assert refused[0][0] == "north-1"
    assert refused[0][1].startswith("stale: made 300 s ago")
    assert "beyond the feeder's rating of 1000 kW" in refused[1][1]
    assert refused[2][1].startswith("not valid JSON")
    assert [e["event"] for e in logs].count("fleet_unknown_site") == 1
    for kind, n in (("stale", 3), ("over_rating", 3), ("malformed", 3), ("unknown_site", 2)):
        assert sample(registry, "feederd_fleet_flex_refused_total", reason=kind) == n
    # the refused messages changed nothing: the last good flexibility stands
    assert fleet.core.status()["feeders"]["north-2"]["max_kw"] == 600.0


def test_an_impossible_target_reports_its_shortfall(fleet: Fleet) -> None:
    out_limits = start_evening(fleet, kw=1000.0)
    assert out_limits == {"north-1": 400.0, "north-2": 400.0, "north-3": 400.0}
    status = fleet.core.status()
    assert status["targets"][0]["shortfall_kw"] == pytest.approx(200.0, abs=0.01)
    registry = fleet.core.metrics.registry
    assert sample(registry, "feederd_fleet_shortfall_kw", target="evening") == pytest.approx(
        200.0, abs=0.01
    )


def test_a_restart_on_the_same_journal_publishes_nothing_twice(fleet: Fleet) -> None:
    first = start_evening(fleet)
    assert first
    fleet.restart()
    report(fleet)
    assert events(fleet.core.tick()) == []
    # what changes afterwards is published, under the next revision
    fleet.core.online_received("feederd/north-1/online", b"false")
    fleet.advance(OFFLINE_GRACE_S)
    out = fleet.core.tick()
    assert [p["id"] for _, p in events(out) if "kw" in p] == ["fleet:evening:2"] * 2
    # and the cancel of a target journaled before a restart still goes out after it
    fleet.restart()
    report(fleet)
    assert fleet.journal.cancel_target("evening", now=fleet.clock.now()).accepted
    fleet.restart()
    cancels = [(s, p["id"]) for s, p in events(fleet.core.tick()) if p.get("cancel")]
    assert sorted(cancels) == [
        ("north-1", "fleet:evening:1"),
        ("north-2", "fleet:evening:2"),
        ("north-3", "fleet:evening:2"),
    ]


def test_targets_from_the_cli_are_picked_up_at_the_next_tick(fleet: Fleet) -> None:
    cli = FleetJournal(fleet.path)
    decision = cli.add_target(target(kw=1500), settings=fleet.settings, now=fleet.clock.now())
    assert decision.result is TargetResult.ACCEPTED
    with capture_logs() as logs:
        out = fleet.core.tick()
    assert limits(out) == {"north-1": 400.0, "north-2": 500.0}
    assert [(e["event"], e["source"]) for e in logs if e["event"].startswith("fleet_target")] == [
        ("fleet_target_accepted", "cli")
    ]
    registry = fleet.core.metrics.registry
    assert sample(registry, "feederd_fleet_targets_total", result="accepted") == 1
    assert cli.cancel_target("evening", now=fleet.clock.now()).result is TargetResult.CANCELLED
    out = fleet.core.tick()
    assert sorted((s, p) for s, p in events(out)) == [
        ("north-1", {"id": "fleet:evening:1", "cancel": True}),
        ("north-2", {"id": "fleet:evening:1", "cancel": True}),
    ]
    status = next(o.payload for o in out if o.topic.endswith("target/status"))
    assert status["last"]["result"] == "cancelled"
    assert status["targets"] == []


def test_a_reduce_by_target_freezes_its_baseline(fleet: Fleet) -> None:
    fleet.core.target_received(target(kw=300.0, kind="reduce_by"))
    assert limits(fleet.core.tick()) == {"north-1": 400.0, "north-2": 500.0}
    # the feeders' peaks rise: the limit (1,800 − 300) does not move with them
    fleet.advance(30)
    report(fleet, north_3={"max_kw": 650.0, "import_kw": 650.0})
    assert limits(fleet.core.tick()) == {"north-2": 450.0}
    assert fleet.core.status()["targets"][0]["limit_kw"] == 1500.0


def test_a_later_target_is_allocated_once_within_the_flexibility_window(fleet: Fleet) -> None:
    later = target(kw=1500, start=START + timedelta(hours=2))
    assert fleet.core.target_received(later).accepted
    assert events(fleet.core.tick()) == []
    fleet.advance(3600)
    report(fleet)
    out = events(fleet.core.tick())
    assert [p["start"] for _, p in out] == [(START + timedelta(hours=2)).isoformat()] * 2


def test_a_transformer_binds_tighter_than_the_target(tmp_path: Path) -> None:
    fleet = Fleet(
        str(tmp_path / "fleet.sqlite"), settings(transformers=(TransformerSpec("T1", 900.0),))
    )
    report(fleet)
    # the target alone would ask north-1 for 100 kW (1,700 of 1,800); T1 holds the pair to
    # 900: north-1 gives its 200, north-2 the other 100
    assert start_evening(fleet, kw=1700.0) == {"north-1": 400.0, "north-2": 500.0}


def _times() -> dict[str, str]:
    return {"start": START.isoformat(), "end": (START + timedelta(hours=1)).isoformat()}


def test_fair_mode_asks_each_feeder_in_proportion_to_its_flexibility(tmp_path: Path) -> None:
    fleet = Fleet(str(tmp_path / "fleet.sqlite"), settings(mode="fair"))
    report(fleet, north_3={"min_kw": 500.0})  # north-3 can give 100 kW, the others 200
    # 300 kW to shed over 500 kW of flexibility: each gives 60 % of its own
    assert start_evening(fleet) == {"north-1": 480.0, "north-2": 480.0, "north-3": 540.0}


def test_targets_one_after_the_other_are_allocated_apart(fleet: Fleet) -> None:
    start_evening(fleet)  # 12:00-13:00, 1,500 kW: north-3 not asked
    tight = target("night", kw=1200.0, start=START + timedelta(hours=1))
    assert fleet.core.target_received(tight).accepted
    out = events(fleet.core.tick())
    # night is within the hour: its own events, from 13:00; evening's stay as they are
    assert {p["id"] for _, p in out} == {"fleet:night:1"}
    assert {p["start"] for _, p in out} == {(START + timedelta(hours=1)).isoformat()}
    assert limits(fleet.core.tick()) == {}


def test_a_feeder_without_flexibility_counts_at_its_measured_import(fleet: Fleet) -> None:
    # north-3's flexibility could not be computed this interval (its fallback rule ran)
    fleet.flex("north-3", min_kw=None, max_kw=None, import_kw=580.0)
    # 1,500 − 580 = 920 for the other two: north-1 to 400, north-2 to 520
    assert start_evening(fleet) == {"north-1": 400.0, "north-2": 520.0}
    assert fleet.core.status()["feeders"]["north-3"]["limit_kw"] is None


def test_a_target_the_journal_cannot_store_is_refused_and_said(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal locked by another writer past its busy timeout: the target is refused with the
    reason on ``target/status``, and the coordinator goes on."""
    monkeypatch.setattr("coordinator.journal.BUSY_TIMEOUT_S", 0.05)
    fleet.restart()  # a connection with the short timeout
    report(fleet)
    blocker = sqlite3.connect(fleet.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        decision = fleet.core.target_received(target(kw=1500))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert decision.result is TargetResult.REJECTED
    assert decision.id == "evening"
    assert "journal cannot store it" in (decision.reason or "")
    status = next(o.payload for o in fleet.core.tick() if o.topic.endswith("target/status"))
    assert status["last"]["result"] == "rejected"
    assert status["last"]["id"] == "evening"
    assert fleet.core.target_received(target(kw=1500)).accepted  # the journal is back
