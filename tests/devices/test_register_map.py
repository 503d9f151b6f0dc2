"""Register-map meters: the bundled float32 input-register map against a pymodbus server."""

from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from devices import (
    BadReading,
    DeviceProtocolError,
    ModbusTcpLink,
    PvSetpoint,
    RegisterMapError,
    RegisterMapMeter,
    UnsafeWriteError,
    load_register_map,
)
from devices.register_map import MapPoint, decode_value, encode_value, plan_reads
from tests.devices.dev_helpers import free_port


def _floats(values: dict[int, float]) -> list[int]:
    words = [0] * 256
    for address, value in values.items():
        words[address : address + 2] = struct.unpack(">HH", struct.pack(">f", value))
    return words


class InputRegisterMeter:
    """A meter that answers function 4 only (input registers), like the DIN-rail meters."""

    def __init__(self, values: dict[int, float]) -> None:
        self.words = _floats(values)
        self.requests: list[tuple[int, int, int]] = []

    def device(self, unit: int) -> SimDevice:
        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            current_registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            self.requests.append((function_code, address, count))
            if function_code != 4:
                return ExcCodes.ILLEGAL_FUNCTION
            current_registers[address : address + count] = self.words[address : address + count]
            return None

        return SimDevice(
            id=unit,
            simdata=[SimData(address=0, values=list(self.words), datatype=DataType.REGISTERS)],
            action=action,
        )


@pytest.fixture
async def meter_server() -> AsyncIterator[tuple[InputRegisterMeter, int]]:
    meter = InputRegisterMeter(
        {0x00: 231.0, 0x30: 42.5, 0x34: 12_345.0, 0x3C: -2_000.0, 0x46: 50.02, 0xCE: 400.0}
    )
    port = free_port()
    server = ModbusTcpServer(context=[meter.device(3)], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield meter, port
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def test_bundled_float_meter_reads_in_few_requests(
    meter_server: tuple[InputRegisterMeter, int],
) -> None:
    meter, port = meter_server
    rmap = load_register_map("builtin:three_phase_float_meter")
    link = ModbusTcpLink("127.0.0.1", port)
    drv = RegisterMapMeter("m1", link, 3, rmap, p_limit_kw=10_000)
    try:
        reading = await drv.read()
        assert reading.p_kw == pytest.approx(12.345)
        assert reading.q_kvar == pytest.approx(-2.0)
        assert reading.v_ll_v == pytest.approx(400.0)
        assert reading.a == pytest.approx(42.5)
        assert all(fc == 4 for fc, _, _ in meter.requests)
        assert len(meter.requests) == drv.requests_per_read < len(rmap.points)
    finally:
        await link.close()


async def test_implausible_values_are_dropped_and_counted(
    meter_server: tuple[InputRegisterMeter, int],
) -> None:
    meter, port = meter_server
    meter.words[0x46:0x48] = list(struct.unpack(">HH", struct.pack(">f", math.nan)))  # Hz NaN
    meter.words[0xCE:0xD0] = list(struct.unpack(">HH", struct.pack(">f", -5.0)))  # V below 0
    link = ModbusTcpLink("127.0.0.1", port)
    drv = RegisterMapMeter(
        "m1", link, 3, load_register_map("builtin:three_phase_float_meter"), p_limit_kw=10_000
    )
    try:
        reading = await drv.read()
        assert reading.v_ll_v is None  # dropped, never passed on
        # was: the driver's counter said 2. Both are dropped from the raw read; the reading
        # names those of its own fields (the controller counts them as bad readings and marks
        # the device degraded); Hz is not a field of a meter reading
        values, dropped = await drv.read_points()
        assert dropped == ("hz", "v_ll_v")
        assert values["hz"] is None
        assert values["v_ll_v"] is None
        assert reading.dropped == ("v_ll_v",)
        assert values["p_kw"] == pytest.approx(12.345)
        meter.words[0x34:0x36] = list(struct.unpack(">HH", struct.pack(">f", math.inf)))
        with pytest.raises(DeviceProtocolError, match="p_kw") as info:
            await drv.read()
        assert isinstance(info.value, BadReading)
        assert info.value.point == "p_kw"
    finally:
        await link.close()


async def test_only_declared_writable_points_are_written(
    meter_server: tuple[InputRegisterMeter, int],
) -> None:
    # was: write_point("p_kw", ...) refused as read-only. A meter no longer has a write path
    # at all: whatever it is asked to write is refused before the wire.
    meter, port = meter_server
    link = ModbusTcpLink("127.0.0.1", port)
    drv = RegisterMapMeter(
        "m1", link, 3, load_register_map("builtin:three_phase_float_meter"), p_limit_kw=10_000
    )
    try:
        assert not drv.capabilities.writable
        with pytest.raises(UnsafeWriteError, match="takes no setpoint; nothing written"):
            await drv.write(PvSetpoint(device="m1", p_max_kw=1.0))
        assert meter.requests == []
        assert link.stats.requests == 0
    finally:
        await link.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[[points]]\nname='p_kw'\naddress=1\ntype='float64'", r"points\[0\] \(p_kw\)\.type"),
        ("[[points]]\nname='p_kw'\naddress=70000\ntype='int16'", r"\.address: must be"),
        ("[[points]]\nname='p_kw'\naddress=1\ntype='int16'\ncolour=1", "unknown key 'colour'"),
        ("[[points]]\nname='x'\naddress=1\ntype='int16'\ntable='input'\nwritable=true", "input"),
        ("[map]\nname='empty'", "at least one"),
        ("points = [", "not valid TOML"),
    ],
)
def test_bad_maps_name_the_file_and_the_point(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "meter.toml"
    path.write_text(body)
    with pytest.raises(RegisterMapError, match=message) as info:
        load_register_map(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_adjacent_points_share_a_request() -> None:
    rmap = load_register_map("builtin:three_phase_float_meter")
    reads = plan_reads(rmap)
    covered = {(t, a + i) for t, a, n in reads for i in range(n)}
    for pt in rmap.points.values():
        assert {(pt.table, pt.address + i) for i in range(pt.size)} <= covered
    assert all(n <= 125 for _, _, n in reads)


_point_types = st.sampled_from(["int16", "uint16", "int32", "uint32", "float32"])


@given(
    kind=_point_types,
    order=st.sampled_from(["big", "little"]),
    words=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
    scale=st.sampled_from([1.0, 0.1, 0.001, 10.0]),
)
def test_any_register_contents_decode_to_a_finite_value_or_none(
    kind: str, order: str, words: list[int], scale: float
) -> None:
    pt = MapPoint(
        name="x", address=0, table="holding", type=kind, word_order=order,  # type: ignore[arg-type]
        scale=scale, unit=None, writable=True, min=-1e6, max=1e6,
    )  # fmt: skip
    value = decode_value(pt, words[: pt.size])
    assert value is None or (math.isfinite(value) and -1e6 <= value <= 1e6)
    if value is not None and kind != "float32":
        assert decode_value(pt, encode_value(pt, value)) == pytest.approx(value)
