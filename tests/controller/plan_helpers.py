"""Builders shared by the plan's tests: a hand-made horizon result of the daemon's shape
(four steps of the interval, then 15-minute blocks), 26 h long, with every number chosen so
that what the plan says can be computed by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from controller.dr.events import DrEvent, EventType
from optimizer import DispatchInput, DispatchResult, DispatchStatus
from optimizer.horizon import HorizonSpec
from optimizer.units import BatteryUnit

__all__ = ["AT", "EVENING", "INTERVAL_S", "STARTS", "N", "event", "plan_input", "plan_result"]

AT = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)
INTERVAL_S = 60.0
SPEC = HorizonSpec.multi_resolution(INTERVAL_S, hours=26.0)
N = SPEC.horizon
STARTS = tuple(sum(SPEC.steps_s[:k]) for k in range(N))
EVENING = (AT.replace(hour=18, minute=4), AT.replace(hour=20, minute=4))
"""An evening window of whole 15-minute blocks (they start 4 minutes past, after the fine
steps)."""


def _in_evening(k: int) -> bool:
    start = AT + timedelta(seconds=STARTS[k])
    return EVENING[0] <= start < EVENING[1]


def batteries() -> tuple[BatteryUnit, ...]:
    return (
        BatteryUnit(
            name="b1",
            bus=5,
            p_max_kw=50,
            energy_kwh=100,
            soc_kwh=30,
            soc_min_kwh=10,
            soc_max_kwh=95,
        ),
        BatteryUnit(
            name="b2",
            bus=9,
            p_max_kw=150,
            energy_kwh=300,
            soc_kwh=90,
            soc_min_kwh=30,
            soc_max_kwh=285,
        ),
    )


def plan_input(**fields: object) -> DispatchInput:
    return DispatchInput.for_horizon(
        SPEC,
        loads_kw={2: 100.0},
        loads_kvar={2: 30.0},
        batteries=batteries(),
        import_limit_kw=None,
        **fields,
    )


def plan_result(**override: object) -> DispatchResult:
    """A plan that imports 1500 kW + 1 kW per step, holds a 1200 kW limit over the evening
    and misses it there by 40 kW, charges b1 at 10 kW (b2 idle) until the evening, and
    curtails 3 kW in the fine steps."""
    limit = tuple(1200.0 if _in_evening(k) else math.nan for k in range(N))
    b1_soc = tuple(30.0 + 0.5 * k for k in range(N))
    fields: dict[str, object] = {
        "status": DispatchStatus.LIMIT_RELAXED,
        "import_kw": 1500.0,
        "curtailed_kw": 3.0,
        "battery_kw": {"b1": -10.0, "b2": 0.0},
        "step_start_s": STARTS,
        "step_s": SPEC.steps_s,
        "import_plan_kw": tuple(1500.0 + k for k in range(N)),
        "soc_plan_kwh": {"b1": b1_soc, "b2": (90.0,) * N},
        "battery_plan_kw": {"b1": (-10.0,) * N, "b2": (0.0,) * N},
        "curtailed_plan_kw": tuple(3.0 if k < 4 else 0.0 for k in range(N)),
        "import_slack_plan_kw": tuple(40.0 if _in_evening(k) else 0.0 for k in range(N)),
        "export_slack_plan_kw": (0.0,) * N,
        "import_limit_plan_kw": limit,
    }
    fields.update(override)
    return DispatchResult(**fields)  # type: ignore[arg-type]


def event(eid: str, kind: EventType, start: datetime, end: datetime) -> DrEvent:
    return DrEvent(id=eid, type=kind, kw=1200.0, start=start, end=end)
