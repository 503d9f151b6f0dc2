"""The rig's physics against the published IEEE 33-bus results (Baran & Wu 1989)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hil import FeederPhysics, PhysicsState, case33bw_path


@pytest.fixture(scope="module")
def physics() -> FeederPhysics:
    return FeederPhysics()


def test_case_file_ships_inside_the_package() -> None:
    path = case33bw_path()
    assert path.is_file()
    assert path.parent.name == "cases"
    assert path.parent.parent.name == "optimizer"


def test_base_case_matches_baran_and_wu(physics: FeederPhysics) -> None:
    physics.load_scale = 1.0
    state = physics.solve()
    assert state.losses_kw == pytest.approx(202.7, rel=0.01)
    assert state.v_min_pu == pytest.approx(0.9131, abs=0.002)
    assert state.v_min_bus == 18
    assert state.load_kw == pytest.approx(3715.0, abs=0.5)
    assert state.head_p_kw == pytest.approx(3715.0 + state.losses_kw, abs=0.5)
    assert state.head_q_kvar == pytest.approx(2300.0 + 135.1, abs=2.0)
    assert state.head_v_pu == pytest.approx(1.0)
    assert state.head_v_ll_v == pytest.approx(12660.0)
    # |S| / (√3 V): 4.61 MVA at 12.66 kV
    assert state.head_a == pytest.approx(210.4, abs=0.5)
    assert sorted(state.v_pu) == list(range(1, 34))
    assert state.v_pu[1] == pytest.approx(1.0)


def test_generation_reduces_import_and_losses(physics: FeederPhysics) -> None:
    physics.load_scale = 1.0
    base = physics.solve()
    physics.add_der("pv-test", 18)
    try:
        physics.set_der("pv-test", 500.0)
        with_pv = physics.solve()
    finally:
        physics.set_der("pv-test", 0.0)
    assert with_pv.der_kw == pytest.approx(500.0)
    assert with_pv.losses_kw < base.losses_kw
    assert with_pv.v_pu[18] > base.v_pu[18]
    # import falls by the injection plus the losses it saves
    saved = base.losses_kw - with_pv.losses_kw
    assert base.head_p_kw - with_pv.head_p_kw == pytest.approx(500.0 + saved, abs=0.01)


def test_load_scale_scales_the_load(physics: FeederPhysics) -> None:
    physics.load_scale = 0.5
    half = physics.solve()
    physics.load_scale = 1.0
    assert half.load_kw == pytest.approx(3715.0 / 2, abs=0.5)
    assert half.losses_kw < 202.7 / 3  # losses go with the square of the flow


def test_negative_injection_is_consumption(physics: FeederPhysics) -> None:
    physics.add_der("bat-test", 30)
    try:
        physics.set_der("bat-test", -250.0)
        state: PhysicsState = physics.solve()
    finally:
        physics.set_der("bat-test", 0.0)
    assert state.head_p_kw > 3715.0 + 250.0


def test_bad_inputs_are_refused(physics: FeederPhysics) -> None:
    with pytest.raises(ValueError, match="bus 99"):
        physics.add_der("nowhere", 99)
    with pytest.raises(ValueError, match="load scale"):
        physics.load_scale = -1.0


def test_a_re_solve_starts_from_the_last_solution(physics: FeederPhysics) -> None:
    """What keeps the rig's solve per interval cheap (timing lives in the benchmarks): each
    solve starts from the last solution, so an unchanged feeder needs no Newton iteration."""
    physics.load_scale = 1.0
    first = physics.solve()
    for _ in range(3):
        again = physics.solve()
        assert physics._net._ppc["iterations"] == 0  # converged at the starting point
        assert again.head_p_kw == pytest.approx(first.head_p_kw, abs=1e-6)
        assert again.v_pu == pytest.approx(first.v_pu, abs=1e-9)
    physics.load_scale = 0.9  # a changed feeder takes iterations, and moves
    changed = physics.solve()
    physics.load_scale = 1.0
    assert physics._net._ppc["iterations"] >= 1
    assert changed.head_p_kw < first.head_p_kw


def _case_with_slack_at(tmp_path: Path, vg: float) -> Path:
    """The 33-bus case with its slack generator's VG (and the slack bus's VM) at ``vg``."""
    text = case33bw_path().read_text(encoding="utf-8")
    gen = "\t1\t0\t0\t10\t-10\t1\t1\t1\t10\t-1e-10;"
    assert gen in text
    text = text.replace(gen, f"\t1\t0\t0\t10\t-10\t{vg:g}\t1\t1\t10\t-1e-10;")
    path = tmp_path / "case33_slack.m"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_slack_voltage_is_the_case_s_until_set(tmp_path: Path) -> None:
    assert FeederPhysics().slack_v_pu == pytest.approx(1.0)
    physics = FeederPhysics(_case_with_slack_at(tmp_path, 1.03))
    assert physics.slack_v_pu == pytest.approx(1.03)
    state = physics.solve()
    assert state.head_v_pu == pytest.approx(1.03, abs=1e-9)
    assert state.head_v_ll_v == pytest.approx(1.03 * 12660.0, abs=1e-3)


def test_a_new_slack_voltage_moves_every_bus_on_the_next_solve() -> None:
    """The busbar (an on-load tap changer's step) moves every bus with it, also when the solve
    reuses the last one's model (which keeps the old slack voltage unless told)."""
    physics = FeederPhysics()
    physics.load_scale = 0.6
    physics.add_der("pv18", 18)
    physics.set_der("pv18", 300.0)
    base = physics.solve()
    again = physics.solve()  # a recycled model from here on
    assert again.v_pu == pytest.approx(base.v_pu, abs=1e-9)
    for v_slack in (1.04, 0.97, 1.0):
        physics.slack_v_pu = v_slack
        moved = physics.solve()
        assert physics.slack_v_pu == v_slack
        assert moved.head_v_pu == pytest.approx(v_slack, abs=1e-9)
        assert moved.v_pu[1] == pytest.approx(v_slack, abs=1e-9)
        shift = v_slack - base.head_v_pu
        for bus, v in moved.v_pu.items():
            # every bus moves with the busbar (by about as much: the flows barely change)
            assert v - base.v_pu[bus] == pytest.approx(shift, abs=0.1 * abs(shift) + 1e-9), bus
        # the same state as a model built afresh at that slack voltage
        fresh = FeederPhysics()
        fresh.load_scale = 0.6
        fresh.add_der("pv18", 18)
        fresh.set_der("pv18", 300.0)
        fresh.slack_v_pu = v_slack
        assert moved.v_pu == pytest.approx(fresh.solve().v_pu, abs=1e-8)
    assert physics.solve().v_pu == pytest.approx(base.v_pu, abs=1e-8)


@pytest.mark.parametrize("bad", [0.5, 1.3, math.nan, math.inf])
def test_an_implausible_slack_voltage_is_refused(bad: float) -> None:
    physics = FeederPhysics()
    with pytest.raises(ValueError, match=r"slack voltage must be within 0\.8\.\.1\.2 p\.u\."):
        physics.slack_v_pu = bad
    assert physics.slack_v_pu == 1.0
