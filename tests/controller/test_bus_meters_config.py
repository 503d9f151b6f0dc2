"""Meters along the feeder in the config: where they may be, the ``[estimation]`` table, and what
``feederd check`` says of them (the exact entries the HIL rig generates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.config import ConfigError, parse_config
from tests.controller.config_fuzz import to_toml
from tests.controller.test_config_cli import cli

HEAD: dict[str, Any] = {
    "name": "head",
    "kind": "meter",
    "head": True,
    "bus": 1,
    "transport": {"type": "tcp", "host": "127.0.0.1", "port": 1502, "unit": 1},
}


def modbus_meter(bus: int, *, port: int = 1600, **extra: Any) -> dict[str, Any]:
    """A SunSpec meter behind the gateway at ``port``, its unit its bus (as the rig writes it)."""
    return {
        "name": f"m{bus:02d}",
        "kind": "meter",
        "bus": bus,
        "transport": {"type": "tcp", "host": "127.0.0.1", "port": port, "unit": bus},
        **extra,
    }


def ami_meter(bus: int, *, port: int = 1883, root: str = "rig") -> dict[str, Any]:
    """An AMI meter over MQTT, as the rig writes it."""
    name = f"ami{bus:02d}"
    return {
        "name": name,
        "kind": "meter",
        "bus": bus,
        "transport": {
            "type": "mqtt",
            "host": "127.0.0.1",
            "port": port,
            "telemetry_topic": f"{root}/ami/{name}/telemetry",
            "paths": {"p_kw": "p_w", "q_kvar": "q_var", "v_ll_v": "v_v", "timestamp": "ts"},
            "scale": {"p_kw": 0.001, "q_kvar": 0.001},
            "max_age_s": 120.0,
        },
    }


def document(*devices: dict[str, Any], **tables: Any) -> dict[str, Any]:
    return {
        "site": "t",
        "feeder": {"case": "builtin:case33bw"},
        "metrics": {"enabled": False},
        "devices": [HEAD, *devices],
        **tables,
    }


def _parse(doc: dict[str, Any]) -> Any:
    return parse_config(doc, source="f.toml", base_dir=Path.cwd())


def test_a_meter_on_a_bus_the_feeder_lacks_is_named_with_its_bus() -> None:
    with pytest.raises(ConfigError) as info:
        _parse(document(modbus_meter(5), modbus_meter(99)))
    assert str(info.value) == (
        "f.toml: devices[2].bus: device 'm99' is on bus 99, which the feeder does not have"
    )


def test_estimation_is_on_with_meters_along_the_feeder_and_off_without() -> None:
    assert not _parse(document()).config.estimation_enabled
    with_meters = _parse(document(modbus_meter(5), ami_meter(6))).config
    assert with_meters.estimation_enabled
    assert [d.name for d in with_meters.bus_meters] == ["m05", "ami06"]
    off = _parse(document(modbus_meter(5), estimation={"enabled": False})).config
    assert not off.estimation_enabled
    forced = _parse(document(estimation={"enabled": True})).config
    assert forced.estimation_enabled  # the head meter alone: asked for, done


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param(
            document(
                {
                    "name": "pv",
                    "kind": "pv",
                    "bus": 5,
                    "rating_kw": 10.0,
                    "accuracy_pct": 1.0,
                    "transport": {"type": "tcp", "host": "127.0.0.1"},
                }
            ),
            "devices[1]: 'accuracy_pct' is for meters only (kind = \"meter\")",
            id="accuracy-on-a-pv",
        ),
        pytest.param(
            document(modbus_meter(5, accuracy_pct=0.0)),
            "devices[1].accuracy_pct: Input should be greater than 0 (got 0.0)",
            id="accuracy-zero",
        ),
        pytest.param(
            document(estimation={"bad_data_threshold": 0.5}),
            "estimation.bad_data_threshold: Input should be greater than or equal to 1 (got 0.5)",
            id="threshold-below-one-sigma",
        ),
        pytest.param(
            document(estimation={"pseudo_sigma": 0.5}),
            "estimation.pseudo_sigma: unknown key",
            id="unknown-key",
        ),
    ],
)
def test_bad_estimation_settings_are_one_line_naming_the_key(
    doc: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(doc)
    assert str(info.value) == f"f.toml: {message}"


def _toml(doc: dict[str, Any]) -> str:
    return to_toml(doc)


def test_check_lists_the_meters_and_what_the_estimator_does(tmp_path: Path) -> None:
    gateway = [modbus_meter(b, port=1600) for b in range(2, 12)]
    ami = [ami_meter(b) for b in (12, 13, 14)]
    doc = document(*gateway, *ami, modbus_meter(15, port=1601, accuracy_pct=0.5))
    path = tmp_path / "f.toml"
    path.write_text(_toml(doc))
    proc = cli("check", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "  m05              meter       5  tcp 127.0.0.1:1600 unit 5" in out
    assert "ami12            meter      12  mqtt 127.0.0.1:1883 rig/ami/ami12/telemetry" in out
    assert "class 0.5%" in out  # m15's own class
    assert (
        "state estimation: on; 14 meter(s) along the feeder at 14 bus(es), 14 of the 32 load "
        "buses (10 behind tcp 127.0.0.1:1600; 1 behind tcp 127.0.0.1:1601; 3 over MQTT)"
    ) in out
    assert "bad data above 4 sigma" in out


def test_check_counts_meters_beyond_the_first_forty(tmp_path: Path) -> None:
    doc = document(*[modbus_meter(b) for b in range(2, 34)], *[ami_meter(b) for b in range(2, 34)])
    doc["devices"][33:] = [
        {**d, "name": f"ami{i}"} for i, d in enumerate(doc["devices"][33:])
    ]  # distinct names
    path = tmp_path / "f.toml"
    path.write_text(_toml(doc))
    proc = cli("check", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "  ... and 24 more meters along the feeder" in proc.stdout
    assert "64 meter(s) along the feeder at 32 bus(es), 32 of the 32 load buses" in proc.stdout
    assert "have more than one meter" in proc.stdout


def test_check_says_estimation_is_off_without_meters(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(_toml(document()))
    proc = cli("check", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "state estimation: off (no meters along the feeder)" in proc.stdout
