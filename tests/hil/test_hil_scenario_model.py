"""Scenario files, day profiles and KPIs: pure code, no sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hil.kpis import Sample, compliant, kpis
from hil.profiles import CloudPass, LoadStep, clear_sky, load, load_shape, sun
from hil.scenario import (
    BUNDLED_SCENARIOS,
    ScenarioError,
    bundled_scenario,
    load_scenario,
    parse_scenario,
)

MINIMAL: dict[str, Any] = {"name": "t", "duration_s": 600}


def _sample(t_s: float, import_kw: float, **kw: Any) -> Sample:
    base: dict[str, Any] = {
        "t_s": t_s,
        "import_kw": import_kw,
        "meter_kw": import_kw,
        "import_limit_kw": None,
        "export_limit_kw": None,
        "v_pu": {1: 1.0, 2: 0.95},
        "losses_kw": 100.0,
        "load_kw": 3000.0,
        "pv_kw": 0.0,
        "pv_available_kw": 0.0,
        "curtailed_kw": 0.0,
        "battery_kw": 0.0,
        "battery_soc_pct": 50.0,
        "status": "optimal",
        "devices_up": 3,
    }
    base.update(kw)
    return Sample(**base)


# --- profiles -----------------------------------------------------------------------------


def test_the_day_peaks_in_the_evening_and_the_sun_at_one() -> None:
    hours = [h / 4 for h in range(96)]
    assert 18.0 <= max(hours, key=load_shape) <= 20.0
    assert 2.0 <= min(hours, key=load_shape) <= 5.0
    assert load_shape(23.5) == pytest.approx((0.62 + 0.55) / 2)  # wraps past midnight
    assert clear_sky(13.0) == pytest.approx(1.0)
    assert clear_sky(3.0) == 0.0
    assert clear_sky(21.0) == 0.0
    assert 0 < clear_sky(8.0) < clear_sky(11.0) < 1.0


def test_cloud_fronts_ramp_and_load_steps_hold() -> None:
    cloud = CloudPass(start_s=100, end_s=400, depth=0.6, edge_s=60)
    assert [round(cloud.factor(t), 3) for t in (50, 130, 160, 300, 370, 450)] == [
        1.0,
        0.7,
        0.4,
        0.4,
        0.7,
        1.0,
    ]
    step = LoadStep(start_s=10, factor=1.2, end_s=20)
    assert [step.factor_at(t) for t in (5, 10, 19, 20)] == [1.0, 1.2, 1.2, 1.0]
    at_noon = sun(200, start_hour=13.0, peak_frac=0.8, clouds=[cloud])
    assert at_noon == pytest.approx(0.8 * clear_sky(13.0 + 200 / 3600) * 0.4)
    assert load(15, start_hour=18.0, scale=1.1, steps=[step]) == pytest.approx(
        1.1 * load_shape(18.0 + 15 / 3600) * 1.2
    )


# --- KPIs ---------------------------------------------------------------------------------


def test_compliance_allows_two_percent_over_an_import_limit_and_an_export_limit() -> None:
    assert compliant(_sample(0, 1020.0, import_limit_kw=1000.0))
    assert not compliant(_sample(0, 1021.0, import_limit_kw=1000.0))
    assert compliant(_sample(0, -1020.0, export_limit_kw=1000.0))
    assert not compliant(_sample(0, -1021.0, export_limit_kw=1000.0))
    assert compliant(_sample(0, 5000.0))  # no limit, nothing to comply with


def test_kpis_of_a_hand_made_run() -> None:
    lim = {"import_limit_kw": 1000.0}
    samples = [
        _sample(0, 1500.0),  # before the event: not counted
        _sample(10, 1400.0, **lim),  # the event's first interval: still over
        _sample(20, 1100.0, **lim),  # over by 10%
        _sample(30, 1010.0, **lim),  # within 2%: complies, 20 s after the start
        _sample(40, 900.0, **lim, v_pu={1: 1.0, 2: 0.91, 3: 0.90}),  # two buses low
        _sample(50, 1200.0, curtailed_kw=360.0),  # after: not counted
    ]
    k = kpis(samples, interval_s=10.0, v_min_pu=0.92, v_max_pu=1.05)
    assert k["dr_intervals"] == 4
    assert k["dr_compliance"] == pytest.approx(0.5)
    assert k["time_to_comply_s"] == pytest.approx(20.0)
    # (400 + 100 + 10) kW over, 10 s each
    assert k["energy_over_limit_kwh"] == pytest.approx(510.0 * 10 / 3600, abs=1e-3)
    assert k["voltage_violation_bus_intervals"] == 2
    assert k["curtailed_kwh"] == pytest.approx(1.0)
    assert k["losses_kwh"] == pytest.approx(6 * 100.0 * 10 / 3600, abs=1e-3)


def test_an_event_never_met_counts_its_whole_length_and_no_event_gives_none() -> None:
    samples = [_sample(t, 2000.0, import_limit_kw=1000.0) for t in (0, 5, 10)]
    k = kpis(samples, interval_s=5.0, v_min_pu=0.9, v_max_pu=1.1)
    assert k["dr_compliance"] == 0.0
    assert k["time_to_comply_s"] == 15.0
    free = kpis([_sample(0, 100.0)], interval_s=5.0, v_min_pu=0.9, v_max_pu=1.1)
    assert free["dr_compliance"] is None
    assert free["time_to_comply_s"] is None


# --- scenario files -----------------------------------------------------------------------


@pytest.mark.parametrize("name", BUNDLED_SCENARIOS)
def test_bundled_scenarios_load(name: str) -> None:
    scenario = load_scenario(bundled_scenario(name))
    assert scenario.duration_s == 7200
    assert scenario.dr, "every bundled scenario has a DR event"


def test_a_bundled_name_that_does_not_exist_is_named() -> None:
    with pytest.raises(KeyError, match="no bundled scenario 'nope'"):
        bundled_scenario("nope")


def test_compression_scales_the_whole_timeline() -> None:
    scenario = load_scenario(bundled_scenario("device_failures"))
    short = scenario.compressed(0.25)
    assert short.duration_s == 1800
    assert short.dr[0].start_s == scenario.dr[0].start_s / 4
    assert short.fault[0].end_s == scenario.fault[0].end_s / 4
    assert short.fault[0].device == scenario.fault[0].device
    assert short.limits_at(short.dr[0].start_s) == (scenario.dr[0].import_limit_kw, None)
    assert short.limits_at(short.dr[0].end_s) == (None, None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "t"}, "<t.toml>: duration_s: missing required key"),
        ({**MINIMAL, "colour": "red"}, "<t.toml>: colour: unknown key"),
        (
            {**MINIMAL, "dr": [{"start_s": 60, "end_s": 30, "import_limit_kw": 1000}]},
            "<t.toml>: dr[0]: end_s (30) must be after start_s (60)",
        ),
        (
            {**MINIMAL, "dr": [{"start_s": 0, "end_s": 30}]},
            "<t.toml>: dr[0]: a DR event needs import_limit_kw or export_limit_kw",
        ),
        (
            {
                **MINIMAL,
                "dr": [
                    {"start_s": 0, "end_s": 300, "import_limit_kw": 1000},
                    {"start_s": 200, "end_s": 400, "import_limit_kw": 900},
                ],
            },
            "<t.toml>: DR events overlap: 0-300 s and 200-400 s",
        ),
        (
            {**MINIMAL, "fault": [{"device": "pv99", "kind": "silent", "start_s": 0, "end_s": 9}]},
            "<t.toml>: fault[0].device: no device 'pv99' on the rig",
        ),
        (
            {**MINIMAL, "fault": [{"device": "pv07", "kind": "melt", "start_s": 0, "end_s": 9}]},
            "<t.toml>: fault[0].kind: Input should be 'silent', 'slow', 'exception', 'garbage',",
        ),
        ({**MINIMAL, "start": "25:00"}, "<t.toml>: start: String should match pattern"),
        (
            {
                **MINIMAL,
                "fault": [{"device": "broker", "kind": "outage", "start_s": 0, "end_s": 9}],
            },
            "<t.toml>: fault[0]: a broker outage needs [mqtt] enabled = true",
        ),
        (
            {**MINIMAL, "fault": [{"device": "pv07", "kind": "outage", "start_s": 0, "end_s": 9}]},
            "<t.toml>: fault[0]: kind 'outage' goes with device 'broker', and only it",
        ),
        (
            {**MINIMAL, "controller": {"interval_s": 5, "revert_s": 8}},
            "<t.toml>: controller.revert_s (8) must be at least twice interval_s (5)",
        ),
    ],
)
def test_bad_scenarios_get_one_line_naming_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, source="<t.toml>")
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_a_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"bad\.toml: not valid TOML"):
        load_scenario(bad)
