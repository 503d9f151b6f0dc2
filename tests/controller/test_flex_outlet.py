"""The flex outlet's pure parts: which limits hold without the coordinator, the events it lists
and the health it reports (``controller.flex_outlet``)."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from controller.dr.events import DrEvent, EventType
from controller.dr.overlap import StoredEvent
from controller.flex import MAX_EVENTS
from controller.flex_outlet import base_import_limits, flex_events, health_of
from controller.horizon import PlanReserve
from controller.records import CycleRecord, CycleStatus
from devices import DeviceState
from optimizer import DispatchInput, Forecast, HorizonSpec, Network, builtin_case, load_matpower

AT = datetime(2030, 6, 4, 12, tzinfo=UTC)
SPEC = HorizonSpec.multi_resolution(300.0, hours=2.0, fine_steps=2, block_s=900.0)
RESERVE = PlanReserve(margin_pct=0.1, reserve_pct=5.0, floor_kw=20.0)


@pytest.fixture(scope="module")
def case33() -> Network:
    return load_matpower(builtin_case("case33bw"))


def _stored(
    event_id: str,
    kw: float,
    start_min: float,
    end_min: float,
    *,
    priority: int = 0,
    seq: int = 1,
    kind: EventType = EventType.IMPORT_LIMIT,
    cancelled: bool = False,
) -> StoredEvent:
    return StoredEvent(
        event=DrEvent(
            id=event_id,
            type=kind,
            kw=kw,
            start=AT + timedelta(minutes=start_min),
            end=AT + timedelta(minutes=end_min),
            priority=priority,
        ),
        seq=seq,
        received_at=AT,
        source="mqtt",
        cancelled_at=AT if cancelled else None,
    )


def _input(net: Network, limits: list[float]) -> DispatchInput:
    """An input whose steps hold ``limits`` (as the controller's ``_ahead`` makes them)."""
    return DispatchInput.for_horizon(
        SPEC,
        loads_kw=net.loads_kw,
        loads_kvar=net.loads_kvar,
        import_limit_kw=None if math.isnan(limits[0]) else limits[0],
        forecast=Forecast(import_limit_kw=pd.Series(limits, dtype=float)),
    )


def _starts_within(start_min: float, end_min: float) -> list[bool]:
    return [
        s < end_min * 60 and s + d > start_min * 60
        for s, d in zip(SPEC.starts_s, SPEC.steps_s, strict=True)
    ]


def test_without_the_coordinators_events_the_inputs_own_limits_hold(case33: Network) -> None:
    limits = [1990.0] + [1900.0] * (SPEC.horizon - 1)
    inp = _input(case33, limits)
    utility = _stored("utility-1", 2000.0, -10, 300)
    got = base_import_limits(case33, inp, [utility], AT, default_import_kw=None, reserve=RESERVE)
    assert got == limits  # exactly as the dispatch held them (corrected, reserved)


def test_the_coordinators_limit_is_left_out_where_it_sets_the_limit(case33: Network) -> None:
    """A ``fleet:`` limit from 30 to 60 minutes with a utility limit (looser) over the first
    90 and the configured default of 3,000 kW: where the fleet event wins, the base is the
    utility's limit held the plan's reserve inside it; before 90 minutes the default's; where
    the utility's own limit won anyway, the input's limit is kept as it was."""
    fleet = _stored("fleet:t:1", 1500.0, 30, 60, seq=2)
    utility = _stored("utility-1", 2000.0, 0, 90, seq=1)
    gone = _stored("fleet:old:1", 100.0, 0, 120, seq=3, cancelled=True)
    under_fleet = _starts_within(30, 60)
    under_utility = _starts_within(0, 90)
    own = [
        1500.0 - RESERVE.kw(1500.0) if f else (2000.0 if u else 3000.0)
        for f, u in zip(under_fleet, under_utility, strict=True)
    ]
    inp = _input(case33, own)
    got = base_import_limits(
        case33, inp, [fleet, utility, gone], AT, default_import_kw=3000.0, reserve=RESERVE
    )
    for k, (f, was) in enumerate(zip(under_fleet, own, strict=True)):
        if f:
            assert got[k] == pytest.approx(2000.0 - RESERVE.kw(2000.0)), k
        else:
            assert got[k] == was, k
    assert any(under_fleet)
    assert not all(under_fleet)


def test_a_coordinator_limit_that_does_not_win_changes_nothing(case33: Network) -> None:
    """Overlap rules: a utility event of higher priority wins over the coordinator's; the
    base is then the input's own limits everywhere."""
    fleet = _stored("fleet:t:1", 1500.0, 0, 120, seq=2)
    utility = _stored("utility-1", 1800.0, 0, 120, seq=1, priority=5)
    inp = _input(case33, [1800.0] * SPEC.horizon)
    got = base_import_limits(
        case33, inp, [fleet, utility], AT, default_import_kw=None, reserve=RESERVE
    )
    assert got == [1800.0] * SPEC.horizon


def test_alone_under_the_coordinator_the_base_has_no_limit(case33: Network) -> None:
    fleet = _stored("fleet:t:1", 1500.0, -5, 120)
    inp = _input(case33, [1490.0] * SPEC.horizon)
    got = base_import_limits(case33, inp, [fleet], AT, default_import_kw=None, reserve=RESERVE)
    assert all(math.isnan(v) for v in got)


def test_events_are_listed_in_force_first_bounded_and_without_the_ended_or_cancelled() -> None:
    events = [_stored(f"coming-{k:02d}", 1000.0, 10 + k, 100, seq=k) for k in range(MAX_EVENTS + 3)]
    events += [
        _stored("now", 900.0, -5, 30),
        _stored("over", 900.0, -60, -1),
        _stored("cancelled", 900.0, -5, 30, cancelled=True),
    ]
    listed = flex_events(events, AT)
    assert len(listed) == MAX_EVENTS
    assert listed[0].id == "now"
    assert listed[0].active
    assert [e.id for e in listed[1:]] == [f"coming-{k:02d}" for k in range(MAX_EVENTS - 1)]
    assert not any(e.active for e in listed[1:])
    assert {e.source for e in listed} == {"mqtt"}


def _record(status: CycleStatus, missing: tuple[str, ...] = ()) -> CycleRecord:
    return CycleRecord(
        cycle=3,
        status=status,
        at_s=15.0,
        import_kw=2000.0,
        import_estimate_kw=None,
        import_limit_kw=None,
        export_limit_kw=None,
        losses_kw=None,
        curtailed_kw=None,
        v_min_pu=None,
        setpoints_kw={},
        devices_up=17 - len(missing),
        devices_missing=missing,
        poll_ms=0.0,
        solve_ms=0.0,
        write_ms=0.0,
        cycle_ms=0.0,
    )


@pytest.mark.parametrize(
    ("status", "missing", "states", "planned", "health"),
    [
        (CycleStatus.OPTIMAL, (), [DeviceState.UP], True, "ok"),
        (CycleStatus.LIMIT_RELAXED, (), [DeviceState.UP], True, "degraded"),
        (CycleStatus.OPTIMAL, ("pv18",), [DeviceState.UP], True, "degraded"),
        (CycleStatus.OPTIMAL, (), [DeviceState.UP, DeviceState.DEGRADED], True, "degraded"),
        (CycleStatus.FALLBACK, (), [DeviceState.UP], True, "fallback"),
        (CycleStatus.NO_HEAD_METER, (), [DeviceState.STALE], True, "fallback"),
        (CycleStatus.NO_HEAD_METER, (), [DeviceState.DOWN], False, "starting"),
        (CycleStatus.WAITING_FIRST_SNAPSHOT, (), [DeviceState.UP], False, "starting"),
    ],
)
def test_health(
    status: CycleStatus,
    missing: tuple[str, ...],
    states: list[DeviceState],
    planned: bool,
    health: str,
) -> None:
    assert health_of(_record(status, missing), states, planned=planned) == health


def test_an_input_of_one_step_keeps_its_limit(case33: Network) -> None:
    inp = dataclasses.replace(
        DispatchInput(loads_kw=case33.loads_kw, loads_kvar=case33.loads_kvar),
        import_limit_kw=2100.0,
    )
    fleet = _stored("fleet:t:1", 2100.0, -1, 60)
    assert base_import_limits(
        case33, inp, [fleet], AT, default_import_kw=2500.0, reserve=RESERVE
    ) == [pytest.approx(2500.0 - RESERVE.kw(2500.0))]
    assert np.isnan(
        base_import_limits(case33, inp, [fleet], AT, default_import_kw=None, reserve=RESERVE)
    ).all()
