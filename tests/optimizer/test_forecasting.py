"""The forecasts' math (optimizer/forecasting.py) on cases small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from optimizer.forecasting import (
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


def test_seasonal_profile_weights_recent_days_and_keeps_day_types_apart() -> None:
    # 4 days × 2 slots × 1 series: Mon 10, Tue 20, Sat 100, Sun (slot 1 unmeasured) 200
    grid = np.array([[[10.0], [10.0]], [[20.0], [20.0]], [[100.0], [100.0]], [[200.0], [np.nan]]])
    weekend = np.array([False, False, True, True])
    valid = np.ones(4, dtype=bool)
    w = recency_weights(np.array([3.0, 2.0, 1.0, 0.0]), half_life_days=1.0)  # 1/8, 1/4, 1/2, 1
    prof = seasonal_profile(grid, weekend, valid, w, min_days=2)
    # weekday: (10/8 + 20/4) / (1/8 + 1/4)
    assert prof[0, 0, 0] == pytest.approx((10 / 8 + 20 / 4) / (3 / 8))
    # weekend slot 0: both weekend days measured: (100/2 + 200) / 1.5
    assert prof[1, 0, 0] == pytest.approx((100 / 2 + 200) / 1.5)
    # weekend slot 1: one weekend day measured (< 2): every day, weighted
    assert prof[1, 1, 0] == pytest.approx((10 / 8 + 20 / 4 + 100 / 2) / (7 / 8))


def test_seasonal_profile_is_nan_where_nothing_was_measured() -> None:
    grid = np.full((2, 3, 2), np.nan)
    grid[0, 1, 0] = 5.0
    prof = seasonal_profile(grid, np.array([False, True]), np.ones(2, bool), np.ones(2))
    assert prof[0, 1, 0] == 5.0
    assert prof[1, 1, 0] == 5.0
    assert np.isnan(prof[:, 0]).all()
    assert np.isnan(prof[:, :, 1]).all()


def test_anomaly_blend_starts_at_the_measurement_and_fades_to_the_baseline_in_an_hour() -> None:
    base = np.array([[100.0, np.nan], [100.0, np.nan], [100.0, np.nan]])
    out = anomaly_blend(base, base[0], np.array([130.0, 7.0]), np.array([0.0, 1800.0, 3600.0]))
    assert out[:, 0] == pytest.approx([130.0, 115.0, 100.0])
    assert out[:, 1] == pytest.approx([7.0, 7.0, 7.0])  # no baseline: persistence


def test_index_blend_scales_in_proportion_and_never_goes_negative() -> None:
    base = np.array([[10.0], [20.0], [0.0]])
    out = index_blend(base, base[0], np.array([5.0]), np.array([0.0, 3600.0, 0.0]))
    assert out[:, 0] == pytest.approx([5.0, 20.0, 0.0])


def test_overlap_weights_give_each_step_its_mean_over_the_slots() -> None:
    edges = np.array([0.0, 900.0, 1800.0, 2700.0])
    w = overlap_weights(edges, [0.0, 60.0, 600.0], [60.0, 540.0, 900.0])
    assert w.sum(axis=1) == pytest.approx([1.0, 1.0, 1.0])
    assert w[2] == pytest.approx([300 / 900, 600 / 900, 0.0])
    assert (w @ np.array([1.0, 4.0, 9.0]))[2] == pytest.approx(1.0 / 3 + 4.0 * 2 / 3)


@pytest.mark.parametrize("longitude", [0.0, 90.0, -75.0])
def test_clear_sky_is_zero_at_night_and_peaks_near_solar_noon(longitude: float) -> None:
    starts = pd.date_range("2026-06-21", periods=96, freq="900s", tz="UTC")
    ghi = clear_sky_ghi(starts, 900.0, 45.0, longitude)
    noon_utc_h = (12.0 - longitude / 15.0) % 24
    peak_h = (starts[int(np.argmax(ghi))].hour + starts[int(np.argmax(ghi))].minute / 60) + 0.125
    # the equation of time moves solar noon by under 4 minutes in late June; one slot is 15
    assert abs((peak_h - noon_utc_h + 12) % 24 - 12) <= 0.25
    midnight = int(((noon_utc_h + 12) % 24) * 4)
    assert ghi[midnight] == 0.0
    assert 800.0 < ghi.max() < 1100.0  # a clear June noon at 45° N
    assert (ghi >= 0).all()


def test_pv_scale_takes_the_clear_slots_and_ignores_dawn() -> None:
    ghi = np.array([50.0, 200.0, 400.0, 800.0, 600.0])
    pv = np.array([[40.0], [60.0], [120.0], [240.0], [90.0]])  # 0.3 kW per W/m² when clear
    assert pv_scale(pv, ghi, quantile=1.0)[0] == pytest.approx(0.3)
    assert math.isnan(pv_scale(pv, np.array([10.0] * 5))[0])


def test_scores_give_mape_and_rmse_by_hand() -> None:
    total = ScoreSums()
    for forecast, actual in ((100.0, 110.0), (100.0, 120.0), (110.0, 120.0), (3.0, 0.5)):
        total.add(score(forecast, actual, mape_floor_kw=6.0))
    assert total.n == 4
    assert total.n_ape == 3
    assert total.rmse_kw == pytest.approx(math.sqrt((100 + 400 + 100 + 6.25) / 4))
    assert total.mape_pct == pytest.approx(100 * (10 / 110 + 20 / 120 + 10 / 120) / 3)
    assert ScoreSums().rmse_kw is None
    assert ScoreSums().mape_pct is None
    assert [lead_bucket(x) for x in (0, 3599, 3600, 14400, 86400, 90000)] == [
        "0-1h",
        "0-1h",
        "1-4h",
        "4-24h",
        "4-24h",
        None,
    ]


def test_mstl_learns_a_daily_shape_with_a_trend() -> None:
    season = 24
    rng = np.random.default_rng(3)
    t = np.arange(season * 5)
    y = 100 + 0.5 * t + 30 * np.sin(2 * np.pi * t / season) + rng.normal(0, 1, t.size)
    y[10:13] = np.nan  # holes are interpolated
    fit = fit_total_load(y, last_slot=int(t[-1]), season=season, h=season)
    tt = np.arange(t.size, t.size + season)
    truth = 100 + 0.5 * tt + 30 * np.sin(2 * np.pi * tt / season)
    assert np.sqrt(np.mean((fit.mean - truth) ** 2)) < 5.0  # noise 1; a seasonal mean misses 12+
    assert fit.at(np.array([t[-1], t[-1] + 1], dtype=np.int64))[1] == fit.mean[0]
    assert math.isnan(fit.at(np.array([t[-1]], dtype=np.int64))[0])


def test_mstl_refuses_less_than_two_seasons() -> None:
    with pytest.raises(ValueError, match="needs 48"):
        fit_total_load(np.ones(30), last_slot=29, season=24, h=5)
