"""The limits' feedback (``controller.correction``), as pure logic: what the head meter measured
against what the last dispatch predicted tightens the next interval's limit; the signs for
import and export limits, the anti-windup clamp and freeze, and the resets."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import Config, ConfigError, parse_config
from controller.correction import (
    CorrectionSettings,
    LimitCorrection,
    LimitCorrector,
    headroom_kw,
)
from optimizer import BatteryUnit, DispatchInput, DispatchResult, DispatchStatus, PvUnit

UNITS = ("net", frozenset({"pv1", "bat1"}))
NO_MARGIN = CorrectionSettings(margin_pct=0.0)


def _interval(
    c: LimitCorrector,
    measured_kw: float | None,
    *,
    imp: float | None = None,
    exp: float | None = None,
    units: object = UNITS,
) -> LimitCorrection:
    return c.begin(measured_kw=measured_kw, import_limit_kw=imp, export_limit_kw=exp, units=units)


def _at_limit(c: LimitCorrector, corr: LimitCorrection, **room: float) -> None:
    """The LP held the corrected import limit exactly, with room left."""
    assert corr.import_limit_kw is not None
    c.dispatched(
        predicted_kw=corr.import_limit_kw,
        room_down_kw=room.get("down", 500.0),
        room_up_kw=room.get("up", 500.0),
        import_slack_kw=room.get("slack", 0.0),
    )


def test_a_steady_model_error_on_an_import_limit_is_learnt_and_taken_off_the_limit() -> None:
    c = LimitCorrector(CorrectionSettings(gain=0.5, margin_pct=0.0))
    corr = _interval(c, 2300.0, imp=2000.0)
    assert corr.import_limit_kw == 2000.0
    assert corr.error_kw is None
    _at_limit(c, corr)
    # the feeder drew 30 kW more than predicted: the first error after a reset is taken whole
    corr = _interval(c, 2030.0, imp=2000.0)
    assert corr.error_kw == pytest.approx(30.0)
    assert corr.import_kw == pytest.approx(30.0)
    assert corr.import_limit_kw == pytest.approx(1970.0)
    _at_limit(c, corr)
    # with the limit tightened the head sits at it; the same error keeps the correction
    corr = _interval(c, 2000.0, imp=2000.0)
    assert corr.error_kw == pytest.approx(30.0)
    assert corr.import_kw == pytest.approx(30.0)
    _at_limit(c, corr)
    # a new error is taken at the gain: half of the way from 30 to 50
    corr = _interval(c, 2020.0, imp=2000.0)
    assert corr.import_kw == pytest.approx(40.0)
    assert corr.export_kw is None
    assert corr.export_limit_kw is None


def test_an_export_limit_is_tightened_when_the_feeder_exports_more_than_predicted() -> None:
    c = LimitCorrector(NO_MARGIN)
    corr = _interval(c, -700.0, exp=500.0)
    assert corr.export_limit_kw == 500.0
    c.dispatched(predicted_kw=-500.0, room_down_kw=0.0, room_up_kw=300.0)
    corr = _interval(c, -512.0, exp=500.0)  # 12 kW more export than predicted
    assert corr.error_kw == pytest.approx(-12.0)
    assert corr.export_kw == pytest.approx(12.0)  # positive: tightens
    assert corr.export_limit_kw == pytest.approx(488.0)
    assert corr.import_kw is None


def test_a_model_that_over_predicts_loosens_the_limit_at_most_to_the_limit_itself() -> None:
    c = LimitCorrector(CorrectionSettings(margin_pct=0.1))
    _at_limit(c, _interval(c, 2100.0, imp=2000.0))
    corr = _interval(c, 1989.0, imp=2000.0)  # 9 kW under what the dispatch expected (1998)
    assert corr.import_kw == pytest.approx(-2.0)  # the margin, no more
    assert corr.import_limit_kw == pytest.approx(2000.0)
    c = LimitCorrector(CorrectionSettings(margin_pct=0.1))
    _interval(c, -600.0, exp=500.0)
    c.dispatched(predicted_kw=-499.5, room_down_kw=0.0, room_up_kw=300.0)
    corr = _interval(c, -480.0, exp=500.0)  # a cloud: 19.5 kW less export than predicted
    assert corr.export_kw == pytest.approx(-0.5)
    assert corr.export_limit_kw == pytest.approx(500.0)


def test_the_margin_aims_just_inside_the_limit() -> None:
    c = LimitCorrector(CorrectionSettings(margin_pct=0.1))
    corr = _interval(c, 1500.0, imp=2000.0, exp=400.0)
    assert corr.import_limit_kw == pytest.approx(1998.0)
    assert corr.export_limit_kw == pytest.approx(399.6)


def test_the_correction_is_clamped_to_its_share_of_the_limit_or_the_floor() -> None:
    c = LimitCorrector(CorrectionSettings(max_pct=5.0, max_floor_kw=20.0, margin_pct=0.0))
    _at_limit(c, _interval(c, 2500.0, imp=2000.0))
    corr = _interval(c, 2400.0, imp=2000.0)  # 400 kW off: a meter or model fault, not a bias
    assert corr.import_kw == pytest.approx(100.0)  # 5% of 2000
    # a zero-export limit has no size: the floor bounds it
    c = LimitCorrector(CorrectionSettings(max_pct=5.0, max_floor_kw=20.0, margin_pct=0.0))
    _interval(c, -50.0, exp=0.0)
    c.dispatched(predicted_kw=0.0, room_down_kw=0.0, room_up_kw=100.0)
    corr = _interval(c, -80.0, exp=0.0)
    assert corr.export_kw == pytest.approx(20.0)
    assert corr.export_limit_kw == pytest.approx(-20.0)  # i.e. hold an import of 20 kW


@pytest.mark.parametrize(
    ("predicted", "room", "why"),
    [
        (1900.0, {}, "not binding: the dispatch stayed below the limit"),
        (2000.0, {"down": 0.0}, "no room: every unit at its bound"),
        (2000.0, {"slack": 40.0}, "no room: the limit's slack in use"),
    ],
)
def test_the_correction_is_frozen_when_the_limit_did_not_bind_or_had_no_room(
    predicted: float, room: dict[str, float], why: str
) -> None:
    c = LimitCorrector(NO_MARGIN)
    _at_limit(c, _interval(c, 2100.0, imp=2000.0))
    corr = _interval(c, 2010.0, imp=2000.0)
    assert corr.import_kw == pytest.approx(10.0)
    c.dispatched(
        predicted_kw=predicted,
        room_down_kw=room.get("down", 500.0),
        room_up_kw=500.0,
        import_slack_kw=room.get("slack", 0.0),
    )
    corr = _interval(c, 2080.0, imp=2000.0)
    assert corr.import_kw == pytest.approx(10.0), why


def _learnt(c: LimitCorrector, *, imp: float = 2000.0) -> None:
    _at_limit(c, _interval(c, imp + 100.0, imp=imp))
    corr = _interval(c, imp + 10.0, imp=imp)
    assert corr.import_kw == pytest.approx(10.0)
    _at_limit(c, corr)


def test_a_limit_that_moves_a_little_keeps_its_correction_and_one_that_moves_much_resets() -> None:
    c = LimitCorrector(CorrectionSettings(reset_pct=10.0, margin_pct=0.0))
    _learnt(c)
    corr = _interval(c, 2000.0, imp=2100.0)  # 5% higher: the same bias
    assert corr.import_kw == pytest.approx(10.0)
    assert corr.reset == ()
    _at_limit(c, corr)
    corr = _interval(c, 2090.0, imp=1500.0)  # a new event, 29% lower
    assert corr.import_kw == 0.0
    assert corr.import_limit_kw == 1500.0
    assert corr.reset == ("import limit changed",)


def test_a_limit_that_ends_and_comes_back_starts_afresh() -> None:
    c = LimitCorrector(NO_MARGIN)
    _learnt(c)
    corr = _interval(c, 2000.0)
    assert corr.import_kw is None
    assert corr.import_limit_kw is None
    corr = _interval(c, 2000.0, imp=2000.0)
    assert corr.import_kw == 0.0


@pytest.mark.parametrize(
    ("measured", "units", "dispatch", "reason"),
    [
        (None, UNITS, True, "no fresh head-meter reading"),
        (2005.0, ("net", frozenset({"pv1"})), True, "the network or the units dispatched changed"),
        (2005.0, UNITS, False, "no dispatch to compare with"),  # the fallback rule dispatched
    ],
)
def test_resets_on_a_missing_reading_a_changed_unit_set_or_a_fallback(
    measured: float | None, units: object, dispatch: bool, reason: str
) -> None:
    c = LimitCorrector(NO_MARGIN)
    _interval(c, 2100.0, imp=2000.0)
    _at_limit(c, _interval(c, 2100.0, imp=2000.0))
    corr = _interval(c, 2010.0, imp=2000.0)
    assert corr.import_kw == pytest.approx(10.0)
    if dispatch:
        _at_limit(c, corr)
    corr = _interval(c, measured, imp=2000.0, units=units)
    assert corr.import_kw == 0.0
    assert corr.reset == (reason,)
    # after a reset the first error is taken whole again
    _at_limit(c, corr)
    corr = _interval(c, 2006.0, imp=2000.0, units=units)
    assert corr.import_kw == pytest.approx(6.0)


def test_switched_off_the_limits_pass_through() -> None:
    c = LimitCorrector(CorrectionSettings(enabled=False))
    for measured in (2300.0, 2030.0, 2030.0):
        corr = _interval(c, measured, imp=2000.0, exp=100.0)
        assert (corr.import_limit_kw, corr.export_limit_kw) == (2000.0, 100.0)
        assert (corr.import_kw, corr.export_kw, corr.error_kw) == (None, None, None)
        c.dispatched(predicted_kw=2000.0, room_down_kw=100.0, room_up_kw=100.0)


def test_headroom_counts_each_unit_between_its_bounds_for_the_interval() -> None:
    inp = DispatchInput(
        loads_kw={1: 0.0, 2: 500.0},
        loads_kvar={1: 0.0, 2: 0.0},
        pv=(
            # 100 kW of sun, curtailed to 60: 40 kW more could lower the import
            PvUnit(name="pv1", bus=2, rating_kva=150.0, p_max_kw=150.0, available_kw=100.0),
        ),
        batteries=(
            # 250 kW, but a ramp of 10 kW/s from 50 kW allows 0..100 kW in a 5 s interval
            BatteryUnit(
                name="bat1",
                bus=2,
                p_max_kw=250.0,
                energy_kwh=500.0,
                soc_kwh=250.0,
                soc_min_kwh=50.0,
                soc_max_kwh=500.0,
                last_setpoint_kw=50.0,
                ramp_kw_per_s=10.0,
            ),
            # nearly empty: 0.1 kWh above its floor is 68.4 kW for 5 s at 95%
            BatteryUnit(
                name="bat2",
                bus=2,
                p_max_kw=250.0,
                energy_kwh=500.0,
                soc_kwh=50.1,
                soc_min_kwh=50.0,
                soc_max_kwh=500.0,
            ),
        ),
        interval_s=5.0,
    )
    result = DispatchResult(
        status=DispatchStatus.OPTIMAL,
        pv_kw={"pv1": 60.0},
        battery_kw={"bat1": 80.0, "bat2": 0.0},
    )
    down, up = headroom_kw(inp, result)
    assert down == pytest.approx(40.0 + 20.0 + 0.1 * 0.95 * 720.0)
    assert up == pytest.approx(60.0 + 80.0 + 250.0)


def _config(control: dict[str, object]) -> object:
    doc = {
        "site": "t",
        "feeder": {"case": "builtin:case33bw"},
        "metrics": {"enabled": False},
        "devices": [
            {
                "name": "head",
                "kind": "meter",
                "head": True,
                "bus": 1,
                "transport": {"type": "tcp", "host": "127.0.0.1", "port": 1502},
            }
        ],
        "control": control,
    }
    return parse_config(doc, source="f.toml", base_dir=Path.cwd()).config


def test_the_control_table_defaults_and_its_ranges() -> None:
    config = _config({})
    assert isinstance(config, Config)
    assert config.control.limit_correction is True
    assert config.control.correction_gain == 0.5
    config = _config({"limit_correction": False, "limit_margin_pct": 0.0})
    assert isinstance(config, Config)
    assert not config.control.limit_correction
    for key, bad in (
        ("correction_gain", 0.0),
        ("correction_gain", 1.5),
        ("correction_max_pct", -1.0),
        ("correction_reset_pct", 0.0),
        ("limit_margin_pct", 11.0),
        ("correction_max_floor_kw", float("nan")),
        ("gain", 0.5),
    ):
        with pytest.raises(ConfigError) as info:
            _config({key: bad})
        assert str(info.value).startswith(f"f.toml: control.{key}: "), str(info.value)
        assert "\n" not in str(info.value)
