"""The varied rig end to end: meters along the feeder read by real Modbus and MQTT clients, in
simulated time; graded against the rig's own physics (pandapower)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from datetime import UTC, datetime

import aiomqtt
import pytest
from pymodbus.client import AsyncModbusTcpClient

from controller.clock import FakeClock
from devices.sunspec import decode_model, layout
from hil import HilRig
from hil.ami import AmiSettings
from hil.physics import FeederPhysics
from hil.profiles import CloudPass
from hil.sim_devices import SimMeter
from hil.variation import RigVariation
from tests.support.wait import until

pytestmark = pytest.mark.asyncio

EVENING = datetime(2026, 1, 1, 19, 0, tzinfo=UTC)


def _rig(clock: FakeClock, **kwargs: object) -> HilRig:
    kwargs.setdefault("pv_available_frac", lambda _t: 0.0)
    return HilRig(
        monotonic=clock.monotonic,
        now=clock.now,
        load_scale=lambda _t: 1.0,
        physics_period_s=None,
        solve_on_write=False,
        **kwargs,  # type: ignore[arg-type]
    )


async def _read_meter(client: AsyncModbusTcpClient, meter: SimMeter, unit: int) -> dict[str, float]:
    model = layout(meter.model)
    rr = await client.read_holding_registers(
        meter.model_address(meter.model), count=model.length + 2, device_id=unit
    )
    assert not rr.isError(), rr
    values = decode_model(model, rr.registers)
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float)}


async def test_no_variation_keeps_the_case_picture() -> None:
    clock = FakeClock(EVENING)
    async with _rig(clock, pv_buses=(), battery_buses=()) as rig:
        state = await rig.step()
    plain = FeederPhysics()
    plain.solve()  # the rig solves on entry and on the step: the second one warm-started
    expected = plain.solve()
    assert state.v_pu == expected.v_pu  # bit for bit: one factor, the case's lines
    assert state.head_p_kw == expected.head_p_kw
    assert state.bus_p_kw == pytest.approx(plain.base_bus_load_kw | {1: 0.0})


async def test_modbus_meters_behind_one_gateway_read_the_physics_within_their_class() -> None:
    clock = FakeClock(EVENING)
    spec = RigVariation(seed=4)
    async with _rig(
        clock, variation=spec, meter_buses="all", single_phase_meter_buses=(9, 27)
    ) as rig:
        state = rig.state
        meters = [d for d in rig.devices if d.kind == "meter" and d.name != "head"]
        assert len(meters) == 32
        assert len({d.port for d in meters}) == 1  # one gateway ...
        assert sorted(d.unit for d in meters) == list(range(1, 33))  # ... many unit ids
        gateway = meters[0]
        client = AsyncModbusTcpClient(gateway.host, port=gateway.port, timeout=2.0, retries=0)
        assert await client.connect()
        try:
            exact = 0
            for d in meters:
                sim = rig.sim(d.name)
                assert isinstance(sim, SimMeter)
                assert sim.model == (201 if d.bus in (9, 27) else 203)
                values = await _read_meter(client, sim, d.unit)
                true_p = state.bus_p_kw[d.bus] * 1000.0
                true_v = state.v_pu[d.bus] * 12_660.0
                w_step = 10.0 ** (values.get("W_SF", 0))
                # class 0.5: 4.5 sigma of noise (0.25 %) + the bias (<= 0.15 %) + one step
                assert values["W"] == pytest.approx(true_p, abs=0.0128 * true_p + w_step)
                assert values["PPV"] == pytest.approx(true_v, abs=0.0051 * true_v + 1.0)
                exact += values["W"] == round(true_p / w_step) * w_step
            assert exact < len(meters) / 2  # a meter with an accuracy class, not the result
            # the head meter too: class 0.2
            head = rig.device("head")
            head_client = AsyncModbusTcpClient(head.host, port=head.port, timeout=2.0, retries=0)
            assert await head_client.connect()
            try:
                values = await _read_meter(head_client, rig.meter, 1)
            finally:
                head_client.close()
            assert values["W"] == pytest.approx(state.head_p_kw * 1000.0, rel=0.0051, abs=1000.0)
            assert values["W"] != pytest.approx(state.head_p_kw * 1000.0, abs=1.0)
            # bad data: a wrong CT ratio shows in what the meter serves
            rig.miscalibrate("m18", 2.0)
            await rig.step()
            m18 = rig.device("m18")
            sim18 = rig.sim("m18")
            assert isinstance(sim18, SimMeter)
            values = await _read_meter(client, sim18, m18.unit)
            assert values["W"] == pytest.approx(2.0 * rig.state.bus_p_kw[18] * 1000.0, rel=0.015)
        finally:
            client.close()


async def test_the_varied_rig_loads_differ_by_bus_and_total_follows_the_scale() -> None:
    clock = FakeClock(EVENING)
    async with _rig(clock, pv_buses=(), battery_buses=(), variation=RigVariation(seed=2)) as rig:
        state = rig.state
    base = FeederPhysics().base_bus_load_kw
    ratios = [state.bus_p_kw[b] / base[b] for b in base]
    assert max(ratios) - min(ratios) > 0.2  # each bus its own factor
    assert sum(state.bus_p_kw.values()) == pytest.approx(sum(base.values()), rel=0.05)


async def test_ami_meters_publish_at_their_cadence_some_late_some_missing() -> None:
    clock = FakeClock(EVENING)
    settings = AmiSettings(seed=3, late_frac=0.3, missing_frac=0.15)
    async with _rig(
        clock,
        variation=RigVariation(seed=3),
        meter_buses="half",
        meter_transport="mqtt",
        ami=settings,
        pv_buses=(),
        battery_buses=(),
    ) as rig:
        amis = [d for d in rig.devices if d.name.startswith("ami")]
        assert [d.bus for d in amis] == list(range(2, 34, 2))
        entry = next(e for e in rig.config_devices(revert_s=30.0) if e["name"] == "ami04")
        assert entry == {
            "name": "ami04",
            "kind": "meter",
            "bus": 4,
            "transport": {
                "type": "mqtt",
                "host": amis[0].host,
                "port": amis[0].port,
                "telemetry_topic": "hil/ami/ami04/telemetry",
                "paths": {"p_kw": "p_w", "q_kvar": "q_var", "v_ll_v": "v_v", "timestamp": "ts"},
                "scale": {"p_kw": 0.001, "q_kvar": 0.001},
                "max_age_s": 120.0,
            },
        }
        got: list[tuple[str, dict[str, float], float, float]] = []
        """(meter, payload, Unix time received (simulated), true P kW at its ts)."""
        truth: dict[float, dict[int, float]] = {}
        publisher = rig.ami_publisher
        assert publisher is not None
        async with aiomqtt.Client(amis[0].host, amis[0].port) as sub:
            await sub.subscribe("hil/ami/+/telemetry", qos=1)

            async def listen() -> None:
                async for msg in sub.messages:
                    assert not msg.retain
                    body = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                    name = str(msg.topic).split("/")[2]
                    got.append((name, body, clock.now().timestamp(), 0.0))

            listener = asyncio.create_task(listen())
            try:
                for _ in range(0, 900, 5):
                    state = await rig.step()
                    truth[round(clock.now().timestamp(), 3)] = dict(state.bus_p_kw)
                    await until(lambda: len(got) == publisher.submitted, "AMI readings")
                    clock.advance(5.0)
            finally:
                listener.cancel()
    schedule = rig.meters.schedule
    assert publisher.dropped == 0
    assert len(got) == schedule.taken - schedule.missing - schedule.queued
    assert schedule.missing > 0
    late = [(n, b, at) for n, b, at, _ in got if at > b["ts"] + 1e-6]
    assert late  # held back: their own timestamp, older than their publication
    assert all(at - b["ts"] <= 60.0 + 5.0 for _, b, at in late)
    for name in {d.name for d in amis}:
        stamps = [b["ts"] for n, b, _, _ in got if n == name]
        assert stamps == sorted(stamps)
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        cadence = schedule.cadence_s(name)
        # steps are 5 s apart: each reading is taken at the first step at or after it is due
        assert all(g >= cadence - 5.0 - 1e-6 for g in gaps)
    for name, body, _, _ in got:  # each reading is its bus's truth at its timestamp
        bus = int(name.removeprefix("ami"))
        true_kw = truth[body["ts"]][bus]
        assert body["p_w"] == pytest.approx(true_kw * 1000.0, rel=0.0128, abs=10.0)
        assert math.isfinite(body["v_v"])
        assert 0.9 * 12_660 < body["v_v"] < 1.05 * 12_660


async def test_a_cloud_reaches_a_far_bus_after_a_near_one() -> None:
    clock = FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    spec = RigVariation(seed=1, cloud_speed_m_s=10.0, span_m=300.0)
    cloud = CloudPass(start_s=300.0, end_s=1500.0, depth=0.8, edge_s=30.0)
    async with _rig(
        clock,
        variation=spec,
        pv_available_frac=lambda _t: 0.9,
        clouds=(cloud,),
        battery_buses=(),
    ) as rig:
        shaded: dict[str, float] = {}
        for _ in range(0, 1200, 10):
            await rig.step()
            for name in ("pv07", "pv18"):
                inv = rig.inverters[name]
                if name not in shaded and inv.available_kw < 0.5 * 0.9 * inv.w_max_kw:
                    shaded[name] = rig.t
            clock.advance(10.0)
    # bus 7 is 6 spans out, bus 18 is 17: the front takes 11 × 300 m / 10 m/s = 330 s more
    assert shaded["pv07"] == pytest.approx(300.0 + 6 * 30.0 + 15.0, abs=10.0)
    assert shaded["pv18"] - shaded["pv07"] == pytest.approx(330.0, abs=10.0)


async def test_config_lists_gateway_meters_without_the_head_key() -> None:
    clock = FakeClock(EVENING)
    async with _rig(clock, meter_buses=(5, 18), pv_buses=(), battery_buses=()) as rig:
        entries = {e["name"]: e for e in rig.config_devices(revert_s=30.0)}
        gateway = rig.device("m05")
    assert entries["head"]["head"] is True
    assert entries["m05"] == {
        "name": "m05",
        "kind": "meter",
        "bus": 5,
        "transport": {"type": "tcp", "host": "127.0.0.1", "port": gateway.port, "unit": 1},
    }
    assert entries["m18"]["transport"]["unit"] == 2
    assert entries["m18"]["transport"]["port"] == gateway.port
