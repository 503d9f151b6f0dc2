"""The LP dispatch on the 33-bus feeder, checked against pandapower's AC power flow."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opt_helpers import pandapower_ac

from optimizer import (
    BatteryUnit,
    Dispatcher,
    DispatchInput,
    DispatchResult,
    DispatchStatus,
    Network,
    PvUnit,
    proportional_curtailment,
)

PV = (
    PvUnit(name="pv18", bus=18, rating_kva=800.0, p_max_kw=800.0, available_kw=600.0),
    PvUnit(name="pv25", bus=25, rating_kva=800.0, p_max_kw=800.0, available_kw=700.0),
    PvUnit(name="pv33", bus=33, rating_kva=500.0, p_max_kw=500.0, available_kw=400.0),
)
BATTERIES = (
    BatteryUnit(
        name="b30",
        bus=30,
        p_max_kw=500.0,
        energy_kwh=1000.0,
        soc_kwh=600.0,
        soc_min_kwh=100.0,
        soc_max_kwh=950.0,
    ),
    BatteryUnit(
        name="b14",
        bus=14,
        p_max_kw=300.0,
        energy_kwh=600.0,
        soc_kwh=300.0,
        soc_min_kwh=60.0,
        soc_max_kwh=570.0,
    ),
)
TOL_KW = 0.01


def _input(net: Network, **changes: object) -> DispatchInput:
    fields: dict[str, object] = {
        "loads_kw": net.loads_kw,
        "loads_kvar": net.loads_kvar,
        "pv": PV,
        "batteries": BATTERIES,
        "interval_s": 300.0,
        "v_min_pu": 0.90,
    }
    fields.update(changes)
    return DispatchInput(**fields)  # type: ignore[arg-type]


def _net_load(inp: DispatchInput, res: DispatchResult) -> dict[int, float]:
    p = dict(inp.loads_kw)
    for u in inp.pv:
        p[u.bus] = p.get(u.bus, 0.0) - res.pv_kw[u.name]
    for b in inp.batteries:
        p[b.bus] = p.get(b.bus, 0.0) - res.battery_kw[b.name]
    return p


def _uncontrolled_import_kw(net: Network, inp: DispatchInput) -> float:
    idle = {u.name: u.p_upper_kw for u in inp.pv}
    res = DispatchResult(
        status=DispatchStatus.FALLBACK, pv_kw=idle, battery_kw={b.name: 0.0 for b in BATTERIES}
    )
    return pandapower_ac(net, p_kw=_net_load(inp, res), q_kvar=inp.loads_kvar).import_kw


def test_import_limit_met_by_batteries_and_matches_ac(case33: Network) -> None:
    uncontrolled = _uncontrolled_import_kw(case33, _input(case33))
    limit = uncontrolled - 500.0
    inp = _input(case33, import_limit_kw=limit)
    res = Dispatcher(case33, time_limit_s=60.0).solve(inp)
    assert res.status is DispatchStatus.OPTIMAL, res.message
    assert res.import_kw <= limit + TOL_KW
    assert sum(res.battery_kw.values()) >= 450.0
    assert res.curtailed_kw == pytest.approx(0.0, abs=TOL_KW)
    ac = pandapower_ac(case33, p_kw=_net_load(inp, res), q_kvar=inp.loads_kvar)
    assert res.import_kw == pytest.approx(ac.import_kw, rel=0.02)
    assert res.losses_kw == pytest.approx(ac.losses_kw, rel=0.05)
    assert res.v_min_pu == pytest.approx(min(ac.vm_pu.values()), abs=0.005)


def test_export_limit_met_by_curtailing_pv(case33: Network) -> None:
    light = {b: 0.2 * p for b, p in case33.loads_kw.items()}
    light_q = {b: 0.2 * q for b, q in case33.loads_kvar.items()}
    inp = _input(case33, loads_kw=light, loads_kvar=light_q, batteries=(), export_limit_kw=500.0)
    res = Dispatcher(case33, time_limit_s=60.0).solve(inp)
    assert res.status is DispatchStatus.OPTIMAL, res.message
    assert res.import_kw >= -500.0 - TOL_KW
    assert res.curtailed_kw > 100.0
    ac = pandapower_ac(case33, p_kw=_net_load(inp, res), q_kvar=inp.loads_kvar)
    assert ac.import_kw >= -500.0 * 1.02


def test_impossible_limit_is_relaxed_by_the_shortfall(case33: Network) -> None:
    inp = _input(case33, import_limit_kw=500.0)
    res = Dispatcher(case33, time_limit_s=60.0).solve(inp)
    assert res.status is DispatchStatus.LIMIT_RELAXED
    assert res.battery_kw == {"b30": pytest.approx(500.0), "b14": pytest.approx(300.0)}
    assert res.import_slack_kw > 0
    assert res.import_slack_kw == pytest.approx(res.import_kw - 500.0, abs=TOL_KW)
    assert "import limit missed" in res.message


def test_same_input_same_output(case33: Network) -> None:
    inp = _input(case33, import_limit_kw=1500.0)
    first = Dispatcher(case33, time_limit_s=60.0).solve(inp)
    second = Dispatcher(case33, time_limit_s=60.0).solve(inp)
    assert first.status is second.status
    assert first.pv_kw == second.pv_kw
    assert first.battery_kw == second.battery_kw
    assert first.import_kw == second.import_kw
    assert first.objective == second.objective


def test_unit_on_unknown_bus_is_a_programming_error(case33: Network) -> None:
    stray = PvUnit(name="stray", bus=99, rating_kva=10.0, p_max_kw=10.0, available_kw=5.0)
    with pytest.raises(ValueError, match=r"PV unit 'stray' is on bus 99"):
        Dispatcher(case33, time_limit_s=60.0).solve(_input(case33, pv=(stray,)))


def test_ramp_limit_holds(case33: Network) -> None:
    slow = PvUnit(
        name="pv18",
        bus=18,
        rating_kva=800.0,
        p_max_kw=800.0,
        available_kw=600.0,
        last_setpoint_kw=600.0,
        ramp_kw_per_s=0.1,
    )
    light = {b: 0.1 * p for b, p in case33.loads_kw.items()}
    inp = _input(case33, loads_kw=light, pv=(slow,), batteries=(), export_limit_kw=0.0)
    res = Dispatcher(case33, time_limit_s=60.0).solve(inp)
    assert res.pv_kw["pv18"] == pytest.approx(600.0 - 0.1 * 300.0)
    assert res.status is DispatchStatus.LIMIT_RELAXED


def test_proportional_curtailment_meets_export_limit(case33: Network) -> None:
    light = {b: 0.2 * p for b, p in case33.loads_kw.items()}
    inp = _input(case33, loads_kw=light, batteries=(), export_limit_kw=300.0)
    res = proportional_curtailment(case33, inp)
    assert res.status is DispatchStatus.FALLBACK
    assert res.import_kw == pytest.approx(-300.0, abs=1.0)
    fractions = {u.name: res.pv_kw[u.name] / u.p_upper_kw for u in PV}
    assert max(fractions.values()) == pytest.approx(min(fractions.values()))
    ac = pandapower_ac(case33, p_kw=_net_load(inp, res), q_kvar=inp.loads_kvar)
    assert ac.import_kw == pytest.approx(res.import_kw, abs=1.0)


def test_proportional_curtailment_discharges_for_import_limit(case33: Network) -> None:
    inp = _input(case33, import_limit_kw=1800.0)
    res = proportional_curtailment(case33, inp)
    assert res.import_kw == pytest.approx(1800.0, abs=1.0)
    assert res.battery_kw["b30"] / 500.0 == pytest.approx(res.battery_kw["b14"] / 300.0)


def _battery_ok(unit: BatteryUnit, p_kw: float, interval_s: float) -> bool:
    eps = 1e-6
    soc = unit.soc_after_kwh(p_kw, interval_s)
    return (
        -unit.p_max_kw - eps <= p_kw <= unit.p_max_kw + eps
        and soc >= min(unit.soc_min_kwh, unit.soc_kwh) - eps
        and soc <= max(unit.soc_max_kwh, unit.soc_kwh) + eps
    )


@settings(max_examples=int(os.environ.get("OPT_EXAMPLES", "12")), deadline=None)
@given(
    load_scale=st.floats(0.05, 1.5),
    sun=st.lists(st.floats(0.0, 1000.0), min_size=3, max_size=3),
    socs=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2),
    import_limit=st.one_of(st.none(), st.floats(-2000.0, 5000.0)),
    export_limit=st.one_of(st.none(), st.floats(0.0, 3000.0)),
)
def test_setpoints_stay_within_ratings(
    case33: Network,
    load_scale: float,
    sun: list[float],
    socs: list[float],
    import_limit: float | None,
    export_limit: float | None,
) -> None:
    pv = tuple(
        PvUnit(
            name=u.name,
            bus=u.bus,
            rating_kva=u.rating_kva,
            p_max_kw=u.p_max_kw,
            available_kw=a,
        )
        for u, a in zip(PV, sun, strict=True)
    )
    batteries = tuple(
        BatteryUnit(
            name=b.name,
            bus=b.bus,
            p_max_kw=b.p_max_kw,
            energy_kwh=b.energy_kwh,
            soc_kwh=s * b.energy_kwh,
            soc_min_kwh=b.soc_min_kwh,
            soc_max_kwh=b.soc_max_kwh,
        )
        for b, s in zip(BATTERIES, socs, strict=True)
    )
    loads: Mapping[int, float] = {b: load_scale * p for b, p in case33.loads_kw.items()}
    inp = _input(
        case33,
        loads_kw=loads,
        pv=pv,
        batteries=batteries,
        import_limit_kw=import_limit,
        export_limit_kw=export_limit,
    )
    for res in (
        Dispatcher(case33, time_limit_s=60.0).solve(inp),
        proportional_curtailment(case33, inp),
    ):
        assert res.status.has_setpoints, res.message
        for u in pv:
            assert -1e-6 <= res.pv_kw[u.name] <= min(u.available_kw, u.p_max_kw) + 1e-6
        for b in batteries:
            assert _battery_ok(b, res.battery_kw[b.name], inp.interval_s)
        assert math.isfinite(res.import_kw)


def test_a_bus_held_within_its_own_band(case33: Network) -> None:
    """`v_band_pu` (a case's limits, when the config asks for them) holds one bus tighter than
    the rest: the dispatch raises bus 18 to its own floor, checked by pandapower."""
    loose = Dispatcher(case33, time_limit_s=60.0).solve(_input(case33))
    assert loose.status is DispatchStatus.OPTIMAL, loose.message
    ac_loose = pandapower_ac(
        case33, p_kw=_net_load(_input(case33), loose), q_kvar=case33.loads_kvar
    )
    floor = ac_loose.vm_pu[18] + 0.01
    inp = _input(case33, v_band_pu={18: (floor, 1.05)})
    res = Dispatcher(case33, time_limit_s=60.0).solve(inp)
    assert res.status is DispatchStatus.OPTIMAL, res.message
    ac = pandapower_ac(case33, p_kw=_net_load(inp, res), q_kvar=inp.loads_kvar)
    assert ac.vm_pu[18] >= floor - 0.002
    assert sum(res.battery_kw.values()) > sum(loose.battery_kw.values())


def test_the_slack_voltage_moves_every_estimate(case33: Network) -> None:
    """A busbar at 1.03 p.u.: the LP's voltages and losses follow it, as the AC flow does."""
    for v_slack in (0.98, 1.03):
        inp = _input(case33, v_slack_pu=v_slack)
        res = Dispatcher(case33, time_limit_s=60.0).solve(inp)
        assert res.status is DispatchStatus.OPTIMAL, res.message
        ac = pandapower_ac(
            case33, p_kw=_net_load(inp, res), q_kvar=inp.loads_kvar, v_slack_pu=v_slack
        )
        assert res.v_min_pu == pytest.approx(min(ac.vm_pu.values()), abs=0.002)
        assert res.losses_kw == pytest.approx(ac.losses_kw, rel=0.03)
