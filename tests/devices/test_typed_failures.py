"""Reading failures are typed and carry their details: the controller decides what a failure
means by its type (``BadReading`` is counted as a bad reading), never by its wording.

The HIL's simulated SunSpec devices on a pymodbus server, with a point made "not implemented"
(SunSpec's 0x8000 / 0xFFFF...) or a value no device could produce; a register-map meter on a
bare pymodbus server.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from devices import (
    BadReading,
    DeviceError,
    DeviceProtocolError,
    ImplausibleReading,
    ModbusTcpLink,
    PointNotImplemented,
    RegisterMapMeter,
    SunSpecBattery,
    SunSpecInverter,
    SunSpecMeter,
    load_register_map,
)
from devices.sunspec import Value
from hil import SimBattery, SimInverter, SimMeter, SimSunSpecDevice
from hil.server import SunSpecServer
from tests.devices.dev_helpers import free_port

NAME = "dev-7"  # a name that appears in no message of its own

Driver = SunSpecMeter | SunSpecInverter | SunSpecBattery
Make = Callable[[ModbusTcpLink], Driver]


def _meter(link: ModbusTcpLink) -> Driver:
    return SunSpecMeter(NAME, link, 1, p_limit_kw=5000.0)


def _pv(link: ModbusTcpLink) -> Driver:
    return SunSpecInverter(NAME, link, 1, rating_kw=100.0, revert_s=30)


def _battery(link: ModbusTcpLink) -> Driver:
    return SunSpecBattery(NAME, link, 1, rating_kw=50.0, energy_kwh=100.0, revert_s=30)


def _sim(kind: str) -> SimSunSpecDevice:
    if kind == "meter":
        meter = SimMeter("m", p_max_kw=5000.0)
        meter.update(p_kw=1200.0, q_kvar=100.0, v_ll_v=12_660.0)
        return meter
    if kind == "pv":
        return SimInverter("pv", 2, 100.0, available_kw=80.0)
    return SimBattery("bat", 3, 50.0, 100.0, 60.0)


def _force(sim: SimSunSpecDevice, model_id: int, values: dict[str, Value]) -> None:
    """Put values in the device's image as the device itself would (``None``: the model's
    "not implemented" value)."""
    sim._set(model_id, values)


async def _read_error(sim: SimSunSpecDevice, make: Make) -> DeviceError:
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port)
        try:
            with pytest.raises(DeviceError) as info:
                await make(link).read()
            return info.value
        finally:
            await link.close()


def _no_device_prefix(err: DeviceError) -> None:
    assert err.device == NAME
    assert NAME not in str(err)  # the message alone: whoever logs it names the device
    assert str(err) == err.message


@pytest.mark.parametrize(
    ("kind", "make", "model_id", "point"),
    [
        ("meter", _meter, 203, "W"),
        ("pv", _pv, 103, "W"),
        ("pv", _pv, 120, "WRtg"),  # the nameplate the limit is a percentage of
        ("battery", _battery, 124, "ChaState"),
        ("battery", _battery, 124, "WChaMax"),
    ],
)
async def test_a_required_point_not_implemented_is_named(
    kind: str, make: Make, model_id: int, point: str
) -> None:
    sim = _sim(kind)
    _force(sim, model_id, {point: None})
    err = await _read_error(sim, make)
    assert type(err) is PointNotImplemented
    assert isinstance(err, BadReading)  # counted as a bad reading ...
    assert isinstance(err, DeviceProtocolError)  # ... of a device that did answer
    assert err.point == point
    assert str(err) == f"point {point} is not implemented or not a number"
    _no_device_prefix(err)


@pytest.mark.parametrize(
    ("kind", "make", "model_id", "values", "expected"),
    [
        # a meter reading beyond its range (p_limit_kw 5000)
        ("meter", _meter, 203, {"W": 6_000_000.0}, ("W", 6000.0, -5000.0, 5000.0, "kW")),
        # a PV inverter far above its nameplate (120 kW: WRtg 100 kW, 20% margin)
        ("pv", _pv, 103, {"W": 150_000.0}, ("W", 150.0, -5.0, 120.0, "kW")),
        # a battery's state of charge outside 0..100 %
        ("battery", _battery, 124, {"ChaState": 150.0}, ("SoC", 150.0, 0.0, 100.0, "%")),
    ],
)
async def test_an_implausible_value_carries_the_value_and_the_bounds(
    kind: str,
    make: Make,
    model_id: int,
    values: dict[str, Value],
    expected: tuple[str, float, float, float, str],
) -> None:
    sim = _sim(kind)
    _force(sim, model_id, values)
    err = await _read_error(sim, make)
    assert isinstance(err, ImplausibleReading)
    assert isinstance(err, BadReading)
    point, value, low, high, unit = expected
    assert err.point == point
    assert err.value == pytest.approx(value)
    assert err.low == pytest.approx(low)
    assert err.high == pytest.approx(high)
    assert err.unit == unit
    assert str(err) == (
        f"implausible {point} = {value:.1f} {unit}, outside {low:.1f}..{high:.1f} {unit};"
        " reading dropped"
    )
    _no_device_prefix(err)


@pytest.fixture
async def float_meter() -> AsyncIterator[tuple[list[int], int]]:
    """A register-map meter's input registers (float32), set by the test."""
    words = [0] * 256

    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        current_registers[address : address + count] = words[address : address + count]

    port = free_port()
    device = SimDevice(
        id=1,
        simdata=[SimData(address=0, values=[0] * 256, datatype=DataType.REGISTERS)],
        action=action,
    )
    server = ModbusTcpServer(context=[device], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield words, port
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


def _put(words: list[int], address: int, value: float) -> None:
    words[address : address + 2] = struct.unpack(">HH", struct.pack(">f", value))


async def test_a_register_map_meter_beyond_its_range_is_implausible(
    float_meter: tuple[list[int], int],
) -> None:
    words, port = float_meter
    _put(words, 0x00, 230.0)
    _put(words, 0x34, 1_500_000.0)  # W: 1500 kW, inside the map's bounds, beyond the meter's
    _put(words, 0xCE, 400.0)
    link = ModbusTcpLink("127.0.0.1", port)
    meter = RegisterMapMeter(
        NAME, link, 1, load_register_map("builtin:three_phase_float_meter"), p_limit_kw=1000.0
    )
    try:
        with pytest.raises(ImplausibleReading) as info:
            await meter.read()
        err = info.value
        assert (err.point, err.low, err.high, err.unit) == ("p_kw", -1000.0, 1000.0, "kW")
        assert err.value == pytest.approx(1500.0)
        _no_device_prefix(err)
        _put(words, 0x34, float("nan"))  # not a number: a bad reading that names its point
        with pytest.raises(BadReading) as bad:
            await meter.read()
        assert not isinstance(bad.value, ImplausibleReading)
        assert bad.value.point == "p_kw"
        _no_device_prefix(bad.value)
        _put(words, 0x34, 12_000.0)
        assert (await meter.read()).p_kw == pytest.approx(12.0)
    finally:
        await link.close()
