"""The plan's metrics and where each plan goes (``controller.plan_outlet``): the next hour as
gauges, checked by ``promtool check metrics``; the forecasts' error from a real ``Forecaster``
fed two simulated hours; the journal row; the gate that spares the journal and the broker."""

from __future__ import annotations

import math
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from controller.forecasts import Forecaster, ForecastSettings
from controller.journal import Journal
from controller.metrics import Metrics
from controller.plan import MINUTES_AHEAD, plan_from
from controller.plan_outlet import PlanOutlet, forecast_errors
from optimizer.horizon import HorizonSpec
from tests.controller.plan_helpers import AT, plan_input, plan_result


def _value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def _promtool(text: bytes) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make apt` (as root)")
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def _fed_forecaster(journal: Journal | None = None) -> Forecaster:
    """A forecaster that has observed and forecast two hours, minute by minute."""
    spec = HorizonSpec.multi_resolution(60.0, hours=4.0)
    f = Forecaster([1, 2], ["pv1"], ForecastSettings(latitude=None, longitude=None), journal)
    start = AT - timedelta(hours=2)
    for k in range(120):
        at = start + timedelta(minutes=k)
        f.observe(at, {1: 100.0 + k % 7, 2: 50.0}, {"pv1": 10.0})
        f.forecast(at, spec.starts_s, spec.steps_s)
    return f


def test_the_next_hour_is_the_step_covering_each_moment() -> None:
    m = Metrics()
    for minutes in MINUTES_AHEAD:  # before any plan: there, and NaN
        value = _value(m, "feederd_plan_import_kw", minutes_ahead=str(minutes))
        assert value is not None
        assert math.isnan(value)
    m.show_plan(plan_from(plan_result(), plan_input(), AT))
    # the blocks start 4 minutes past each quarter (after four fine steps of a minute): 12:15
    # is in the block starting 12:04 (step 4), 12:30 in step 5, and so on; step k imports
    # 1500 + k kW and b1 holds 30 + 0.5 k kWh (of 100), b2 90 kWh (of 300)
    for minutes, k in zip(MINUTES_AHEAD, (4, 5, 6, 7), strict=True):
        label = str(minutes)
        assert _value(m, "feederd_plan_import_kw", minutes_ahead=label) == 1500.0 + k
        soc = _value(m, "feederd_plan_soc_pct", minutes_ahead=label)
        assert soc == pytest.approx(round(100 * (120.0 + 0.5 * k) / 400, 1))
        assert _value(m, "feederd_plan_curtailed_kw", minutes_ahead=label) == 0.0
    # a plan that reaches 30 minutes only: the rest is NaN, never a stale number
    short = HorizonSpec.multi_resolution(60.0, hours=0.5)
    n = short.horizon
    m.show_plan(
        plan_from(
            plan_result(
                step_start_s=tuple(sum(short.steps_s[:k]) for k in range(n)),
                step_s=short.steps_s,
                import_plan_kw=(900.0,) * n,
                soc_plan_kwh={"b1": (50.0,) * n, "b2": (150.0,) * n},
                battery_plan_kw={"b1": (0.0,) * n, "b2": (0.0,) * n},
                curtailed_plan_kw=(0.0,) * n,
                import_slack_plan_kw=(0.0,) * n,
                export_slack_plan_kw=(0.0,) * n,
                import_limit_plan_kw=(math.nan,) * n,
            ),
            plan_input(),
            AT,
        )
    )
    assert _value(m, "feederd_plan_import_kw", minutes_ahead="15") == 900.0
    after = _value(m, "feederd_plan_import_kw", minutes_ahead="45")
    assert after is not None
    assert math.isnan(after)
    _promtool(generate_latest(m.registry))


def test_forecast_error_gauges_from_a_real_forecaster_pass_promtool() -> None:
    m = Metrics()
    errors = forecast_errors(_fed_forecaster().errors())
    m.show_forecast_errors(errors)
    scored = {(e.quantity, e.bucket): e for e in errors}
    near = scored[("load", "0-1h")]
    assert near.samples > 0  # two hours were enough to score the next hour's forecasts
    assert near.mape_pct is not None
    assert near.rmse_kw is not None
    assert _value(m, "feederd_forecast_mape_pct", quantity="load", bucket="0-1h") == near.mape_pct
    assert _value(m, "feederd_forecast_rmse_kw", quantity="load", bucket="0-1h") == near.rmse_kw
    # the loads swing by up to 6 kW of 153-159 kW: the error is a few kW and a few percent
    assert 0 < near.rmse_kw < 6.0
    assert 0 < near.mape_pct < 6.0 / 150 * 100
    _promtool(generate_latest(m.registry))


def test_outlet_stores_publishes_and_spares_the_unchanged(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    m = Metrics()
    outlet = PlanOutlet(metrics=m, journal=journal, forecaster=_fed_forecaster())
    sent: list[dict[str, object]] = []
    outlet.listeners.append(sent.append)
    assert journal.last_plan() is None
    outlet.made(plan_result(), plan_input(), AT)
    stored = journal.last_plan()
    assert stored is not None
    assert sent == [stored]
    assert stored["at"] == "2026-07-01T12:00:00Z"
    assert {(e["quantity"], e["bucket"]) for e in stored["forecast_errors"]} >= {("load", "0-1h")}
    # the same plan an interval on: metrics follow, the journal and the broker are spared
    outlet.made(plan_result(), plan_input(), AT + timedelta(minutes=1))
    assert len(sent) == 1
    assert outlet.last is not None
    assert outlet.last.at == AT + timedelta(minutes=1)
    # a plan that changed: stored and sent
    changed = plan_result(import_plan_kw=tuple(2000.0 for _ in plan_result().import_plan_kw))
    outlet.made(changed, plan_input(), AT + timedelta(minutes=2))
    assert len(sent) == 2
    last = journal.last_plan()
    assert last is not None
    assert last["steps"][0]["import_kw"] == 2000.0
    # an interval the fallback rule dispatched: no plan, NaN, never the older plan's numbers
    outlet.missed()
    gone = _value(m, "feederd_plan_import_kw", minutes_ahead="15")
    assert gone is not None
    assert math.isnan(gone)
    assert journal.last_plan() == last  # the journal keeps the last plan, with its time
    journal.close()


def test_a_journal_that_fails_is_said_once_and_the_plan_still_goes_out(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    m = Metrics()
    outlet = PlanOutlet(metrics=m, journal=journal)
    sent: list[dict[str, object]] = []
    outlet.listeners.append(sent.append)
    journal.close()  # every write now fails
    with capture_logs() as logs:
        for k in range(3):
            imports = tuple(1000.0 + 100 * k for _ in plan_result().import_plan_kw)
            outlet.made(plan_result(import_plan_kw=imports), plan_input(), AT)
    assert len(sent) == 3
    assert [d["event"] for d in logs] == ["plan_store_failed"]
    assert _value(m, "feederd_journal_errors_total") == 3.0
    assert _value(m, "feederd_plan_import_kw", minutes_ahead="15") == 1200.0
