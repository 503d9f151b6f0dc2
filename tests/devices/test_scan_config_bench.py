"""`feederd scan`, device config (transports, shared links), health, and the poll benchmark."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.clock import FakeClock
from controller.config import ConfigError, parse_config
from controller.fleet import Fleet
from devices import (
    DeviceState,
    HealthTracker,
    ModbusRtuLink,
    ModbusTcpLink,
    RegisterMapMeter,
    SunSpecInverter,
    SunSpecMeter,
    Transition,
)
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
    sim = SimBattery("b1", 5, 100.0, 200.0, 50.0)  # state of charge in percent
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
    head = {
        "name": "head",
        "kind": "meter",
        "bus": 1,
        "transport": {"type": "tcp", "host": "10.0.0.1"},
        "head": True,
    }
    data = {
        "site": "t",
        "feeder": {"case": "builtin:case33bw"},
        "metrics": {"enabled": False},
        "devices": [head, *devices],
    }
    return parse_config(data, source="t.toml", base_dir=base_dir or Path.cwd())


def test_devices_behind_one_gateway_or_bus_share_a_link() -> None:
    loaded = _cfg(
        {"name": "a", "kind": "pv", "bus": 2, "rating_kw": 10,
         "transport": {"type": "tcp", "host": "10.0.0.9", "unit": 1, "connections": 2}},
        {"name": "b", "kind": "pv", "bus": 3, "rating_kw": 10,
         "transport": {"type": "tcp", "host": "10.0.0.9", "unit": 2}},
        {"name": "c", "kind": "pv", "bus": 4, "rating_kw": 10,
         "transport": {"type": "rtu", "serial_port": "/dev/ttyX", "unit": 1}},
        {"name": "d", "kind": "meter", "bus": 5, "register_map": "builtin:three_phase_float_meter",
         "transport": {"type": "rtu", "serial_port": "/dev/ttyX", "unit": 2}},
    )  # fmt: skip
    fleet = Fleet.build(loaded, monotonic=FakeClock().monotonic)
    a, b, c, d, head = (fleet[n] for n in ("a", "b", "c", "d", "head"))
    assert isinstance(a, SunSpecInverter)
    assert isinstance(b, SunSpecInverter)
    assert isinstance(c, SunSpecInverter)
    assert isinstance(d, RegisterMapMeter)
    assert isinstance(head, SunSpecMeter)
    assert a.link is b.link
    assert isinstance(a.link, ModbusTcpLink)
    assert a.link.connections == 2
    assert c.link is d.link
    assert isinstance(c.link, ModbusRtuLink)
    assert c.link.serial
    assert c.link.connections == 1
    assert head.link is not a.link
    assert len(fleet.links) == 3  # the head's, the gateway's and the serial bus's
    assert {id(link) for link in fleet.links} == {id(head.link), id(a.link), id(c.link)}


# The first config format (flat transport keys) still loads, converted; its errors name the
# key where the value now lives (devices[i].transport.*).
LEGACY_ERRORS = [
    ({"transport": "modbus-rtu"}, "devices[1].transport.serial_port", "missing required key"),
    ({"transport": "modbus-tls", "host": "h"}, "devices[1].transport.cert_file",
     "missing required key"),
    ({"transport": "mqtt", "host": "h"}, "devices[1].transport.telemetry_topic",
     "missing required key"),
    ({"transport": "modbus-rtu", "serial_port": "/dev/x", "parity": "X"},
     "devices[1].transport.parity", "'N', 'E' or 'O'"),
    ({"host": "h", "parity": "N"}, "devices[1].transport.parity", "unknown key"),
    ({"host": "h", "register_map": "nope.toml", "kind": "meter"}, "devices[1].register_map",
     "cannot read"),
    ({"host": "h", "register_map": "builtin:nope", "kind": "meter"},
     "devices[1].register_map", "no bundled register map"),
    ({"transport": "modbus-tls", "host": "h", "tls_cert_file": "c.pem",
      "tls_key_file": "k.pem"}, "devices[1].transport.cert_file", "no such file"),
    ({"transport": "mqtt", "host": "h", "mqtt": {"telemetry_topic": "t", "paths": {}}},
     "devices[1].transport", "'p_kw'"),
    ({"transport": "modbus-udp", "host": "h"}, "devices[1]", "transport 'modbus-udp' is not known"),
]  # fmt: skip

TRANSPORT_ERRORS = [
    ({}, "devices[1].transport", "missing required key"),
    ({"transport": {"type": "rtu"}}, "devices[1].transport.serial_port", "missing required key"),
    ({"transport": {"type": "tls", "host": "h"}}, "devices[1].transport.cert_file",
     "missing required key"),
    ({"transport": {"type": "mqtt", "host": "h"}}, "devices[1].transport.telemetry_topic",
     "missing required key"),
    ({"transport": {"type": "rtu", "serial_port": "/dev/x", "parity": "X"}},
     "devices[1].transport.parity", "'N', 'E' or 'O'"),
    ({"transport": {"type": "rtu", "serial_port": "/dev/x", "baudrate": 1000}},
     "devices[1].transport.baudrate", "19200"),
    ({"transport": {"type": "tcp", "host": "h", "port": 0}}, "devices[1].transport.port",
     "greater than or equal to 1"),
    ({"transport": {"type": "tcp", "host": "h", "port": 502.5}}, "devices[1].transport.port",
     "valid integer"),
    ({"transport": {"type": "tcp", "host": "h"}, "register_map": "nope.toml", "kind": "meter"},
     "devices[1].register_map", "cannot read"),
    ({"transport": {"type": "tls", "host": "h", "cert_file": "c.pem", "key_file": "k.pem"}},
     "devices[1].transport.cert_file", "no such file"),
    ({"transport": {"type": "mqtt", "host": "h", "telemetry_topic": "t", "paths": {}}},
     "devices[1].transport", "'p_kw'"),
    ({"transport": {"type": "mqtt", "host": "h", "telemetry_topic": "t/#", "paths": {"p_kw": "p"}}},
     "devices[1].transport.telemetry_topic", "(got 't/#')"),
    ({"transport": {"type": "udp", "host": "h"}}, "devices[1].transport",
     "type must be one of tcp, tls, rtu, mqtt"),
    ({"transport": {"type": "tcp", "host": "h"}, "host": "h"}, "devices[1]",
     "'host' belongs in the [devices.transport] table"),
    ({"kind": "battery", "energy_kwh": 10.0,
      "transport": {"type": "mqtt", "host": "h", "telemetry_topic": "t", "paths": {"p_kw": "p"}}},
     "devices[1]", "a battery over mqtt is not supported"),
]  # fmt: skip


@pytest.mark.parametrize(("device", "key", "message"), LEGACY_ERRORS + TRANSPORT_ERRORS)
def test_device_config_errors_name_the_key(
    tmp_path: Path, device: dict[str, Any], key: str, message: str
) -> None:
    entry = {"name": "x", "kind": "pv", "bus": 2, "rating_kw": 10.0, **device}
    with pytest.raises(ConfigError) as info:
        _cfg(entry, base_dir=tmp_path)
    assert str(info.value).startswith(f"t.toml: {key}: "), str(info.value)
    assert message in str(info.value)
    assert info.value.key == key
    assert "\n" not in str(info.value)


def test_default_ports_follow_the_transport() -> None:
    legacy = _cfg(
        {"name": "m", "kind": "meter", "bus": 2, "transport": "mqtt", "host": "broker",
         "mqtt": {"telemetry_topic": "site/m", "paths": {"p_kw": "p"}}},
        {"name": "s", "kind": "meter", "bus": 3, "transport": "modbus-tls", "host": "h",
         "tls_cert_file": __file__, "tls_key_file": __file__},
        {"name": "t", "kind": "meter", "bus": 4, "host": "h"},
    )  # fmt: skip
    tables = _cfg(
        {"name": "m", "kind": "meter", "bus": 2, "transport": {"type": "mqtt", "host": "broker",
         "telemetry_topic": "site/m", "paths": {"p_kw": "p"}}},
        {"name": "s", "kind": "meter", "bus": 3, "transport": {"type": "tls", "host": "h",
         "cert_file": __file__, "key_file": __file__}},
        {"name": "t", "kind": "meter", "bus": 4, "transport": {"type": "tcp", "host": "h"}},
    )  # fmt: skip
    for loaded in (legacy, tables):
        m, s, t = loaded.config.devices[1:]
        assert (m.transport.port, s.transport.port, t.transport.port) == (1883, 802, 502)
        assert loaded.config.devices[0].transport.port == 502
        assert (m.transport.type, s.transport.type, t.transport.type) == ("mqtt", "tls", "tcp")
        assert t.address == "tcp h:502 unit 1"
    assert legacy.notes  # the old form works, and `check` says it is deprecated
    assert any("devices[1]" in note for note in legacy.notes)
    assert not tables.notes


def test_health_goes_up_degraded_stale_with_the_age_of_the_last_good_reading() -> None:
    now = [100.0]
    h = HealthTracker(monotonic=lambda: now[0], stale_after=3)
    assert h.state is DeviceState.DOWN
    assert h.age_s() is None
    up = DeviceState.UP
    assert h.record_good() == Transition(old=DeviceState.DOWN, new=up, failures=0, reason=None)
    now[0] = 105.0
    assert h.record_failure("timeout") == Transition(
        old=up, new=DeviceState.DEGRADED, failures=1, reason="timeout"
    )
    assert h.record_failure("timeout") is None  # no transition: nothing to log
    assert h.record_failure("timeout") == Transition(
        old=DeviceState.DEGRADED, new=DeviceState.STALE, failures=3, reason="timeout"
    )
    assert h.stale
    assert h.age_s() == pytest.approx(5.0)
    # answered, but dropped a value: degraded, not up
    change = h.record_good(dropped=1)
    assert change is not None
    assert (change.old, change.new, change.failures) == (DeviceState.STALE, DeviceState.DEGRADED, 3)
    assert change.reason is not None
    assert "1 value(s) dropped" in change.reason
    assert h.record_good() == Transition(old=DeviceState.DEGRADED, new=up, failures=0, reason=None)
    assert h.bad_readings == 1  # was ``dropped``
    assert h.errors == 3


@pytest.fixture(scope="module")
def bench_poll() -> subprocess.CompletedProcess[str]:
    """One run of ``feederd bench poll`` for the tests below (it starts a fleet of its own)."""
    return subprocess.run(
        [FEEDERD, "bench", "poll", "--devices", "3", "--cycles", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bench_poll_prints_its_figures(bench_poll: subprocess.CompletedProcess[str]) -> None:
    assert bench_poll.returncode == 0, bench_poll.stderr
    figures = json.loads(bench_poll.stdout)
    for key in ("devices", "cycle_ms_median", "cycle_ms_p95", "requests_per_s", "rss_mb"):
        assert key in figures
    assert figures["devices"] == 4  # three inverters and the head meter
    assert figures["devices_up_median"] == 4
    assert figures["requests_per_cycle"] == 4  # one request per device per cycle


def test_bench_poll_json_is_the_only_thing_on_stdout(
    bench_poll: subprocess.CompletedProcess[str],
) -> None:
    assert bench_poll.returncode == 0, bench_poll.stderr
    assert bench_poll.stdout.count("\n") == 1
    assert json.loads(bench_poll.stdout)["devices"] == 4


def test_bench_poll_meters_reads_each_meter_behind_its_gateway_in_one_request() -> None:
    """``--meters``: smart meters along the feeder, 200 unit ids a gateway; every one answers,
    one request each (the head meter too)."""
    proc = subprocess.run(
        [FEEDERD, "bench", "poll", "--meters", "--devices", "205", "--cycles", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert figures["meters"] == 205  # behind two gateways: 200 and 5
    assert figures["devices_up_median"] == 206
    assert figures["requests_per_cycle"] == 206
