"""The [control] keys of issue 14 (firm limits, reactive power, the volt-var fallback) and a PV
inverter's kVA rating: what is accepted, what the drivers are built with, and one precise line
for what is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.config import ConfigError, parse_config
from controller.fleet import Fleet
from devices import SunSpecInverter

HEAD = {
    "name": "head",
    "kind": "meter",
    "bus": 1,
    "transport": {"type": "tcp", "host": "192.0.2.1"},
    "head": True,
}
PV = {
    "name": "pv18",
    "kind": "pv",
    "bus": 18,
    "transport": {"type": "tcp", "host": "192.0.2.21"},
    "rating_kw": 150.0,
}


def _config(pv: dict[str, Any] | None = None, **control: Any) -> Any:
    data: dict[str, Any] = {
        "site": "t",
        "feeder": {"case": "builtin:case33bw"},
        "devices": [HEAD, {**PV, **(pv or {})}],
    }
    if control:
        data["control"] = control
    return parse_config(data, source="f.toml", base_dir=Path.cwd())


def test_the_defaults_firm_limits_reactive_power_and_the_1547_curve() -> None:
    control = _config().config.control
    assert control.firm_limits
    assert control.ramp_anticipation
    assert control.reactive_power
    assert control.reactive_cost_per_kvarh == 0.01
    assert control.volt_var_fallback
    assert control.volt_var_curve == [(0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -44.0)]


def test_the_inverter_driver_gets_the_kva_rating_and_the_curve() -> None:
    loaded = _config({"rating_kva": 165.0}, volt_var_curve=[[0.95, 30.0], [1.05, -30.0]])
    fleet = Fleet.build(loaded, monotonic=lambda: 0.0)
    pv = fleet["pv18"]
    assert isinstance(pv, SunSpecInverter)
    assert pv.volt_var is not None
    assert pv.volt_var.points == ((0.95, 30.0), (1.05, -30.0))
    off = Fleet.build(_config(volt_var_fallback=False), monotonic=lambda: 0.0)["pv18"]
    assert isinstance(off, SunSpecInverter)
    assert off.volt_var is None


@pytest.mark.parametrize(
    ("pv", "control", "expected"),
    [
        (
            {"rating_kva": 100.0},
            {},
            "f.toml: devices[1]: 'rating_kva' 100 is below 'rating_kw' 150: an inverter's kVA "
            "rating is at least its kW rating",
        ),
        (
            {},
            {"volt_var_curve": [[1.0, 0.0], [0.98, 10.0]]},
            "f.toml: control: 'volt_var_curve' point 2 (0.98 p.u.) is not above point 1 "
            "(1 p.u.): the voltages must increase",
        ),
        ({}, {"volt_var_curve": [[1.0, 0.0]]}, "volt_var_curve"),
        (
            {},
            {"volt_var_curve": [[1.0, 0.0], [1.6, 0.0]]},
            "control.volt_var_curve[1][0]: Input should be less than 1.5 (got 1.6)",
        ),
        (
            {},
            {"volt_var_curve": [[0.9, 101.0], [1.1, 0.0]]},
            "control.volt_var_curve[0][1]: Input should be less than or equal to 100",
        ),
        ({}, {"reactive_power": 2}, "control.reactive_power"),
    ],
)
def test_bad_control_settings_get_one_precise_line(
    pv: dict[str, Any], control: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _config(pv, **control)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_a_kva_rating_on_a_battery_is_refused() -> None:
    battery = {**PV, "name": "b1", "kind": "battery", "energy_kwh": 100.0, "rating_kva": 160.0}
    data = {"site": "t", "feeder": {"case": "builtin:case33bw"}, "devices": [HEAD, battery]}
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="f.toml", base_dir=Path.cwd())
    assert "'rating_kva' is for PV inverters only" in str(err.value)
