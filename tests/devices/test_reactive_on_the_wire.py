"""Reactive setpoints on real writes: the driver against the simulated inverter on a pymodbus
server, for the 123 chain (``VArWMaxPct``) and the 700-series chain (``VarSetPct``).

Each test writes through ``SunSpecInverter`` and looks at what the device holds and does: the
registers, the vars it produces (``SimInverter.q_kvar``) and what the driver reads back from its
measurement model. Time is simulated: the revert lapses on a ``FakeClock``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from structlog.testing import capture_logs

from controller.clock import FakeClock
from devices import ModbusTcpLink, PvSetpoint, SunSpecInverter, UnsafeWriteError
from devices.sunspec import Value
from hil.server import SunSpecServer
from hil.sim_devices import SimInverter

REVERT_S = 20
W_MAX_KW, S_MAX_KVA = 100.0, 110.0
VAR_STEP_KVAR = 0.01
"""The measured vars' resolution: ``VAr_SF``/``Var_SF`` = 1 (10 var) for a 100 kW inverter."""
PCT = {123: "VArWMaxPct", 704: "VarSetPct"}
ENABLE = {123: "VArPct_Ena", 704: "VarSetEna"}
REVERT = {123: "VArPct_RvrtTms", 704: "VarSetRvrtTms"}
MEASURED = {123: 103, 704: 701}
CHAINS = pytest.mark.parametrize("ctl", [123, 704])


@dataclass
class Wired:
    sim: SimInverter
    drv: SunSpecInverter
    clock: FakeClock
    ctl: int

    def held(self) -> dict[str, Value]:
        return self.sim.values(self.ctl)

    def setpoint(self, q_kvar: float | None, p_max_kw: float = W_MAX_KW) -> PvSetpoint:
        return PvSetpoint(device="pv", p_max_kw=p_max_kw, q_kvar=q_kvar)


@contextlib.asynccontextmanager
async def wired(sim: SimInverter, clock: FakeClock, **driver: Any) -> AsyncIterator[Wired]:
    """``sim`` on a real server, the driver on a real link, both on ``clock``."""
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port, timeout_s=1.0, monotonic=clock.monotonic)
        options: dict[str, Any] = {"rating_kw": W_MAX_KW, "rating_kva": S_MAX_KVA, **driver}
        drv = SunSpecInverter("pv", link, 1, revert_s=REVERT_S, **options)
        try:
            yield Wired(sim, drv, clock, sim.control_model)
        finally:
            await link.close()


def inverter(ctl: int, clock: FakeClock, cls: type[SimInverter] = SimInverter, **kw: Any) -> Any:
    options: dict[str, Any] = {"available_kw": 80.0, "s_max_kva": S_MAX_KVA, **kw}
    return cls("pv", 2, W_MAX_KW, control_model=ctl, monotonic=clock.monotonic, **options)


@CHAINS
async def test_a_reactive_setpoint_reaches_the_device_and_its_measured_vars(ctl: int) -> None:
    clock = FakeClock()
    async with wired(inverter(ctl, clock), clock) as w:
        before = await w.drv.read()
        assert before.reactive
        assert (before.s_max_kva, before.var_max_kvar) == (S_MAX_KVA, S_MAX_KVA)
        assert before.q_kvar == 0.0
        result = await w.drv.write(w.setpoint(-30.0))
        assert (result.q_kvar, result.q_clamped) == (-30.0, False)
        held = w.held()
        assert held[PCT[ctl]] == pytest.approx(-30.0)  # % of WMax
        assert (held[ENABLE[ctl]], held[REVERT[ctl]]) == (1, REVERT_S)
        if ctl == 123:
            assert held["VArPct_Mod"] == 1
        else:  # % of WMax, active-power priority, off after the revert
            assert (held["VarSetMod"], held["VarSetPri"], held["VarSetEnaRvrt"]) == (0, 0, 0)
            assert held["VarSetPctRvrt"] == 0.0
        assert w.sim.q_kvar == pytest.approx(-30.0)
        assert w.sim.p_kw == 80.0  # the vars take nothing from the sun's watts
        after = await w.drv.read()
        assert after.q_kvar == pytest.approx(-30.0, abs=VAR_STEP_KVAR)
        assert after.p_kw == 80.0
        # apparent power and power factor as the measurement model defines them
        meas = w.sim.values(MEASURED[ctl])
        s_kva = math.hypot(80.0, 30.0)
        assert meas["VA"] == pytest.approx(1000.0 * s_kva, abs=10.0)
        if ctl == 123:  # %, signed as OutPFSet: negative while absorbing
            assert meas["PF"] == pytest.approx(-100.0 * 80.0 / s_kva, abs=0.1)
        else:  # signed as the active power
            assert meas["PF"] == pytest.approx(80.0 / s_kva, abs=0.001)


@CHAINS
async def test_the_kva_circle_around_the_ceiling_clamps_the_vars(ctl: int) -> None:
    clock = FakeClock()
    async with wired(inverter(ctl, clock, available_kw=100.0), clock) as w:
        result = await w.drv.write(w.setpoint(80.0, p_max_kw=W_MAX_KW))
        # sqrt(110² - 100²) = 45.83 kvar, in 0.1 % steps of 100 kW towards zero
        assert result.q_clamped
        assert result.q_kvar == pytest.approx(45.8)
        assert w.sim.p_kw == 100.0
        assert w.sim.q_kvar == pytest.approx(45.8)
        assert w.sim.p_kw**2 + w.sim.q_kvar**2 <= S_MAX_KVA**2
        assert (await w.drv.read()).q_kvar == pytest.approx(45.8, abs=VAR_STEP_KVAR)
        # a lower ceiling leaves more of the circle to the vars
        low = await w.drv.write(w.setpoint(-80.0, p_max_kw=50.0))
        assert (low.q_kvar, low.q_clamped) == (-80.0, False)
        assert w.sim.q_kvar == pytest.approx(-80.0)


async def test_the_declared_var_capability_clamps_the_vars() -> None:
    clock = FakeClock()
    async with wired(inverter(704, clock, var_max_kvar=25.0), clock) as w:
        reading = await w.drv.read()
        assert reading.var_max_kvar == 25.0  # 702 VarMaxInj
        result = await w.drv.write(w.setpoint(-40.0, p_max_kw=50.0))
        assert (result.q_kvar, result.q_clamped) == (-25.0, True)
        assert w.held()["VarSetPct"] == pytest.approx(-25.0)


@CHAINS
async def test_the_fixed_mode_turns_off_when_its_revert_time_lapses(ctl: int) -> None:
    clock = FakeClock()
    async with wired(inverter(ctl, clock), clock) as w:
        await w.drv.write(w.setpoint(-30.0))
        clock.advance(REVERT_S - 0.1)
        w.sim.update()
        assert w.held()[ENABLE[ctl]] == 1
        assert w.sim.q_kvar == pytest.approx(-30.0)
        clock.advance(0.2)
        w.sim.update()
        assert w.held()[ENABLE[ctl]] == 0
        assert w.sim.q_kvar == 0.0  # no volt-var curve here: unity power factor
        assert (await w.drv.read()).q_kvar == 0.0


@CHAINS
async def test_a_rewrite_restarts_the_revert_timer(ctl: int) -> None:
    clock = FakeClock()
    async with wired(inverter(ctl, clock), clock) as w:
        await w.drv.write(w.setpoint(-30.0))
        clock.advance(REVERT_S - 1.0)
        await w.drv.write(w.setpoint(-20.0))
        clock.advance(REVERT_S - 1.0)
        w.sim.update()
        assert w.sim.q_kvar == pytest.approx(-20.0)


class CappingInverter(SimInverter):
    """An inverter that quietly caps a fixed var percentage at 20 % of WMax after a write."""

    def _after_write(self, model_id: int, written: set[str]) -> None:
        point = "VArWMaxPct" if model_id == 123 else "VarSetPct"
        value = self._get(model_id, point)
        if isinstance(value, float) and abs(value) > 20.0:
            self._set(model_id, {point: math.copysign(20.0, value)})
        super()._after_write(model_id, written)


@CHAINS
async def test_a_read_back_that_differs_is_unsafe(ctl: int) -> None:
    clock = FakeClock()
    async with wired(inverter(ctl, clock, CappingInverter), clock) as w:
        await w.drv.write(w.setpoint(-10.0))  # within its cap: read back as written
        with pytest.raises(UnsafeWriteError, match="read-back"):
            await w.drv.write(w.setpoint(-30.0))


_UNIMPLEMENTED: Mapping[int, dict[str, Value]] = {
    123: {
        "VArWMaxPct": None,
        "VArMaxPct": None,
        "VArAvalPct": None,
        "VArPct_RvrtTms": None,
        "VArPct_Mod": None,
        "VArPct_Ena": None,
    },
    704: {"VarSetEna": None, "VarSetMod": None, "VarSetPct": None, "VarSetRvrtTms": None},
}


@CHAINS
async def test_a_device_without_reactive_points_gets_the_ceiling_alone_and_one_log_line(
    ctl: int,
) -> None:
    clock = FakeClock()
    sim = inverter(ctl, clock)
    sim._set(ctl, _UNIMPLEMENTED[ctl])  # 0x8000 / 0xFFFF in the registers
    async with wired(sim, clock) as w:
        reading = await w.drv.read()
        assert not reading.reactive
        block = {k: w.held()[k] for k in _UNIMPLEMENTED[ctl]}
        with capture_logs() as logs:
            first = await w.drv.write(w.setpoint(-30.0, p_max_kw=40.0))
            second = await w.drv.write(w.setpoint(-20.0, p_max_kw=50.0))
        assert (first.q_kvar, first.written, second.q_kvar) == (None, 40.0, None)
        assert w.sim.p_kw == 50.0
        assert w.sim.q_kvar == 0.0
        assert {k: w.held()[k] for k in _UNIMPLEMENTED[ctl]} == block  # nothing else written
        said = [e for e in logs if e["event"] == "reactive_unsupported"]
        assert len(said) == 1, logs
        assert said[0]["device"] == "pv"
        assert "does not implement" in said[0]["reason"]


@CHAINS
@pytest.mark.parametrize("hostile", [math.nan, math.inf])
async def test_a_non_finite_reactive_setpoint_writes_nothing(ctl: int, hostile: float) -> None:
    clock = FakeClock()
    async with wired(inverter(ctl, clock), clock) as w:
        await w.drv.read()
        before = w.sim.registers()
        with pytest.raises(UnsafeWriteError, match="not a finite number"):
            await w.drv.write(w.setpoint(hostile, p_max_kw=40.0))
        assert w.sim.registers() == before  # not even the ceiling


@CHAINS
async def test_release_hands_the_vars_back(ctl: int) -> None:
    clock = FakeClock()
    async with wired(inverter(ctl, clock), clock) as w:
        await w.drv.write(w.setpoint(-30.0, p_max_kw=50.0))
        await w.drv.release()
        assert w.held()[ENABLE[ctl]] == 0
        assert (w.sim.p_kw, w.sim.q_kvar) == (80.0, 0.0)


@CHAINS
async def test_a_setpoint_without_vars_leaves_the_reactive_mode_alone(ctl: int) -> None:
    clock = FakeClock()
    async with wired(inverter(ctl, clock), clock) as w:
        await w.drv.write(w.setpoint(-30.0))
        result = await w.drv.write(w.setpoint(None, p_max_kw=60.0))
        assert (result.q_kvar, result.q_clamped) == (None, False)
        assert w.sim.q_kvar == pytest.approx(-30.0)
        assert w.sim.p_kw == 60.0
