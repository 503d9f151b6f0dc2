"""The fleet's OpenADR VEN end to end: the utility's VTN (openleadr's own ``OpenADRServer``, mutual
TLS, XML signatures both ways; ``tests.support.vtn``) dispatches the coordinator, whose targets
reach the feeders (lightweight MQTT feeders that speak feederd's side of the contract,
``tests.support.fake_fleet``) over a real Mosquitto.

- a VTN event becomes one system target (source ``openadr``) split among the feeders: their
  events' reductions add up to the event's, and the VTN hears ``optIn``;
- a modification the fleet cannot deliver replaces the target, and the VEN opts out with the
  figures once the allocation says so;
- a cancellation at the VTN cancels the feeders' events.

The coordinator's interval ticker is off; the ticks a target makes due happen at once. The VEN
polls in real time; the simulated clock starts ahead of the wall clock (openleadr's VTN keeps
its events' status on the wall clock: ``tests.controller.openadr_helpers``). Waits are for
conditions on the network, never for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.clock import FakeClock
from coordinator.config import FleetConfig, parse_fleet
from coordinator.daemon import FleetDaemon
from devices.tasks import cancel_and_wait
from tests.controller.openadr_helpers import sim_start
from tests.support.fake_fleet import FakeFeeder, FakeFleet, make_feeders
from tests.support.mosquitto import Mosquitto
from tests.support.vtn import Pki, Vtn, make_pki
from tests.support.wait import eventually, until

pytestmark = pytest.mark.integration

FEEDERS = make_feeders(3, seed=5, interval_s=5.0)
FLEX_KW = sum(f.baseline_kw - f.min_kw for f in FEEDERS)
"""What the three can take off together (each holds down to its ``min_kw``)."""
LEVEL_1_KW = round(0.5 * FLEX_KW, 1)
LEVEL_2_KW = round(1.5 * FLEX_KW, 1)
"""Beyond the fleet: the allocation falls short by ``LEVEL_2_KW - FLEX_KW``."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _config(vtn: Vtn, port: int, tmp_path: Path) -> FleetConfig:
    levels = {
        "level_1": {"type": "reduce_by", "kw": LEVEL_1_KW},
        "level_2": {"type": "reduce_by", "kw": LEVEL_2_KW},
    }
    table = vtn.ven_config(poll_s=1.0, poll_min_s=0.05, request_timeout_s=5.0, simple=levels)
    data: dict[str, Any] = {
        "name": "north",
        "interval_s": 5.0,
        "journal": {"path": str(tmp_path / "fleet.sqlite")},
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": "fleet-openadr", "keepalive_s": 5},
        "metrics": {"enabled": False},
        "openadr": {**table, "group": "all"},
        "feeders": [{"site": f.site, "rating_kw": f.rating_kw} for f in FEEDERS],
    }
    return parse_fleet(data, source="fleet.toml", base_dir=tmp_path)


@dataclasses.dataclass
class _Rig:
    vtn: Vtn
    daemon: FleetDaemon
    fleet: FakeFleet
    clock: FakeClock

    at: dt.datetime | None = None
    """When the events are looked at (the VTN event's window)."""

    def events(self, site: str) -> dict[str, Any]:
        """The feeder's import limits in force at ``at``, by id."""
        feeder: FakeFeeder = self.fleet.feeders[site]
        return {e.id: e for e in feeder.in_force(self.at or self.clock.now())}


@contextlib.asynccontextmanager
async def _rig(pki: Pki, tmp_path: Path) -> AsyncIterator[_Rig]:
    broker = Mosquitto(tmp_path)
    await broker.start()
    clock = FakeClock(sim_start())
    try:
        async with Vtn(pki, ven_name="fleet-north", ven_id="ven-fleet-north") as vtn:
            config = _config(vtn, broker.port, tmp_path)
            mqtt = dataclasses.replace(config.mqtt_settings(), backoff_min_s=0.05)
            async with (
                FleetDaemon.open(config, clock=clock, mqtt=mqtt, ticker=False) as daemon,
                FakeFleet.open(FEEDERS, port=broker.port, now=clock.now) as fleet,
            ):
                stop = asyncio.Event()
                running = asyncio.create_task(daemon.run(stop), name="test.coordinator")
                try:
                    assert daemon.ven is not None
                    await until(lambda: daemon.ven is not None and daemon.ven.registered, "VEN")

                    async def up() -> bool:
                        await daemon.tick()
                        doc = await daemon.call(lambda core: core.status())
                        return all(f["state"] == "up" for f in doc["feeders"].values())

                    await eventually(up, "every feeder's flexibility")
                    yield _Rig(vtn, daemon, fleet, clock)
                finally:
                    stop.set()
                    await asyncio.wait({running}, timeout=10)
                    await cancel_and_wait([running])
    finally:
        broker.stop()


def _reduction(rig: _Rig, suffix: str) -> float:
    """The reduction the feeders were asked under events whose id ends with ``suffix``: each
    one's baseline minus its limit."""
    total = 0.0
    for f in FEEDERS:
        for event_id, event in rig.events(f.site).items():
            if event_id.endswith(suffix):
                total += f.baseline_kw - event.kw
    return total


async def test_the_vtn_dispatches_the_fleet_through_its_targets(pki: Pki, tmp_path: Path) -> None:
    async with _rig(pki, tmp_path) as rig:
        start = rig.clock.now() + dt.timedelta(minutes=10)
        rig.vtn.add_event([(start, 1800.0, 1)], event_id="north-peak")
        rig.at = start + dt.timedelta(minutes=1)
        target = "oadr:north-peak:0:0"
        event = f"fleet:{target}:1"
        await until(
            lambda: all(event in rig.events(f.site) for f in FEEDERS), "each feeder's event"
        )
        assert _reduction(rig, event) == pytest.approx(LEVEL_1_KW, abs=0.05)
        records = await rig.daemon.targets()
        assert [(r.target.id, r.source) for r in records] == [(target, "openadr")]
        await until(
            lambda: any(r.opt_type == "optIn" for r in rig.vtn.responses_to("north-peak")),
            "the VEN's optIn",
        )

        # modification 1: more than the fleet has; the new target replaces the old
        rig.vtn.modify_event("north-peak", values=[2])
        modified = "fleet:oadr:north-peak:1:0:1"
        await until(
            lambda: all(modified in rig.events(f.site) for f in FEEDERS), "the modified events"
        )
        await until(
            lambda: all(event not in rig.events(f.site) for f in FEEDERS), "the old ones cancelled"
        )
        for f in FEEDERS:  # everything each feeder has: down to its min_kw
            assert rig.events(f.site)[modified].kw == pytest.approx(f.min_kw, abs=0.05)
        await until(
            lambda: any(r.opt_type == "optOut" for r in rig.vtn.responses_to("north-peak", 1)),
            "the VEN's optOut for what the fleet cannot deliver",
        )
        out = next(r for r in rig.vtn.responses_to("north-peak", 1) if r.opt_type == "optOut")
        short = LEVEL_2_KW - FLEX_KW
        assert f"{short:.0f} kW" in (out.response_description or "")

        # the VTN cancels: so do the feeders
        rig.vtn.cancel_event("north-peak")
        await until(
            lambda: all(not rig.events(f.site) for f in FEEDERS), "the feeders' events cancelled"
        )
