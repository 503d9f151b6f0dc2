"""The dispatch LP (DESIGN.md §3) over a receding horizon, built from arrays, one function per
family.

Network quantities are per unit on the network's base (`P`, `Q` flows at the sending end of the
branch feeding each non-slack bus; `L` the squared current through its impedance; `v` the
squared voltage magnitude); device quantities are kW.

**Network steps and the tail.** The first `K = DispatchInput.n_network_steps` steps carry the
full network: LinDistFlow balance and voltage drop at every bus, loss cuts on every branch,
every bus's voltage band and the branch ratings. The later steps (the "tail") carry the
devices (PV, batteries with their state of charge, flexible loads) and a reduced network,
linearised at each step's operating point (`optimizer.operating`: the forecast with the units
where the last plan put them, or at their last setpoints, all steps solved in one batched AC
sweep, not one power flow per step):

- head import `imp_t = imp⁰_t − Σ_u (1 + λ_u,t)·(g_u − g⁰_u) − Σ_u λq_u,t·(gq_u − gq⁰_u)`,
  with `g`/`gq` a unit's active/reactive injection and `λ_u,t = Σ_{b∈path(u)} 2·r_b·P_b/w_b`
  the marginal loss factor of its bus (`λq` with `Q_b`), `w_b` the squared sending-end
  voltage;
- losses, priced as in the network steps, `loss⁰_t − Σ_u λ_u,t·(g_u − g⁰_u) − ...`;
- the squared voltage of `WATCHED` buses (the lowest and the highest at the operating points,
  then the feeder's ends with the lowest and highest voltages),
  `v_w,t ≈ v⁰_w,t + Σ_u s_wu·(g_u − g⁰_u) + Σ_u sq_wu·(gq_u − gq⁰_u)` with
  `s_wu = 2·R_common(w,u)/base` (`sq` with the reactance), the resistance of the path the two
  buses share (taps taken as 1), held in their band with the step's voltage slacks, widened
  either way by what the reactive inverters' headroom at their planned active power can move
  it (`_reactive_credit`: the tail plans no vars, but the step that comes will have them);
- no branch ratings, the PV inverters at unity power factor, and no ramp limits or
  anti-chatter price (over steps of many minutes a ramp does not bind; the plan is not
  applied).

The tail is exact to first order around the operating point. Its error is the curvature it
drops, `Σ r·ΔP²/v²` over the paths of what the plan moves: a few kW for 1000 kW moved near the
head of the 33-bus feeder, over 100 kW at its far end, until the next interval linearises
around the plan (then a few kW again). It sees voltage only at the buses it watches. It plans;
step 0, which is applied, is always a network step.

**Arrays, not objects.** `layout(net, inp)` numbers every column and row family; the matrix
of fixed coefficients is assembled once per structure from numpy index arrays
(`build`), and `lp_numbers(net, inp, ops)` computes every number that may change between
intervals: bounds, costs, right-hand sides, and the "moving block" (the loss cuts, the tail's
import and watched-voltage rows), whose coefficients move with the operating points and which
are the last rows of the model. A persistent solver (`optimizer.session`) pushes a new
`LpNumbers` into the model it built once. `optimizer.lp_pulp` gives the same LP as a pulp
problem for CBC and MPS export.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from optimizer.network import Network
from optimizer.operating import OperatingPoints
from optimizer.profiles import profiles
from optimizer.tree import Tree, tree
from optimizer.units import BatteryUnit, DispatchInput, FlexibleLoad, PvUnit

__all__ = [
    "CUT_COLUMNS",
    "DispatchModel",
    "Layout",
    "LpNumbers",
    "battery_bounds_kw",
    "build",
    "cut_layout",
    "layout",
    "lp_numbers",
    "pv_bounds_kw",
    "structure_key",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
Triplets = tuple[npt.NDArray[np.integer[Any]], npt.NDArray[np.integer[Any]], FloatArray]
"""(row, column, value) of some matrix entries."""

LOOSE_KW = 1.0e9
"""Stands in for an absent feeder limit, so the rows exist whatever the input."""

N_GRID_CUTS = 11
"""Fixed loss cuts per branch, evenly spread over the branch's reachable active flow."""

N_Q_CUTS = 4
"""Extra cuts along the reactive flow, present when some PV unit dispatches reactive power."""

CHORD_MARGIN = 0.25
"""Relative widening of each branch's reachable flow range for the chord (losses aside)."""

WATCHED = 6
"""Buses whose voltage the tail holds in the band (`watched_buses`; fewer on a smaller
feeder)."""

PV_FACETS_DEG = (-75.0, -45.0, -15.0, 15.0, 45.0, 75.0)
"""Normals of the PV kVA polygon's facets (p ≥ 0 half of an inscribed 12-gon)."""

RATING_FACETS_DEG = tuple(15.0 + 30.0 * j for j in range(12))
"""Normals of a branch rating's facets (an inscribed 12-gon around the P–Q circle)."""

_COS15 = math.cos(math.radians(15.0))
EQ, LE, GE = 0, -1, 1
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
        inp.step_durations_s,
        inp.n_network_steps,
        tuple((b.eta_charge, b.eta_discharge) for b in inp.batteries),
    )


# --------------------------------------------------------------------------- layout

ROW_SENSE: dict[str, int] = {
    "pvpoly": LE,
    "pvqabs_up": GE,
    "pvqabs_dn": GE,
    "soc": EQ,
    "batnet_lo": GE,
    "batnet_hi": LE,
    "chg": EQ,
    "Pbal": EQ,
    "Qbal": EQ,
    "vdrop": EQ,
    "vmin": GE,
    "vmax": LE,
    "rate": LE,
    "impdef": EQ,
    "impqdef": EQ,
    "expdef": GE,
    "implim": LE,
    "explim": GE,
}
"""The sense of each fixed row family, in the order the rows are laid out."""

CUT_COLUMNS = ("L", "Lq", "P", "Q")
"""The columns a row of the loss-cut block may use, in the order of `cut_coef`'s last axis."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Where every family sits: `cols[name]`/`rows[name]` hold the global index of each
    column/row, shaped like the family. The fixed rows come first, then the moving block:
    the loss cuts (`cut_shape`: network step × branch × row), the tail's import rows and its
    watched-voltage rows (`vmin`, then `vmax`, each tail step × watched bus)."""

    horizon: int
    network_steps: int
    n_col: int
    n_fixed: int
    n_moving: int
    cols: dict[str, IntArray]
    rows: dict[str, IntArray]
    cut_shape: tuple[int, int, int]
    n_watched: int
    rated: IntArray

    @property
    def n_row(self) -> int:
        """Every row, fixed and moving."""
        return self.n_fixed + self.n_moving


def _reactive(inp: DispatchInput) -> list[int]:
    return [k for k, u in enumerate(inp.pv) if u.q_max_kvar > 0]


def n_cut_rows(inp: DispatchInput) -> tuple[int, int]:
    """The number of active-flow and reactive-flow cuts per branch for `inp`'s structure."""
    return 2 + N_GRID_CUTS, 2 + (N_Q_CUTS if _reactive(inp) else 0)


_LAYOUTS: dict[tuple[int, Hashable], tuple[Network, Layout]] = {}


def layout(net: Network, inp: DispatchInput) -> Layout:
    """The families of `inp`'s LP on `net` (cached per network and structure)."""
    key = (id(net), structure_key(inp))
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is net:
        return hit[1]
    out = _layout(net, inp)
    if len(_LAYOUTS) >= 8:
        _LAYOUTS.pop(next(iter(_LAYOUTS)))
    _LAYOUTS[key] = (net, out)
    return out


def _layout(net: Network, inp: DispatchInput) -> Layout:
    tr = tree(net)
    t_all, k_net, n = inp.horizon, inp.n_network_steps, len(tr.ids)
    n_pv, n_q = len(inp.pv), len(_reactive(inp))
    n_bat, n_fl = len(inp.batteries), len(inp.flexible_loads)
    n_units = n_pv + n_bat + n_fl
    rated = np.flatnonzero(~np.isnan(tr.rating_kva)).astype(np.int32)
    col_shapes: dict[str, tuple[int, ...]] = {
        "pv": (t_all, n_pv),
        "pvq": (k_net, n_q),
        "pvqm": (k_net, n_q),
        "ch": (t_all, n_bat),
        "dis": (t_all, n_bat),
        "soc": (t_all, n_bat),
        "fl": (t_all, n_fl),
        "up": (k_net, n_units),
        "dn": (k_net, n_units),
        "P": (k_net, n),
        "Q": (k_net, n),
        "L": (k_net, n),
        "Lq": (k_net, n),
        "v": (k_net, n),
        "imp": (t_all,),
        "impq": (k_net,),
        "expo": (t_all,),
        "s_imp": (t_all,),
        "s_exp": (t_all,),
        "s_vlo": (t_all,),
        "s_vhi": (t_all,),
    }
    if len(rated):
        col_shapes["s_rate"] = (k_net,)
    row_shapes: dict[str, tuple[int, ...]] = {
        "pvpoly": (k_net, n_q, len(PV_FACETS_DEG)),
        "pvqabs_up": (k_net, n_q),
        "pvqabs_dn": (k_net, n_q),
        "soc": (t_all, n_bat),
        "batnet_lo": (n_bat,),
        "batnet_hi": (n_bat,),
        "chg": (k_net, n_units),
        "Pbal": (k_net, n),
        "Qbal": (k_net, n),
        "vdrop": (k_net, n),
        "vmin": (k_net, n),
        "vmax": (k_net, n),
        "rate": (k_net, len(rated), len(RATING_FACETS_DEG)),
        "impdef": (k_net,),
        "impqdef": (k_net,),
        "expdef": (t_all,),
        "implim": (t_all,),
        "explim": (t_all,),
    }
    n_watched = min(WATCHED, n)
    tail = t_all - k_net
    cut_shape = (k_net, n, sum(n_cut_rows(inp)) + 1)
    moving_shapes = {
        "cut": cut_shape,
        "tailimp": (tail,),
        "tailvmin": (tail, n_watched),
        "tailvmax": (tail, n_watched),
    }
    cols, at = {}, 0
    for name, shape in col_shapes.items():
        size = math.prod(shape)
        cols[name] = np.arange(at, at + size, dtype=np.int32).reshape(shape)
        at += size
    n_col = at
    rows, at = {}, 0
    for name, shape in (*row_shapes.items(), *moving_shapes.items()):
        size = math.prod(shape)
        rows[name] = np.arange(at, at + size, dtype=np.int32).reshape(shape)
        at += size
    n_moving = sum(math.prod(s) for s in moving_shapes.values())
    return Layout(
        horizon=t_all,
        network_steps=k_net,
        n_col=n_col,
        n_fixed=at - n_moving,
        n_moving=n_moving,
        cols=cols,
        rows=rows,
        cut_shape=cut_shape,
        n_watched=n_watched,
        rated=rated,
    )


# --------------------------------------------------------------------------- numbers


@dataclass(slots=True, kw_only=True)
class LpNumbers:
    """Every number of the LP that may change between intervals, by family.

    `col_lo`/`col_hi`/`cost` are keyed by column family, `rhs` by fixed row family, each array
    shaped like the family. The moving block is given whole, in CSR form over the global
    columns (`mov_start`, `mov_index`, `mov_value`) with its row bounds `mov_lo`/`mov_hi`.
    `offset` is the objective's constant. `cut_coef`/`cut_rhs` (the loss cuts on
    `CUT_COLUMNS`, see `_cut_block`) and `w` are kept for inspection."""

    col_lo: dict[str, FloatArray]
    col_hi: dict[str, FloatArray]
    cost: dict[str, FloatArray]
    rhs: dict[str, FloatArray]
    mov_lo: FloatArray
    mov_hi: FloatArray
    mov_start: IntArray
    mov_index: IntArray
    mov_value: FloatArray
    offset: float
    cut_coef: FloatArray
    cut_rhs: FloatArray
    w: FloatArray
    watched: tuple[int, ...] = ()


def _positions(tr: Tree, buses: Sequence[int]) -> npt.NDArray[np.intp]:
    return np.array([tr.position(b) for b in buses], dtype=np.intp)


def _device_columns(net: Network, inp: DispatchInput) -> dict[str, tuple[FloatArray, FloatArray]]:
    """Bounds of the device columns per step (kW), ramp limits applied at step 0."""
    h, k_net, dt_s = inp.horizon, inp.n_network_steps, inp.interval_s
    prof = profiles(net, inp)
    pv_lo = np.zeros((h, len(inp.pv)))
    pv_hi = prof.pv_upper.copy()
    for k, u in enumerate(inp.pv):
        pv_lo[0, k], pv_hi[0, k] = pv_bounds_kw(u, dt_s)
    q_max = np.array([min(u.q_max_kvar, u.rating_kva) for u in inp.pv if u.q_max_kvar > 0])
    pvq = (np.tile(-q_max, (k_net, 1)), np.tile(q_max, (k_net, 1)))
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


def _net_loads(net: Network, inp: DispatchInput) -> tuple[FloatArray, FloatArray]:
    """Per step and position, the uncontrollable load (forecast applied) less the network's
    fixed generation, kW and kvar."""
    tr = tree(net)
    base = net.base_kw
    prof = profiles(net, inp)
    p = prof.p_load[:, 1:] - base * tr.gen.real[None, :]
    q = prof.q_load[:, 1:] - base * tr.gen.imag[None, :]
    return p, q


def _reach_pu(
    net: Network, inp: DispatchInput, dev: Mapping[str, tuple[FloatArray, FloatArray]]
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per network step and branch (p.u.): the active flow range the devices can produce,
    losses aside, and the reactive load flow ± what reactive PV can add."""
    tr = tree(net)
    base, k_net = net.base_kw, inp.n_network_steps
    p_load, q_load = (a[:k_net] for a in _net_loads(net, inp))
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
        pos = _positions(tr, [u.bus for u in units])
        keep = pos >= 0
        if np.any(keep):
            np.add.at(arr.T, pos[keep], sign * values[:k_net, keep].T)
    return (
        tr.subtree_sum(low) / base,
        tr.subtree_sum(high) / base,
        tr.subtree_sum(q_load) / base,
        tr.subtree_sum(q_span) / base,
    )


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
    ops: OperatingPoints,
    dev: Mapping[str, tuple[FloatArray, FloatArray]],
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Coefficients on `CUT_COLUMNS` and right-hand sides of every branch's loss-cut block, for
    the network steps.

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
    k_net = inp.n_network_steps
    p0, q0, w = ops.p_pu[:k_net], ops.q_pu[:k_net], ops.w[:k_net]
    h, n = p0.shape
    lo, hi, q_mid, q_span = _reach_pu(net, inp, dev)
    lo, hi = np.minimum(lo, p0), np.maximum(hi, p0)
    grid = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, N_GRID_CUTS)[None, None, :]
    cp = np.concatenate([p0[..., None], np.zeros((h, n, 1)), grid], axis=2)
    q_parts = [q0[..., None], np.zeros((h, n, 1))]
    q_lo = np.minimum(q_mid - q_span, q0)
    q_hi = np.maximum(q_mid + q_span, q0)
    if _reactive(inp):
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


@dataclass(frozen=True, slots=True, kw_only=True)
class _UnitColumns:
    """Every device column of the tail steps that moves power, flattened: its family index
    array per step (`cols`, tail steps × columns), tree position (−1: the slack bus), active
    and reactive injection per unit of the column (`a`, `b`), and its value at the operating
    point (`x0`, tail steps × columns)."""

    cols: IntArray
    pos: npt.NDArray[np.intp]
    a: FloatArray
    b: FloatArray
    x0: FloatArray


def _tail_columns(
    net: Network, inp: DispatchInput, lay: Layout, ops: OperatingPoints
) -> _UnitColumns:
    tr = tree(net)
    k_net = lay.network_steps
    c = lay.cols
    bat0 = ops.units.bat[k_net:]
    parts = [
        (c["pv"][k_net:], [u.bus for u in inp.pv], 1.0, 0.0, ops.units.pv[k_net:]),
        (c["dis"][k_net:], [b.bus for b in inp.batteries], 1.0, 0.0, np.maximum(bat0, 0.0)),
        (c["ch"][k_net:], [b.bus for b in inp.batteries], -1.0, 0.0, np.maximum(-bat0, 0.0)),
    ]
    q_per_kw = np.array([f.q_per_kw for f in inp.flexible_loads], dtype=float)
    fl_cols = c["fl"][k_net:]
    fl_bus = [f.bus for f in inp.flexible_loads]
    cols = [p[0] for p in parts] + [fl_cols]
    pos = [_positions(tr, p[1]) for p in parts] + [_positions(tr, fl_bus)]
    a = [np.full(len(p[1]), p[2]) for p in parts] + [np.full(len(fl_bus), -1.0)]
    b = [np.zeros(len(p[1])) for p in parts] + [-q_per_kw]
    x0 = [p[4] for p in parts] + [ops.units.fl[k_net:]]
    return _UnitColumns(
        cols=np.concatenate(cols, axis=1).astype(np.int32),
        pos=np.concatenate(pos),
        a=np.concatenate(a),
        b=np.concatenate(b),
        x0=np.concatenate(x0, axis=1),
    )


def watched_buses(net: Network, ops: OperatingPoints, steps: slice) -> npt.NDArray[np.intp]:
    """The tree positions the tail watches: the lowest and the highest voltage over `steps`
    of the operating points, then the ends of the feeder (leaves) with the lowest and the
    highest voltages, alternately, so that each lateral's far end is watched before a second
    bus of the same lateral (a feeder's voltage is most extreme at its ends)."""
    tr = tree(net)
    n = len(tr.ids)
    n_watched = min(WATCHED, n)
    v = ops.v_pu[steps]
    low, high = v.min(axis=0), v.max(axis=0)
    is_leaf = np.ones(n, dtype=bool)
    is_leaf[tr.parent_pos[tr.parent_pos >= 0]] = False
    leaves = np.flatnonzero(is_leaf)
    low_leaves = leaves[np.argsort(low[leaves], kind="stable")]
    high_leaves = leaves[np.argsort(-high[leaves], kind="stable")]
    ends = [int(k) for pair in zip(low_leaves, high_leaves, strict=True) for k in pair]
    out: list[int] = []
    for k in (int(np.argmin(low)), int(np.argmax(high)), *ends, *np.argsort(low, kind="stable")):
        if int(k) not in out:
            out.append(int(k))
        if len(out) == n_watched:
            break
    return np.array(out, dtype=np.intp)


def lp_numbers(net: Network, inp: DispatchInput, ops: OperatingPoints) -> LpNumbers:
    """Every changing number of the LP for `inp`, linearised at the operating points `ops`."""
    if ops.horizon != inp.horizon:
        raise ValueError(f"need {inp.horizon} operating points, got {ops.horizon}")
    tr = tree(net)
    lay = layout(net, inp)
    base, h, k_net = net.base_kw, inp.horizon, lay.network_steps
    costs = inp.costs
    prof = profiles(net, inp)
    dt_h, price = prof.dt_h, prof.price
    dts = dt_h[:, None]
    dev = _device_columns(net, inp)
    n = len(tr.ids)
    col_lo = {name: lo for name, (lo, _) in dev.items()}
    col_hi = {name: hi for name, (_, hi) in dev.items()}
    units: tuple[PvUnit | BatteryUnit | FlexibleLoad, ...] = (
        *inp.pv,
        *inp.batteries,
        *inp.flexible_loads,
    )
    up_hi = np.full((k_net, len(units)), INF)
    ramps = np.array(
        [INF if u.ramp_kw_per_s is None else u.ramp_kw_per_s for u in units], dtype=float
    )
    if k_net > 1:
        up_hi[1:, :] = ramps[None, :] * 3600.0 * dt_h[1:k_net, None]
    dn_hi = up_hi.copy()
    dn_hi[:, : len(inp.pv)] = INF  # over the horizon PV follows the sun down
    col_lo["up"], col_hi["up"] = np.zeros_like(up_hi), up_hi
    col_lo["dn"], col_hi["dn"] = np.zeros_like(dn_hi), dn_hi
    for name in ("P", "Q"):
        col_lo[name], col_hi[name] = np.full((k_net, n), -INF), np.full((k_net, n), INF)
    for name in ("L", "Lq", "v"):
        col_lo[name], col_hi[name] = np.zeros((k_net, n)), np.full((k_net, n), INF)
    col_lo["imp"], col_hi["imp"] = np.full(h, -INF), np.full(h, INF)
    col_lo["impq"], col_hi["impq"] = np.full(k_net, -INF), np.full(k_net, INF)
    col_lo["expo"], col_hi["expo"] = np.zeros(h), np.full(h, INF)
    for name in ("s_imp", "s_exp", "s_vlo", "s_vhi"):
        col_lo[name], col_hi[name] = np.zeros(h), np.full(h, INF)
    col_lo["s_rate"], col_hi["s_rate"] = np.zeros(k_net), np.full(k_net, INF)

    # Costs (the whole objective is per step × its duration, except the stored energy's value).
    value_end = (
        prof.value_end
        if costs.battery_energy_value_per_kwh is None
        else costs.battery_energy_value_per_kwh
    )
    loss_weight = np.where(tr.r > 0, tr.r, 1e-3 * tr.x)
    chg = np.tile(costs.setpoint_change_per_kwh * dts[:k_net], (1, len(units)))
    chg[0, [k for k, u in enumerate(units) if u.last_setpoint_kw is None]] = 0.0
    n_bat = len(inp.batteries)
    n_reactive = len(_reactive(inp))
    shed = np.array(
        [
            costs.load_shed_per_kwh if f.shed_cost_per_kwh is None else f.shed_cost_per_kwh
            for f in inp.flexible_loads
        ],
        dtype=float,
    )
    soc_cost = np.zeros((h, n_bat))
    soc_cost[h - 1, :] = -value_end
    dtk = dts[:k_net]
    # A miss now is certain, a miss later a forecast: the slacks cost less with lead time, so
    # a shortfall that cannot be avoided falls on the later steps and the present is held first.
    lead_h = np.asarray(inp.step_starts_s, dtype=float) / 3600.0
    urgency = 1.0 / (1.0 + lead_h / costs.slack_lead_halving_h)
    slack_dt = dt_h * urgency
    cost = {
        "pv": np.tile(-costs.curtailment_per_kwh * dts, (1, len(inp.pv))),
        "pvq": np.zeros((k_net, n_reactive)),
        "pvqm": np.tile(costs.reactive_per_kvarh * dtk, (1, n_reactive)),
        "ch": np.tile(costs.battery_wear_per_kwh * dts, (1, n_bat)),
        "dis": np.tile(costs.battery_wear_per_kwh * dts, (1, n_bat)),
        "soc": soc_cost,
        "fl": -shed[None, :] * dts,
        "up": chg,
        "dn": chg.copy(),
        "P": np.zeros((k_net, n)),
        "Q": np.zeros((k_net, n)),
        "L": costs.loss_per_kwh * base * loss_weight[None, :] * dtk,
        "Lq": np.zeros((k_net, n)),
        "v": np.zeros((k_net, n)),
        "imp": price * dt_h,
        "impq": np.zeros(k_net),
        "expo": (price - prof.export_price) * dt_h,
        "s_imp": costs.limit_slack_per_kwh * slack_dt,
        "s_exp": costs.limit_slack_per_kwh * slack_dt,
        "s_vlo": costs.voltage_slack_per_pu2_h * slack_dt,
        "s_vhi": costs.voltage_slack_per_pu2_h * slack_dt,
        "s_rate": costs.rating_slack_per_kvah * base * slack_dt[:k_net],
    }
    offset = costs.curtailment_per_kwh * float(np.sum(dts * prof.pv_upper))
    offset += float(np.sum(dt_h)) * float(
        np.sum(shed * [f.p_nominal_kw for f in inp.flexible_loads])
    )
    offset += value_end * math.fsum(b.soc_kwh for b in inp.batteries)

    # Right-hand sides (the slack bus's shunt draws at the slack voltage, known).
    p_load, q_load = (a[:k_net] for a in _net_loads(net, inp))
    v_slack2 = inp.slack_v(net) ** 2
    slack_p = prof.p_load[:k_net, 0] + base * tr.y_slack.real * v_slack2
    slack_q = prof.q_load[:k_net, 0] - base * tr.y_slack.imag * v_slack2
    vdrop = np.zeros((k_net, n))
    at_root = tr.parent_pos < 0
    vdrop[:, at_root] = v_slack2 / tr.tap[at_root] ** 2
    band = np.array([inp.band(b) for b in tr.ids], dtype=float).reshape(n, 2)
    reactive = [u for u in inp.pv if u.q_max_kvar > 0]
    soc_rhs = np.zeros((h, n_bat))
    soc_rhs[0, :] = [b.soc_kwh for b in inp.batteries]
    bat_lo = np.array([battery_bounds_kw(b, inp.interval_s)[0] for b in inp.batteries])
    bat_hi = np.array([battery_bounds_kw(b, inp.interval_s)[1] for b in inp.batteries])
    chg_rhs = np.zeros((k_net, len(units)))
    chg_rhs[0, :] = [0.0 if u.last_setpoint_kw is None else u.last_setpoint_kw for u in units]
    rated = lay.rated
    rhs = {
        "pvpoly": np.broadcast_to(
            np.array([u.rating_kva * _COS15 for u in reactive])[None, :, None],
            (k_net, len(reactive), len(PV_FACETS_DEG)),
        ),
        "pvqabs_up": np.zeros((k_net, len(reactive))),
        "pvqabs_dn": np.zeros((k_net, len(reactive))),
        "soc": soc_rhs,
        "batnet_lo": bat_lo,
        "batnet_hi": bat_hi,
        "chg": chg_rhs,
        "Pbal": p_load / base,
        "Qbal": q_load / base,
        "vdrop": vdrop,
        "vmin": np.broadcast_to(band[:, 0] ** 2, (k_net, n)),
        "vmax": np.broadcast_to(band[:, 1] ** 2, (k_net, n)),
        "rate": np.broadcast_to(
            (tr.rating_kva[rated] * _COS15 / base)[None, :, None],
            (k_net, len(rated), len(RATING_FACETS_DEG)),
        ),
        "impdef": slack_p,
        "impqdef": slack_q,
        "expdef": np.zeros(h),
        "implim": np.where(np.isnan(prof.import_limit), LOOSE_KW, prof.import_limit),
        "explim": -np.where(np.isnan(prof.export_limit), LOOSE_KW, prof.export_limit),
    }

    # The moving block: loss cuts, then the tail.
    cut_coef, cut_rhs, w = _cut_block(net, inp, ops, dev)
    trips: list[Triplets] = []
    is_chord = np.zeros(lay.cut_shape, dtype=bool)
    is_chord[..., -1] = True
    mask = np.broadcast_to(cut_layout(*n_cut_rows(inp)), (*lay.cut_shape, len(CUT_COLUMNS)))
    cut_cols = np.stack(
        [np.broadcast_to(lay.cols[name][..., None], lay.cut_shape) for name in CUT_COLUMNS],
        axis=-1,
    )
    cut_rows = np.broadcast_to(lay.rows["cut"][..., None], mask.shape)
    trips.append((cut_rows[mask], cut_cols[mask], cut_coef[mask]))
    rhs_flat = cut_rhs.reshape(-1)
    mov_lo = [np.where(is_chord.reshape(-1), -INF, rhs_flat)]
    mov_hi = [np.where(is_chord.reshape(-1), rhs_flat, INF)]
    watched: tuple[int, ...] = ()
    if h > k_net:
        tail = _tail_numbers(net, inp, lay, ops)
        trips.extend(tail.trips)
        mov_lo.extend(tail.lo)
        mov_hi.extend(tail.hi)
        for name, add in tail.cost.items():
            cost[name] = cost[name] + add
        offset += tail.offset
        watched = tail.watched
    rows = np.concatenate([t[0] for t in trips]).astype(np.int64) - lay.n_fixed
    cols = np.concatenate([t[1] for t in trips]).astype(np.int64)
    vals = np.concatenate([t[2] for t in trips]).astype(float)
    start, index, value = _csr(rows, cols, vals, lay.n_moving)
    return LpNumbers(
        col_lo=col_lo,
        col_hi=col_hi,
        cost=cost,
        rhs=rhs,
        mov_lo=np.concatenate(mov_lo),
        mov_hi=np.concatenate(mov_hi),
        mov_start=start,
        mov_index=index,
        mov_value=value,
        offset=offset,
        cut_coef=cut_coef,
        cut_rhs=cut_rhs,
        w=w,
        watched=watched,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _TailNumbers:
    trips: list[Triplets]
    lo: list[FloatArray]
    hi: list[FloatArray]
    cost: dict[str, FloatArray]
    offset: float
    watched: tuple[int, ...]


def _tail_numbers(
    net: Network, inp: DispatchInput, lay: Layout, ops: OperatingPoints
) -> _TailNumbers:
    """The tail's rows (see the module docstring) at the operating points `ops`:

    - import: `imp_t + Σ_x ((1 + λ)·a_x + λq·b_x)·x = imp⁰_t + Σ_x (...)·x⁰` for every device
      column `x` injecting `a_x` kW and `b_x` kvar per unit at its bus;
    - watched voltages: `Σ_x (s·a_x + sq·b_x)·x + s_vlo_t >= v_min² − v⁰² + Σ_x (...)·x⁰`, and
      `... − s_vhi_t <= v_max² − v⁰² + ...`;
    - losses `loss⁰_t − Σ_x (λ·a_x + λq·b_x)·(x − x⁰)`, priced at `loss_per_kwh·dt`, go into the
      device columns' costs and the objective's constant."""
    tr = tree(net)
    base, k_net, h = net.base_kw, lay.network_steps, lay.horizon
    tail = slice(k_net, h)
    n_tail = h - k_net
    dt_h = profiles(net, inp).dt_h[tail]
    uc = _tail_columns(net, inp, lay, ops)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_w = np.where(ops.w[tail] > 0, 1.0 / ops.w[tail], 0.0)
    lam = tr.path_sum(2.0 * tr.r[None, :] * ops.p_pu[tail] * inv_w)  # (tail, n)
    lamq = tr.path_sum(2.0 * tr.r[None, :] * ops.q_pu[tail] * inv_w)
    at = np.where(uc.pos >= 0, uc.pos, 0)
    on_slack = (uc.pos < 0)[None, :]
    lam_u = np.where(on_slack, 0.0, lam[:, at])  # (tail, columns)
    lamq_u = np.where(on_slack, 0.0, lamq[:, at])
    imp_coef = (1.0 + lam_u) * uc.a[None, :] + lamq_u * uc.b[None, :]
    loss_coef = lam_u * uc.a[None, :] + lamq_u * uc.b[None, :]
    trips: list[Triplets] = []
    imp_rows = lay.rows["tailimp"]
    n_cols = uc.cols.shape[1]
    trips.append((imp_rows, lay.cols["imp"][tail], np.ones(n_tail)))
    trips.append((np.repeat(imp_rows, n_cols), uc.cols.reshape(-1), imp_coef.reshape(-1)))
    imp_rhs = ops.import_kw[tail] + np.sum(imp_coef * uc.x0, axis=1)
    # watched voltages: sensitivities from the resistance (reactance) of the shared path
    watch = watched_buses(net, ops, tail)
    on_path = _on_path(tr, watch)
    r_common = tr.path_sum(on_path * tr.r[None, :])  # (watched, n): R shared with each bus
    x_common = tr.path_sum(on_path * tr.x[None, :])
    s = np.where((uc.pos < 0)[None, :], 0.0, 2.0 * r_common[:, at] / base)  # (watched, cols)
    sq = np.where((uc.pos < 0)[None, :], 0.0, 2.0 * x_common[:, at] / base)
    v_coef = s * uc.a[None, :] + sq * uc.b[None, :]  # same at every tail step
    v0 = ops.v_pu[tail][:, watch] ** 2  # (tail, watched)
    shift = uc.x0 @ v_coef.T  # (tail, watched)
    bands = np.array([inp.band(tr.ids[k]) for k in watch], dtype=float).reshape(-1, 2)
    lo_rhs = bands[None, :, 0] ** 2 - v0 + shift
    hi_rhs = bands[None, :, 1] ** 2 - v0 + shift
    credit = _reactive_credit(net, inp, ops, tail, x_common)
    lo_rhs -= credit
    hi_rhs += credit
    for name, slack, sign in (("tailvmin", "s_vlo", 1.0), ("tailvmax", "s_vhi", -1.0)):
        rows = lay.rows[name]  # (tail, watched)
        trips.append(
            (
                np.repeat(rows.reshape(-1), n_cols),
                np.repeat(uc.cols, len(watch), axis=0).reshape(-1),
                np.broadcast_to(v_coef[None, :, :], (n_tail, len(watch), n_cols)).reshape(-1),
            )
        )
        trips.append(
            (
                rows.reshape(-1),
                np.repeat(lay.cols[slack][tail], len(watch)),
                np.full(rows.size, sign),
            )
        )
    lo = [imp_rhs, lo_rhs.reshape(-1), np.full(lo_rhs.size, -INF)]
    hi = [imp_rhs, np.full(hi_rhs.size, INF), hi_rhs.reshape(-1)]
    # losses priced per column: −c·dt·(λ·a + λq·b), the rest a constant
    c_loss = inp.costs.loss_per_kwh
    per_col = -c_loss * dt_h[:, None] * loss_coef  # (tail, columns)
    cost_add: dict[str, FloatArray] = {}
    at_col = 0
    for name in ("pv", "dis", "ch", "fl"):
        fam = lay.cols[name]
        add = np.zeros(fam.shape)
        width = fam.shape[1]
        add[k_net:] = per_col[:, at_col : at_col + width]
        at_col += width
        cost_add[name] = add
    offset = float(
        np.sum(c_loss * dt_h * (ops.losses_kw[tail] + np.sum(loss_coef * uc.x0, axis=1)))
    )
    return _TailNumbers(
        trips=trips,
        lo=lo,
        hi=hi,
        cost=cost_add,
        offset=offset,
        watched=tuple(tr.ids[k] for k in watch),
    )


def _reactive_credit(
    net: Network, inp: DispatchInput, ops: OperatingPoints, tail: slice, x_common: FloatArray
) -> FloatArray:
    """How far (squared p.u., tail steps × watched buses) the reactive inverters can move each
    watched voltage either way: each one's reactive headroom at its planned active power,
    `min(q_max, √(S² − p⁰²))`, times the reactance it shares with the bus. The tail plans at
    unity power factor, but step 0 will have the vars: without this credit the tail saw
    voltage problems the vars solve, and had step 0 curtail or keep the batteries empty for
    them (the midday scenario's curtailment for the band rose tenfold with the horizon on)."""
    tr = tree(net)
    reactive = [k for k, u in enumerate(inp.pv) if u.q_max_kvar > 0]
    out = np.zeros((tail.stop - tail.start, x_common.shape[0]))
    if not reactive:
        return out
    p0 = ops.units.pv[tail][:, reactive]
    rating = np.array([inp.pv[k].rating_kva for k in reactive], dtype=float)
    q_max = np.array([inp.pv[k].q_max_kvar for k in reactive], dtype=float)
    q_room = np.minimum(q_max[None, :], np.sqrt(np.maximum(rating[None, :] ** 2 - p0**2, 0.0)))
    pos = _positions(tr, [inp.pv[k].bus for k in reactive])
    sq = np.where((pos < 0)[None, :], 0.0, 2.0 * x_common[:, np.where(pos >= 0, pos, 0)])
    return np.asarray(q_room @ (sq / net.base_kw).T, dtype=float)


def _on_path(tr: Tree, positions: npt.NDArray[np.intp]) -> FloatArray:
    """1 where a position lies on the path from the slack bus to each of `positions`."""
    out = np.zeros((len(positions), len(tr.ids)))
    for j, k in enumerate(positions):
        at = int(k)
        while at >= 0:
            out[j, at] = 1.0
            at = int(tr.parent_pos[at])
    return out


def _csr(
    rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64], vals: FloatArray, n_rows: int
) -> tuple[IntArray, IntArray, FloatArray]:
    """Row-wise compressed form of (row, column, value) triplets, duplicates summed."""
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    if len(rows):
        new = np.concatenate(([True], (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])))
        first = np.flatnonzero(new)
        vals = np.add.reduceat(vals, first)
        rows, cols = rows[first], cols[first]
    start = np.searchsorted(rows, np.arange(n_rows + 1)).astype(np.int32)
    return start, cols.astype(np.int32), vals


# --------------------------------------------------------------------------- the model


@dataclass(slots=True, kw_only=True)
class DispatchModel:
    """The LP as arrays: its layout, the fixed rows' matrix in CSR form (`start`, `index`,
    `value` over `layout.n_fixed` rows) and the numbers it was built with."""

    layout: Layout
    start: IntArray
    index: IntArray
    value: FloatArray
    numbers: LpNumbers

    @property
    def horizon(self) -> int:
        """The number of steps."""
        return self.layout.horizon

    def column_bounds(
        self, num: LpNumbers | None = None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Lower and upper bounds and cost of every column, from `num` (default: the model's)."""
        num = self.numbers if num is None else num
        n = self.layout.n_col
        lo, hi, cost = np.empty(n), np.empty(n), np.empty(n)
        for name, idx in self.layout.cols.items():
            lo[idx] = num.col_lo[name]
            hi[idx] = num.col_hi[name]
            cost[idx] = num.cost[name]
        return lo, hi, cost

    def row_bounds(self, num: LpNumbers | None = None) -> tuple[FloatArray, FloatArray]:
        """Lower and upper bounds of the fixed rows, from `num` (default: the model's);
        absent limits (`LOOSE_KW` and beyond) as infinities."""
        num = self.numbers if num is None else num
        lo, hi = np.empty(self.layout.n_fixed), np.empty(self.layout.n_fixed)
        for name, sense in ROW_SENSE.items():
            idx = self.layout.rows[name]
            rhs = np.asarray(num.rhs[name], dtype=float)
            rhs = np.where(np.abs(rhs) >= LOOSE_KW, np.copysign(INF, rhs), rhs)
            lo[idx] = rhs if sense != LE else -INF
            hi[idx] = rhs if sense != GE else INF
        return lo, hi

    def column_names(self) -> list[str]:
        """A name per column: `family_t{step}_{item}`."""
        names = [""] * self.layout.n_col
        for name, idx in self.layout.cols.items():
            for pos in np.ndindex(*idx.shape):
                suffix = "".join(f"_{i}" for i in pos[1:])
                names[int(idx[pos])] = f"{name}_t{pos[0]}{suffix}"
        return names


class _Coo:
    """(row, column, value) triplets, gathered family by family."""

    def __init__(self) -> None:
        self.parts: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], FloatArray]] = []

    def add(self, rows: object, cols: object, vals: object = 1.0) -> None:
        r, c, v = np.broadcast_arrays(
            np.asarray(rows, dtype=np.int64),
            np.asarray(cols, dtype=np.int64),
            np.asarray(vals, dtype=float),
        )
        if r.size:
            self.parts.append((r.reshape(-1), c.reshape(-1), v.reshape(-1)))

    def csr(self, n_rows: int) -> tuple[IntArray, IntArray, FloatArray]:
        if not self.parts:
            return np.zeros(n_rows + 1, np.int32), np.zeros(0, np.int32), np.zeros(0)
        rows = np.concatenate([p[0] for p in self.parts])
        cols = np.concatenate([p[1] for p in self.parts])
        vals = np.concatenate([p[2] for p in self.parts])
        keep = vals != 0.0
        return _csr(rows[keep], cols[keep], vals[keep], n_rows)


def _unit_injections(
    net: Network, inp: DispatchInput, lay: Layout
) -> list[tuple[str, npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray, FloatArray]]:
    """Per device column family: the family, which of its items, their tree positions (−1 the
    slack bus), and the kW and kvar each injects per unit."""
    tr = tree(net)
    reactive = _reactive(inp)
    bat_pos = _positions(tr, [b.bus for b in inp.batteries])
    n_bat = len(inp.batteries)
    fl_pos = _positions(tr, [f.bus for f in inp.flexible_loads])
    q_per_kw = np.array([f.q_per_kw for f in inp.flexible_loads], dtype=float)
    return [
        (
            "pv",
            np.arange(len(inp.pv)),
            _positions(tr, [u.bus for u in inp.pv]),
            np.ones(len(inp.pv)),
            np.zeros(len(inp.pv)),
        ),
        (
            "pvq",
            np.arange(len(reactive)),
            _positions(tr, [inp.pv[k].bus for k in reactive]),
            np.zeros(len(reactive)),
            np.ones(len(reactive)),
        ),
        ("dis", np.arange(n_bat), bat_pos, np.ones(n_bat), np.zeros(n_bat)),
        ("ch", np.arange(n_bat), bat_pos, -np.ones(n_bat), np.zeros(n_bat)),
        ("fl", np.arange(len(fl_pos)), fl_pos, -np.ones(len(fl_pos)), -q_per_kw),
    ]


def add_pv_polygon(coo: _Coo, lay: Layout, inp: DispatchInput) -> None:
    """Reactive PV inside its kVA circle (network steps): `cos θ·p + sin θ·q <= S·cos 15°`
    for six facets."""
    rows = lay.rows["pvpoly"]  # (K, reactive, facets)
    k_net = lay.network_steps
    th = np.radians(PV_FACETS_DEG)
    reactive = _reactive(inp)
    coo.add(rows, lay.cols["pv"][:k_net, reactive][..., None], np.cos(th)[None, None, :])
    coo.add(rows, lay.cols["pvq"][..., None], np.sin(th)[None, None, :])


def add_reactive_magnitude(coo: _Coo, lay: Layout) -> None:
    """The vars' magnitude, which the objective prices: `pvqm − pvq >= 0`, `pvqm + pvq >= 0`."""
    for family, sign in (("pvqabs_up", -1.0), ("pvqabs_dn", 1.0)):
        coo.add(lay.rows[family], lay.cols["pvqm"], 1.0)
        coo.add(lay.rows[family], lay.cols["pvq"], sign)


def add_battery_state(coo: _Coo, lay: Layout, inp: DispatchInput) -> None:
    """State of charge, each step with its own duration `dt_t`: `soc_t − soc_{t−1} +
    dis_t·dt_t/η_dis − ch_t·dt_t·η_ch = 0` (`soc_{−1}` the measured SOC, on the right), and at
    step 0 the net power window of p_max, SOC and ramp: `lo <= dis_0 − ch_0 <= hi`."""
    rows = lay.rows["soc"]
    dt = (np.asarray(inp.step_durations_s, dtype=float) / 3600.0)[:, None]
    eta_d = np.array([b.eta_discharge for b in inp.batteries], dtype=float)[None, :]
    eta_c = np.array([b.eta_charge for b in inp.batteries], dtype=float)[None, :]
    coo.add(rows, lay.cols["soc"], 1.0)
    coo.add(rows, lay.cols["dis"], dt / eta_d)
    coo.add(rows, lay.cols["ch"], -dt * eta_c)
    coo.add(rows[1:], lay.cols["soc"][:-1], -1.0)
    for name in ("batnet_lo", "batnet_hi"):
        coo.add(lay.rows[name], lay.cols["dis"][0], 1.0)
        coo.add(lay.rows[name], lay.cols["ch"][0], -1.0)


def add_setpoint_change(coo: _Coo, lay: Layout, inp: DispatchInput) -> None:
    """Anti-chatter and ramp: `p_t − p_{t−1} − up_t + dn_t = 0` with `p_{−1}` the last setpoint
    (0 if unknown, then unpriced) on the right; `up_t, dn_t <= ramp·dt_t` after step 0. A
    unit's `p` is its PV power, its battery's `dis − ch`, its load's `fl`. Network steps only:
    over the tail's coarse steps a ramp limit does not bind and chatter is not applied."""
    rows = lay.rows["chg"]  # (network steps, units)
    n_pv, n_bat = len(inp.pv), len(inp.batteries)
    k_net = lay.network_steps
    parts = (
        (slice(0, n_pv), lay.cols["pv"], 1.0),
        (slice(n_pv, n_pv + n_bat), lay.cols["dis"], 1.0),
        (slice(n_pv, n_pv + n_bat), lay.cols["ch"], -1.0),
        (slice(n_pv + n_bat, rows.shape[1]), lay.cols["fl"], 1.0),
    )
    for span, cols, sign in parts:
        coo.add(rows[:, span], cols[:k_net], sign)
        coo.add(rows[1:, span], cols[: k_net - 1], -sign)
    coo.add(rows, lay.cols["up"], -1.0)
    coo.add(rows, lay.cols["dn"], 1.0)


def add_flow_balance(coo: _Coo, lay: Layout, net: Network, inp: DispatchInput) -> None:
    """LinDistFlow balance at every non-slack bus i (network steps), with `L_i` the squared
    branch current and `y_i = g_i + j b_i` the bus's shunt admittance (its own shunt and its
    branches' charging, which draw `(g_i − j b_i)·v_i`: exact, linear in the squared voltage):

    `P_i − Σ_{c∈children(i)} P_c − r_i·L_i − g_i·v_i + p_gen_i/base = p_load_i/base`,
    `Q_i − Σ_{c∈children(i)} Q_c − x_i·L_i + b_i·v_i + q_gen_i/base = q_load_i/base`."""
    tr = tree(net)
    base, k_net = net.base_kw, lay.network_steps
    c = lay.cols
    kids = np.flatnonzero(tr.parent_pos >= 0)
    for row, flow, react, shunt in (
        ("Pbal", "P", tr.r, -tr.y.real),
        ("Qbal", "Q", tr.x, tr.y.imag),
    ):
        rows = lay.rows[row]
        coo.add(rows, c[flow], 1.0)
        coo.add(rows, c["L"], -react[None, :])
        coo.add(rows[:, tr.parent_pos[kids]], c[flow][:, kids], -1.0)
        coo.add(rows, c["v"], shunt[None, :])
    for family, items, pos, p_kw, q_kvar in _unit_injections(net, inp, lay):
        keep = pos >= 0
        cols = c[family][:k_net][:, items[keep]]
        coo.add(lay.rows["Pbal"][:, pos[keep]], cols, p_kw[keep][None, :] / base)
        coo.add(lay.rows["Qbal"][:, pos[keep]], cols, q_kvar[keep][None, :] / base)


def add_voltage_drop(coo: _Coo, lay: Layout, net: Network) -> None:
    """Voltage along each branch (DistFlow with the loss term kept, `τ` the tap ratio):

    `v_i − v_π(i)/τ_i² + 2 (r_i P_i + x_i Q_i) − (r_i² + x_i²) L_i = 0`, with `v_slack²/τ_i²`
    on the right for the slack's children."""
    tr = tree(net)
    rows, c = lay.rows["vdrop"], lay.cols
    coo.add(rows, c["v"], 1.0)
    coo.add(rows, c["P"], 2.0 * tr.r[None, :])
    coo.add(rows, c["Q"], 2.0 * tr.x[None, :])
    coo.add(rows, c["L"], -(tr.r**2 + tr.x**2)[None, :])
    kids = np.flatnonzero(tr.parent_pos >= 0)
    coo.add(rows[:, kids], c["v"][:, tr.parent_pos[kids]], -1.0 / tr.tap[kids][None, :] ** 2)


def add_voltage_band(coo: _Coo, lay: Layout) -> None:
    """Soft voltage band (network steps): `v_i + s_low >= v_min²`, `v_i − s_high <= v_max²`,
    slacks >= 0, one pair per step."""
    k_net = lay.network_steps
    for row, slack, sign in (("vmin", "s_vlo", 1.0), ("vmax", "s_vhi", -1.0)):
        coo.add(lay.rows[row], lay.cols["v"], 1.0)
        coo.add(lay.rows[row], lay.cols[slack][:k_net, None], sign)


def add_branch_ratings(coo: _Coo, lay: Layout) -> None:
    """Soft thermal rating of each rated branch (network steps), a 12-gon inside the P–Q
    circle of radius S: `cos θ·P + sin θ·Q − s_rate <= S·cos 15°/base`, `s_rate >= 0` (p.u.)."""
    if not len(lay.rated):
        return
    rows = lay.rows["rate"]  # (K, rated, facets)
    th = np.radians(RATING_FACETS_DEG)
    coo.add(rows, lay.cols["P"][:, lay.rated][..., None], np.cos(th)[None, None, :])
    coo.add(rows, lay.cols["Q"][:, lay.rated][..., None], np.sin(th)[None, None, :])
    coo.add(rows, lay.cols["s_rate"][:, None, None], -1.0)


def add_feeder_limits(coo: _Coo, lay: Layout, net: Network, inp: DispatchInput) -> None:
    """Feeder head import (signed) and its soft limits, `s_imp, s_exp >= 0`:

    `imp − base·Σ_{c∈children(slack)} P_c + p_gen_slack = p_load_slack + p_shunt_slack`
    (network steps; likewise `impq`; the slack bus's shunt and its branches' charging draw at
    the known slack voltage; the tail's import rows are in the moving block),
    `imp − s_imp <= L_t`, `imp + s_exp >= −E_t` (per step; an absent limit is a free row),
    and the export `expo >= −imp`, `expo >= 0`, priced at `price − export_price` (>= 0): with
    `imp` priced at `price`, export then earns `export_price` while import costs `price`."""
    tr = tree(net)
    base, k_net = net.base_kw, lay.network_steps
    c, r = lay.cols, lay.rows
    kids = np.flatnonzero(tr.parent_pos < 0)
    coo.add(r["impdef"], c["imp"][:k_net], 1.0)
    coo.add(r["impdef"][:, None], c["P"][:, kids], -base)
    coo.add(r["impqdef"], c["impq"], 1.0)
    coo.add(r["impqdef"][:, None], c["Q"][:, kids], -base)
    for family, items, pos, p_kw, q_kvar in _unit_injections(net, inp, lay):
        at_slack = items[pos < 0]
        cols = c[family][:k_net][:, at_slack]
        coo.add(r["impdef"][:, None], cols, p_kw[pos < 0][None, :])
        coo.add(r["impqdef"][:, None], cols, q_kvar[pos < 0][None, :])
    coo.add(r["expdef"], c["expo"], 1.0)
    coo.add(r["expdef"], c["imp"], 1.0)
    coo.add(r["implim"], c["imp"], 1.0)
    coo.add(r["implim"], c["s_imp"], -1.0)
    coo.add(r["explim"], c["imp"], 1.0)
    coo.add(r["explim"], c["s_exp"], 1.0)


def build(net: Network, inp: DispatchInput, ops: OperatingPoints) -> DispatchModel:
    """The whole LP for `inp`, linearised at the operating points `ops`: the fixed rows
    assembled family by family, the numbers (and moving block) from `lp_numbers`.

    The objective, each step × its duration: `price·imp + (price − export_price)·expo +
    c_curt·Σ(p_upper − p_pv) + c_loss·(base·Σ r_i L_i, or the tail's linearised losses) +
    c_wear·Σ(ch + dis) + c_chg·Σ(up + dn) + c_shed·Σ(p_nom − p_fl) + c_slack·(s_imp + s_exp) +
    c_v·(s_low + s_high) + c_rate·s_rate + c_q·Σ|q_pv|`, minus the value of the energy left in
    storage, `value·(soc_end − soc_now)` (value: the import price averaged over the horizon's
    time unless set). A branch without resistance has its current priced as if `r = 10⁻³·x`."""
    lay = layout(net, inp)
    num = lp_numbers(net, inp, ops)
    coo = _Coo()
    add_pv_polygon(coo, lay, inp)
    add_reactive_magnitude(coo, lay)
    add_battery_state(coo, lay, inp)
    add_setpoint_change(coo, lay, inp)
    add_flow_balance(coo, lay, net, inp)
    add_voltage_drop(coo, lay, net)
    add_voltage_band(coo, lay)
    add_branch_ratings(coo, lay)
    add_feeder_limits(coo, lay, net, inp)
    start, index, value = coo.csr(lay.n_fixed)
    return DispatchModel(layout=lay, start=start, index=index, value=value, numbers=num)
