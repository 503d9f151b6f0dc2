"""``controller.plan``: the plan document built from a hand-made horizon result.

The horizon is the shape the daemon uses (four steps of the interval, then 15-minute blocks),
made 26 h long here so that the truncation to the next 24 h shows; every figure asserted is
computed from the numbers put in, by hand."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest

from controller.dr.events import EventType
from controller.dr.overlap import StoredEvent
from controller.plan import (
    MAX_STEPS,
    REFRESH_S,
    ForecastError,
    Plan,
    PlanError,
    PlanGate,
    materially_changed,
    plan_from,
)
from optimizer import DispatchInput, DispatchResult, DispatchStatus, Forecast
from optimizer.horizon import HorizonSpec
from tests.controller.plan_helpers import (
    AT,
    EVENING,
    INTERVAL_S,
    STARTS,
    N,
    batteries,
    event,
    plan_input,
    plan_result,
)


def test_steps_are_the_next_24_hours_with_their_times() -> None:
    plan = plan_from(plan_result(), plan_input(), AT)
    assert len(plan.steps) < N  # the 26 h horizon is cut
    # every step that starts within 24 h, none after: 4 fine steps, then 15-minute blocks
    within = [s for s in STARTS if s < 24 * 3600]
    assert len(plan.steps) == len(within) == 4 + math.ceil((24 * 3600 - 240) / 900)
    assert plan.steps[0].start == AT
    assert plan.steps[0].end == AT + timedelta(seconds=60)
    assert plan.steps[4].start == AT + timedelta(seconds=240)
    assert plan.steps[4].end == AT + timedelta(seconds=240 + 900)
    assert plan.steps[-1].start < AT + timedelta(hours=24) <= plan.steps[-1].end
    for a, b in zip(plan.steps, plan.steps[1:], strict=False):
        assert a.end == b.start  # contiguous
    doc = plan.to_json()
    assert doc["at"] == "2026-07-01T12:00:00Z"
    assert doc["steps"][1]["start"] == "2026-07-01T12:01:00Z"
    assert doc["steps"][1]["end"] == "2026-07-01T12:02:00Z"


def test_import_soc_battery_curtailment_and_price() -> None:
    prices = [0.10 if k < 40 else 0.31234 for k in range(N)]
    plan = plan_from(plan_result(), plan_input(forecast=Forecast(price=_series(prices))), AT)
    s = plan.steps[10]
    assert s.import_kw == 1510.0
    # the state of charge of both batteries together, at the step's end, of 400 kWh in all
    assert s.soc_kwh == pytest.approx(30.0 + 5.0 + 90.0)
    assert s.soc_pct == pytest.approx(round(100 * 125.0 / 400.0, 1))
    assert s.battery_kw == -10.0  # charging
    assert [st.curtailed_kw for st in plan.steps[:6]] == [3.0, 3.0, 3.0, 3.0, 0.0, 0.0]
    assert s.price == 0.1
    assert plan.steps[50].price == 0.3123  # rounded to 4 decimals
    # rounding: SOC % to 0.1
    odd = plan_result(soc_plan_kwh={"b1": (33.333,) * N, "b2": (100.0,) * N})
    assert plan_from(odd, plan_input(), AT).steps[0].soc_pct == round(100 * 133.333 / 400, 1)


def _series(values: list[float]) -> object:
    import pandas as pd  # noqa: PLC0415

    return pd.Series(values)


def test_limit_and_shortfall_per_step() -> None:
    plan = plan_from(plan_result(), plan_input(), AT)
    for step in plan.steps:
        evening = EVENING[0] <= step.start < EVENING[1]
        assert step.import_limit_kw == (1200.0 if evening else None)  # NaN: no limit
        assert step.shortfall_kw == (40.0 if evening else 0.0)
    assert plan.max_shortfall_kw == 40.0
    # an export limit missed counts as a shortfall too
    exp = tuple(25.0 if k == 7 else 0.0 for k in range(N))
    plan = plan_from(plan_result(export_slack_plan_kw=exp), plan_input(), AT)
    assert plan.steps[7].shortfall_kw == 25.0


def test_events_get_the_predicted_shortfall() -> None:
    evening = event("evening", EventType.IMPORT_LIMIT, *EVENING)
    # half an hour of it within the evening: 40 kW for 0.5 h
    half = event(
        "half",
        EventType.REDUCE_BY,
        EVENING[1] - timedelta(minutes=30),
        EVENING[1] + timedelta(hours=1),
    )
    export = event("noon-export", EventType.EXPORT_LIMIT, AT, AT + timedelta(hours=2))
    beyond = event(
        "tomorrow-night", EventType.IMPORT_LIMIT, AT + timedelta(hours=30), AT + timedelta(hours=31)
    )
    over = event("over", EventType.IMPORT_LIMIT, AT - timedelta(hours=2), AT)
    cancelled = StoredEvent(
        event=event("cancelled", EventType.IMPORT_LIMIT, *EVENING),
        seq=9,
        received_at=AT,
        source="mqtt",
        cancelled_at=AT,
    )
    stored = StoredEvent(event=evening, seq=1, received_at=AT, source="mqtt")
    plan = plan_from(
        plan_result(), plan_input(), AT, [stored, half, export, beyond, over, cancelled]
    )
    got = {e.id: (e.predicted_shortfall_kw, e.predicted_shortfall_kwh) for e in plan.events}
    assert got == {
        "noon-export": (0.0, 0.0),  # met
        "evening": (40.0, 80.0),  # 40 kW over two hours
        "half": (40.0, 20.0),
        "tomorrow-night": (None, None),  # beyond the plan: not known
    }
    assert [e.id for e in plan.events] == ["noon-export", "evening", "half", "tomorrow-night"]
    doc = plan.to_json()
    assert doc["events"][1] == {
        "id": "evening",
        "start": "2026-07-01T18:04:00Z",
        "end": "2026-07-01T20:04:00Z",
        "predicted_shortfall_kw": 40.0,
        "predicted_shortfall_kwh": 80.0,
    }


def test_document_is_json_bounded_and_reads_back() -> None:
    errors = (ForecastError(quantity="load", bucket="0-1h", mape_pct=4.2, rmse_kw=31.0, samples=9),)
    plan = plan_from(
        plan_result(),
        plan_input(),
        AT,
        [event("e", EventType.IMPORT_LIMIT, *EVENING)],
        forecast_errors=errors,
    )
    text = json.dumps(plan.to_json(), allow_nan=False)  # no NaN anywhere
    assert len(text) < 40_000  # about a hundred steps
    back = Plan.from_json(json.loads(text))
    assert back == plan
    assert set(plan.to_json()["steps"][0]) == {
        "start",
        "end",
        "import_kw",
        "import_limit_kw",
        "shortfall_kw",
        "soc_kwh",
        "soc_pct",
        "battery_kw",
        "curtailed_kw",
        "price",
    }
    with pytest.raises(PlanError, match="not a plan document"):
        Plan.from_json({"at": "yesterday", "steps": []})
    with pytest.raises(PlanError):
        Plan.from_json({"at": "2026-07-01T12:00:00Z", "steps": [{"start": 3}]})


def test_many_steps_are_capped() -> None:
    spec = HorizonSpec.multi_resolution(1.0, hours=1.0, fine_steps=3600)
    n = spec.horizon
    result = DispatchResult(
        status=DispatchStatus.OPTIMAL,
        step_start_s=tuple(float(k) for k in range(n)),
        step_s=spec.steps_s,
        import_plan_kw=(1.0,) * n,
        curtailed_plan_kw=(0.0,) * n,
    )
    inp = DispatchInput.for_horizon(spec, loads_kw={}, loads_kvar={})
    plan = plan_from(result, inp, AT)
    assert len(plan.steps) == MAX_STEPS
    assert plan.steps[0].soc_pct is None  # no battery
    assert plan.steps[0].battery_kw is None


def test_a_result_without_a_plan_gives_step_0() -> None:
    result = DispatchResult(
        status=DispatchStatus.FALLBACK,
        import_kw=1234.56,
        curtailed_kw=7.04,
        battery_kw={"b1": 20.0, "b2": 0.0},
    )
    inp = DispatchInput(
        loads_kw={}, loads_kvar={}, batteries=batteries(), interval_s=60.0, import_limit_kw=1300
    )
    plan = plan_from(result, inp, AT)
    assert len(plan.steps) == 1
    (s,) = plan.steps
    assert (s.import_kw, s.curtailed_kw, s.import_limit_kw, s.battery_kw) == (
        1234.6,
        7.0,
        1300.0,
        20.0,
    )
    # b1 discharges 20 kW for a minute at 95 % efficiency; b2 holds
    assert s.soc_kwh == round(30.0 - 20.0 / 60 / 0.95 + 90.0, 1)


def test_the_gate_lets_through_material_changes_and_refreshes() -> None:
    gate = PlanGate()
    first = plan_from(plan_result(), plan_input(), AT)
    assert gate.due(first)
    # the next interval, the same plan one interval on: nothing new to say
    later = AT + timedelta(seconds=INTERVAL_S)
    assert not gate.due(plan_from(plan_result(), plan_input(), later))
    # 0.5 kW more in one block: not material; 100 kW more (7 % of the import): material
    nudged = list(plan_result().import_plan_kw)
    nudged[20] += 0.5
    assert not gate.due(plan_from(plan_result(import_plan_kw=tuple(nudged)), plan_input(), AT))
    nudged[20] += 99.5
    assert gate.due(plan_from(plan_result(import_plan_kw=tuple(nudged)), plan_input(), AT))
    # a limit appearing is material, and so is an event's outlook
    limits = list(plan_result().import_limit_plan_kw)
    limits[2] = 900.0
    assert materially_changed(
        first, plan_from(plan_result(import_limit_plan_kw=tuple(limits)), plan_input(), AT)
    )
    evening = event("evening", EventType.IMPORT_LIMIT, *EVENING)
    assert materially_changed(first, plan_from(plan_result(), plan_input(), AT, [evening]))
    # unchanged, but old enough: published again
    assert gate.due(plan_from(plan_result(), plan_input(), AT + timedelta(seconds=REFRESH_S)))
