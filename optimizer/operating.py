"""The operating point of every step of the horizon, from one batched AC power flow.

The LP is linearised around these points: the loss cuts of the network steps sit at their
flows, and the tail's head import, losses and watched voltages are first-order expansions
around theirs (`optimizer.lp`). A point is the forecast loads with every unit at a known
setpoint: its last one (PV capped at what the step's sun offers), or, re-linearising after a
solve, the LP's own plan. All steps are solved at once (`solve_powerflow_steps`), so a 24 h
horizon costs one vectorised sweep, not a hundred power flows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer.network import Network
from optimizer.powerflow import PowerFlowResult, solve_powerflow_steps
from optimizer.profiles import profiles
from optimizer.tree import tree
from optimizer.units import DispatchInput

__all__ = [
    "OperatingPoints",
    "PlanMemory",
    "UnitPlan",
    "carried_plan",
    "idle_plan",
    "operating_points",
    "remember",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitPlan:
    """Every unit's setpoint at every step (steps first, kW / kvar): PV active power, the
    reactive power of the PV units that dispatch it (in `DispatchInput.pv` order, those with
    `q_max_kvar > 0`; steps past the network steps at unity power factor), battery net power
    (discharge positive) and flexible load drawn."""

    pv: FloatArray
    pvq: FloatArray
    bat: FloatArray
    fl: FloatArray


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatingPoints:
    """The AC state at each step's operating point (steps first, tree positions last).

    `p_pu`/`q_pu` are the sending-end flows of each position's feeding branch, `w` the squared
    voltage at that sending end (`(V_parent/τ)²`), `v_pu` each position's voltage magnitude;
    `import_kw`, `import_kvar` and `losses_kw` per step. `units` holds the setpoints the
    point was computed at."""

    converged: bool
    iterations: int
    v_slack_pu: float
    v_pu: FloatArray
    p_pu: FloatArray
    q_pu: FloatArray
    w: FloatArray
    import_kw: FloatArray
    import_kvar: FloatArray
    losses_kw: FloatArray
    branch_loss_kw: FloatArray
    units: UnitPlan

    @property
    def horizon(self) -> int:
        """The number of steps."""
        return int(self.v_pu.shape[0])

    def step(self, net: Network, t: int) -> PowerFlowResult:
        """Step `t` as a `PowerFlowResult` (keyed by bus id)."""
        tr = tree(net)
        base = net.base_kw
        ids = (net.slack_bus, *tr.ids)
        mags = np.concatenate(([self.v_slack_pu], self.v_pu[t]))
        k_min, k_max = int(np.argmin(mags)), int(np.argmax(mags))
        return PowerFlowResult(
            converged=self.converged,
            iterations=self.iterations,
            v_pu=dict(zip(ids, map(float, mags), strict=True)),
            angle_deg={},
            branch_p_kw=dict(zip(tr.ids, map(float, self.p_pu[t] * base), strict=True)),
            branch_q_kvar=dict(zip(tr.ids, map(float, self.q_pu[t] * base), strict=True)),
            branch_loss_kw=dict(zip(tr.ids, map(float, self.branch_loss_kw[t]), strict=True)),
            losses_kw=float(self.losses_kw[t]),
            losses_kvar=float("nan"),
            import_kw=float(self.import_kw[t]),
            import_kvar=float(self.import_kvar[t]),
            v_min_pu=float(mags[k_min]),
            v_min_bus=ids[k_min],
            v_max_pu=float(mags[k_max]),
            v_max_bus=ids[k_max],
        )


def idle_plan(net: Network, inp: DispatchInput) -> UnitPlan:
    """Each unit held at its last setpoint over the horizon: PV at `min(last, available)`
    (all it has without one), batteries at theirs (idle without one), flexible loads at
    theirs (nominal without one); no reactive power."""
    h = inp.horizon
    upper = profiles(net, inp).pv_upper
    last = np.array(
        [np.inf if u.last_setpoint_kw is None else u.last_setpoint_kw for u in inp.pv], dtype=float
    )
    pv = np.minimum(upper, last[None, :]) if inp.pv else np.zeros((h, 0))
    bat = np.tile(np.array([b.last_setpoint_kw or 0.0 for b in inp.batteries], dtype=float), (h, 1))
    fl = np.tile(
        np.array(
            [
                f.p_nominal_kw if f.last_setpoint_kw is None else f.last_setpoint_kw
                for f in inp.flexible_loads
            ],
            dtype=float,
        ),
        (h, 1),
    )
    n_reactive = sum(1 for u in inp.pv if u.q_max_kvar > 0)
    return UnitPlan(pv=pv, pvq=np.zeros((h, n_reactive)), bat=bat, fl=fl)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanMemory:
    """The last interval's plan, kept to linearise the next one around it: its unit set, each
    step's start and end (seconds from that interval's start), the setpoints and what PV
    could give at each step."""

    unit_set_key: tuple[tuple[str, int], ...]
    starts_s: FloatArray
    ends_s: FloatArray
    plan: UnitPlan
    pv_upper: FloatArray


def remember(net: Network, inp: DispatchInput, plan: UnitPlan) -> PlanMemory:
    """`plan`, the setpoints of `inp`'s steps, as a `PlanMemory`."""
    starts = np.asarray(inp.step_starts_s, dtype=float)
    return PlanMemory(
        unit_set_key=inp.unit_set_key,
        starts_s=starts,
        ends_s=starts + np.asarray(inp.step_durations_s, dtype=float),
        plan=plan,
        pv_upper=profiles(net, inp).pv_upper,
    )


def carried_plan(
    net: Network, inp: DispatchInput, memory: PlanMemory | None, elapsed_s: float
) -> UnitPlan:
    """The operating point of each step: step 0 (and any step the last plan does not reach)
    at the units' last setpoints (`idle_plan`); every later step at what the last plan, made
    `elapsed_s` ago, set for the time the step's middle falls on (PV curtailed by as much as
    it planned, from what the sun now offers). Linearising around the plan rather than the
    last setpoints keeps the tail's first-order model accurate where the plan moves a battery
    far from what it does now."""
    base = idle_plan(net, inp)
    if memory is None or memory.unit_set_key != inp.unit_set_key or inp.horizon < 2:
        return base
    starts = np.asarray(inp.step_starts_s, dtype=float)
    mids = starts + 0.5 * np.asarray(inp.step_durations_s, dtype=float) + elapsed_s
    j = np.searchsorted(memory.ends_s, mids, side="right")
    steps = np.flatnonzero((j < len(memory.ends_s)) & (np.arange(inp.horizon) >= 1))
    if not len(steps):
        return base
    src = j[steps]
    pv, bat, fl = base.pv.copy(), base.bat.copy(), base.fl.copy()
    upper = profiles(net, inp).pv_upper
    curtailed = memory.pv_upper[src] - memory.plan.pv[src]
    pv[steps] = np.clip(upper[steps] - curtailed, 0.0, upper[steps])
    bat[steps] = memory.plan.bat[src]
    fl[steps] = memory.plan.fl[src]
    return UnitPlan(pv=pv, pvq=base.pvq, bat=bat, fl=fl)


def _columns(net: Network, buses: list[int]) -> IntArray:
    col = {b: i for i, b in enumerate(net.order)}
    return np.array([col[b] for b in buses], dtype=np.intp)


def net_loads(net: Network, inp: DispatchInput, plan: UnitPlan) -> tuple[FloatArray, FloatArray]:
    """Net load per step and bus (`net.order`), kW and kvar, with the units at `plan`."""
    prof = profiles(net, inp)
    p, q = prof.p_load.copy(), prof.q_load.copy()
    reactive = [u for u in inp.pv if u.q_max_kvar > 0]
    for arr, units, values, sign in (
        (p, inp.pv, plan.pv, -1.0),
        (q, reactive, plan.pvq, -1.0),
        (p, inp.batteries, plan.bat, -1.0),
        (p, inp.flexible_loads, plan.fl, 1.0),
        (q, inp.flexible_loads, plan.fl * [f.q_per_kw for f in inp.flexible_loads], 1.0),
    ):
        if len(units):
            np.add.at(arr.T, _columns(net, [u.bus for u in units]), sign * values.T)
    return p, q


def operating_points(
    net: Network, inp: DispatchInput, plan: UnitPlan | None = None
) -> OperatingPoints:
    """The AC state of every step with the units at `plan` (default: `idle_plan`)."""
    plan = idle_plan(net, inp) if plan is None else plan
    p, q = net_loads(net, inp, plan)
    v_slack = inp.slack_v(net)
    flows = solve_powerflow_steps(net, p_kw=p, q_kvar=q, v_slack_pu=v_slack)
    tr = tree(net)
    base = net.base_kw
    mags = np.abs(flows.v)
    v_par = np.where(tr.parent_pos >= 0, mags[:, np.maximum(tr.parent_pos, 0)], v_slack)
    return OperatingPoints(
        converged=flows.converged,
        iterations=flows.iterations,
        v_slack_pu=v_slack,
        v_pu=mags,
        p_pu=flows.s_send_kw.real / base,
        q_pu=flows.s_send_kw.imag / base,
        w=(v_par / tr.tap[None, :]) ** 2,
        import_kw=flows.import_kw.real.copy(),
        import_kvar=flows.import_kw.imag.copy(),
        losses_kw=flows.loss_kw.sum(axis=1),
        branch_loss_kw=flows.loss_kw,
        units=plan,
    )
