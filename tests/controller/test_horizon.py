"""What the horizon sees (``controller.horizon``, pure): DR events mapped onto its steps, a
``reduce_by`` event's future limit from the forecast, an event beyond the horizon, the plan's
predicted shortfall per event, and the config's horizon."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from controller.config import ConfigError, horizon_steps, parse_config
from controller.dr.events import DrEvent, EventType
from controller.dr.overlap import StoredEvent
from controller.horizon import (
    PlanReserve,
    event_outlook,
    horizon_forecast,
    horizon_spec,
    limits_when_step0_ends,
    net_import_kw,
    step_limits,
)
from controller.prices import step_prices
from optimizer import DispatchResult, DispatchStatus, HorizonSpec

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
# two steps of 5 minutes, then 15-minute blocks to 2 hours
STEPS = (300.0, 300.0, *([900.0] * 7), 600.0)
STARTS = tuple(sum(STEPS[:k]) for k in range(len(STEPS)))


def _stored(
    event_id: str,
    kind: EventType,
    kw: float,
    start_min: float,
    end_min: float,
    *,
    seq: int = 1,
    priority: int = 0,
    baseline: float | None = None,
    cancelled: bool = False,
) -> StoredEvent:
    return StoredEvent(
        event=DrEvent(
            id=event_id,
            type=kind,
            kw=kw,
            start=AT + timedelta(minutes=start_min),
            end=AT + timedelta(minutes=end_min),
            priority=priority,
        ),
        seq=seq,
        received_at=AT,
        source="test",
        cancelled_at=AT if cancelled else None,
        baseline_import_kw=baseline,
    )


def _limits(events: list[StoredEvent], net: float = 2000.0, **defaults: Any) -> Any:
    return step_limits(
        events,
        AT,
        STARTS,
        STEPS,
        default_import_kw=defaults.get("imp"),
        default_export_kw=defaults.get("exp"),
        net_kw=[net] * len(STEPS),
    )


def test_an_event_takes_every_step_it_overlaps_even_in_part() -> None:
    # 40 to 70 minutes from now: steps 3 (25-40 min) ends as it begins; 4 (40-55), 5 (55-70)
    limits = _limits([_stored("e", EventType.IMPORT_LIMIT, 1500.0, 40, 70)])
    assert limits.import_kw[:4] == (None, None, None, None)
    assert limits.import_kw[4:6] == (1500.0, 1500.0)
    assert limits.import_kw[6:] == (None,) * (len(STEPS) - 6)
    # one that covers a block only in part holds for the whole block: the conservative reading
    part = _limits([_stored("e", EventType.IMPORT_LIMIT, 1500.0, 45, 50)])
    assert part.import_kw[4] == 1500.0
    assert part.import_kw[5] is None
    assert all(v is None for v in part.export_kw)


def test_the_tightest_limit_within_a_step_holds_and_priorities_decide_at_each_instant() -> None:
    loose = _stored("loose", EventType.IMPORT_LIMIT, 1800.0, 40, 100, seq=1)
    tight = _stored("tight", EventType.IMPORT_LIMIT, 1200.0, 60, 65, seq=2)
    limits = _limits([loose, tight])
    assert limits.import_kw[4] == 1800.0
    assert limits.import_kw[5] == 1200.0  # 55-70 min: the tight one for five of its minutes
    assert limits.import_kw[6] == 1800.0
    # a higher priority event wins while it is on, even when it is looser
    first = _stored("first", EventType.IMPORT_LIMIT, 1800.0, 40, 100, priority=5)
    limits = _limits([first, tight])
    assert limits.import_kw[5] == 1800.0
    # the configured default holds where no event does; export events act on export only
    cap = _stored("cap", EventType.EXPORT_LIMIT, 100.0, 0, 10)
    limits = _limits([cap], imp=3000.0)
    assert limits.import_kw == (3000.0,) * len(STEPS)
    assert limits.export_kw[:2] == (100.0, 100.0)
    assert limits.export_kw[2] is None


def test_a_future_reduce_by_takes_its_baseline_from_the_forecast_at_its_start() -> None:
    net = [2000.0 + 100.0 * k for k in range(len(STEPS))]  # the forecast's rising net import
    ev = _stored("cut", EventType.REDUCE_BY, 300.0, 55, 70)  # starts in step 5
    limits = step_limits(
        [ev],
        AT,
        STARTS,
        STEPS,
        default_import_kw=None,
        default_export_kw=None,
        net_kw=net,
    )
    assert limits.import_kw[5] == pytest.approx(net[5] - 300.0)
    # once begun, its measured baseline governs
    begun = _stored("cut", EventType.REDUCE_BY, 300.0, -5, 20, baseline=2500.0)
    limits = _limits([begun])
    assert limits.import_kw[:4] == (2200.0, 2200.0, 2200.0, None)  # to 20 min: steps 0-2


def test_step_0_sees_an_event_that_begins_before_its_setpoints_are_replaced() -> None:
    """Step 0's setpoints stay in the devices until the next interval writes: an event that
    begins by the next poll (5 minutes from now) holds step 0 too; one already in force is
    step 0's own (corrected) limit and is left out; a later one is not seen."""

    def ending(events: list[StoredEvent]) -> tuple[float | None, float | None]:
        out = limits_when_step0_ends(
            events, AT, 300.0, default_import_kw=None, default_export_kw=None, net_kw=2000.0
        )
        return out.import_kw[0], out.export_kw[0]

    assert ending([_stored("cap", EventType.IMPORT_LIMIT, 1500.0, 5, 60)]) == (1500.0, None)
    assert ending([_stored("cap", EventType.IMPORT_LIMIT, 1500.0, 2, 60)]) == (1500.0, None)
    assert ending([_stored("cap", EventType.IMPORT_LIMIT, 1500.0, 6, 60)]) == (None, None)
    assert ending([_stored("now", EventType.IMPORT_LIMIT, 1500.0, -5, 60)]) == (None, None)
    assert ending([_stored("exp", EventType.EXPORT_LIMIT, 200.0, 5, 60)]) == (None, 200.0)
    # a reduce_by about to begin takes the net import now as its baseline
    assert ending([_stored("cut", EventType.REDUCE_BY, 300.0, 5, 60)]) == (1700.0, None)


def test_events_beyond_the_horizon_over_or_cancelled_are_not_seen() -> None:
    later = _stored("tomorrow", EventType.IMPORT_LIMIT, 1000.0, 150, 210)  # past 2 h
    over = _stored("over", EventType.IMPORT_LIMIT, 1000.0, -60, -1)
    gone = _stored("gone", EventType.IMPORT_LIMIT, 1000.0, 0, 60, cancelled=True)
    limits = _limits([later, over, gone])
    assert set(limits.import_kw) == {None}


def test_net_import_follows_the_forecast_frames() -> None:
    class Frames:
        source = "seasonal"
        load_kw = pd.DataFrame({1: [10.0, 20.0, 30.0], 2: [5.0, 5.0, 5.0]})
        pv_kw = pd.DataFrame({"pv1": [0.0, 4.0, 8.0]})

    net = net_import_kw({1: 10.0, 2: 5.0, 3: 7.0}, {"pv1": 1.0, "pv2": 2.0}, Frames(), 3)
    # step 0 is what was measured; later steps take the frames where they have a column
    assert net == [22.0 - 3.0, 32.0 - 6.0, 42.0 - 10.0]
    assert net_import_kw({1: 10.0}, {}, None, 2) == [10.0, 10.0]


def test_the_forecast_carries_prices_limits_and_frames() -> None:
    spec = HorizonSpec(steps_s=(300.0, 300.0, 900.0), network_steps=1)
    prices = step_prices(AT, spec.starts_s, spec.steps_s, default_per_kwh=0.2)
    limits = step_limits(
        [_stored("e", EventType.IMPORT_LIMIT, 1000.0, 10, 30)],
        AT,
        spec.starts_s,
        spec.steps_s,
        default_import_kw=None,
        default_export_kw=None,
        net_kw=[0.0] * 3,
    )
    fc = horizon_forecast(
        spec,
        frames=None,
        prices=prices,
        limits=limits,
        step0_import_limit_kw=None,
        step0_export_limit_kw=None,
        reserve=PlanReserve(margin_pct=0.1, reserve_pct=1.0, floor_kw=5.0),
    )
    assert list(fc.price) == [0.2, 0.2, 0.2]
    assert fc.export_price is None  # export earns the import price
    assert fc.import_limit_kw is not None
    assert fc.export_limit_kw is not None
    assert math.isnan(fc.import_limit_kw[0])
    assert math.isnan(fc.import_limit_kw[1])
    assert fc.import_limit_kw[2] == pytest.approx(990.0)  # held the reserve inside it: 1%
    assert fc.export_limit_kw.isna().all()
    fc.check(spec.horizon)


def test_an_inverter_missing_this_interval_leaves_the_forecast_with_it() -> None:
    """A device down this interval is not in the dispatch; its forecast must not be either
    (the dispatch refuses a forecast naming a unit it lacks: the daemon fell back to
    proportional curtailment for as long as an inverter was silent)."""

    class Frames:
        load_kw = pd.DataFrame({2: [100.0] * 3, 3: [90.0] * 3})
        pv_kw = pd.DataFrame({"pv18": [50.0] * 3, "pv22": [40.0] * 3})

    spec = HorizonSpec(steps_s=(300.0, 300.0, 900.0), network_steps=1)
    prices = step_prices(AT, spec.starts_s, spec.steps_s, default_per_kwh=0.2)

    def forecast(units: set[str]) -> Any:
        return horizon_forecast(
            spec,
            frames=Frames(),
            prices=prices,
            limits=None,
            step0_import_limit_kw=None,
            step0_export_limit_kw=None,
            pv_units=units,
        )

    assert list(forecast({"pv22"}).pv_kw.columns) == ["pv22"]
    assert forecast(set()).pv_kw is None
    assert list(forecast({"pv18", "pv22"}).pv_kw.columns) == ["pv18", "pv22"]
    assert list(forecast(set()).load_kw.columns) == [2, 3]


def test_the_predicted_shortfall_of_each_event_from_the_plan() -> None:
    starts = (0.0, 300.0, 600.0, 1500.0, 2400.0)
    steps = (300.0, 300.0, 900.0, 900.0, 900.0)
    result = DispatchResult(
        status=DispatchStatus.LIMIT_RELAXED,
        step_start_s=starts,
        step_s=steps,
        import_slack_plan_kw=(0.0, 0.0, 120.0, 60.0, 0.0),
        export_slack_plan_kw=(0.0, 0.0, 0.0, 0.0, 0.0),
    )
    short = _stored("short", EventType.IMPORT_LIMIT, 1000.0, 10, 40)  # 600..2400 s
    fine = _stored("fine", EventType.EXPORT_LIMIT, 50.0, 10, 40)
    beyond = _stored("beyond", EventType.IMPORT_LIMIT, 1000.0, 60, 90)
    out = event_outlook([short, fine, beyond], AT, result)
    assert set(out) == {"short", "fine"}
    assert out["short"].shortfall_kw == 120.0
    assert out["short"].shortfall_kwh == pytest.approx(120.0 * 0.25 + 60.0 * 0.25)
    assert out["short"].covered
    assert not out["short"].ready
    assert out["fine"].shortfall_kw == 0.0
    assert out["fine"].ready
    # a slack within the compliance tolerance of the limit (2% of 1000 kW) is none
    small = DispatchResult(
        status=DispatchStatus.OPTIMAL,
        step_start_s=starts,
        step_s=steps,
        import_slack_plan_kw=(0.0, 0.0, 15.0, 0.0, 0.0),
        export_slack_plan_kw=(0.0,) * 5,
    )
    assert event_outlook([short], AT, small)["short"].ready
    # a later step held a reserve inside the limit: its slack against the limit itself
    held = event_outlook([short], AT, result, PlanReserve(reserve_pct=5.0))["short"]
    assert held.shortfall_kw == 120.0 - 50.0
    assert held.shortfall_kwh == pytest.approx(70.0 * 0.25 + 10.0 * 0.25)
    # the fallback rule makes no plan: no prediction
    assert event_outlook([short], AT, DispatchResult(status=DispatchStatus.FALLBACK)) == {}


BASE: dict[str, Any] = {
    "site": "x",
    "interval_s": 60,
    "feeder": {"case": "builtin:case33bw"},
    "devices": [
        {
            "name": "h",
            "kind": "meter",
            "bus": 1,
            "head": True,
            "transport": {"type": "tcp", "host": "127.0.0.1"},
        }
    ],
}


def _config(**tables: Any) -> Any:
    return parse_config({**BASE, **tables}, source="feederd.toml", base_dir=Path("."))


def test_the_horizon_from_the_control_table() -> None:
    default = _config().config
    spec = horizon_spec(default)
    # four minutes at the interval, then quarter hours to 24 h
    assert spec.steps_s[:5] == (60.0, 60.0, 60.0, 60.0, 900.0)
    assert sum(spec.steps_s) == pytest.approx(24 * 3600.0)
    assert spec.horizon == horizon_steps(default)
    assert spec.network_steps == 1
    one = _config(control={"horizon_h": 0}).config
    assert horizon_spec(one).steps_s == (60.0,)
    assert horizon_steps(one) == 1
    with pytest.raises(ConfigError, match=r"control\.horizon_block_s: blocks of 30 s"):
        _config(control={"horizon_block_s": 30})
    with pytest.raises(ConfigError, match=r"control\.horizon_h: 168 h makes 10080 steps"):
        _config(control={"horizon_h": 168, "horizon_block_s": 60})
    with pytest.raises(ConfigError, match=r"control\.battery_end_value_per_kwh"):
        _config(control={"battery_end_value_per_kwh": math.inf})


def test_check_shows_the_horizon_the_tariff_and_the_forecasts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from controller.commands.check import _check  # noqa: PLC0415 (the CLI's summary)

    tariff = {
        "timezone": "Europe/Paris",
        "weekday": [{"from": "00:00", "import": 0.1}, {"from": "17:00", "import": 0.3}],
        "weekend": [{"from": "00:00", "import": 0.05, "export": 0.01}],
    }
    _check(_config(tariff=tariff, control={"horizon_h": 6}))
    out = capsys.readouterr().out
    assert "horizon: 6 h in 28 steps (4 of 60 s, then blocks of 900 s" in out
    assert "tariff (Europe/Paris):" in out
    assert "  weekdays: 00:00 import 0.1; 17:00 import 0.3" in out
    assert "  weekends: 00:00 import 0.05 export 0.01" in out
    assert "forecasts: auto model, 28 days of 900 s slots, no site" in out
    _check(_config(control={"horizon_h": 0}))
    out = capsys.readouterr().out
    assert "horizon: the interval alone (horizon_h = 0)" in out
    assert "prices: 0.1/kWh at every step (no [tariff])" in out


def test_dr_status_is_republished_when_a_prediction_moves_not_for_noise(tmp_path: Path) -> None:
    from controller.clock import FakeClock  # noqa: PLC0415
    from controller.dr.service import DrService  # noqa: PLC0415
    from controller.horizon import EventOutlook  # noqa: PLC0415
    from controller.journal import Journal  # noqa: PLC0415
    from controller.metrics import Metrics  # noqa: PLC0415

    clock = FakeClock(AT)
    journal = Journal(tmp_path / "j.sqlite")
    metrics = Metrics()
    dr = DrService(
        journal,
        clock=clock,
        site="t",
        default_import_kw=None,
        default_export_kw=None,
        metrics=metrics,
    )
    published: list[dict[str, Any]] = []
    dr.listeners.append(lambda: published.append(dr.status()))
    payload = {
        "id": "e",
        "type": "import_limit",
        "kw": 1000.0,
        "start": (AT + timedelta(hours=1)).isoformat(),
        "end": (AT + timedelta(hours=2)).isoformat(),
    }
    assert dr.submit(json.dumps(payload)).result == "accepted"
    assert len(published) == 1  # on acceptance, not yet judged
    assert published[-1]["events"][0]["ready"] is None

    def predict(kw: float) -> None:
        dr.predicted(
            {
                "e": EventOutlook(
                    id="e", shortfall_kw=kw, shortfall_kwh=kw, covered=True, tolerance_kw=20.0
                )
            }
        )

    predict(300.0)  # judged: short
    assert len(published) == 2
    assert published[-1]["events"][0]["predicted_shortfall_kw"] == 300.0
    assert published[-1]["events"][0]["ready"] is False
    predict(302.0)  # noise: not republished, the status keeps what it said
    assert len(published) == 2
    assert dr.status()["events"][0]["predicted_shortfall_kw"] == 300.0
    assert metrics.registry.get_sample_value(
        "feederd_dr_predicted_shortfall_kw", {"event": "e"}
    ) == pytest.approx(302.0)  # the metric follows every interval
    predict(250.0)  # moved: republished
    assert len(published) == 3
    predict(0.0)  # ready
    assert len(published) == 4
    assert published[-1]["events"][0]["ready"] is True
    assert dr.submit(json.dumps({"id": "e", "cancel": True})).result == "cancelled"
    assert (
        metrics.registry.get_sample_value("feederd_dr_predicted_shortfall_kw", {"event": "e"})
        is None
    )
    journal.close()
