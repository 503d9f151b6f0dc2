"""The simulated inverter's reactive power, without sockets: fixed modes of 123 and 704, their
revert timers, the kVA limit with active-power priority, and the values it refuses.

Writes go through ``apply_write`` with words encoded by the project's codec, as a Modbus write
would; time is a ``FakeClock``.
"""

from __future__ import annotations

import math

import pytest

from controller.clock import FakeClock
from devices.sunspec import Value, encode_point, layout
from hil.sim_devices import SimInverter


def _write(sim: SimInverter, model_id: int, values: dict[str, Value]) -> bool:
    """Write each point on its own (one Modbus write each), with the block's scale factors;
    ``False`` as soon as the inverter refuses one."""
    model, held = layout(model_id), sim.values(model_id)
    for name, value in values.items():
        pt = model.point(name)
        sf = held.get(pt.sf) if isinstance(pt.sf, str) else pt.sf
        words = encode_point(pt, value, sf if isinstance(sf, int) else 0)
        if not sim.apply_write(sim.point_address(model_id, name), words):
            return False
    return True


def _inverter(ctl: int = 123, **kw: object) -> tuple[SimInverter, FakeClock]:
    clock = FakeClock()
    options: dict[str, object] = {"available_kw": 80.0, **kw}
    sim = SimInverter("pv", 2, 100.0, control_model=ctl, monotonic=clock.monotonic, **options)  # type: ignore[arg-type]
    return sim, clock


def test_active_power_has_priority_inside_the_kva_circle() -> None:
    sim, _ = _inverter(available_kw=100.0, s_max_kva=110.0)
    assert _write(sim, 123, {"VArWMaxPct": -80.0, "VArPct_Mod": 1, "VArPct_Ena": 1})
    assert sim.p_kw == 100.0  # never watts for vars
    assert sim.q_kvar == pytest.approx(-math.sqrt(110.0**2 - 100.0**2))
    sim.update(available_kw=50.0)  # less sun: the circle leaves room for all 80 kvar
    assert sim.q_kvar == pytest.approx(-80.0)


def test_123_percent_of_the_var_capability() -> None:
    sim, _ = _inverter(var_max_kvar=50.0)
    assert _write(sim, 123, {"VArMaxPct": 40.0, "VArPct_Mod": 2, "VArPct_Ena": 1})
    assert sim.q_kvar == pytest.approx(20.0)
    assert sim.values(120)["VArRtgQ1"] == 50_000.0


def test_123_fixed_power_factor_signed_by_outpfset_and_reverting() -> None:
    sim, clock = _inverter()
    assert _write(sim, 123, {"OutPFSet": -0.9, "OutPFSet_RvrtTms": 30, "OutPFSet_Ena": 1})
    assert sim.q_kvar == pytest.approx(-80.0 * math.tan(math.acos(0.9)))
    clock.advance(30.0)
    sim.update()
    assert sim.values(123)["OutPFSet_Ena"] == 0
    assert sim.q_kvar == 0.0


def test_123_fixed_vars_win_over_the_fixed_power_factor() -> None:
    sim, _ = _inverter()
    assert _write(sim, 123, {"OutPFSet": 0.9, "OutPFSet_Ena": 1})
    assert _write(sim, 123, {"VArWMaxPct": -10.0, "VArPct_Mod": 1, "VArPct_Ena": 1})
    assert sim.q_kvar == pytest.approx(-10.0)


@pytest.mark.parametrize(
    ("mode", "points", "q_kvar"),
    [
        (0, {"VarSetPct": -20.0}, -20.0),  # % of WMax
        (1, {"VarSetPct": 50.0}, 12.5),  # % of the var capability (25 kvar)
        (3, {"VarSetPct": 10.0}, 11.0),  # % of VAMax (110 kVA)
        (4, {"VarSet": -12_000.0}, -12.0),  # var
    ],
)
def test_704_fixed_vars_in_each_mode(mode: int, points: dict[str, Value], q_kvar: float) -> None:
    sim, _ = _inverter(704, s_max_kva=110.0, var_max_kvar=25.0)
    assert _write(sim, 704, {**points, "VarSetMod": mode, "VarSetEna": 1})
    assert sim.q_kvar == pytest.approx(q_kvar)
    assert sim.values(701)["Var"] == pytest.approx(1000.0 * q_kvar, abs=10.0)
    assert _write(sim, 704, {"VarSetPct": -100.0, "VarSet": -100_000.0})
    assert sim.q_kvar == pytest.approx(-25.0)  # never beyond the declared capability


def test_704_power_factor_while_injecting() -> None:
    sim, _ = _inverter(704)
    assert _write(sim, 704, {"PFWInj.PF": 0.95, "PFWInj.Ext": 1, "PFWInjEna": 1})
    assert sim.q_kvar == pytest.approx(-80.0 * math.tan(math.acos(0.95)))  # under-excited
    assert _write(sim, 704, {"PFWInj.Ext": 0})
    assert sim.q_kvar == pytest.approx(80.0 * math.tan(math.acos(0.95)))


def test_704_reverts_to_its_explicit_values() -> None:
    sim, clock = _inverter(704)
    assert _write(
        sim,
        704,
        {
            "VarSetPct": -30.0,
            "VarSetPctRvrt": 5.0,
            "VarSetEnaRvrt": 1,
            "VarSetRvrtTms": 10,
            "VarSetEna": 1,
        },
    )
    clock.advance(9.9)
    sim.update()
    assert sim.q_kvar == pytest.approx(-30.0)
    clock.advance(0.1)
    sim.update()
    assert sim.values(704)["VarSetPct"] == pytest.approx(5.0)
    assert sim.q_kvar == pytest.approx(5.0)  # the revert value, enabled
    clock.advance(100.0)
    sim.update()
    assert sim.q_kvar == pytest.approx(5.0)  # and it stays


def test_a_fixed_mode_wins_over_the_volt_var_curve() -> None:
    sim, _ = _inverter(volt_var=True)
    assert _write(sim, 126, {"ModEna": 1})
    sim.set_voltage(1.08)
    curve = sim.q_kvar
    assert curve < 0.0  # the curve absorbs at a high voltage
    assert _write(sim, 123, {"VArWMaxPct": 10.0, "VArPct_Mod": 1, "VArPct_Ena": 1})
    assert sim.q_kvar == pytest.approx(10.0)
    assert _write(sim, 123, {"VArPct_Ena": 0})
    assert sim.q_kvar == pytest.approx(curve)


def test_a_disconnected_inverter_makes_no_vars() -> None:
    sim, _ = _inverter()
    assert _write(sim, 123, {"VArWMaxPct": 10.0, "VArPct_Mod": 1, "VArPct_Ena": 1})
    assert _write(sim, 123, {"Conn": 0})
    assert (sim.p_kw, sim.q_kvar) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("ctl", "point", "value"),
    [
        (123, "VArWMaxPct", 100.1),
        (123, "VArWMaxPct", -150.0),
        (123, "VArPct_Mod", 4),
        (123, "OutPFSet", 0.0),
        (704, "VarSetPct", -100.5),
        (704, "VarSetMod", 5),
        (704, "VarSetPri", 1),  # reactive priority: not simulated
        (704, "VarSet", 200_000.0),  # beyond the kVA rating
        (704, "PFWInj.PF", 0.0),
        (704, "PFWInj.Ext", 2),
    ],
)
def test_out_of_range_values_are_refused(ctl: int, point: str, value: Value) -> None:
    sim, _ = _inverter(ctl)
    before = sim.registers()
    assert not _write(sim, ctl, {point: value})
    assert sim.registers() == before
