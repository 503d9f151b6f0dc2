"""A feeder's flexibility over the next window: parametric solves of the kept dispatch LP.

After an interval's dispatch the HiGHS model (`optimizer.session.HighsSession`) holds that
interval's LP, linearised at its operating points. The import limit enters that LP only as the
upper bounds of its `implim` rows (`imp − s_imp <= L_t`, `optimizer.lp`), so the solves below
change those bounds alone, each warm-starting from the last basis (a few dual simplex
iterations, no model assembled):

- the *base*: at each step the import limit that holds anyway (`base_limit_kw`: every limit
  but the fleet coordinator's; NaN none). Its peak head import over the window is `max_kw`,
  what the feeder draws if left alone;
- a *cap* `C`: each window step's limit `min(base, C)`, the later steps the base's. The cap is
  held when the import limit's slack is, at every window step, no more than the base's own
  (within the input's `slack_tol_kw`); being held grows with `C`, so the lowest such `C`,
  `min_kw`, is found to `resolution_kw` between a cap held and a lower bound: a cap not held
  misses it by some energy over the window, a convex function of `C` that reaches 0 at
  `min_kw`, so each cap not held raises the bound (`_lower_bound`) and the next probe goes
  just above it (halfway when that gained little): a few solves;
- the cost curve: the LP's objective at a cap less the base's, at `points` caps evenly spread
  from `min_kw` to `max_kw` (0 there). The optimal value of an LP is convex in a right-hand
  side, and it cannot rise as a limit loosens: the curve is convex and non-increasing (the
  solver's rounding is evened out, never more than its tolerance).

The figures are those of the model the dispatch used (its operating points). The work is
bounded by `budget_s` (on `timer`): what was found by then is returned (a `min_kw` found so far
is one the feeder holds, the curve has fewer points), or nothing when not even the base was
solved. At the end the rows' bounds and the basis are put back as the dispatch left them: the
next interval's solve starts from the same point as it would have without these solves.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from optimizer.forecast import Forecast
from optimizer.lp import LOOSE_KW
from optimizer.network import Network
from optimizer.profiles import profiles
from optimizer.session import INF, HighsSession, SolveOutcome
from optimizer.units import DispatchInput

__all__ = ["FlexResult", "capped_input", "flexibility", "window_steps"]

FloatArray = npt.NDArray[np.float64]

MIN_SOLVE_S = 0.005
"""A solve is not started with less than this left of the budget."""
BRACKET_TRIES = 4
"""How many times the bracket's lower end is pushed further down before giving up."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FlexResult:
    """What the solves found. `min_kw`/`max_kw` are both `None` when nothing could be computed
    (`reason` says why); `complete` is false when the budget (or the solver, or a dispatch
    waiting for the model) stopped the work early: `min_kw` is then the lowest cap proven held
    so far (above the true one) and the curve may have fewer points."""

    min_kw: float | None
    max_kw: float | None
    curve: tuple[tuple[float, float], ...] = ()
    window_steps: int = 0
    solves: int = 0
    complete: bool = False
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.min_kw is not None and self.max_kw is not None


def window_steps(inp: DispatchInput, window_s: float) -> int:
    """How many of the horizon's steps begin within `window_s` (at least step 0; every step
    when the horizon is shorter)."""
    return max(1, sum(1 for s in inp.step_starts_s if s < window_s - 1e-9))


def capped_input(inp: DispatchInput, limits_kw: Sequence[float] | FloatArray) -> DispatchInput:
    """`inp` with the import limit of each step replaced by `limits_kw` (NaN: none)."""
    limits = np.asarray(limits_kw, dtype=float)
    if limits.shape != (inp.horizon,):
        raise ValueError(f"need {inp.horizon} import limits, got {limits.shape}")
    first = None if math.isnan(limits[0]) else float(limits[0])
    if inp.horizon == 1:
        return dataclasses.replace(inp, import_limit_kw=first)
    forecast = inp.forecast if inp.forecast is not None else Forecast()
    series = pd.Series(limits, index=pd.RangeIndex(inp.horizon), dtype=float)
    return dataclasses.replace(
        inp,
        import_limit_kw=first,
        forecast=dataclasses.replace(forecast, import_limit_kw=series),
    )


@dataclass(slots=True)
class _Solved:
    objective: float
    imp: FloatArray
    slack: FloatArray


class _Stop(Exception):
    """The budget ran out, the solver failed, or a dispatch wants the model."""


def flexibility(
    session: HighsSession,
    network: Network,
    inp: DispatchInput,
    base_limit_kw: Sequence[float] | FloatArray,
    *,
    window_s: float = 3600.0,
    points: int = 4,
    budget_s: float = 1.0,
    resolution_kw: float | None = None,
    timer: Callable[[], float] = time.perf_counter,
    stop: Callable[[], bool] = lambda: False,
) -> FlexResult:
    """The flexibility of the interval dispatched on `inp` (see the module docstring).

    `session` must hold that interval's LP (as `Dispatcher.solve` left it); it is put back so.
    `resolution_kw` (None: 0.1 % of `max_kw`, at least 1 kW) is how close `min_kw` is found
    above the true lowest cap; `stop()` true ends the work between two solves."""
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    base = np.asarray(base_limit_kw, dtype=float)
    if base.shape != (inp.horizon,):
        raise ValueError(f"need {inp.horizon} base import limits, got {base.shape}")
    w = window_steps(inp, window_s)
    deadline = timer() + budget_s
    kept_limit = session.time_limit_s
    h = session.highs
    kept_basis = h.getBasis()
    rows = np.asarray(session.model.layout.rows["implim"], dtype=np.int32).reshape(-1)
    own = _row_limits(profiles(network, inp).import_limit)
    no_floor = np.full(len(rows), -INF)
    solves = 0

    def solve(cap: float | None) -> _Solved:
        nonlocal solves
        left = deadline - timer()
        if left < MIN_SOLVE_S or stop():
            raise _Stop("the budget ran out" if left < MIN_SOLVE_S else "a dispatch is due")
        limits = base.copy()
        if cap is not None:
            limits[:w] = np.fmin(limits[:w], cap)
        session.time_limit_s = min(kept_limit, left)
        h.changeRowsBounds(len(rows), rows, no_floor, _row_limits(limits))
        outcome, message = session.run()
        solves += 1
        if outcome is not SolveOutcome.OPTIMAL:
            raise _Stop(message or outcome.value)
        return _Solved(
            objective=session.objective(),
            imp=session.value("imp").astype(float),
            slack=np.maximum(session.value("s_imp").astype(float), 0.0),
        )

    min_kw: float | None = None
    max_kw: float | None = None
    min_cost = 0.0
    costs: dict[float, float] = {}
    reason = ""
    complete = False
    try:
        free = solve(None)
        max_kw = float(np.max(free.imp[:w]))
        costs[max_kw] = 0.0
        tol = inp.slack_tol_kw

        dt_h = np.asarray(inp.step_durations_s[:w], dtype=float) / 3600.0
        hours = float(np.sum(dt_h))

        def held(s: _Solved) -> bool:
            return bool(np.all(s.slack[:w] <= free.slack[:w] + tol))

        def missed(s: _Solved) -> float:
            """The energy (kWh) by which a cap's dispatch misses it over the window."""
            return float(np.dot(np.maximum(s.slack[:w] - free.slack[:w], 0.0), dt_h))

        step = resolution_kw or max(1.0, 1e-3 * abs(max_kw))
        hi = min_kw = max_kw
        reach = _reach_kw(inp) + 0.05 * abs(max_kw) + step
        lo: float | None = None
        short: list[tuple[float, float]] = []  # caps not held: (cap, energy missed)
        for _ in range(BRACKET_TRIES):
            guess = hi - reach
            s = solve(guess)
            if held(s):
                hi = min_kw = guess
                min_cost = max(s.objective - free.objective, 0.0)
                reach *= 2.0
            else:
                lo = guess
                short.append((guess, missed(s)))
                break
        if lo is None:
            raise _Stop(f"no cap it cannot hold found down to {hi:g} kW")
        bisect = False
        while True:
            lo = max(lo, min(_lower_bound(short, hours), hi - step))
            if hi - lo <= step * (1.0 + 1e-9):
                break
            gap = hi - lo
            # next to the lower bound (a cap a hair above it is held when the bound is the
            # lowest cap), or halfway when that made little progress last time
            probe = 0.5 * (lo + hi) if bisect else min(lo + 0.5 * step, hi - 0.5 * step)
            s = solve(probe)
            if held(s):
                hi = min_kw = probe
                min_cost = max(s.objective - free.objective, 0.0)
            else:
                lo = probe
                short.append((probe, missed(s)))
            bisect = not bisect and hi - lo > 0.5 * gap
        for k in range(1, points - 1):
            kw = min_kw + (max_kw - min_kw) * k / (points - 1)
            if kw - min_kw < 1e-6 or max_kw - kw < 1e-6:
                continue
            costs[kw] = max(solve(kw).objective - free.objective, 0.0)
        complete = True
    except _Stop as why:
        reason = str(why)
    finally:  # the model as the dispatch left it: its own limits, its basis
        session.time_limit_s = kept_limit
        h.changeRowsBounds(len(rows), rows, no_floor, own)
        if kept_basis.valid:
            h.setBasis(kept_basis)
    if max_kw is None or min_kw is None:
        return FlexResult(
            min_kw=None, max_kw=None, window_steps=w, solves=solves, reason=reason or "no solve"
        )
    costs[min_kw] = 0.0 if min_kw == max_kw else min_cost  # the lowest cap proven held
    return FlexResult(
        min_kw=min_kw,
        max_kw=max_kw,
        curve=_curve(costs, min_kw, max_kw),
        window_steps=w,
        solves=solves,
        complete=complete,
        reason=reason,
    )


def _row_limits(limits_kw: FloatArray) -> FloatArray:
    """The import-limit rows' upper bounds: the limit, or none (NaN, or `LOOSE_KW` and
    beyond, as `DispatchModel.row_bounds` has them)."""
    limits = np.asarray(limits_kw, dtype=float)
    return np.where(np.isnan(limits) | (np.abs(limits) >= LOOSE_KW), INF, limits)


def _lower_bound(short: list[tuple[float, float]], hours: float) -> float:
    """A cap below the lowest one held, from the caps not held and the energy each missed
    over the window (`hours` long).

    The least energy missed is convex in the cap and falls as it rises, reaching 0 at the
    lowest cap held: the line through the two caps not held nearest to it cuts 0 at or below
    it (the secant of a convex function, extended); and from a single one, the lowest cap lies
    above it by at least the energy missed over the window's hours (the dispatch that holds
    the lowest cap misses a cap `d` below it by at most `d` at each step). Rounding or a
    dispatch that trades a little slack for its other costs can only make the bound loose,
    never let an unheld cap be reported: `min_kw` is always a cap proven held."""
    short = sorted(short)
    c2, m2 = short[-1]
    bound = c2 + m2 / hours
    if len(short) >= 2:
        c1, m1 = short[-2]
        if m1 > m2 > 0.0 and c2 > c1:
            bound = max(bound, c2 + m2 * (c2 - c1) / (m1 - m2))
    return bound


def _reach_kw(inp: DispatchInput) -> float:
    """How far the units could move the head import: every battery from full charge to full
    discharge, every flexible load from nominal to its floor."""
    return sum(2.0 * b.p_max_kw for b in inp.batteries) + sum(
        f.p_nominal_kw - f.p_min_kw for f in inp.flexible_loads
    )


def _curve(
    costs: dict[float, float], min_kw: float, max_kw: float
) -> tuple[tuple[float, float], ...]:
    """The points ascending in kW, the last at `max_kw` costing 0, each costing no less than
    the next (the solver's rounding evened out); points without a cost are left out."""
    kws = sorted(k for k, c in costs.items() if math.isfinite(c) and min_kw <= k <= max_kw)
    if max_kw - min_kw < 1e-6:
        return ((max_kw, 0.0),)
    out: list[tuple[float, float]] = []
    floor = 0.0
    for kw in reversed(kws):
        cost = 0.0 if kw == max_kw else max(costs[kw], floor)
        floor = cost
        out.append((kw, cost))
    return tuple(reversed(out))
