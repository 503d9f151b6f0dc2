"""Every driver is a ``devices.Device``, and says truly what it is and what it can do.

Real instances against the HIL's simulated devices on one pymodbus server (a gateway with four
units: meter, PV inverter, battery, load) and a register-map meter on its own server; the MQTT
drivers need no broker for what is checked here. A driver whose ``capabilities`` say it is not
writable refuses every write before the wire; one that says it is writable and releasable does
write, and does give its control back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from controller.clock import FakeClock
from devices import (
    Background,
    BatterySetpoint,
    Capabilities,
    Device,
    DeviceKind,
    DeviceUnavailable,
    LoadSetpoint,
    ModbusTcpLink,
    MqttDevice,
    PvSetpoint,
    RegisterMapLoad,
    RegisterMapMeter,
    Setpoint,
    SunSpecBattery,
    SunSpecInverter,
    SunSpecMeter,
    UnsafeWriteError,
    load_register_map,
)
from hil import SimBattery, SimInverter, SimLoad, SimMeter
from hil.server import SunSpecServer

METER, PV, BATTERY, LOAD = 1, 2, 3, 4  # unit ids behind the gateway

SETPOINTS: dict[DeviceKind, Setpoint] = {
    DeviceKind.PV: PvSetpoint(device="x", p_max_kw=30.0),
    DeviceKind.BATTERY: BatterySetpoint(device="x", p_kw=20.0),
    DeviceKind.LOAD: LoadSetpoint(device="x", p_max_kw=40.0),
}


@dataclass
class Gateway:
    server: SunSpecServer
    link: ModbusTcpLink
    meter: SimMeter
    pv: SimInverter
    battery: SimBattery
    load: SimLoad

    def images(self) -> list[list[int]]:
        return [sim.registers() for sim in (self.meter, self.pv, self.battery, self.load)]


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    meter = SimMeter("m", p_max_kw=5000.0)
    meter.update(p_kw=1200.0, q_kvar=100.0, v_ll_v=12_660.0, a=60.0)
    pv = SimInverter("pv", 2, 100.0, available_kw=80.0)
    battery = SimBattery("bat", 3, 50.0, 100.0, 60.0)
    load = SimLoad("ld", 4, 120.0, demand_kw=90.0)
    devices = {METER: meter, PV: pv, BATTERY: battery, LOAD: load}
    async with SunSpecServer(devices) as server:  # type: ignore[arg-type]
        link = ModbusTcpLink("127.0.0.1", server.port)
        try:
            yield Gateway(server, link, meter, pv, battery, load)
        finally:
            await link.close()


def _drivers(link: ModbusTcpLink) -> dict[type, Device]:
    return {
        SunSpecMeter: SunSpecMeter("m", link, METER, p_limit_kw=5000.0),
        SunSpecInverter: SunSpecInverter("pv", link, PV, rating_kw=100.0, revert_s=30),
        SunSpecBattery: SunSpecBattery(
            "bat", link, BATTERY, rating_kw=50.0, energy_kwh=100.0, revert_s=30
        ),
        RegisterMapLoad: RegisterMapLoad(
            "ld",
            link,
            LOAD,
            load_register_map("builtin:controllable_load"),
            rating_kw=120.0,
            min_kw=10.0,
            revert_s=30,
        ),
        RegisterMapMeter: RegisterMapMeter(
            "rm", link, 9, load_register_map("builtin:three_phase_float_meter"), p_limit_kw=1000.0
        ),
    }


def _mqtt(kind: str, *, setpoint_topic: str | None = "t/sp") -> MqttDevice:
    return MqttDevice(
        f"mq-{kind}",
        kind,
        host="127.0.0.1",
        port=1,
        telemetry_topic="t/tm",
        setpoint_topic=setpoint_topic,
        paths={"p_kw": "p"},
        rating_kw=None if kind == "meter" else 100.0,
        monotonic=FakeClock().monotonic,
    )


def test_every_driver_class_meets_the_device_protocol() -> None:
    link = ModbusTcpLink("127.0.0.1", 1)  # never connected: building a driver is offline
    drivers: list[Device] = [*_drivers(link).values()]
    drivers += [_mqtt("meter"), _mqtt("pv"), _mqtt("load")]
    assert {type(d) for d in drivers} == {
        SunSpecMeter,
        SunSpecInverter,
        SunSpecBattery,
        RegisterMapMeter,
        RegisterMapLoad,
        MqttDevice,
    }
    for device in drivers:
        assert isinstance(device, Device), type(device).__name__
        assert isinstance(device.kind, DeviceKind), type(device).__name__
        assert isinstance(device.capabilities, Capabilities), type(device).__name__
        assert device.name
        # only a device that keeps its own connection runs in the task group
        assert isinstance(device, Background) is isinstance(device, MqttDevice)
    assert not isinstance(object(), Device)
    assert link.stats.connects == 0


def test_kinds_and_capabilities_are_declared() -> None:
    link = ModbusTcpLink("127.0.0.1", 1)
    declared = {
        cls: (d.kind, d.capabilities.writable, d.capabilities.releasable)
        for cls, d in _drivers(link).items()
    }
    assert declared == {
        SunSpecMeter: (DeviceKind.METER, False, False),
        RegisterMapMeter: (DeviceKind.METER, False, False),
        SunSpecInverter: (DeviceKind.PV, True, True),
        SunSpecBattery: (DeviceKind.BATTERY, True, True),
        RegisterMapLoad: (DeviceKind.LOAD, True, True),
    }
    # an MQTT device writes when it has a setpoint topic and is not a meter; its control
    # reverts on its own (revert_s), so there is nothing to release
    for kind, topic, writable in [
        ("meter", "t/sp", False),
        ("meter", None, False),
        ("pv", "t/sp", True),
        ("pv", None, False),
        ("load", "t/sp", True),
    ]:
        dev = _mqtt(kind, setpoint_topic=topic)
        assert dev.kind is DeviceKind(kind)
        assert dev.capabilities == Capabilities(writable=writable, releasable=False), (kind, topic)


@pytest.mark.parametrize("meter_cls", [SunSpecMeter, RegisterMapMeter])
async def test_a_meter_refuses_every_write_without_touching_the_wire(
    gateway: Gateway, meter_cls: type
) -> None:
    meter = _drivers(gateway.link)[meter_cls]
    before = gateway.images()
    for setpoint in SETPOINTS.values():
        with pytest.raises(UnsafeWriteError, match="takes no setpoint; nothing written") as info:
            await meter.write(setpoint)
        assert info.value.device == meter.name
    await meter.release()  # controls nothing: a no-op
    await meter.close()  # owns nothing: the link stays the caller's
    assert gateway.link.stats.requests == 0
    assert gateway.link.stats.connects == 0
    assert gateway.images() == before


async def test_an_mqtt_meter_refuses_every_write_before_any_connection() -> None:
    for topic in ("t/sp", None):
        meter = _mqtt("meter", setpoint_topic=topic)
        for setpoint in SETPOINTS.values():
            with pytest.raises(UnsafeWriteError):
                await meter.write(setpoint)
    # a writable MQTT device does try to publish (and says it is not connected)
    pv = _mqtt("pv")
    with pytest.raises(DeviceUnavailable, match="not connected"):
        await pv.write(PvSetpoint(device="mq-pv", p_max_kw=10.0))
    with pytest.raises(UnsafeWriteError, match="BatterySetpoint"):
        await pv.write(BatterySetpoint(device="mq-pv", p_kw=10.0))


async def test_writable_drivers_write_their_kind_and_release_it(gateway: Gateway) -> None:
    drivers = _drivers(gateway.link)
    pv, battery, load = drivers[SunSpecInverter], drivers[SunSpecBattery], drivers[RegisterMapLoad]
    for device in (pv, battery, load):
        assert device.capabilities.writable
        for kind, setpoint in SETPOINTS.items():
            if kind is not device.kind:  # the wrong kind of setpoint: refused, nothing sent
                requests = gateway.link.stats.requests
                with pytest.raises(UnsafeWriteError, match="takes no"):
                    await device.write(setpoint)
                assert gateway.link.stats.requests == requests
        result = await device.write(SETPOINTS[device.kind])
        assert not result.clamped
    assert gateway.pv.values(123)["WMaxLim_Ena"] == 1
    assert gateway.pv.values(123)["WMaxLimPct"] == pytest.approx(30.0)
    assert gateway.battery.values(124)["StorCtl_Mod"] == 0b11
    assert gateway.load.limit_active
    assert gateway.load.limit_kw == pytest.approx(40.0)
    for device in (pv, battery, load):
        assert device.capabilities.releasable
        await device.release()
    assert gateway.pv.values(123)["WMaxLim_Ena"] == 0
    assert gateway.battery.values(124)["StorCtl_Mod"] == 0
    assert gateway.load.limit_kw == pytest.approx(120.0)
    # close() leaves the shared link open: the meter behind it still answers
    for device in (pv, battery, load):
        await device.close()
    connects = gateway.link.stats.connects
    reading = await drivers[SunSpecMeter].read()
    assert reading.p_kw == pytest.approx(1200.0)
    assert gateway.link.stats.connects == connects
