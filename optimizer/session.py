"""A persistent HiGHS model of the dispatch LP: built once, then only its numbers change.

`HighsSession` passes the arrays of an `optimizer.lp.DispatchModel` to HiGHS once (the fixed
rows, then the moving block: loss cuts and the tail's linearised rows). Each interval
`update(numbers)` pushes the new bounds, costs and right-hand sides in one vectorised call
each, and replaces the moving block (its coefficients move with the operating points) by
deleting and re-adding those rows; the previous basis is put back, so HiGHS's dual simplex
starts from the last optimum instead of from scratch.
"""

from __future__ import annotations

import enum
import math
import time
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt

from optimizer.lp import DispatchModel, LpNumbers

__all__ = ["HighsSession", "SolveOutcome"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
INF = highspy.kHighsInf


class SolveOutcome(enum.Enum):
    """How a HiGHS run ended."""

    OPTIMAL = "optimal"
    TIME_LIMIT = "time_limit"
    FAILED = "failed"


WARM_ITERATIONS_MIN = 2000
"""Simplex iterations a warm start gets at least; otherwise half of what the first solve of the
model took from scratch (past that the kept basis is not helping). Warm starts take tens to hundreds; on a badly conditioned re-linearised
LP (a 1,000-bus feeder's third pass) HiGHS's dual simplex was seen wandering for over a minute
from the kept basis where a solve from scratch took under 2 s. An iteration count, not a time,
so the same LP takes the same path on any machine."""
_NO_ITERATION_LIMIT = 2_147_483_647


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
    """The LP of one network, unit set and horizon shape, held in HiGHS between intervals."""

    def __init__(self, model: DispatchModel, *, time_limit_s: float) -> None:
        self.model = model
        self.time_limit_s = time_limit_s
        lay = model.layout
        num = model.numbers
        lo, hi, cost = model.column_bounds()
        row_lo, row_hi = model.row_bounds()
        n_fixed = lay.n_fixed
        lp = highspy.HighsLp()
        lp.num_col_ = lay.n_col
        lp.num_row_ = lay.n_row
        lp.col_cost_ = cost
        lp.col_lower_ = lo
        lp.col_upper_ = hi
        lp.row_lower_ = np.concatenate([row_lo, num.mov_lo])
        lp.row_upper_ = np.concatenate([row_hi, num.mov_hi])
        lp.offset_ = float(num.offset)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.concatenate(
            [model.start[:-1], num.mov_start + model.start[-1]]
        ).astype(np.int32)
        lp.a_matrix_.index_ = np.concatenate([model.index, num.mov_index]).astype(np.int32)
        lp.a_matrix_.value_ = np.concatenate([model.value, num.mov_value])
        self.highs = quiet_highs(time_limit_s)
        self.highs.passModel(lp)
        self.n_col, self.n_row = lay.n_col, lay.n_row
        self.col_idx = lay.cols
        self._fixed_rows = np.arange(n_fixed, dtype=np.int32)
        self._moving_rows = np.arange(n_fixed, lay.n_row, dtype=np.int32)
        self._all_cols = np.arange(lay.n_col, dtype=np.int32)
        self.solves = 0
        self.cold_restarts = 0
        """Warm starts given up for a solve from scratch (see `run`)."""
        self.warm_iteration_limit = WARM_ITERATIONS_MIN

    def update(self, num: LpNumbers) -> None:
        """Push every changing number of `num` into the HiGHS model, keeping its basis."""
        h = self.highs
        lo, hi, cost = self.model.column_bounds(num)
        h.changeColsBounds(self.n_col, self._all_cols, lo, hi)
        h.changeColsCost(self.n_col, self._all_cols, cost)
        h.changeObjectiveOffset(float(num.offset))
        row_lo, row_hi = self.model.row_bounds(num)
        if len(self._fixed_rows):
            h.changeRowsBounds(len(self._fixed_rows), self._fixed_rows, row_lo, row_hi)
        self._replace_moving(num)

    def _replace_moving(self, num: LpNumbers) -> None:
        size = len(self._moving_rows)
        if not size:
            return
        h = self.highs
        basis = h.getBasis()
        h.deleteRows(size, self._moving_rows)
        h.addRows(
            size,
            num.mov_lo,
            num.mov_hi,
            len(num.mov_value),
            num.mov_start[:-1],
            num.mov_index,
            num.mov_value,
        )
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
