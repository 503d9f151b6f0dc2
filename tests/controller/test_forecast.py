"""The Forecaster: persistence from nothing, a seasonal baseline that learns the day, the
statistical model only with enough history (and the baseline when it fails), PV shaped by the
clear sky, and the forecast error scored by hand."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import structlog

from controller import forecasts
from controller.forecasts import Forecaster, ForecastSettings
from optimizer.forecasting import FittedModel, clear_sky_ghi
from tests.controller.forecast_series import horizon_steps, load_shape, samples

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
LOADS = {2: 100.0, 3: 90.0, 7: 200.0}
PV = {"pv1": 300.0}
SEASONAL = ForecastSettings(None, None, model="seasonal")
STARTS, STEPS = horizon_steps(300.0)


def _feed(
    fc: Forecaster, days: float, *, start: datetime = START, forecast: bool = False, **kw: Any
) -> datetime:
    at = start
    opts: dict[str, Any] = {"seed": 1, "noise": 0.05} | kw
    for s in samples(start, days=days, interval_s=300.0, loads_kw=LOADS, pv_kwp=PV, **opts):
        fc.observe(s.at, s.loads_kw, s.pv_kw)
        if forecast:
            fc.forecast(s.at, STARTS, STEPS)
        at = s.at
    return at


def test_without_history_the_forecast_is_the_latest_measurement() -> None:
    fc = Forecaster(sorted(LOADS), sorted(PV), SEASONAL)
    fc.observe(START, {2: 50.0, 3: 40.0, 7: 10.0}, {"pv1": 123.0})
    frames = fc.forecast(START, STARTS, STEPS)
    assert frames.source == "persistence"
    assert frames.pv_source == "persistence"
    assert frames.load_kw.shape == (len(STARTS), 3)
    assert list(frames.load_kw.columns) == [2, 3, 7]
    np.testing.assert_allclose(frames.load_kw[2], 50.0)
    np.testing.assert_allclose(frames.pv_kw["pv1"], 123.0)
    assert frames.load_total_at(3600.0) == pytest.approx(100.0)
    assert frames.pv_total_at(0.0) == pytest.approx(123.0)


def test_the_seasonal_baseline_learns_the_day() -> None:
    """Day 1 starts from persistence; on day 2 the forecasts know the daily shape: their error
    beyond the first hour falls (the noise, 5 % per bus per sample, stays)."""
    fc = Forecaster(sorted(LOADS), sorted(PV), SEASONAL)
    _feed(fc, 3.0, forecast=True)
    day = timedelta(days=1)
    first = fc.errors(START, START + day)
    second = fc.errors(START + day, START + 2 * day)
    for bucket in ("1-4h", "4-24h"):
        e1, e2 = first.get("load", bucket), second.get("load", bucket)
        assert e1.n > 0
        assert e2.n > 0
        assert e1.rmse_kw is not None
        assert e2.rmse_kw is not None
        assert e2.rmse_kw < 0.5 * e1.rmse_kw
        # the slot means of three samples of three buses with 5 % noise: about 1.7 % of the
        # total; the seasonal mean of one past day adds as much again
        assert e2.mape_pct is not None
        assert e2.mape_pct < 5.0
    # the forecast for tomorrow evening's peak knows it from today's
    at = START + 3 * day
    frames = fc.forecast(at, STARTS, STEPS)
    peak = frames.load_total_at(19 * 3600.0)
    assert peak == pytest.approx(sum(LOADS.values()) * load_shape(19.125), rel=0.05)


def test_weekends_are_forecast_from_weekends() -> None:
    fc = Forecaster(sorted(LOADS), sorted(PV), SEASONAL)
    last = _feed(fc, 13.0, weekend_factor=0.7, noise=0.02)  # Mon 2 .. Sat 14 March
    assert last.weekday() == 5
    frames = fc.forecast(last, STARTS, STEPS)  # from Saturday 23:55 over Sunday
    noon = frames.load_total_at(12 * 3600.0 + 5 * 60)
    weekday_noon = sum(LOADS.values()) * load_shape(12.125)
    assert noon == pytest.approx(0.7 * weekday_noon, rel=0.03)


def test_the_statistical_model_needs_two_days_and_is_refitted_hourly() -> None:
    fc = Forecaster(sorted(LOADS), sorted(PV), ForecastSettings(None, None))
    last = _feed(fc, 1.5)
    assert fc.forecast(last, STARTS, STEPS).source == "seasonal"
    assert fc.model_name is None
    last = _feed(fc, 1.5, start=last + timedelta(minutes=5))
    frames = fc.forecast(last, STARTS, STEPS)
    assert frames.source == "mstl"
    assert fc.model_name == "mstl"
    fitted = fc.last_fit_s
    assert fitted is not None
    # within the hour: the same fit
    fc.observe(last + timedelta(minutes=15), LOADS, PV)
    fc.forecast(last + timedelta(minutes=15), STARTS, STEPS)
    assert fc.last_fit_s is fitted
    seasonal_only = Forecaster(sorted(LOADS), sorted(PV), SEASONAL)
    _feed(seasonal_only, 3.0)
    assert seasonal_only.forecast(last, STARTS, STEPS).source == "seasonal"


def test_a_model_that_fails_leaves_the_baseline_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(forecasts, "fit_total_load", broken)
    fc = Forecaster(sorted(LOADS), sorted(PV), ForecastSettings(None, None))
    last = _feed(fc, 3.0)
    with structlog.testing.capture_logs() as logs:
        for i in range(8):  # two hours: two more attempts
            at = last + timedelta(minutes=15 * (i + 1))
            fc.observe(at, LOADS, PV)
            frames = fc.forecast(at, STARTS, STEPS)
            assert frames.source == "seasonal"
            assert np.isfinite(frames.load_kw.to_numpy()).all()
    failed = [e for e in logs if e["event"] == "forecast_model_failed"]
    assert len(failed) == 1
    assert "SVD" in failed[0]["error"]


def test_a_model_too_slow_is_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forecasts, "MODEL_FIT_BUDGET_S", 0.0)
    fc = Forecaster(sorted(LOADS), sorted(PV), ForecastSettings(None, None))
    last = _feed(fc, 2.5)
    with structlog.testing.capture_logs() as logs:
        assert fc.forecast(last, STARTS, STEPS).source == "seasonal"
        fc.observe(last + timedelta(hours=2), LOADS, PV)
        assert fc.forecast(last + timedelta(hours=2), STARTS, STEPS).source == "seasonal"
    assert [e["event"] for e in logs].count("forecast_model_slow") == 1


def test_auto_leaves_a_model_that_forecasts_worse_than_the_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = forecasts.fit_total_load

    def biased(*a: Any, **k: Any) -> FittedModel:  # the real fit, 30 % too high
        fit = real(*a, **k)
        return dataclasses.replace(fit, mean=fit.mean * 1.3)

    monkeypatch.setattr(forecasts, "fit_total_load", biased)
    monkeypatch.setattr(forecasts, "MODEL_REFIT_S", 6 * 3600.0)  # fewer fits: a faster test
    fc = Forecaster(sorted(LOADS), sorted(PV), ForecastSettings(None, None))
    last = _feed(fc, 2.5)
    assert fc.forecast(last, STARTS, STEPS).source == "mstl"
    with structlog.testing.capture_logs() as logs:
        last = _feed(fc, 1.0, start=last + timedelta(minutes=5), forecast=True)
    assert fc.forecast(last, STARTS, STEPS).source == "seasonal"
    choice = [e for e in logs if e["event"] == "forecast_model_choice"]
    assert len(choice) == 1
    assert choice[0]["using"] == "seasonal"
    assert choice[0]["model_rmse_kw"] > 2 * choice[0]["seasonal_rmse_kw"]


SITE = ForecastSettings(45.0, 0.0, model="seasonal")
JUNE = datetime(2026, 6, 15, tzinfo=UTC)


_SLOTS = pd.date_range(JUNE, periods=3 * 96, freq="900s")
_GHI = dict(zip(_SLOTS, clear_sky_ghi(_SLOTS, 900.0, 45.0, 0.0).tolist(), strict=True))


def _clear_day_pv(at: datetime, kw_per_w_m2: float, cloud: float = 1.0) -> float:
    """What an inverter of ``kw_per_w_m2`` gives in the slot of ``at`` (its clear sky)."""
    return kw_per_w_m2 * cloud * _GHI[pd.Timestamp(at).floor("900s")]


def test_pv_follows_the_clear_sky_at_the_inverters_scale() -> None:
    fc = Forecaster([2], ["pv1"], SITE)
    at = JUNE
    for i in range(288):  # one clear day, 0.3 kW per W/m² of clear sky
        at = JUNE + timedelta(minutes=5 * i)
        fc.observe(at, {2: 100.0}, {"pv1": _clear_day_pv(at, 0.3)})
    now = at + timedelta(minutes=5)  # midnight
    fc.observe(now, {2: 100.0}, {"pv1": 0.0})
    frames = fc.forecast(now, STARTS, STEPS)
    assert frames.pv_source == "clearsky"
    pv = frames.pv_kw["pv1"].to_numpy()
    starts = np.asarray(STARTS)
    night = (starts < 3 * 3600) | (starts > 21 * 3600)
    assert (pv[night] == 0.0).all()
    peak_h = starts[int(np.argmax(pv))] / 3600.0
    assert abs(peak_h + 0.125 - 12.0) <= 0.25  # solar noon at 0° E, to a slot
    assert pv.max() == pytest.approx(_clear_day_pv(now + timedelta(hours=12), 0.3), rel=0.02)


def test_pv_under_clouds_now_relaxes_toward_the_recent_index() -> None:
    fc = Forecaster([2], ["pv1"], SITE)
    at = JUNE
    for i in range(288 + 12 * 9):  # a clear day, then the morning to 09:00
        at = JUNE + timedelta(minutes=5 * i)
        fc.observe(at, {2: 100.0}, {"pv1": _clear_day_pv(at, 0.3)})
    now = at + timedelta(minutes=5)  # 09:00, a cloud: half of the clear sky
    fc.observe(now, {2: 100.0}, {"pv1": _clear_day_pv(now, 0.3, cloud=0.5)})
    frames = fc.forecast(now, STARTS, STEPS)
    clear = np.array([_clear_day_pv(now + timedelta(seconds=s), 0.3) for s in STARTS])
    ratio = frames.pv_kw["pv1"].to_numpy() / np.where(clear > 0, clear, np.nan)
    assert ratio[0] == pytest.approx(0.5, abs=0.03)
    i3 = STARTS.index(next(s for s in STARTS if s >= 3 * 3600))
    # after three hours: e^-2 of the cloud is left, toward the clear index of the last day
    assert ratio[i3] == pytest.approx(1.0 - 0.5 * math.exp(-3 * 3600 / 5400), abs=0.05)


def test_pv_without_a_site_follows_its_seasonal_history() -> None:
    fc = Forecaster(sorted(LOADS), sorted(PV), SEASONAL)
    last = _feed(fc, 2.0, noise=0.0)
    frames = fc.forecast(last, STARTS, STEPS)
    assert frames.pv_source == "seasonal"
    noon = frames.pv_total_at(12 * 3600.0 + 5 * 60)
    assert noon == pytest.approx(300.0, rel=0.02)  # sun_shape's noon peak × 300 kWp
    assert frames.pv_total_at(2 * 3600.0) == 0.0


def test_forecast_errors_by_hand() -> None:
    """One bus: 100 kW in slot 0, 110 in slot 1, 120 in slot 2. From slot 0 the forecast says
    100 for slots 1 and 2 (persistence: the slots of the day were never measured); from slot 1
    it says 110 for slot 2. Errors 10, 20, 10 kW, all within the first hour."""
    fc = Forecaster([2], [], SEASONAL)
    t0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    for slot, kw in enumerate((100.0, 110.0, 120.0, 130.0)):
        at = t0 + timedelta(minutes=15 * slot)
        fc.observe(at, {2: kw}, {})
        fc.forecast(at, [0.0, 900.0, 1800.0], [900.0, 900.0, 900.0])
    e = fc.errors()
    load = e.get("load", "0-1h")
    assert load.n == 3
    assert load.rmse_kw == pytest.approx(math.sqrt((10**2 + 20**2 + 10**2) / 3))
    assert load.mape_pct == pytest.approx(100 * (10 / 110 + 20 / 120 + 10 / 120) / 3)
    assert e.get("load", "1-4h").n == 0
    assert e.get("load", "1-4h").rmse_kw is None
    assert e.get("pv", "0-1h").n == 0
    assert fc.errors(since=t0 + timedelta(minutes=30)).get("load", "0-1h").n == 2


def test_disabled_gives_empty_frames() -> None:
    fc = Forecaster(sorted(LOADS), sorted(PV), ForecastSettings(None, None, enabled=False))
    fc.observe(START, LOADS, PV)
    frames = fc.forecast(START, STARTS, STEPS)
    assert frames.source == "disabled"
    assert frames.load_kw.shape == (len(STARTS), 0)
    assert frames.pv_kw.shape == (len(STARTS), 0)
    assert frames.load_total_at(0.0) is None


def test_local_time_sets_the_day() -> None:
    """In Tokyo (UTC+9) the evening peak comes at 10:00 UTC: the baseline learns local days."""
    fc = Forecaster([2], [], ForecastSettings(None, None, model="seasonal", timezone="Asia/Tokyo"))
    at = START
    for i in range(288 * 2):
        at = START + timedelta(minutes=5 * i)
        local_h = (at.hour + 9 + at.minute / 60) % 24
        fc.observe(at, {2: 100.0 * load_shape(local_h)}, {})
    frames = fc.forecast(at, STARTS, STEPS)
    values = frames.load_kw[2].to_numpy()
    peak_utc = (at + timedelta(seconds=STARTS[int(np.argmax(values))])).hour
    assert peak_utc == 10


def test_a_daylight_saving_change_keeps_the_local_day() -> None:
    """Amsterdam moves from UTC+1 to UTC+2 on 29 March 2026: a load that peaks at 19:00 local
    peaks at 18:00 UTC before and at 17:00 UTC after; the forecast made across the change
    follows local time."""
    tz = ZoneInfo("Europe/Amsterdam")
    fc = Forecaster([2], [], ForecastSettings(None, None, model="seasonal", timezone=str(tz)))
    start = datetime(2026, 3, 26, tzinfo=UTC)
    at = start
    for i in range(288 * 3 + 12 * 20):  # to Sunday 29 March, 20:00 UTC
        at = start + timedelta(minutes=5 * i)
        local = at.astimezone(tz)
        fc.observe(at, {2: 100.0 * load_shape(local.hour + local.minute / 60)}, {})
    frames = fc.forecast(at, STARTS, STEPS)
    values = frames.load_kw[2].to_numpy()
    peak = at + timedelta(seconds=STARTS[int(np.argmax(values))])
    assert peak.astimezone(tz).hour == 19
    assert peak.hour == 17
