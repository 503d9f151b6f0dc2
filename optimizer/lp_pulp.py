"""The dispatch LP as a pulp problem, for CBC (the fallback solver) and MPS export.

Made from the same arrays HiGHS gets (`optimizer.lp.DispatchModel`), so every solver sees the
same LP: one variable per column, named `family_t{step}_{item}`, one constraint per row with
its sense from its bounds (free rows, absent limits, are left out: they constrain nothing).
pulp builds objects row by row, slowly on a large feeder: this is the fallback path.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pulp

from optimizer.lp import DispatchModel

__all__ = ["PulpModel", "to_pulp"]

FloatArray = npt.NDArray[np.float64]


class PulpModel:
    """A pulp problem and its variables in column order."""

    __slots__ = ("columns", "problem")

    def __init__(self, problem: pulp.LpProblem, columns: list[pulp.LpVariable]) -> None:
        self.problem = problem
        self.columns = columns

    def values(self) -> FloatArray:
        """The solution by column (0 for a variable the solver left without a value)."""
        return np.array([v.value() or 0.0 for v in self.columns], dtype=float)


def _variable(
    problem: pulp.LpProblem, name: str, low: float | None, up: float | None
) -> pulp.LpVariable:
    """A continuous variable attached to the problem (pulp 3.x API, with a pulp 2.x fallback)."""
    add = getattr(problem, "add_variable", None)
    if add is not None:
        return add(name, lowBound=low, upBound=up)
    return pulp.LpVariable(name, lowBound=low, upBound=up)


def to_pulp(model: DispatchModel) -> PulpModel:
    """The LP of `model` (with the numbers it was built with) as a pulp problem."""
    num = model.numbers
    problem = pulp.LpProblem("feederd_dispatch", pulp.LpMinimize)
    lo, hi, cost = model.column_bounds()
    columns = [
        _variable(
            problem,
            name,
            None if math.isinf(low) else float(low),
            None if math.isinf(up) else float(up),
        )
        for name, low, up in zip(model.column_names(), lo, hi, strict=True)
    ]
    row_lo, row_hi = model.row_bounds()
    starts = np.concatenate([model.start[:-1], num.mov_start + model.start[-1]])
    index = np.concatenate([model.index, num.mov_index])
    value = np.concatenate([model.value, num.mov_value])
    lows = np.concatenate([row_lo, num.mov_lo])
    highs = np.concatenate([row_hi, num.mov_hi])
    for i in range(len(lows)):
        span = slice(int(starts[i]), int(starts[i + 1]))
        low, up = float(lows[i]), float(highs[i])
        if math.isinf(low) and math.isinf(up):
            continue
        expr = pulp.LpAffineExpression(
            [(columns[int(j)], float(a)) for j, a in zip(index[span], value[span], strict=True)]
        )
        if low == up:
            problem.addConstraint(pulp.LpConstraint(expr, pulp.LpConstraintEQ, f"r{i}", low))
            continue
        if not math.isinf(low):
            problem.addConstraint(pulp.LpConstraint(expr, pulp.LpConstraintGE, f"r{i}", low))
        if not math.isinf(up):
            name = f"r{i}" if math.isinf(low) else f"r{i}_up"
            problem.addConstraint(pulp.LpConstraint(expr, pulp.LpConstraintLE, name, up))
    problem += pulp.LpAffineExpression(
        [(columns[j], float(c)) for j, c in enumerate(cost) if c != 0.0], constant=num.offset
    )
    return PulpModel(problem, columns)
