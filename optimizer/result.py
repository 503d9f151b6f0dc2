"""The dispatch's outcome: a status and the setpoints, as data."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DispatchResult", "DispatchStatus"]


class DispatchStatus(enum.Enum):
    """How a dispatch ended."""

    OPTIMAL = "optimal"
    """Solved; every limit is met."""
    LIMIT_RELAXED = "limit_relaxed"
    """Solved, but some slack exceeds its tolerance: a limit could not be met."""
    SOLVER_FAILED = "solver_failed"
    """The solver gave no usable solution (see `message`); there are no setpoints."""
    TIMED_OUT = "timed_out"
    """The solver ran past its time budget; there are no setpoints."""
    FALLBACK = "fallback"
    """Setpoints from the documented proportional-curtailment rule, not from the LP."""

    @property
    def has_setpoints(self) -> bool:
        """Whether `pv_kw` and `battery_kw` hold a setpoint for every unit."""
        return self in (
            DispatchStatus.OPTIMAL,
            DispatchStatus.LIMIT_RELAXED,
            DispatchStatus.FALLBACK,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchResult:
    """Setpoints per unit name and the model's estimates at the dispatched point.

    `import_kw` is signed (positive draws from the grid). `curtailed_kw` is the sum over PV of
    `min(available, p_max) − p`. Slacks say by how much a limit was missed (`voltage_slack_pu`
    in voltage magnitude, `rating_slack_kva` the largest branch overload). Without setpoints
    (failed, timed out) the mappings are empty and the estimates are NaN. Everything is for
    step 0 of the horizon, except the plan fields, which hold one value per step of the
    horizon: `step_start_s` (seconds from now) and `step_s` (duration), the head import, each
    battery's state of charge at the end of the step and its net power (discharge positive),
    the total curtailment, how far the plan misses the import and export limits (the predicted
    shortfall, kW) and the import limit the plan held (NaN: none).
    """

    status: DispatchStatus
    pv_kw: Mapping[str, float] = field(default_factory=dict)
    battery_kw: Mapping[str, float] = field(default_factory=dict)
    import_kw: float = math.nan
    import_kvar: float = math.nan
    losses_kw: float = math.nan
    v_min_pu: float = math.nan
    v_min_bus: int = -1
    v_max_pu: float = math.nan
    v_max_bus: int = -1
    curtailed_kw: float = math.nan
    import_slack_kw: float = 0.0
    export_slack_kw: float = 0.0
    voltage_slack_pu: float = 0.0
    objective: float = math.nan
    solve_ms: float = 0.0
    solver: str = ""
    message: str = ""
    pv_kvar: Mapping[str, float] = field(default_factory=dict)
    load_kw: Mapping[str, float] = field(default_factory=dict)
    rating_slack_kva: float = 0.0
    import_plan_kw: tuple[float, ...] = ()
    soc_plan_kwh: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    passes: int = 0
    step_start_s: tuple[float, ...] = ()
    step_s: tuple[float, ...] = ()
    battery_plan_kw: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    curtailed_plan_kw: tuple[float, ...] = ()
    import_slack_plan_kw: tuple[float, ...] = ()
    export_slack_plan_kw: tuple[float, ...] = ()
    import_limit_plan_kw: tuple[float, ...] = ()
