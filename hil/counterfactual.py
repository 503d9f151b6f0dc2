"""Grading a DR baseline against the counterfactual: the truth the rig can show and no meter can.

A baseline estimates what the feeder would have imported over an event had it not been
called. Run the same scenario twice, with the event and without it (everything else alike:
seeds, days, tariff, controller), and the run without it *is* that import, measured by the
physics (pandapower), not estimated. Pure: samples and series in, figures out.

``Truth`` holds, per interval inside the event (``[start, end)``, by the interval's UTC start),
the physics' head import in both runs and what follows from them:

* true delivered kWh: ``Σ (counterfactual − actual) · Δt``;
* true requested kWh: ``reduce_by``: its kW; ``import_limit``: ``max(0, counterfactual − limit)``,
  summed over the intervals (the event as the operator would have sized it knowing the truth);
* the true performance ratio, delivered over requested.

``grade(method, baseline_kw, meter_kw, truth)`` puts one baseline beside it: the baseline's
error interval by interval (``baseline − counterfactual``: its mean absolute value, RMSE and
mean, the bias; in kW and in % of the counterfactual's mean), then what a settlement computes
from it and the meter (delivered ``Σ (baseline − meter) · Δt``, requested, ratio) and each
one's error against the truth. A baseline that misses intervals (or a meter that does) is
graded on those it has, against the truth over the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from hil.kpis import Sample

__all__ = ["Grade", "Truth", "first_difference_s", "grade", "physics_import", "truth"]


def physics_import(samples: Sequence[Sample], start_utc: datetime) -> pd.Series:
    """The physics' head import (kW) of a run, by the UTC start of each interval."""
    index = pd.DatetimeIndex(
        [start_utc + timedelta(seconds=s.t_s) for s in samples], name="start"
    ).tz_convert("UTC")
    return pd.Series([s.import_kw for s in samples], index=index, name="import_kw", dtype=float)


def first_difference_s(
    actual: Sequence[Sample], counterfactual: Sequence[Sample], *, tolerance_kw: float = 0.0
) -> float | None:
    """The first scenario second at which the two runs' physics differ (head import beyond
    ``tolerance_kw``, or any device's power, state of charge or bus voltage at all); ``None``
    when they never do over the intervals both have."""
    for a, c in zip(actual, counterfactual, strict=False):
        if a.t_s != c.t_s:
            raise ValueError(f"the runs' intervals differ: {a.t_s:g} s against {c.t_s:g} s")
        if (
            abs(a.import_kw - c.import_kw) > tolerance_kw
            or a.battery_kw != c.battery_kw
            or a.pv_kw != c.pv_kw
            or a.battery_soc_pct != c.battery_soc_pct
            or a.v_pu != c.v_pu
        ):
            return a.t_s
    return None


def _requested_kw(
    baseline_kw: pd.Series, *, import_limit_kw: float | None, reduce_by_kw: float | None
) -> pd.Series:
    if reduce_by_kw is not None:
        return pd.Series(reduce_by_kw, index=baseline_kw.index, dtype=float)
    if import_limit_kw is None:
        raise ValueError("an event needs import_limit_kw or reduce_by_kw to be graded")
    return (baseline_kw - import_limit_kw).clip(lower=0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Truth:
    """The event's truth from the two runs (see the module docstring)."""

    start: datetime
    end: datetime
    interval_s: float
    import_limit_kw: float | None
    reduce_by_kw: float | None
    counterfactual_kw: pd.Series
    """The physics' head import without the event, per interval inside it."""
    actual_kw: pd.Series
    """The physics' head import with the event, per interval inside it."""

    @property
    def hours(self) -> float:
        return self.interval_s / 3600.0

    @property
    def delivered_kwh(self) -> float:
        return float((self.counterfactual_kw - self.actual_kw).sum() * self.hours)

    @property
    def requested_kwh(self) -> float:
        requested = _requested_kw(
            self.counterfactual_kw,
            import_limit_kw=self.import_limit_kw,
            reduce_by_kw=self.reduce_by_kw,
        )
        return float(requested.sum() * self.hours)

    @property
    def ratio(self) -> float | None:
        requested = self.requested_kwh
        return self.delivered_kwh / requested if requested > 0.0 else None


def truth(
    actual: Sequence[Sample],
    counterfactual: Sequence[Sample],
    *,
    start_utc: datetime,
    event_start: datetime,
    event_end: datetime,
    interval_s: float,
    import_limit_kw: float | None = None,
    reduce_by_kw: float | None = None,
) -> Truth:
    """The truth over ``[event_start, event_end)`` from the two runs' samples (``start_utc``:
    when the runs started)."""
    if event_end <= event_start:
        raise ValueError(f"the event must end after it starts ({event_start} .. {event_end})")
    a = physics_import(actual, start_utc)
    c = physics_import(counterfactual, start_utc)
    inside = (c.index >= event_start) & (c.index < event_end)
    window = c.index[inside]
    if window.empty or not window.isin(a.index).all():
        raise ValueError(f"the runs do not both cover the event ({event_start} .. {event_end})")
    return Truth(
        start=event_start,
        end=event_end,
        interval_s=interval_s,
        import_limit_kw=import_limit_kw,
        reduce_by_kw=reduce_by_kw,
        counterfactual_kw=c[window],
        actual_kw=a[window],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Grade:
    """One baseline against the truth (see the module docstring); kW, kWh, % and ratios."""

    method: str
    intervals: int
    """The event's intervals the baseline covers (and is graded on)."""
    mean_abs_error_kw: float
    mean_abs_error_pct: float
    rmse_kw: float
    bias_kw: float
    """Mean of ``baseline − counterfactual``: > 0 overstates what the feeder would have drawn."""
    bias_pct: float
    delivered_kwh: float
    """``Σ (baseline − meter) · Δt``: what a settlement on this baseline pays for."""
    delivered_error_kwh: float
    delivered_error_pct: float | None
    """Of the true delivered energy (``None`` when that is zero)."""
    requested_kwh: float
    ratio: float | None
    """Delivered over requested on this baseline (``None`` when nothing was requested)."""
    ratio_error: float | None
    """``ratio`` minus the true ratio (``None`` when either is)."""


def grade(method: str, baseline_kw: pd.Series, meter_kw: pd.Series, truth: Truth) -> Grade:
    """Grade ``baseline_kw`` (per interval, by its UTC start) against ``truth``, with the
    settlement's figures computed from ``meter_kw`` (the head import the controller measured
    in the run with the event)."""
    index = baseline_kw.index.intersection(truth.counterfactual_kw.index)
    index = index.intersection(meter_kw.index)
    if index.empty:
        raise ValueError(f"baseline {method!r} has no interval inside the event")
    b = baseline_kw[index].astype(float)
    c = truth.counterfactual_kw[index]
    err = (b - c).to_numpy()
    mean_c = float(c.mean())
    h = truth.hours
    delivered = float((b - meter_kw[index]).sum() * h)
    requested = float(
        _requested_kw(
            b, import_limit_kw=truth.import_limit_kw, reduce_by_kw=truth.reduce_by_kw
        ).sum()
        * h
    )
    true_delivered = float((c - truth.actual_kw[index]).sum() * h)
    true_requested = float(
        _requested_kw(
            c, import_limit_kw=truth.import_limit_kw, reduce_by_kw=truth.reduce_by_kw
        ).sum()
        * h
    )
    ratio = delivered / requested if requested > 0.0 else None
    true_ratio = true_delivered / true_requested if true_requested > 0.0 else None
    return Grade(
        method=method,
        intervals=len(index),
        mean_abs_error_kw=float(np.mean(np.abs(err))),
        mean_abs_error_pct=100.0 * float(np.mean(np.abs(err))) / mean_c,
        rmse_kw=math.sqrt(float(np.mean(err * err))),
        bias_kw=float(np.mean(err)),
        bias_pct=100.0 * float(np.mean(err)) / mean_c,
        delivered_kwh=delivered,
        delivered_error_kwh=delivered - true_delivered,
        delivered_error_pct=(
            100.0 * (delivered - true_delivered) / abs(true_delivered)
            if true_delivered != 0.0
            else None
        ),
        requested_kwh=requested,
        ratio=ratio,
        ratio_error=None if ratio is None or true_ratio is None else ratio - true_ratio,
    )
