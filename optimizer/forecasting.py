"""The math of the load and PV forecasts: seasonal baseline, persistence blend, clear sky, the
statistical model and the error scores. Pure: arrays in, arrays out; no clock, no I/O, no log.

History is held at slot resolution (``slot_s``, 900 s by default) as a grid of days × slots of
the day × series (a series is one bus's load or one inverter's PV available, kW), NaN where a
slot was not measured. The controller (``controller.forecasts``) keeps the grid and calls these
functions; everything here is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "BLEND_HORIZON_S",
    "CLEAR_SKY_MIN_W_M2",
    "LEAD_BUCKETS_S",
    "PV_INDEX_TAU_S",
    "FittedModel",
    "ScoreSums",
    "anomaly_blend",
    "clear_sky_ghi",
    "fill_holes",
    "fit_total_load",
    "index_blend",
    "lead_bucket",
    "overlap_weights",
    "persistence_weight",
    "pv_scale",
    "recency_weights",
    "score",
    "seasonal_profile",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

BLEND_HORIZON_S = 3600.0
"""How far ahead the latest measurement still counts: its weight falls linearly from 1 now to
0 at one hour ahead (a load's departure from its usual level lasts minutes to an hour)."""
PV_INDEX_TAU_S = 5400.0
"""How fast the clear-sky index measured now relaxes toward the recent index (e-folding time:
cloud cover persists for an hour or two)."""
CLEAR_SKY_MIN_W_M2 = 100.0
"""Below this clear-sky irradiance (dawn, dusk) a PV ratio says little: no index, no scale."""
LEAD_BUCKETS_S: tuple[tuple[str, float, float], ...] = (
    ("0-1h", 0.0, 3600.0),
    ("1-4h", 3600.0, 4 * 3600.0),
    ("4-24h", 4 * 3600.0, 24 * 3600.0 + 1.0),
)
"""The horizon buckets the forecast error is scored in: (label, lead from, lead to) seconds."""


# -- seasonal baseline ------------------------------------------------------------------------


def recency_weights(age_days: FloatArray, half_life_days: float) -> FloatArray:
    """``0.5 ** (age / half_life)``: a day ``half_life_days`` older counts half as much."""
    return np.power(0.5, age_days / half_life_days)


def seasonal_profile(
    grid: FloatArray,
    day_weekend: BoolArray,
    day_valid: BoolArray,
    weights: FloatArray,
    *,
    min_days: int = 2,
) -> FloatArray:
    """The seasonal baseline for both day types: ``profile[t, slot, series]`` (``t`` 0 for a
    weekday, 1 for a weekend day) is the recency-weighted mean of that slot of the day on the
    past days of the same type, or of all days where fewer than ``min_days`` of that type were
    measured at that slot; NaN where no day was.

    ``grid[day, slot, series]`` holds slot means (NaN: not measured), ``day_weekend[day]`` the
    day type, ``day_valid[day]`` whether the row holds a day at all, ``weights[day]`` its
    recency weight. A common factor in the weights cancels, so one profile serves every target
    day of the horizon."""
    measured = ~np.isnan(grid) & day_valid[:, None, None]
    values = np.where(measured, grid, 0.0)
    m = measured.astype(float)
    w_all = np.where(day_valid, weights, 0.0)
    num_all = np.einsum("d,dts->ts", w_all, values)
    den_all = np.einsum("d,dts->ts", w_all, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        every = np.where(den_all > 0, num_all / den_all, np.nan)
    out = np.empty((2, *grid.shape[1:]), dtype=float)
    for t, mask in enumerate((~day_weekend, day_weekend)):
        w = np.where(mask, w_all, 0.0)
        num = np.einsum("d,dts->ts", w, values)
        den = np.einsum("d,dts->ts", w, m)
        days = np.einsum("d,dts->ts", mask.astype(float), m)
        with np.errstate(invalid="ignore", divide="ignore"):
            same = num / den
        out[t] = np.where(days >= min_days, same, every)
    return out


def persistence_weight(lead_s: FloatArray, horizon_s: float = BLEND_HORIZON_S) -> FloatArray:
    """How much the latest measurement counts at each lead (1 now, 0 from ``horizon_s``)."""
    return np.clip(1.0 - np.asarray(lead_s, dtype=float) / horizon_s, 0.0, 1.0)


def anomaly_blend(
    base: FloatArray, base_now: FloatArray, latest: FloatArray, lead_s: FloatArray
) -> FloatArray:
    """``base + w(lead)·(latest − base_now)``: the baseline shifted by how far the latest
    measurement departs from it now, the shift fading over the first hour (loads).

    ``base[k, s]`` per slot and series, ``base_now[s]`` the baseline at the current slot,
    ``latest[s]`` the latest measurement, ``lead_s[k]``. Where the baseline is NaN (never
    measured at that slot) the latest measurement stands alone (persistence); where the latest
    is NaN the baseline stands alone."""
    w = persistence_weight(lead_s)[:, None]
    shift = np.where(np.isnan(latest) | np.isnan(base_now), 0.0, latest - base_now)
    out = base + w * shift[None, :]
    return np.where(np.isnan(out), latest[None, :], out)


def index_blend(
    base: FloatArray,
    base_now: FloatArray,
    latest: FloatArray,
    lead_s: FloatArray,
    *,
    floor: FloatArray | None = None,
) -> FloatArray:
    """``base·(1 + w(lead)·(latest/base_now − 1))``: the baseline scaled by how far the latest
    measurement departs from it now, in proportion (PV without a clear sky: the seasonal PV
    plays the clear sky, the ratio the clear-sky index). The ratio is taken only where
    ``base_now`` exceeds ``floor`` (5 % of the series' largest baseline by default) and is
    clipped to 0..2; NaN baselines give the latest (persistence). Never negative."""
    if floor is None:
        with np.errstate(invalid="ignore"):
            peak = np.nanmax(np.where(np.isnan(base), -np.inf, base), axis=0)
        floor = np.where(np.isfinite(peak), 0.05 * peak, np.inf)
    ok = ~np.isnan(latest) & ~np.isnan(base_now) & (base_now > np.maximum(floor, 1e-9))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(ok, np.clip(latest / base_now, 0.0, 2.0), 1.0)
    w = persistence_weight(lead_s)[:, None]
    out = base * (1.0 + w * (ratio[None, :] - 1.0))
    return np.maximum(np.where(np.isnan(out), latest[None, :], out), 0.0)


def overlap_weights(
    slot_edges_s: FloatArray, starts_s: Sequence[float], steps_s: Sequence[float]
) -> FloatArray:
    """``W[i, k]``: the fraction of step ``i`` (from ``starts_s[i]`` for ``steps_s[i]``
    seconds) that falls in slot ``k`` (between ``slot_edges_s[k]`` and ``[k + 1]``), so that
    ``W @ slot_values`` is each step's mean. Rows sum to 1 where the slots cover the step."""
    a = np.asarray(starts_s, dtype=float)[:, None]
    b = a + np.asarray(steps_s, dtype=float)[:, None]
    lo = slot_edges_s[None, :-1]
    hi = slot_edges_s[None, 1:]
    overlap = np.clip(np.minimum(b, hi) - np.maximum(a, lo), 0.0, None)
    length = np.maximum(b - a, 1e-9)
    weights: FloatArray = overlap / length
    return weights


# -- PV: the clear sky ------------------------------------------------------------------------


def clear_sky_ghi(
    slot_starts: pd.DatetimeIndex, slot_s: float, latitude: float, longitude: float
) -> FloatArray:
    """Each slot's mean clear-sky global horizontal irradiance (W/m², Ineichen with the Linke
    turbidity pvlib ships), sampled at 1/6, 1/2 and 5/6 of the slot so that the slots of dawn
    and dusk are not all or nothing. ``slot_starts`` are timezone-aware."""
    import pvlib  # noqa: PLC0415 - 0.9 s to import: only a site with a latitude pays it

    n = len(slot_starts)
    if n == 0:
        return np.zeros(0)
    offsets = pd.to_timedelta(np.array([1.0, 3.0, 5.0]) * slot_s / 6.0, unit="s")
    times = pd.DatetimeIndex(np.concatenate([(slot_starts + o).asi8 for o in offsets])).tz_localize(
        "UTC"
    )
    site = pvlib.location.Location(latitude, longitude, tz="UTC")
    ghi = site.get_clearsky(times, model="ineichen")["ghi"].to_numpy(dtype=float)
    mean: FloatArray = np.nan_to_num(ghi.reshape(3, n).mean(axis=0), nan=0.0).clip(min=0.0)
    return mean


def pv_scale(pv_kw: FloatArray, ghi: FloatArray, *, quantile: float = 0.9) -> FloatArray:
    """Each inverter's kW per W/m² of clear sky: the ``quantile`` of its measured ratios over
    the slots whose clear sky exceeds ``CLEAR_SKY_MIN_W_M2`` (the clear slots are the high
    ratios; clouds only lower them). ``pv_kw[slot, unit]``, ``ghi[slot]``; NaN for a unit with
    no such slot."""
    day = ghi >= CLEAR_SKY_MIN_W_M2
    if not day.any():
        return np.full(pv_kw.shape[1], np.nan)
    ratios = pv_kw[day] / ghi[day, None]
    out = np.full(pv_kw.shape[1], np.nan)
    for u in range(pv_kw.shape[1]):
        r = ratios[:, u]
        r = r[~np.isnan(r)]
        if r.size:
            out[u] = float(np.quantile(r, quantile))
    return out


# -- the statistical model --------------------------------------------------------------------


def fill_holes(y: FloatArray) -> FloatArray:
    """``y`` with its NaN holes filled by linear interpolation (ends held flat)."""
    ok = ~np.isnan(y)
    if ok.all() or not ok.any():
        return y.copy()
    idx = np.arange(y.size)
    return np.interp(idx, idx[ok], y[ok])


@dataclass(frozen=True, slots=True)
class FittedModel:
    """A statistical model of the feeder's total load: ``mean[j]`` is its forecast for the
    ``j``-th slot after the last slot it was fitted on (``last_slot``, an absolute slot
    number), and ``fit_s`` how long the fit took (wall time, for the benchmark)."""

    last_slot: int
    mean: FloatArray
    fit_s: float
    name: str

    def at(self, slots: npt.NDArray[np.int64]) -> FloatArray:
        """The forecast for absolute slot numbers (NaN before or beyond what it predicted)."""
        j = slots - self.last_slot - 1
        ok = (j >= 0) & (j < self.mean.size)
        return np.where(ok, self.mean[np.clip(j, 0, self.mean.size - 1)], np.nan)


def fit_total_load(y: FloatArray, *, last_slot: int, season: int, h: int) -> FittedModel:
    """Fit statsforecast's MSTL (one daily season, AutoETS on the trend) to the total load
    ``y`` (one value per slot up to ``last_slot``, holes filled by interpolation) and forecast
    ``h`` slots. Raises what the library raises; the caller falls back."""
    import time  # noqa: PLC0415 - wall time of the fit only, reported to the caller

    from statsforecast.models import MSTL, AutoETS  # noqa: PLC0415 - 2 s to import: lazily

    started = time.perf_counter()
    series = fill_holes(np.asarray(y, dtype=float))
    if np.isnan(series).any() or series.size < 2 * season:
        raise ValueError(f"{series.size} slots of total load: a fit needs {2 * season}")
    model = MSTL(season_length=[season], trend_forecaster=AutoETS(model="ZZN"))
    mean = np.asarray(model.fit(series).predict(h=h)["mean"], dtype=float)
    if mean.shape != (h,) or not np.isfinite(mean).all():
        raise ValueError("the model's forecast is not finite")
    return FittedModel(
        last_slot=last_slot, mean=mean, fit_s=time.perf_counter() - started, name="mstl"
    )


# -- forecast error ---------------------------------------------------------------------------


@dataclass(slots=True)
class ScoreSums:
    """Running sums that give MAPE and RMSE: ``n`` scored values, ``sq_kw2`` the sum of squared
    errors, ``ape`` the sum of absolute errors relative to the actual over the ``n_ape`` values
    whose actual is large enough to divide by."""

    n: int = 0
    sq_kw2: float = 0.0
    ape: float = 0.0
    n_ape: int = 0

    def add(self, other: ScoreSums) -> None:
        self.n += other.n
        self.sq_kw2 += other.sq_kw2
        self.ape += other.ape
        self.n_ape += other.n_ape

    @property
    def rmse_kw(self) -> float | None:
        return math.sqrt(self.sq_kw2 / self.n) if self.n else None

    @property
    def mape_pct(self) -> float | None:
        return 100.0 * self.ape / self.n_ape if self.n_ape else None


def score(forecast_kw: float, actual_kw: float, *, mape_floor_kw: float) -> ScoreSums:
    """One forecast against what was measured. Its relative error enters MAPE only when
    ``|actual| >= mape_floor_kw`` (PV at night, or a near-empty feeder, has no meaningful
    percentage error); its squared error always enters RMSE."""
    err = forecast_kw - actual_kw
    s = ScoreSums(n=1, sq_kw2=err * err)
    if abs(actual_kw) >= mape_floor_kw and actual_kw != 0.0:
        s.ape = abs(err) / abs(actual_kw)
        s.n_ape = 1
    return s


def lead_bucket(lead_s: float) -> str | None:
    """The label of the horizon bucket ``lead_s`` falls in (``None``: beyond 24 h)."""
    for label, lo, hi in LEAD_BUCKETS_S:
        if lo <= lead_s < hi:
            return label
    return None
