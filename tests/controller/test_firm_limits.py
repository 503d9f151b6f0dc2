"""Firm limits (issue 14): the headroom the dispatch leaves to a limit in force is spread as
ceilings over the devices that could carry the head past it, and the sun's ramp is carried
one interval ahead toward the limit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.setpoints import Headroom, firm_ceilings, revert_ceilings, setpoints
from controller.snapshot import EstimatorState, Snapshot, _anticipated, _pv_available
from devices import LoadReading, LoadSetpoint, MeterReading, PvReading, PvSetpoint
from optimizer import DispatchResult, DispatchStatus


def _pv(name: str, p_kw: float, *, limit_pct: float | None = None) -> PvReading:
    return PvReading(
        device=name,
        p_kw=p_kw,
        w_max_kw=100.0,
        limit_pct=limit_pct,
        limit_enabled=limit_pct is not None,
        limit_revert_s=60 if limit_pct is not None else None,
    )


def _snapshot(pv: dict[str, PvReading], loads: dict[str, LoadReading] | None = None) -> Snapshot:
    return Snapshot(
        cycle=1,
        taken_at=datetime(2026, 6, 1, 12, tzinfo=UTC),
        head=MeterReading(device="head", p_kw=-1000.0, q_kvar=None, v_ll_v=None, a=None),
        pv=pv,
        batteries={},
        loads=loads or {},
        missing=frozenset(),
    )


def test_under_an_export_limit_the_uncurtailed_inverters_share_the_headroom() -> None:
    snap = _snapshot({"a": _pv("a", 40.0), "b": _pv("b", 70.0), "c": _pv("c", 20.0)})
    state = EstimatorState(pv_available_kw={"a": 40.0, "b": 70.0, "c": 50.0})
    result = DispatchResult(
        status=DispatchStatus.OPTIMAL,
        pv_kw={"a": 40.0, "b": 70.0, "c": 20.0},  # c is curtailed by the dispatch
        import_kw=-1190.0,
    )
    out = setpoints(
        result,
        snap,
        state,
        Headroom(predicted_import_kw=-1190.0, export_limit_kw=1200.0),
    )
    ceiling = {n: sp.p_max_kw for n, sp in out.items() if isinstance(sp, PvSetpoint)}
    # 10 kW of headroom; a could rise 60 kW, b 30 kW: a gets 2/3 of it, b 1/3
    assert ceiling["a"] == pytest.approx(40.0 + 10.0 * 60 / 90)
    assert ceiling["b"] == pytest.approx(70.0 + 10.0 * 30 / 90)
    assert ceiling["c"] == 20.0  # its curtailment, as before
    # together they may rise by the headroom, and no more
    assert sum(ceiling[n] - result.pv_kw[n] for n in ("a", "b")) == pytest.approx(10.0)
    # no battery charging: each limit reverts to its ceiling (a 704 holds the cap alone)
    assert all(sp.revert_kw == ceiling[n] for n, sp in out.items() if isinstance(sp, PvSetpoint))


def test_under_an_export_limit_a_revert_value_leaves_out_what_the_batteries_absorb() -> None:
    # the batteries charge 60 kW of the 200 kW the ceilings let through; they revert to idle,
    # so the ceilings revert to 140 kW together, in proportion
    revert = revert_ceilings({"a": 150.0, "b": 50.0}, {"b1": -40.0, "b2": -20.0, "b3": 10.0})
    assert revert == {"a": pytest.approx(105.0), "b": pytest.approx(35.0)}
    assert revert_ceilings({"a": 10.0}, {"b1": -50.0}) == {"a": 0.0}  # the driver floors it


def test_without_a_limit_or_with_room_to_spare_nothing_is_capped() -> None:
    snap = _snapshot({"a": _pv("a", 40.0)})
    state = EstimatorState(pv_available_kw={"a": 40.0})
    result = DispatchResult(status=DispatchStatus.OPTIMAL, pv_kw={"a": 40.0}, import_kw=-500.0)
    assert setpoints(result, snap, state)["a"] == PvSetpoint(device="a", p_max_kw=100.0)
    roomy = Headroom(predicted_import_kw=-500.0, export_limit_kw=1200.0)  # 700 kW > 60 kW
    assert setpoints(result, snap, state, roomy)["a"] == PvSetpoint(
        device="a", p_max_kw=100.0, revert_kw=100.0
    )
    # an import limit does not cap the inverters: their rise lowers the import
    imp = Headroom(predicted_import_kw=-500.0, import_limit_kw=-510.0)
    assert setpoints(result, snap, state, imp)["a"] == PvSetpoint(device="a", p_max_kw=100.0)


def test_under_an_import_limit_the_unshed_loads_share_the_headroom() -> None:
    load = LoadReading(
        device="ld", p_kw=30.0, rating_kw=80.0, min_kw=5.0, limit_kw=None, limit_active=None
    )
    snap = _snapshot({}, {"ld": load})
    state = EstimatorState(load_demand_kw={"ld": 30.0})
    result = DispatchResult(status=DispatchStatus.OPTIMAL, load_kw={"ld": 30.0}, import_kw=995.0)
    out = setpoints(result, snap, state, Headroom(predicted_import_kw=995.0, import_limit_kw=1e3))
    assert out["ld"] == LoadSetpoint(device="ld", p_max_kw=pytest.approx(35.0))
    # past the limit already (the slack in use): held at its dispatch, never below it
    over = Headroom(predicted_import_kw=1010.0, import_limit_kw=1e3)
    assert setpoints(result, snap, state, over)["ld"] == LoadSetpoint(device="ld", p_max_kw=30.0)


@given(
    dispatched=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=8),
    headroom=st.floats(0.0, 1000.0),
)
def test_firm_ceilings_never_fall_below_the_dispatch_and_rise_by_the_headroom_at_most(
    dispatched: list[float], headroom: float
) -> None:
    names = {f"u{i}": p for i, p in enumerate(dispatched)}
    ratings = dict.fromkeys(names, 100.0)
    ceilings = firm_ceilings(names, ratings, headroom)
    room = sum(100.0 - p for p in dispatched)
    if room <= headroom:
        assert ceilings == {}
    else:
        for n, c in ceilings.items():
            assert names[n] - 1e-9 <= c <= 100.0 + 1e-9
        assert sum(c - names[n] for n, c in ceilings.items()) == pytest.approx(headroom)


def test_the_sun_ramp_is_learnt_and_carried_on_while_a_ceiling_holds_the_inverter() -> None:
    state = EstimatorState()
    for p in (20.0, 30.0, 40.0):  # the cloud clears: 10 kW more each interval
        _pv_available(_pv("a", p), state, anticipate=True)
    trend = state.pv_trend_kw["a"]
    assert 5.0 < trend <= 10.0
    # anticipated toward an export limit (rising), not toward an import limit
    assert _anticipated(40.0, trend, 100.0, 1) == pytest.approx(40.0 + trend)
    assert _anticipated(40.0, trend, 100.0, -1) == 40.0
    assert _anticipated(40.0, trend, 100.0, 0) == 40.0
    # now a firm ceiling at 42 kW holds it: the sun it was ramping toward is assumed ...
    held = _pv_available(_pv("a", 42.0, limit_pct=42.0), state, anticipate=True)
    assert held == pytest.approx(40.0 + trend)
    # ... and while it stays held, more each interval (the ramp shrinks; 2% of WMax at least)
    again = _pv_available(_pv("a", 42.0, limit_pct=42.0), state, anticipate=True)
    assert again == pytest.approx(held + max(0.7 * trend, 2.0))
    # ... and the next reading below its ceiling is the truth again
    assert _pv_available(_pv("a", 35.0, limit_pct=60.0), state, anticipate=True) == 35.0
    # without anticipation a held inverter keeps the last value it showed unheld
    plain = EstimatorState(pv_available_kw={"a": 40.0}, pv_trend_kw={"a": 10.0})
    assert _pv_available(_pv("a", 42.0, limit_pct=42.0), plain) == 42.0
