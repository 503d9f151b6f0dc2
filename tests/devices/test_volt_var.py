"""The volt-var fallback on the wire: the driver writes a curve to a simulated inverter's 126
(123 chain) or 705 (704 chain) over a real pymodbus server, and the registers hold it; curves the
device cannot take, or that are not curves, are refused with one clear line and nothing written.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from devices import ModbusTcpLink, PvSetpoint, SunSpecInverter, UnsafeWriteError
from devices.volt_var import (
    IEEE1547_CATEGORY_B,
    VoltVarCurve,
    VoltVarCurveError,
    VoltVarUnsupported,
    write_volt_var,
)
from hil.server import DeviceFault, SunSpecServer
from hil.sim_devices import SimInverter

CURVE = VoltVarCurve(points=((0.95, 30.0), (0.99, 0.0), (1.01, 0.0), (1.05, -30.0)))
"""Not the factory curve the simulated inverters hold, so a curve found there was written."""


@pytest.fixture(params=[123, 704])
async def pv(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[SimInverter, SunSpecInverter]]:
    sim = SimInverter("pv", 2, 100.0, available_kw=80.0, control_model=request.param, volt_var=True)
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port)
        drv = SunSpecInverter("pv", link, 1, rating_kw=100.0, revert_s=30, volt_var=CURVE)
        try:
            yield sim, drv
        finally:
            await link.close()


def _flat(points: tuple[tuple[float, float], ...]) -> list[float]:
    return [x for point in points for x in point]


def _held_curve(sim: SimInverter) -> list[float]:
    """The active curve as the inverter's registers hold it, ``v_pu, q_pct`` point by point."""
    values = sim.values(sim.volt_var_model or 0)
    if sim.volt_var_model == 126:
        n = int(values["curve[0].ActPt"] or 0)
        pairs = [(values[f"curve[0].V{i}"], values[f"curve[0].VAr{i}"]) for i in range(1, n + 1)]
    else:
        n = int(values["Crv[0].ActPt"] or 0)
        pairs = [(values[f"Crv[0].Pt[{i}].V"], values[f"Crv[0].Pt[{i}].Var"]) for i in range(n)]
    return [x for v, q in pairs for x in (float(v or math.nan) / 100.0, float(q or 0.0))]


async def test_the_curve_is_written_enabled_and_read_back(
    pv: tuple[SimInverter, SunSpecInverter],
) -> None:
    sim, drv = pv
    done = await write_volt_var(drv, CURVE, revert_s=0)
    assert done.model_id == sim.volt_var_model
    assert _held_curve(sim) == pytest.approx(_flat(CURVE.points))
    values = sim.values(done.model_id)
    if done.model_id == 126:
        assert (values["ActCrv"], values["ModEna"], values["RvrtTms"]) == (1, 1, 0)
        assert values["curve[0].DeptRef"] == 1  # % of WMax
        assert done.curve_index == 1
    else:
        assert (values["Ena"], values["AdptCrvRslt"], values["RvrtTms"]) == (1, 1, 0)
        assert values["Crv[0].DeptRef"] == 0  # W_MAX_PCT
        assert values["Crv[0].ReadOnly"] == 1  # written by adoption, never directly
        assert done.curve_index == 2  # the stored curve that was adopted


async def test_the_inverters_vars_then_follow_its_terminal_voltage(
    pv: tuple[SimInverter, SunSpecInverter],
) -> None:
    sim, drv = pv
    sim.update(v_pu=1.03)
    assert sim._volt_var_q_kvar() is None  # shipped disabled
    await write_volt_var(drv, CURVE, revert_s=0)
    # 100 kW WMax: half-way down the 1.01..1.05 slope is -15 % (absorbing), flat beyond the ends
    # (80 kW out of a 100 kVA inverter leaves 60 kvar: the kVA circle does not cut these)
    for v_pu, q_kvar in ((1.03, -15.0), (1.00, 0.0), (0.97, 15.0), (1.10, -30.0), (0.90, 30.0)):
        sim.update(v_pu=v_pu)
        assert sim._volt_var_q_kvar() == pytest.approx(q_kvar, abs=1e-9), v_pu
        assert sim.q_kvar == pytest.approx(q_kvar, abs=1e-9), v_pu
    # a fixed reactive setpoint wins over the curve while it is in force
    await drv.write(PvSetpoint(device="pv", p_max_kw=80.0, q_kvar=10.0))  # 60 kvar left
    sim.update(v_pu=1.03)
    assert sim.q_kvar == pytest.approx(10.0, abs=0.1)  # 0.1 % of WMax steps


async def test_a_curve_longer_than_the_devices_npt_is_refused_before_any_write(
    pv: tuple[SimInverter, SunSpecInverter],
) -> None:
    sim, drv = pv
    five = VoltVarCurve(points=((0.92, 44.0), (0.98, 0.0), (1.0, 0.0), (1.02, 0.0), (1.08, -44.0)))
    before = sim.registers()
    with pytest.raises(VoltVarUnsupported) as err:
        await write_volt_var(drv, five, revert_s=0)
    model = sim.volt_var_model
    assert str(err.value) == (
        f"volt-var curve has 5 points; model {model} of this device takes at most 4 (NPt):"
        " none written"
    )
    assert sim.registers() == before


async def test_the_inverter_writes_the_curve_once_per_discovery_before_its_ceiling(
    pv: tuple[SimInverter, SunSpecInverter],
) -> None:
    sim, drv = pv
    written: list[int] = []
    sim.on_write = lambda _dev, model_id: written.append(model_id)
    await drv.read()
    await drv.write(PvSetpoint(device="pv", p_max_kw=50.0))
    vv, ctl = sim.volt_var_model, sim.control_model
    assert written.index(vv) < written.index(ctl)  # the fallback is in place before the ceiling
    assert _held_curve(sim) == pytest.approx(_flat(CURVE.points))
    written.clear()
    await drv.write(PvSetpoint(device="pv", p_max_kw=40.0))
    assert vv not in written
    assert sim.limit_pct == 40.0
    # the device is found again (a restarted inverter may have lost its curve): written again
    sim._set(vv or 0, {"ModEna": 0} if vv == 126 else {"Ena": 0})
    await drv.discover()
    await drv.write(PvSetpoint(device="pv", p_max_kw=40.0))
    assert vv in written
    assert sim._volt_var_q_kvar() is not None


async def test_a_chain_without_126_or_705_keeps_its_ceiling_and_says_so_once() -> None:
    sim = SimInverter("pv", 2, 100.0, available_kw=80.0)  # 1, 103, 120, 123 only
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port)
        drv = SunSpecInverter("pv", link, 1, rating_kw=100.0, revert_s=30, volt_var=CURVE)
        try:
            with capture_logs() as logs:
                await drv.write(PvSetpoint(device="pv", p_max_kw=50.0))
                await drv.discover()
                await drv.write(PvSetpoint(device="pv", p_max_kw=45.0))
        finally:
            await link.close()
    assert sim.limit_enabled
    assert sim.limit_pct == 45.0
    said = [e for e in logs if e["event"].startswith("volt_var")]
    assert said == [
        {
            "event": "volt_var_unsupported",
            "device": "pv",
            "reason": "no volt-var model (126 or 705) in the chain [1, 103, 120, 123]",
            "log_level": "warning",
        }
    ]


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (((0.95, 30.0),), "volt-var curve has 1 points, needs 2 to 20"),
        (
            ((0.95, 30.0), (0.99, 0.0), (0.99, -10.0)),
            "volt-var curve point 3: v_pu = 0.99 is not above point 2's 0.99"
            " (voltages must increase)",
        ),
        (((1.05, -30.0), (0.95, 30.0)), "volt-var curve point 2: v_pu = 0.95 is not above"),
        (((0.95, 30.0), (1.6, 0.0)), "volt-var curve point 2: v_pu = 1.6 is outside 0.5..1.5"),
        (((0.95, 130.0), (1.05, 0.0)), "volt-var curve point 1: q_pct = 130.0 is outside"),
        (((0.95, math.nan), (1.05, 0.0)), "volt-var curve point 1: (0.95, nan) is not a pair"),
        (((0.95, 30.0), (math.inf, 0.0)), "volt-var curve point 2: (inf, 0.0) is not a pair"),
    ],
)
def test_a_curve_that_is_not_a_curve_is_refused_naming_its_point(
    points: tuple[tuple[float, float], ...], message: str
) -> None:
    with pytest.raises(VoltVarCurveError) as err:
        VoltVarCurve(points=points)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_the_ieee_1547_category_b_default() -> None:
    assert IEEE1547_CATEGORY_B.v_pu == (0.92, 0.98, 1.02, 1.08)
    assert IEEE1547_CATEGORY_B.q_pct == (44.0, 0.0, 0.0, -44.0)
    assert VoltVarCurve(points=[[0.9, 10], [1.1, -10]]).points == ((0.9, 10.0), (1.1, -10.0))  # type: ignore[list-item]


async def test_a_curve_the_device_does_not_hold_is_said_once_and_written_again() -> None:
    sim = SimInverter("pv", 2, 100.0, available_kw=80.0, volt_var=True)
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port)
        drv = SunSpecInverter("pv", link, 1, rating_kw=100.0, revert_s=30, volt_var=CURVE)
        try:
            await drv.read()
            server.set_fault(1, DeviceFault(frozen=True))  # takes writes, reads the old image
            with capture_logs() as logs:
                for _ in range(2):
                    with pytest.raises(UnsafeWriteError, match="read-back"):
                        await drv.write(PvSetpoint(device="pv", p_max_kw=50.0))  # the ceiling's
            server.set_fault(1, DeviceFault())
            written: list[int] = []
            sim.on_write = lambda _dev, model_id: written.append(model_id)
            with capture_logs() as again:
                await drv.write(PvSetpoint(device="pv", p_max_kw=50.0))
        finally:
            await link.close()
    failed = [e for e in logs if e["event"] == "volt_var_failed"]
    assert len(failed) == 1
    assert failed[0]["reason"].startswith("read-back at ")  # said once, tried each time
    assert sim.limit_pct == 50.0
    assert not [e for e in again if e["event"].startswith("volt_var")]
    assert written[0] == 126  # written again, before the ceiling, once the device reads true
    assert _held_curve(sim) == pytest.approx(_flat(CURVE.points))
