"""Forecasts for the receding horizon, given as pandas series and frames.

Everything is read by position: entry (row) `t` applies to step `t` of the horizon (step 0 is
the interval being dispatched). A missing series means "as now".

- `load` and `pv` are ratios to what was measured now (loads and each PV unit's
  `available_kw` are multiplied by them).
- `load_kw` (steps × bus id) and `pv_kw` (steps × PV unit name) are absolute: a bus's
  uncontrollable load in kW (its kvar scaled by the same ratio to its load now), a unit's
  available power in kW. They govern steps 1.. for the buses and units they have a column for
  (row 0 is ignored: step 0 is what was measured); the others follow `load` and `pv`.
- `price` is the import price per kWh of each step (step 0 included), `export_price` what
  export earns per kWh (None: the import price). An export price above the import price counts
  as the import price (otherwise the LP would import to export).
- `import_limit_kw` and `export_limit_kw` are the feeder-head limits of steps 1.. (NaN: no
  limit at that step; row 0 is ignored: `DispatchInput`'s limits govern step 0). Without the
  series every step has step 0's limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["Forecast"]

FloatArray = npt.NDArray[np.float64]

_SERIES = ("load", "pv", "price", "export_price", "import_limit_kw", "export_limit_kw")
_FRAMES = ("load_kw", "pv_kw")


@dataclass(frozen=True, slots=True, kw_only=True)
class Forecast:
    """Per-step forecasts of load, PV, prices and limits (see the module docstring)."""

    load: pd.Series | None = None
    pv: pd.Series | None = None
    price: pd.Series | None = None
    load_kw: pd.DataFrame | None = None
    pv_kw: pd.DataFrame | None = None
    export_price: pd.Series | None = None
    import_limit_kw: pd.Series | None = None
    export_limit_kw: pd.Series | None = None

    def check(self, horizon: int) -> None:
        """`ValueError` naming the series (and column) and step that cannot be used for
        `horizon` steps."""
        for name in _SERIES:
            series: pd.Series | None = getattr(self, name)
            if series is None:
                continue
            if len(series) < horizon:
                raise ValueError(
                    f"forecast {name}: has {len(series)} steps, the horizon needs {horizon}"
                )
            values = _numbers(series.iloc[:horizon])
            limit = name.endswith("limit_kw")
            for step, value in enumerate(values):
                if limit and (step == 0 or math.isnan(value)):
                    continue  # step 0 is DispatchInput's; NaN is "no limit"
                if not math.isfinite(value):
                    raise ValueError(f"forecast {name}: step {step} is not a finite number")
                if name in ("load", "pv", "export_limit_kw") and value < 0:
                    raise ValueError(f"forecast {name}: step {step} is negative ({value})")
        for name in _FRAMES:
            frame: pd.DataFrame | None = getattr(self, name)
            if frame is None:
                continue
            if not isinstance(frame, pd.DataFrame):
                raise ValueError(f"forecast {name}: must be a DataFrame (steps × columns)")
            if len(frame) < horizon:
                raise ValueError(
                    f"forecast {name}: has {len(frame)} steps, the horizon needs {horizon}"
                )
            if frame.columns.has_duplicates:
                raise ValueError(f"forecast {name}: duplicate columns")
            values = _frame_numbers(frame.iloc[1:horizon])
            bad = ~np.isfinite(values)
            if name == "pv_kw":
                bad |= values < 0
            if np.any(bad):
                step, col = (int(i) for i in np.argwhere(bad)[0])
                what = "negative" if np.isfinite(values[step, col]) else "not a finite number"
                raise ValueError(
                    f"forecast {name}: column {_label(frame.columns[col])} step {step + 1} "
                    f"is {what}"
                )

    def steps(self, name: str, horizon: int, now: float) -> FloatArray:
        """The `horizon` values of series `name` (`now` repeated when there is none)."""
        series: pd.Series | None = getattr(self, name)
        if series is None:
            return np.full(horizon, now, dtype=float)
        return _numbers(series.iloc[:horizon])

    def limit_steps(self, name: str, horizon: int, now: float | None) -> FloatArray:
        """The limit `name` per step, NaN for none: `now` at step 0 (and at every step when the
        series is absent), the series after."""
        out = np.full(horizon, math.nan if now is None else now, dtype=float)
        series: pd.Series | None = getattr(self, name)
        if series is not None and horizon > 1:
            out[1:] = _numbers(series.iloc[1:horizon])
        return out

    def frame_columns(self, name: str, horizon: int) -> dict[object, FloatArray]:
        """The `horizon` rows of frame `name`, per column (empty when there is none)."""
        frame: pd.DataFrame | None = getattr(self, name)
        if frame is None:
            return {}
        values = _frame_numbers(frame.iloc[:horizon])
        return {col: values[:, k] for k, col in enumerate(frame.columns)}


def _label(column: object) -> str:
    """A bus id as its number, a unit name quoted."""
    if isinstance(column, int | np.integer):
        return str(int(column))
    return repr(column)


def _numbers(series: pd.Series) -> FloatArray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)


def _frame_numbers(frame: pd.DataFrame) -> FloatArray:
    """The frame as floats, anything that is not a number as NaN (fast when it is numeric)."""
    try:
        out: FloatArray = frame.to_numpy(dtype=float)
    except (TypeError, ValueError):
        out = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return out
