"""How fast and how good the forecasts are (issue 15), on the IEEE 33-bus feeder with three
inverters and synthetic history (``tests/controller/forecast_series``: a daily load shape with
noise and lower weekends, PV under hourly clouds at 52° N 5° E) kept in a real journal file.

The first ``days - 2`` days are observed only; over the last two, every interval observes and
then forecasts the default 24 h multi-resolution horizon (4 steps of 60 s, then 15-minute
blocks), with ``model = "auto"`` (statsforecast MSTL once two days are known, refitted hourly)
and, alongside, ``model = "seasonal"``. Prints one JSON object: ``observe()`` and
``forecast()`` times (median, 95th percentile, max: the max includes an hourly refit), the fit
times, the statsforecast import, a restart's first forecast, and each model's error (MAPE, RMSE)
per horizon bucket over the last day. Targets: ``forecast()`` well under 20 ms, ``observe()``
well under 1 ms.

    .venv/bin/python benchmarks/forecast.py [--days 14] [--interval 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "median_ms": round(1000 * statistics.median(values), 3),
        "p95_ms": round(1000 * values[int(0.95 * (len(values) - 1))], 3),
        "max_ms": round(1000 * values[-1], 3),
    }


def _errors(fc: Any, since: datetime) -> dict[str, Any]:
    return {
        f"{b.quantity} {b.bucket}": {
            "n": b.n,
            "mape_pct": None if b.mape_pct is None else round(b.mape_pct, 2),
            "rmse_kw": None if b.rmse_kw is None else round(b.rmse_kw, 1),
        }
        for b in fc.errors(since).buckets
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--interval", type=float, default=300.0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import structlog  # noqa: PLC0415

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    started = time.perf_counter()
    from controller.forecasts import Forecaster, ForecastSettings  # noqa: PLC0415
    from controller.journal import Journal  # noqa: PLC0415
    from optimizer import builtin_case, load_matpower  # noqa: PLC0415
    from tests.controller.forecast_series import horizon_steps, samples  # noqa: PLC0415

    result: dict[str, Any] = {"import_s": round(time.perf_counter() - started, 2)}
    t = time.perf_counter()
    import statsforecast.models  # noqa: F401, PLC0415 - counted apart from the fit

    result["statsforecast_import_s"] = round(time.perf_counter() - t, 2)
    net = load_matpower(builtin_case("case33bw"))
    loads = {b: kw for b, kw in net.loads_kw.items() if kw > 0}
    pv = {"pv1": 400.0, "pv2": 250.0, "pv3": 300.0}
    start = datetime(2026, 6, 1, tzinfo=UTC)
    result.update(buses=len(loads), pv_units=len(pv), days=args.days)
    starts, steps = horizon_steps(60.0)
    result["horizon_steps"] = len(starts)
    learn_until = start + timedelta(days=args.days - 2)
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite")
        fc = Forecaster(sorted(loads), sorted(pv), ForecastSettings(52.0, 5.0), journal)
        base = Forecaster(sorted(loads), sorted(pv), ForecastSettings(52.0, 5.0, model="seasonal"))
        observe_s: list[float] = []
        forecast_s: list[float] = []
        plain_s: list[float] = []  # the calls that did not fit the model
        plain_cpu_s: list[float] = []  # and their CPU time (the box is shared)
        fits: list[float] = []
        at = start
        for s in samples(
            start,
            days=args.days,
            interval_s=args.interval,
            loads_kw=loads,
            pv_kwp=pv,
            seed=1,
            clouds=True,
        ):
            at = s.at
            t = time.perf_counter()
            fc.observe(at, s.loads_kw, s.pv_kw)
            observe_s.append(time.perf_counter() - t)
            base.observe(at, s.loads_kw, s.pv_kw)
            if at < learn_until:
                continue
            fit_before = fc.last_fit_s
            cpu = time.process_time()
            t = time.perf_counter()
            fc.forecast(at, starts, steps)
            forecast_s.append(time.perf_counter() - t)
            cpu = time.process_time() - cpu
            if fc.last_fit_s is not None and fc.last_fit_s is not fit_before:
                fits.append(fc.last_fit_s)
            else:
                plain_s.append(forecast_s[-1])
                plain_cpu_s.append(cpu)
            base.forecast(at, starts, steps)
        result["observe"] = _ms(observe_s)
        result["forecast"] = _ms(forecast_s)
        result["forecast_without_fit"] = _ms(plain_s)
        result["forecast_without_fit_cpu"] = _ms(plain_cpu_s)
        result["forecast_calls"] = len(forecast_s)
        result["model"] = fc.model_name
        result["fits"] = len(fits)
        result["fit_s_median"] = round(statistics.median(fits), 3) if fits else None
        fresh = Forecaster(sorted(loads), sorted(pv), ForecastSettings(52.0, 5.0), journal)
        t = time.perf_counter()
        fresh.forecast(at, starts, steps)
        result["restart_first_forecast_s"] = round(time.perf_counter() - t, 3)
        journal.close()
        last_day = at - timedelta(days=1)
        result["errors_auto_last_day"] = _errors(fc, last_day)
        result["errors_seasonal_last_day"] = _errors(base, last_day)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
