"""What an interval did, and the rules that read it, shared by the loop, the journal, the DR
service, the report and the demo (the HIL's grader keeps its own, independent rule).

Sign convention: import is positive when the feeder draws from the upstream grid. An import
limit ``L`` holds while ``import <= L``; an export limit ``E`` while ``import >= -E``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: `feederd event` and the journal need no solver
    from optimizer import DispatchStatus

__all__ = [
    "COMPLIANCE_TOLERANCE",
    "ActiveLimits",
    "CycleRecord",
    "CycleStatus",
    "within_limits",
]

COMPLIANCE_TOLERANCE = 0.02
"""A measured import within 2% (of the limit's size) beyond a limit counts as compliant."""


class CycleStatus(StrEnum):
    """How an interval ended: each of the dispatch's statuses (``optimizer.DispatchStatus``,
    same values), and the two ways an interval ends without a dispatch."""

    OPTIMAL = "optimal"
    LIMIT_RELAXED = "limit_relaxed"
    SOLVER_FAILED = "solver_failed"
    TIMED_OUT = "timed_out"
    FALLBACK = "fallback"
    NO_HEAD_METER = "no_head_meter"
    """No fresh head-meter reading: nothing dispatched, nothing written."""
    WAITING_FIRST_SNAPSHOT = "waiting_first_snapshot"
    """Before the first complete snapshot: nothing is written yet (DESIGN.md §4)."""

    @classmethod
    def of(cls, status: DispatchStatus) -> CycleStatus:
        return cls(status.value)

    @property
    def dispatched(self) -> bool:
        """Whether the interval dispatched (and wrote setpoints)."""
        return self not in (CycleStatus.NO_HEAD_METER, CycleStatus.WAITING_FIRST_SNAPSHOT)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveLimits:
    """The limits in force for an interval, and the DR events that set them."""

    import_kw: float | None
    export_kw: float | None
    import_event: str | None = None
    export_event: str | None = None

    @property
    def event_ids(self) -> tuple[str, ...]:
        return tuple(e for e in (self.import_event, self.export_event) if e is not None)


def within_limits(
    import_kw: float,
    *,
    import_limit_kw: float | None,
    export_limit_kw: float | None = None,
    tolerance: float = COMPLIANCE_TOLERANCE,
) -> bool:
    """Whether a measured import complies: ``import <= L + tolerance·|L|`` and
    ``import >= -(E + tolerance·E)`` for the limits in force (none in force: it complies)."""
    if import_limit_kw is not None and import_kw > import_limit_kw + tolerance * abs(
        import_limit_kw
    ):
        return False
    return not (export_limit_kw is not None and import_kw < -(export_limit_kw * (1.0 + tolerance)))


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleRecord:
    """What one interval did: the canonical log line, the journal row, the demo's line."""

    cycle: int
    status: CycleStatus
    at_s: float
    """The injected clock's monotonic time when the interval ended."""
    import_kw: float | None
    """The head meter's reading at this interval's poll (``None``: no fresh reading)."""
    import_estimate_kw: float | None
    import_limit_kw: float | None
    export_limit_kw: float | None
    losses_kw: float | None
    curtailed_kw: float | None
    v_min_pu: float | None
    setpoints_kw: Mapping[str, float]
    devices_up: int
    devices_missing: tuple[str, ...]
    poll_ms: float
    solve_ms: float
    write_ms: float
    cycle_ms: float
    dr_events: tuple[str, ...] = ()
    v_slack_pu: float | None = None
    """The slack bus's voltage the interval dispatched with (measured, or the configured)."""
    estimation_residual: float | None = None
    """The state estimate's weighted residual (``None``: the interval estimated no state)."""
    estimation_dropped: tuple[str, ...] = ()
    """The meters whose measurements the estimate dropped as bad data this interval."""
    estimated_v_min_pu: float | None = None
    estimated_v_max_pu: float | None = None
    """The lowest and highest bus voltage of the state estimate."""
    estimated_v_pu: Mapping[int, float] | None = None
    """Every bus's estimated voltage (p.u.), for a grader to set against the physics; left out
    of the journal (the summary above is kept there)."""
    import_correction_kw: float | None = None
    """How far the head meter's feedback tightened the import limit the dispatch held (kW,
    ``controller.correction``; negative loosens, by the margin at most; ``None``: no import
    limit, or no feedback)."""
    export_correction_kw: float | None = None
    """Likewise the export limit (positive: the dispatch held less export than the limit)."""
    model_error_kw: float | None = None
    """This interval's measured head import less what the last dispatch predicted (kW)."""
    picture_v_pu: Mapping[int, float] | None = None
    """Every bus's voltage as the dispatch saw it (p.u.): the AC power flow of the loads it
    took (the state estimate's, or the case's times the head meter's one factor) with the
    measured DER outputs; ``None`` when it did not dispatch. Left out of the journal too."""
    forecast_load_1h_kw: float | None = None
    """The total uncontrollable load this interval's forecast gives for an hour from now (kW;
    ``None``: no forecast, or a horizon shorter than an hour)."""
    forecast_pv_1h_kw: float | None = None
    """Likewise the total PV available (kW)."""
    plan_shortfall_kw: float | None = None
    """The largest predicted shortfall on a limit over the plan, import or export (kW; 0: the
    plan holds every limit; ``None``: no plan, e.g. the fallback rule)."""

    @property
    def compliant(self) -> bool | None:
        """Whether the measured import was within the limits (``None``: no reading, or no
        limit in force)."""
        if self.import_kw is None or (
            self.import_limit_kw is None and self.export_limit_kw is None
        ):
            return None
        return within_limits(
            self.import_kw,
            import_limit_kw=self.import_limit_kw,
            export_limit_kw=self.export_limit_kw,
        )
