"""The pure rules the loop applies: what each kind of device is sent, the interval's status, and
the one compliance rule (the HIL's grader keeps its own)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.records import COMPLIANCE_TOLERANCE, CycleRecord, CycleStatus, within_limits
from controller.setpoints import load_ceiling_kw, pv_ceiling_kw, setpoints
from controller.snapshot import EstimatorState, Snapshot
from devices import (
    BatteryReading,
    BatterySetpoint,
    LoadReading,
    LoadSetpoint,
    MeterReading,
    PvReading,
    PvSetpoint,
)
from optimizer import DispatchResult, DispatchStatus


def test_every_dispatch_status_is_a_cycle_status_of_the_same_value() -> None:
    for status in DispatchStatus:
        assert CycleStatus.of(status).value == status.value
        assert CycleStatus.of(status).dispatched
    assert not CycleStatus.NO_HEAD_METER.dispatched
    assert not CycleStatus.WAITING_FIRST_SNAPSHOT.dispatched


def test_a_pv_ceiling_is_the_dispatch_when_curtailed_and_the_rating_when_not() -> None:
    # curtailed: the ceiling holds the inverter at what the dispatch chose
    assert pv_ceiling_kw(60.0, w_max_kw=150.0, available_kw=120.0) == 60.0
    # not curtailed (all it has, give or take the solver's tolerance): no ceiling in effect
    assert pv_ceiling_kw(119.8, w_max_kw=150.0, available_kw=120.0) == 150.0
    assert pv_ceiling_kw(150.0, w_max_kw=150.0, available_kw=None) == 150.0
    # unknown availability and below the rating: the dispatch's value
    assert pv_ceiling_kw(100.0, w_max_kw=150.0, available_kw=None) == 100.0


def test_a_load_ceiling_is_the_dispatch_when_shed_and_the_rating_when_not() -> None:
    assert load_ceiling_kw(40.0, rating_kw=100.0, demand_kw=80.0) == 40.0
    assert load_ceiling_kw(79.7, rating_kw=100.0, demand_kw=80.0) == 100.0
    assert load_ceiling_kw(80.0, rating_kw=100.0, demand_kw=None) == 80.0


def _snapshot() -> Snapshot:
    return Snapshot(
        cycle=1,
        taken_at=datetime(2026, 1, 1, tzinfo=UTC),
        head=MeterReading(device="head", p_kw=1000.0, q_kvar=None, v_ll_v=None, a=None),
        pv={
            "pv1": PvReading(
                device="pv1",
                p_kw=90.0,
                w_max_kw=100.0,
                limit_pct=None,
                limit_enabled=False,
                limit_revert_s=None,
            )
        },
        batteries={
            "b1": BatteryReading(
                device="b1",
                p_kw=0.0,
                p_max_kw=50.0,
                energy_kwh=100.0,
                soc_pct=50.0,
                min_reserve_pct=10.0,
            )
        },
        loads={
            "ld": LoadReading(
                device="ld",
                p_kw=30.0,
                rating_kw=40.0,
                min_kw=5.0,
                limit_kw=None,
                limit_active=None,
            )
        },
        missing=frozenset({"pv2"}),
    )


def test_each_device_that_answered_gets_the_setpoint_of_its_kind() -> None:
    state = EstimatorState(pv_available_kw={"pv1": 90.0}, load_demand_kw={"ld": 30.0})
    result = DispatchResult(
        status=DispatchStatus.OPTIMAL,
        pv_kw={"pv1": 50.0, "pv2": 10.0},  # pv2 did not answer: nothing is sent to it
        battery_kw={"b1": -20.0},
        load_kw={"ld": 30.0},
    )
    out = setpoints(result, _snapshot(), state)
    assert out == {
        "pv1": PvSetpoint(device="pv1", p_max_kw=50.0),
        "b1": BatterySetpoint(device="b1", p_kw=-20.0),
        "ld": LoadSetpoint(device="ld", p_max_kw=40.0),  # its whole demand: no ceiling
    }


@given(
    imp=st.floats(-1e5, 1e5),
    limit=st.one_of(st.none(), st.floats(-1e4, 1e4)),
    export=st.one_of(st.none(), st.floats(0, 1e4)),
)
def test_compliance_is_one_rule_for_both_signs_of_a_limit(
    imp: float, limit: float | None, export: float | None
) -> None:
    ok = within_limits(imp, import_limit_kw=limit, export_limit_kw=export)
    over_import = limit is not None and imp > limit + COMPLIANCE_TOLERANCE * abs(limit)
    over_export = export is not None and -imp > export * (1 + COMPLIANCE_TOLERANCE)
    assert ok == (not over_import and not over_export)


@pytest.mark.parametrize(
    ("import_kw", "limit", "compliant"),
    [
        (1019.0, 1000.0, True),
        (1021.0, 1000.0, False),
        # a negative import limit (export at least 1,000 kW): the tolerance is 2% of its size
        (-1019.0, -1000.0, True),
        (-981.0, -1000.0, True),
        (-979.0, -1000.0, False),
        (None, 1000.0, None),
        (500.0, None, None),
    ],
)
def test_a_record_says_whether_its_interval_complied(
    import_kw: float | None, limit: float | None, compliant: bool | None
) -> None:
    rec = CycleRecord(
        cycle=1,
        status=CycleStatus.OPTIMAL,
        at_s=0.0,
        import_kw=import_kw,
        import_estimate_kw=None,
        import_limit_kw=limit,
        export_limit_kw=None,
        losses_kw=None,
        curtailed_kw=None,
        v_min_pu=None,
        setpoints_kw={},
        devices_up=1,
        devices_missing=(),
        poll_ms=0.0,
        solve_ms=0.0,
        write_ms=0.0,
        cycle_ms=0.0,
    )
    assert rec.compliant is compliant
    assert not math.isnan(rec.cycle_ms)
