"""The whole rig: devices on their own ports, physics answering Modbus writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from controller.clock import FakeClock
from devices.sunspec import Value, decode_model, layout
from hil import (
    DEFAULT_BATTERY_BUSES,
    DEFAULT_PV_BUSES,
    HilRig,
    RigDevice,
)
from tests.support.wait import until


def _clock(start_s: float) -> FakeClock:
    """A fake monotonic clock that starts at ``start_s``."""
    clock = FakeClock()
    clock.advance(start_s)
    return clock


pytestmark = pytest.mark.asyncio

"""Real seconds to wait for the rig's background work before calling it a hang."""


def _s16(value: int) -> int:
    return value & 0xFFFF


@pytest.fixture
def clock() -> FakeClock:
    return _clock(500.0)


@pytest.fixture
async def rig(clock: FakeClock) -> AsyncIterator[HilRig]:
    async with HilRig(
        monotonic=clock.monotonic,
        load_scale=lambda _t: 1.0,
        pv_available_frac=lambda _t: 0.8,
        physics_period_s=None,  # the tests step the physics themselves
    ) as rig:
        yield rig


async def _connect(device: RigDevice, request_timeout_s: float = 2.0) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient(
        device.host, port=device.port, timeout=request_timeout_s, retries=0
    )
    assert await client.connect()
    return client


async def _discover(client: AsyncModbusTcpClient, unit: int) -> dict[int, int]:
    """Walk the SunSpec chain: model id -> address of its ID register."""
    head = await client.read_holding_registers(40000, count=2, device_id=unit)
    assert head.registers == [0x5375, 0x6E53]
    chain: dict[int, int] = {}
    address = 40002
    while True:
        rr = await client.read_holding_registers(address, count=2, device_id=unit)
        model_id, length = rr.registers
        if model_id == 0xFFFF:
            return chain
        chain[model_id] = address
        address += length + 2


async def _read(
    client: AsyncModbusTcpClient, chain: dict[int, int], model_id: int, unit: int = 1
) -> dict[str, Value]:
    model = layout(model_id)
    rr = await client.read_holding_registers(
        chain[model_id], count=model.length + 2, device_id=unit
    )
    return decode_model(model, rr.registers)


async def _head_w(rig: HilRig) -> float:
    client = await _connect(rig.device("head"))
    try:
        chain = await _discover(client, 1)
        w = (await _read(client, chain, 203))["W"]
        assert isinstance(w, float)
        return w
    finally:
        client.close()


async def test_devices_are_listed_and_distinct(rig: HilRig) -> None:
    kinds = [d.kind for d in rig.devices]
    assert kinds.count("pv") == len(DEFAULT_PV_BUSES) == 12
    assert kinds.count("battery") == len(DEFAULT_BATTERY_BUSES) == 4
    assert kinds.count("meter") == 1
    assert len({d.port for d in rig.devices}) == len(rig.devices)
    head = rig.device("head")
    assert head.bus == 1
    assert head.unit == 1
    bat = rig.device("bat08")
    assert bat.energy_kwh == pytest.approx(500.0)
    assert bat.p_max_kw == pytest.approx(250.0)
    assert rig.device("pv18").p_max_kw == pytest.approx(150.0)


async def test_head_meter_reads_the_physics(rig: HilRig) -> None:
    state = rig.state
    # 12 × 150 kW × 0.8 of PV against 3.715 MW of load
    assert state.der_kw == pytest.approx(1440.0, abs=0.1)
    assert state.losses_kw < 202.7
    assert await _head_w(rig) == pytest.approx(state.head_p_kw * 1000.0, abs=500.0)


async def test_inverter_103_and_curtailment_raise_import(rig: HilRig) -> None:
    before = await _head_w(rig)
    pv = rig.device("pv18")
    client = await _connect(pv)
    try:
        chain = await _discover(client, pv.unit)
        assert list(chain) == [1, 103, 120, 123, 126]  # 126: the volt-var fallback
        meas = await _read(client, chain, 103)
        assert meas["W"] == pytest.approx(120_000.0)
        assert meas["PPVphAB"] == pytest.approx(rig.state.v_pu[18] * 12660.0, abs=1.0)
        limit = chain[123] + layout(123).point("WMaxLimPct").offset
        wr = await client.write_registers(limit, [500, 0, 60, 0, 1], device_id=pv.unit)
        assert not wr.isError()
        meas = await _read(client, chain, 103)
        assert meas["W"] == pytest.approx(75_000.0)
    finally:
        client.close()
    await rig.settle()
    after = await _head_w(rig)
    # 45 kW less PV at the end of the feeder: import rises by that and the extra losses
    assert 45_000.0 <= after - before <= 55_000.0


async def test_write_triggers_physics_without_a_step(rig: HilRig) -> None:
    solves = rig.solves
    pv = rig.device("pv33")
    client = await _connect(pv)
    try:
        chain = await _discover(client, pv.unit)
        limit = chain[123] + layout(123).point("WMaxLimPct").offset
        await client.write_registers(limit, [0, 0, 0, 0, 1], device_id=pv.unit)
    finally:
        client.close()
    # the write's own (debounced) solve, in the background: wait for it, not for a set time
    await until(lambda: rig.solves > solves, "the solve after the write")
    assert rig.state.der_kw == pytest.approx(1440.0 - 120.0, abs=0.1)


async def test_limit_reverts_after_fake_time(rig: HilRig, clock: FakeClock) -> None:
    pv = rig.device("pv25")
    client = await _connect(pv)
    try:
        chain = await _discover(client, pv.unit)
        limit = chain[123] + layout(123).point("WMaxLimPct").offset
        await client.write_registers(limit, [200, 0, 30, 0, 1], device_id=pv.unit)
        await rig.settle()
        curtailed = rig.state.head_p_kw
        clock.advance(29.0)
        await rig.step()
        assert (await _read(client, chain, 103))["W"] == pytest.approx(30_000.0)
        clock.advance(2.0)
        await rig.step()
        ctl = await _read(client, chain, 123)
        assert ctl["WMaxLimPct"] == pytest.approx(100.0)
        assert ctl["WMaxLim_Ena"] == 0
        assert (await _read(client, chain, 103))["W"] == pytest.approx(120_000.0)
        assert rig.state.head_p_kw < curtailed - 85.0
    finally:
        client.close()


async def test_battery_discharge_lowers_import(rig: HilRig, clock: FakeClock) -> None:
    before = rig.state.head_p_kw
    bat = rig.device("bat30")
    client = await _connect(bat)
    try:
        chain = await _discover(client, bat.unit)
        assert list(chain) == [1, 103, 120, 124]
        storage = layout(124)
        rates = chain[124] + storage.point("OutWRte").offset
        mode = chain[124] + storage.point("StorCtl_Mod").offset
        # what the driver writes: OutWRte 80 %, InWRte −80 %, WinTms, RvrtTms 600 s, RmpTms
        await client.write_registers(rates, [800, _s16(-800), 0, 600, 0], device_id=bat.unit)
        await client.write_registers(mode, [3], device_id=bat.unit)
        meas = await _read(client, chain, 103)
        assert meas["W"] == pytest.approx(200_000.0)
        await rig.settle()
        drop = before - rig.state.head_p_kw
        assert drop == pytest.approx(200.0, abs=15.0)  # plus a few kW of saved losses
        assert await _head_w(rig) == pytest.approx(rig.state.head_p_kw * 1000.0, abs=500.0)

        clock.advance(360.0)  # six minutes at 200 kW
        await rig.step()
        soc = (await _read(client, chain, 124))["ChaState"]
        assert soc == pytest.approx(100.0 * (300.0 - 20.0 / 0.95) / 500.0, abs=0.1)
    finally:
        client.close()


async def test_read_only_register_is_refused(rig: HilRig) -> None:
    meter = rig.device("head")
    client = await _connect(meter)
    try:
        chain = await _discover(client, meter.unit)
        w = chain[203] + layout(203).point("W").offset
        reply = await client.write_registers(w, [0], device_id=meter.unit)
        assert reply.isError()
        assert reply.exception_code == 2
    finally:
        client.close()


async def test_silent_device_times_out_while_others_answer(rig: HilRig) -> None:
    rig.set_silent("pv07")
    mute = await _connect(rig.device("pv07"), request_timeout_s=0.5)
    other = await _connect(rig.device("pv10"), request_timeout_s=5.0)  # healthy: generous
    try:
        with pytest.raises(ModbusIOException):
            await mute.read_holding_registers(40000, count=2, device_id=1)
        answer = await other.read_holding_registers(40000, count=2, device_id=1)
        assert answer.registers == [0x5375, 0x6E53]
    finally:
        mute.close()
        other.close()


async def test_background_physics_follows_the_profiles() -> None:
    clock = _clock(0.0)

    def sun(t: float) -> float:
        return 0.0 if t < 10.0 else 1.0

    async with HilRig(
        monotonic=clock.monotonic, pv_available_frac=sun, physics_period_s=0.02
    ) as rig:
        assert rig.state.der_kw == pytest.approx(0.0)
        clock.advance(10.0)
        # the background ticker (real time, by nature) picks up the new time on its own
        await until(lambda: rig.state.der_kw > 0.0, "the background physics step")
        assert rig.state.der_kw == pytest.approx(1800.0, abs=0.1)


async def test_settle_waits_for_the_solve_already_under_way(clock: FakeClock) -> None:
    """A write accepted just before ``settle`` is in the state it returns, even when the
    debounced solve took the write and is still running (it returned the old state)."""
    async with HilRig(
        monotonic=clock.monotonic,
        load_scale=lambda _t: 1.0,
        pv_available_frac=lambda _t: 0.8,
        physics_period_s=None,
        debounce_s=0.0,
    ) as rig:
        before = rig.state.head_p_kw
        bat = rig.sim("bat30")
        rates = bat.point_address(124, "OutWRte")
        assert bat.apply_write(rates, [800, _s16(-800), 0, 600, 0])
        assert bat.apply_write(bat.point_address(124, "StorCtl_Mod"), [3])
        for _ in range(1000):  # the debounced solve takes the writes and gets under way
            if not rig._dirty.is_set():
                break
            await asyncio.sleep(0)
        assert not rig._dirty.is_set()
        state = await rig.settle()
        assert before - state.head_p_kw == pytest.approx(200.0, abs=15.0)


async def _head_203(rig: HilRig) -> dict[str, Value]:
    """The head meter's model 203 as a Modbus client reads it."""
    client = await _connect(rig.device("head"))
    try:
        return await _read(client, await _discover(client, 1), 203)
    finally:
        client.close()


async def test_the_busbar_follows_its_profile_and_the_head_meter_measures_it() -> None:
    """An on-load tap changer: the busbar's voltage, a function of the rig's time, applied at
    each step; every bus moves with it and the head meter's voltages (PPV line to line, PhV
    line to neutral) read it over Modbus to the meter's resolution."""
    clock = _clock(0.0)

    def tap(t: float) -> float | None:
        return None if t < 10.0 else (1.04 if t < 20.0 else 0.97)  # None: the case's

    async with HilRig(
        monotonic=clock.monotonic,
        load_scale=lambda _t: 0.5,
        pv_available_frac=lambda _t: 0.8,
        slack_v_pu=tap,
        physics_period_s=None,
        solve_on_write=False,
    ) as rig:
        assert rig.case_slack_v_pu == 1.0
        head_v = {}
        for t, expected in ((0.0, 1.0), (10.0, 1.04), (20.0, 0.97)):
            clock.advance(t - rig.t)
            state = await rig.step()
            assert rig.slack_v_pu_now == expected
            assert state.head_v_pu == pytest.approx(expected, abs=1e-9)
            head_v[t] = state.v_pu
            values = await _head_203(rig)
            sf = values["V_SF"]
            assert isinstance(sf, int)
            resolution_v = 10.0**sf
            assert resolution_v <= 1.0  # 1 V of 12.66 kV: 8e-5 p.u.
            assert values["PPV"] == pytest.approx(expected * 12660.0, abs=resolution_v)
            assert values["PhV"] == pytest.approx(expected * 12660.0 / 3**0.5, abs=resolution_v)
            # the inverters measure their own bus, which moved with the busbar
            pv = rig.sim("pv18").values(103)
            assert pv["PPVphAB"] == pytest.approx(state.v_pu[18] * 12660.0, abs=1.0)
        assert all(head_v[10.0][b] > head_v[0.0][b] + 0.035 for b in rig.physics.buses)
        assert all(head_v[20.0][b] < head_v[0.0][b] - 0.025 for b in rig.physics.buses)


async def test_a_busbar_profile_out_of_range_stops_the_step() -> None:
    clock = _clock(0.0)
    async with HilRig(
        monotonic=clock.monotonic,
        slack_v_pu=lambda t: 1.0 if t < 5.0 else 1.5,
        physics_period_s=None,
        solve_on_write=False,
    ) as rig:
        clock.advance(5.0)
        with pytest.raises(ValueError, match=r"slack_v_pu\(5\.0\) = 1\.5: must be within"):
            await rig.step()
        assert rig.state.head_v_pu == 1.0  # the last good solve stands
