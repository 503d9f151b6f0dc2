"""The allocation LP: one system limit split into per-feeder import limits. Pure: numbers in,
numbers out; HiGHS is called directly (a fleet of 1,000 feeders solves in milliseconds).

Each feeder ``f`` that can be asked brings its range ``[min_kw, max_kw]`` and its cost curve
(``controller.flex.Flexibility.curve``: cost non-increasing in kW, 0 at ``max_kw``), made convex
by its lower convex hull. Its limit is ``L_f = min_kw + Σ_s y_fs`` with one variable per curve
segment, ``0 ≤ y_fs ≤ width_s``, costing ``slope_s · y_fs`` (``slope_s ≤ 0``; convexity makes
the segments fill from the steepest, so a partial fill is a point on the curve). A feeder that
cannot be asked (silent, rejecting, without flexibility) is *fixed*: it counts at ``fixed_kw``
everywhere and gets no limit.

Constraints (one row each, ``add_limits``)::

    Σ_{f ∈ c, flexible} L_f + Σ_{f ∈ c, fixed} X_f − short_c ≤ limit_c     short_c ≥ 0

for every active target (its group) and every transformer (its feeders). ``short_c`` is what
the fleet cannot deliver of constraint ``c``; its price ``PENALTY_FACTOR · (max |slope| + 1)``
per kW is above what any reduction costs, so no deliverable kW is left as shortfall.

Objective (``Mode``):

- ``cost``: least total cost, ``Σ c0_f + Σ slope_s · y_fs`` plus the shortfall penalty.
- ``fair``: the reduction in proportion to each feeder's flexibility ``φ_f = max_kw − min_kw``:
  ``max_kw − L_f ≤ z · φ_f`` (``add_fair_share``) with ``z`` held at the least share that
  serves every constraint (``least_share``, in closed form), then the least cost within it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt

from optimizer.session import quiet_highs

__all__ = [
    "Allocation",
    "AllocationStatus",
    "Constraint",
    "FeederInput",
    "Mode",
    "allocate",
    "convex_hull",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
INF = highspy.kHighsInf
PENALTY_FACTOR = 100.0
"""A kW of shortfall costs this many times the steepest curve slope (plus one)."""
TIME_LIMIT_S = 5.0
"""HiGHS's own bound on one solve; a fleet LP takes milliseconds."""
AT_MAX_KW = 1e-3
"""A limit this close to ``max_kw`` is no limit: the feeder is not asked."""
_TOL = 1e-7


class Mode(StrEnum):
    COST = "cost"
    FAIR = "fair"


class AllocationStatus(StrEnum):
    OPTIMAL = "optimal"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class FeederInput:
    """One feeder as the LP sees it: flexible (``min_kw``, ``max_kw``, ``curve``) or, when
    ``fixed_kw`` is set, counted at that import and not asked."""

    site: str
    min_kw: float = 0.0
    max_kw: float = 0.0
    curve: tuple[tuple[float, float], ...] = ()
    fixed_kw: float | None = None

    @property
    def fixed(self) -> bool:
        return self.fixed_kw is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Constraint:
    """``Σ`` of the import of ``sites`` at most ``limit_kw`` (a target's group, a transformer)."""

    name: str
    sites: tuple[str, ...]
    limit_kw: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """The split: ``limits[site]`` is the import limit to ask (``None``: not asked, the feeder
    is at its ``max_kw`` or fixed); ``shortfall_kw[name]`` what each constraint misses;
    ``cost`` the curves' total at the limits; ``objective`` HiGHS's (penalties included)."""

    status: AllocationStatus
    limits: Mapping[str, float | None] = field(default_factory=dict)
    kw: Mapping[str, float] = field(default_factory=dict)
    """Every feeder's import as allocated (fixed ones at their ``fixed_kw``)."""
    shortfall_kw: Mapping[str, float] = field(default_factory=dict)
    cost: float = 0.0
    objective: float = 0.0
    solve_ms: float = 0.0
    share: float | None = None
    """Fair mode: the share ``z`` of its flexibility every feeder gives at most."""


def convex_hull(points: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """The lower convex hull of ``points`` (ascending in kW): the tightest convex curve under
    them, so that the LP's segments fill in order."""
    hull: list[tuple[float, float]] = []
    for p in points:
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            # drop the middle point when it lies on or above the chord to p
            if (x1 - x0) * (p[1] - y0) - (y1 - y0) * (p[0] - x0) <= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return tuple(hull)


@dataclass(slots=True)
class _Model:
    """The LP's arrays: columns ``[segments | shortfalls | z]``, rows ``[constraints | fair]``."""

    n_seg: int
    n_con: int
    seg_feeder: IntArray
    seg_width: FloatArray
    seg_slope: FloatArray
    flex_index: IntArray  # feeder index of each flexible feeder (inputs order)
    base_kw: FloatArray  # per input feeder: min_kw (flexible) or fixed_kw
    base_cost: float
    rows: list[IntArray] = field(default_factory=list)
    cols: list[IntArray] = field(default_factory=list)
    vals: list[FloatArray] = field(default_factory=list)
    row_lo: list[float] = field(default_factory=list)
    row_hi: list[float] = field(default_factory=list)

    @property
    def n_row(self) -> int:
        return len(self.row_lo)


def _segments(feeders: Sequence[FeederInput]) -> _Model:
    """Each flexible feeder's hull as segments (width, slope), contiguous per feeder."""
    seg_feeder: list[int] = []
    width: list[float] = []
    slope: list[float] = []
    flex_index: list[int] = []
    base = np.zeros(len(feeders))
    base_cost = 0.0
    for i, f in enumerate(feeders):
        if f.fixed_kw is not None:
            base[i] = f.fixed_kw
            continue
        base[i] = f.min_kw
        points = list(f.curve) or [(f.min_kw, 0.0), (f.max_kw, 0.0)]
        points[0] = (f.min_kw, points[0][1])
        points[-1] = (f.max_kw, points[-1][1])
        hull = convex_hull(points)
        base_cost += hull[0][1]
        flex_index.append(i)
        for (k0, c0), (k1, c1) in itertools.pairwise(hull):
            if k1 - k0 <= _TOL:
                continue
            seg_feeder.append(i)
            width.append(k1 - k0)
            slope.append((c1 - c0) / (k1 - k0))
    return _Model(
        n_seg=len(width),
        n_con=0,
        seg_feeder=np.asarray(seg_feeder, dtype=np.int32),
        seg_width=np.asarray(width, dtype=np.float64),
        seg_slope=np.asarray(slope, dtype=np.float64),
        flex_index=np.asarray(flex_index, dtype=np.int32),
        base_kw=base,
        base_cost=base_cost,
    )


def add_limits(m: _Model, constraints: Sequence[Constraint], index: Mapping[str, int]) -> None:
    """``Σ_s y_fs (f ∈ c) − short_c ≤ limit_c − Σ base_f (f ∈ c)`` for every constraint."""
    m.n_con = len(constraints)
    # each feeder's segments are contiguous: [first[f], first[f] + count[f])
    count = np.bincount(m.seg_feeder, minlength=len(m.base_kw)).astype(np.int32)
    first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int32)
    for c, con in enumerate(constraints):
        members = np.fromiter((index[s] for s in con.sites), dtype=np.int32)
        n = count[members]
        offsets = np.arange(int(n.sum()), dtype=np.int32) - np.repeat(np.cumsum(n) - n, n)
        segs = (np.repeat(first[members], n) + offsets).astype(np.int32)
        m.rows.append(np.full(len(segs) + 1, c, dtype=np.int32))
        m.cols.append(np.append(segs, np.int32(m.n_seg + c)))
        m.vals.append(np.append(np.ones(len(segs)), -1.0))
        m.row_lo.append(-INF)
        m.row_hi.append(con.limit_kw - float(m.base_kw[members].sum()))


def add_fair_share(m: _Model, flex_kw: FloatArray) -> FloatArray:
    """``Σ_s y_fs + φ_f · z ≥ φ_f`` for every flexible feeder (its reduction at most ``z φ_f``);
    returns ``φ`` per input feeder."""
    z_col = m.n_seg + m.n_con
    first_row = m.n_row
    rank = np.full(len(m.base_kw), -1, dtype=np.int32)
    rank[m.flex_index] = np.arange(len(m.flex_index), dtype=np.int32)
    seg_rows = first_row + rank[m.seg_feeder]
    rows = np.concatenate([seg_rows, first_row + np.arange(len(m.flex_index), dtype=np.int32)])
    cols = np.concatenate(
        [np.arange(m.n_seg, dtype=np.int32), np.full(len(m.flex_index), z_col, dtype=np.int32)]
    )
    phi = flex_kw[m.flex_index]
    m.rows.append(rows.astype(np.int32))
    m.cols.append(cols)
    m.vals.append(np.concatenate([np.ones(m.n_seg), phi]))
    m.row_lo.extend(phi.tolist())
    m.row_hi.extend([INF] * len(phi))
    return phi


def least_share(
    feeders: Sequence[FeederInput], constraints: Sequence[Constraint], index: Mapping[str, int]
) -> float:
    """Fair mode's share ``z``: the least that lets every constraint get what it can.

    Every row asks a sum of reductions over a set of feeders to reach its need, and all
    coefficients are positive, so each feeder giving ``z φ_f`` serves every row at once: the
    least ``z`` is the largest ``need_c / Φ_c``, where ``Φ_c`` is the row's flexibility and
    ``need_c`` what it asks beyond its feeders' ``max_kw`` after its least shortfall (what it
    misses with every feeder at ``min_kw``). Computed here rather than by a solve: the LP
    then has one objective."""
    top = np.array([f.fixed_kw if f.fixed_kw is not None else f.max_kw for f in feeders])
    phi = np.array([0.0 if f.fixed else f.max_kw - f.min_kw for f in feeders])
    share = 0.0
    for con in constraints:
        members = [index[s] for s in con.sites]
        span = float(phi[members].sum())
        excess = float(top[members].sum()) - con.limit_kw
        if span > _TOL and excess > 0:
            share = max(share, min(1.0, excess / span))
    return share


def _lp(m: _Model, n_col: int, lo: FloatArray, hi: FloatArray, cost: FloatArray) -> Any:
    rows = np.concatenate(m.rows) if m.rows else np.zeros(0, dtype=np.int32)
    cols = np.concatenate(m.cols) if m.cols else np.zeros(0, dtype=np.int32)
    vals = np.concatenate(m.vals) if m.vals else np.zeros(0)
    order = np.lexsort((cols, rows))
    start = np.zeros(m.n_row + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=m.n_row), out=start[1:])
    lp = highspy.HighsLp()
    lp.num_col_ = n_col
    lp.num_row_ = m.n_row
    lp.col_cost_ = cost
    lp.offset_ = m.base_cost
    lp.col_lower_ = lo
    lp.col_upper_ = hi
    lp.row_lower_ = np.asarray(m.row_lo, dtype=np.float64)
    lp.row_upper_ = np.asarray(m.row_hi, dtype=np.float64)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = start
    lp.a_matrix_.index_ = cols[order].astype(np.int32)
    lp.a_matrix_.value_ = vals[order]
    return lp


def allocate(
    feeders: Sequence[FeederInput],
    constraints: Sequence[Constraint],
    *,
    mode: Mode | str = Mode.COST,
) -> Allocation:
    """Split ``constraints`` over ``feeders`` (see the module docstring). Every site a
    constraint names must be among ``feeders``."""
    started = time.perf_counter()
    mode = Mode(mode)
    index = {f.site: i for i, f in enumerate(feeders)}
    m = _segments(feeders)
    add_limits(m, constraints, index)
    fair = mode is Mode.FAIR and len(m.flex_index) > 0
    share = least_share(feeders, constraints, index) if fair else 0.0
    if fair:
        add_fair_share(m, np.array([0.0 if f.fixed else f.max_kw - f.min_kw for f in feeders]))
    n_col = m.n_seg + m.n_con + (1 if fair else 0)
    lo = np.zeros(n_col)
    z_hi = [min(1.0, share * (1 + 1e-9) + 1e-12)] if fair else []
    hi = np.concatenate([m.seg_width, np.full(m.n_con, INF), z_hi])
    steepest = float(np.abs(m.seg_slope).max()) if m.n_seg else 0.0
    penalty = PENALTY_FACTOR * (steepest + 1.0)
    cost = np.concatenate(
        [m.seg_slope, np.full(m.n_con, penalty), np.zeros(n_col - m.n_seg - m.n_con)]
    )
    h = quiet_highs(TIME_LIMIT_S)
    h.passModel(_lp(m, n_col, lo, hi, cost))
    if not _run(h):
        return Allocation(
            status=AllocationStatus.FAILED, solve_ms=(time.perf_counter() - started) * 1e3
        )
    x = np.asarray(h.getSolution().col_value, dtype=np.float64)
    y = np.clip(x[: m.n_seg], 0.0, m.seg_width)
    kw = m.base_kw.copy()
    np.add.at(kw, m.seg_feeder, y)
    limits: dict[str, float | None] = {}
    kws: dict[str, float] = {}
    for i, f in enumerate(feeders):
        kws[f.site] = float(kw[i])
        asked = not f.fixed and kw[i] < f.max_kw - AT_MAX_KW
        limits[f.site] = float(kw[i]) if asked else None
    shortfall = {con.name: max(0.0, float(x[m.n_seg + c])) for c, con in enumerate(constraints)}
    return Allocation(
        status=AllocationStatus.OPTIMAL,
        limits=limits,
        kw=kws,
        shortfall_kw=shortfall,
        cost=m.base_cost + float(m.seg_slope @ y),
        objective=float(h.getInfo().objective_function_value),
        solve_ms=(time.perf_counter() - started) * 1e3,
        share=share if fair else None,
    )


def _run(h: Any) -> bool:
    h.run()
    return bool(h.getModelStatus() == highspy.HighsModelStatus.kOptimal)
