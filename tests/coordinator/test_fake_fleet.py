"""The scale benchmark's fake feeders (``tests.support.fake_fleet``) speak feederd's side of the
fleet contract, and the real coordinator daemon drives fifty of them end to end on a real
Mosquitto: a target given over MQTT ends in an accepted event at every feeder it asks, and the
feeders' next flexibility reports them holding it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.clock import FakeClock
from controller.flex import parse_flex
from coordinator.config import parse_fleet
from coordinator.daemon import FleetDaemon
from tests.support.fake_fleet import (
    FakeFeeder,
    FakeFleet,
    acknowledged,
    holds_latest,
    make_feeders,
)
from tests.support.fleet import Recorder
from tests.support.mosquitto import Mosquitto
from tests.support.wait import HANG_GUARD_S, eventually, until

NOW = datetime(2030, 6, 4, 12, tzinfo=UTC)


def _event(event_id: str, kw: float, *, minutes: float = 10.0, priority: int = 0) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "type": "import_limit",
            "kw": kw,
            "start": NOW.isoformat(),
            "end": (NOW + timedelta(minutes=minutes)).isoformat(),
            "priority": priority,
        }
    ).encode()


def test_every_seeded_feeder_publishes_flexibility_the_coordinator_accepts() -> None:
    feeders = make_feeders(300, seed=5)
    assert [f.site for f in feeders] == [f.site for f in make_feeders(300, seed=5)]
    for f in feeders:
        body = json.dumps(f.flex(NOW).to_json())
        flex = parse_flex(body, now=NOW, max_age_s=60, site=f.site, rating_kw=f.rating_kw)
        assert flex.min_kw is not None
        assert flex.max_kw == f.baseline_kw
        assert flex.min_kw < flex.max_kw
        costs = [c for _, c in flex.curve]
        assert costs[-1] == 0.0
        assert costs == sorted(costs, reverse=True)
    sizes = sorted(f.baseline_kw for f in feeders)
    assert sizes[0] < 1000.0  # varied, not copies
    assert sizes[-1] > 5000.0


def test_a_fake_feeder_obeys_the_winning_limit_down_to_what_it_can_hold() -> None:
    f = FakeFeeder(
        site="f1",
        rating_kw=3000.0,
        baseline_kw=2000.0,
        min_kw=1500.0,
        curve=((1500.0, 100.0), (2000.0, 0.0)),
    )
    assert f.import_kw(NOW) == 2000.0
    assert f.decide(_event("fleet:t:1", 1800.0), NOW)["result"] == "accepted"
    assert f.import_kw(NOW) == 1800.0
    # same priority: the later accepted wins (feederd's overlap rule), then its cancel
    assert f.decide(_event("fleet:t:2", 1700.0), NOW)["result"] == "accepted"
    assert f.import_kw(NOW) == 1700.0
    cancel = json.dumps({"id": "fleet:t:1", "cancel": True}).encode()
    assert f.decide(cancel, NOW)["result"] == "cancelled"
    assert f.import_kw(NOW) == 1700.0
    # below what it can hold: it holds its least, and says it will be short
    assert f.decide(_event("fleet:t:3", 1000.0), NOW)["result"] == "accepted"
    assert f.import_kw(NOW) == 1500.0
    status = f.status(NOW)
    assert status["active"]["import_event"] == "fleet:t:3"
    (short,) = [e for e in status["events"] if e["id"] == "fleet:t:3"]
    assert short["ready"] is False
    assert short["predicted_shortfall_kw"] == 500.0
    assert status["compliance"]["within_limit"] is False
    # over: back to its baseline
    later = NOW + timedelta(minutes=11)
    assert f.import_kw(later) == 2000.0
    assert f.flex(later).limit_kw is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"id": "x"', "not valid JSON"),
        (b'{"id": "x", "type": "import_limit", "kw": -5}', ""),
        (json.dumps({"id": "nope", "cancel": True}).encode(), "no such event"),
    ],
)
def test_a_fake_feeder_rejects_what_feederd_rejects(payload: bytes, reason: str) -> None:
    f = make_feeders(1)[0]
    decision = f.decide(payload, NOW)
    assert decision["result"] == "rejected"
    assert reason in decision["reason"]
    assert f.status(NOW)["last"] == decision


FEEDERS = 50
TARGET_TOPIC = "feederd-fleet/fake/target"


def _fleet_table(feeders: list[FakeFeeder], port: int, workdir: Path) -> dict[str, Any]:
    return {
        "name": "fake",
        "feeder_root": "feederd",
        "interval_s": 30.0,
        "journal": {"path": str(workdir / "fleet.sqlite")},
        "mqtt": {"host": "127.0.0.1", "port": port},
        "metrics": {"enabled": False},
        "feeders": [{"site": f.site, "rating_kw": f.rating_kw} for f in feeders],
    }


async def _heard(daemon: FleetDaemon, feeders: list[FakeFeeder]) -> None:
    """Until the coordinator holds every feeder's latest flexibility (its ``seq``)."""

    async def heard() -> bool:
        return bool(await daemon.call(lambda core: holds_latest(core, feeders)))

    await eventually(heard, "every feeder's flexibility", guard_s=HANG_GUARD_S)


def _last_result(operator: Recorder) -> str | None:
    status = operator.json("feederd-fleet/fake/target/status") or {}
    last = status.get("last") or {}
    return last.get("result")


async def test_fifty_fake_feeders_take_a_target_end_to_end(tmp_path: Path) -> None:
    """The real coordinator daemon (its MQTT session, its core and journal) on a real
    Mosquitto with fifty fake feeders on two connections, its clock simulated (ticks only when
    a message makes one due): a ``reduce_by`` target over MQTT is accepted, every feeder the
    allocation asks accepts its event (one event each, none twice), and the feeders' next
    flexibility, holding their limits, sums to the target's limit: Σ max_kw − kw. A malformed
    flexibility message is refused and counted, and the fleet goes on."""
    broker = Mosquitto(tmp_path)
    await broker.start()
    try:
        clock = FakeClock(NOW)
        feeders = make_feeders(FEEDERS, seed=3)
        config = parse_fleet(
            _fleet_table(feeders, broker.port, tmp_path), source="<test>", base_dir=tmp_path
        )
        mqtt = dataclasses.replace(config.mqtt_settings(), backoff_min_s=0.05, backoff_max_s=0.5)
        async with FleetDaemon.open(config, clock=clock, mqtt=mqtt, ticker=False) as daemon:
            stop = asyncio.Event()
            running = asyncio.create_task(daemon.run(stop))
            try:
                async with (
                    FakeFleet.open(feeders, port=broker.port, now=clock.now, connections=2) as fake,
                    Recorder.open(broker.port, ["feederd-fleet/fake/#"]) as operator,
                ):
                    await _heard(daemon, feeders)
                    max_kw = sum(f.baseline_kw for f in feeders)
                    reduce_kw = round(0.25 * sum(f.baseline_kw - f.min_kw for f in feeders), 1)
                    await operator.publish(
                        TARGET_TOPIC,
                        {
                            "id": "evening",
                            "group": "all",
                            "type": "reduce_by",
                            "kw": reduce_kw,
                            "start": NOW.isoformat(),
                            "end": (NOW + timedelta(minutes=30)).isoformat(),
                        },
                    )

                    async def all_accepted() -> bool:
                        asked, accepted = await daemon.call(
                            lambda core: acknowledged(core, "evening")
                        )
                        return 0 < asked == accepted

                    await eventually(all_accepted, "every asked acceptance", guard_s=HANG_GUARD_S)
                    asked, _ = await daemon.call(lambda core: acknowledged(core, "evening"))
                    await until(
                        lambda: _last_result(operator) == "accepted",
                        "the target accepted on target/status",
                    )
                    assert fake.decisions == {"accepted": asked}
                    published = daemon.metrics.registry.get_sample_value(
                        "feederd_fleet_events_published_total", {"kind": "event"}
                    )
                    assert published == asked
                    # the feeders hold: their next flexibility sums to the target's limit
                    # (each figure rounded to 0.01 kW on the wire)
                    await fake.publish_flex()
                    await _heard(daemon, feeders)
                    status = await daemon.call(lambda core: core.status())
                    (target,) = status["targets"]
                    assert target["limit_kw"] == pytest.approx(max_kw - reduce_kw, abs=0.01)
                    held = sum(f.import_kw(clock.now()) for f in feeders)
                    assert held <= max_kw - reduce_kw + 0.01 * FEEDERS
                    assert status["import_kw"] == pytest.approx(held, abs=0.01 * FEEDERS)
                    # a malformed flexibility message: refused, counted; the fleet goes on
                    await operator.publish(f"feederd/{feeders[7].site}/flex", b"{not json")
                    refused = {"reason": "malformed"}
                    name = "feederd_fleet_flex_refused_total"
                    await until(
                        lambda: daemon.metrics.registry.get_sample_value(name, refused) == 1.0,
                        "the malformed flexibility counted",
                    )
                    await fake.publish_flex()
                    await _heard(daemon, feeders)
                    status = await daemon.call(lambda core: core.status())
                    assert {f["state"] for f in status["feeders"].values()} == {"up"}
            finally:
                stop.set()
                await asyncio.wait({running}, timeout=10.0)
    finally:
        broker.stop()
