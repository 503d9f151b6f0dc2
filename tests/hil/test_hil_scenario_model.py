"""Scenario files, day profiles and KPIs: pure code, no sockets (but for the last tests: the
config a run builds from a scenario's ``[controller]`` needs a real rig's devices)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

import hil.scenario
from controller.clock import FakeClock
from controller.commands.rig.scenario import SIM_DEFAULTS, case_path, run_scenario, scenario_config
from hil import HilRig
from hil.kpis import Sample, compliant, kpis
from hil.profiles import (
    CloudPass,
    LoadStep,
    TapChange,
    busbar,
    clear_sky,
    load,
    load_shape,
    sun,
)
from hil.scenario import (
    BUNDLED_SCENARIOS,
    Scenario,
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


def test_the_busbar_holds_each_tap_change_until_the_next() -> None:
    changes = [TapChange(start_s=600, v_pu=1.0), TapChange(start_s=100, v_pu=1.04)]
    assert [busbar(t, start_pu=1.02, changes=changes) for t in (0, 99, 100, 599, 600, 9e9)] == [
        1.02,
        1.02,
        1.04,
        1.04,
        1.0,
        1.0,
    ]
    # without a start value the busbar is the case's (None) until the first change
    assert busbar(50, start_pu=None, changes=changes) is None
    assert busbar(150, start_pu=None, changes=changes) == 1.04
    assert busbar(150, start_pu=None, changes=()) is None


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
    assert k["curtailed_outside_events_kwh"] == pytest.approx(1.0)  # after the event
    assert k["losses_kwh"] == pytest.approx(6 * 100.0 * 10 / 3600, abs=1e-3)
    # the firm-limit grades: after the first two intervals only 1010 and 900 kW count (1%
    # over at worst); after the first, 1100 kW is the one beyond the limit plus 2%
    assert k["worst_overshoot_pct"] == pytest.approx(1.0)
    assert k["intervals_over_after_first"] == 1
    assert k["energy_over_after_first_kwh"] == pytest.approx(110.0 * 10 / 3600, abs=1e-3)


def test_firm_limit_grades_of_an_export_cap() -> None:
    cap = {"export_limit_kw": 500.0}
    samples = [_sample(t, -imp, **cap) for t, imp in ((0, 700.0), (5, 520.0), (10, 505.0))]
    samples.append(_sample(15, -512.0, **cap))  # 2.4% over: beyond the tolerance
    k = kpis(samples, interval_s=5.0, v_min_pu=0.9, v_max_pu=1.1)
    assert k["worst_overshoot_pct"] == pytest.approx(2.4)
    assert k["intervals_over_after_first"] == 2  # 520 (4%) and 512 (2.4%)
    short = kpis(samples[:2], interval_s=5.0, v_min_pu=0.9, v_max_pu=1.1)
    assert short["worst_overshoot_pct"] is None  # no event longer than two intervals


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


def test_the_docstring_example_is_a_valid_scenario() -> None:
    doc = hil.scenario.__doc__
    assert doc is not None
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    scenario = parse_scenario(tomllib.loads(example), source="<docstring>")
    assert scenario.feeder.v_slack_pu == 1.02
    assert scenario.busbar_v_pu(0) == 1.02
    assert scenario.busbar_v_pu(4500) == 1.0


def test_the_busbar_is_the_case_s_unless_the_scenario_moves_it() -> None:
    plain = parse_scenario(MINIMAL, source="<t.toml>")
    assert plain.feeder.v_slack_pu is None
    assert not plain.moves_busbar
    assert plain.busbar_v_pu(0) is None
    oltc = [{"start_s": 300, "v_pu": 1.04}, {"start_s": 120, "v_pu": 0.98}]
    moved = parse_scenario({**MINIMAL, "oltc": oltc}, source="<t.toml>")
    assert moved.moves_busbar
    assert [moved.busbar_v_pu(t) for t in (0, 120, 299, 300, 600)] == [None, 0.98, 0.98, 1.04, 1.04]
    held = parse_scenario({**MINIMAL, "feeder": {"v_slack_pu": 1.03}}, source="<t.toml>")
    assert held.moves_busbar
    assert held.busbar_v_pu(0) == held.busbar_v_pu(600) == 1.03
    both = parse_scenario(
        {**MINIMAL, "feeder": {"v_slack_pu": 0.9}, "oltc": oltc}, source="<t.toml>"
    )
    assert [both.busbar_v_pu(t) for t in (0, 120, 300)] == [0.9, 0.98, 1.04]
    # compressed, the tap changes move with the rest of the timeline
    short = both.compressed(0.1)
    assert [c.start_s for c in short.oltc] == [30, 12]
    assert [short.busbar_v_pu(t) for t in (0, 12, 30)] == [0.9, 0.98, 1.04]


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
            "<t.toml>: dr: DR events overlap: 0-300 s and 200-400 s",
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
        # [controller] is a partial feederd.toml: the first format's keys name their new place
        (
            {**MINIMAL, "controller": {"interval_s": 5, "revert_s": 8}},
            "<t.toml>: controller: 'revert_s' is no longer set here: the rig's devices revert"
            " after ten intervals (30 s at least)",
        ),
        (
            {**MINIMAL, "controller": {"poll_timeout_s": 0.5}},
            "<t.toml>: controller: 'poll_timeout_s' is now [controller.poll] timeout_s",
        ),
        (
            {**MINIMAL, "controller": {"stale_after_intervals": 2}},
            "<t.toml>: controller: 'stale_after_intervals' is now [controller.poll]"
            " stale_after_intervals",
        ),
        (
            {**MINIMAL, "controller": {"v_min_pu": 0.9}},
            "<t.toml>: controller: 'v_min_pu' is now [controller.feeder] v_min_pu",
        ),
        (
            {**MINIMAL, "controller": {"price_per_kwh": 0.2}},
            "<t.toml>: controller: 'price_per_kwh' is now [controller.dr] price_per_kwh",
        ),
        # what the rig decides, a scenario may not
        (
            {**MINIMAL, "controller": {"site": "elsewhere"}},
            "<t.toml>: controller: 'site' is the rig's to set, not the scenario's",
        ),
        (
            {**MINIMAL, "controller": {"devices": []}},
            "<t.toml>: controller: 'devices' is the rig's to set, not the scenario's",
        ),
        (
            {**MINIMAL, "controller": {"interval_s": 0}},
            "<t.toml>: controller: 'interval_s' must be a number of seconds in 0.2..3600 (got 0)",
        ),
        (
            {**MINIMAL, "controller": {"interval_s": 7200}},
            "<t.toml>: controller: 'interval_s' must be a number of seconds in 0.2..3600"
            " (got 7200)",
        ),
        (
            {**MINIMAL, "controller": {"interval_s": "5"}},
            "<t.toml>: controller: 'interval_s' must be a number of seconds in 0.2..3600 (got '5')",
        ),
        (
            {**MINIMAL, "controller": {"interval_s": True}},
            "<t.toml>: controller: 'interval_s' must be a number of seconds in 0.2..3600"
            " (got True)",
        ),
        # the substation's busbar and its tap changer
        (
            {**MINIMAL, "feeder": {"v_slack_pu": 1.2}},
            "<t.toml>: feeder.v_slack_pu: a busbar voltage must be within 0.9..1.1 p.u. (got 1.2)",
        ),
        (
            {**MINIMAL, "feeder": {"v_slack_pu": 0.85}},
            "<t.toml>: feeder.v_slack_pu: a busbar voltage must be within 0.9..1.1 p.u. (got 0.85)",
        ),
        (
            {**MINIMAL, "feeder": {"v_slack_pu": math.nan}},
            "<t.toml>: feeder.v_slack_pu: a busbar voltage must be within 0.9..1.1 p.u. (got nan)",
        ),
        (
            {**MINIMAL, "feeder": {"v_slack_pu": "1.02"}},
            "<t.toml>: feeder.v_slack_pu: Input should be a valid number (got '1.02')",
        ),
        (
            {**MINIMAL, "feeder": {"v_slack_pu": True}},
            "<t.toml>: feeder.v_slack_pu: Input should be a valid number (got True)",
        ),
        (
            {**MINIMAL, "oltc": [{"start_s": 0, "v_pu": 1.0}, {"start_s": 60, "v_pu": 1.15}]},
            "<t.toml>: oltc[1].v_pu: a busbar voltage must be within 0.9..1.1 p.u. (got 1.15)",
        ),
        (
            {**MINIMAL, "oltc": [{"start_s": -5, "v_pu": 1.0}]},
            "<t.toml>: oltc[0].start_s: Input should be greater than or equal to 0 (got -5)",
        ),
        ({**MINIMAL, "oltc": [{"start_s": 60}]}, "<t.toml>: oltc[0].v_pu: missing required key"),
        (
            {**MINIMAL, "oltc": [{"start_s": 60, "v_pu": 1.0, "tap": 3}]},
            "<t.toml>: oltc[0].tap: unknown key",
        ),
        (
            {**MINIMAL, "oltc": {"start_s": 60, "v_pu": 1.0}},
            "<t.toml>: oltc: Input should be a valid list",
        ),
        (
            {
                **MINIMAL,
                "oltc": [
                    {"start_s": 60, "v_pu": 1.0},
                    {"start_s": 120, "v_pu": 1.02},
                    {"start_s": 60, "v_pu": 1.04},
                ],
            },
            "<t.toml>: oltc[2].start_s: oltc[0] already moves the busbar at 60 s",
        ),
    ],
)
def test_bad_scenarios_get_one_line_naming_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, source="<t.toml>")
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text
    # the key is an attribute too (what a caller shows next to a form field, say)
    assert f"{info.value.source}: {info.value.key}: " in text


def test_a_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"bad\.toml: not valid TOML"):
        load_scenario(bad)


# --- [controller]: a partial feederd config, validated when the run builds the config ------


def test_the_interval_is_feederds_default_unless_the_scenario_sets_it() -> None:
    assert parse_scenario(MINIMAL, source="<t.toml>").interval_s == 5.0
    two = parse_scenario({**MINIMAL, "controller": {"interval_s": 2}}, source="<t.toml>")
    assert two.interval_s == 2.0


BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    (
        {"poll": {"timeout_s": -1}},
        "<t.toml>: controller.poll.timeout_s: Input should be greater than 0 (got -1)",
    ),
    (
        {"poll": {"timeout_s": float("nan")}},
        "<t.toml>: controller.poll.timeout_s: must be a finite number",
    ),
    ({"poll": {"retries": 3}}, "<t.toml>: controller.poll.retries: unknown key"),
    ({"colour": "red"}, "<t.toml>: controller.colour: unknown key"),
    (
        {"feeder": {"v_min_pu": 1.2}},
        "<t.toml>: controller.feeder.v_min_pu: Input should be less than 1",
    ),
]


def _scenario(controller: dict[str, Any]) -> Scenario:
    return parse_scenario({**MINIMAL, "controller": controller}, source="<t.toml>")


async def test_a_bad_partial_config_is_one_line_naming_the_key_under_controller() -> None:
    clock = FakeClock()
    async with HilRig(
        monotonic=clock.monotonic, physics_period_s=None, solve_on_write=False
    ) as rig:
        for controller, message in BAD_CONFIGS:
            scenario = _scenario(controller)  # the scenario's own checks let it through ...
            with pytest.raises(ScenarioError) as info:  # ... feederd's config does not
                scenario_config(rig, scenario, case_path(scenario, Path.cwd()), "<t.toml>")
            text = str(info.value)
            assert text.startswith(message), text
            assert "\n" not in text
            assert info.value.key == message.split(": ")[1]
        # a good one is merged into the rig's config, the rest from the rig's base
        scenario = _scenario({"interval_s": 2, "poll": {"timeout_s": 0.25}})
        loaded = scenario_config(rig, scenario, case_path(scenario, Path.cwd()), "<t.toml>")
        assert loaded.config.interval_s == 2.0
        assert loaded.config.poll.timeout_s == 0.25
        assert loaded.config.site == "sim"
        assert {d.name for d in loaded.config.devices} == {d.name for d in rig.devices}
        # and so is every bundled scenario's
        for name in BUNDLED_SCENARIOS:
            bundled = load_scenario(bundled_scenario(name))
            loaded = scenario_config(rig, bundled, case_path(bundled, Path.cwd()), name)
            assert loaded.config.interval_s == bundled.interval_s
            poll = bundled.controller.get("poll", {})
            default = SIM_DEFAULTS["poll"]["timeout_s"]  # the run's own, generous default
            assert loaded.config.poll.timeout_s == poll.get("timeout_s", default), name


async def test_a_run_with_a_bad_partial_config_stops_with_that_line() -> None:
    scenario = _scenario({"poll": {"timeout_s": -1}})
    with pytest.raises(ScenarioError) as info:
        await run_scenario(scenario, source="<t.toml>")
    assert str(info.value) == (
        "<t.toml>: controller.poll.timeout_s: Input should be greater than 0 (got -1)"
    )
