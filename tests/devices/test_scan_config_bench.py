"""`feederd scan`, device config (transports, shared links), health, and the poll benchmark."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.config import ConfigError, parse_config
from controller.fleet import build_fleet
from devices import DeviceState, HealthTracker, RegisterMapMeter, SunSpecInverter
from hil.server import SunSpecServer
from hil.sim_devices import SimBattery, SimInverter
from tests.devices.dev_helpers import free_port

FEEDERD = str(Path(sys.executable).with_name("feederd"))


async def _feederd(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        FEEDERD, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_scan_prints_the_chain_key_values_and_a_config_entry() -> None:
    async with SunSpecServer(SimInverter("pv7", 3, 250.0, available_kw=120.0)) as server:
        code, out, err = await _feederd("scan", "--host", "127.0.0.1", "--port", str(server.port))
        assert code == 0, err
        assert "SunS" not in err
        for model in ("common", "inverter_three_phase", "nameplate", "controls"):
            assert model in out
        assert "W=120000" in out
        assert 'kind = "pv"' in out
        assert "rating_kw = 250" in out
        code, out, _ = await _feederd(
            "scan", "--host", "127.0.0.1", "--port", str(server.port), "--json"
        )
        doc = json.loads(out)
        assert [m["id"] for m in doc["models"]] == [1, 103, 120, 123]
        assert doc["base_address"] == 40000
        assert doc["models"][0]["values"]["SN"] == "pv7"
        assert doc["suggested_kind"] == "pv"


async def test_scan_of_a_battery_suggests_a_battery() -> None:
    sim = SimBattery("b1", 5, 100.0, 200.0, 0.5)
    async with SunSpecServer(sim) as server:
        code, out, err = await _feederd(
            "scan", "--host", "127.0.0.1", "--port", str(server.port), "--json"
        )
        assert code == 0, err
        assert json.loads(out)["suggested_kind"] == "battery"
        code, out, err = await _feederd("scan", "--host", "127.0.0.1", "--port", str(server.port))
        assert code == 0, err
        # the entry to start from carries the nameplate (model 120 WRtg, WHRtg)
        assert "rating_kw = 100\n" in out
        assert "energy_kwh = 200\n" in out


async def test_scan_of_nothing_is_one_line_and_exit_1() -> None:
    code, out, err = await _feederd(
        "scan", "--host", "127.0.0.1", "--port", str(free_port()), "--timeout", "0.5"
    )
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "cannot connect" in err


@pytest.mark.parametrize("args", [["--unit", "300"], ["--port", "x"], []])
async def test_scan_bad_usage_exits_2(args: list[str]) -> None:
    host = [] if not args else ["--host", "127.0.0.1"]
    code, _, err = await _feederd("scan", *host, *args)
    assert code == 2
    assert "Traceback" not in err


def _cfg(*devices: dict[str, Any], base_dir: Path | None = None) -> Any:
    head = {"name": "head", "kind": "meter", "bus": 1, "host": "10.0.0.1", "head": True}
    data = {
        "site": "t",
        "feeder": {"case": "builtin:case33bw"},
        "metrics": {"enabled": False},
        "devices": [head, *devices],
    }
    return parse_config(data, source="t.toml", base_dir=base_dir or Path.cwd())


def test_devices_behind_one_gateway_or_bus_share_a_link() -> None:
    loaded = _cfg(
        {"name": "a", "kind": "pv", "bus": 2, "host": "10.0.0.9", "unit": 1, "rating_kw": 10,
         "connections": 2},
        {"name": "b", "kind": "pv", "bus": 3, "host": "10.0.0.9", "unit": 2, "rating_kw": 10},
        {"name": "c", "kind": "pv", "bus": 4, "transport": "modbus-rtu",
         "serial_port": "/dev/ttyX", "unit": 1, "rating_kw": 10},
        {"name": "d", "kind": "meter", "bus": 5, "transport": "modbus-rtu",
         "serial_port": "/dev/ttyX", "unit": 2, "register_map": "builtin:three_phase_float_meter"},
    )  # fmt: skip
    fleet = build_fleet(loaded.config, clock=lambda: 0.0)
    a, b, c, d = (fleet[n] for n in "abcd")
    assert isinstance(a, SunSpecInverter)
    assert isinstance(b, SunSpecInverter)
    assert isinstance(c, SunSpecInverter)
    assert isinstance(d, RegisterMapMeter)
    assert a.link is b.link
    assert a.link.connections == 2
    assert c.link is d.link
    assert c.link.serial
    assert fleet["head"].link is not a.link  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("device", "key", "message"),
    [
        ({"transport": "modbus-rtu"}, "devices[1]", "needs 'serial_port'"),
        ({"transport": "modbus-tls", "host": "h"}, "devices[1]", "tls_cert_file"),
        ({"transport": "mqtt", "host": "h"}, "devices[1]", r"\[devices.mqtt\]"),
        ({"host": "h", "parity": "X"}, "devices[1].parity", "'N', 'E' or 'O'"),
        ({"host": "h", "register_map": "nope.toml", "kind": "meter"}, "devices[1].register_map",
         "cannot read"),
        ({"host": "h", "register_map": "builtin:nope", "kind": "meter"},
         "devices[1].register_map", "no bundled register map"),
        ({"transport": "modbus-tls", "host": "h", "tls_cert_file": "c.pem",
          "tls_key_file": "k.pem"}, "devices[1].tls_cert_file", "no such file"),
        ({"transport": "mqtt", "host": "h", "mqtt": {"telemetry_topic": "t", "paths": {}}},
         "devices[1].mqtt", "'p_kw'"),
    ],
)  # fmt: skip
def test_device_config_errors_name_the_key(
    tmp_path: Path, device: dict[str, Any], key: str, message: str
) -> None:
    entry = {"name": "x", "kind": "pv", "bus": 2, "rating_kw": 10.0, **device}
    with pytest.raises(ConfigError, match=message) as info:
        _cfg(entry, base_dir=tmp_path)
    assert str(info.value).startswith(f"t.toml: {key}")
    assert "\n" not in str(info.value)


def test_default_ports_follow_the_transport() -> None:
    loaded = _cfg(
        {"name": "m", "kind": "meter", "bus": 2, "transport": "mqtt", "host": "broker",
         "mqtt": {"telemetry_topic": "site/m", "paths": {"p_kw": "p"}}},
        {"name": "s", "kind": "meter", "bus": 3, "transport": "modbus-tls", "host": "h",
         "tls_cert_file": __file__, "tls_key_file": __file__},
    )  # fmt: skip
    m, s = loaded.config.devices[1], loaded.config.devices[2]
    assert (m.endpoint_port, s.endpoint_port, loaded.config.devices[0].endpoint_port) == (
        1883,
        802,
        502,
    )


def test_health_goes_up_degraded_down_with_the_age_of_the_last_good_reading() -> None:
    now = [100.0]
    h = HealthTracker(down_after=3, clock=lambda: now[0])
    assert h.state is DeviceState.DOWN
    assert h.age_s() is None
    assert h.record_good() is DeviceState.UP
    now[0] = 105.0
    assert h.record_failure("timeout") is DeviceState.DEGRADED
    assert h.record_failure("timeout") is None  # no transition: nothing to log
    assert h.record_failure("timeout") is DeviceState.DOWN
    assert h.age_s() == pytest.approx(5.0)
    assert h.record_good(dropped=1) is DeviceState.DEGRADED  # answered, but dropped a value
    assert h.record_good() is DeviceState.UP
    assert h.dropped == 1


async def test_bench_poll_prints_its_figures() -> None:
    code, out, err = await _feederd("bench", "poll", "--devices", "3", "--cycles", "2", "--json")
    assert code == 0, err
    figures = json.loads(out)
    for key in ("devices", "cycle_ms_median", "cycle_ms_p95", "requests_per_s", "rss_mb"):
        assert key in figures
    assert figures["devices"] == 4  # three inverters and the head meter
    assert figures["devices_up_median"] == 4
    assert figures["requests_per_cycle"] == 4  # one request per device per cycle
