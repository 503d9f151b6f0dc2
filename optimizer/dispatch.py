"""The dispatcher: linearise at the operating points, update the kept LP, solve it, read it out.

The LP of a network, unit set and horizon shape is built once from arrays and held in HiGHS
(`HighsSession`); every later interval with the same structure only pushes new numbers and
re-solves from the last basis. CBC (through pulp, `optimizer.lp_pulp`) is the fallback when
HiGHS fails, or the solver when asked for.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pulp

from optimizer.flexibility import FlexResult, flexibility
from optimizer.lp import DispatchModel, build, lp_numbers, structure_key
from optimizer.lp_pulp import to_pulp
from optimizer.network import Network
from optimizer.operating import (
    OperatingPoints,
    PlanMemory,
    UnitPlan,
    carried_plan,
    operating_points,
    remember,
)
from optimizer.powerflow import PowerFlowResult
from optimizer.profiles import profiles
from optimizer.result import DispatchResult, DispatchStatus
from optimizer.session import HighsSession, SolveOutcome
from optimizer.tree import tree
from optimizer.units import BatteryUnit, DispatchInput, PvUnit, band_violation

__all__ = ["Dispatcher"]

FloatArray = npt.NDArray[np.float64]
Values = Callable[[str], FloatArray]


class Dispatcher:
    """Solves each interval's dispatch on a fixed network, keeping the LP between intervals.

    `passes > 1` re-linearises the loss cuts at the AC power flow of the dispatched point and
    solves again (a sequential LP, warm-started), for one-shot use; the daemon gets the same
    effect across intervals: the steps after step 0 are linearised around the last plan,
    taken to have been made one `interval_s` ago (`optimizer.operating.carried_plan`).
    `solver` is "highs" (persistent model, CBC if HiGHS fails) or "cbc". Solver trouble is returned as a status, never raised; `ValueError` is raised only
    for inputs that are programming errors (a unit on a bus the network does not have).
    """

    def __init__(
        self,
        network: Network,
        *,
        time_limit_s: float = 1.0,
        passes: int = 1,
        solver: str = "highs",
    ) -> None:
        if not time_limit_s > 0:
            raise ValueError(f"time_limit_s must be > 0, got {time_limit_s}")
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        if solver not in ("highs", "cbc"):
            raise ValueError(f"solver must be 'highs' or 'cbc', got {solver!r}")
        self.network = network
        self.time_limit_s = time_limit_s
        self.passes = passes
        self.solver_name = "HiGHS" if solver == "highs" else "CBC"
        self._session: HighsSession | None = None
        self._key: Hashable = None
        self.builds = 0
        self.last_points: OperatingPoints | None = None
        """The operating points of the last solve's last pass, every step."""
        self._memory: PlanMemory | None = None
        self.last_build_ms = 0.0
        """How long the last build of the HiGHS model took (assembling and passing it)."""
        self._lock = threading.Lock()  # one solve at a time on the kept model: dispatch or flex
        self._dispatch_due = threading.Event()  # a dispatch waits: the flex solves stop
        self._solved: DispatchInput | None = None  # the last input HiGHS solved to optimality

    @property
    def session(self) -> HighsSession | None:
        """The kept HiGHS model (None before the first HiGHS solve)."""
        return self._session

    def _check(self, inp: DispatchInput) -> None:
        net = self.network
        for unit in (*inp.units, *inp.flexible_loads):
            if not net.has_bus(unit.bus):
                kind = (
                    "PV unit"
                    if isinstance(unit, PvUnit)
                    else "battery"
                    if isinstance(unit, BatteryUnit)
                    else "flexible load"
                )
                raise ValueError(
                    f"{kind} {unit.name!r} is on bus {unit.bus}, which network "
                    f"{net.name!r} does not have"
                )
        for label, loads in (("loads_kw", inp.loads_kw), ("loads_kvar", inp.loads_kvar)):
            unknown = sorted(b for b in loads if not net.has_bus(b))
            if unknown:
                raise ValueError(f"{label} names bus(es) {unknown} not in network {net.name!r}")
        fc = inp.forecast
        if fc is not None and fc.load_kw is not None:
            strays = [_label(b) for b in fc.load_kw.columns if not _is_bus(net, b)]
            if strays:
                raise ValueError(
                    f"forecast load_kw names bus(es) [{', '.join(strays)}] not in network "
                    f"{net.name!r}"
                )
        if fc is not None and fc.pv_kw is not None:
            names = {u.name for u in inp.pv}
            strays = [_label(c) for c in fc.pv_kw.columns if c not in names]
            if strays:
                raise ValueError(
                    f"forecast pv_kw names PV unit(s) [{', '.join(strays)}] the input does not have"
                )

    @property
    def last_operating_points(self) -> list[PowerFlowResult]:
        """The AC power flow of step 0's operating point of the last solve's last pass (a
        one-element list; empty before a solve). `last_points` has every step."""
        if self.last_points is None:
            return []
        return [self.last_points.step(self.network, 0)]

    def operating_points(self, inp: DispatchInput) -> OperatingPoints:
        """The AC state of every step at the current (or forecast) injections, the units at
        their last setpoints (one batched power flow)."""
        return operating_points(self.network, inp)

    def build_model(self, inp: DispatchInput, ops: OperatingPoints | None = None) -> DispatchModel:
        """The LP for `inp` (for inspection, `write_mps`, or a caller's own solver)."""
        self._check(inp)
        return build(self.network, inp, self.operating_points(inp) if ops is None else ops)

    def write_mps(
        self, inp: DispatchInput, path: str | Path, ops: OperatingPoints | None = None
    ) -> None:
        """Write the LP for `inp` in MPS format (at `ops`, e.g. `last_points`)."""
        to_pulp(self.build_model(inp, ops)).problem.writeMPS(str(path))

    def solve(self, inp: DispatchInput) -> DispatchResult:
        """Dispatch one interval: setpoints per unit, the LP's estimates and the plan."""
        self._check(inp)
        self._dispatch_due.set()  # flex solves running on another thread give way
        with self._lock:
            self._dispatch_due.clear()
            self._solved = None
            result = self._solve(inp)
            if result.solver == "HiGHS" and result.status.has_setpoints:
                self._solved = inp
            return result

    def flexibility(
        self,
        inp: DispatchInput,
        base_limit_kw: Sequence[float],
        *,
        window_s: float = 3600.0,
        points: int = 4,
        budget_s: float = 1.0,
        timer: Callable[[], float] = time.perf_counter,
    ) -> FlexResult:
        """The flexibility of the interval just dispatched on `inp` (`optimizer.flexibility`):
        parametric solves of the kept model, whose import-limit bounds and basis are then put
        back (the next `solve` starts from where this one found them; `last_points` and the
        plan memory are not touched). Nothing to offer (the last solve was not a HiGHS one of
        `inp`) is a result with a reason, never an error. A `solve` called meanwhile (on
        another thread) stops them and waits for the solve under way, at most."""
        if self._solved is not inp:
            return FlexResult(min_kw=None, max_kw=None, reason="not the last input solved")
        with self._lock:
            session = self._session
            if self._solved is not inp or session is None:
                return FlexResult(min_kw=None, max_kw=None, reason="not the last input solved")
            return flexibility(
                session,
                self.network,
                inp,
                base_limit_kw,
                window_s=window_s,
                points=points,
                budget_s=budget_s,
                timer=timer,
                stop=self._dispatch_due.is_set,
            )

    def _solve(self, inp: DispatchInput) -> DispatchResult:
        start = time.perf_counter()
        plan = carried_plan(self.network, inp, self._memory, inp.interval_s)
        ops = operating_points(self.network, inp, plan)
        result = DispatchResult(status=DispatchStatus.SOLVER_FAILED, solver=self.solver_name)
        for n_pass in range(1, self.passes + 1):
            if not ops.converged:
                return DispatchResult(
                    status=DispatchStatus.SOLVER_FAILED,
                    solver=self.solver_name,
                    solve_ms=(time.perf_counter() - start) * 1000.0,
                    message=(
                        f"operating-point power flow did not converge in {ops.iterations} "
                        "sweeps (loads beyond the feeder's capacity?)"
                    ),
                )
            self.last_points = ops
            status, message, values, objective, solver = self._solve_once(inp, ops)
            if values is None:
                return DispatchResult(
                    status=status,
                    solver=solver,
                    solve_ms=(time.perf_counter() - start) * 1000.0,
                    message=message,
                )
            result = self._read(inp, values, objective, solver, n_pass, message)
            plan = _plan(inp, values)
            self._memory = remember(self.network, inp, plan)
            if n_pass < self.passes:
                ops = operating_points(self.network, inp, plan)
        return dataclasses.replace(result, solve_ms=(time.perf_counter() - start) * 1000.0)

    def _solve_once(
        self, inp: DispatchInput, ops: OperatingPoints
    ) -> tuple[DispatchStatus, str, Values | None, float, str]:
        if self.solver_name == "HiGHS":
            try:
                outcome, message = self._run_highs(inp, ops)
            except Exception as err:  # any solver failure is an outcome
                outcome, message = SolveOutcome.FAILED, f"HiGHS raised {err!r}"
            if outcome is SolveOutcome.OPTIMAL:
                assert self._session is not None
                session = self._session
                col = session.values()
                return (
                    DispatchStatus.OPTIMAL,
                    "",
                    lambda name: col[session.col_idx[name]],
                    session.objective(),
                    "HiGHS",
                )
            if outcome is SolveOutcome.TIME_LIMIT:
                return DispatchStatus.TIMED_OUT, message, None, math.nan, "HiGHS"
            self._session = None  # rebuild next time: the kept model may be in a bad state
            status, cbc_message, values, objective = self._run_cbc(inp, ops)
            note = f"{message}; fell back to CBC" + (f": {cbc_message}" if cbc_message else "")
            return status, note, values, objective, "CBC"
        status, message, values, objective = self._run_cbc(inp, ops)
        return status, message, values, objective, "CBC"

    def _run_highs(self, inp: DispatchInput, ops: OperatingPoints) -> tuple[SolveOutcome, str]:
        key = (structure_key(inp), self.time_limit_s)
        if self._session is None or key != self._key:
            started = time.perf_counter()
            self._session = HighsSession(
                build(self.network, inp, ops), time_limit_s=self.time_limit_s
            )
            self._key = key
            self.builds += 1
            self.last_build_ms = (time.perf_counter() - started) * 1000.0
        else:
            self._session.update(lp_numbers(self.network, inp, ops))
        return self._session.run()

    def _run_cbc(
        self, inp: DispatchInput, ops: OperatingPoints
    ) -> tuple[DispatchStatus, str, Values | None, float]:
        model = build(self.network, inp, ops)
        started = time.perf_counter()
        try:
            pm = to_pulp(model)
            code = pm.problem.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=self.time_limit_s))
        except Exception as err:  # any solver failure is an outcome
            return DispatchStatus.SOLVER_FAILED, f"CBC raised {err!r}", None, math.nan
        if code == pulp.LpStatusOptimal and pm.problem.sol_status == pulp.LpSolutionOptimal:
            col = pm.values()
            cols = model.layout.cols
            objective = pulp.value(pm.problem.objective)
            return DispatchStatus.OPTIMAL, "", lambda name: col[cols[name]], float(objective)
        if time.perf_counter() - started >= self.time_limit_s:
            return DispatchStatus.TIMED_OUT, f"CBC hit its {self.time_limit_s} s limit", None, 0.0
        return DispatchStatus.SOLVER_FAILED, f"CBC: {pulp.LpStatus.get(code, code)}", None, 0.0

    def _read(
        self,
        inp: DispatchInput,
        values: Values,
        objective: float,
        solver: str,
        passes: int,
        note: str,
    ) -> DispatchResult:
        net = self.network
        tr = tree(net)
        prof = profiles(net, inp)
        pv = values("pv")
        pvq = values("pvq")
        bat = values("dis") - values("ch")
        soc = values("soc")
        fl = values("fl")
        reactive = [u.name for u in inp.pv if u.q_max_kvar > 0]
        pv_kvar = {u.name: 0.0 for u in inp.pv}
        pv_kvar.update({name: float(pvq[0, j]) for j, name in enumerate(reactive)})
        v2 = values("v")[0]
        v_pu = {net.slack_bus: inp.slack_v(net)}
        v_pu.update({b: math.sqrt(max(float(v2[k]), 0.0)) for k, b in enumerate(tr.ids)})
        v_min_bus = min(v_pu, key=lambda b: (v_pu[b], b))
        v_max_bus = max(v_pu, key=lambda b: (v_pu[b], -b))
        losses_kw = _flow_losses_kw(net, inp, values)
        imp = values("imp")
        import_slack = max(float(values("s_imp")[0]), 0.0)
        export_slack = max(float(values("s_exp")[0]), 0.0)
        rating_slack = (
            max(float(values("s_rate")[0]), 0.0) * net.base_kw if _has_rating(net) else 0.0
        )
        voltage_slack, v_bus = band_violation(inp, v_pu)
        relaxed: list[str] = []
        if import_slack > inp.slack_tol_kw:
            relaxed.append(f"import limit missed by {import_slack:.3f} kW")
        if export_slack > inp.slack_tol_kw:
            relaxed.append(f"export limit missed by {export_slack:.3f} kW")
        if voltage_slack > inp.slack_tol_pu:
            relaxed.append(f"voltage band missed by {voltage_slack:.5f} pu at bus {v_bus}")
        if rating_slack > inp.slack_tol_kw:
            relaxed.append(f"branch rating exceeded by {rating_slack:.3f} kVA")
        pv_kw = {u.name: float(pv[0, k]) for k, u in enumerate(inp.pv)}
        return DispatchResult(
            status=DispatchStatus.LIMIT_RELAXED if relaxed else DispatchStatus.OPTIMAL,
            pv_kw=pv_kw,
            battery_kw={b.name: float(bat[0, k]) for k, b in enumerate(inp.batteries)},
            import_kw=float(imp[0]),
            import_kvar=float(values("impq")[0]),
            losses_kw=losses_kw,
            v_min_pu=v_pu[v_min_bus],
            v_min_bus=v_min_bus,
            v_max_pu=v_pu[v_max_bus],
            v_max_bus=v_max_bus,
            curtailed_kw=math.fsum(u.p_upper_kw - pv_kw[u.name] for u in inp.pv),
            import_slack_kw=import_slack,
            export_slack_kw=export_slack,
            voltage_slack_pu=voltage_slack,
            objective=objective,
            solver=solver,
            message="; ".join([m for m in (note, *relaxed) if m]),
            pv_kvar=pv_kvar,
            load_kw={f.name: float(fl[0, k]) for k, f in enumerate(inp.flexible_loads)},
            rating_slack_kva=rating_slack,
            import_plan_kw=tuple(float(x) for x in imp),
            soc_plan_kwh={
                b.name: tuple(float(x) for x in soc[:, k]) for k, b in enumerate(inp.batteries)
            },
            passes=passes,
            step_start_s=inp.step_starts_s,
            step_s=inp.step_durations_s,
            battery_plan_kw={
                b.name: tuple(float(x) for x in bat[:, k]) for k, b in enumerate(inp.batteries)
            },
            curtailed_plan_kw=tuple(float(x) for x in np.sum(prof.pv_upper - pv, axis=1))
            if inp.pv
            else (0.0,) * inp.horizon,
            import_slack_plan_kw=tuple(max(float(x), 0.0) for x in values("s_imp")),
            export_slack_plan_kw=tuple(max(float(x), 0.0) for x in values("s_exp")),
            import_limit_plan_kw=tuple(float(x) for x in prof.import_limit),
        )


def _label(column: object) -> str:
    return str(int(column)) if isinstance(column, int | np.integer) else repr(column)


def _is_bus(net: Network, bus: object) -> bool:
    return isinstance(bus, int | np.integer) and net.has_bus(int(bus))


def _has_rating(net: Network) -> bool:
    return bool(np.any(~np.isnan(tree(net).rating_kva)))


def _plan(inp: DispatchInput, values: Values) -> UnitPlan:
    """The LP's setpoints at every step (reactive power beyond the network steps: none)."""
    pvq = np.zeros((inp.horizon, sum(1 for u in inp.pv if u.q_max_kvar > 0)))
    lp_q = values("pvq")
    pvq[: lp_q.shape[0]] = lp_q
    return UnitPlan(pv=values("pv"), pvq=pvq, bat=values("dis") - values("ch"), fl=values("fl"))


def _flow_losses_kw(net: Network, inp: DispatchInput, values: Values) -> float:
    """The losses of the LP's own flows and voltages in the first step, `Σ r·(P² + Q²)·τ²/v²`
    (`v` the parent bus's): the quadratic the loss cuts approximate from below, so the estimate
    does not depend on where the dispatched flows sit between two cuts."""
    tr = tree(net)
    p, q, v2 = values("P")[0], values("Q")[0], values("v")[0]
    v_slack2 = inp.slack_v(net) ** 2
    v_par2 = np.where(tr.parent_pos >= 0, v2[np.maximum(tr.parent_pos, 0)], v_slack2)
    w = np.maximum(v_par2, 1e-6) / tr.tap**2
    return net.base_kw * float(np.dot(tr.r, (p**2 + q**2) / w))
