"""Forecasts for the receding horizon, given as pandas series.

Each series is read by position: entry `t` applies to step `t` of the horizon (step 0 is the
interval being dispatched). `load` and `pv` are ratios to what was measured now (loads and
each PV unit's `available_kw` are multiplied by them; step 0's entry is normally 1.0), `price`
is the energy price per kWh of each step. A missing series means "as now".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["Forecast"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True)
class Forecast:
    """Per-step load ratio, PV availability ratio and price (see the module docstring)."""

    load: pd.Series | None = None
    pv: pd.Series | None = None
    price: pd.Series | None = None

    def check(self, horizon: int) -> None:
        """`ValueError` naming the series and step that cannot be used for `horizon` steps."""
        for name, series in (("load", self.load), ("pv", self.pv), ("price", self.price)):
            if series is None:
                continue
            if len(series) < horizon:
                raise ValueError(
                    f"forecast {name}: has {len(series)} steps, the horizon needs {horizon}"
                )
            values = pd.to_numeric(series.iloc[:horizon], errors="coerce").to_numpy(float)
            for step, value in enumerate(values):
                if not math.isfinite(value):
                    raise ValueError(f"forecast {name}: step {step} is not a finite number")
                if name != "price" and value < 0:
                    raise ValueError(f"forecast {name}: step {step} is negative ({value})")

    def steps(self, name: str, horizon: int, now: float) -> FloatArray:
        """The `horizon` values of series `name` (`now` repeated when there is none)."""
        series: pd.Series | None = getattr(self, name)
        if series is None:
            return np.full(horizon, now, dtype=float)
        return pd.to_numeric(series.iloc[:horizon]).to_numpy(dtype=float)
