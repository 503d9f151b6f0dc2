"""The kept HiGHS model: updating numbers gives the LP a fresh build would, and its answer."""

from __future__ import annotations

import dataclasses

import highspy
import numpy as np
import pandas as pd
import pytest
from opt_helpers import pandapower_ac

from optimizer import (
    Dispatcher,
    DispatchInput,
    DispatchStatus,
    FlexibleLoad,
    Forecast,
    HighsSession,
    Network,
    synthetic_ders,
    synthetic_feeder,
)
from optimizer.lp import build, lp_numbers
from optimizer.session import WARM_ITERATIONS_MIN, SolveOutcome


def _input(net: Network, scale: float = 1.0, **changes: object) -> DispatchInput:
    ders = synthetic_ders(net, pv_available=0.5)
    fields: dict[str, object] = {
        "loads_kw": {b: scale * p for b, p in net.loads_kw.items()},
        "loads_kvar": {b: scale * q for b, q in net.loads_kvar.items()},
        "pv": ders.pv,
        "batteries": ders.batteries,
        "import_limit_kw": ders.import_limit_kw,
        "interval_s": 300.0,
        "v_min_pu": 0.90,
    }
    fields.update(changes)
    return DispatchInput(**fields)  # type: ignore[arg-type]


def _lp_arrays(h: highspy.Highs) -> dict[str, np.ndarray]:
    lp = h.getLp()
    n_row = lp.num_row_
    dense = np.zeros((n_row, lp.num_col_))
    m = lp.a_matrix_
    start, index, value = np.asarray(m.start_), np.asarray(m.index_), np.asarray(m.value_)
    outer = lp.num_col_ if m.format_ == highspy.MatrixFormat.kColwise else n_row
    for o in range(outer):
        span = slice(start[o], start[o + 1])
        if m.format_ == highspy.MatrixFormat.kColwise:
            dense[index[span], o] += value[span]
        else:
            dense[o, index[span]] += value[span]
    return {
        "cost": np.asarray(lp.col_cost_),
        "col_lower": np.asarray(lp.col_lower_),
        "col_upper": np.asarray(lp.col_upper_),
        "row_lower": np.asarray(lp.row_lower_),
        "row_upper": np.asarray(lp.row_upper_),
        "matrix": dense,
        "offset": np.array([lp.offset_]),
    }


def test_updated_model_equals_a_fresh_build(case33: Network) -> None:
    first = _input(case33)
    later = _input(case33, scale=1.3, import_limit_kw=1500.0, price_per_kwh=0.2)
    later = dataclasses.replace(
        later,
        pv=tuple(dataclasses.replace(u, last_setpoint_kw=0.5 * u.available_kw) for u in later.pv),
    )
    d = Dispatcher(case33, time_limit_s=60.0)
    ops_first = d.operating_points(first)
    ops_later = d.operating_points(later)
    kept = HighsSession(build(case33, first, ops_first), time_limit_s=10.0)
    kept.run()
    kept.update(lp_numbers(case33, later, ops_later))
    fresh = HighsSession(build(case33, later, ops_later), time_limit_s=10.0)
    a, b = _lp_arrays(kept.highs), _lp_arrays(fresh.highs)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-12, err_msg=key)
    kept.run()
    fresh.run()
    assert kept.objective() == pytest.approx(fresh.objective(), rel=1e-7)


def test_daemon_path_builds_once_and_matches_cold_solves(case33: Network) -> None:
    d = Dispatcher(case33, time_limit_s=60.0)
    for scale in (1.0, 0.8, 1.2, 0.9):
        inp = _input(case33, scale=scale)
        kept = d.solve(inp)
        cold = Dispatcher(case33, time_limit_s=60.0).solve(inp)
        assert kept.status is cold.status is DispatchStatus.OPTIMAL
        assert kept.objective == pytest.approx(cold.objective, rel=1e-6)
        assert kept.import_kw == pytest.approx(cold.import_kw, abs=0.05)
    assert d.builds == 1
    assert d.session is not None
    assert d.session.solves == 4


def test_a_warm_start_that_wanders_is_solved_from_scratch(case33: Network) -> None:
    """Past its iteration budget a warm start is dropped for a solve from scratch (in the
    time left), which finds the same optimum: a kept basis can only save time, never cost a
    dispatch (a 1,000-bus feeder's re-linearised LP once stalled HiGHS for a minute)."""
    first = _input(case33)
    later = _input(case33, scale=1.3, import_limit_kw=1500.0)
    d = Dispatcher(case33, time_limit_s=60.0)
    kept = HighsSession(build(case33, first, d.operating_points(first)), time_limit_s=10.0)
    assert kept.run()[0] is SolveOutcome.OPTIMAL
    assert kept.warm_iteration_limit >= WARM_ITERATIONS_MIN
    kept.warm_iteration_limit = 1  # any real re-solve needs more
    kept.update(lp_numbers(case33, later, d.operating_points(later)))
    assert kept.run() == (SolveOutcome.OPTIMAL, "")
    assert kept.cold_restarts == 1
    fresh = HighsSession(build(case33, later, d.operating_points(later)), time_limit_s=10.0)
    fresh.run()
    assert kept.objective() == pytest.approx(fresh.objective(), rel=1e-7)
    # the budget applies to the next warm start again, not to a solve from scratch
    assert kept.highs.getOptionValue("simplex_iteration_limit")[1] > 10**9


def test_the_time_limit_is_per_run_not_for_the_life_of_the_model(case33: Network) -> None:
    """HiGHS accumulates its run time over every run of an instance and compares its time
    limit with that total: a kept model that had solved for `time_limit_s` in all, over many
    intervals, then timed out every interval (the daemon fell back to proportional curtailment
    for good). Each run gets the whole limit."""
    d = Dispatcher(case33, time_limit_s=60.0)
    first = _input(case33)
    kept = HighsSession(build(case33, first, d.operating_points(first)), time_limit_s=1.0)
    assert kept.run()[0] is SolveOutcome.OPTIMAL
    scales = [1.0 + 0.02 * (k % 10) for k in range(400)]
    for n, scale in enumerate(scales, start=1):
        if kept.highs.getRunTime() > 1.5 * kept.time_limit_s:
            break
        kept.warm_iteration_limit = 1  # every run from scratch: the total grows fast
        inp = _input(case33, scale=scale)
        kept.update(lp_numbers(case33, inp, d.operating_points(inp)))
        assert kept.run() == (SolveOutcome.OPTIMAL, ""), f"run {n}"
    else:
        pytest.skip("the runs never added up to the limit")
    assert kept.highs.getRunTime() > kept.time_limit_s
    inp = _input(case33, scale=1.1)
    kept.update(lp_numbers(case33, inp, d.operating_points(inp)))
    assert kept.run() == (SolveOutcome.OPTIMAL, "")


def _largest_finite_row_bound(h: highspy.Highs) -> float:
    arrays = _lp_arrays(h)
    bounds = np.concatenate([arrays["row_lower"], arrays["row_upper"]])
    return float(np.max(np.abs(bounds[np.isfinite(bounds)])))


def test_absent_limits_are_free_rows_not_huge_numbers(case33: Network) -> None:
    """No import or export limit: HiGHS gets infinite row bounds, not the 1e9 stand-ins (which
    next to 1e-7 tolerances made the LP badly scaled), when built and when updated."""
    inp = _input(case33, import_limit_kw=None, export_limit_kw=None)
    ops = Dispatcher(case33, time_limit_s=60.0).operating_points(inp)
    session = HighsSession(build(case33, inp, ops), time_limit_s=10.0)
    assert _largest_finite_row_bound(session.highs) < 1e6
    session.update(lp_numbers(case33, inp, ops))
    assert _largest_finite_row_bound(session.highs) < 1e6
    assert session.run()[0] is SolveOutcome.OPTIMAL
    limited = HighsSession(build(case33, _input(case33), ops), time_limit_s=10.0)
    assert _largest_finite_row_bound(limited.highs) < 1e6  # a real limit is a real bound


def test_new_unit_set_rebuilds(case33: Network) -> None:
    d = Dispatcher(case33, time_limit_s=60.0)
    d.solve(_input(case33))
    d.solve(_input(case33, batteries=()))
    assert d.builds == 2


def test_cbc_gives_the_same_dispatch(case33: Network) -> None:
    inp = _input(case33, scale=1.2, import_limit_kw=2500.0)
    highs = Dispatcher(case33, time_limit_s=60.0).solve(inp)
    cbc = Dispatcher(case33, solver="cbc", time_limit_s=60.0).solve(inp)
    assert cbc.solver == "CBC"
    assert cbc.status is highs.status
    assert cbc.objective == pytest.approx(highs.objective, rel=1e-5, abs=1e-4)
    assert cbc.import_kw == pytest.approx(highs.import_kw, abs=0.5)


def _ac_of(net: Network, inp: DispatchInput, res: object) -> object:
    p = dict(inp.loads_kw)
    q = dict(inp.loads_kvar)
    for u in inp.pv:
        p[u.bus] -= res.pv_kw[u.name]  # type: ignore[attr-defined]
        q[u.bus] -= res.pv_kvar[u.name]  # type: ignore[attr-defined]
    for b in inp.batteries:
        p[b.bus] -= res.battery_kw[b.name]  # type: ignore[attr-defined]
    for f in inp.flexible_loads:
        p[f.bus] = p.get(f.bus, 0.0) + res.load_kw[f.name]  # type: ignore[attr-defined]
    return pandapower_ac(net, p_kw=p, q_kvar=q)


@pytest.mark.parametrize("pv_available", [0.2, 0.8])
def test_lp_estimates_match_pandapower_case33(case33: Network, pv_available: float) -> None:
    ders = synthetic_ders(case33, pv_available=pv_available)
    inp = _input(case33, pv=ders.pv)
    res = Dispatcher(case33, passes=3, time_limit_s=60.0).solve(inp)
    assert res.status.has_setpoints, res.message
    ac = _ac_of(case33, inp, res)
    assert res.losses_kw == pytest.approx(ac.losses_kw, rel=0.03)  # type: ignore[attr-defined]
    assert res.v_min_pu == pytest.approx(min(ac.vm_pu.values()), abs=0.005)  # type: ignore[attr-defined]
    assert res.import_kw == pytest.approx(ac.import_kw, rel=0.01)  # type: ignore[attr-defined]


def test_lp_estimates_match_pandapower_on_a_feeder_with_transformers() -> None:
    net = synthetic_feeder(150, seed=4, total_load_kw=3000.0)
    assert any(b.tap != 1.0 for b in net.branches)
    inp = _input(net, v_min_pu=0.9)
    res = Dispatcher(net, passes=3, time_limit_s=60.0).solve(inp)
    assert res.status.has_setpoints, res.message
    ac = _ac_of(net, inp, res)
    assert res.losses_kw == pytest.approx(ac.losses_kw, rel=0.03)  # type: ignore[attr-defined]
    assert res.v_min_pu == pytest.approx(min(ac.vm_pu.values()), abs=0.005)  # type: ignore[attr-defined]


def test_reactive_power_stays_in_the_kva_polygon(case33: Network) -> None:
    res = Dispatcher(case33, time_limit_s=60.0).solve(_input(case33))
    inp = _input(case33)
    assert sum(abs(v) for v in res.pv_kvar.values()) > 10.0  # the LP uses reactive power
    for u in inp.pv:
        p, q = res.pv_kw[u.name], res.pv_kvar[u.name]
        assert abs(q) <= u.q_max_kvar + 1e-6
        assert (p**2 + q**2) ** 0.5 <= u.rating_kva + 1e-6


def test_flexible_load_is_shed_only_to_meet_a_limit(case33: Network) -> None:
    fl = FlexibleLoad(name="heat", bus=18, p_nominal_kw=300.0, p_min_kw=50.0, q_per_kw=0.2)
    free = Dispatcher(case33, time_limit_s=60.0).solve(
        _input(case33, flexible_loads=(fl,), import_limit_kw=None)
    )
    assert free.load_kw["heat"] == pytest.approx(300.0, abs=1e-6)
    tight = _input(case33, flexible_loads=(fl,), batteries=(), import_limit_kw=free.import_kw - 200)
    res = Dispatcher(case33, time_limit_s=60.0).solve(tight)
    assert res.status is DispatchStatus.OPTIMAL, res.message
    assert 50.0 <= res.load_kw["heat"] < 300.0 - 150.0
    assert res.import_kw <= tight.import_limit_kw + 0.01  # type: ignore[operator]


def test_flexible_load_with_impossible_limits_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"flexible load 'heat': p_min_kw 80.0 exceeds p_nominal_kw 50.0"
    ):
        FlexibleLoad(name="heat", bus=18, p_nominal_kw=50.0, p_min_kw=80.0)


def test_horizon_moves_battery_energy_to_the_expensive_step(case33: Network) -> None:
    price = pd.Series([0.05] * 6 + [0.40] * 6)
    inp = _input(case33, horizon=12, forecast=Forecast(price=price), import_limit_kw=None)
    res = Dispatcher(case33, time_limit_s=60.0).solve(inp)
    assert res.status.has_setpoints, res.message
    assert len(res.import_plan_kw) == 12
    for plan in res.soc_plan_kwh.values():
        assert max(plan[6:]) < max(plan[:6]) or plan[-1] <= plan[5]
    cheap = sum(res.import_plan_kw[:6]) / 6
    dear = sum(res.import_plan_kw[6:]) / 6
    assert dear < cheap - 100.0  # batteries charge while cheap and discharge while dear


def test_short_forecast_is_refused(case33: Network) -> None:
    with pytest.raises(ValueError, match=r"forecast load: has 3 steps, the horizon needs 4"):
        _input(case33, horizon=4, forecast=Forecast(load=pd.Series([1.0, 1.0, 1.0])))


def test_branch_rating_is_a_soft_limit_reported_in_kva() -> None:
    net = synthetic_feeder(60, seed=5, total_load_kw=1500.0)
    rated = [b for b in net.branches if b.rating_kva is not None]
    assert rated
    inp = _input(net, scale=3.0, pv=(), batteries=(), import_limit_kw=None)
    res = Dispatcher(net, time_limit_s=60.0).solve(inp)
    assert res.status is DispatchStatus.LIMIT_RELAXED
    assert res.rating_slack_kva > 0
    assert "branch rating exceeded" in res.message


def test_highs_writes_nothing_to_stdout_and_leaves_the_process_stdout_alone() -> None:
    """Each HiGHS instance is made quiet (no banner on fd 1), without redirecting the
    process's standard output around it: a line printed by another part of the program
    while solvers are made still arrives."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    script = (
        "import threading\n"
        "from optimizer import Dispatcher, DispatchInput, synthetic_feeder, synthetic_ders\n"
        "net = synthetic_feeder(20, seed=3)\n"
        "ders = synthetic_ders(net, pv_available=0.5)\n"
        "inp = DispatchInput(loads_kw=net.loads_kw, loads_kvar=net.loads_kvar, pv=ders.pv,\n"
        "    batteries=ders.batteries, import_limit_kw=ders.import_limit_kw, interval_s=300.0,\n"
        "    v_min_pu=0.9)\n"
        "def talk():\n"
        "    for i in range(200):\n"
        "        print(f'line {i}', flush=True)\n"
        "t = threading.Thread(target=talk); t.start()\n"
        "for _ in range(3):\n"
        "    assert Dispatcher(net, time_limit_s=60.0).solve(inp).status.has_setpoints\n"
        "t.join()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "HiGHS" not in out.stdout + out.stderr
    assert out.stdout.splitlines() == [f"line {i}" for i in range(200)]
