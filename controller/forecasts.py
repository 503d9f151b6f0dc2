"""Load and PV forecasts for the dispatch horizon, learned from the feeder's own history.

``Forecaster.observe`` takes each interval's bus loads and PV available (cheap: they are
averaged into slots, ``controller.history``); ``Forecaster.forecast`` gives, for the steps of
a horizon, each bus's load and each inverter's PV available (kW, steps × series frames that
``optimizer.Forecast`` takes as ``load_kw`` and ``pv_kw``); ``Forecaster.errors`` scores the
forecasts issued against what was then measured (MAPE and RMSE per horizon bucket).

How a forecast is made (the math is in ``optimizer.forecasting``):

- Load: the seasonal baseline (each slot of the day on past days of the same day type,
  weekday or weekend, recency-weighted; all days where too few of that type were measured),
  shifted by how far the latest measurement departs from it now, the shift fading over the
  first hour. No history: the latest measurement (persistence). With ``model = "auto"`` and
  two days of history, statsforecast's MSTL forecasts the feeder's total load instead (refitted
  at most hourly) and the seasonal baseline shares it among the buses; a fit that fails, or
  takes longer than ``MODEL_FIT_BUDGET_S``, leaves the seasonal baseline (one log line).
- PV, with the site's latitude and longitude: the clear-sky irradiance of each step (pvlib) ×
  the inverter's learned kW per W/m² × the clear-sky index measured now, relaxing toward the
  index of the last day with lead time; zero at night. Without them: the seasonal PV history,
  scaled by the ratio measured now, the ratio fading over the first hour.

Times are timezone-aware; the day type and the slot of the day are taken in the site's
``timezone``. A forecast is cheap (a few milliseconds for the 33-bus feeder and 100 steps): the
baseline is recomputed when a slot finishes, the clear sky once per slot, the model hourly.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd
import structlog

from controller.history import HistoryStore, SlotHistory
from optimizer.forecasting import (
    CLEAR_SKY_MIN_W_M2,
    LEAD_BUCKETS_S,
    PV_INDEX_TAU_S,
    FittedModel,
    ScoreSums,
    anomaly_blend,
    clear_sky_ghi,
    fit_total_load,
    index_blend,
    lead_bucket,
    overlap_weights,
    pv_scale,
    recency_weights,
    score,
    seasonal_profile,
)

__all__ = [
    "BucketError",
    "ForecastErrors",
    "ForecastFrames",
    "ForecastSettings",
    "Forecaster",
]

log = structlog.get_logger("feederd")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

HALF_LIFE_DAYS = 7.0
"""Recency weight of the seasonal baseline: a day a week older counts half as much."""
MIN_SAME_TYPE_DAYS = 2
"""Fewer days of the target's type measured at a slot: the baseline takes all days."""
MIN_MODEL_DAYS = 2.0
"""Days of total load (at most a fifth of them holes) before the statistical model is fitted."""
MODEL_WINDOW_DAYS = 14
"""The statistical model is fitted on at most this many recent days."""
MODEL_REFIT_S = 3600.0
"""The statistical model is refitted at most this often."""
MODEL_FIT_BUDGET_S = 10.0
"""A fit slower than this (wall time) turns the model off for the run: the baseline stands."""
PV_SCALE_DAYS = 14
"""The inverters' kW per W/m² of clear sky is learned over this many recent days."""
PV_RECENT_S = 86400.0
"""The recent clear-sky index is the energy-weighted index of the last day's daylight."""
DUEL_MIN_FORECASTS = 500
"""Forecasts scored (of slots within a day, at every lead) before ``"auto"`` judges the model
against the baseline: about five hours of slots, each forecast from up to a day ahead."""
DUEL_MARGIN = 1.1
"""The model is left when its squared error exceeds the baseline's by 10 %, and taken back
when it is 10 % under it."""
MAPE_FLOOR_FRACTION = 0.05
"""A measured total under this fraction of the largest seen enters RMSE but not MAPE."""


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """The ``[forecast]`` table: the site (for the clear sky), how much history is kept, the
    slot length, which load model (``"auto"``: statistical where history allows, else the
    seasonal baseline; ``"seasonal"``: the baseline always) and the site's time zone."""

    latitude: float | None
    longitude: float | None
    history_days: int = 28
    slot_s: float = 900.0
    model: str = "auto"
    enabled: bool = True
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("forecast: give both latitude and longitude, or neither")
        if self.latitude is not None and not -90.0 <= self.latitude <= 90.0:
            raise ValueError(f"forecast.latitude: {self.latitude} is outside -90..90")
        if self.longitude is not None and not -180.0 <= self.longitude <= 180.0:
            raise ValueError(f"forecast.longitude: {self.longitude} is outside -180..180")
        if not 1 <= self.history_days <= 366:
            raise ValueError(f"forecast.history_days: {self.history_days} is outside 1..366")
        if not 60.0 <= self.slot_s <= 3600.0 or 86400.0 % self.slot_s:
            raise ValueError(
                f"forecast.slot_s: {self.slot_s:g} s must divide a day and lie in 60..3600"
            )
        if self.model not in ("auto", "seasonal"):
            raise ValueError(f"forecast.model: {self.model!r} is not 'auto' or 'seasonal'")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"forecast.timezone: {self.timezone!r} is not a known time zone"
            ) from None

    @property
    def site(self) -> tuple[float, float] | None:
        if self.latitude is None or self.longitude is None:
            return None
        return self.latitude, self.longitude


@dataclass(frozen=True, slots=True)
class ForecastFrames:
    """One forecast: ``load_kw`` (steps × bus id) and ``pv_kw`` (steps × PV unit name), kW,
    read by position (row ``i`` is step ``i``, starting ``starts_s[i]`` seconds from the time
    it was made); a series never measured is absent (the dispatch keeps its step-0 value).
    ``source`` says what made the load (``"persistence"``, ``"seasonal"``, ``"mstl"``,
    ``"disabled"``), ``pv_source`` the PV (``"persistence"``, ``"seasonal"``,
    ``"clearsky"``, ``"disabled"``)."""

    load_kw: pd.DataFrame
    pv_kw: pd.DataFrame
    source: str
    pv_source: str = ""
    starts_s: tuple[float, ...] = ()

    def _row_at(self, offset_s: float) -> int | None:
        if not self.starts_s:
            return None
        i = int(np.searchsorted(np.asarray(self.starts_s), offset_s, side="right")) - 1
        return max(i, 0)

    def load_total_at(self, offset_s: float) -> float | None:
        """The total load forecast for the step running at ``offset_s`` (``None``: none)."""
        i = self._row_at(offset_s)
        if i is None or self.load_kw.shape[1] == 0 or i >= len(self.load_kw):
            return None
        return float(self.load_kw.iloc[i].sum())

    def pv_total_at(self, offset_s: float) -> float | None:
        """The total PV available forecast for the step running at ``offset_s``."""
        i = self._row_at(offset_s)
        if i is None or self.pv_kw.shape[1] == 0 or i >= len(self.pv_kw):
            return None
        return float(self.pv_kw.iloc[i].sum())


@dataclass(frozen=True, slots=True)
class BucketError:
    """The error of the forecasts of one quantity (``"load"``: the feeder's total uncontrollable
    load; ``"pv"``: its total PV available) whose lead fell in one bucket (``"0-1h"``,
    ``"1-4h"``, ``"4-24h"``): ``n`` slots scored, MAPE (%, over the slots whose measured total
    was at least 5 % of the largest seen) and RMSE (kW); ``None`` when nothing was scored."""

    quantity: str
    bucket: str
    n: int
    mape_pct: float | None
    rmse_kw: float | None


@dataclass(frozen=True, slots=True)
class ForecastErrors:
    """Forecast error per quantity and horizon bucket, over the slots asked for."""

    buckets: tuple[BucketError, ...]

    def get(self, quantity: str, bucket: str) -> BucketError:
        for b in self.buckets:
            if b.quantity == quantity and b.bucket == bucket:
                return b
        raise KeyError(f"no forecast error for {quantity!r} in bucket {bucket!r}")


@dataclass(slots=True)
class _Issued:
    """What the forecasts said for one future slot: (lead s, total load kW, total PV kW, the
    total load of the seasonal baseline and of the model, NaN when it had none)."""

    entries: list[tuple[float, float, float, float, float]] = field(default_factory=list)


class Forecaster:
    """Learns the feeder's load and PV from what is measured each interval and forecasts them
    for the horizon (see the module docstring)."""

    def __init__(
        self,
        buses: Sequence[int],
        pv_units: Sequence[str],
        settings: ForecastSettings,
        journal: HistoryStore | None = None,
    ) -> None:
        self.settings = settings
        self.buses = tuple(buses)
        self.units = tuple(pv_units)
        self.history = SlotHistory(
            self.buses,
            self.units,
            slot_s=settings.slot_s,
            history_days=settings.history_days,
            timezone=ZoneInfo(settings.timezone),
            store=journal,
        )
        self._loaded = False
        self._nb = len(self.buses)
        self._per_day = self.history.slots_per_day
        self._per_hour = max(1, round(3600.0 / settings.slot_s))
        self._profile: FloatArray | None = None
        self._profile_version = -1
        self._cells: tuple[int, int, IntArray, IntArray] | None = None  # (k0, K, tod, type)
        self._ghi: dict[int, float] = {}
        self._scale: FloatArray | None = None
        self._scale_version = -1
        self._recent: tuple[tuple[int, bytes], FloatArray] | None = None
        self._fit: FittedModel | None = None
        self._fit_tried: int | None = None  # the last finished slot a fit was tried after
        self._model_off = False
        self._model_failed = False
        self.last_fit_s: float | None = None
        """How long the last statistical fit took (wall seconds; ``None``: none yet)."""
        self._issued_slot: int | None = None
        self._pending: dict[int, _Issued] = {}
        self._scores: deque[tuple[int, dict[tuple[str, str], ScoreSums]]] = deque(
            maxlen=settings.history_days * self._per_day
        )
        self._peak = {"load": 0.0, "pv": 0.0}
        self._duel: deque[tuple[int, float, float, int]] = deque()  # slot, model, baseline, n
        self._prefer_model = True

    def warm_up(self) -> None:
        """Import the libraries the first forecast would (statsforecast about 2 s, pvlib about
        1 s on the 2-core box), so that a caller can pay it off the event loop at start."""
        if self.settings.model == "auto":
            import statsforecast.models  # noqa: F401, PLC0415
        if self.settings.site is not None:
            import pvlib  # noqa: F401, PLC0415

    # -- learning ----------------------------------------------------------------------------

    def _load(self, at: datetime) -> None:
        if not self._loaded:
            self._loaded = True
            self.history.load(at)

    def observe(
        self, at: datetime, loads_kw: Mapping[int, float], pv_available_kw: Mapping[str, float]
    ) -> None:
        """Add this interval's bus loads and PV available (kW) to the history; a slot the
        clock has left is finished, kept, and scores the forecasts made for it. A bus or
        inverter missing from the mappings is simply not measured this interval."""
        at = _aware(at)
        self._load(at)
        for slot in self.history.observe(at, loads_kw, pv_available_kw):
            self._score(slot)

    # -- forecasting -------------------------------------------------------------------------

    def forecast(
        self, at: datetime, starts_s: Sequence[float], steps_s: Sequence[float]
    ) -> ForecastFrames:
        """Each step's load per bus and PV available per inverter (kW): step ``i`` runs from
        ``at + starts_s[i]`` for ``steps_s[i]`` seconds."""
        starts = tuple(float(s) for s in starts_s)
        if len(steps_s) != len(starts):
            raise ValueError(f"forecast: {len(starts)} step starts but {len(steps_s)} lengths")
        at = _aware(at)
        if not self.settings.enabled or not starts:
            empty = pd.DataFrame(index=pd.RangeIndex(len(starts)))
            return ForecastFrames(empty, empty.copy(), "disabled", "disabled", starts)
        self._load(at)
        slot_s = self.settings.slot_s
        t0 = at.timestamp()
        a = t0 + np.asarray(starts, dtype=float)
        b = a + np.asarray(steps_s, dtype=float)
        k_now = math.floor(t0 / slot_s)
        k0 = min(k_now, math.floor(float(a.min()) / slot_s))
        k1 = max(k_now, math.floor((float(b.max()) - 1e-6) / slot_s))
        slots = np.arange(k0, k1 + 1, dtype=np.int64)
        row_now = k_now - k0
        lead = np.maximum(slots * slot_s - t0, 0.0)
        base = self._baseline(slots)
        latest = self.history.latest
        nb = self._nb

        seasonal, modelled, model_name = self._load_forecasts(
            slots, base[:, :nb], latest[:nb], lead, row_now
        )
        if modelled is not None and self._prefer_model:
            load, source = modelled, model_name
        else:
            load = seasonal
            source = "persistence" if np.isnan(base[:, :nb]).all() else "seasonal"
        pv, pv_source = self._pv_forecast(slots, base[:, nb:], latest[nb:], lead, row_now)
        values = np.concatenate([load, pv], axis=1)
        known = ~np.isnan(values).all(axis=0)
        if not known.all() or np.isnan(values).any():
            values = pd.DataFrame(values).ffill().bfill().to_numpy(dtype=float)
        duel = (
            None if modelled is None else (np.nansum(seasonal, axis=1), np.nansum(modelled, axis=1))
        )
        self._issue(k_now, t0, float(b.max()), slots, values, known, duel)

        edges = np.append(slots * slot_s, (k1 + 1) * slot_s) - t0
        w = overlap_weights(edges, starts, steps_s)
        steps = w @ np.where(np.isnan(values), 0.0, values)
        index = pd.RangeIndex(len(starts))
        load_cols = [i for i in range(nb) if known[i]]
        pv_cols = [i for i in range(len(self.units)) if known[nb + i]]
        return ForecastFrames(
            load_kw=pd.DataFrame(
                steps[:, load_cols], index=index, columns=[self.buses[i] for i in load_cols]
            ),
            pv_kw=pd.DataFrame(
                steps[:, [nb + i for i in pv_cols]],
                index=index,
                columns=[self.units[i] for i in pv_cols],
            ),
            source=source,
            pv_source=pv_source,
            starts_s=starts,
        )

    def _baseline(self, slots: IntArray) -> FloatArray:
        """The seasonal baseline of every series at each slot (NaN: never measured there)."""
        h = self.history
        if self._profile is None or self._profile_version != h.version:
            self._profile = self._seasonal_profile()
            self._profile_version = h.version
        k0, n = int(slots[0]), len(slots)
        if self._cells is None or self._cells[:2] != (k0, n):
            _, tod, weekend = h.cells(slots)
            self._cells = (k0, n, tod, weekend.astype(np.int64))
        _, _, tod, day_type = self._cells
        return self._profile[day_type, tod]

    def _seasonal_profile(self) -> FloatArray:
        h = self.history
        held = h.slot_no >= 0
        n = h.values.shape[1]
        if not held.any():
            return np.full((2, self._per_day, n), np.nan)
        days = h.day[held]
        first, last = int(days.min()), int(days.max())
        span = last - first + 1
        grid = np.full((span, self._per_day, n), np.nan)
        grid[days - first, h.tod[held]] = h.values[held]
        ordinals = np.arange(first, last + 1, dtype=np.int64)
        day_valid = np.zeros(span, dtype=bool)
        day_valid[days - first] = True
        weekend = (ordinals - 1) % 7 >= 5  # ordinal 1 (0001-01-01) was a Monday
        weights = recency_weights((last - ordinals).astype(float), HALF_LIFE_DAYS)
        return seasonal_profile(grid, weekend, day_valid, weights, min_days=MIN_SAME_TYPE_DAYS)

    def _load_forecasts(
        self,
        slots: IntArray,
        seasonal: FloatArray,
        latest: FloatArray,
        lead: FloatArray,
        row_now: int,
    ) -> tuple[FloatArray, FloatArray | None, str]:
        """The load by the seasonal baseline, and by the statistical model where one is
        fitted (its total shared among the buses as the baseline shares it), both shifted
        toward the latest measurement over the first hour; and the model's name."""
        by_baseline = anomaly_blend(seasonal, seasonal[row_now], latest, lead)
        fit = self._model(int(slots[-1]))
        if fit is None:
            return by_baseline, None, ""
        assert self._cells is not None  # set by _baseline for these slots
        total = fit.at(slots) * self._weekend_ratio()[self._cells[2]] ** self._cells[3]
        filled = np.where(np.isnan(seasonal), latest[None, :], seasonal)
        denom = np.nansum(filled, axis=1)
        ok = ~np.isnan(total) & (np.abs(denom) > 1e-9)
        if not ok.any():
            return by_baseline, None, ""
        with np.errstate(invalid="ignore", divide="ignore"):
            shared = total[:, None] * filled / denom[:, None]
        base = np.where(ok[:, None], shared, seasonal)
        return by_baseline, anomaly_blend(base, base[row_now], latest, lead), fit.name

    def _pv_forecast(
        self,
        slots: IntArray,
        seasonal: FloatArray,
        latest: FloatArray,
        lead: FloatArray,
        row_now: int,
    ) -> tuple[FloatArray, str]:
        by_history = index_blend(seasonal, seasonal[row_now], latest, lead)
        source = "persistence" if np.isnan(seasonal).all() else "seasonal"
        site = self.settings.site
        if site is None or not self.units:
            return by_history, source
        ghi = self._clear_sky(slots)
        scale = self._pv_scale().copy()
        ghi_now = float(ghi[row_now])
        if ghi_now >= CLEAR_SKY_MIN_W_M2:
            # no history yet: what the inverter gives now, taken as clear
            scale = np.where(np.isnan(scale) & ~np.isnan(latest), latest / ghi_now, scale)
            with np.errstate(invalid="ignore", divide="ignore"):
                k_now = np.clip(latest / (scale * ghi_now), 0.0, 1.5)
        else:
            k_now = np.full(len(self.units), np.nan)
        k_recent = self._recent_index(scale)
        k_recent = np.where(np.isnan(k_recent), np.where(np.isnan(k_now), 1.0, k_now), k_recent)
        decay = np.exp(-lead / PV_INDEX_TAU_S)[:, None]
        k = np.where(np.isnan(k_now), k_recent, k_recent + (k_now - k_recent) * decay)
        clear = ghi[:, None] * scale[None, :] * k
        has_scale = ~np.isnan(scale)
        if not has_scale.any():
            return by_history, source
        return np.where(has_scale[None, :], clear, by_history), "clearsky"

    def _clear_sky(self, slots: IntArray) -> FloatArray:
        """Each slot's clear-sky irradiance (W/m²), computed once per slot."""
        site = self.settings.site
        assert site is not None
        missing = [int(s) for s in slots if int(s) not in self._ghi]
        if missing:
            if len(self._ghi) > 4 * self.history.rows:
                self._ghi.clear()
                missing = [int(s) for s in slots]
            # a day beyond what is asked, in the same call: pvlib's cost is mostly per call
            missing = sorted(
                set(missing) | set(range(max(missing) + 1, max(missing) + self._per_day))
            )
            starts = pd.DatetimeIndex(
                (np.asarray(missing, dtype=np.int64) * round(self.settings.slot_s * 1e9)).astype(
                    "datetime64[ns]"
                )
            ).tz_localize(UTC)
            values = clear_sky_ghi(starts, self.settings.slot_s, site[0], site[1])
            self._ghi.update(zip(missing, values.tolist(), strict=True))
        return np.array([self._ghi[int(s)] for s in slots], dtype=float)

    def _pv_history(self, days: float) -> tuple[IntArray, FloatArray]:
        """The finished slots of the last ``days`` and their PV values (slot, unit)."""
        h = self.history
        last = h.last_finished()
        if last is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0, len(self.units)))
        held = (h.slot_no >= 0) & (h.slot_no > last - days * self._per_day)
        return h.slot_no[held], h.values[held][:, self._nb :]

    def _pv_scale(self) -> FloatArray:
        """Each inverter's kW per W/m² of clear sky, relearned when a slot finishes."""
        if self._scale is None or self._scale_version != self.history.version:
            slots, pv = self._pv_history(PV_SCALE_DAYS)
            if slots.size:
                self._scale = pv_scale(pv, self._clear_sky(slots))
            else:
                self._scale = np.full(len(self.units), np.nan)
            self._scale_version = self.history.version
        return self._scale

    def _recent_index(self, scale: FloatArray) -> FloatArray:
        """Each inverter's clear-sky index over the last day's daylight (energy-weighted),
        recomputed when a slot finishes."""
        key = (self.history.version, scale.tobytes())
        if self._recent is None or self._recent[0] != key:
            self._recent = (key, self._index_over_last_day(scale))
        return self._recent[1]

    def _index_over_last_day(self, scale: FloatArray) -> FloatArray:
        slots, pv = self._pv_history(PV_RECENT_S / 86400.0)
        if not slots.size:
            return np.full(len(self.units), np.nan)
        ghi = self._clear_sky(slots)
        day = ghi >= CLEAR_SKY_MIN_W_M2
        pv, ghi = pv[day], ghi[day]
        measured = ~np.isnan(pv)
        produced = np.where(measured, pv, 0.0).sum(axis=0)
        possible = (np.where(measured, 1.0, 0.0) * ghi[:, None]).sum(axis=0) * scale
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(possible > 0, np.clip(produced / possible, 0.0, 1.5), np.nan)

    # -- the statistical model ---------------------------------------------------------------

    def _model(self, k_end: int) -> FittedModel | None:
        """The statistical model of the total load, refitted when an hour of slots has
        finished since the last fit (``None``: not configured, not enough history, or failed:
        the seasonal baseline stands)."""
        if self.settings.model != "auto" or self._model_off:
            return None
        h = self.history
        last = h.last_finished()
        if last is None:
            return None
        fit = self._fit
        refit = max(1, round(MODEL_REFIT_S / self.settings.slot_s))
        if fit is not None and last - fit.last_slot < refit:
            return fit
        if self._fit_tried is not None and last - self._fit_tried < refit:
            return fit  # tried within the hour (too little history, or a failure)
        self._fit_tried = last
        window = np.arange(last - MODEL_WINDOW_DAYS * self._per_day + 1, last + 1)
        loads = h.at_slots(window)[:, : self._nb]
        total = np.where(np.isnan(loads).any(axis=1), np.nan, loads.sum(axis=1))
        _, tod, weekend = h.cells(window)
        total = total / np.where(weekend, self._weekend_ratio()[tod], 1.0)
        measured = np.flatnonzero(~np.isnan(total))
        y = total[measured[0] :] if measured.size else total[:0]
        if measured.size < MIN_MODEL_DAYS * self._per_day or measured.size < 0.8 * y.size:
            self._fit = None
            return None
        h_slots = k_end - last + refit + 1
        try:
            fitted = fit_total_load(y, last_slot=last, season=self._per_day, h=h_slots)
        except Exception as err:  # any failure of the library: the baseline stands
            self._fit = None
            if not self._model_failed:
                self._model_failed = True
                log.warning(
                    "forecast_model_failed",
                    error=f"{type(err).__name__}: {err}",
                    using="seasonal",
                )
            return None
        self.last_fit_s = fitted.fit_s
        if fitted.fit_s > MODEL_FIT_BUDGET_S:
            self._model_off = True
            self._fit = None
            log.warning(
                "forecast_model_slow",
                fit_s=round(fitted.fit_s, 2),
                budget_s=MODEL_FIT_BUDGET_S,
                using="seasonal",
            )
            return None
        if self._fit is None:
            log.info("forecast_model_fitted", model=fitted.name, slots=y.size)
        self._model_failed = False
        self._fit = fitted
        return fitted

    def _weekend_ratio(self) -> FloatArray:
        """Per slot of the day: the baseline's total load on a weekend day over a weekday's
        (1 where either is unknown). The model learns the daily shape of a series with the
        day type divided out, and its forecast is multiplied back for weekend slots."""
        profile = self._profile
        if profile is None:
            return np.ones(self._per_day)
        loads = profile[:, :, : self._nb]
        total = np.where(np.isnan(loads).all(axis=2), np.nan, np.nansum(loads, axis=2))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = total[1] / total[0]
        return np.where(np.isfinite(ratio) & (ratio > 0), ratio, 1.0)

    @property
    def model_name(self) -> str | None:
        """The statistical model fitted (``None``: none); ``source`` of a forecast says
        whether it was used."""
        return None if self._fit is None else self._fit.name

    # -- forecast error ----------------------------------------------------------------------

    def _issue(
        self,
        k_now: int,
        t0: float,
        end: float,
        slots: IntArray,
        values: FloatArray,
        known: npt.NDArray[np.bool_],
        duel: tuple[FloatArray, FloatArray] | None,
    ) -> None:
        """Keep the first forecast made in each slot for the slots after it, to be scored."""
        if self._issued_slot == k_now:
            return
        self._issued_slot = k_now
        for k in [k for k in self._pending if k <= k_now - self._per_day]:
            del self._pending[k]  # never scored (nothing observed since): bounded all the same
        nb = self._nb
        loads = np.where(known[:nb], values[:, :nb], 0.0).sum(axis=1)
        pvs = np.where(known[nb:], values[:, nb:], 0.0).sum(axis=1)
        slot_s = self.settings.slot_s
        for i, k in enumerate(slots.tolist()):
            if k <= k_now or (k + 1) * slot_s > end + 1e-6:
                continue  # the slot running now, or one the horizon does not cover
            issued = self._pending.setdefault(k, _Issued())
            by_baseline, by_model = (
                (float(duel[0][i]), float(duel[1][i])) if duel else (math.nan, math.nan)
            )
            issued.entries.append(
                (k * slot_s - t0, float(loads[i]), float(pvs[i]), by_baseline, by_model)
            )

    def _score(self, slot: int) -> None:
        """Score the forecasts made for a slot that has just finished."""
        for k in [k for k in self._pending if k < slot]:
            del self._pending[k]  # slots the clock jumped over
        issued = self._pending.pop(slot, None)
        actual = self.history.at_slots(np.array([slot], dtype=np.int64))[0]
        nb = self._nb
        totals: dict[str, float | None] = {
            "load": None if np.isnan(actual[:nb]).any() else float(actual[:nb].sum()),
            "pv": None
            if not self.units or np.isnan(actual[nb:]).any()
            else float(actual[nb:].sum()),
        }
        for quantity, value in totals.items():
            if value is not None:
                self._peak[quantity] = max(self._peak[quantity], abs(value))
        if issued is None:
            return
        self._duel_score(slot, issued, totals["load"])
        sums: dict[tuple[str, str], ScoreSums] = {}
        for lead, load_kw, pv_kw, _, _ in issued.entries:
            bucket = lead_bucket(lead)
            if bucket is None:
                continue
            for quantity, predicted in (("load", load_kw), ("pv", pv_kw)):
                value = totals[quantity]
                if value is None:
                    continue
                floor = MAPE_FLOOR_FRACTION * self._peak[quantity]
                s = score(predicted, value, mape_floor_kw=max(floor, 1e-6))
                sums.setdefault((quantity, bucket), ScoreSums()).add(s)
        if sums:
            self._scores.append((slot, sums))

    def _duel_score(self, slot: int, issued: _Issued, actual: float | None) -> None:
        """Set the model against the seasonal baseline on the same forecasts: ``"auto"``
        uses the model while its squared error over the last day is no larger (one log line
        when the choice changes)."""
        if actual is None:
            return
        pairs = [(b, m) for _, _, _, b, m in issued.entries if not math.isnan(m)]
        if not pairs:
            return
        self._duel.append(
            (
                slot,
                sum((m - actual) ** 2 for _, m in pairs),
                sum((b - actual) ** 2 for b, _ in pairs),
                len(pairs),
            )
        )
        while self._duel and self._duel[0][0] <= slot - self._per_day:
            self._duel.popleft()
        n = sum(d[3] for d in self._duel)
        if n < DUEL_MIN_FORECASTS:
            return
        model_sq = sum(d[1] for d in self._duel)
        base_sq = sum(d[2] for d in self._duel)
        # a margin each way, so that a tie does not flip the choice every slot
        if self._prefer_model:
            prefer = model_sq <= DUEL_MARGIN * base_sq
        else:
            prefer = model_sq * DUEL_MARGIN < base_sq
        if prefer != self._prefer_model:
            self._prefer_model = prefer
            log.info(
                "forecast_model_choice",
                using=self.model_name if prefer else "seasonal",
                model_rmse_kw=round(math.sqrt(model_sq / n), 2),
                seasonal_rmse_kw=round(math.sqrt(base_sq / n), 2),
                forecasts=n,
            )

    def errors(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> ForecastErrors:
        """MAPE and RMSE of the forecasts issued, per quantity (total load, total PV) and
        horizon bucket, over the slots that started in ``[since, until)`` (default: all kept,
        the last ``history_days``)."""
        slot_s = self.settings.slot_s
        lo = -math.inf if since is None else since.timestamp()
        hi = math.inf if until is None else until.timestamp()
        totals: dict[tuple[str, str], ScoreSums] = {}
        for slot, sums in self._scores:
            if lo <= slot * slot_s < hi:
                for key, s in sums.items():
                    totals.setdefault(key, ScoreSums()).add(s)
        return ForecastErrors(
            buckets=tuple(
                BucketError(
                    quantity=quantity,
                    bucket=label,
                    n=(s := totals.get((quantity, label), ScoreSums())).n,
                    mape_pct=s.mape_pct,
                    rmse_kw=s.rmse_kw,
                )
                for quantity in ("load", "pv")
                for label, _, _ in LEAD_BUCKETS_S
            )
        )


def _aware(at: datetime) -> datetime:
    """A naive time is taken as UTC (the controller's clocks give aware ones)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
