"""Controllable loads: the register-map driver against real pymodbus servers, and over MQTT.

The simulated load of the HIL rig (``hil.SimLoad`` behind ``SunSpecServer``) and a bare pymodbus
server whose registers the test sets word by word (hostile values, a device that swallows
writes).
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from controller.clock import FakeClock
from devices import (
    BadReading,
    DeviceProtocolError,
    ImplausibleReading,
    LoadReading,
    LoadSetpoint,
    ModbusTcpLink,
    Ramp,
    RegisterMapError,
    RegisterMapLoad,
    UnsafeWriteError,
    check_load_map,
    load_register_map,
)
from devices.register_map import parse_register_map
from devices.safety import load_command
from hil import SimLoad
from hil.server import DeviceFault, SunSpecServer
from tests.devices.dev_helpers import HANG_GUARD_S, Mosquitto, WatchedMqttDevice, free_port, serving

RATING_KW = 120.0
MIN_KW = 20.0
MAP = load_register_map("builtin:controllable_load")


def _float(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def _driver(port: int, *, ramp_kw: float | None = None, revert_s: int = 60) -> RegisterMapLoad:
    """The driver on a link of its own; ``ramp_kw`` per write (writes one second apart)."""
    return RegisterMapLoad(
        "ld1",
        ModbusTcpLink("127.0.0.1", port, timeout_s=1.0),
        1,
        MAP,
        rating_kw=RATING_KW,
        min_kw=MIN_KW,
        revert_s=revert_s,
        ramp=None if ramp_kw is None else Ramp(kw_per_s=ramp_kw, interval_s=1.0),
    )


async def _close(drv: RegisterMapLoad) -> None:
    """``close`` never closes a link (the fleet owns links): the test closes the one it made."""
    await drv.close()
    await drv.link.close()


@pytest.fixture
async def sim_load() -> AsyncIterator[tuple[SimLoad, SunSpecServer]]:
    load = SimLoad("ld1", 5, RATING_KW, demand_kw=90.0)
    async with SunSpecServer(load) as server:
        yield load, server


class Registers:
    """Holding registers 0..15 that the test sets; writes land unless ``swallow`` is set."""

    def __init__(self) -> None:
        self.words = [0] * 16
        self.swallow = False
        self.writes: list[tuple[int, list[int]]] = []

    def device(self) -> SimDevice:
        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            current_registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            if set_values is not None:
                words = [int(v) for v in set_values]
                self.writes.append((address, words))
                if not self.swallow:
                    self.words[address : address + len(words)] = words
                return None
            if function_code != 3:
                return ExcCodes.ILLEGAL_FUNCTION
            current_registers[address : address + count] = self.words[address : address + count]
            return None

        return SimDevice(
            id=1,
            simdata=[SimData(address=0, values=[0] * 16, datatype=DataType.REGISTERS)],
            action=action,
        )


@pytest.fixture
async def raw() -> AsyncIterator[tuple[Registers, int]]:
    regs = Registers()
    port = free_port()
    server = ModbusTcpServer(context=[regs.device()], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield regs, port
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


# --- the map -------------------------------------------------------------------------------


def test_bundled_map_is_a_valid_load_map() -> None:
    check_load_map(MAP)
    assert MAP.points["p_limit_kw"].writable
    assert MAP.points["revert_s"].writable
    assert not MAP.points["p_kw"].writable


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([("p_limit_kw", True), ("revert_s", True)], "needs a point named 'p_kw'"),
        ([("p_kw", False), ("revert_s", True)], "writable setpoint point named 'p_limit_kw'"),
        ([("p_kw", False), ("p_limit_kw", True)], "writable revert timer point named 'revert_s'"),
        (
            [("p_kw", False), ("p_limit_kw", False), ("revert_s", True)],
            "'p_limit_kw' (setpoint) must be declared writable = true",
        ),
    ],
)
def test_a_load_map_without_its_points_is_refused(
    points: list[tuple[str, bool]], message: str
) -> None:
    data = {
        "map": {"name": "m"},
        "points": [
            {"name": n, "address": 2 * i, "type": "float32", "writable": w}
            for i, (n, w) in enumerate(points)
        ],
    }
    with pytest.raises(RegisterMapError) as err:
        check_load_map(parse_register_map(data, source="m.toml"))
    assert message in str(err.value)


# --- the envelope (pure) -------------------------------------------------------------------


@given(
    p=st.floats(allow_nan=True, allow_infinity=True),
    last=st.none() | st.floats(0.0, RATING_KW),
    ramp=st.none() | st.floats(0.1, 200.0),
)
def test_load_command_never_leaves_floor_rating_or_ramp(
    p: float, last: float | None, ramp: float | None
) -> None:
    try:
        cmd = load_command(
            "ld",
            p,
            min_kw=MIN_KW,
            rating_kw=RATING_KW,
            revert_s=60,
            last_kw=last,
            ramp=None if ramp is None else Ramp(kw_per_s=ramp, interval_s=1.0),
        )
    except UnsafeWriteError:
        assert not math.isfinite(p)
        return
    assert math.isfinite(p)
    assert MIN_KW <= cmd.p_max_kw <= RATING_KW
    if last is not None and ramp is not None and MIN_KW <= last <= RATING_KW:
        assert abs(cmd.p_max_kw - last) <= ramp + 1e-9
    assert cmd.revert_s == 60


# --- the driver on the wire ----------------------------------------------------------------


async def test_reads_and_sheds_the_simulated_load(sim_load: tuple[SimLoad, SunSpecServer]) -> None:
    load, server = sim_load
    drv = _driver(server.port)
    try:
        reading = await drv.read()
        assert isinstance(reading, LoadReading)
        assert reading.p_kw == pytest.approx(90.0)
        assert reading.limit_active is False
        res = await drv.write(LoadSetpoint(device="ld1", p_max_kw=50.0))
        assert (res.written, res.clamped) == (50.0, False)
        assert load.limit_active
        assert load.p_kw == pytest.approx(50.0)
        assert load.registers_at(4, 1) == [60]  # the watchdog is armed with every setpoint
        reading = await drv.read()
        assert reading.p_kw == pytest.approx(50.0)
        assert reading.limit_kw == pytest.approx(50.0)
        assert reading.limit_active is True
        await drv.release()
        assert load.p_kw == pytest.approx(90.0)
    finally:
        await _close(drv)


@pytest.mark.parametrize(
    ("requested", "written"),
    [(-30.0, MIN_KW), (0.0, MIN_KW), (5.0, MIN_KW), (1e9, RATING_KW), (RATING_KW + 1, RATING_KW)],
)
async def test_hostile_setpoints_are_clamped_to_floor_and_rating(
    sim_load: tuple[SimLoad, SunSpecServer], requested: float, written: float
) -> None:
    load, server = sim_load
    drv = _driver(server.port)
    try:
        res = await drv.write(LoadSetpoint(device="ld1", p_max_kw=requested))
        assert res.written == pytest.approx(written)
        assert res.clamped
        assert load.limit_kw == pytest.approx(written)
    finally:
        await _close(drv)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_a_setpoint_that_is_not_a_number_writes_nothing(
    raw: tuple[Registers, int], bad: float
) -> None:
    regs, port = raw
    drv = _driver(port)
    try:
        with pytest.raises(UnsafeWriteError, match="not a finite number"):
            await drv.write(LoadSetpoint(device="ld1", p_max_kw=bad))
        assert regs.writes == []
    finally:
        await _close(drv)


async def test_the_ramp_limit_holds_between_writes(
    sim_load: tuple[SimLoad, SunSpecServer],
) -> None:
    load, server = sim_load
    drv = _driver(server.port, ramp_kw=10.0)
    try:
        first = await drv.write(LoadSetpoint(device="ld1", p_max_kw=100.0))
        second = await drv.write(LoadSetpoint(device="ld1", p_max_kw=30.0))
        assert first.written == pytest.approx(100.0)
        assert second.written == pytest.approx(90.0)
        assert second.clamped
        assert load.limit_kw == pytest.approx(90.0)
        # the draw is the reference when it is below the last ceiling: 60 now, so 50 at least
        load.update(demand_kw=60.0)
        assert (await drv.read()).p_kw == pytest.approx(60.0)
        third = await drv.write(LoadSetpoint(device="ld1", p_max_kw=30.0))
        assert third.written == pytest.approx(50.0)
        # and a shed load comes back no faster than the ramp
        load.update(demand_kw=110.0)
        assert (await drv.read()).p_kw == pytest.approx(50.0)
        fourth = await drv.write(LoadSetpoint(device="ld1", p_max_kw=RATING_KW))
        assert fourth.written == pytest.approx(60.0)
    finally:
        await _close(drv)


async def test_a_device_that_does_not_hold_the_write_is_an_error(
    sim_load: tuple[SimLoad, SunSpecServer],
) -> None:
    _load, server = sim_load
    server.set_fault(1, DeviceFault(frozen=True))  # accepts writes, changes nothing
    drv = _driver(server.port)
    try:
        with pytest.raises(UnsafeWriteError, match="read-back at 4 differs"):
            await drv.write(LoadSetpoint(device="ld1", p_max_kw=50.0))
    finally:
        await _close(drv)


async def test_read_back_mismatch_of_the_ceiling(raw: tuple[Registers, int]) -> None:
    regs, port = raw
    regs.words[4] = 60  # the watchdog already holds what feederd writes ...
    regs.swallow = True  # ... but the ceiling is never taken
    drv = _driver(port)
    try:
        with pytest.raises(UnsafeWriteError, match="read-back at 2 differs"):
            await drv.write(LoadSetpoint(device="ld1", p_max_kw=50.0))
        assert [a for a, _ in regs.writes] == [4, 2]  # the watchdog first, then the ceiling
    finally:
        await _close(drv)


@pytest.mark.parametrize(
    ("p_kw", "match"),
    [
        (math.nan, "point p_kw is implausible or not a number"),
        (-50.0, r"implausible p_kw = -50\.0 kW, outside -6\.0\.\.180\.0 kW"),
        (1000.0, r"implausible p_kw = 1000\.0 kW, outside -6\.0\.\.180\.0 kW"),
    ],
)
async def test_hostile_readings_are_dropped(
    raw: tuple[Registers, int], p_kw: float, match: str
) -> None:
    regs, port = raw
    regs.words[0:2] = _float(p_kw)
    drv = _driver(port)
    try:
        with pytest.raises(DeviceProtocolError, match=match) as info:
            await drv.read()
        err = info.value
        # typed: the controller counts it as a bad reading by its type, never by its wording
        assert isinstance(err, BadReading)
        assert err.point == "p_kw"
        assert err.device == "ld1"
        assert not str(err).startswith("ld1")  # the message alone; whoever logs names it
        if math.isfinite(p_kw):
            assert isinstance(err, ImplausibleReading)
            assert (err.value, err.low, err.high) == (p_kw, -0.05 * RATING_KW, 1.5 * RATING_KW)
            assert err.unit == "kW"
    finally:
        await _close(drv)


async def test_only_writable_points_are_written(raw: tuple[Registers, int]) -> None:
    regs, port = raw
    data = {
        "map": {"name": "sneaky"},
        "points": [
            {"name": "p_kw", "address": 0, "type": "float32"},
            {"name": "p_limit_kw", "address": 2, "type": "float32", "writable": True},
            {"name": "revert_s", "address": 4, "type": "uint16", "writable": True},
        ],
    }
    rmap = parse_register_map(data, source="sneaky.toml")
    drv = RegisterMapLoad(
        "ld1",
        ModbusTcpLink("127.0.0.1", port),
        1,
        rmap,
        rating_kw=RATING_KW,
        min_kw=MIN_KW,
        revert_s=60,
    )
    # a map changed behind the driver's back: the setpoint point is no longer writable
    object.__setattr__(rmap.points["p_limit_kw"], "writable", False)
    try:
        with pytest.raises(UnsafeWriteError, match="read-only points"):
            await drv.write(LoadSetpoint(device="ld1", p_max_kw=50.0))
        assert [a for a, _ in regs.writes] == [4]
    finally:
        await _close(drv)


# --- MQTT ----------------------------------------------------------------------------------


async def test_an_mqtt_load_reads_telemetry_and_publishes_its_ceiling(
    mosquitto: Mosquitto,
) -> None:
    root = f"test/{uuid.uuid4().hex[:8]}"
    dev = WatchedMqttDevice(
        "ld-mqtt",
        "load",
        host="127.0.0.1",
        port=mosquitto.port,
        telemetry_topic=f"{root}/telemetry",
        setpoint_topic=f"{root}/setpoint",
        paths={"p_kw": "p_w", "limit_kw": "limit_kw"},
        scale={"p_kw": 0.001},
        rating_kw=RATING_KW,
        min_kw=MIN_KW,
        revert_s=30,
        monotonic=FakeClock().monotonic,
    )
    async with serving(dev):
        assert await dev.wait_connected(HANG_GUARD_S)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe(f"{root}/setpoint", qos=1)
            await client.publish(
                f"{root}/telemetry", json.dumps({"p_w": 75_000, "limit_kw": 120}), qos=1
            )
            await dev.until(lambda: dev.age_s() is not None)  # the telemetry arrived
            reading = await dev.read()
            assert isinstance(reading, LoadReading)
            assert reading.p_kw == pytest.approx(75.0)
            assert reading.limit_kw == 120.0
            res = await dev.write(LoadSetpoint(device="ld-mqtt", p_max_kw=-5.0))
            assert res.written == MIN_KW
            assert res.clamped
            message = await asyncio.wait_for(anext(aiter(client.messages)), HANG_GUARD_S)
            assert json.loads(bytes(message.payload)) == {"p_max_kw": MIN_KW, "revert_s": 30}
            with pytest.raises(UnsafeWriteError, match="not a finite number"):
                await dev.write(LoadSetpoint(device="ld-mqtt", p_max_kw=math.nan))
