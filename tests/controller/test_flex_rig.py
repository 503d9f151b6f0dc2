"""Each feederd publishes its flexibility on ``<root>/flex``: the daemon on the HIL rig (the
33-bus feeder, four 250 kW batteries, simulated time) and a real Mosquitto.

- every interval a retained document the coordinator's reading (``controller.flex.parse_flex``)
  accepts, a late subscriber gets the latest;
- under the coordinator's import limit (``fleet:...``) ``max_kw`` stays what the feeder draws
  left alone while ``limit_kw`` shows the limit; under anyone else's limit ``max_kw`` keeps to
  it; an interval the fallback rule dispatched publishes nulls with health ``fallback``;
- the promise the coordinator relies on, graded on the rig's physics (pandapower's head import,
  never the controller's estimate): given the published ``min_kw`` as its import limit, the
  feeder holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from controller.commands.rig.simulation import Simulation
from controller.dr import MqttSettings
from controller.flex import Flexibility, parse_flex
from controller.records import COMPLIANCE_TOLERANCE, CycleRecord, CycleStatus
from tests.support.feeder import INTERVAL_S, RIG_DEFAULTS, TEST_DEFAULTS
from tests.support.mosquitto import Mosquitto
from tests.support.wait import until

MAX_AGE_S = 2 * INTERVAL_S


class Flexes:
    """The rig's daemon with MQTT, and every ``<root>/flex`` message it published."""

    def __init__(self, sim: Simulation, settings: MqttSettings) -> None:
        self.sim = sim
        self.settings = settings
        self.got: list[bytes] = []

    async def step(self) -> tuple[CycleRecord, Flexibility]:
        """One interval, and the flexibility it published as the coordinator reads it."""
        record = await self.sim.step()
        await until(lambda: self._seq() == record.cycle, f"the flex of interval {record.cycle}")
        return record, self.read(self.got[-1])

    def read(self, payload: bytes) -> Flexibility:
        return parse_flex(
            payload, now=self.sim.clock.now(), max_age_s=MAX_AGE_S, site=self.sim.loaded.config.site
        )

    def _seq(self) -> int | None:
        return json.loads(self.got[-1])["seq"] if self.got else None

    async def event(self, event_id: str, kw: float, *, start_in_s: float = 0.0) -> None:
        start = self.sim.clock.now() + dt.timedelta(seconds=start_in_s)
        decision = await self.sim.daemon.dr.submit_async(
            {
                "id": event_id,
                "type": "import_limit",
                "kw": kw,
                "start": start.isoformat(),
                "end": (start + dt.timedelta(hours=1)).isoformat(),
            },
            source="mqtt",
        )
        assert decision.result == "accepted", decision

    async def cancel(self, event_id: str) -> None:
        decision = await self.sim.daemon.dr.submit_async({"id": event_id, "cancel": True})
        assert decision.result == "cancelled", decision


async def _listen(port: int, topic: str, got: list[bytes], ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        ready.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes | bytearray)
            got.append(bytes(message.payload))


async def _retained(port: int, topic: str) -> bytes:
    """What a subscriber arriving now is given on ``topic`` (a retained message)."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            assert message.retain
            assert isinstance(message.payload, bytes | bytearray)
            return bytes(message.payload)
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def flex_feeder(tmp_path: Path, **overrides: Any) -> AsyncIterator[Flexes]:
    broker = Mosquitto(tmp_path)
    await broker.start()
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker.port,
        topic_root=f"feederd/t{uuid.uuid4().hex[:8]}",
        backoff_min_s=0.05,
        backoff_max_s=0.2,
    )
    got: list[bytes] = []
    ready = asyncio.Event()
    listener = asyncio.create_task(_listen(broker.port, settings.flex_topic, got, ready))
    try:
        await asyncio.wait_for(ready.wait(), 30.0)
        async with Simulation.open(
            overrides={**TEST_DEFAULTS, **overrides},
            rig_options=RIG_DEFAULTS,
            mqtt=settings,
        ) as sim:
            flexes = Flexes(sim, settings)
            flexes.got = got
            yield flexes
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        broker.stop()


async def test_every_interval_publishes_a_retained_flex_the_coordinator_accepts(
    tmp_path: Path,
) -> None:
    async with flex_feeder(tmp_path) as f:
        for _ in range(3):
            record, flex = await f.step()
            assert record.status is CycleStatus.OPTIMAL
            assert flex.seq == record.cycle
            # stamped by the daemon's clock at the interval's end (the step then moves it on)
            assert flex.at == f.sim.clock.now() - dt.timedelta(seconds=INTERVAL_S)
            assert flex.health == "ok"
            assert flex.devices_up == flex.devices == len(f.sim.daemon.fleet)
            assert flex.import_kw == pytest.approx(record.import_kw, abs=0.01)
            assert flex.limit_kw is None
            assert flex.events == ()
            assert (flex.interval_s, flex.window_s) == (INTERVAL_S, 3600.0)
            assert flex.min_kw is not None
            assert flex.max_kw is not None
            # four 250 kW batteries and the flexible loads: hundreds of kW to offer
            assert flex.max_kw - flex.min_kw > 500.0
            assert len(flex.curve) == 4
            assert flex.cost_at(flex.min_kw) > 0.0
            assert flex.curve[-1] == (flex.max_kw, 0.0)
        assert len(f.got) == 3  # one per interval, none twice
        late = await _retained(f.settings.port, f.settings.flex_topic)
        assert late == f.got[-1]
        registry = f.sim.daemon.metrics.registry
        assert registry.get_sample_value("feederd_flex_min_kw") == pytest.approx(flex.min_kw, 0.01)
        assert registry.get_sample_value("feederd_flex_max_kw") == pytest.approx(flex.max_kw, 0.01)
        assert (registry.get_sample_value("feederd_flex_solves_total") or 0) >= 3 * 4
        assert registry.get_sample_value("feederd_flex_duration_seconds_count") == 3


async def test_max_kw_leaves_out_the_coordinators_limit_and_keeps_to_the_others(
    tmp_path: Path,
) -> None:
    """A ``fleet:`` limit 300 kW under what the feeder draws left alone: held (the dispatch
    obeys it), listed, shown as ``limit_kw``, and left out of ``max_kw``. The same limit from
    anyone else (the utility's own event): ``max_kw`` keeps to it."""
    async with flex_feeder(tmp_path) as f:
        for _ in range(2):
            _, free = await f.step()
        assert free.max_kw is not None
        limit = free.max_kw - 300.0
        await f.event("fleet:evening:1", limit)
        for _ in range(3):
            record, flex = await f.step()
        assert flex.limit_kw == pytest.approx(limit, abs=0.01)
        assert record.import_kw is not None
        assert record.import_kw <= limit * (1.0 + COMPLIANCE_TOLERANCE)  # the dispatch obeys
        assert flex.max_kw is not None
        # what it would draw left alone: the same as before the event (the loads and the sun
        # have not moved; the batteries' charge by a few kWh)
        assert flex.max_kw == pytest.approx(free.max_kw, rel=0.01)
        (listed,) = flex.events
        assert (listed.id, listed.type, listed.source, listed.active) == (
            "fleet:evening:1",
            "import_limit",
            "mqtt",
            True,
        )
        assert listed.kw == pytest.approx(limit)

        await f.event("utility-1", limit)
        await f.cancel("fleet:evening:1")
        for _ in range(3):
            _, flex = await f.step()
        assert flex.limit_kw == pytest.approx(limit, abs=0.01)
        assert [e.id for e in flex.events] == ["utility-1"]
        assert flex.max_kw is not None
        assert flex.min_kw is not None
        assert flex.max_kw <= limit  # the plan holds it, a margin inside
        assert flex.min_kw < flex.max_kw


async def test_an_interval_the_fallback_rule_dispatched_publishes_nulls(tmp_path: Path) -> None:
    """The solver given no time at all: the proportional rule dispatches, and the flex says
    so (nulls, ``fallback``), counted as not dispatched; the next LP interval offers again."""
    async with flex_feeder(tmp_path) as f:
        await f.step()
        dispatcher = f.sim.daemon.controller.dispatcher
        kept = dispatcher.time_limit_s
        dispatcher.time_limit_s = 1e-9
        record, flex = await f.step()
        assert record.status is CycleStatus.FALLBACK
        assert (flex.min_kw, flex.max_kw, flex.curve, flex.health) == (None, None, (), "fallback")
        assert flex.import_kw is not None
        registry = f.sim.daemon.metrics.registry
        missed = registry.get_sample_value(
            "feederd_flex_missed_total", {"reason": "not_dispatched"}
        )
        assert missed == 1
        assert math.isnan(registry.get_sample_value("feederd_flex_min_kw") or 0.0)
        dispatcher.time_limit_s = kept
        again, offered = await f.step()
        assert again.status is CycleStatus.OPTIMAL
        assert offered.flexible
        assert offered.health == "ok"


async def test_the_published_min_kw_is_held_at_the_head(tmp_path: Path) -> None:
    """The coordinator's promise: an import limit at the published ``min_kw`` is held. The
    limit is given 1 % above it: ``min_kw`` is the lowest cap of the dispatch's own model,
    whose head import is a linearisation (its losses read about 5 kW, 0.4 %, below
    pandapower's on this feeder at this point; the head meter's feedback takes that out, but
    only from the interval after it was measured). The event is announced two intervals
    ahead, as a coordinator's allocation is. Graded on the physics with the product's own
    definition of a limit held (within 2 % of it), at every interval of the event."""
    async with flex_feeder(tmp_path) as f:
        for _ in range(2):
            _, flex = await f.step()
        assert flex.min_kw is not None
        assert flex.max_kw is not None
        limit = flex.min_kw * 1.01
        assert limit < flex.max_kw - 500.0  # a deep cut: the batteries and loads all at work
        await f.event("fleet:deep:1", limit, start_in_s=2 * INTERVAL_S)
        heads = []
        for _ in range(2 + 8):
            record, _ = await f.step()
            assert record.status.dispatched
            heads.append((record.import_limit_kw, (await f.sim.physics()).head_p_kw))
        during = [head for lim, head in heads if lim is not None]
        assert len(during) >= 8
        assert all(h <= limit * (1.0 + COMPLIANCE_TOLERANCE) for h in during), (limit, during)
