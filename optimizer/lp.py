"""The dispatch LP (DESIGN.md §3, horizon 1), built from one function per constraint family.

Network quantities are per unit on the network's base (P, Q flows at the sending end of the
branch feeding each non-slack bus; `L` the squared current through its impedance; `v` the
squared voltage magnitude); device quantities are kW. `build()` calls the families in order.
The model's structure (variables, rows, names) depends only on the network and the unit set;
every number comes from the input and the operating point, so a later version can keep the
model and update numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulp

from optimizer.network import Network
from optimizer.powerflow import PowerFlowResult
from optimizer.units import BatteryUnit, DispatchInput, PvUnit

__all__ = ["DispatchModel", "build", "cut_points"]

LOOSE_KW = 1.0e9
"""Stands in for an absent feeder limit, so the rows exist whatever the input."""

N_GRID_CUTS = 11
"""Fixed loss cuts per branch, evenly spread over the branch's reachable active flow."""


@dataclass(slots=True)
class DispatchModel:
    """The pulp problem and handles to its variables."""

    problem: pulp.LpProblem
    pv_kw: dict[str, pulp.LpVariable] = field(default_factory=dict)
    charge_kw: dict[str, pulp.LpVariable] = field(default_factory=dict)
    discharge_kw: dict[str, pulp.LpVariable] = field(default_factory=dict)
    change_up_kw: dict[str, pulp.LpVariable] = field(default_factory=dict)
    change_down_kw: dict[str, pulp.LpVariable] = field(default_factory=dict)
    p_pu: dict[int, pulp.LpVariable] = field(default_factory=dict)
    q_pu: dict[int, pulp.LpVariable] = field(default_factory=dict)
    i2_pu: dict[int, pulp.LpVariable] = field(default_factory=dict)
    v2_pu: dict[int, pulp.LpVariable | float] = field(default_factory=dict)
    import_kw: pulp.LpVariable | None = None
    import_kvar: pulp.LpVariable | None = None
    import_slack_kw: pulp.LpVariable | None = None
    export_slack_kw: pulp.LpVariable | None = None
    v_low_slack_pu2: pulp.LpVariable | None = None
    v_high_slack_pu2: pulp.LpVariable | None = None
    op_v_pu: dict[int, float] = field(default_factory=dict)


def _var(
    model: DispatchModel, name: str, low: float | None = None, up: float | None = None
) -> pulp.LpVariable:
    """A continuous variable attached to the model (pulp 3.x API, with a pulp 2.x fallback)."""
    add = getattr(model.problem, "add_variable", None)
    if add is not None:
        return add(name, lowBound=low, upBound=up)
    return pulp.LpVariable(name, lowBound=low, upBound=up)


def _ramp_window(
    last_kw: float | None, ramp_kw_per_s: float | None, interval_s: float, lo: float, hi: float
) -> tuple[float, float]:
    """`[lo, hi]` narrowed to `last ± ramp·interval`, clamped back into `[lo, hi]`."""
    if last_kw is None or ramp_kw_per_s is None:
        return lo, hi
    step = ramp_kw_per_s * interval_s
    return min(max(last_kw - step, lo), hi), max(min(last_kw + step, hi), lo)


def pv_bounds_kw(unit: PvUnit, interval_s: float) -> tuple[float, float]:
    """`0 <= p <= min(available, p_max)`, narrowed by the ramp limit around the last setpoint."""
    return _ramp_window(unit.last_setpoint_kw, unit.ramp_kw_per_s, interval_s, 0.0, unit.p_upper_kw)


def battery_bounds_kw(unit: BatteryUnit, interval_s: float) -> tuple[float, float]:
    """Net power range allowed by p_max, the SOC limits and the ramp limit."""
    lo, hi = unit.p_range_kw(interval_s)
    return _ramp_window(unit.last_setpoint_kw, unit.ramp_kw_per_s, interval_s, lo, hi)


def add_pv_units(model: DispatchModel, inp: DispatchInput) -> None:
    """PV output: `max(0, last − ramp·dt) <= p_k <= min(available_k, p_max_k, last + ramp·dt)`."""
    for k, unit in enumerate(inp.pv):
        lo, hi = pv_bounds_kw(unit, inp.interval_s)
        model.pv_kw[unit.name] = _var(model, f"pv{k}", lo, hi)


def add_battery_state(model: DispatchModel, inp: DispatchInput) -> None:
    """Battery power and state of charge.

    `0 <= p_ch <= p_max`, `0 <= p_dis <= p_max`,
    `min(soc_min, soc) <= soc − p_dis·dt/η_dis + p_ch·dt·η_ch <= max(soc_max, soc)`,
    `last − ramp·dt <= p_dis − p_ch <= last + ramp·dt` (clamped into what SOC allows).
    """
    dt_h = inp.dt_h
    for k, unit in enumerate(inp.batteries):
        lo, hi = battery_bounds_kw(unit, inp.interval_s)
        ch = _var(model, f"bat{k}_ch", 0.0, max(-lo, 0.0))
        dis = _var(model, f"bat{k}_dis", 0.0, max(hi, 0.0))
        model.charge_kw[unit.name] = ch
        model.discharge_kw[unit.name] = dis
        soc_next = unit.soc_kwh - dis * (dt_h / unit.eta_discharge) + ch * (dt_h * unit.eta_charge)
        model.problem += soc_next >= min(unit.soc_min_kwh, unit.soc_kwh), f"bat{k}_soc_min"
        model.problem += soc_next <= max(unit.soc_max_kwh, unit.soc_kwh), f"bat{k}_soc_max"
        model.problem += dis - ch >= lo, f"bat{k}_ramp_down"
        model.problem += dis - ch <= hi, f"bat{k}_ramp_up"


def add_setpoint_change(model: DispatchModel, inp: DispatchInput) -> None:
    """Anti-chatter: `p_k − last_k = up_k − down_k`, `up_k, down_k >= 0` (last = 0 if unknown)."""
    units: list[tuple[str, float | None, pulp.LpAffineExpression]] = [
        (u.name, u.last_setpoint_kw, model.pv_kw[u.name] + 0) for u in inp.pv
    ]
    units += [
        (
            u.name,
            u.last_setpoint_kw,
            model.discharge_kw[u.name] - model.charge_kw[u.name],
        )
        for u in inp.batteries
    ]
    for k, (name, last, p) in enumerate(units):
        up = _var(model, f"chg{k}_up", 0.0)
        down = _var(model, f"chg{k}_dn", 0.0)
        model.change_up_kw[name] = up
        model.change_down_kw[name] = down
        model.problem += p - up + down == (0.0 if last is None else last), f"chg{k}"


def _injection_pu(
    model: DispatchModel, net: Network, inp: DispatchInput
) -> dict[int, pulp.LpAffineExpression]:
    """Controllable generation per bus (p.u.), `Σ p_pv + Σ (p_dis − p_ch)`."""
    gen: dict[int, pulp.LpAffineExpression] = {b: pulp.LpAffineExpression() for b in net.order}
    scale = 1.0 / net.base_kw
    for u in inp.pv:
        gen[u.bus] += model.pv_kw[u.name] * scale
    for b in inp.batteries:
        gen[b.bus] += (model.discharge_kw[b.name] - model.charge_kw[b.name]) * scale
    return gen


def add_flow_balance(model: DispatchModel, net: Network, inp: DispatchInput) -> None:
    """LinDistFlow balance at every non-slack bus i, with `L_i` the squared branch current.

    `P_i = Σ_{c∈children(i)} P_c + p_load_i − p_gen_i + r_i·L_i`,
    `Q_i = Σ_{c∈children(i)} Q_c + q_load_i + x_i·L_i`.
    """
    base = net.base_kw
    for bus_id in net.order[1:]:
        model.p_pu[bus_id] = _var(model, f"P_{bus_id}")
        model.q_pu[bus_id] = _var(model, f"Q_{bus_id}")
        model.i2_pu[bus_id] = _var(model, f"L_{bus_id}", 0.0)
    gen = _injection_pu(model, net, inp)
    for bus_id in net.order[1:]:
        br = net.branch_to(bus_id)
        kids = net.children[bus_id]
        p_load = inp.loads_kw.get(bus_id, 0.0) / base
        q_load = inp.loads_kvar.get(bus_id, 0.0) / base
        model.problem += (
            (
                model.p_pu[bus_id]
                == pulp.lpSum(model.p_pu[c] for c in kids)
                + p_load
                - gen[bus_id]
                + br.r_pu * model.i2_pu[bus_id]
            ),
            f"Pbal_{bus_id}",
        )
        model.problem += (
            (
                model.q_pu[bus_id]
                == pulp.lpSum(model.q_pu[c] for c in kids) + q_load + br.x_pu * model.i2_pu[bus_id]
            ),
            f"Qbal_{bus_id}",
        )


def add_voltage_drop(model: DispatchModel, net: Network, inp: DispatchInput) -> None:
    """Voltage along each branch (DistFlow with the loss term kept, `τ` the tap ratio).

    `v_i = v_π(i)/τ_i² − 2 (r_i P_i + x_i Q_i) + (r_i² + x_i²) L_i`, `v_slack = v_slack_pu²`.
    """
    model.v2_pu[net.slack_bus] = inp.v_slack_pu**2
    for bus_id in net.order[1:]:
        model.v2_pu[bus_id] = _var(model, f"v_{bus_id}", 0.0)
    for bus_id in net.order[1:]:
        br = net.branch_to(bus_id)
        model.problem += (
            (
                model.v2_pu[bus_id]
                == model.v2_pu[net.parent[bus_id]] * (1.0 / br.tap**2)
                - 2.0 * (br.r_pu * model.p_pu[bus_id] + br.x_pu * model.q_pu[bus_id])
                + (br.r_pu**2 + br.x_pu**2) * model.i2_pu[bus_id]
            ),
            f"vdrop_{bus_id}",
        )


def _reach_kw(net: Network, inp: DispatchInput) -> dict[int, tuple[float, float]]:
    """Per branch (by to-bus), the range of active flow the units can produce (losses aside)."""
    low = {b: inp.loads_kw.get(b, 0.0) for b in net.order}
    high = dict(low)
    for u in inp.pv:
        low[u.bus] -= u.p_upper_kw
    for bat in inp.batteries:
        lo, hi = bat.p_range_kw(inp.interval_s)
        low[bat.bus] -= hi
        high[bat.bus] -= lo
    for bus_id in reversed(net.order[1:]):
        for c in net.children[bus_id]:
            low[bus_id] += low[c]
            high[bus_id] += high[c]
    return {b: (low[b], high[b]) for b in net.order[1:]}


def cut_points(
    net: Network, inp: DispatchInput, op: PowerFlowResult
) -> dict[int, list[tuple[float, float]]]:
    """Per branch, the `(P, Q)` points (p.u.) where the loss cuts touch.

    The operating point, the origin, and `N_GRID_CUTS` points spread evenly over the active flow
    the units can reach on that branch (at the operating reactive flow). Always the same count.
    """
    base = net.base_kw
    reach = _reach_kw(net, inp)
    points: dict[int, list[tuple[float, float]]] = {}
    for bus_id in net.order[1:]:
        p0 = op.branch_p_kw[bus_id] / base
        q0 = op.branch_q_kvar[bus_id] / base
        lo, hi = reach[bus_id]
        lo, hi = min(lo / base, p0), max(hi / base, p0)
        span = hi - lo
        grid = [lo + span * n / (N_GRID_CUTS - 1) for n in range(N_GRID_CUTS)]
        points[bus_id] = [(p0, q0), (0.0, 0.0), *((p, q0) for p in grid)]
    return points


def add_loss_cuts(
    model: DispatchModel, net: Network, inp: DispatchInput, op: PowerFlowResult
) -> None:
    """Outer approximation of the squared current, tangent planes at each cut point (P⁰, Q⁰).

    `L_i >= (2 P⁰ P_i + 2 Q⁰ Q_i − P⁰² − Q⁰²) / w_i`, with `w_i = (V_π(i)/τ_i)²` at the
    operating point. Tight at the optimum because losses carry cost.
    """
    model.op_v_pu = dict(op.v_pu)
    for bus_id, points in cut_points(net, inp, op).items():
        br = net.branch_to(bus_id)
        w = (op.v_pu[net.parent[bus_id]] / br.tap) ** 2
        for n, (p0, q0) in enumerate(points):
            model.problem += (
                (
                    model.i2_pu[bus_id] * w
                    >= 2.0 * p0 * model.p_pu[bus_id] + 2.0 * q0 * model.q_pu[bus_id] - p0**2 - q0**2
                ),
                f"cut_{bus_id}_{n}",
            )


CHORD_MARGIN = 0.25
"""Relative widening of each branch's reachable flow range for the chord (losses aside)."""


def chord_ranges(net: Network, inp: DispatchInput) -> dict[int, tuple[float, float, float, float]]:
    """Per branch, `(P_lo, P_hi, Q_lo, Q_hi)` in p.u.: the reachable flows, widened so that the
    branch's own and downstream losses stay inside."""
    base = net.base_kw
    reach = _reach_kw(net, inp)
    q = {b: inp.loads_kvar.get(b, 0.0) for b in net.order}
    for bus_id in reversed(net.order[1:]):
        for c in net.children[bus_id]:
            q[bus_id] += q[c]
    ranges: dict[int, tuple[float, float, float, float]] = {}
    for bus_id in net.order[1:]:
        lo, hi = reach[bus_id][0] / base, reach[bus_id][1] / base
        q0 = q[bus_id] / base
        margin = CHORD_MARGIN * max(abs(lo), abs(hi), abs(q0)) + 1e-4
        ranges[bus_id] = (lo - margin, hi + margin, q0 - margin, q0 + margin)
    return ranges


def add_loss_chords(model: DispatchModel, net: Network, inp: DispatchInput) -> None:
    """Upper bound on the squared current by the chords of P² and Q² over the reachable ranges.

    `w_i·L_i <= (P_lo + P_hi)·P_i − P_lo·P_hi + (Q_lo + Q_hi)·Q_i − Q_lo·Q_hi`. Without it the
    LP could burn surplus power in fictitious losses rather than report a missed export limit.
    """
    op_v = model.op_v_pu
    for bus_id, (p_lo, p_hi, q_lo, q_hi) in chord_ranges(net, inp).items():
        br = net.branch_to(bus_id)
        w = (op_v[net.parent[bus_id]] / br.tap) ** 2
        model.problem += (
            (
                model.i2_pu[bus_id] * w
                <= (p_lo + p_hi) * model.p_pu[bus_id]
                - p_lo * p_hi
                + (q_lo + q_hi) * model.q_pu[bus_id]
                - q_lo * q_hi
            ),
            f"chord_{bus_id}",
        )


def add_voltage_band(model: DispatchModel, net: Network, inp: DispatchInput) -> None:
    """Soft voltage band: `v_min² − s_low <= v_i <= v_max² + s_high`, `s_low, s_high >= 0`."""
    model.v_low_slack_pu2 = _var(model, "s_vlow", 0.0)
    model.v_high_slack_pu2 = _var(model, "s_vhigh", 0.0)
    for bus_id in net.order[1:]:
        v = model.v2_pu[bus_id]
        model.problem += v >= inp.v_min_pu**2 - model.v_low_slack_pu2, f"vmin_{bus_id}"
        model.problem += v <= inp.v_max_pu**2 + model.v_high_slack_pu2, f"vmax_{bus_id}"


def add_feeder_limits(model: DispatchModel, net: Network, inp: DispatchInput) -> None:
    """Feeder head import (signed) and its soft limits, `s_imp, s_exp >= 0`.

    `import = base·Σ_{c∈children(slack)} P_c + p_load_slack − p_gen_slack`,
    `import <= L + s_imp`, `import >= −E − s_exp`.
    """
    base = net.base_kw
    slack = net.slack_bus
    kids = net.children[slack]
    gen = _injection_pu(model, net, inp)[slack]
    model.import_kw = _var(model, "import_kw")
    model.import_kvar = _var(model, "import_kvar")
    model.import_slack_kw = _var(model, "s_import", 0.0)
    model.export_slack_kw = _var(model, "s_export", 0.0)
    model.problem += (
        (
            model.import_kw
            == pulp.lpSum(model.p_pu[c] for c in kids) * base
            + inp.loads_kw.get(slack, 0.0)
            - gen * base
        ),
        "import_def",
    )
    model.problem += (
        (
            model.import_kvar
            == pulp.lpSum(model.q_pu[c] for c in kids) * base + inp.loads_kvar.get(slack, 0.0)
        ),
        "import_kvar_def",
    )
    import_limit = LOOSE_KW if inp.import_limit_kw is None else inp.import_limit_kw
    export_limit = LOOSE_KW if inp.export_limit_kw is None else inp.export_limit_kw
    model.problem += model.import_kw - model.import_slack_kw <= import_limit, "import_limit"
    model.problem += model.import_kw + model.export_slack_kw >= -export_limit, "export_limit"


def add_objective(model: DispatchModel, net: Network, inp: DispatchInput) -> None:
    """Cost of the interval (all energy terms × dt):

    `price·import + c_curt·Σ(p_upper − p_pv) + c_loss·base·Σ r_i L_i
    + c_wear·Σ(p_ch + p_dis) − value·Σ(η_ch p_ch − p_dis/η_dis) + c_chg·Σ(up + down)
    + c_slack·(s_imp + s_exp) + c_v·(s_low + s_high)`.

    A branch without resistance has its current priced as if `r = 10⁻³·x`, so its cuts stay
    tight too.
    """
    costs = inp.costs
    dt_h = inp.dt_h
    value = (
        inp.price_per_kwh
        if costs.battery_energy_value_per_kwh is None
        else (costs.battery_energy_value_per_kwh)
    )
    assert model.import_kw is not None
    assert model.import_slack_kw is not None
    assert model.export_slack_kw is not None
    assert model.v_low_slack_pu2 is not None
    assert model.v_high_slack_pu2 is not None
    terms: list[pulp.LpAffineExpression] = [inp.price_per_kwh * model.import_kw]
    terms += [costs.curtailment_per_kwh * (u.p_upper_kw - model.pv_kw[u.name]) for u in inp.pv]
    for bus_id, i2 in model.i2_pu.items():
        br = net.branch_to(bus_id)
        weight = br.r_pu if br.r_pu > 0 else 1e-3 * br.x_pu
        terms.append(costs.loss_per_kwh * net.base_kw * weight * i2)
    for b in inp.batteries:
        ch, dis = model.charge_kw[b.name], model.discharge_kw[b.name]
        terms.append(costs.battery_wear_per_kwh * (ch + dis))
        terms.append(-value * (b.eta_charge * ch - dis * (1.0 / b.eta_discharge)))
    last = {u.name: u.last_setpoint_kw for u in inp.units}
    for name, up in model.change_up_kw.items():
        weight = 0.0 if last[name] is None else costs.setpoint_change_per_kwh
        terms.append(weight * (up + model.change_down_kw[name]))
    terms.append(costs.limit_slack_per_kwh * (model.import_slack_kw + model.export_slack_kw))
    terms.append(costs.voltage_slack_per_pu2_h * (model.v_low_slack_pu2 + model.v_high_slack_pu2))
    model.problem += pulp.lpSum(terms) * dt_h


def build(net: Network, inp: DispatchInput, op: PowerFlowResult) -> DispatchModel:
    """The whole LP for one interval, linearised at the operating point `op`."""
    model = DispatchModel(problem=pulp.LpProblem("feederd_dispatch", pulp.LpMinimize))
    add_pv_units(model, inp)
    add_battery_state(model, inp)
    add_setpoint_change(model, inp)
    add_flow_balance(model, net, inp)
    add_voltage_drop(model, net, inp)
    add_loss_cuts(model, net, inp, op)
    add_loss_chords(model, net, inp)
    add_voltage_band(model, net, inp)
    add_feeder_limits(model, net, inp)
    add_objective(model, net, inp)
    return model


def operating_injections(
    net: Network, inp: DispatchInput
) -> tuple[Mapping[int, float], Mapping[int, float]]:
    """Net load per bus (kW, kvar) now: loads minus each unit's last setpoint, or for PV without
    one its available power (a battery without one is taken as idle)."""
    p = {b: inp.loads_kw.get(b, 0.0) for b in net.order}
    q = {b: inp.loads_kvar.get(b, 0.0) for b in net.order}
    for u in inp.pv:
        last = u.last_setpoint_kw
        p[u.bus] -= min(u.available_kw, last) if last is not None else u.p_upper_kw
    for b in inp.batteries:
        p[b.bus] -= b.last_setpoint_kw or 0.0
    return p, q


def is_finite_number(value: float | None) -> bool:
    """Whether a solver value is a usable number."""
    return value is not None and math.isfinite(value)
