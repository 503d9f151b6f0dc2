"""The price feed over a real Mosquitto, into the daemon on the HIL rig (simulated clock):
accepted (the horizon's prices follow it), garbage refused with its reason on the retained
``price/status`` (the last good feed kept), and a feed whose periods have all passed falling
back to the tariff, said once. Each wait is for a condition under a hang guard."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from ops_helpers import GUARD_S, eventually, mqtt_pub, mqtt_retained
from structlog.testing import capture_logs

from controller.commands.rig.simulation import Simulation
from controller.dr.intake import MqttSettings

pytestmark = pytest.mark.integration

INTERVAL_S = 300.0
TARIFF = {"periods": [{"from": "00:00", "import": 0.10, "export": 0.03}]}


def _settings(broker: int, site: str) -> MqttSettings:
    return MqttSettings(
        host="127.0.0.1", port=broker, topic_root=f"feederd/{site}", backoff_min_s=0.1
    )


def _feed(sim: Simulation, feed_id: str, price: float, hours: float) -> str:
    now = sim.clock.now()
    return json.dumps(
        {
            "id": feed_id,
            "import": [
                {
                    "start": (now + timedelta(hours=1)).isoformat(),
                    "end": (now + timedelta(hours=1 + hours)).isoformat(),
                    "price": price,
                }
            ],
        }
    )


async def _status(broker: int, site: str) -> dict[str, Any]:
    text = await asyncio.to_thread(mqtt_retained, broker, f"feederd/{site}/price/status")
    return json.loads(text) if text else {}


async def test_the_price_feed_accepted_refused_and_expired(broker: int, site: str) -> None:
    overrides = {
        "interval_s": INTERVAL_S,
        "poll": {"timeout_s": 2.0},
        "control": {"horizon_h": 3.0},
        "forecast": {"enabled": False},
        "tariff": TARIFF,
    }
    with capture_logs() as logs:
        async with Simulation.open(
            overrides=overrides,
            rig_options={"load_scale": lambda _t: 1.0, "pv_available_frac": lambda _t: 0.8},
            mqtt=_settings(broker, site),
        ) as sim:
            intake = sim.daemon.intake
            assert intake is not None
            await asyncio.wait_for(intake.connected.wait(), GUARD_S)
            topic = f"feederd/{site}/price"
            prices = sim.daemon.prices

            # a good feed: the second hour priced at 0.90
            await asyncio.to_thread(mqtt_pub, broker, topic, _feed(sim, "day-1", 0.9, 1.0))
            await eventually(lambda: len(prices.recent) == 1, "a decision on the feed")
            await sim.step()
            inp = sim.daemon.controller.last_input
            assert inp is not None
            assert inp.forecast is not None
            assert inp.forecast.price is not None
            by_start = dict(zip(inp.step_starts_s, inp.forecast.price, strict=True))
            assert by_start[0.0] == pytest.approx(0.10)  # the tariff now
            # steps: four of 300 s, then 900 s blocks (1200, 2100, 3000, 3900, ...); the feed
            # prices 3600..7200 s, the block 3000..3900 a third of its time
            assert by_start[3000.0] == pytest.approx((600 * 0.10 + 300 * 0.90) / 900)
            assert by_start[3900.0] == pytest.approx(0.90)
            assert inp.forecast.price.iloc[-1] == pytest.approx(0.10)  # the tariff after it
            status = await _status(broker, site)
            assert (status["state"], status["feed"]["id"]) == ("feed", "day-1"), status
            assert status["last"]["result"] == "accepted"

            # garbage: refused with its reason, the last good feed kept
            await asyncio.to_thread(mqtt_pub, broker, topic, '{"id": "bad", "import": "lots"}')
            await eventually(lambda: len(prices.recent) == 2, "a decision on the garbage")
            await eventually(lambda: _rejected(broker, site), "the refusal on price/status")
            status = await _status(broker, site)
            assert status["last"]["id"] == "bad"
            assert "'import' must be a list of periods" in status["last"]["reason"]
            assert status["feed"]["id"] == "day-1"
            await sim.step()  # the interval goes on, on the last good feed

            # the feed stops: once its last period has passed, the tariff again, said once
            sim.clock.advance(2 * 3600.0)
            await sim.step()
            await sim.step()
            inp = sim.daemon.controller.last_input
            assert inp is not None
            assert inp.forecast is not None
            assert inp.forecast.price is not None
            assert set(inp.forecast.price.round(6)) == {0.10}
            await eventually(lambda: _expired(broker, site), "the expiry on price/status")
            counted = {
                d: sim.daemon.metrics.registry.get_sample_value(
                    "feederd_price_feed_messages_total", {"decision": d}
                )
                for d in ("accepted", "rejected")
            }
    assert counted == {"accepted": 1.0, "rejected": 1.0}
    expired = [e for e in logs if e["event"] == "price_feed_expired"]
    assert len(expired) == 1, expired
    assert expired[0]["id"] == "day-1", expired
    assert expired[0]["using"] == "the tariff"
    rejected = [e for e in logs if e["event"] == "price_feed_rejected"]
    assert len(rejected) == 1, rejected
    assert rejected[0]["keeping"] == "day-1", rejected


async def _rejected(broker: int, site: str) -> bool:
    status = await _status(broker, site)
    return bool(status) and status["last"]["result"] == "rejected"


async def _expired(broker: int, site: str) -> bool:
    status = await _status(broker, site)
    return bool(status) and status["state"] == "expired"
