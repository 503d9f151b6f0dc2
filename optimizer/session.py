"""A persistent HiGHS model of the dispatch LP: built once, then only its numbers change.

pulp builds the model (`optimizer.lp.build`); `HighsSession` copies it once into a `highspy.Highs`
object (columns in creation order, rows in insertion order, the loss-cut block last) and keeps
the index of every family. Each interval `update(numbers)` pushes the new bounds, costs and
right-hand sides in one vectorised call each, and replaces the loss-cut block (its coefficients
move with the operating point) by deleting and re-adding those rows; the previous basis is put
back, so HiGHS's dual simplex starts from the last optimum instead of from scratch.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt
import pulp

from optimizer.lp import (
    CUT_COLUMNS,
    LOOSE_KW,
    ROW_SENSE,
    DispatchModel,
    LpNumbers,
    constraint_list,
)

__all__ = ["HighsSession", "SolveOutcome"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
INF = highspy.kHighsInf


class SolveOutcome(enum.Enum):
    """How a HiGHS run ended."""

    OPTIMAL = "optimal"
    TIME_LIMIT = "time_limit"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class _CutBlock:
    start: int
    size: int
    starts: IntArray
    index: IntArray
    is_chord: npt.NDArray[np.bool_]
    mask: npt.NDArray[np.bool_]


WARM_ITERATIONS_MIN = 2000
"""Simplex iterations a warm start gets at least; otherwise half of what the first solve of the
model took from scratch (past that the kept basis is not helping). Warm starts take tens to hundreds; on a badly conditioned re-linearised
LP (a 1,000-bus feeder's third pass) HiGHS's dual simplex was seen wandering for over a minute
from the kept basis where a solve from scratch took under 2 s. An iteration count, not a time,
so the same LP takes the same path on any machine."""
_NO_ITERATION_LIMIT = 2_147_483_647


def _unbounded(values: FloatArray) -> FloatArray:
    """`values` with the stand-ins for absent limits (`LOOSE_KW` and beyond) as infinities:
    HiGHS takes them as free rows, where a finite 1e9 next to 1e-7 tolerances makes the LP
    badly scaled (a warm re-solve could stall in its clean-up phase)."""
    return np.where(np.abs(values) >= LOOSE_KW, np.copysign(INF, values), values)


def _bounds(sense: int, rhs: FloatArray) -> tuple[FloatArray, FloatArray]:
    rhs = _unbounded(rhs)
    if sense == pulp.LpConstraintEQ:
        return rhs, rhs
    if sense == pulp.LpConstraintLE:
        return np.full_like(rhs, -INF), rhs
    return rhs, np.full_like(rhs, INF)


def _solver_core() -> Any:
    """highspy's C++ solver class (``_Highs``), beneath its Python ``Highs``."""
    for cls in highspy.Highs.__mro__[1:]:
        if cls.__name__ == "_Highs":
            return cls
    return highspy.Highs  # pragma: no cover - a highspy without the split: may print a banner


def quiet_highs(time_limit_s: float) -> Any:
    """A HiGHS solver that writes nothing to the process's standard output.

    HiGHS writes its banner ("Running HiGHS ...") to file descriptor 1 at the first call made
    while ``output_flag`` is on (HiGHS issues 1702 and 2749), and highspy's ``Highs()`` makes
    such a call in its constructor (it enables its callbacks), before any option can be set.
    The solver is therefore made from highspy's C++ core, which logs nothing until asked, and
    ``output_flag`` is turned off first: each instance is quiet on its own, and nothing else
    of the process (``feederd solve --json`` prints JSON alone) is touched.
    """
    h = _solver_core()()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    return h


class HighsSession:
    """The LP of one network and unit set, held in HiGHS between intervals."""

    def __init__(self, model: DispatchModel, *, time_limit_s: float) -> None:
        self.model = model
        self.time_limit_s = time_limit_s
        columns = model.columns
        col_of = {v.name: i for i, v in enumerate(columns)}
        n_col = len(columns)
        lo = np.array([-INF if v.lowBound is None else v.lowBound for v in columns], dtype=float)
        hi = np.array([INF if v.upBound is None else v.upBound for v in columns], dtype=float)
        cost = np.zeros(n_col)
        for var, coef in model.problem.objective.items():
            cost[col_of[var.name]] += coef
        constraints = constraint_list(model.problem)
        row_of = {con.name: i for i, con in enumerate(constraints)}
        starts = [0]
        index: list[int] = []
        value: list[float] = []
        row_lo = np.empty(len(constraints))
        row_hi = np.empty(len(constraints))
        for i, con in enumerate(constraints):
            for var, coef in con.items():
                index.append(col_of[var.name])
                value.append(coef)
            starts.append(len(index))
            low, up = con.getLb(), con.getUb()
            row_lo[i] = -INF if low is None else low
            row_hi[i] = INF if up is None else up
        lp = highspy.HighsLp()
        lp.num_col_ = n_col
        lp.num_row_ = len(constraints)
        lp.col_cost_ = cost
        lp.col_lower_ = lo
        lp.col_upper_ = hi
        lp.row_lower_ = _unbounded(row_lo)
        lp.row_upper_ = _unbounded(row_hi)
        lp.offset_ = float(model.problem.objective.constant)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
        lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
        lp.a_matrix_.value_ = np.array(value, dtype=float)
        self.highs = quiet_highs(time_limit_s)
        self.highs.passModel(lp)
        self.n_col, self.n_row = n_col, len(constraints)
        self.col_idx = {
            name: np.vectorize(lambda v: col_of[v.name], otypes=[np.int32])(arr)
            if arr.size
            else np.zeros(arr.shape, dtype=np.int32)
            for name, arr in model.cols.items()
        }
        self.row_idx = {
            name: np.vectorize(lambda r: row_of[r], otypes=[np.int32])(arr)
            if arr.size
            else np.zeros(arr.shape, dtype=np.int32)
            for name, arr in model.rows.items()
        }
        flat_cuts = model.cut_rows.reshape(-1)
        start = row_of[flat_cuts[0]] if flat_cuts.size else self.n_row
        size = flat_cuts.size
        if start + size != self.n_row:
            raise AssertionError("the loss-cut block must be the last rows of the model")
        layout = np.broadcast_to(model.cut_layout, model.cut_rows.shape + (len(CUT_COLUMNS),))
        cols = np.stack(
            [
                np.broadcast_to(self.col_idx[name][..., None], model.cut_rows.shape)
                for name in CUT_COLUMNS
            ],
            axis=-1,
        )
        mask = layout.reshape(-1, len(CUT_COLUMNS))
        counts = mask.sum(axis=1)
        is_chord = np.zeros(model.cut_rows.shape, dtype=bool)
        is_chord[..., -1] = True
        self._cuts = _CutBlock(
            start=start,
            size=size,
            starts=np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int32),
            index=cols.reshape(-1, len(CUT_COLUMNS))[mask].astype(np.int32),
            is_chord=is_chord.reshape(-1),
            mask=mask,
        )
        self._all_cols = np.arange(n_col, dtype=np.int32)
        ordinary = [self.row_idx[name].reshape(-1) for name in ROW_SENSE if name in self.row_idx]
        self._ordinary_rows = np.concatenate(ordinary) if ordinary else np.zeros(0, np.int32)
        self.solves = 0
        self.cold_restarts = 0
        """Warm starts given up for a solve from scratch (see `run`)."""
        self.warm_iteration_limit = WARM_ITERATIONS_MIN

    def update(self, num: LpNumbers) -> None:
        """Push every changing number of `num` into the HiGHS model, keeping its basis."""
        h = self.highs
        lo = np.empty(self.n_col)
        hi = np.empty(self.n_col)
        cost = np.empty(self.n_col)
        for name, idx in self.col_idx.items():
            lo[idx] = num.col_lo[name]
            hi[idx] = num.col_hi[name]
            cost[idx] = num.cost[name]
        h.changeColsBounds(self.n_col, self._all_cols, lo, hi)
        h.changeColsCost(self.n_col, self._all_cols, cost)
        h.changeObjectiveOffset(float(num.offset))
        row_lo, row_hi = [], []
        for name in ROW_SENSE:
            if name in self.row_idx:
                low, up = _bounds(ROW_SENSE[name], np.asarray(num.rhs[name], dtype=float))
                row_lo.append(low.reshape(-1))
                row_hi.append(up.reshape(-1))
        if len(self._ordinary_rows):
            h.changeRowsBounds(
                len(self._ordinary_rows),
                self._ordinary_rows,
                np.concatenate(row_lo),
                np.concatenate(row_hi),
            )
        self._replace_cuts(num)

    def _replace_cuts(self, num: LpNumbers) -> None:
        c = self._cuts
        if not c.size:
            return
        h = self.highs
        basis = h.getBasis()
        h.deleteRows(c.size, np.arange(c.start, c.start + c.size, dtype=np.int32))
        rhs = num.cut_rhs.reshape(-1)
        lower = np.where(c.is_chord, -INF, rhs)
        upper = np.where(c.is_chord, rhs, INF)
        values = num.cut_coef.reshape(-1, len(CUT_COLUMNS))[c.mask]
        h.addRows(c.size, lower, upper, len(values), c.starts, c.index, values)
        if basis.valid:
            h.setBasis(basis)

    def run(self) -> tuple[SolveOutcome, str]:
        """Solve from the kept basis, within `time_limit_s`; a warm start that wanders (more
        simplex iterations than `warm_iteration_limit`) is dropped and the LP solved from
        scratch in the time left.

        HiGHS compares its `time_limit` with the run time it has accumulated over every `run`
        of the instance, not with this run's: a kept model that had spent 1.5 s solving in
        total, over a thousand intervals, reported every later interval as timed out. Each
        run's limit is therefore set past the time already accumulated."""
        h = self.highs
        deadline = float(h.getRunTime()) + self.time_limit_s
        h.setOptionValue("time_limit", deadline)
        warm = self.solves > 0
        if warm:
            h.setOptionValue("simplex_iteration_limit", self.warm_iteration_limit)
        h.run()
        self.solves += 1
        status = h.getModelStatus()
        if warm:
            h.setOptionValue("simplex_iteration_limit", _NO_ITERATION_LIMIT)
            if status == highspy.HighsModelStatus.kIterationLimit:
                self.cold_restarts += 1
                h.clearSolver()
                h.run()  # the same deadline: what is left of this run's time
                status = h.getModelStatus()
        else:
            self.warm_iteration_limit = max(
                WARM_ITERATIONS_MIN, int(h.getInfo().simplex_iteration_count) // 2
            )
        if status == highspy.HighsModelStatus.kOptimal:
            return SolveOutcome.OPTIMAL, ""
        if status == highspy.HighsModelStatus.kTimeLimit:
            return SolveOutcome.TIME_LIMIT, f"HiGHS hit its {self.time_limit_s} s limit"
        return SolveOutcome.FAILED, f"HiGHS: {h.modelStatusToString(status)}"

    def values(self) -> FloatArray:
        """The primal solution, by column."""
        return np.asarray(self.highs.getSolution().col_value, dtype=float)

    def value(self, family: str) -> FloatArray:
        """The solution of column family `family`, in its shape."""
        return self.values()[self.col_idx[family]]

    def objective(self) -> float:
        """The objective value of the last solve (offset included)."""
        value = float(self.highs.getInfo().objective_function_value)
        return value if math.isfinite(value) else math.nan

    def cold_solve_ms(self) -> float:
        """Milliseconds a fresh HiGHS takes to load and solve the current LP from scratch."""
        lp = self.highs.getLp()
        start = time.perf_counter()
        fresh = quiet_highs(self.time_limit_s)
        fresh.passModel(lp)
        fresh.run()
        return (time.perf_counter() - start) * 1000.0
