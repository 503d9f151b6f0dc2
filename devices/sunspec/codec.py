"""Pure SunSpec point codec: registers to values and back.

Decoding applies scale factors and maps every "not implemented" pattern (0x8000, 0xFFFF, a zero
accumulator, NaN, ...) to ``None``; a scale factor outside -10..10 makes the points that use it
unknown too. No I/O here: these are the functions the drivers, the HIL and the property tests share.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

from devices.sunspec.models import ModelLayout, PointDef

__all__ = [
    "NOT_IMPLEMENTED",
    "DecodeError",
    "Value",
    "decode_model",
    "decode_point_raw",
    "encode_model",
    "encode_point",
]

Value = float | int | str | None

# Raw "not implemented" patterns by SunSpec point type.
NOT_IMPLEMENTED: dict[str, int] = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "count": 0x0000,
    "acc16": 0x0000,
    "int32": 0x80000000,
    "uint32": 0xFFFFFFFF,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "acc32": 0x00000000,
    "int64": 0x8000000000000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
    "acc64": 0x0000000000000000,
}
_SIGNED = {"int16", "sunssf", "int32", "int64"}
_SF_RANGE = range(-10, 11)


class DecodeError(ValueError):
    """Registers that cannot be a block of this model (wrong length, id or ``L``)."""


def _raw(registers: Sequence[int], pt: PointDef) -> int:
    value = 0
    for word in registers[pt.offset : pt.offset + pt.size]:
        value = (value << 16) | (word & 0xFFFF)
    return value


def decode_point_raw(registers: Sequence[int], pt: PointDef) -> int | float | str | None:
    """Decode one point without its scale factor; ``None`` when not implemented."""
    if pt.type == "string":
        data = b"".join(
            struct.pack(">H", w & 0xFFFF) for w in registers[pt.offset : pt.offset + pt.size]
        )
        text = data.split(b"\x00", 1)[0].decode("latin-1").strip()
        return text or None
    if pt.type == "float32":
        raw32 = _raw(registers, pt)
        as_float: float = struct.unpack(">f", raw32.to_bytes(4, "big"))[0]
        return None if math.isnan(as_float) else as_float
    if pt.type == "pad":
        return None
    raw = _raw(registers, pt)
    if raw == NOT_IMPLEMENTED.get(pt.type):
        return None
    if pt.type in _SIGNED:
        bits = 16 * pt.size
        if raw >= 1 << (bits - 1):
            raw -= 1 << bits
    return raw


def _scale(layout: ModelLayout, registers: Sequence[int], pt: PointDef) -> int | None:
    """The exponent for ``pt``: 0 without a scale factor, ``None`` when it is unusable."""
    if pt.sf is None:
        return 0
    if isinstance(pt.sf, int):
        return pt.sf if pt.sf in _SF_RANGE else None
    sf_pt = layout.points.get(pt.sf)
    if sf_pt is None:
        return None
    sf = decode_point_raw(registers, sf_pt)
    return sf if isinstance(sf, int) and sf in _SF_RANGE else None


def decode_model(layout: ModelLayout, registers: Sequence[int]) -> dict[str, Value]:
    """Decode a whole model block (``ID`` first) into point values with scale factors applied.

    Raises ``DecodeError`` when the block is short or its ``ID``/``L`` do not match the layout;
    a point that is not implemented, or whose scale factor is, decodes to ``None``.
    """
    span = layout.length + 2
    if len(registers) < span:
        raise DecodeError(f"model {layout.model_id}: {len(registers)} registers, need {span}")
    if registers[0] != layout.model_id:
        raise DecodeError(f"model {layout.model_id}: block starts with id {registers[0]}")
    if registers[1] != layout.length:
        raise DecodeError(
            f"model {layout.model_id}: length {registers[1]} differs from definition {layout.length}"
        )
    values: dict[str, Value] = {}
    exponents: dict[str | int, int | None] = {}  # each scale factor decoded once per block
    for pt, fast in _plan(layout):
        if fast:  # one-register integer point: the hot path of every poll
            word = registers[pt.offset] & 0xFFFF
            if word == fast[0]:
                raw: int | float | str | None = None
            else:
                raw = word - 0x10000 if fast[1] and word >= 0x8000 else word
        else:
            raw = decode_point_raw(registers, pt)
        if raw is None or isinstance(raw, str) or pt.type == "sunssf" or pt.sf is None:
            values[pt.name] = raw
            continue
        if pt.sf in exponents:
            exponent = exponents[pt.sf]
        else:
            exponent = exponents[pt.sf] = _scale(layout, registers, pt)
        values[pt.name] = None if exponent is None else raw * 10.0**exponent
    return values


_PLANS: dict[
    tuple[int, tuple[tuple[str, int], ...]],
    tuple[ModelLayout, list[tuple[PointDef, tuple[int, bool] | None]]],
] = {}


def _plan(layout: ModelLayout) -> list[tuple[PointDef, tuple[int, bool] | None]]:
    """Each point with, for one-register integers, its not-implemented word and signedness."""
    key = (layout.model_id, layout.repeats)  # a model laid out with other counts has its own
    cached = _PLANS.get(key)
    if cached is not None and cached[0] is layout:
        return cached[1]
    plan: list[tuple[PointDef, tuple[int, bool] | None]] = []
    for pt in layout.points.values():
        simple = pt.size == 1 and pt.type not in ("string", "float32", "pad")
        ni = NOT_IMPLEMENTED.get(pt.type, -1)
        plan.append((pt, (ni, pt.type in _SIGNED) if simple else None))
    _PLANS[key] = (layout, plan)
    return plan


def encode_point(pt: PointDef, value: Value, sf: int = 0) -> list[int]:
    """Encode one point's value (already in engineering units) with exponent ``sf``."""
    if value is None:
        if pt.type == "string":
            return [0] * pt.size
        if pt.type == "float32":
            return list(struct.unpack(">HH", struct.pack(">f", math.nan)))
        raw_ni = NOT_IMPLEMENTED.get(pt.type, 0)
        return [(raw_ni >> (16 * (pt.size - 1 - i))) & 0xFFFF for i in range(pt.size)]
    if pt.type == "string":
        data = str(value).encode("latin-1")[: 2 * pt.size].ljust(2 * pt.size, b"\x00")
        return list(struct.unpack(f">{pt.size}H", data))
    if pt.type == "float32":
        return list(struct.unpack(">HH", struct.pack(">f", float(value))))
    raw = (
        round(float(value) / 10.0**sf) if pt.sf is not None and pt.type != "sunssf" else int(value)
    )
    bits = 16 * pt.size
    if pt.type in _SIGNED:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    if not lo <= raw <= hi:
        raise ValueError(f"point {pt.name}: {value} does not fit {pt.type} with scale 10^{sf}")
    raw &= (1 << bits) - 1
    return [(raw >> (16 * (pt.size - 1 - i))) & 0xFFFF for i in range(pt.size)]


def encode_model(
    layout: ModelLayout, values: Mapping[str, Value], scale_factors: Mapping[str, int]
) -> list[int]:
    """Encode a whole model block: ``ID``, ``L``, then every point (missing ones not implemented).

    ``scale_factors`` gives each scale-factor point's exponent (e.g. ``{"W_SF": 1}``); they are
    written into the block and used for the points that refer to them.
    """
    block = [0] * (layout.length + 2)
    for pt in layout.points.values():
        if pt.name == "ID":
            words = [layout.model_id]
        elif pt.name == "L":
            words = [layout.length]
        elif pt.type == "sunssf":
            words = encode_point(pt, scale_factors.get(pt.name))
        else:
            sf = pt.sf if isinstance(pt.sf, int) else scale_factors.get(pt.sf or "", 0)
            words = encode_point(pt, values.get(pt.name), sf)
        block[pt.offset : pt.offset + pt.size] = words
    return block
