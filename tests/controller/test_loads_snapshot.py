"""Loads in the snapshot's translation (pure): the bus loads, the demand while held, the floor."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from controller.snapshot import EstimatorState, Snapshot, dispatch_input, flexible_loads
from devices import LoadReading, MeterReading
from optimizer import DispatchInput, builtin_case, load_matpower

NET = load_matpower(builtin_case("case33bw"))


def _reading(
    p_kw: float, *, limit_kw: float | None = None, active: bool | None = None
) -> LoadReading:
    return LoadReading(
        device="ld",
        p_kw=p_kw,
        rating_kw=200.0,
        min_kw=30.0,
        limit_kw=limit_kw,
        limit_active=active,
    )


def _snapshot(head_kw: float, loads: dict[str, LoadReading]) -> Snapshot:
    return Snapshot(
        cycle=1,
        taken_at=datetime(2026, 7, 1, tzinfo=UTC),
        head=MeterReading(device="head", p_kw=head_kw, q_kvar=None, v_ll_v=None, a=None),
        pv={},
        batteries={},
        missing=frozenset(),
        loads=loads,
    )


def _input(head_kw: float, loads: dict[str, LoadReading], state: EstimatorState) -> DispatchInput:
    return dispatch_input(
        _snapshot(head_kw, loads),
        NET,
        pv_bus={},
        battery_bus={},
        ramp_kw_per_s={},
        state=state,
        interval_s=5.0,
        import_limit_kw=None,
        export_limit_kw=None,
        v_min_pu=0.9,
        v_max_pu=1.05,
        price_per_kwh=0.1,
        load_bus={"ld": 18},
        shed_cost_per_kwh={"ld": 0.7},
    )


def test_a_loads_draw_is_taken_out_of_the_estimated_bus_loads() -> None:
    without = _input(3900.0, {}, EstimatorState())
    with_load = _input(3900.0, {"ld": _reading(150.0)}, EstimatorState())
    (unit,) = with_load.flexible_loads
    assert (unit.bus, unit.p_nominal_kw, unit.p_min_kw, unit.shed_cost_per_kwh) == (
        18,
        150.0,
        30.0,
        0.7,
    )
    # the same head import: the other loads are about 150 kW less (and a little for losses)
    less = math.fsum(without.loads_kw.values()) - math.fsum(with_load.loads_kw.values())
    assert 140.0 < less < 170.0


def test_a_held_load_keeps_its_last_unheld_demand() -> None:
    state = EstimatorState()

    def nominal(reading: LoadReading) -> float:
        (unit,) = flexible_loads(
            {"ld": reading}, bus={"ld": 18}, ramp_kw_per_s={}, shed_cost_per_kwh={}, state=state
        )
        return unit.p_nominal_kw

    assert nominal(_reading(150.0, limit_kw=200.0, active=False)) == 150.0
    # held at a ceiling of 60: the demand is still 150, not the 60 it draws
    assert nominal(_reading(60.0, limit_kw=60.0, active=True)) == 150.0
    # below its ceiling it shows its demand again
    assert nominal(_reading(40.0, limit_kw=60.0, active=True)) == 40.0
    # a floor above the demand is no floor the dispatch can keep: it becomes the demand
    (unit,) = flexible_loads(
        {"ld": _reading(10.0)}, bus={"ld": 18}, ramp_kw_per_s={}, shed_cost_per_kwh={}, state=state
    )
    assert unit.p_min_kw == pytest.approx(10.0)
