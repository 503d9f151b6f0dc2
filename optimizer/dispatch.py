"""The dispatcher: linearise at the operating point, build the LP, solve it, read the result."""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from pathlib import Path

import highspy
import pulp

from optimizer.lp import DispatchModel, build, is_finite_number, operating_injections
from optimizer.network import Network
from optimizer.powerflow import PowerFlowResult, solve_powerflow
from optimizer.result import DispatchResult, DispatchStatus
from optimizer.units import DispatchInput, PvUnit

__all__ = ["Dispatcher"]


def _value(var: pulp.LpVariable | float | None) -> float:
    if var is None:
        return math.nan
    if isinstance(var, float | int):
        return float(var)
    value = var.value()
    return float(value) if is_finite_number(value) else math.nan


@functools.cache
def _quiet_highs_banner() -> None:
    """Print HiGHS's once-per-process banner to nowhere, so it never lands in our output.

    HiGHS writes its copyright banner to file descriptor 1 when the first ``Highs`` object of
    a process is made, whatever the options; ``feederd solve --json`` must print JSON alone.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            highspy.Highs()  # type: ignore[no-untyped-call]
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class Dispatcher:
    """Solves one interval's dispatch on a fixed network.

    Uses HiGHS through pulp (highspy), or CBC when HiGHS is not available. Solver trouble is
    returned as a status, never raised; `ValueError` is raised only for inputs that are
    programming errors (a unit on a bus the network does not have).
    """

    def __init__(self, network: Network, *, time_limit_s: float = 1.0) -> None:
        if not time_limit_s > 0:
            raise ValueError(f"time_limit_s must be > 0, got {time_limit_s}")
        self.network = network
        self.time_limit_s = time_limit_s
        _quiet_highs_banner()
        highs = pulp.HiGHS(msg=False, timeLimit=time_limit_s)
        self._solver = highs if highs.available() else None
        self.solver_name = "HiGHS" if self._solver is not None else "CBC"

    def _check(self, inp: DispatchInput) -> None:
        net = self.network
        for unit in inp.units:
            if not net.has_bus(unit.bus):
                kind = "PV unit" if isinstance(unit, PvUnit) else "battery"
                raise ValueError(
                    f"{kind} {unit.name!r} is on bus {unit.bus}, which network "
                    f"{net.name!r} does not have"
                )
        for label, loads in (("loads_kw", inp.loads_kw), ("loads_kvar", inp.loads_kvar)):
            unknown = sorted(b for b in loads if not net.has_bus(b))
            if unknown:
                raise ValueError(f"{label} names bus(es) {unknown} not in network {net.name!r}")

    def operating_point(self, inp: DispatchInput) -> PowerFlowResult:
        """AC power flow at the current injections, where the loss cuts are linearised."""
        p, q = operating_injections(self.network, inp)
        return solve_powerflow(self.network, p_kw=p, q_kvar=q, v_slack_pu=inp.v_slack_pu)

    def build_model(self, inp: DispatchInput) -> DispatchModel:
        """The LP for `inp` (for inspection, `write_mps`, or a caller's own solver)."""
        self._check(inp)
        return build(self.network, inp, self.operating_point(inp))

    def write_mps(self, inp: DispatchInput, path: str | Path) -> None:
        """Write the LP for `inp` in MPS format."""
        self.build_model(inp).problem.writeMPS(str(path))

    def solve(self, inp: DispatchInput) -> DispatchResult:
        """Dispatch one interval: setpoints per unit and the LP's estimates."""
        self._check(inp)
        op = self.operating_point(inp)
        if not op.converged:
            return DispatchResult(
                status=DispatchStatus.SOLVER_FAILED,
                solver=self.solver_name,
                message=(
                    f"operating-point power flow did not converge in {op.iterations} sweeps "
                    "(loads beyond the feeder's capacity?)"
                ),
            )
        model = build(self.network, inp, op)
        start = time.perf_counter()
        try:
            status, message = self._run(model)
        except Exception as err:  # any solver failure is an outcome
            status, message = DispatchStatus.SOLVER_FAILED, f"solver raised {err!r}"
        solve_ms = (time.perf_counter() - start) * 1000.0
        if status is not DispatchStatus.OPTIMAL:
            return DispatchResult(
                status=status, solve_ms=solve_ms, solver=self.solver_name, message=message
            )
        return self._read(model, inp, solve_ms)

    def _run(self, model: DispatchModel) -> tuple[DispatchStatus, str]:
        problem = model.problem
        if self._solver is not None:
            problem.solve(self._solver)
            highs_status = problem.solverModel.getModelStatus()
            if highs_status == highspy.HighsModelStatus.kOptimal:
                return DispatchStatus.OPTIMAL, ""
            if highs_status == highspy.HighsModelStatus.kTimeLimit:
                return DispatchStatus.TIMED_OUT, f"HiGHS hit its {self.time_limit_s} s limit"
            text = problem.solverModel.modelStatusToString(highs_status)
            return DispatchStatus.SOLVER_FAILED, f"HiGHS: {text}"
        start = time.perf_counter()
        cbc = pulp.PULP_CBC_CMD(msg=False, timeLimit=self.time_limit_s)
        code = problem.solve(cbc)
        if code == pulp.LpStatusOptimal and problem.sol_status == pulp.LpSolutionOptimal:
            return DispatchStatus.OPTIMAL, ""
        if time.perf_counter() - start >= self.time_limit_s:
            return DispatchStatus.TIMED_OUT, f"CBC hit its {self.time_limit_s} s limit"
        return DispatchStatus.SOLVER_FAILED, f"CBC: {pulp.LpStatus.get(code, code)}"

    def _read(self, model: DispatchModel, inp: DispatchInput, solve_ms: float) -> DispatchResult:
        net = self.network
        pv_kw = {u.name: _value(model.pv_kw[u.name]) for u in inp.pv}
        battery_kw = {
            b.name: _value(model.discharge_kw[b.name]) - _value(model.charge_kw[b.name])
            for b in inp.batteries
        }
        v_pu = {b: math.sqrt(max(_value(model.v2_pu[b]), 0.0)) for b in net.order}
        v_min_bus = min(v_pu, key=lambda b: (v_pu[b], b))
        v_max_bus = max(v_pu, key=lambda b: (v_pu[b], -b))
        losses_kw = net.base_kw * math.fsum(
            net.branch_to(b).r_pu * _value(i2) for b, i2 in model.i2_pu.items()
        )
        import_slack = max(_value(model.import_slack_kw), 0.0)
        export_slack = max(_value(model.export_slack_kw), 0.0)
        v_under = max(inp.v_min_pu - v_pu[v_min_bus], 0.0)
        v_over = max(v_pu[v_max_bus] - inp.v_max_pu, 0.0)
        voltage_slack = max(v_under, v_over)
        relaxed: list[str] = []
        if import_slack > inp.slack_tol_kw:
            relaxed.append(f"import limit missed by {import_slack:.3f} kW")
        if export_slack > inp.slack_tol_kw:
            relaxed.append(f"export limit missed by {export_slack:.3f} kW")
        if voltage_slack > inp.slack_tol_pu:
            bus = v_min_bus if v_under >= v_over else v_max_bus
            relaxed.append(f"voltage band missed by {voltage_slack:.5f} pu at bus {bus}")
        return DispatchResult(
            status=DispatchStatus.LIMIT_RELAXED if relaxed else DispatchStatus.OPTIMAL,
            pv_kw=pv_kw,
            battery_kw=battery_kw,
            import_kw=_value(model.import_kw),
            import_kvar=_value(model.import_kvar),
            losses_kw=losses_kw,
            v_min_pu=v_pu[v_min_bus],
            v_min_bus=v_min_bus,
            v_max_pu=v_pu[v_max_bus],
            v_max_bus=v_max_bus,
            curtailed_kw=math.fsum(u.p_upper_kw - pv_kw[u.name] for u in inp.pv),
            import_slack_kw=import_slack,
            export_slack_kw=export_slack,
            voltage_slack_pu=voltage_slack,
            objective=_value(model.problem.objective.value()),
            solve_ms=solve_ms,
            solver=self.solver_name,
            message="; ".join(relaxed),
        )
