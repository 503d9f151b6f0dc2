"""Faults of a simulated device as a real Modbus client sees them: garbage, frozen, resets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from devices import DeviceError, ModbusTcpLink, SunSpecMeter
from devices.sunspec import decode_model, layout
from hil import DeviceFault, SimMeter, SunSpecServer

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def meter_server() -> AsyncIterator[tuple[SunSpecServer, SimMeter]]:
    meter = SimMeter("head")
    meter.update(p_kw=1200.0, q_kvar=300.0, v_ll_v=12660.0)
    async with SunSpecServer(meter) as server:
        yield server, meter


async def _client(port: int) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3.0, retries=0)
    assert await client.connect()
    return client


async def _read_w(client: AsyncModbusTcpClient, meter: SimMeter) -> float:
    model = layout(203)
    rr = await client.read_holding_registers(
        meter.model_address(203), count=model.length + 2, device_id=1
    )
    value = decode_model(model, rr.registers)["W"]
    assert isinstance(value, float)
    return value


async def test_garbage_answers_noise_in_place_of_the_image(
    meter_server: tuple[SunSpecServer, SimMeter],
) -> None:
    server, meter = meter_server
    client = await _client(server.port)
    try:
        clean = await client.read_holding_registers(40000, count=60, device_id=1)
        assert clean.registers[:2] == [0x5375, 0x6E53]
        server.set_fault(1, DeviceFault(garbage=True))
        noisy = await client.read_holding_registers(40000, count=60, device_id=1)
        assert not noisy.isError()
        assert noisy.registers != clean.registers
        assert noisy.registers[:2] != [0x5375, 0x6E53]
        server.set_fault(1, DeviceFault())
        again = await client.read_holding_registers(40000, count=60, device_id=1)
        assert again.registers == meter.registers_at(40000, 60)
    finally:
        client.close()


async def test_a_garbled_meter_is_refused_by_the_driver_not_believed(
    meter_server: tuple[SunSpecServer, SimMeter],
) -> None:
    server, _meter = meter_server
    link = ModbusTcpLink("127.0.0.1", server.port, timeout_s=3.0)
    driver = SunSpecMeter("head", link, unit=1, p_limit_kw=5000.0)
    try:
        assert (await driver.read()).p_kw == pytest.approx(1200.0)
        server.set_fault(1, DeviceFault(garbage=True))
        for _ in range(3):  # the random words never make a plausible SunSpec meter
            with pytest.raises(DeviceError):
                await driver.read()
    finally:
        await link.close()


async def test_frozen_values_stop_changing_and_writes_change_nothing(
    meter_server: tuple[SunSpecServer, SimMeter],
) -> None:
    server, meter = meter_server
    client = await _client(server.port)
    try:
        server.set_fault(1, DeviceFault(frozen=True))
        meter.update(p_kw=-500.0, q_kvar=0.0, v_ll_v=12660.0)
        assert await _read_w(client, meter) == pytest.approx(1_200_000.0)
        server.set_fault(1, DeviceFault())
        assert await _read_w(client, meter) == pytest.approx(-500_000.0)
    finally:
        client.close()


async def test_reset_drops_the_connection_and_the_port_recovers(
    meter_server: tuple[SunSpecServer, SimMeter],
) -> None:
    server, _meter = meter_server
    client = await _client(server.port)
    bystander = await _client(server.port)
    try:
        server.set_fault(1, DeviceFault(reset=True))
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(40000, count=2, device_id=1)
        assert server.resets >= 2  # both connections of the port were dropped
        server.set_fault(1, DeviceFault())
        fresh = await _client(server.port)
        try:
            rr = await fresh.read_holding_registers(40000, count=2, device_id=1)
            assert rr.registers == [0x5375, 0x6E53]
        finally:
            fresh.close()
    finally:
        client.close()
        bystander.close()
