"""Driver round trips against the HIL's pymodbus servers on loopback."""

from __future__ import annotations

import socket

import pytest

from controller.clock import FakeClock
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


def _first(rig: HilRig, kind: str) -> tuple[str, int, float, float | None]:
    d = next(d for d in rig.devices if d.kind == kind)
    return d.name, d.port, d.p_max_kw, d.energy_kwh


async def test_meter_reads_the_physics(rig: HilRig) -> None:
    name, port, _, _ = _first(rig, "meter")
    link = ModbusTcpLink("127.0.0.1", port)
    meter = SunSpecMeter(name, link, 1, p_limit_kw=50_000)
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
        await link.close()


async def test_pv_limit_round_trip_shows_at_the_head(rig: HilRig) -> None:
    name, port, rating, _ = _first(rig, "pv")
    head_name, head_port, _, _ = _first(rig, "meter")
    pv_link, meter_link = ModbusTcpLink("127.0.0.1", port), ModbusTcpLink("127.0.0.1", head_port)
    pv = SunSpecInverter(name, pv_link, 1, rating_kw=rating, revert_s=30)
    meter = SunSpecMeter(head_name, meter_link, 1, p_limit_kw=50_000)
    try:
        before = await pv.read()
        head_before = (await meter.read()).p_kw
        assert before.p_kw == pytest.approx(0.8 * rating, rel=0.01)
        result = await pv.write(PvSetpoint(device=name, p_max_kw=0.25 * rating))
        assert result.written == pytest.approx(0.25 * rating)
        await rig.step()  # the physics sees the write (it was read back: the device holds it)
        after = await pv.read()
        assert after.limit_enabled
        assert after.limit_pct == pytest.approx(25.0)
        assert after.limit_revert_s == 30
        assert after.p_kw == pytest.approx(0.25 * rating, rel=0.01)
        # less PV at bus level means more import at the head, by about the curtailment
        head_after = (await meter.read()).p_kw
        assert head_after - head_before == pytest.approx(0.55 * rating, rel=0.1)
    finally:
        await pv_link.close()
        await meter_link.close()


async def test_battery_round_trip(rig: HilRig) -> None:
    name, port, rating, energy = _first(rig, "battery")
    assert energy is not None
    link = ModbusTcpLink("127.0.0.1", port)
    bat = SunSpecBattery(name, link, 1, rating_kw=rating, energy_kwh=energy, revert_s=30)
    try:
        idle = await bat.read()
        assert idle.p_kw == pytest.approx(0.0, abs=0.5)
        assert 0 < idle.soc_pct <= 100
        await bat.write(BatterySetpoint(device=name, p_kw=100.0))
        await rig.step()
        assert (await bat.read()).p_kw == pytest.approx(100.0, rel=0.02)
        # hostile setpoint: far over the rating is clamped, never written as asked
        result = await bat.write(BatterySetpoint(device=name, p_kw=-1e6))
        assert result.clamped
        assert result.written == pytest.approx(-rating)
        await rig.step()
        assert (await bat.read()).p_kw == pytest.approx(-rating, rel=0.02)
    finally:
        await link.close()


async def test_read_only_points_are_never_written(rig: HilRig) -> None:
    name, port, rating, _ = _first(rig, "pv")
    link = ModbusTcpLink("127.0.0.1", port)
    pv = SunSpecInverter(name, link, 1, rating_kw=rating, revert_s=30)
    try:
        await pv.read()
        before = link.stats.requests
        with pytest.raises(UnsafeWriteError, match="read-only"):
            await pv.write_points(103, "W", [1])
        assert link.stats.requests == before  # refused before the wire
    finally:
        await link.close()


async def test_a_silent_device_costs_one_request_timeout_and_no_retry(rig: HilRig) -> None:
    # was: the read failed within 0.6 s of wall time. What that protects: a silent device
    # costs exactly one attempt bounded by the request timeout (no retries, no hang), so the
    # poll deadline holds; the timeout is the link's own (pymodbus is told the same one).
    name, port, rating, _ = _first(rig, "pv")
    link = ModbusTcpLink("127.0.0.1", port, timeout_s=0.3)
    pv = SunSpecInverter(name, link, 1, rating_kw=rating, revert_s=30)
    try:
        await pv.read()
        rig.set_silent(name, True)
        requests, timeouts = link.stats.requests, link.stats.timeouts
        with pytest.raises(DeviceUnavailable, match=f"on 127.0.0.1:{port}") as info:
            await pv.read()
        assert info.value.device == name
        assert link.stats.requests - requests == 1  # one attempt: retries are the next poll's
        assert link.stats.timeouts - timeouts == 1
    finally:
        rig.set_silent(name, False)
        await link.close()


async def test_a_closed_port_backs_off_instead_of_busy_looping() -> None:
    # was: the second read failed within 0.05 s of wall time. What that protects: while the
    # link backs off it does not touch the network at all; on a simulated clock the back-off
    # is exact, and once it has passed the link tries again.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = FakeClock()
    link = ModbusTcpLink(
        "127.0.0.1", port, timeout_s=0.2, backoff_min_s=5.0, monotonic=clock.monotonic
    )
    meter = SunSpecMeter("nowhere", link, 1, p_limit_kw=1000)
    try:
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            await meter.read()
        assert (link.stats.connects, link.stats.failures) == (1, 1)
        clock.advance(2.4)  # inside the back-off (5 s with jitter: 2.5 .. 5 s)
        with pytest.raises(DeviceUnavailable, match="backing off"):
            await meter.read()
        assert link.stats.connects == 1  # no connection attempt while backing off
        clock.advance(2.7)  # past any jitter of the first back-off
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            await meter.read()
        assert link.stats.connects == 2
    finally:
        await meter.close()
        await link.close()
