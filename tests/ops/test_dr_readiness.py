"""Event readiness over a real Mosquitto: events announced on ``dr/event`` hours ahead, the daemon
on the HIL rig (simulated clock, 5-minute intervals), and the retained ``dr/status`` saying
which the plan can meet and by how much the other will be missed.

The rig imports about 2,330 kW; its four batteries (250 kW each) can take at most 1,000 kW off
that. A cap of 2,200 kW is within reach (ready); one of 500 kW is not: the plan predicts
missing it by about 2,330 − 1,000 − 500 kW, for each hour of it."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from ops_helpers import GUARD_S, eventually, mqtt_pub, mqtt_retained

from controller.commands.rig.simulation import Simulation
from controller.dr.intake import MqttSettings

pytestmark = pytest.mark.integration

INTERVAL_S = 300.0


def _event(sim: Simulation, event_id: str, kw: float, start_h: float) -> str:
    now = sim.clock.now()
    return json.dumps(
        {
            "id": event_id,
            "type": "import_limit",
            "kw": kw,
            "start": (now + timedelta(hours=start_h)).isoformat(),
            "end": (now + timedelta(hours=start_h + 1.0)).isoformat(),
        }
    )


async def _events(broker: int, site: str) -> dict[str, dict[str, Any]]:
    text = await asyncio.to_thread(mqtt_retained, broker, f"feederd/{site}/dr/status")
    return {e["id"]: e for e in json.loads(text)["events"]} if text else {}


async def test_dr_status_says_which_announced_event_the_plan_can_meet(
    broker: int, site: str
) -> None:
    overrides = {
        "interval_s": INTERVAL_S,
        "poll": {"timeout_s": 2.0},
        "control": {"horizon_h": 5.0},
        "forecast": {"enabled": False},
    }
    settings = MqttSettings(
        host="127.0.0.1", port=broker, topic_root=f"feederd/{site}", backoff_min_s=0.1
    )
    async with Simulation.open(
        overrides=overrides,
        rig_options={
            "load_scale": lambda _t: 1.0,
            "pv_available_frac": lambda _t: 0.8,
            "battery_soc_pct": 50.0,
        },
        mqtt=settings,
    ) as sim:
        assert sim.daemon.intake is not None
        await asyncio.wait_for(sim.daemon.intake.connected.wait(), GUARD_S)
        before = await sim.physics()  # batteries idle: the feeder's own import
        topic = f"feederd/{site}/dr/event"
        await asyncio.to_thread(mqtt_pub, broker, topic, _event(sim, "mild", 2200.0, 1.0))
        await asyncio.to_thread(mqtt_pub, broker, topic, _event(sim, "deep", 500.0, 3.0))
        await eventually(lambda: len(sim.daemon.dr.recent) == 2, "decisions on both events")

        # accepted: on dr/status at once, not yet judged by a plan
        async def listed() -> bool:
            return set(await _events(broker, site)) == {"mild", "deep"}

        await eventually(listed, "both events on dr/status")
        accepted = await _events(broker, site)
        assert {e["ready"] for e in accepted.values()} == {None}, accepted

        # after the first plans: judged, and republished
        for _ in range(2):
            await sim.step()

        async def judged() -> bool:
            events = await _events(broker, site)
            return all(e.get("ready") is not None for e in events.values()) and len(events) == 2

        await eventually(judged, "dr/status with both predictions")
        events = await _events(broker, site)
        gauge = sim.daemon.metrics.registry.get_sample_value(
            "feederd_dr_predicted_shortfall_kw", {"event": "deep"}
        )
    mild, deep = events["mild"], events["deep"]
    assert mild["ready"] is True, mild
    assert mild["predicted_shortfall_kw"] <= 0.02 * 2200.0, mild
    expected = before.head_p_kw - 1000.0 - 500.0  # what the batteries at full power leave
    assert deep["ready"] is False, deep
    assert deep["predicted_shortfall_kw"] == pytest.approx(expected, rel=0.1), (deep, expected)
    assert deep["predicted_shortfall_kwh"] == pytest.approx(expected * 1.0, rel=0.1), deep
    assert gauge == pytest.approx(deep["predicted_shortfall_kw"], rel=0.05)
