"""AC power flow: Baran & Wu's figures and agreement with pandapower (an independent engine)."""

from __future__ import annotations

import pytest
from opt_helpers import pandapower_ac

from optimizer import Branch, Bus, Network, solve_powerflow


def test_baran_wu_case33(case33: Network) -> None:
    res = solve_powerflow(case33, p_kw=case33.loads_kw, q_kvar=case33.loads_kvar)
    assert res.converged
    assert res.losses_kw == pytest.approx(202.7, rel=0.005)
    assert res.v_min_pu == pytest.approx(0.9131, abs=0.001)
    assert res.v_min_bus == 18
    assert res.import_kw == pytest.approx(case33.total_load_kw + res.losses_kw, rel=1e-9)


def _assert_agrees(net: Network, p_kw: dict[int, float], q_kvar: dict[int, float]) -> None:
    ours = solve_powerflow(net, p_kw=p_kw, q_kvar=q_kvar, v_slack_pu=1.02)
    ref = pandapower_ac(net, p_kw=p_kw, q_kvar=q_kvar, v_slack_pu=1.02)
    assert ours.converged
    assert ours.losses_kw == pytest.approx(ref.losses_kw, rel=0.005)
    assert ours.import_kw == pytest.approx(ref.import_kw, rel=0.005)
    for bus_id, vm in ref.vm_pu.items():
        assert ours.v_pu[bus_id] == pytest.approx(vm, abs=0.001), f"bus {bus_id}"


def test_agrees_with_pandapower_case33(case33: Network) -> None:
    p = dict(case33.loads_kw)
    p[18] -= 600.0  # reverse flow at the end of the main feeder
    p[25] -= 300.0
    _assert_agrees(case33, p, dict(case33.loads_kvar))


def test_agrees_with_pandapower_through_a_transformer() -> None:
    buses = (
        Bus(id=1, p_load_kw=0.0, q_load_kvar=0.0, base_kv=20.0),
        Bus(id=2, p_load_kw=0.0, q_load_kvar=0.0, base_kv=0.4),
        Bus(id=3, p_load_kw=150.0, q_load_kvar=50.0, base_kv=0.4),
        Bus(id=4, p_load_kw=100.0, q_load_kvar=30.0, base_kv=0.4),
        Bus(id=5, p_load_kw=80.0, q_load_kvar=20.0, base_kv=0.4),
    )
    branches = (
        Branch(from_bus=1, to_bus=2, r_pu=0.01, x_pu=0.05, tap=0.975),
        Branch(from_bus=2, to_bus=3, r_pu=0.05, x_pu=0.02),
        Branch(from_bus=3, to_bus=4, r_pu=0.04, x_pu=0.02),
        Branch(from_bus=2, to_bus=5, r_pu=0.06, x_pu=0.03),
    )
    net = Network(name="mv-lv", base_mva=1.0, slack_bus=1, buses=buses, branches=branches)
    res = solve_powerflow(net, p_kw=net.loads_kw, q_kvar=net.loads_kvar)
    assert res.v_pu[2] > 1.0  # the tap boosts the LV side
    _assert_agrees(net, dict(net.loads_kw), dict(net.loads_kvar))


def test_no_load_is_flat(case33: Network) -> None:
    res = solve_powerflow(case33, p_kw={}, q_kvar={}, v_slack_pu=1.01)
    assert res.converged
    assert res.losses_kw == pytest.approx(0.0, abs=1e-12)
    assert res.v_min_pu == pytest.approx(1.01)


def test_overload_does_not_converge(case33: Network) -> None:
    p = {b: 30.0 * v for b, v in case33.loads_kw.items()}
    res = solve_powerflow(case33, p_kw=p, q_kvar=case33.loads_kvar, max_iter=20)
    assert not res.converged
    assert res.iterations == 20
