"""Scenario fields for the varied rig and its meters: parsed, defaulted, refused in one line,
and turned into the rig's keyword arguments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controller.clock import FakeClock
from hil import HilRig
from hil.scenario import ScenarioError, parse_scenario
from hil.variation import RigVariation

MINIMAL: dict[str, Any] = {"name": "t", "duration_s": 60}


def test_defaults_are_a_varied_feeder_with_a_meter_at_every_load_bus() -> None:
    feeder = parse_scenario(MINIMAL, source="<t.toml>").feeder
    assert (feeder.varied, feeder.seed, feeder.meters, feeder.meter_transport) == (
        True,
        1,
        "all",
        "modbus",
    )
    options = parse_scenario(MINIMAL, source="<t.toml>").rig_options()
    assert options["variation"] == RigVariation(seed=1)
    assert (options["meter_buses"], options["meter_transport"]) == ("all", "modbus")


def test_fields_parse_and_meters_are_devices_a_fault_may_name() -> None:
    data = {
        **MINIMAL,
        "feeder": {"varied": False, "seed": 9, "meters": "half", "meter_transport": "mixed"},
        "fault": [{"device": "m06", "kind": "frozen", "start_s": 0, "end_s": 30}],
    }
    scenario = parse_scenario(data, source="<t.toml>")
    options = scenario.rig_options()
    assert options["variation"] is None
    assert options["ami"].seed == 9
    # half: buses 2, 4, 6, ...; mixed: alternating Modbus and MQTT
    assert "m02" in scenario.device_names
    assert "ami04" in scenario.device_names
    with pytest.raises(ScenarioError, match="no device 'm06'"):
        parse_scenario({**data, "feeder": {**data["feeder"], "meters": "none"}}, source="<t.toml>")


@pytest.mark.parametrize(
    ("feeder", "message"),
    [
        ({"varied": "yes"}, "<t.toml>: feeder.varied: Input should be a valid boolean (got 'yes')"),
        ({"seed": -1}, "<t.toml>: feeder.seed: Input should be greater than or equal to 0"),
        ({"seed": 1.5}, "<t.toml>: feeder.seed: Input should be a valid integer (got 1.5)"),
        (
            {"meters": "some"},
            "<t.toml>: feeder.meters: Input should be 'none', 'half' or 'all' (got 'some')",
        ),
        (
            {"meter_transport": "zigbee"},
            "<t.toml>: feeder.meter_transport: Input should be 'modbus', 'mqtt' or 'mixed'",
        ),
    ],
)
def test_bad_fields_get_one_line_naming_the_key(feeder: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario({**MINIMAL, "feeder": feeder}, source="<t.toml>")
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


@pytest.mark.asyncio
async def test_rig_options_build_the_rig_the_scenario_describes() -> None:
    data = {
        **MINIMAL,
        "start": "12:00",
        "feeder": {"seed": 2, "meters": "half", "meter_transport": "mixed"},
        "cloud": [{"start_s": 0, "end_s": 600, "depth": 0.5}],
    }
    scenario = parse_scenario(data, source="<t.toml>")
    clock = FakeClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    async with HilRig(
        monotonic=clock.monotonic,
        now=clock.now,
        physics_period_s=None,
        solve_on_write=False,
        **scenario.rig_options(),
    ) as rig:
        names = {d.name for d in rig.devices}
        assert set(scenario.device_names) == names
        assert rig.variation is not None
        assert rig.variation.spec.seed == 2
        clock.advance(300.0)
        await rig.step()  # the cloud is over the substation: pv07 (6 spans out) is under it
        assert rig.inverters["pv07"].available_kw < rig.inverters["pv07"].w_max_kw * 0.85 * 0.9
