"""The safety envelope on real writes: 123 and 704 controls, revert timers, read-back, hostile input.

Each test writes through a driver to a simulated device on a pymodbus server, then looks at what
the device holds: the rules of DESIGN.md §4 are checked where they matter, in the registers.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from devices import (
    BatterySetpoint,
    ModbusTcpLink,
    PvSetpoint,
    Ramp,
    SunSpecBattery,
    SunSpecInverter,
    UnsafeWriteError,
)
from devices.safety import MIN_LIMIT_PCT
from hil.server import DeviceFault, SunSpecServer
from hil.sim_devices import SimInverter
from tests.support.der700 import Der700


@pytest.fixture
async def pv123() -> AsyncIterator[tuple[SimInverter, SunSpecServer, SunSpecInverter]]:
    sim = SimInverter("pv", 2, 100.0, available_kw=80.0)
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port)
        drv = SunSpecInverter("pv", link, 1, rating_kw=100.0, revert_s=30)
        yield sim, server, drv
        await link.close()


@pytest.mark.parametrize(
    ("requested", "pct", "clamped"),
    [
        (1e9, 100.0, True),
        (-50.0, MIN_LIMIT_PCT, True),
        (0.0, MIN_LIMIT_PCT, True),
        (25.0, 25.0, False),
    ],
)
async def test_model_123_limit_is_clamped_and_carries_its_revert_timer(
    pv123: tuple[SimInverter, SunSpecServer, SunSpecInverter],
    requested: float,
    pct: float,
    clamped: bool,
) -> None:
    sim, _server, drv = pv123
    result = await drv.write(PvSetpoint(device="pv", p_max_kw=requested))
    held = sim.values(123)
    assert held["WMaxLimPct"] == pytest.approx(pct)
    assert held["WMaxLim_Ena"] == 1
    assert held["WMaxLimPct_RvrtTms"] == 30  # every control carries its revert timeout
    assert result.clamped is clamped
    assert 0 < result.written <= 100.0


@pytest.mark.parametrize("hostile", [math.nan, math.inf, -math.inf])
async def test_hostile_setpoint_writes_nothing(
    pv123: tuple[SimInverter, SunSpecServer, SunSpecInverter], hostile: float
) -> None:
    sim, _server, drv = pv123
    before = sim.registers()
    with pytest.raises(UnsafeWriteError, match="not a finite number"):
        await drv.write(PvSetpoint(device="pv", p_max_kw=hostile))
    assert sim.registers() == before


async def test_ramp_limit_holds_across_writes() -> None:
    sim = SimInverter("pv", 2, 100.0, available_kw=80.0)
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port)
        ramp = Ramp(kw_per_s=2.0, interval_s=5.0)  # 10 kW per write
        drv = SunSpecInverter("pv", link, 1, rating_kw=100.0, revert_s=30, ramp=ramp)
        try:
            await drv.write(PvSetpoint(device="pv", p_max_kw=90.0))
            second = await drv.write(PvSetpoint(device="pv", p_max_kw=5.0))  # a cliff
            assert second.written == pytest.approx(80.0)
            assert sim.values(123)["WMaxLimPct"] == pytest.approx(80.0)
        finally:
            await link.close()


async def test_a_write_the_device_did_not_keep_fails_the_read_back(
    pv123: tuple[SimInverter, SunSpecServer, SunSpecInverter],
) -> None:
    _sim, server, drv = pv123
    await drv.read()
    server.set_fault(1, DeviceFault(frozen=True))  # acknowledges writes, changes nothing
    with pytest.raises(UnsafeWriteError, match="read-back"):
        await drv.write(PvSetpoint(device="pv", p_max_kw=30.0))


async def test_only_writable_points_are_written(
    pv123: tuple[SimInverter, SunSpecServer, SunSpecInverter],
) -> None:
    sim, _server, drv = pv123
    before = sim.registers()
    with pytest.raises(UnsafeWriteError, match="read-only"):
        await drv.write_points(103, "W", [1])
    with pytest.raises(UnsafeWriteError, match="read-only"):  # a span that reaches WMaxLimPct_SF
        await drv.write_points(123, "VArPct_Ena", [1, 0])
    assert sim.registers() == before


async def test_model_704_limit_writes_an_explicit_revert_value_and_reads_back() -> None:
    sim = Der700(w_kw=60.0)
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port)
        drv = SunSpecInverter("der", link, 1, rating_kw=100.0, revert_s=20, revert_limit_pct=50.0)
        try:
            reading = await drv.read()
            assert drv.control_model == 704
            assert reading.p_kw == pytest.approx(60.0)
            assert reading.w_max_kw == pytest.approx(100.0)  # WMaxRtg from model 702
            await drv.write(PvSetpoint(device="der", p_max_kw=1e6))  # far over rating
            held = sim.values(704)
            assert held["WMaxLimPctEna"] == 1
            assert held["WMaxLimPct"] == pytest.approx(100.0)
            assert held["WMaxLimPctRvrt"] == pytest.approx(50.0)
            assert held["WMaxLimPctEnaRvrt"] == 1
            assert held["WMaxLimPctRvrtTms"] == 20
        finally:
            await link.close()


async def test_model_704_battery_power_is_clamped_and_reverts_to_idle() -> None:
    sim = Der700(w_kw=-10.0, soc_pct=40.0)
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port)
        drv = SunSpecBattery("der", link, 1, rating_kw=50.0, energy_kwh=200.0, revert_s=20)
        try:
            reading = await drv.read()
            assert reading.soc_pct == pytest.approx(40.0)
            assert reading.p_kw == pytest.approx(-10.0)
            result = await drv.write(BatterySetpoint(device="der", p_kw=-1e9))  # hostile charge
            assert result.written == pytest.approx(-50.0)
            held = sim.values(704)
            assert (held["WSetEna"], held["WSetMod"]) == (1, 1)
            assert held["WSet"] == pytest.approx(-50_000.0)
            assert held["WSetRvrt"] == 0.0  # reverts to idle
            assert held["WSetEnaRvrt"] == 1
            assert held["WSetRvrtTms"] == 20
        finally:
            await link.close()


@pytest.mark.parametrize("bad", [0.0, 150.0, math.nan])
def test_a_revert_value_outside_the_envelope_is_refused(bad: float) -> None:
    link = ModbusTcpLink("127.0.0.1", 1)
    with pytest.raises(UnsafeWriteError, match=r"revert limit|not a finite number"):
        SunSpecInverter("pv", link, 1, rating_kw=100.0, revert_s=30, revert_limit_pct=bad)
