"""The dispatch LP (DESIGN.md §3) over a receding horizon, built from one function per family.

Network quantities are per unit on the network's base (`P`, `Q` flows at the sending end of the
branch feeding each non-slack bus; `L` the squared current through its impedance; `v` the
squared voltage magnitude); device quantities are kW. Every family exists for each step `t` of
the horizon (names end in `_t{t}`).

The model is split in two so that it can be kept and re-solved:

- `lp_numbers(net, inp, ops)` computes every number that may change from one interval to the
  next (bounds, right-hand sides, costs, the loss-cut block), as numpy arrays;
- `build(net, inp, ops)` creates the pulp model (variables, rows, objective) from those numbers.
  Its structure depends only on `structure_key(inp)` and the network.

Every row is written `Σ a·x (sense) rhs` with its variable terms on the left, and the loss cuts
and chords, whose coefficients move with the operating point, are the last rows; a persistent
solver (`optimizer.session`) pushes a new `LpNumbers` into the model it built once.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pulp

from optimizer.network import Network
from optimizer.powerflow import PowerFlowResult
from optimizer.tree import Tree, tree
from optimizer.units import BatteryUnit, DispatchInput, FlexibleLoad, PvUnit

__all__ = [
    "CUT_COLUMNS",
    "DispatchModel",
    "LpNumbers",
    "battery_bounds_kw",
    "build",
    "constraint_list",
    "cut_layout",
    "lp_numbers",
    "operating_injections",
    "pv_bounds_kw",
    "step_loads",
    "step_profiles",
    "structure_key",
]

FloatArray = npt.NDArray[np.float64]
ObjArray = npt.NDArray[np.object_]

LOOSE_KW = 1.0e9
"""Stands in for an absent feeder limit, so the rows exist whatever the input."""

N_GRID_CUTS = 11
"""Fixed loss cuts per branch, evenly spread over the branch's reachable active flow."""

N_Q_CUTS = 4
"""Extra cuts along the reactive flow, present when some PV unit dispatches reactive power."""

CHORD_MARGIN = 0.25
"""Relative widening of each branch's reachable flow range for the chord (losses aside)."""

PV_FACETS_DEG = (-75.0, -45.0, -15.0, 15.0, 45.0, 75.0)
"""Normals of the PV kVA polygon's facets (p ≥ 0 half of an inscribed 12-gon)."""

RATING_FACETS_DEG = tuple(15.0 + 30.0 * j for j in range(12))
"""Normals of a branch rating's facets (an inscribed 12-gon around the P–Q circle)."""

_COS15 = math.cos(math.radians(15.0))
_EQ, _LE, _GE = pulp.LpConstraintEQ, pulp.LpConstraintLE, pulp.LpConstraintGE
INF = math.inf


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


def structure_key(inp: DispatchInput) -> Hashable:
    """What the LP's structure (and its fixed coefficients) depends on besides the network."""
    return (
        inp.unit_set_key,
        inp.horizon,
        inp.interval_s,
        tuple((b.eta_charge, b.eta_discharge) for b in inp.batteries),
    )


# --------------------------------------------------------------------------- numbers


@dataclass(slots=True, kw_only=True)
class LpNumbers:
    """Every number of the LP that may change between intervals, by family.

    `col_lo`/`col_hi`/`cost` are keyed by column family, `rhs` by row family, each array shaped
    like the family. `cut_coef` (on `CUT_COLUMNS`) and `cut_rhs` describe the loss-cut block
    (per step and branch, rows laid out as `cut_layout`). `offset` is the objective's constant.
    """

    col_lo: dict[str, FloatArray]
    col_hi: dict[str, FloatArray]
    cost: dict[str, FloatArray]
    rhs: dict[str, FloatArray]
    cut_coef: FloatArray  # (T, N, rows per branch, len(CUT_COLUMNS))
    cut_rhs: FloatArray  # (T, N, rows per branch)
    offset: float
    w: FloatArray  # (T, N) the (V_parent/tap)² each step's cuts use


def _unit_positions(tr: Tree, units: Sequence[PvUnit | BatteryUnit | FlexibleLoad]) -> list[int]:
    return [tr.position(u.bus) for u in units]


def step_profiles(inp: DispatchInput) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per step: load ratio, PV availability ratio, price."""
    h = inp.horizon
    if inp.forecast is None:
        return np.ones(h), np.ones(h), np.full(h, inp.price_per_kwh)
    fc = inp.forecast
    return fc.steps("load", h, 1.0), fc.steps("pv", h, 1.0), fc.steps("price", h, inp.price_per_kwh)


def _net_loads(
    net: Network, inp: DispatchInput, load_ratio: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per step and position, the uncontrollable load (forecast applied) less the network's
    fixed generation, kW and kvar."""
    tr = tree(net)
    base = net.base_kw
    p = _bus_array(tr, inp.loads_kw)[None, :] * load_ratio[:, None] - base * tr.gen.real[None, :]
    q = _bus_array(tr, inp.loads_kvar)[None, :] * load_ratio[:, None] - base * tr.gen.imag[None, :]
    return p, q


def _bus_array(tr: Tree, values: Mapping[int, float]) -> FloatArray:
    out = np.zeros(len(tr.ids))
    for bus_id, value in values.items():
        k = tr.pos.get(bus_id)
        if k is not None:
            out[k] = value
    return out


def _device_columns(net: Network, inp: DispatchInput) -> dict[str, tuple[FloatArray, FloatArray]]:
    """Bounds of the device columns per step (kW), ramp limits applied at step 0."""
    h, dt_s = inp.horizon, inp.interval_s
    _, pv_ratio, _ = step_profiles(inp)
    pv_lo = np.zeros((h, len(inp.pv)))
    pv_hi = np.zeros((h, len(inp.pv)))
    for k, u in enumerate(inp.pv):
        pv_lo[0, k], pv_hi[0, k] = pv_bounds_kw(u, dt_s)
        pv_hi[1:, k] = np.minimum(u.available_kw * pv_ratio[1:], u.p_max_kw)
    reactive = [u for u in inp.pv if u.q_max_kvar > 0]
    q_max = np.array([min(u.q_max_kvar, u.rating_kva) for u in reactive])
    pvq = (np.tile(-q_max, (h, 1)), np.tile(q_max, (h, 1)))
    n_bat = len(inp.batteries)
    ch_hi = np.zeros((h, n_bat))
    dis_hi = np.zeros((h, n_bat))
    soc_lo = np.zeros((h, n_bat))
    soc_hi = np.zeros((h, n_bat))
    for k, b in enumerate(inp.batteries):
        lo, hi = battery_bounds_kw(b, dt_s)
        ch_hi[0, k], dis_hi[0, k] = max(-lo, 0.0), max(hi, 0.0)
        ch_hi[1:, k] = dis_hi[1:, k] = b.p_max_kw
        soc_lo[:, k] = min(b.soc_min_kwh, b.soc_kwh)
        soc_hi[:, k] = max(b.soc_max_kwh, b.soc_kwh)
    n_fl = len(inp.flexible_loads)
    fl_lo = np.zeros((h, n_fl))
    fl_hi = np.zeros((h, n_fl))
    for k, f in enumerate(inp.flexible_loads):
        fl_lo[:, k], fl_hi[:, k] = f.p_min_kw, f.p_nominal_kw
        fl_lo[0, k], fl_hi[0, k] = _ramp_window(
            f.last_setpoint_kw, f.ramp_kw_per_s, dt_s, f.p_min_kw, f.p_nominal_kw
        )
    zeros = np.zeros((h, n_bat))
    return {
        "pv": (pv_lo, pv_hi),
        "pvq": pvq,
        "pvqm": (np.zeros_like(pvq[1]), pvq[1].copy()),
        "ch": (zeros, ch_hi),
        "dis": (zeros.copy(), dis_hi),
        "soc": (soc_lo, soc_hi),
        "fl": (fl_lo, fl_hi),
    }


def _reach_pu(
    net: Network, inp: DispatchInput, dev: Mapping[str, tuple[FloatArray, FloatArray]]
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per step and branch (p.u.): the active flow range the devices can produce, losses aside,
    and the reactive load flow ± what reactive PV can add."""
    tr = tree(net)
    base = net.base_kw
    load_ratio, _, _ = step_profiles(inp)
    p_load, q_load = _net_loads(net, inp, load_ratio)
    low, high = p_load.copy(), p_load.copy()
    q_span = np.zeros_like(q_load)
    reactive = [u for u in inp.pv if u.q_max_kvar > 0]
    for arr, units, values, sign in (
        (low, inp.pv, dev["pv"][1], -1.0),
        (high, inp.pv, dev["pv"][0], -1.0),
        (q_span, reactive, dev["pvq"][1], 1.0),
        (low, inp.batteries, dev["dis"][1], -1.0),
        (high, inp.batteries, dev["ch"][1], 1.0),
        (low, inp.flexible_loads, dev["fl"][0], 1.0),
        (high, inp.flexible_loads, dev["fl"][1], 1.0),
    ):
        pos = np.array(_unit_positions(tr, units), dtype=np.intp)
        keep = pos >= 0
        if np.any(keep):
            np.add.at(arr.T, pos[keep], sign * values[:, keep].T)
    return (
        tr.subtree_sum(low) / base,
        tr.subtree_sum(high) / base,
        tr.subtree_sum(q_load) / base,
        tr.subtree_sum(q_span) / base,
    )


CUT_COLUMNS = ("L", "Lq", "P", "Q")
"""The columns a row of the loss-cut block may use, in the order of `cut_coef`'s last axis."""


def cut_layout(n_p_cuts: int, n_q_cuts: int) -> npt.NDArray[np.bool_]:
    """Which of `CUT_COLUMNS` each row of one branch's block uses: `n_p_cuts` active-flow
    cuts `(L, Lq, P)`, `n_q_cuts` reactive-flow cuts `(Lq, Q)`, then the chord `(L, P, Q)`."""
    return np.array(
        [[True, True, True, False]] * n_p_cuts
        + [[False, True, False, True]] * n_q_cuts
        + [[True, False, True, True]],
        dtype=bool,
    )


def _cut_block(
    net: Network,
    inp: DispatchInput,
    ops: Sequence[PowerFlowResult],
    dev: Mapping[str, tuple[FloatArray, FloatArray]],
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Coefficients on `CUT_COLUMNS` and right-hand sides of every branch's loss-cut block.

    The squared current is split, `L = (L − Lq) + Lq`, with `w·(L − Lq) >= P²` and
    `w·Lq >= Q²` (`w = (V_π/τ)²` at the operating point), each outer-approximated by its own
    tangents, which is exact for the separable sum `P² + Q²`:

    - at `P⁰`: `w·L − w·Lq − 2P⁰·P >= −P⁰²`, for the operating point, 0 and `N_GRID_CUTS`
      points over the reachable active flow;
    - at `Q⁰`: `w·Lq − 2Q⁰·Q >= −Q⁰²`, for the operating point, 0 and, when PV gives reactive
      power, `N_Q_CUTS` points over the reachable reactive flow;
    - the chord over the widened ranges, `w·L − (P_lo + P_hi)·P − (Q_lo + Q_hi)·Q <= −P_lo·P_hi
      − Q_lo·Q_hi`, so the LP cannot burn surplus power in fictitious losses.
    """
    tr = tree(net)
    base = net.base_kw
    h, n = inp.horizon, len(tr.ids)
    p0 = np.array([[op.branch_p_kw[b] for b in tr.ids] for op in ops]).reshape(h, n) / base
    q0 = np.array([[op.branch_q_kvar[b] for b in tr.ids] for op in ops]).reshape(h, n) / base
    v_par = np.array([[op.v_pu[net.parent[b]] for b in tr.ids] for op in ops], dtype=float).reshape(
        h, n
    )
    w = (v_par / tr.tap[None, :]) ** 2
    lo, hi, q_mid, q_span = _reach_pu(net, inp, dev)
    lo, hi = np.minimum(lo, p0), np.maximum(hi, p0)
    grid = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, N_GRID_CUTS)[None, None, :]
    cp = np.concatenate([p0[..., None], np.zeros((h, n, 1)), grid], axis=2)
    q_parts = [q0[..., None], np.zeros((h, n, 1))]
    q_lo = np.minimum(q_mid - q_span, q0)
    q_hi = np.maximum(q_mid + q_span, q0)
    if any(u.q_max_kvar > 0 for u in inp.pv):
        q_parts.append(q_lo[..., None] + (q_hi - q_lo)[..., None] * np.linspace(0.0, 1.0, N_Q_CUTS))
    cq = np.concatenate(q_parts, axis=2)
    n_p, n_q = cp.shape[2], cq.shape[2]
    coef = np.zeros((h, n, n_p + n_q + 1, 4))
    rhs = np.zeros((h, n, n_p + n_q + 1))
    coef[..., :n_p, 0] = w[..., None]
    coef[..., :n_p, 1] = -w[..., None]
    coef[..., :n_p, 2] = -2.0 * cp
    rhs[..., :n_p] = -(cp**2)
    coef[..., n_p : n_p + n_q, 1] = w[..., None]
    coef[..., n_p : n_p + n_q, 3] = -2.0 * cq
    rhs[..., n_p : n_p + n_q] = -(cq**2)
    margin = CHORD_MARGIN * np.maximum.reduce([np.abs(lo), np.abs(hi), np.abs(q_lo), np.abs(q_hi)])
    margin += 1e-4
    c_plo, c_phi = lo - margin, hi + margin
    c_qlo, c_qhi = q_lo - margin, q_hi + margin
    coef[..., -1, 0] = w
    coef[..., -1, 2] = -(c_plo + c_phi)
    coef[..., -1, 3] = -(c_qlo + c_qhi)
    rhs[..., -1] = -c_plo * c_phi - c_qlo * c_qhi
    return coef, rhs, w


def n_cut_rows(inp: DispatchInput) -> tuple[int, int]:
    """The number of active-flow and reactive-flow cuts per branch for `inp`'s structure."""
    return 2 + N_GRID_CUTS, 2 + (N_Q_CUTS if any(u.q_max_kvar > 0 for u in inp.pv) else 0)


def lp_numbers(net: Network, inp: DispatchInput, ops: Sequence[PowerFlowResult]) -> LpNumbers:
    """Every changing number of the LP for `inp`, with loss cuts at the operating points `ops`
    (one AC power flow per step)."""
    if len(ops) != inp.horizon:
        raise ValueError(f"need {inp.horizon} operating points, got {len(ops)}")
    tr = tree(net)
    base, dt_h, h = net.base_kw, inp.dt_h, inp.horizon
    costs = inp.costs
    load_ratio, _, price = step_profiles(inp)
    dev = _device_columns(net, inp)
    n = len(tr.ids)
    col_lo = {name: lo for name, (lo, _) in dev.items()}
    col_hi = {name: hi for name, (_, hi) in dev.items()}
    units: tuple[PvUnit | BatteryUnit | FlexibleLoad, ...] = (
        *inp.pv,
        *inp.batteries,
        *inp.flexible_loads,
    )
    up_hi = np.full((h, len(units)), INF)
    for k, u in enumerate(units):
        if u.ramp_kw_per_s is not None and h > 1:
            up_hi[1:, k] = u.ramp_kw_per_s * inp.interval_s
    dn_hi = up_hi.copy()
    dn_hi[:, : len(inp.pv)] = INF  # over the horizon PV follows the sun down
    col_lo["up"], col_hi["up"] = np.zeros_like(up_hi), up_hi
    col_lo["dn"], col_hi["dn"] = np.zeros_like(dn_hi), dn_hi
    for name in ("P", "Q"):
        col_lo[name], col_hi[name] = np.full((h, n), -INF), np.full((h, n), INF)
    for name in ("L", "Lq", "v"):
        col_lo[name], col_hi[name] = np.zeros((h, n)), np.full((h, n), INF)
    col_lo["imp"], col_hi["imp"] = np.full(h, -INF), np.full(h, INF)
    col_lo["impq"], col_hi["impq"] = np.full(h, -INF), np.full(h, INF)
    for name in ("s_imp", "s_exp", "s_vlo", "s_vhi", "s_rate"):
        col_lo[name], col_hi[name] = np.zeros(h), np.full(h, INF)

    # Costs (the whole objective is per step × dt, except the stored energy's value).
    value_end = (
        float(np.mean(price))
        if costs.battery_energy_value_per_kwh is None
        else costs.battery_energy_value_per_kwh
    )
    loss_weight = np.where(tr.r > 0, tr.r, 1e-3 * tr.x)
    chg = np.full((h, len(units)), costs.setpoint_change_per_kwh * dt_h)
    for k, u in enumerate(units):
        if u.last_setpoint_kw is None:
            chg[0, k] = 0.0
    n_bat = len(inp.batteries)
    shed = np.array(
        [
            costs.load_shed_per_kwh if f.shed_cost_per_kwh is None else f.shed_cost_per_kwh
            for f in inp.flexible_loads
        ],
        dtype=float,
    )
    soc_cost = np.zeros((h, n_bat))
    soc_cost[h - 1, :] = -value_end
    cost = {
        "pv": np.full((h, len(inp.pv)), -costs.curtailment_per_kwh * dt_h),
        "pvq": np.zeros((h, sum(1 for u in inp.pv if u.q_max_kvar > 0))),
        "pvqm": np.full(
            (h, sum(1 for u in inp.pv if u.q_max_kvar > 0)), costs.reactive_per_kvarh * dt_h
        ),
        "ch": np.full((h, n_bat), costs.battery_wear_per_kwh * dt_h),
        "dis": np.full((h, n_bat), costs.battery_wear_per_kwh * dt_h),
        "soc": soc_cost,
        "fl": np.tile(-shed * dt_h, (h, 1)),
        "up": chg,
        "dn": chg.copy(),
        "P": np.zeros((h, n)),
        "Q": np.zeros((h, n)),
        "L": np.tile(costs.loss_per_kwh * base * loss_weight * dt_h, (h, 1)),
        "Lq": np.zeros((h, n)),
        "v": np.zeros((h, n)),
        "imp": price * dt_h,
        "impq": np.zeros(h),
        "s_imp": np.full(h, costs.limit_slack_per_kwh * dt_h),
        "s_exp": np.full(h, costs.limit_slack_per_kwh * dt_h),
        "s_vlo": np.full(h, costs.voltage_slack_per_pu2_h * dt_h),
        "s_vhi": np.full(h, costs.voltage_slack_per_pu2_h * dt_h),
        "s_rate": np.full(h, costs.rating_slack_per_kvah * base * dt_h),
    }
    pv_upper = math.fsum(u.p_upper_kw for u in inp.pv) + float(np.sum(col_hi["pv"][1:]))
    offset = costs.curtailment_per_kwh * dt_h * pv_upper
    offset += dt_h * h * float(np.sum(shed * [f.p_nominal_kw for f in inp.flexible_loads]))
    offset += value_end * math.fsum(b.soc_kwh for b in inp.batteries)

    # Right-hand sides (the slack bus's shunt draws at the slack voltage, known).
    p_load, q_load = _net_loads(net, inp, load_ratio)
    v_slack2 = inp.slack_v(net) ** 2
    slack_p = inp.loads_kw.get(net.slack_bus, 0.0) * load_ratio + base * tr.y_slack.real * v_slack2
    slack_q = (
        inp.loads_kvar.get(net.slack_bus, 0.0) * load_ratio - base * tr.y_slack.imag * v_slack2
    )
    vdrop = np.zeros((h, n))
    at_root = tr.parent_pos < 0
    vdrop[:, at_root] = v_slack2 / tr.tap[at_root] ** 2
    band = np.array([inp.band(b) for b in tr.ids], dtype=float).reshape(n, 2)
    reactive = [u for u in inp.pv if u.q_max_kvar > 0]
    soc_rhs = np.zeros((h, n_bat))
    soc_rhs[0, :] = [b.soc_kwh for b in inp.batteries]
    bat_lo = np.array([battery_bounds_kw(b, inp.interval_s)[0] for b in inp.batteries])
    bat_hi = np.array([battery_bounds_kw(b, inp.interval_s)[1] for b in inp.batteries])
    chg_rhs = np.zeros((h, len(units)))
    chg_rhs[0, :] = [0.0 if u.last_setpoint_kw is None else u.last_setpoint_kw for u in units]
    rated = np.flatnonzero(~np.isnan(tr.rating_kva))
    rhs = {
        "pvpoly": np.tile(
            np.array([u.rating_kva * _COS15 for u in reactive])[:, None], (h, 1, len(PV_FACETS_DEG))
        ).reshape(h, len(reactive), len(PV_FACETS_DEG)),
        "pvqabs_up": np.zeros((h, len(reactive))),
        "pvqabs_dn": np.zeros((h, len(reactive))),
        "soc": soc_rhs,
        "batnet_lo": bat_lo,
        "batnet_hi": bat_hi,
        "chg": chg_rhs,
        "Pbal": p_load / base,
        "Qbal": q_load / base,
        "vdrop": vdrop,
        "vmin": np.tile(band[:, 0] ** 2, (h, 1)),
        "vmax": np.tile(band[:, 1] ** 2, (h, 1)),
        "rate": np.tile(
            (tr.rating_kva[rated] * _COS15 / base)[:, None], (h, 1, len(RATING_FACETS_DEG))
        ).reshape(h, len(rated), len(RATING_FACETS_DEG)),
        "impdef": slack_p,
        "impqdef": slack_q,
        "implim": np.full(h, LOOSE_KW if inp.import_limit_kw is None else inp.import_limit_kw),
        "explim": np.full(h, -(LOOSE_KW if inp.export_limit_kw is None else inp.export_limit_kw)),
    }
    cut_coef, cut_rhs, w = _cut_block(net, inp, ops, dev)
    return LpNumbers(
        col_lo=col_lo,
        col_hi=col_hi,
        cost=cost,
        rhs=rhs,
        cut_coef=cut_coef,
        cut_rhs=cut_rhs,
        offset=offset,
        w=w,
    )


# --------------------------------------------------------------------------- the pulp model


ROW_SENSE: dict[str, int] = {
    "pvpoly": _LE,
    "pvqabs_up": _GE,
    "pvqabs_dn": _GE,
    "soc": _EQ,
    "batnet_lo": _GE,
    "batnet_hi": _LE,
    "chg": _EQ,
    "Pbal": _EQ,
    "Qbal": _EQ,
    "vdrop": _EQ,
    "vmin": _GE,
    "vmax": _LE,
    "rate": _LE,
    "impdef": _EQ,
    "impqdef": _EQ,
    "implim": _LE,
    "explim": _GE,
}
"""The sense of each ordinary row family (the cut block: `cut` >=, `chord` <=)."""


@dataclass(slots=True)
class DispatchModel:
    """The pulp problem, its columns in creation order, and each family's variables and rows."""

    problem: pulp.LpProblem
    horizon: int
    columns: list[pulp.LpVariable] = field(default_factory=list)
    cols: dict[str, ObjArray] = field(default_factory=dict)
    rows: dict[str, ObjArray] = field(default_factory=dict)
    cut_rows: ObjArray = field(default_factory=lambda: np.empty((0,), dtype=object))
    cut_layout: npt.NDArray[np.bool_] = field(default_factory=lambda: cut_layout(0, 0))

    def family(self, name: str, shape: tuple[int, ...], num: LpNumbers) -> ObjArray:
        """Create the column family `name` with bounds from `num`."""
        lo, hi = num.col_lo[name], num.col_hi[name]
        out = np.empty(shape, dtype=object)
        for idx in np.ndindex(*shape):
            suffix = "_".join(str(i) for i in idx[1:])
            label = f"{name}_t{idx[0]}" + (f"_{suffix}" if suffix else "")
            low, up = float(lo[idx]), float(hi[idx])
            var = _variable(
                self.problem, label, None if low == -INF else low, None if up == INF else up
            )
            out[idx] = var
            self.columns.append(var)
        self.cols[name] = out
        return out

    def row(
        self,
        family: str,
        idx: tuple[int, ...],
        terms: Mapping[pulp.LpVariable, float],
        rhs: float,
        sense: int | None = None,
    ) -> str:
        """Add `Σ terms (sense) rhs` as row `family_t.._..` and return its name."""
        label = f"{family}_t{idx[0]}" + "".join(f"_{i}" for i in idx[1:])
        expr = pulp.LpAffineExpression(list(terms.items()))
        sense = ROW_SENSE[family] if sense is None else sense
        self.problem.addConstraint(pulp.LpConstraint(expr, sense, label, rhs))
        return label


def _variable(
    problem: pulp.LpProblem, name: str, low: float | None, up: float | None
) -> pulp.LpVariable:
    """A continuous variable attached to the problem (pulp 3.x API, with a pulp 2.x fallback)."""
    add = getattr(problem, "add_variable", None)
    if add is not None:
        return add(name, lowBound=low, upBound=up)
    return pulp.LpVariable(name, lowBound=low, upBound=up)


def constraint_list(problem: pulp.LpProblem) -> list[pulp.LpConstraint]:
    """The problem's rows in insertion order (pulp 3.x API, with a pulp 2.x fallback)."""
    rows = problem.constraints
    return list(rows()) if callable(rows) else list(rows.values())


def _terms(*pairs: tuple[pulp.LpVariable, float]) -> dict[pulp.LpVariable, float]:
    out: dict[pulp.LpVariable, float] = {}
    for var, coef in pairs:
        out[var] = out.get(var, 0.0) + coef
    return out


def _rows(model: DispatchModel, family: str, shape: tuple[int, ...]) -> ObjArray:
    out = np.empty(shape, dtype=object)
    model.rows[family] = out
    return out


def add_columns(model: DispatchModel, net: Network, inp: DispatchInput, num: LpNumbers) -> None:
    """Every variable, with its bounds:

    `pv` (kW, `0 <= p <= min(available, p_max)`, ramp-narrowed at step 0), `pvq` (kvar,
    `|q| <= q_max`), battery `ch`, `dis` (kW) and `soc` (kWh, `min(soc_min, soc) <= soc <=
    max(soc_max, soc)`), flexible load `fl` (kW), setpoint changes `up`, `dn` (kW, <= ramp·dt
    after step 0), flows `P`, `Q`, squared current `L >= 0`, squared voltage `v >= 0`, head
    import `imp` (kW), `impq` (kvar) and the slacks, all `>= 0`."""
    h, n = inp.horizon, len(tree(net).ids)
    n_units = len(inp.pv) + len(inp.batteries) + len(inp.flexible_loads)
    model.family("pv", (h, len(inp.pv)), num)
    model.family("pvq", (h, sum(1 for u in inp.pv if u.q_max_kvar > 0)), num)
    model.family("pvqm", (h, sum(1 for u in inp.pv if u.q_max_kvar > 0)), num)
    for name in ("ch", "dis", "soc"):
        model.family(name, (h, len(inp.batteries)), num)
    model.family("fl", (h, len(inp.flexible_loads)), num)
    model.family("up", (h, n_units), num)
    model.family("dn", (h, n_units), num)
    for name in ("P", "Q", "L", "Lq", "v"):
        model.family(name, (h, n), num)
    names = ["imp", "impq", "s_imp", "s_exp", "s_vlo", "s_vhi"]
    if np.any(~np.isnan(tree(net).rating_kva)):
        names.append("s_rate")
    for name in names:
        model.family(name, (h,), num)


def add_pv_polygon(model: DispatchModel, inp: DispatchInput, num: LpNumbers) -> None:
    """Reactive PV inside its kVA circle: `cos θ·p + sin θ·q <= S·cos 15°` for six facets."""
    reactive = [k for k, u in enumerate(inp.pv) if u.q_max_kvar > 0]
    rows = _rows(model, "pvpoly", (inp.horizon, len(reactive), len(PV_FACETS_DEG)))
    pv, pvq = model.cols["pv"], model.cols["pvq"]
    for idx in np.ndindex(*rows.shape):
        t, j, f = idx
        th = math.radians(PV_FACETS_DEG[f])
        rows[idx] = model.row(
            "pvpoly",
            idx,
            _terms((pv[t, reactive[j]], math.cos(th)), (pvq[t, j], math.sin(th))),
            float(num.rhs["pvpoly"][idx]),
        )


def add_reactive_magnitude(model: DispatchModel, inp: DispatchInput, num: LpNumbers) -> None:
    """The vars' magnitude, which the objective prices: `pvqm − pvq >= 0`, `pvqm + pvq >= 0`."""
    pvq, pvqm = model.cols["pvq"], model.cols["pvqm"]
    for family, sign in (("pvqabs_up", -1.0), ("pvqabs_dn", 1.0)):
        rows = _rows(model, family, pvq.shape)
        for idx in np.ndindex(*rows.shape):
            rows[idx] = model.row(
                family,
                idx,
                _terms((pvqm[idx], 1.0), (pvq[idx], sign)),
                float(num.rhs[family][idx]),
            )


def add_battery_state(model: DispatchModel, inp: DispatchInput, num: LpNumbers) -> None:
    """State of charge: `soc_t − soc_{t−1} + dis_t·dt/η_dis − ch_t·dt·η_ch = 0` (`soc_{−1}`
    the measured SOC, on the right), and at step 0 the net power window of p_max, SOC and ramp:
    `lo <= dis_0 − ch_0 <= hi`."""
    dt_h = inp.dt_h
    ch, dis, soc = model.cols["ch"], model.cols["dis"], model.cols["soc"]
    rows = _rows(model, "soc", (inp.horizon, len(inp.batteries)))
    for t, k in np.ndindex(*rows.shape):
        b = inp.batteries[k]
        pairs = [
            (soc[t, k], 1.0),
            (dis[t, k], dt_h / b.eta_discharge),
            (ch[t, k], -dt_h * b.eta_charge),
        ]
        if t > 0:
            pairs.append((soc[t - 1, k], -1.0))
        rows[t, k] = model.row("soc", (t, k), _terms(*pairs), float(num.rhs["soc"][t, k]))
    for name in ("batnet_lo", "batnet_hi"):
        rows = _rows(model, name, (len(inp.batteries),))
        for k in range(len(inp.batteries)):
            rows[k] = model.row(
                name, (0, k), _terms((dis[0, k], 1.0), (ch[0, k], -1.0)), float(num.rhs[name][k])
            )


def _unit_power(
    model: DispatchModel, inp: DispatchInput, t: int
) -> list[list[tuple[pulp.LpVariable, float]]]:
    """Each unit's setpoint at step t as (variable, coefficient) pairs: PV, batteries, loads."""
    out = [[(model.cols["pv"][t, k], 1.0)] for k in range(len(inp.pv))]
    out += [
        [(model.cols["dis"][t, k], 1.0), (model.cols["ch"][t, k], -1.0)]
        for k in range(len(inp.batteries))
    ]
    out += [[(model.cols["fl"][t, k], 1.0)] for k in range(len(inp.flexible_loads))]
    return out


def add_setpoint_change(model: DispatchModel, inp: DispatchInput, num: LpNumbers) -> None:
    """Anti-chatter and ramp: `p_t − p_{t−1} − up_t + dn_t = 0` with `p_{−1}` the last setpoint
    (0 if unknown, then unpriced) on the right; `up_t, dn_t <= ramp·dt` after step 0."""
    n_units = len(inp.pv) + len(inp.batteries) + len(inp.flexible_loads)
    rows = _rows(model, "chg", (inp.horizon, n_units))
    up, dn = model.cols["up"], model.cols["dn"]
    for t in range(inp.horizon):
        now = _unit_power(model, inp, t)
        before = _unit_power(model, inp, t - 1) if t > 0 else [[] for _ in now]
        for k in range(n_units):
            pairs = [*now[k], *((v, -c) for v, c in before[k]), (up[t, k], -1.0), (dn[t, k], 1.0)]
            rows[t, k] = model.row("chg", (t, k), _terms(*pairs), float(num.rhs["chg"][t, k]))


def _injections(
    model: DispatchModel, net: Network, inp: DispatchInput, t: int
) -> tuple[
    dict[int, list[tuple[pulp.LpVariable, float]]], dict[int, list[tuple[pulp.LpVariable, float]]]
]:
    """Device generation per bus position at step t (kW; −1 the slack bus): active, reactive."""
    tr = tree(net)
    p: dict[int, list[tuple[pulp.LpVariable, float]]] = {}
    q: dict[int, list[tuple[pulp.LpVariable, float]]] = {}
    reactive = [k for k, u in enumerate(inp.pv) if u.q_max_kvar > 0]
    for k, u in enumerate(inp.pv):
        p.setdefault(tr.position(u.bus), []).append((model.cols["pv"][t, k], 1.0))
    for j, k in enumerate(reactive):
        q.setdefault(tr.position(inp.pv[k].bus), []).append((model.cols["pvq"][t, j], 1.0))
    for k, b in enumerate(inp.batteries):
        p.setdefault(tr.position(b.bus), []).extend(
            [(model.cols["dis"][t, k], 1.0), (model.cols["ch"][t, k], -1.0)]
        )
    for k, f in enumerate(inp.flexible_loads):
        p.setdefault(tr.position(f.bus), []).append((model.cols["fl"][t, k], -1.0))
        if f.q_per_kw:
            q.setdefault(tr.position(f.bus), []).append((model.cols["fl"][t, k], -f.q_per_kw))
    return p, q


def add_flow_balance(
    model: DispatchModel, net: Network, inp: DispatchInput, num: LpNumbers
) -> None:
    """LinDistFlow balance at every non-slack bus i, with `L_i` the squared branch current and
    `y_i = g_i + j b_i` the bus's shunt admittance (its own shunt and its branches' charging,
    which draw `(g_i − j b_i)·v_i`: exact, linear in the squared voltage `v_i`):

    `P_i − Σ_{c∈children(i)} P_c − r_i·L_i − g_i·v_i + p_gen_i/base = p_load_i/base`,
    `Q_i − Σ_{c∈children(i)} Q_c − x_i·L_i + b_i·v_i + q_gen_i/base = q_load_i/base`."""
    tr = tree(net)
    base = net.base_kw
    h, n = inp.horizon, len(tr.ids)
    children: list[list[int]] = [[] for _ in range(n)]
    for k, p in enumerate(tr.parent_pos):
        if p >= 0:
            children[p].append(k)
    pbal, qbal = _rows(model, "Pbal", (h, n)), _rows(model, "Qbal", (h, n))
    P, Q, L, V = model.cols["P"], model.cols["Q"], model.cols["L"], model.cols["v"]
    g, b = tr.y.real, tr.y.imag
    for t in range(h):
        gen_p, gen_q = _injections(model, net, inp, t)
        for k in range(n):
            pairs = [(P[t, k], 1.0), (L[t, k], -tr.r[k])]
            pairs += [(P[t, c], -1.0) for c in children[k]]
            pairs += [(v, c / base) for v, c in gen_p.get(k, [])]
            if g[k]:
                pairs.append((V[t, k], -float(g[k])))
            pbal[t, k] = model.row("Pbal", (t, k), _terms(*pairs), float(num.rhs["Pbal"][t, k]))
            pairs = [(Q[t, k], 1.0), (L[t, k], -tr.x[k])]
            pairs += [(Q[t, c], -1.0) for c in children[k]]
            pairs += [(v, c / base) for v, c in gen_q.get(k, [])]
            if b[k]:
                pairs.append((V[t, k], float(b[k])))
            qbal[t, k] = model.row("Qbal", (t, k), _terms(*pairs), float(num.rhs["Qbal"][t, k]))


def add_voltage_drop(
    model: DispatchModel, net: Network, inp: DispatchInput, num: LpNumbers
) -> None:
    """Voltage along each branch (DistFlow with the loss term kept, `τ` the tap ratio):

    `v_i − v_π(i)/τ_i² + 2 (r_i P_i + x_i Q_i) − (r_i² + x_i²) L_i = 0`, with `v_slack²/τ_i²`
    on the right for the slack's children."""
    tr = tree(net)
    rows = _rows(model, "vdrop", (inp.horizon, len(tr.ids)))
    P, Q, L, v = model.cols["P"], model.cols["Q"], model.cols["L"], model.cols["v"]
    for t, k in np.ndindex(*rows.shape):
        pairs: list[tuple[pulp.LpVariable, float]] = [
            (v[t, k], 1.0),
            (P[t, k], 2.0 * float(tr.r[k])),
            (Q[t, k], 2.0 * float(tr.x[k])),
            (L[t, k], -float(tr.r[k] ** 2 + tr.x[k] ** 2)),
        ]
        if tr.parent_pos[k] >= 0:
            pairs.append((v[t, tr.parent_pos[k]], -1.0 / float(tr.tap[k]) ** 2))
        rows[t, k] = model.row("vdrop", (t, k), _terms(*pairs), float(num.rhs["vdrop"][t, k]))


def add_voltage_band(
    model: DispatchModel, net: Network, inp: DispatchInput, num: LpNumbers
) -> None:
    """Soft voltage band: `v_i + s_low >= v_min²`, `v_i − s_high <= v_max²`, slacks >= 0."""
    n = len(tree(net).ids)
    lo_rows, hi_rows = (
        _rows(model, "vmin", (inp.horizon, n)),
        _rows(model, "vmax", (inp.horizon, n)),
    )
    v, s_lo, s_hi = model.cols["v"], model.cols["s_vlo"], model.cols["s_vhi"]
    for t, k in np.ndindex(inp.horizon, n):
        lo_rows[t, k] = model.row(
            "vmin", (t, k), _terms((v[t, k], 1.0), (s_lo[t], 1.0)), float(num.rhs["vmin"][t, k])
        )
        hi_rows[t, k] = model.row(
            "vmax", (t, k), _terms((v[t, k], 1.0), (s_hi[t], -1.0)), float(num.rhs["vmax"][t, k])
        )


def add_branch_ratings(
    model: DispatchModel, net: Network, inp: DispatchInput, num: LpNumbers
) -> None:
    """Soft thermal rating of each rated branch, a 12-gon inside the P–Q circle of radius S:
    `cos θ·P + sin θ·Q − s_rate <= S·cos 15°/base`, `s_rate >= 0` (p.u.)."""
    tr = tree(net)
    rated = np.flatnonzero(~np.isnan(tr.rating_kva))
    rows = _rows(model, "rate", (inp.horizon, len(rated), len(RATING_FACETS_DEG)))
    if not len(rated):
        return
    P, Q, s = model.cols["P"], model.cols["Q"], model.cols["s_rate"]
    for t, j, f in np.ndindex(*rows.shape):
        th, k = math.radians(RATING_FACETS_DEG[f]), int(rated[j])
        rows[t, j, f] = model.row(
            "rate",
            (t, j, f),
            _terms((P[t, k], math.cos(th)), (Q[t, k], math.sin(th)), (s[t], -1.0)),
            float(num.rhs["rate"][t, j, f]),
        )


def add_feeder_limits(
    model: DispatchModel, net: Network, inp: DispatchInput, num: LpNumbers
) -> None:
    """Feeder head import (signed) and its soft limits, `s_imp, s_exp >= 0`:

    `imp − base·Σ_{c∈children(slack)} P_c + p_gen_slack = p_load_slack + p_shunt_slack`
    (likewise `impq`; the slack bus's shunt and its branches' charging draw at the known slack
    voltage),
    `imp − s_imp <= L`, `imp + s_exp >= −E`."""
    tr = tree(net)
    base = net.base_kw
    kids = [k for k in range(len(tr.ids)) if tr.parent_pos[k] < 0]
    for name in ("impdef", "impqdef", "implim", "explim"):
        _rows(model, name, (inp.horizon,))
    c = model.cols
    for t in range(inp.horizon):
        gen_p, gen_q = _injections(model, net, inp, t)
        pairs = [(c["imp"][t], 1.0), *((c["P"][t, k], -base) for k in kids), *gen_p.get(-1, [])]
        model.rows["impdef"][t] = model.row("impdef", (t,), _terms(*pairs), num.rhs["impdef"][t])
        pairs = [(c["impq"][t], 1.0), *((c["Q"][t, k], -base) for k in kids), *gen_q.get(-1, [])]
        model.rows["impqdef"][t] = model.row("impqdef", (t,), _terms(*pairs), num.rhs["impqdef"][t])
        model.rows["implim"][t] = model.row(
            "implim", (t,), _terms((c["imp"][t], 1.0), (c["s_imp"][t], -1.0)), num.rhs["implim"][t]
        )
        model.rows["explim"][t] = model.row(
            "explim", (t,), _terms((c["imp"][t], 1.0), (c["s_exp"][t], 1.0)), num.rhs["explim"][t]
        )


def add_loss_cuts(model: DispatchModel, net: Network, inp: DispatchInput, num: LpNumbers) -> None:
    """The loss-cut block, last: per step and branch the cuts (>=) and the chord (<=) of
    `lp_numbers`'s `cut_coef`/`cut_rhs` (see `_cut_block`). Tight at the optimum because
    losses carry cost; re-linearised at every interval's operating point."""
    layout = cut_layout(*n_cut_rows(inp))
    model.cut_layout = layout
    rows = np.empty(num.cut_rhs.shape, dtype=object)
    cols = [model.cols[name] for name in CUT_COLUMNS]
    last = layout.shape[0] - 1
    for t, k, j in np.ndindex(*rows.shape):
        family, sense = ("chord", _LE) if j == last else ("cut", _GE)
        pairs = [
            (cols[c][t, k], float(num.cut_coef[t, k, j, c]))
            for c in range(len(CUT_COLUMNS))
            if layout[j, c]
        ]
        rows[t, k, j] = model.row(
            family, (t, k, j), _terms(*pairs), float(num.cut_rhs[t, k, j]), sense
        )
    model.cut_rows = rows


def add_objective(model: DispatchModel, num: LpNumbers) -> None:
    """Cost over the horizon, each step × dt: `price·imp + c_curt·Σ(p_upper − p_pv) +
    c_loss·base·Σ r_i L_i + c_wear·Σ(ch + dis) + c_chg·Σ(up + dn) + c_shed·Σ(p_nom − p_fl) +
    c_slack·(s_imp + s_exp) + c_v·(s_low + s_high) + c_rate·s_rate + c_q·Σ|q_pv|`, minus the
    value of the energy left in storage, `value·(soc_end − soc_now)` (value: the mean price
    unless set).
    A branch without resistance has its current priced as if `r = 10⁻³·x`."""
    pairs: list[tuple[pulp.LpVariable, float]] = []
    for name, variables in model.cols.items():
        weights = num.cost[name]
        for idx in np.ndindex(*variables.shape):
            weight = float(weights[idx])
            if weight != 0.0:
                pairs.append((variables[idx], weight))
    model.problem += pulp.LpAffineExpression(pairs, constant=num.offset)


def build(net: Network, inp: DispatchInput, ops: Sequence[PowerFlowResult]) -> DispatchModel:
    """The whole LP for `inp`, linearised at the operating points `ops` (one per step)."""
    num = lp_numbers(net, inp, ops)
    model = DispatchModel(
        problem=pulp.LpProblem("feederd_dispatch", pulp.LpMinimize), horizon=inp.horizon
    )
    add_columns(model, net, inp, num)
    add_pv_polygon(model, inp, num)
    add_reactive_magnitude(model, inp, num)
    add_battery_state(model, inp, num)
    add_setpoint_change(model, inp, num)
    add_flow_balance(model, net, inp, num)
    add_voltage_drop(model, net, inp, num)
    add_voltage_band(model, net, inp, num)
    add_branch_ratings(model, net, inp, num)
    add_feeder_limits(model, net, inp, num)
    add_loss_cuts(model, net, inp, num)
    add_objective(model, num)
    return model


def step_loads(
    net: Network, inp: DispatchInput, step: int
) -> tuple[dict[int, float], dict[int, float]]:
    """The uncontrollable load per bus (kW, kvar) at `step`, forecast applied."""
    load_ratio, _, _ = step_profiles(inp)
    lr = float(load_ratio[step])
    return (
        {b: inp.loads_kw.get(b, 0.0) * lr for b in net.order},
        {b: inp.loads_kvar.get(b, 0.0) * lr for b in net.order},
    )


def operating_injections(
    net: Network, inp: DispatchInput, step: int = 0
) -> tuple[dict[int, float], dict[int, float]]:
    """Net load per bus (kW, kvar) at `step`: loads (scaled by the forecast) minus each unit's
    last setpoint, or for PV without one its available power (a battery without one is taken
    as idle, a flexible load without one at its nominal power)."""
    _, pv_ratio, _ = step_profiles(inp)
    pr = float(pv_ratio[step])
    p, q = step_loads(net, inp, step)
    for u in inp.pv:
        upper = min(u.available_kw * pr, u.p_max_kw)
        last = u.last_setpoint_kw
        p[u.bus] -= min(upper, last) if last is not None else upper
    for b in inp.batteries:
        p[b.bus] -= b.last_setpoint_kw or 0.0
    for f in inp.flexible_loads:
        now = f.p_nominal_kw if f.last_setpoint_kw is None else f.last_setpoint_kw
        p[f.bus] += now
        q[f.bus] += now * f.q_per_kw
    return p, q
