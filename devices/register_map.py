"""Register-map devices: meters (and loads) that are not SunSpec, described by a TOML map.

A map lists points: ``name``, ``address``, ``table`` (``holding`` or ``input``), ``type``
(int16, uint16, int32, uint32, float32), ``word_order`` (``big``: high word first, or
``little``), ``scale`` (engineering value = raw × scale), ``unit``, ``writable`` and optional
physical bounds ``min``/``max``. The meter reading takes ``p_kw`` (required), ``q_kvar``,
``v_ll_v`` and ``a`` from the points of those names.

Parsing and decoding are pure (``load_register_map``, ``decode_points``); ``RegisterMapMeter``
reads adjacent points of one table in one request. A value that is NaN, infinite or outside its
bounds is dropped (``None``) and named in the reading's ``dropped``; it never reaches the
optimizer.
"""

from __future__ import annotations

import math
import os
import re
import stat
import struct
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

from devices.errors import BadReading, ImplausibleReading, UnsafeWriteError
from devices.modbus_link import MAX_READ_REGISTERS, ModbusLink
from devices.protocol import Capabilities
from devices.records import DeviceKind, MeterReading, Setpoint, WriteResult

__all__ = [
    "BUNDLED_MAPS",
    "MapPoint",
    "RegisterMap",
    "RegisterMapError",
    "RegisterMapMeter",
    "decode_points",
    "encode_value",
    "load_register_map",
    "parse_register_map",
    "read_map",
]

PointType = Literal["int16", "uint16", "int32", "uint32", "float32"]
_TYPES: dict[str, tuple[int, str]] = {
    "int16": (1, ">h"),
    "uint16": (1, ">H"),
    "int32": (2, ">i"),
    "uint32": (2, ">I"),
    "float32": (2, ">f"),
}
_MAX_GAP = 16
"""Unread registers a request may span to join two points (fewer requests, same answer)."""

BUNDLED_MAPS = ("three_phase_float_meter", "controllable_load")
METER_POINTS = ("p_kw", "q_kvar", "v_ll_v", "a")
"""The points a meter reading takes from a map (others in the map are read and ignored)."""


class RegisterMapError(ValueError):
    """A register map that cannot be used; the message names the file and the point."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MapPoint:
    name: str
    address: int
    table: Literal["holding", "input"]
    type: PointType
    word_order: Literal["big", "little"]
    scale: float
    unit: str | None
    writable: bool
    min: float | None
    max: float | None

    @property
    def size(self) -> int:
        return _TYPES[self.type][0]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterMap:
    name: str
    points: dict[str, MapPoint]


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (a bool, a string, NaN, an int too big)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _short(value: Any) -> str:
    """``repr(value)`` cut short (a value may be a long string or deeply nested)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return "an integer of more than 30 digits"
    if isinstance(value, list | dict):
        return f"a {'table' if isinstance(value, dict) else 'list'}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _point(source: str, i: int, raw: Any, default_order: str) -> MapPoint:
    where = f"{source}: points[{i}]"
    if not isinstance(raw, dict):
        raise RegisterMapError(f"{where}: must be a table")
    allowed = {"name", "address", "table", "type", "word_order", "scale", "unit", "writable"}
    allowed |= {"min", "max"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise RegisterMapError(f"{where}: unknown key {unknown[0]!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise RegisterMapError(f"{where}.name: missing or not a string")
    where = f"{source}: points[{i}] ({name})"
    address = raw.get("address")
    if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        raise RegisterMapError(
            f"{where}.address: must be an integer 0..65535 (got {_short(address)})"
        )
    table = raw.get("table", "holding")
    if table not in ("holding", "input"):
        raise RegisterMapError(f"{where}.table: must be 'holding' or 'input' (got {_short(table)})")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        raise RegisterMapError(
            f"{where}.type: must be one of {', '.join(_TYPES)} (got {_short(kind)})"
        )
    order = raw.get("word_order", default_order)
    if order not in ("big", "little"):
        raise RegisterMapError(
            f"{where}.word_order: must be 'big' or 'little' (got {_short(order)})"
        )
    if address + _TYPES[kind][0] > 0x10000:
        raise RegisterMapError(f"{where}.address: a {kind} at {address} ends past 65535")
    scale = _number(raw.get("scale", 1.0))
    if scale is None or scale == 0:
        raise RegisterMapError(
            f"{where}.scale: must be a finite non-zero number (got {_short(raw.get('scale'))})"
        )
    writable = raw.get("writable", False)
    if not isinstance(writable, bool):
        raise RegisterMapError(f"{where}.writable: must be true or false")
    if writable and table == "input":
        raise RegisterMapError(f"{where}.writable: input registers cannot be written")
    bounds: dict[str, float | None] = {}
    for key in ("min", "max"):
        value = raw.get(key)
        bound = None if value is None else _number(value)
        if value is not None and bound is None:
            raise RegisterMapError(f"{where}.{key}: must be a finite number (got {_short(value)})")
        bounds[key] = bound
    unit = raw.get("unit")
    return MapPoint(
        name=name,
        address=address,
        table=table,
        type=cast(PointType, kind),
        word_order=order,
        scale=float(scale),
        unit=unit if isinstance(unit, str) else None,
        writable=writable,
        min=bounds["min"],
        max=bounds["max"],
    )


def parse_register_map(data: Mapping[str, Any], *, source: str) -> RegisterMap:
    """Validate a parsed TOML map; every problem is a ``RegisterMapError`` naming the point."""
    head = data.get("map", {})
    if not isinstance(head, dict):
        raise RegisterMapError(f"{source}: map: must be a table")
    default_order = head.get("word_order", "big")
    if default_order not in ("big", "little"):
        raise RegisterMapError(f"{source}: map.word_order: must be 'big' or 'little'")
    raw_points = data.get("points")
    if not isinstance(raw_points, list) or not raw_points:
        raise RegisterMapError(f"{source}: points: the map needs at least one [[points]] entry")
    points: dict[str, MapPoint] = {}
    for i, raw in enumerate(raw_points):
        pt = _point(source, i, raw, default_order)
        if pt.name in points:
            raise RegisterMapError(f"{source}: points[{i}].name: duplicate point {pt.name!r}")
        points[pt.name] = pt
    return RegisterMap(name=str(head.get("name", source)), points=points)


MAP_MAX_BYTES = 1 << 20
"""A map file is a regular file of at most 1 MiB (``/dev/zero`` is refused, not read)."""
_MAX_KEY_PARTS = 32
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DEEP_KEY = re.compile(
    r"(?m)(?:^|[\[{,])[ \t]*"
    + _KEY_PART
    + r"(?:[ \t]*\.[ \t]*"
    + _KEY_PART
    + "){"
    + str(_MAX_KEY_PARTS)
    + "}"
)


def _read_map_file(path: str | Path, source: str) -> str:
    """The text of a map file: a regular file (checked before it is opened, so a FIFO or a
    device is never read), at most ``MAP_MAX_BYTES``, UTF-8."""
    try:
        st = os.stat(path)
    except ValueError:  # a NUL byte in the path
        raise RegisterMapError(f"{source!r}: a path cannot contain a NUL byte") from None
    except OSError as err:
        raise RegisterMapError(f"{source}: cannot read: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise RegisterMapError(f"{source}: not a regular file")
    if st.st_size > MAP_MAX_BYTES:
        raise RegisterMapError(
            f"{source}: {st.st_size} bytes, more than the {MAP_MAX_BYTES >> 20} MiB allowed"
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            data = os.read(fd, MAP_MAX_BYTES + 1) if regular else b""
            while regular and len(data) <= MAP_MAX_BYTES and (more := os.read(fd, 1 << 16)):
                data += more
        finally:
            os.close(fd)
    except OSError as err:
        raise RegisterMapError(f"{source}: cannot read: {err.strerror or err}") from None
    if not regular:
        raise RegisterMapError(f"{source}: not a regular file")
    if len(data) > MAP_MAX_BYTES:
        raise RegisterMapError(f"{source}: more than the {MAP_MAX_BYTES >> 20} MiB allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RegisterMapError(f"{source}: not valid UTF-8 (byte {err.start})") from None


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    deep = _DEEP_KEY.search(text)
    if deep is not None:
        line = text.count("\n", 0, deep.start()) + 1
        raise RegisterMapError(
            f"{source}: not valid TOML: a dotted key of more than {_MAX_KEY_PARTS} parts "
            f"(line {line})"
        )
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise RegisterMapError(f"{source}: not valid TOML: nested too deeply") from None
    except ValueError as err:  # TOMLDecodeError, and int() of more than 4300 digits
        raise RegisterMapError(f"{source}: not valid TOML: {err}") from None


def load_register_map(path: str | Path) -> RegisterMap:
    """Read a map file; ``builtin:NAME`` names a bundled map (``BUNDLED_MAPS``). Every
    problem (the file, its encoding, its TOML, a point) is a one-line ``RegisterMapError``."""
    text: str
    source = str(path)
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name not in BUNDLED_MAPS:
            raise RegisterMapError(
                f"{source!r}: no bundled register map {name!r} (have {', '.join(BUNDLED_MAPS)})"
            )
        text = resources.files("devices.maps").joinpath(f"{name}.toml").read_text("utf-8")
    else:
        text = _read_map_file(path, source)
    try:
        return parse_register_map(_parse_toml(text, source), source=source)
    except RecursionError:
        raise RegisterMapError(f"{source}: nested too deeply") from None


def _words_to_bytes(words: Sequence[int], order: str) -> bytes:
    ordered = list(words) if order == "big" else list(reversed(words))
    return b"".join(struct.pack(">H", w & 0xFFFF) for w in ordered)


def decode_value(pt: MapPoint, words: Sequence[int]) -> float | None:
    """One point's engineering value, or ``None`` when it is NaN, infinite or out of bounds."""
    if len(words) != pt.size:
        raise ValueError(f"point {pt.name}: {len(words)} words, need {pt.size}")
    raw = struct.unpack(_TYPES[pt.type][1], _words_to_bytes(words, pt.word_order))[0]
    value = float(raw) * pt.scale
    if not math.isfinite(value):
        return None
    if (pt.min is not None and value < pt.min) or (pt.max is not None and value > pt.max):
        return None
    return value


def encode_value(pt: MapPoint, value: float) -> list[int]:
    """The words to write ``value`` (engineering units) into ``pt``."""
    raw: float | int = value / pt.scale
    if pt.type != "float32":
        raw = round(raw)
    data = struct.pack(_TYPES[pt.type][1], raw)
    words = list(struct.unpack(f">{pt.size}H", data))
    return words if pt.word_order == "big" else list(reversed(words))


def decode_points(
    rmap: RegisterMap, registers: Mapping[tuple[str, int], int]
) -> tuple[dict[str, float | None], list[str]]:
    """Decode every point from ``{(table, address): word}``; returns values and dropped names."""
    values: dict[str, float | None] = {}
    dropped: list[str] = []
    for pt in rmap.points.values():
        words = [registers[(pt.table, pt.address + i)] for i in range(pt.size)]
        value = decode_value(pt, words)
        values[pt.name] = value
        if value is None:
            dropped.append(pt.name)
    return values, dropped


def plan_reads(rmap: RegisterMap) -> list[tuple[str, int, int]]:
    """The requests ``(table, address, count)`` that cover every point, adjacent ones joined."""
    reads: list[tuple[str, int, int]] = []
    for table in ("holding", "input"):
        spans = sorted(
            (pt.address, pt.address + pt.size) for pt in rmap.points.values() if pt.table == table
        )
        for start, end in spans:
            if reads and reads[-1][0] == table:
                _, r_start, r_count = reads[-1]
                r_end = r_start + r_count
                if start - r_end <= _MAX_GAP and max(end, r_end) - r_start <= MAX_READ_REGISTERS:
                    reads[-1] = (table, r_start, max(end, r_end) - r_start)
                    continue
            reads.append((table, start, end - start))
    return reads


class RegisterMapMeter:
    """A meter read through a register map; ``p_kw`` positive = into the feeder."""

    kind = DeviceKind.METER
    capabilities = Capabilities()

    def __init__(
        self, name: str, link: ModbusLink, unit: int, rmap: RegisterMap, *, p_limit_kw: float
    ) -> None:
        if "p_kw" not in rmap.points:
            raise RegisterMapError(f"{rmap.name}: a meter map needs a point named 'p_kw'")
        self.name = name
        self.link = link
        self.unit = unit
        self.map = rmap
        self.p_limit_kw = p_limit_kw
        self._reads = plan_reads(rmap)

    @property
    def requests_per_read(self) -> int:
        return len(self._reads)

    async def read_points(self) -> tuple[dict[str, float | None], tuple[str, ...]]:
        """Every point's value (``None`` when dropped) and the names of the dropped ones."""
        return await read_map(self.link, self.name, self.unit, self.map, self._reads)

    async def read(self) -> MeterReading:
        values, dropped = await self.read_points()
        p_kw = values.get("p_kw")
        if p_kw is None:
            raise BadReading(
                self.name,
                "point p_kw is implausible or not a number; reading dropped",
                point="p_kw",
            )
        if abs(p_kw) > self.p_limit_kw:
            raise ImplausibleReading(
                self.name,
                point="p_kw",
                value=p_kw,
                low=-self.p_limit_kw,
                high=self.p_limit_kw,
                unit="kW",
            )
        return MeterReading(
            device=self.name,
            p_kw=p_kw,
            q_kvar=values.get("q_kvar"),
            v_ll_v=values.get("v_ll_v"),
            a=values.get("a"),
            dropped=tuple(p for p in dropped if p in METER_POINTS),
        )

    async def write(self, setpoint: Setpoint) -> WriteResult:
        raise UnsafeWriteError(self.name, "a meter takes no setpoint; nothing written")

    async def release(self) -> None:
        """A meter controls nothing."""

    async def close(self) -> None:
        """Nothing of its own to close: the link is the fleet's."""


async def read_map(
    link: ModbusLink, device: str, unit: int, rmap: RegisterMap, reads: list[tuple[str, int, int]]
) -> tuple[dict[str, float | None], tuple[str, ...]]:
    """Read every point of ``rmap`` with the requests ``reads`` (``plan_reads``)."""
    registers: dict[tuple[str, int], int] = {}
    for table, address, count in reads:
        words = await link.read(device, address, count, unit, table)  # type: ignore[arg-type]
        for i, w in enumerate(words):
            registers[(table, address + i)] = w
    values, dropped = decode_points(rmap, registers)
    return values, tuple(dropped)
