"""``controller.fleet.Fleet.build``: the drivers a config describes and the links they share.

Devices behind one ``host:port`` share one link, devices on one serial port share one, an MQTT
device keeps its own connection; the fleet owns the links (``fleet.close()`` closes them, a
device's ``close`` never does). Against real servers: the HIL's simulated inverters behind a
pymodbus gateway, on a socat pty pair, and a meter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.clock import FakeClock
from controller.config import ConfigError, LoadedConfig, parse_config
from controller.fleet import Fleet
from devices import (
    DeviceUnavailable,
    ModbusRtuLink,
    ModbusTcpLink,
    ModbusTlsLink,
    MqttDevice,
    Ramp,
    SunSpecInverter,
    SunSpecMeter,
)
from hil import SimInverter, SimMeter
from hil.server import SunSpecServer
from tests.devices.dev_helpers import Certs, PtyPair, SunSpecRtuServer, free_port


def _loaded(*devices: dict[str, Any], base_dir: Path | None = None, **top: Any) -> LoadedConfig:
    data = {
        "site": "t",
        "feeder": {"case": "builtin:case33bw"},
        "metrics": {"enabled": False},
        "poll": {"timeout_s": 1.0},
        "devices": list(devices),
        **top,
    }
    return parse_config(data, source="t.toml", base_dir=base_dir or Path.cwd())


def _head(port: int) -> dict[str, Any]:
    return {
        "name": "head",
        "kind": "meter",
        "bus": 1,
        "head": True,
        "transport": {"type": "tcp", "host": "127.0.0.1", "port": port},
    }


def _pv(name: str, bus: int, transport: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "pv",
        "bus": bus,
        "rating_kw": 100.0,
        "revert_s": 30,
        "transport": transport,
        **extra,
    }


@dataclass
class Site:
    head_port: int
    gateway_port: int
    tty: str


@pytest.fixture
async def site(pty_pair: PtyPair) -> AsyncIterator[Site]:
    """A head meter, a gateway with three inverters (unit u makes 10·u kW) and a serial bus
    with two more (unit u makes 20·u kW)."""
    meter = SimMeter("head")
    meter.update(p_kw=1500.0, q_kvar=0.0, v_ll_v=12_660.0)
    gateway = {u: SimInverter(f"g{u}", 2, 100.0, available_kw=10.0 * u) for u in (1, 2, 3)}
    bus = {u: SimInverter(f"s{u}", 3, 100.0, available_kw=20.0 * u) for u in (1, 2)}
    rtu = SunSpecRtuServer(bus, tty=pty_pair.server)
    await rtu.start()
    try:
        async with SunSpecServer(meter) as head, SunSpecServer(gateway) as gw:
            yield Site(head_port=head.port, gateway_port=gw.port, tty=pty_pair.client)
    finally:
        await rtu.stop()


def _site_config(site: Site) -> LoadedConfig:
    gw = {"type": "tcp", "host": "127.0.0.1", "port": site.gateway_port, "connections": 2}
    serial = {"type": "rtu", "serial_port": site.tty, "baudrate": 115200}
    return _loaded(
        _head(site.head_port),
        _pv("g1", 2, {**gw, "unit": 1}),
        _pv("g2", 3, {**gw, "unit": 2}),
        _pv("g3", 4, {**gw, "unit": 3}, ramp_kw_per_s=2.0),
        _pv("s1", 5, {**serial, "unit": 1}),
        _pv("s2", 6, {**serial, "unit": 2}),
        {
            "name": "mq",
            "kind": "meter",
            "bus": 7,
            "transport": {
                "type": "mqtt",
                "host": "127.0.0.1",
                "port": free_port(),
                "telemetry_topic": "t/mq",
                "paths": {"p_kw": "p"},
            },
        },
        interval_s=5.0,
    )


async def test_devices_share_a_link_per_gateway_and_per_serial_port(site: Site) -> None:
    fleet = Fleet.build(_site_config(site), monotonic=FakeClock().monotonic)
    try:
        g1, g2, g3, s1, s2, head = (fleet[n] for n in ("g1", "g2", "g3", "s1", "s2", "head"))
        assert isinstance(head, SunSpecMeter)
        assert isinstance(g1, SunSpecInverter)
        assert isinstance(g2, SunSpecInverter)
        assert isinstance(g3, SunSpecInverter)
        assert isinstance(s1, SunSpecInverter)
        assert isinstance(s2, SunSpecInverter)
        assert g1.link is g2.link is g3.link
        assert isinstance(g1.link, ModbusTcpLink)
        assert g1.link.connections == 2
        assert s1.link is s2.link
        assert isinstance(s1.link, ModbusRtuLink)
        assert s1.link.connections == 1
        assert len(fleet.links) == 3  # head, gateway, serial bus: the MQTT device has none
        # each device reads its own unit through the shared link
        readings = {name: (await fleet[name].read()).p_kw for name in fleet if name != "mq"}
        assert readings == {
            "head": pytest.approx(1500.0),
            "g1": pytest.approx(10.0, abs=0.1),
            "g2": pytest.approx(20.0, abs=0.1),
            "g3": pytest.approx(30.0, abs=0.1),
            "s1": pytest.approx(20.0, abs=0.1),
            "s2": pytest.approx(40.0, abs=0.1),
        }
        assert g1.link.stats.connects <= 2  # never more than the gateway's connections
        assert s1.link.stats.connects == 1  # one port for the whole bus
        # the config's ramp rate over its interval
        assert g3.ramp == Ramp(kw_per_s=2.0, interval_s=5.0)
        assert g1.ramp is None
        # the MQTT device keeps a connection of its own: it is the task group's to serve
        mq = fleet["mq"]
        assert isinstance(mq, MqttDevice)
        assert [name for name, _ in fleet.background()] == ["mq"]
    finally:
        await fleet.close()


async def test_close_closes_the_links_and_a_device_close_does_not(site: Site) -> None:
    fleet = Fleet.build(_site_config(site), monotonic=FakeClock().monotonic)
    try:
        names = [n for n in fleet if n != "mq"]
        for name in names:
            await fleet[name].read()
        connects = [link.stats.connects for link in fleet.links]
        # a device's close leaves its shared link to the others
        await fleet["g1"].close()
        await fleet["s1"].close()
        for name in names:
            await fleet[name].read()
        assert [link.stats.connects for link in fleet.links] == connects
        # the fleet closes every connection of every link: they are all opened again
        await fleet.close()
        for name in names:
            await fleet[name].read()
        assert connects == [1, 2, 1]  # head, gateway (two connections), serial bus
        assert [link.stats.connects for link in fleet.links] == [2 * c for c in connects]
    finally:
        await fleet.close()


async def test_the_links_back_off_on_the_fleets_clock() -> None:
    clock = FakeClock()
    fleet = Fleet.build(_loaded(_head(free_port())), monotonic=clock.monotonic)
    try:
        head = fleet["head"]
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            await head.read()
        with pytest.raises(DeviceUnavailable, match="backing off"):
            await head.read()
        clock.advance(60.0)  # past any back-off: simulated time is the links' time
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            await head.read()
        assert fleet.links[0].stats.connects == 2
    finally:
        await fleet.close()


def test_a_tls_certificate_that_will_not_load_is_a_config_error(
    tmp_path: Path, certs: Certs
) -> None:
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n")
    (tmp_path / "bad.key").write_text("not a key\n")
    good = {
        "type": "tls",
        "host": "127.0.0.1",
        "cert_file": str(certs.client_cert),
        "key_file": str(certs.client_key),
        "ca_file": str(certs.ca),
    }
    bad = {"type": "tls", "host": "127.0.0.1", "port": 8802, "cert_file": "bad.pem",
           "key_file": "bad.key"}  # fmt: skip
    loaded = _loaded(_head(502), _pv("ok", 2, good), _pv("x", 3, bad), base_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        Fleet.build(loaded, monotonic=FakeClock().monotonic)
    message = str(info.value)
    assert message.startswith("t.toml: devices[2].transport.cert_file: cannot load TLS files")
    assert info.value.key == "devices[2].transport.cert_file"
    assert "\n" not in message
    # the good one alone builds (files loaded once, here; nothing connects yet)
    fleet = Fleet.build(
        _loaded(_head(502), _pv("ok", 2, good), base_dir=tmp_path),
        monotonic=FakeClock().monotonic,
    )
    link = fleet.links[1]
    assert isinstance(link, ModbusTlsLink)
    assert link.label == "tls://127.0.0.1:802"
    assert link.stats.connects == 0
