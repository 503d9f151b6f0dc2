"""Simulated SunSpec devices, without sockets: register images, write rules, behaviour."""

from __future__ import annotations

import pytest

from controller.clock import FakeClock
from devices.sunspec import decode_model, layout
from hil import (
    BASE_ADDRESS,
    SimBattery,
    SimInverter,
    SimMeter,
    SimSunSpecDevice,
    WriteRejection,
    fit_scale_factor,
)


def _clock(start_s: float) -> FakeClock:
    """A fake monotonic clock that starts at ``start_s``."""
    clock = FakeClock()
    clock.advance(start_s)
    return clock


def _block(device: SimSunSpecDevice, model_id: int) -> dict[str, object]:
    model = layout(model_id)
    return dict(
        decode_model(model, device.registers_at(device.model_address(model_id), model.length + 2))
    )


def _walk_chain(device: SimSunSpecDevice) -> list[int]:
    regs = device.registers()
    assert regs[:2] == [0x5375, 0x6E53]
    ids, offset = [], 2
    while regs[offset] != 0xFFFF:
        ids.append(regs[offset])
        offset += regs[offset + 1] + 2
    assert regs[offset : offset + 2] == [0xFFFF, 0]
    assert offset + 2 == len(regs)
    return ids


def _s16(value: int) -> int:
    return value & 0xFFFF


@pytest.fixture
def clock() -> FakeClock:
    return _clock(1000.0)


def test_chains_and_common_model(clock: FakeClock) -> None:
    inv = SimInverter("pv07", 7, 150.0, monotonic=clock.monotonic)
    bat = SimBattery("bat08", 8, 250.0, 500.0, 60.0, monotonic=clock.monotonic)
    meter = SimMeter("head", monotonic=clock.monotonic)
    assert _walk_chain(inv) == [1, 103, 120, 123]
    assert _walk_chain(bat) == [1, 103, 120, 124]
    assert _walk_chain(meter) == [1, 203]
    common = _block(inv, 1)
    assert common["Mn"] == "feederd-hil"
    assert common["Md"] == "PV"
    assert common["SN"] == "pv07"
    assert inv.model_address(1) == BASE_ADDRESS + 2


def test_scale_factors_fit_the_ratings() -> None:
    assert fit_scale_factor(150_000 * 1.2, signed=True, min_sf=0) == 1
    assert fit_scale_factor(500_000 * 1.2, signed=True, min_sf=0) == 2
    assert fit_scale_factor(5_000_000, signed=True, min_sf=0) == 3
    big = SimInverter("big", 2, 500.0, available_kw=500.0)
    assert _block(big, 103)["W"] == pytest.approx(500_000.0)


def test_inverter_output_and_limit(clock: FakeClock) -> None:
    inv = SimInverter("pv07", 7, 150.0, available_kw=120.0, monotonic=clock.monotonic)
    meas = _block(inv, 103)
    assert meas["W"] == pytest.approx(120_000.0)
    assert meas["St"] == 4
    nameplate = _block(inv, 120)
    assert nameplate["WRtg"] == pytest.approx(150_000.0)
    ctl = _block(inv, 123)
    assert ctl["WMaxLimPct"] == pytest.approx(100.0)
    assert ctl["WMaxLim_Ena"] == 0
    assert ctl["WMaxLimPct_SF"] == -1

    # the driver's write: WMaxLimPct, WinTms, RvrtTms, RmpTms, WMaxLim_Ena
    address = inv.point_address(123, "WMaxLimPct")
    assert inv.apply_write(address, [500, 0, 60, 0, 1])
    assert inv.p_kw == pytest.approx(75.0)
    assert _block(inv, 103)["W"] == pytest.approx(75_000.0)
    assert _block(inv, 103)["St"] == 5  # throttled

    # a limit above the sun does not bind
    inv.update(available_kw=50.0)
    assert inv.p_kw == pytest.approx(50.0)


def test_inverter_limit_reverts_after_its_timeout(clock: FakeClock) -> None:
    inv = SimInverter("pv07", 7, 150.0, available_kw=150.0, monotonic=clock.monotonic)
    address = inv.point_address(123, "WMaxLimPct")
    assert inv.apply_write(address, [400, 0, 30, 0, 1])
    clock.advance(20.0)
    inv.update()
    assert inv.p_kw == pytest.approx(60.0)
    assert inv.apply_write(address, [400, 0, 30, 0, 1])  # rewrite restarts the timer
    clock.advance(20.0)
    inv.update()
    assert inv.p_kw == pytest.approx(60.0)
    clock.advance(10.0)
    inv.update()
    assert inv.p_kw == pytest.approx(150.0)
    ctl = _block(inv, 123)
    assert ctl["WMaxLimPct"] == pytest.approx(100.0)
    assert ctl["WMaxLim_Ena"] == 0


def test_limit_without_revert_time_holds(clock: FakeClock) -> None:
    inv = SimInverter("pv07", 7, 150.0, available_kw=150.0, monotonic=clock.monotonic)
    assert inv.apply_write(inv.point_address(123, "WMaxLimPct"), [500, 0, 0, 0, 1])
    clock.advance(1e6)
    inv.update()
    assert inv.p_kw == pytest.approx(75.0)


def test_writes_are_checked(clock: FakeClock) -> None:
    inv = SimInverter("pv07", 7, 150.0, available_kw=100.0, monotonic=clock.monotonic)
    writes: list[int] = []
    inv.on_write = lambda _dev, model_id: writes.append(model_id)
    before = inv.registers()
    w_address = inv.point_address(103, "W")
    assert inv.check_write(w_address, [0]) is WriteRejection.ADDRESS
    assert not inv.apply_write(w_address, [0])
    assert inv.check_write(BASE_ADDRESS, [0]) is WriteRejection.ADDRESS  # the SunS marker
    assert inv.check_write(inv.point_address(123, "WMaxLimPct_SF"), [0]) is WriteRejection.ADDRESS
    # a write running from writable points into the scale factors
    assert inv.check_write(inv.point_address(123, "VArPct_Ena"), [0, 0]) is WriteRejection.ADDRESS
    limit = inv.point_address(123, "WMaxLimPct")
    assert inv.check_write(limit, [1001]) is WriteRejection.VALUE
    assert inv.check_write(inv.point_address(123, "WMaxLim_Ena"), [2]) is WriteRejection.VALUE
    assert inv.registers() == before
    assert writes == []
    assert inv.apply_write(limit, [999])
    assert writes == [123]


def test_battery_forced_discharge_and_charge(clock: FakeClock) -> None:
    bat = SimBattery("bat08", 8, 250.0, 500.0, 60.0, monotonic=clock.monotonic)
    storage = _block(bat, 124)
    assert storage["WChaMax"] == pytest.approx(250_000.0)
    assert storage["ChaState"] == pytest.approx(60.0)
    assert storage["StorCtl_Mod"] == 0
    assert storage["InOutWRte_SF"] == -1
    assert bat.p_kw == 0.0

    rates = bat.point_address(124, "OutWRte")
    mode = bat.point_address(124, "StorCtl_Mod")
    assert bat.apply_write(rates, [400, _s16(-400), 0, 0, 0])  # OutWRte 40 %, InWRte −40 %
    assert bat.p_kw == 0.0  # limits not enabled yet
    assert bat.apply_write(mode, [3])
    assert bat.p_kw == pytest.approx(100.0)
    assert _block(bat, 103)["W"] == pytest.approx(100_000.0)
    assert _block(bat, 124)["ChaSt"] == 3

    clock.advance(3600.0)
    bat.update()
    assert bat.soc_kwh == pytest.approx(300.0 - 100.0 / 0.95)

    assert bat.apply_write(rates, [_s16(-200), 200, 0, 0, 0])  # charge at 20 %
    assert bat.p_kw == pytest.approx(-50.0)
    soc = bat.soc_kwh
    clock.advance(1800.0)
    bat.update()
    assert bat.soc_kwh == pytest.approx(soc + 25.0 * 0.95)
    assert _block(bat, 103)["W"] == pytest.approx(-50_000.0)


def test_battery_idles_inside_a_band_and_reverts(clock: FakeClock) -> None:
    bat = SimBattery("bat08", 8, 250.0, 500.0, 60.0, monotonic=clock.monotonic)
    rates = bat.point_address(124, "OutWRte")
    mode = bat.point_address(124, "StorCtl_Mod")
    assert bat.apply_write(rates, [500, 500, 0, 0, 0])  # band −50 %..+50 % holds idle
    assert bat.apply_write(mode, [3])
    assert bat.p_kw == 0.0
    assert bat.apply_write(rates, [1000, _s16(-1000), 0, 60, 0])  # full discharge, 60 s revert
    assert bat.p_kw == pytest.approx(250.0)
    clock.advance(100.0)
    bat.update()
    assert bat.storctl_mod == 0
    assert bat.p_kw == 0.0
    # energy was drawn only until the revert, 60 s after the write
    assert bat.soc_kwh == pytest.approx(300.0 - 250.0 * 60.0 / 3600.0 / 0.95)


def test_battery_stops_at_reserve_and_full(clock: FakeClock) -> None:
    low = SimBattery("low", 8, 250.0, 500.0, 11.0, min_reserve_pct=10.0, monotonic=clock.monotonic)
    low.apply_write(low.point_address(124, "OutWRte"), [1000, _s16(-1000), 0, 0, 0])
    low.apply_write(low.point_address(124, "StorCtl_Mod"), [3])
    clock.advance(3600.0)
    low.update()
    assert low.soc_pct == pytest.approx(10.0)
    assert low.p_kw == 0.0
    assert _block(low, 124)["ChaSt"] == 2  # empty

    full = SimBattery("full", 8, 250.0, 500.0, 99.0, monotonic=clock.monotonic)
    full.apply_write(full.point_address(124, "OutWRte"), [_s16(-1000), 1000, 0, 0, 0])
    full.apply_write(full.point_address(124, "StorCtl_Mod"), [3])
    clock.advance(3600.0)
    full.update()
    assert full.soc_pct == pytest.approx(100.0)
    assert full.p_kw == 0.0


def test_battery_refuses_out_of_range_rates(clock: FakeClock) -> None:
    bat = SimBattery("bat08", 8, 250.0, 500.0, 60.0, monotonic=clock.monotonic)
    assert bat.check_write(bat.point_address(124, "OutWRte"), [1001]) is WriteRejection.VALUE
    assert bat.check_write(bat.point_address(124, "StorCtl_Mod"), [4]) is WriteRejection.VALUE
    assert bat.check_write(bat.point_address(124, "ChaState"), [0]) is WriteRejection.ADDRESS


def test_meter_signs_and_energy(clock: FakeClock) -> None:
    meter = SimMeter("head", monotonic=clock.monotonic)
    meter.update(p_kw=3917.7, q_kvar=2435.1, v_ll_v=12660.0)
    values = _block(meter, 203)
    assert values["W_SF"] == 3
    assert values["W"] == pytest.approx(3918_000.0)
    assert values["VAR"] == pytest.approx(2435_000.0)
    assert values["PPV"] == pytest.approx(12660.0)
    assert values["PhV"] == pytest.approx(7309.0)
    assert values["Hz"] == pytest.approx(50.0)
    assert values["A"] == pytest.approx(210.4, abs=0.1)
    clock.advance(3600.0)
    meter.update(p_kw=-500.0, q_kvar=0.0, v_ll_v=12660.0)
    clock.advance(1800.0)
    meter.update(p_kw=-500.0, q_kvar=0.0, v_ll_v=12660.0)
    values = _block(meter, 203)
    assert values["W"] == pytest.approx(-500_000.0)
    assert values["TotWhImp"] == pytest.approx(3917_700.0, abs=1.0)
    assert values["TotWhExp"] == pytest.approx(250_000.0, abs=1.0)
    assert values["PF"] == pytest.approx(-100.0)
    # a reading beyond the range saturates instead of failing
    meter.update(p_kw=40_000.0, q_kvar=0.0, v_ll_v=12660.0)
    assert _block(meter, 203)["W"] == pytest.approx(32_767_000.0)


def test_registers_at_refuses_unmapped_addresses() -> None:
    meter = SimMeter("head")
    with pytest.raises(IndexError):
        meter.registers_at(BASE_ADDRESS - 1, 2)
    with pytest.raises(IndexError):
        meter.registers_at(BASE_ADDRESS, meter.register_count + 1)


def test_inverter_limit_ramps_over_its_ramp_time(clock: FakeClock) -> None:
    inv = SimInverter("pv07", 7, 150.0, available_kw=150.0, monotonic=clock.monotonic)
    address = inv.point_address(123, "WMaxLimPct")
    # 40 % with a 20 s ramp: from 100 % (uncurtailed) down to 40 % over 20 s
    assert inv.apply_write(address, [400, 0, 60, 20, 1])
    assert inv.p_kw == pytest.approx(150.0)
    clock.advance(10.0)
    inv.update()
    assert inv.p_kw == pytest.approx(105.0)  # half way: 70 %
    assert _block(inv, 103)["W"] == pytest.approx(105_000.0)
    clock.advance(15.0)
    assert inv.p_kw == pytest.approx(60.0)
    # back up to 80 % at once (no ramp time)
    assert inv.apply_write(address, [800, 0, 60, 0, 1])
    assert inv.p_kw == pytest.approx(120.0)
