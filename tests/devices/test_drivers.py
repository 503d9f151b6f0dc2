"""Driver round trips against the HIL's pymodbus servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from devices import (
    BatterySetpoint,
    DeviceUnavailable,
    ModbusTcpLink,
    PvSetpoint,
    SunSpecBattery,
    SunSpecInverter,
    SunSpecMeter,
    UnsafeWriteError,
)
from hil import HilRig


def _first(rig: HilRig, kind: str) -> tuple[str, int, float, float]:
    d = next(d for d in rig.devices if d.kind == kind)
    return d.name, d.port, d.p_max_kw, d.energy_kwh


async def test_meter_reads_the_physics(rig: HilRig) -> None:
    name, port, _, _ = _first(rig, "meter")
    meter = SunSpecMeter(name, ModbusTcpLink("127.0.0.1", port), 1, p_limit_kw=50_000)
    try:
        reading = await meter.read()
        assert meter.chain is not None
        assert 1 in meter.chain.ids
        assert 203 in meter.chain.ids
        assert reading.p_kw == pytest.approx(rig.state.head_p_kw, abs=1.0)
        assert reading.v_ll_v is not None
        assert reading.v_ll_v == pytest.approx(12_660, rel=0.01)
    finally:
        await meter.close()


async def test_pv_limit_round_trip_shows_at_the_head(rig: HilRig) -> None:
    name, port, rating, _ = _first(rig, "pv")
    head_name, head_port, _, _ = _first(rig, "meter")
    pv = SunSpecInverter(name, ModbusTcpLink("127.0.0.1", port), 1, rating_kw=rating, revert_s=30)
    meter = SunSpecMeter(head_name, ModbusTcpLink("127.0.0.1", head_port), 1, p_limit_kw=50_000)
    try:
        before = await pv.read()
        head_before = (await meter.read()).p_kw
        assert before.p_kw == pytest.approx(0.8 * rating, rel=0.01)
        result = await pv.write(PvSetpoint(device=name, p_max_kw=0.25 * rating))
        assert result.written == pytest.approx(0.25 * rating)
        await asyncio.sleep(0.05)
        await rig.step()
        after = await pv.read()
        assert after.limit_enabled
        assert after.limit_pct == pytest.approx(25.0)
        assert after.limit_revert_s == 30
        assert after.p_kw == pytest.approx(0.25 * rating, rel=0.01)
        # less PV at bus level means more import at the head, by about the curtailment
        head_after = (await meter.read()).p_kw
        assert head_after - head_before == pytest.approx(0.55 * rating, rel=0.1)
    finally:
        await pv.close()
        await meter.close()


async def test_battery_round_trip(rig: HilRig) -> None:
    name, port, rating, energy = _first(rig, "battery")
    bat = SunSpecBattery(
        name, ModbusTcpLink("127.0.0.1", port), 1, rating_kw=rating, energy_kwh=energy, revert_s=30
    )
    try:
        idle = await bat.read()
        assert idle.p_kw == pytest.approx(0.0, abs=0.5)
        assert 0 < idle.soc_pct <= 100
        await bat.write(BatterySetpoint(device=name, p_kw=100.0))
        await asyncio.sleep(0.05)
        await rig.step()
        assert (await bat.read()).p_kw == pytest.approx(100.0, rel=0.02)
        # hostile setpoint: far over the rating is clamped, never written as asked
        result = await bat.write(BatterySetpoint(device=name, p_kw=-1e6))
        assert result.clamped
        assert result.written == pytest.approx(-rating)
        await asyncio.sleep(0.05)
        await rig.step()
        assert (await bat.read()).p_kw == pytest.approx(-rating, rel=0.02)
    finally:
        await bat.close()


async def test_read_only_points_are_never_written(rig: HilRig) -> None:
    name, port, rating, _ = _first(rig, "pv")
    pv = SunSpecInverter(name, ModbusTcpLink("127.0.0.1", port), 1, rating_kw=rating, revert_s=30)
    try:
        await pv.read()
        with pytest.raises(UnsafeWriteError, match="read-only"):
            await pv.write_points(103, "W", [1])
    finally:
        await pv.close()


async def test_a_silent_device_times_out_within_the_request_timeout(rig: HilRig) -> None:
    name, port, rating, _ = _first(rig, "pv")
    pv = SunSpecInverter(
        name, ModbusTcpLink("127.0.0.1", port, timeout_s=0.3), 1, rating_kw=rating, revert_s=30
    )
    try:
        await pv.read()
        rig.set_silent(name, True)
        started = time.perf_counter()
        with pytest.raises(DeviceUnavailable):
            await pv.read()
        assert time.perf_counter() - started < 0.6
    finally:
        rig.set_silent(name, False)
        await pv.close()


async def test_a_closed_port_backs_off_instead_of_busy_looping() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link = ModbusTcpLink("127.0.0.1", port, timeout_s=0.2, backoff_min_s=5.0)
    meter = SunSpecMeter("nowhere", link, 1, p_limit_kw=1000)
    with pytest.raises(DeviceUnavailable, match="cannot connect"):
        await meter.read()
    started = time.perf_counter()
    with pytest.raises(DeviceUnavailable, match="backing off"):
        await meter.read()
    assert time.perf_counter() - started < 0.05
    await meter.close()
