"""Hostile input on the DR channel: whatever a sender puts in a payload, it ends in a decision
that is counted and (over MQTT) acknowledged, and the next valid event is obeyed.

The service is the daemon's own (``DrService`` on a real journal file); the MQTT tests run a
real Mosquitto, and the daemon and the HIL rig on a simulated clock (``Simulation``).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog
import structlog.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ops_helpers import eventually

from controller.clock import FakeClock
from controller.commands.rig.simulation import Simulation
from controller.dr.events import MAX_PAYLOAD_BYTES, EventBounds
from controller.dr.intake import MqttSettings
from controller.dr.service import DrService
from controller.journal import Journal
from controller.metrics import Metrics
from tests.support.feeder import RIG_DEFAULTS, TEST_DEFAULTS

START = datetime(2026, 7, 1, 17, 0, tzinfo=UTC)
BOUNDS = EventBounds(max_kw=20_000.0, horizon=timedelta(days=7))


def _event(ident: str, kw: float = 1800.0, **extra: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "type": "import_limit",
        "kw": kw,
        "start": (START - timedelta(minutes=1)).isoformat(),
        "end": (START + timedelta(hours=2)).isoformat(),
        **extra,
    }


@pytest.fixture
def service(tmp_path: Path) -> Iterator[DrService]:
    journal = Journal(tmp_path / "journal.sqlite")
    yield DrService(
        journal,
        clock=FakeClock(START),
        site="t",
        default_import_kw=None,
        default_export_kw=None,
        metrics=Metrics(),
        bounds=BOUNDS,
        max_events=50,
    )
    journal.close()


def _counted(service: DrService) -> float:
    assert service.metrics is not None
    return sum(
        service.metrics.dr_events.labels(result)._value.get()
        for result in ("accepted", "cancelled", "rejected")
    )


# --- payloads: every one ends in a decision ----------------------------------------------

HOSTILE: list[tuple[bytes, str]] = [
    (json.dumps(_event("p1", priority=9223372036854775808)).encode(), "'priority' must be within"),
    (b"[" * 2000 + b"]" * 2000, "nested deeper than"),
    (b"[" * 1000 + b"]" * 1000, "nested deeper than"),
    (json.dumps(_event("p2", kw=1e308)).encode(), "more than this feeder can move"),
    (json.dumps(_event("p3", kw=float("inf"))).encode(), "'kw' must be a finite number"),
    (json.dumps(_event("p4", end="9999-12-31T23:59:59Z")).encode(), "beyond the horizon"),
    (json.dumps(_event("p5", start="0001-01-01T00:00:00Z")).encode(), "beyond the horizon"),
    (
        json.dumps(_event("p6")).replace('"kw": 1800.0', '"kw": ' + "9" * 3900).encode(),
        "'kw' must be a finite number",
    ),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"x" * (MAX_PAYLOAD_BYTES + 1), "larger than"),
    (json.dumps({"id": "p7", "type": {"a": [1, {"b": 2}]}}).encode(), "missing key"),
    (json.dumps({"id": "p8" * 100, "cancel": True}).encode(), "'id' must be at most"),
    (json.dumps({"id": "\u0000bell", "cancel": True}).encode(), "'id' must be at most"),
    (b"", "not valid JSON"),
    (b"null", "must be a JSON object"),
]


@pytest.mark.parametrize(("payload", "reason"), HOSTILE)
def test_a_hostile_payload_is_rejected_with_its_reason_and_counted(
    service: DrService, payload: bytes, reason: str
) -> None:
    decision = service.submit(payload)
    assert decision.result == "rejected"
    assert decision.reason is not None
    assert reason in decision.reason
    assert "\n" not in decision.reason
    assert len(decision.reason) <= 200
    assert _counted(service) == 1
    assert service.events_now() == []


_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(["id", "type", "kw", "start", "end", "priority", "cancel", "x"])
_near_valid = st.dictionaries(_keys, _json, max_size=7).map(
    lambda d: {**_event("f"), **d} if len(d) % 2 else d
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.one_of(
        st.binary(max_size=600),
        st.text(alphabet=string.printable, max_size=300),
        _json.map(lambda v: json.dumps(v, allow_nan=True)),
        _near_valid.map(lambda v: json.dumps(v, allow_nan=True)),
    )
)
def test_any_payload_ends_in_one_counted_decision(payload: str | bytes) -> None:
    journal = Journal(":memory:")  # a private file of its own, removed on close
    try:
        service = DrService(
            journal,
            clock=FakeClock(START),
            site="t",
            default_import_kw=None,
            default_export_kw=None,
            metrics=Metrics(),
            bounds=BOUNDS,
        )
        decision = service.submit(payload)
        assert decision.result in ("accepted", "cancelled", "rejected")
        assert _counted(service) == 1
        assert decision.reason is None or (
            "\n" not in decision.reason and len(decision.reason) <= 200
        )
        status = service.status()
        assert len(json.dumps(status)) < 16_000  # dr/status is bounded, whatever came in
    finally:
        journal.close()


# --- the store: bounded, and a journal that cannot store rejects -------------------------


def test_the_store_is_bounded_and_says_so_while_a_repeat_is_still_accepted(
    service: DrService,
) -> None:
    for i in range(50):
        assert service.submit(_event(f"e{i}")).result == "accepted"
    full = service.submit(_event("e50"))
    assert full.result == "rejected"
    assert full.reason is not None
    assert full.reason.startswith("event store full (50 events not yet over)")
    assert service.submit(_event("e7")).result == "accepted"  # a QoS 1 redelivery
    assert service.submit({"id": "e7", "cancel": True}).result == "cancelled"
    assert service.submit(_event("e50")).result == "accepted"  # room again
    status = service.status()
    assert status["events_stored"] == 50
    assert status["events_active"] == 50
    assert len(status["events"]) == 10  # the ten in force that win first


def _fill(db: sqlite3.Connection) -> None:
    """Write small event rows (long over) until the database is full."""
    for i in range(1_000_000):
        db.execute(
            "INSERT INTO dr_event (id, type, kw, start, end, priority, received_at, source,"
            " end_ts, rev) VALUES (?, 'import_limit', 1, '', '', 0, '', 'filler', 0, 0)",
            (f"filler-{i}",),
        )


def test_a_journal_that_cannot_store_rejects_and_the_service_goes_on(
    service: DrService,
) -> None:
    assert service.submit(_event("before")).result == "accepted"
    db = service.journal._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages + 2}")  # SQLite's own "database or disk is full"
    with pytest.raises(sqlite3.OperationalError, match="full"):
        _fill(db)
    decision = service.submit(_event("during"))
    assert decision.result == "rejected"
    assert decision.reason is not None
    assert decision.reason.startswith("journal unavailable: database or disk is full")
    assert service.metrics is not None
    assert service.metrics.journal_errors._value.get() == 1
    db.execute("DELETE FROM dr_event WHERE source = 'filler'")
    db.execute("PRAGMA max_page_count=1073741823")  # space again
    assert service.submit(_event("after")).result == "accepted"
    assert {s.event.id for s in service.events_now()} == {"before", "after"}


# --- over MQTT: poison first, then a valid event, before and after a restart -------------


def _poison() -> list[bytes]:
    """Fifty messages that once could not be decided (more than a broker's in-flight window)."""
    out = [payload for payload, _ in HOSTILE] * 3
    out += [json.dumps(_event(f"big{i}", priority=2**63 + i)).encode() for i in range(5)]
    return out[:50]


async def _publish(port: int, topic: str, payloads: list[bytes]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"sender-{id(payloads):x}") as c:
        for body in payloads:
            await c.publish(topic, body, qos=1)


def _decided(dr: DrService, ident: str) -> bool:
    return any(d.id == ident for d in dr.recent)


async def _applied_within_two_intervals(sim: Simulation, kw: float) -> int:
    for n in (1, 2):
        rec = await sim.step()
        if rec.import_limit_kw == kw:
            return n
    raise AssertionError(f"the {kw} kW limit was not applied within two intervals")


@pytest.mark.integration
async def test_poison_messages_cannot_silence_dr_before_or_after_a_restart(
    broker: int, site: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker,
        topic_root=f"feederd/{site}",
        client_id=f"feederd-{site}",  # a persistent session, as the daemon's
        backoff_min_s=0.05,
        backoff_max_s=0.2,
    )
    overrides = {**TEST_DEFAULTS, "journal": {"path": str(journal)}}
    for round_, kw in ((1, 1800.0), (2, 1700.0)):  # the second round is after a restart
        async with Simulation.open(
            overrides=overrides, rig_options=RIG_DEFAULTS, mqtt=settings, start=START
        ) as sim:
            intake, dr = sim.daemon.intake, sim.daemon.dr
            assert intake is not None
            await eventually(intake.connected.is_set, "the intake connected")
            ident = f"ok{round_}"
            valid = json.dumps(_event(ident, kw)).encode()
            await _publish(broker, settings.event_topic, [*_poison(), valid])
            await eventually(functools.partial(_decided, dr, ident), "the valid event decided")
            # every message decided, each once: in the second round nothing of the first came
            # back (each had been acknowledged), though the session is persistent
            assert _counted(dr) == 51
            assert [d.result for d in dr.recent][-1] == "accepted"
            assert all(d.result == "rejected" for d in list(dr.recent)[:-1]), dr.recent
            assert await _applied_within_two_intervals(sim, kw) <= 2


@pytest.mark.integration
async def test_a_burst_larger_than_the_intake_queue_is_decided_in_full(
    broker: int, site: str
) -> None:
    """300 valid events at QoS 1 into an intake whose queue holds 10: what the full queue
    drops is counted, never acknowledged, and redelivered after the reconnect that follows, so
    every event ends in a decision: none is lost (QoS 1 is at least once: a message whose
    acknowledgement the reconnect cut off may be decided twice, the same way)."""
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker,
        topic_root=f"feederd/{site}",
        client_id=f"feederd-{site}",
        queue_size=10,
        backoff_min_s=0.05,
        backoff_max_s=0.2,
    )
    ids = {f"b{i}" for i in range(300)}
    with structlog.testing.capture_logs() as logs:
        async with Simulation.open(
            overrides={**TEST_DEFAULTS, "dr": {"max_events": 100}},
            rig_options=RIG_DEFAULTS,
            mqtt=settings,
            start=START,
        ) as sim:
            intake, dr = sim.daemon.intake, sim.daemon.dr
            assert intake is not None
            await eventually(intake.connected.is_set, "the intake connected")
            bodies = [json.dumps(_event(f"b{i}", 1500.0 + i)).encode() for i in range(300)]
            await _publish(broker, settings.event_topic, bodies)

            def decided() -> set[str]:
                return {e["id"] for e in logs if e["event"].startswith("dr_event_")} & ids

            await eventually(lambda: decided() == ids, "a decision for each event", 120)
            metrics = sim.daemon.metrics
            assert metrics.mqtt_dropped.labels("in")._value.get() == intake.dropped_in
            assert intake.dropped_in > 0  # the queue did overflow, and nothing was lost to it
            assert dr.status()["events_stored"] == 100  # the store keeps 100 ...
            rejected = {e["id"] for e in logs if e["event"] == "dr_event_rejected"}
            assert len(rejected) == 200  # ... and tells the others why
            assert all(
                e["reason"].startswith("event store full")
                for e in logs
                if e["event"] == "dr_event_rejected"
            )
            rec = await sim.step()
            assert rec.import_limit_kw is not None  # the daemon dispatches under them
