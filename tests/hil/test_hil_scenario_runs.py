"""The bundled scenarios, shortened, run end to end: the real daemon, real Modbus, the rig.

The runner (``controller.commands.rig.scenario``) drives the daemon and the rig on one simulated
clock, so a busy machine changes how long a run takes, never what it does. Each scenario's
timeline is compressed (every time times ``COMPRESS``) so each runs in seconds; the interval
stays 5 s, so the controller faces the same per-interval task, and every fault window still
holds several intervals.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from controller.commands.rig.scenario import SimResult, run_scenario, write_results
from hil.kpis import Sample
from hil.scenario import Scenario, bundled_scenario, load_scenario, parse_scenario

COMPRESS = 0.1
FAILURES_COMPRESS = 0.05
"""The device-failures scenario, shorter still: each fault costs real time (a silent, slow or
reset device costs its request timeout every interval), and its windows still hold three
intervals or more (enough for a device to go stale and come back)."""


def _scenario(name: str, compress: float = COMPRESS) -> Scenario:
    return load_scenario(bundled_scenario(name)).compressed(compress)


def _in_event(result: SimResult) -> list[Sample]:
    return [s for s in result.samples if s.limited]


def _check_written(result: SimResult, tmp_path: Path) -> None:
    """The files ``write_results`` leaves: CSV rows, KPIs and PNGs that match the run."""
    k = result.kpis
    paths = write_results(result, tmp_path)
    assert {p.name for p in paths} == {
        "intervals.csv",
        "kpis.json",
        "overview.png",
        "import.png",
        "devices.png",
        "voltages.png",
        "der.png",
    }
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
    rows = list(csv.DictReader((tmp_path / "intervals.csv").open(encoding="utf-8")))
    assert len(rows) == k["intervals"]
    assert float(rows[-1]["import_kw"]) == pytest.approx(result.samples[-1].import_kw, abs=0.01)
    assert "v_bus18" in rows[0]
    assert rows[0]["time"] == "17:00"
    saved = json.loads((tmp_path / "kpis.json").read_text(encoding="utf-8"))
    assert saved["scenario"] == "evening-peak"
    assert saved["dr_compliance"] == k["dr_compliance"]
    assert saved["v_band_pu"] == list(result.v_band_pu)


@pytest.mark.slow
async def test_evening_peak_holds_the_import_cap_with_the_batteries(tmp_path: Path) -> None:
    scenario = _scenario("evening_peak")
    result = await run_scenario(scenario)
    k = result.kpis
    limit = scenario.dr[0].import_limit_kw
    assert limit is not None
    assert k["dr_compliance"] >= 0.95, k
    assert scenario.interval_s == 5
    assert k["intervals"] == int(scenario.duration_s / scenario.interval_s)
    event = _in_event(result)
    # the cap binds: without the batteries' discharge the feeder would be above it
    assert max(s.import_kw + s.battery_kw for s in event) > limit * 1.02
    assert k["battery_discharged_kwh"] > 0
    assert all(s.devices_missing == () for s in result.samples)  # 17 DERs, 32 bus meters
    assert min(s.battery_soc_pct for s in result.samples) < scenario.feeder.battery_soc_pct

    _check_written(result, tmp_path)


@pytest.mark.slow
async def test_midday_overvoltage_curtails_pv_to_hold_the_band_and_the_export_cap() -> None:
    scenario = _scenario("midday_overvoltage")
    result = await run_scenario(scenario)
    k = result.kpis
    export = scenario.dr[0].export_limit_kw
    assert export is not None
    assert k["dr_compliance"] >= 0.95, k
    assert k["curtailed_kwh"] > 0
    first = result.samples[0]
    assert max(first.v_pu.values()) > 1.05, "uncontrolled, the far buses are over 1.05 pu"
    controlled = result.samples[3:]
    # the dispatch aims v_margin_pu inside the band, so the AC physics stays inside it
    in_band = [s for s in controlled if max(s.v_pu.values()) <= 1.0505]
    assert len(in_band) >= 0.95 * len(controlled), k["voltage_violation_bus_intervals"]
    # the export cap binds: the PV held back would have pushed the export past it
    event = _in_event(result)
    assert min(s.import_kw - s.curtailed_kw for s in event) < -export * 1.1


@pytest.mark.slow
async def test_clouds_clearing_under_an_export_cap_never_carry_the_export_past_it() -> None:
    """Issue 14: after the cap's first interval, the export is within the cap + 2% in every
    interval, as the sun comes out from behind two clouds (compressed, each cloud's edge is
    one interval: the sun jumps), and the batteries, not curtailment alone, take the sun."""
    scenario = _scenario("cloud_clearing_export_cap")
    result = await run_scenario(scenario)
    k = result.kpis
    cap = scenario.dr[0].export_limit_kw
    assert cap is not None
    event = _in_event(result)
    assert all(-s.import_kw <= cap * 1.02 for s in event[1:]), k
    assert k["intervals_over_after_first"] == 0, k
    assert k["worst_overshoot_pct"] <= 0.5, k
    # the sun would carry the export well past the cap: something held it
    assert min(s.import_kw - s.curtailed_kw + s.battery_kw for s in event) < -cap * 1.3
    assert k["battery_charged_kwh"] > 0


@pytest.mark.slow
async def test_midday_vars_halve_the_curtailment_for_the_voltage_band() -> None:
    """Issue 14: the midday over-voltage with reactive power and with active power alone (no
    vars written, no volt-var curve): outside the export cap, where curtailment is for the
    voltage band alone, vars at least halve it, with no more bus-intervals outside the band."""
    scenario = _scenario("midday_overvoltage")
    p_only = scenario.variant(control={"reactive_power": False, "volt_var_fallback": False})
    runs = {"pq": await run_scenario(scenario), "p": await run_scenario(p_only)}
    k = {mode: result.kpis for mode, result in runs.items()}
    assert k["p"]["curtailed_outside_events_kwh"] > 10.0, k["p"]  # the band needs something
    assert k["pq"]["curtailed_outside_events_kwh"] <= 0.5 * k["p"]["curtailed_outside_events_kwh"]
    assert k["pq"]["voltage_violation_bus_intervals"] <= k["p"]["voltage_violation_bus_intervals"]
    assert k["p"]["pv_reactive_kvarh"] == 0.0
    # the vars are absorbed (negative): they pull the far buses down
    assert sum(s.pv_kvar for s in runs["pq"].samples) < 0.0


@pytest.mark.slow
async def test_device_failures_are_ridden_through_and_the_cap_holds() -> None:
    scenario = _scenario("device_failures", FAILURES_COMPRESS)
    poll_timeout_s = scenario.controller["poll"]["timeout_s"]
    result = await run_scenario(scenario)
    k = result.kpis
    assert k["dr_compliance"] >= 0.95, k
    assert set(k["statuses"]) <= {"optimal", "limit_relaxed"}, k["statuses"]
    for fault in scenario.fault:
        window = [s for s in result.samples if fault.start_s <= s.t_s < fault.end_s]
        assert len(window) >= 3, (fault, len(window))
        assert all(f"{fault.device}:{fault.kind}" in s.faults for s in window)
        missed = [s for s in window if fault.device in s.devices_missing]
        if fault.kind in ("frozen",) or (fault.kind == "slow" and fault.delay_s < poll_timeout_s):
            assert not missed, f"{fault.device} {fault.kind} still answers in time"
        else:
            assert missed, f"{fault.device} {fault.kind} should be missing"
        after = [s for s in result.samples if s.t_s >= fault.end_s + 60]
        if after:  # the device is back within a minute of the fault's end
            assert fault.device not in after[0].devices_missing
    assert k["device_missed_intervals"] > 0


@pytest.mark.slow
@pytest.mark.integration
async def test_broker_outage_the_stored_event_holds_and_the_next_one_gets_through() -> None:
    scenario = _scenario("broker_outage")
    result = await run_scenario(scenario)
    k = result.kpis
    assert k["dr_compliance"] >= 0.95, k
    assert k["dr_events"] == 2
    outage = scenario.fault[0]
    down = [s for s in result.samples if outage.start_s <= s.t_s < outage.end_s]
    assert down
    assert all("broker:outage" in s.faults for s in down)
    # every DR interval ran under the operator's limit, the outage's included: the first event
    # came over MQTT before the outage, the second after it (the intake reconnected)
    for s in _in_event(result):
        assert s.seen_import_limit_kw == s.import_limit_kw, s.t_s
    second = scenario.dr[1]
    assert second.announced_at_s >= outage.end_s
    assert any(s.seen_import_limit_kw == second.import_limit_kw for s in result.samples)
    assert all(s.seen_import_limit_kw is None for s in result.samples if not s.limited)


SILENT_HEAD: dict[str, Any] = {
    "name": "silent-head",
    "start": "17:00",
    "duration_s": 60,
    "controller": {"interval_s": 5, "poll": {"timeout_s": 1.5, "stale_after_intervals": 3}},
    "dr": [{"start_s": 0, "end_s": 60, "import_limit_kw": 3000}],
    "fault": [
        {"device": "head", "kind": "silent", "start_s": 0, "end_s": 15},
        {"device": "pv18", "kind": "silent", "start_s": 15, "end_s": 40},
    ],
}
"""The head meter silent for the first three intervals, then a PV inverter until it is given up
as stale: no head reading (``no_head_meter``), then a snapshot waiting for the PV to answer or
be given up (``waiting_first_snapshot``), then dispatch, the PV still missing."""


async def test_dispatched_is_false_exactly_while_the_controller_cannot_dispatch() -> None:
    scenario = parse_scenario(SILENT_HEAD, source="<silent-head>")
    result = await run_scenario(scenario, source="<silent-head>")
    statuses = [s.status for s in result.samples]
    waiting = ["no_head_meter"] * 3 + ["waiting_first_snapshot"] * 2
    assert statuses[:5] == waiting, statuses
    assert all(s in ("optimal", "limit_relaxed") for s in statuses[5:]), statuses
    assert "pv18" in result.samples[5].devices_missing  # dispatched without the stale PV
    for s in result.samples:
        assert s.dispatched is (s.status not in waiting), (s.t_s, s.status, s.dispatched)
    assert [s.dispatched for s in result.samples] == [False] * 5 + [True] * 7
    assert all(s.meter_kw is None for s in result.samples[:3])
    assert all(s.meter_kw is not None for s in result.samples[3:])


def _short_announced() -> Scenario:
    """The bundled announced evening event, shortened: from 15:00 (the announcement) to 19:00,
    a cap of 2,900 kW over 17:30-19:00, without MQTT (the operator submits it to the DR service
    at 15:00). By the rig's own figures (no control, 5-minute ticks) the feeder is over that cap
    by about 570 kWh during the event, by 740 kW at most: more than the fleet delivers from 30 %
    (380 kWh above its 10 % reserve), well within what it delivers charged (1,710 kWh full; the
    tariff's last cheap hour, 15:00-16:00, at 1,000 kW of charging takes it to 77 %)."""
    scenario = load_scenario(bundled_scenario("announced_evening_event"))
    event = scenario.dr[0].model_copy(
        update={"announce_s": 0.0, "start_s": 9000.0, "end_s": 14400.0, "import_limit_kw": 2900.0}
    )
    return scenario.model_copy(
        update={
            "start": "15:00",
            "duration_s": 14400.0,
            "dr": [event],
            "mqtt": scenario.mqtt.model_copy(update={"enabled": False}),
        }
    )


def _announced(name: str = "announced_evening_event") -> Scenario:
    """A bundled scenario with its events submitted to the DR service when announced, not
    over MQTT (the intake has its own test below)."""
    scenario = load_scenario(bundled_scenario(name))
    return scenario.model_copy(update={"mqtt": scenario.mqtt.model_copy(update={"enabled": False})})


async def _both_horizons(scenario: Scenario) -> dict[str, SimResult]:
    return {
        "default": await run_scenario(scenario),
        "one": await run_scenario(scenario.variant(control={"horizon_h": 0})),
    }


@pytest.mark.slow
async def test_the_horizon_charges_for_an_announced_event_that_one_interval_misses() -> None:
    """Issue 15, graded on the physics: the evening cap announced at noon with the batteries at
    30 % (the bundled scenario, 108 five-minute intervals). The default horizon charges them in
    the cheap afternoon and holds the cap within 2 % in every interval of the event; one
    interval at a time (``horizon_h = 0``) reaches the event with what it had and falls short.
    By the rig's own figures the feeder is over the cap by ~1,000 kWh during the event: more
    than twice what the fleet delivers from 30 %."""
    scenario = _announced()
    runs = await _both_horizons(scenario)
    k = {name: r.kpis for name, r in runs.items()}
    cap = scenario.dr[0].import_limit_kw
    assert cap is not None
    start = {name: k[name]["events"][0]["soc_at_start_pct"] for name in runs}
    # ~1,000 kWh from the fleet's 2,000 kWh at 95 %: 53 % above the 10 % reserve
    assert start["default"] > 63.0, start
    assert start["one"] < 35.0, start
    assert k["one"]["dr_compliance"] < 0.9, k["one"]["events"]
    assert k["one"]["energy_over_limit_kwh"] > 200.0, k["one"]["events"]
    # the cap binds: without the batteries' discharge the feeder is over it
    event = [s for s in runs["default"].samples if s.limited]
    assert max(s.import_kw + s.battery_kw for s in event) > cap * 1.1
    assert k["default"]["dr_compliance"] == 1.0, k["default"]["events"]


def _short_announced() -> Scenario:
    """The announced evening event, shortened: from 15:00 (the announcement) to 19:00, a cap of
    2,900 kW over 17:30-19:00. By the rig's own figures (no control, 5-minute ticks) the feeder
    is over that cap by about 570 kWh during the event, by 740 kW at most: more than the fleet
    delivers from 30 % (380 kWh above its 10 % reserve), well within what it delivers charged
    (1,710 kWh full; the tariff's last cheap hour, 15:00-16:00, at 1,000 kW of charging takes
    it to 77 %)."""
    scenario = _announced()
    event = scenario.dr[0].model_copy(
        update={"announce_s": 0.0, "start_s": 9000.0, "end_s": 14400.0, "import_limit_kw": 2900.0}
    )
    return scenario.model_copy(update={"start": "15:00", "duration_s": 14400.0, "dr": [event]})


@pytest.mark.slow
async def test_a_shorter_run_up_to_the_announced_event_holds_the_cap_from_its_first_tick() -> None:
    """The same, with two and a half hours of warning and one cheap hour to charge in: the
    default horizon reaches the event charged, and its first tick is within the cap: step 0 is
    held to an event that begins before the next interval's writes (it once charged at
    1,000 kW in the interval before the cap, and the event's first tick was 1,090 kW over).

    Not asserted: every interval within 2 %. The rig's load moves by 2-3 % within a
    five-minute interval at random (its day-to-day and bus-by-bus variation), and twice in
    this run it rose 2.2-2.4 % over the cap before the next interval answered it; a
    ``limit_margin_pct`` of that size is the operator's setting for such intervals."""
    scenario = _short_announced()
    runs = await _both_horizons(scenario)
    k = {name: r.kpis for name, r in runs.items()}
    start = {name: k[name]["events"][0]["soc_at_start_pct"] for name in runs}
    assert start["default"] > 45.0, start  # 570 kWh needs 30 % above the reserve
    assert start["one"] < 35.0, start
    assert k["default"]["energy_over_limit_kwh"] < k["one"]["energy_over_limit_kwh"] / 10, k
    event = scenario.dr[0]
    cap = event.import_limit_kw
    assert cap is not None
    first = next(s for s in runs["default"].samples if s.t_s >= event.start_s)
    assert first.import_kw <= cap * 1.02, first


@pytest.mark.slow
@pytest.mark.integration
async def test_an_event_announced_hours_ahead_over_mqtt_holds_from_its_start() -> None:
    """Published on MQTT three hours before it starts: the daemon keeps it (its limit is not
    enforced before its start) and enforces it from its first interval to its last."""
    base = load_scenario(bundled_scenario("announced_evening_event"))
    event = base.dr[0].model_copy(update={"announce_s": 0.0, "start_s": 10800.0, "end_s": 12600.0})
    scenario = base.model_copy(
        update={"start": "14:00", "duration_s": 13800.0, "dr": [event]}
    ).variant(control={"horizon_h": 0})  # the intake is under test, not the plan
    result = await run_scenario(scenario)
    before = [s for s in result.samples if s.t_s < event.start_s]
    during = [s for s in result.samples if event.start_s <= s.t_s < event.end_s]
    after = [s for s in result.samples if s.t_s >= event.end_s]
    assert len(before) == 36
    assert len(during) == 6
    assert after
    assert all(s.seen_import_limit_kw is None for s in before + after)
    assert all(s.seen_import_limit_kw == event.import_limit_kw for s in during)
