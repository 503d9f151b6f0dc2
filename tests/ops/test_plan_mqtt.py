"""The plan on a real Mosquitto: retained on ``<root>/plan`` at QoS 1, only the latest ever
sent (plans made while the broker is away replace each other, never queue), a late subscriber
gets the latest plan alone, and a broker restarted without persistence gets it back.

Each wait is for a condition under a hang guard, never a fixed sleep."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from ops_helpers import GUARD_S, eventually, mqtt_retained

from controller.clock import FakeClock
from controller.commands.rig.config import revert_s_for
from controller.config import parse_config
from controller.daemon import Daemon
from controller.dr import MqttIntake, MqttSettings
from controller.plan import plan_from
from hil import HilRig
from tests.controller.plan_helpers import AT, plan_input, plan_result
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

INTERVAL_S = 5.0


def _plan(k: int) -> dict[str, Any]:
    """Plan number ``k``: made ``k`` minutes after noon, importing 1000 + k kW throughout."""
    imports = tuple(1000.0 + k for _ in plan_result().import_plan_kw)
    return plan_from(
        plan_result(import_plan_kw=imports), plan_input(), AT + timedelta(minutes=k)
    ).to_json()


async def _listen(port: int, topic: str, got: list[dict[str, Any]], ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        ready.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes | bytearray)
            got.append(json.loads(message.payload))


async def test_only_the_latest_plan_goes_out_and_stays_retained(tmp_path: Path, site: str) -> None:
    broker = Mosquitto(tmp_path)  # persistence false: a restart forgets what was retained
    await broker.start()
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker.port,
        topic_root=f"feederd/{site}",
        backoff_min_s=0.05,
        backoff_max_s=0.2,
    )
    intake = MqttIntake(settings, lambda _payload: None)
    got: list[dict[str, Any]] = []
    ready = asyncio.Event()
    listener = asyncio.create_task(_listen(broker.port, settings.plan_topic, got, ready))
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(ready.wait(), GUARD_S)
        for k in range(50):  # fifty intervals' plans before the intake is connected
            intake.publish_plan(_plan(k))
        task = asyncio.create_task(intake.run(stop))
        await asyncio.wait_for(intake.connected.wait(), GUARD_S)
        await eventually(lambda: bool(got), "the plan held while the intake was away")
        # the latest of the fifty went out; the 49 it replaced never did
        assert [d["at"] for d in got] == [_plan(49)["at"]]
        intake.publish_plan(_plan(50))
        await eventually(lambda: len(got) == 2, "plan 50")
        assert [d["at"] for d in got] == [_plan(49)["at"], _plan(50)["at"]]
        assert got[-1] == _plan(50)
        assert got[-1]["steps"][0]["import_kw"] == 1050.0

        # a late subscriber gets the latest plan, alone
        late = await asyncio.to_thread(mqtt_retained, broker.port, settings.plan_topic)
        assert json.loads(late) == _plan(50)

        # the broker restarts and has forgotten it: the intake sends it again on reconnecting
        connects = intake.connects
        broker.stop()
        await eventually(lambda: not intake.connected.is_set(), "the intake sees the broker go")
        await broker.start()
        await eventually(lambda: intake.connects > connects, "the intake reconnects")
        again = await asyncio.to_thread(mqtt_retained, broker.port, settings.plan_topic)
        assert json.loads(again) == _plan(50)
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, GUARD_S)
        listener.cancel()
        with_listener = await asyncio.gather(listener, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError | aiomqtt.MqttError) for r in with_listener)
        broker.stop()


async def test_the_daemon_publishes_its_plan_and_an_event_ahead_in_it(
    tmp_path: Path, site: str
) -> None:
    """The daemon on the HIL rig (33-bus, simulated time) with a 2 h horizon and an import
    cap announced for 30 minutes ahead: after a few intervals the plan is retained on MQTT,
    stored in the journal, in the next hour's metrics, and it names the event."""
    broker = Mosquitto(tmp_path)
    await broker.start()
    clock = FakeClock(start=AT)
    settings = MqttSettings(
        host="127.0.0.1", port=broker.port, topic_root=f"feederd/{site}", backoff_min_s=0.05
    )
    journal = tmp_path / "journal.sqlite"
    try:
        async with HilRig(
            monotonic=clock.monotonic,
            physics_period_s=None,
            solve_on_write=False,
            load_scale=lambda _t: 1.0,
            pv_available_frac=lambda _t: 0.5,
        ) as hil:
            doc: dict[str, Any] = {
                "site": site,
                "interval_s": INTERVAL_S,
                "feeder": {"case": "builtin:case33bw", "v_min_pu": 0.92},
                "metrics": {"enabled": False},
                "poll": {"timeout_s": 2.0},
                "control": {"horizon_h": 2.0},
                "forecast": {"enabled": False},
                "devices": hil.config_devices(revert_s=revert_s_for(INTERVAL_S)),
            }
            loaded = parse_config(doc, source="<test>", base_dir=Path.cwd())
            async with Daemon.open(
                loaded, clock=clock, mqtt=settings, journal_path=str(journal)
            ) as daemon:
                assert daemon.intake is not None
                await asyncio.wait_for(daemon.intake.connected.wait(), GUARD_S)
                cap = {
                    "id": "cap-ahead",
                    "type": "import_limit",
                    "kw": 1800.0,
                    "start": (AT + timedelta(minutes=30)).isoformat(),
                    "end": (AT + timedelta(minutes=90)).isoformat(),
                }
                decision = await daemon.dr.submit_async(json.dumps(cap), source="cli")
                assert decision.result == "accepted", decision
                for _ in range(4):
                    await hil.step()
                    await daemon.controller.cycle()
                    clock.advance(INTERVAL_S)
                plan = daemon.controller.plans.last
                assert plan is not None
                metrics = daemon.metrics.registry
                planned = metrics.get_sample_value(
                    "feederd_plan_import_kw", {"minutes_ahead": "15"}
                )
                step = plan.ahead(15)
                assert step is not None
                assert planned == step.import_kw
                reserve_kw = daemon.controller.reserve.kw(1800.0)
                stored = daemon.journal.last_plan()
                assert stored is not None
                # this interval's plan says of the event what the DR metric says
                (seen,) = plan.events
                predicted = metrics.get_sample_value(
                    "feederd_dr_predicted_shortfall_kw", {"event": "cap-ahead"}
                )
                assert predicted == pytest.approx(seen.predicted_shortfall_kw, abs=0.05)

                async def retained() -> bool:
                    text = await asyncio.to_thread(mqtt_retained, broker.port, settings.plan_topic)
                    return bool(text) and json.loads(text) == stored

                await eventually(retained, "the stored plan retained on <root>/plan")
        # the plan covers the two hours, sees the cap coming, and holds it while it lasts
        steps = stored["steps"]
        assert steps[0]["start"] == stored["at"]
        assert steps[-1]["end"] >= (AT + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
        (outlook,) = stored["events"]
        assert outlook["id"] == "cap-ahead"
        assert outlook["predicted_shortfall_kw"] is not None
        # the steps that overlap the cap hold it (less the plan's reserve, the model error the
        # feedback has not reached yet), the others none; the event's outlook is the shortfall
        # over those steps against the cap itself
        reserve = reserve_kw
        start, end = AT + timedelta(minutes=30), AT + timedelta(minutes=90)
        worst, energy = 0.0, 0.0
        for s in steps:
            a, b = datetime.fromisoformat(s["start"]), datetime.fromisoformat(s["end"])
            overlap = (min(b, end) - max(a, start)).total_seconds()
            if overlap > 0:
                assert 1800.0 - reserve - 0.1 <= s["import_limit_kw"] <= 1800.0, s
                miss = max(s["shortfall_kw"] - (1800.0 - s["import_limit_kw"]), 0.0)
                worst = max(worst, miss)
                energy += miss * overlap / 3600.0
            else:
                assert s["import_limit_kw"] is None, s
        assert outlook["predicted_shortfall_kw"] == pytest.approx(worst, abs=0.05)
        assert outlook["predicted_shortfall_kwh"] == pytest.approx(energy, abs=0.1)
    finally:
        broker.stop()
