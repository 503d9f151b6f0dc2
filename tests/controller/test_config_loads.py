"""Controllable loads in the config: what is accepted, and one precise line for what is not."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.config import ConfigError, parse_config
from controller.fleet import Fleet
from devices import DeviceKind, MqttDevice, RegisterMapLoad

FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"

HEAD = {
    "name": "head",
    "kind": "meter",
    "bus": 1,
    "transport": {"type": "tcp", "host": "192.0.2.1"},
    "head": True,
}
LOAD = {
    "name": "heaters",
    "kind": "load",
    "bus": 25,
    "transport": {"type": "tcp", "host": "192.0.2.41", "unit": 3},
    "register_map": "builtin:controllable_load",
    "rating_kw": 120.0,
    "min_kw": 20.0,
}


def _config(*devices: dict[str, Any], base_dir: Path | None = None) -> Any:
    data = {
        "site": "t",
        "feeder": {"case": "builtin:case33bw"},
        "devices": [HEAD, *devices],
    }
    return parse_config(data, source="f.toml", base_dir=base_dir or Path.cwd())


def test_a_modbus_load_is_accepted_and_built_with_its_floor() -> None:
    loaded = _config(LOAD)
    dev = loaded.config.devices[1]
    assert (dev.kind, dev.min_kw, dev.shed_cost_per_kwh) == ("load", 20.0, 0.50)
    fleet = Fleet.build(loaded, monotonic=lambda: 0.0)
    drv = fleet["heaters"]
    assert isinstance(drv, RegisterMapLoad)
    assert (drv.rating_kw, drv.min_kw, drv.revert_s) == (120.0, 20.0, 60)


def test_an_mqtt_load_is_accepted() -> None:
    mqtt = {
        "type": "mqtt",
        "host": "192.0.2.50",
        "telemetry_topic": "site/heaters/state",
        "paths": {"p_kw": "p_kw"},
        "setpoint_topic": "site/heaters/set",
    }
    entry = {**LOAD, "transport": mqtt}
    del entry["register_map"]
    loaded = _config(entry)
    drv = Fleet.build(loaded, monotonic=lambda: 0.0)["heaters"]
    assert isinstance(drv, MqttDevice)
    assert (drv.kind, drv.min_kw) == (DeviceKind.LOAD, 20.0)
    assert drv.capabilities.writable


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"rating_kw": None}, "f.toml: devices[1]: a load device needs 'rating_kw'"),
        (
            {"min_kw": 150.0},
            "f.toml: devices[1]: 'min_kw' 150 exceeds 'rating_kw' 120: no setpoint can meet both",
        ),
        (
            {"min_kw": -1.0},
            "f.toml: devices[1].min_kw: Input should be greater than or equal to 0 (got -1.0)",
        ),
        (
            {"shed_cost_per_kwh": -0.1},
            "f.toml: devices[1].shed_cost_per_kwh: Input should be greater than or equal to 0 "
            "(got -0.1)",
        ),
        (
            {"register_map": None},
            "f.toml: devices[1]: a Modbus load needs 'register_map' with points p_kw, p_limit_kw "
            '(writable) and revert_s (writable), e.g. "builtin:controllable_load"',
        ),
        (
            {"register_map": "builtin:three_phase_float_meter"},
            "f.toml: devices[1].register_map: three-phase meter, float32 input registers: "
            "a load map needs a writable setpoint point named 'p_limit_kw'",
        ),
        (
            {
                "transport": {
                    "type": "mqtt",
                    "host": "192.0.2.50",
                    "telemetry_topic": "a/b",
                    "paths": {"p_kw": "p"},
                },
                "register_map": None,
            },
            "f.toml: devices[1]: an mqtt load needs 'setpoint_topic' in [devices.transport]",
        ),
    ],
)
def test_bad_load_entries_get_one_precise_line(change: dict[str, Any], expected: str) -> None:
    entry = {k: v for k, v in {**LOAD, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        _config(entry)
    assert str(err.value) == expected


def test_load_keys_on_other_kinds_and_maps_on_pv_are_refused() -> None:
    pv = {
        "name": "pv",
        "kind": "pv",
        "bus": 18,
        "transport": {"type": "tcp", "host": "192.0.2.2"},
        "rating_kw": 100.0,
    }
    with pytest.raises(ConfigError, match=r"devices\[1\]: 'min_kw' is for loads only"):
        _config({**pv, "min_kw": 5.0})
    with pytest.raises(ConfigError, match=r"'register_map' is for Modbus meters and loads only"):
        _config({**pv, "register_map": "builtin:controllable_load"})


def test_a_load_map_whose_setpoint_is_read_only_is_refused(tmp_path: Path) -> None:
    (tmp_path / "load.toml").write_text(
        '[map]\nname = "my load"\n'
        '[[points]]\nname = "p_kw"\naddress = 0\ntype = "float32"\n'
        '[[points]]\nname = "p_limit_kw"\naddress = 2\ntype = "float32"\n'
        '[[points]]\nname = "revert_s"\naddress = 4\ntype = "uint16"\nwritable = true\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        _config({**LOAD, "register_map": "load.toml"}, base_dir=tmp_path)
    assert str(err.value) == (
        "f.toml: devices[1].register_map: my load: point 'p_limit_kw' (setpoint) must be "
        "declared writable = true"
    )


def test_check_lists_the_load(tmp_path: Path) -> None:
    path = tmp_path / "feederd.toml"
    path.write_text(
        'site = "t"\n[feeder]\ncase = "builtin:case33bw"\n[dr]\nimport_limit_kw = 2500.0\n'
        '[[devices]]\nname = "head"\nkind = "meter"\nbus = 1\nhead = true\n'
        'transport = { type = "tcp", host = "192.0.2.1" }\n'
        '[[devices]]\nname = "heaters"\nkind = "load"\nbus = 25\n'
        'transport = { type = "tcp", host = "192.0.2.41", unit = 3 }\n'
        'register_map = "builtin:controllable_load"\nrating_kw = 120.0\nmin_kw = 20.0\n',
        encoding="utf-8",
    )
    proc = subprocess.run(
        [FEEDERD, "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "heaters" in ln)
    assert line.split()[:3] == ["heaters", "load", "25"]
    assert "20-120 kW" in line
    assert "60 s (to full draw)" in line
    assert "1 load(s) revert to their full draw (up to 100 kW more import)" in proc.stdout
