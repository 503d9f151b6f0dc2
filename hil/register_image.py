"""A SunSpec device's register image: the "SunS" header, model blocks and the end marker.

Pure: no sockets and no clock. Every block is encoded with the project's own codec
(``devices.sunspec.encode_model``) from pysunspec2's layouts, so the drivers read exactly what
the standard defines. Writes are checked point by point: only registers of points the standard
declares writable (``RW``) are accepted, and a device kind may refuse values it cannot take.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import ClassVar

from devices.sunspec import ModelLayout, PointDef, Value, decode_model, encode_model, layout

__all__ = [
    "BASE_ADDRESS",
    "END_MARKER",
    "SUNS_MARKER",
    "SimSunSpecDevice",
    "WriteHook",
    "WriteRejection",
    "fit_scale_factor",
]

BASE_ADDRESS = 40000
"""Modbus address of the "SunS" marker (holding registers, 0-based protocol address)."""
SUNS_MARKER = (0x5375, 0x6E53)
END_MARKER = (0xFFFF, 0x0000)

_INT16_MAX = 32767
_UINT16_MAX = 65534  # 0xFFFF is "not implemented"

WriteHook = Callable[["SimSunSpecDevice", int], None]
"""Called after every accepted write with the device and the id of the model written."""


class WriteRejection(StrEnum):
    """Why a write was refused; the server maps it to a Modbus exception code."""

    ADDRESS = "address"
    """Outside every model block, across two blocks, or a read-only register."""
    VALUE = "value"
    """Writable registers, but a value the device does not accept (e.g. a limit above 100%)."""


def fit_scale_factor(max_abs: float, *, signed: bool, min_sf: int = -3) -> int:
    """The smallest exponent ``>= min_sf`` at which ``max_abs`` fits a 16-bit point."""
    limit = _INT16_MAX if signed else _UINT16_MAX
    sf = min_sf
    while abs(max_abs) / 10.0**sf > limit:
        sf += 1
    return sf


def saturate(value: float, sf: int, *, signed: bool) -> float:
    """Clamp ``value`` to what a 16-bit point with exponent ``sf`` can carry (meters saturate)."""
    top = (_INT16_MAX if signed else _UINT16_MAX) * 10.0**sf
    return max(-top if signed else 0.0, min(top, value))


class SimSunSpecDevice:
    """The register image of one simulated SunSpec device, starting at ``BASE_ADDRESS``.

    Subclasses hold the device's behaviour: they set point values with ``_set`` and react to
    accepted writes in ``_after_write``. ``on_write`` is the rig's hook, called after each
    accepted write. ``repeats`` gives, by model, the counts of its repeating groups (e.g.
    ``{705: {"Crv": 2, "Crv.Pt": 4}}``, see ``devices.sunspec.layout``).
    """

    kind: ClassVar[str] = "device"

    def __init__(
        self,
        name: str,
        *,
        models: Sequence[int],
        scale_factors: Mapping[int, Mapping[str, int]],
        monotonic: Callable[[], float] = time.monotonic,
        repeats: Mapping[int, Mapping[str, int]] | None = None,
    ) -> None:
        self.name = name
        self.monotonic = monotonic
        self.on_write: WriteHook | None = None
        counts = repeats or {}
        self._layouts: dict[int, ModelLayout] = {m: layout(m, counts.get(m)) for m in models}
        self._sf: dict[int, dict[str, int]] = {m: dict(scale_factors.get(m, {})) for m in models}
        self._values: dict[int, dict[str, Value]] = {m: {} for m in models}
        self._start: dict[int, int] = {}
        self._owner: dict[int, list[PointDef]] = {}
        address = BASE_ADDRESS + len(SUNS_MARKER)
        for model_id, model in self._layouts.items():
            self._start[model_id] = address
            owner: list[PointDef] = []
            for pt in model.points.values():
                owner.extend([pt] * pt.size)
            self._owner[model_id] = owner
            address += model.length + 2
        self._image = [0] * (address + len(END_MARKER) - BASE_ADDRESS)
        self._image[: len(SUNS_MARKER)] = SUNS_MARKER
        self._image[-len(END_MARKER) :] = END_MARKER
        self._dirty: set[int] = set(self._layouts)  # blocks to encode before they are read

    # --- the image -------------------------------------------------------------------------

    @property
    def base_address(self) -> int:
        return BASE_ADDRESS

    @property
    def register_count(self) -> int:
        """Registers from "SunS" to the end marker, both included."""
        return len(self._image)

    @property
    def model_ids(self) -> tuple[int, ...]:
        return tuple(self._layouts)

    def model_address(self, model_id: int) -> int:
        """Address of the ``ID`` register of ``model_id``'s block."""
        return self._start[model_id]

    def point_address(self, model_id: int, point: str) -> int:
        return self._start[model_id] + self._layouts[model_id].point(point).offset

    def values(self, model_id: int) -> dict[str, Value]:
        """The current values of a model's points (engineering units), decoded from the image."""
        start = self._start[model_id] - BASE_ADDRESS
        model = self._layouts[model_id]
        return decode_model(model, self._encoded()[start : start + model.length + 2])

    def registers(self) -> list[int]:
        """A copy of the whole image."""
        return list(self._encoded())

    def registers_at(self, address: int, count: int) -> list[int]:
        """``count`` registers from ``address``; ``IndexError`` outside the image."""
        offset = address - BASE_ADDRESS
        if count < 0 or offset < 0 or offset + count > len(self._image):
            raise IndexError(f"{self.name}: registers {address}..{address + count - 1} not mapped")
        return self._encoded()[offset : offset + count]

    # --- writes ----------------------------------------------------------------------------

    def check_write(self, address: int, values: Sequence[int]) -> WriteRejection | None:
        """Whether a write of ``values`` at ``address`` would be accepted (``None``) or why not."""
        located = self._locate(address, len(values))
        if located is None:
            return WriteRejection.ADDRESS
        model_id, offset = located
        owners = self._owner[model_id][offset : offset + len(values)]
        if not owners or not all(pt.writable for pt in owners):
            return WriteRejection.ADDRESS
        candidate = self._candidate(model_id, offset, values)
        written = {pt.name for pt in owners}
        if not self._accepts(model_id, candidate, written):
            return WriteRejection.VALUE
        return None

    def apply_write(self, address: int, values: Sequence[int]) -> bool:
        """Apply a Modbus write; ``False`` (and nothing changed) when it is refused."""
        if self.check_write(address, values) is not None:
            return False
        located = self._locate(address, len(values))
        assert located is not None  # checked above
        model_id, offset = located
        owners = self._owner[model_id][offset : offset + len(values)]
        written = {pt.name for pt in owners}
        self._before_write(model_id, written)
        candidate = self._candidate(model_id, offset, values)
        for name in written:
            self._values[model_id][name] = candidate[name]
        self._encode(model_id)
        self._after_write(model_id, written)
        if self.on_write is not None:
            self.on_write(self, model_id)
        return True

    # --- for subclasses --------------------------------------------------------------------

    def _get(self, model_id: int, point: str) -> Value:
        return self._values[model_id].get(point)

    def _set(self, model_id: int, values: Mapping[str, Value]) -> None:
        """Set point values (engineering units) and re-encode the block."""
        self._values[model_id].update(values)
        self._encode(model_id)

    def _sf_of(self, model_id: int, sf_name: str) -> int:
        return self._sf[model_id][sf_name]

    def _accepts(self, model_id: int, candidate: Mapping[str, Value], written: set[str]) -> bool:
        """Whether the device takes these values; the default accepts any implemented value."""
        return all(candidate.get(name) is not None for name in written)

    def _before_write(self, model_id: int, written: set[str]) -> None:
        """Called before an accepted write changes the image (e.g. to integrate energy)."""

    def _after_write(self, model_id: int, written: set[str]) -> None:
        """Called after an accepted write changed the image."""

    # --- internals -------------------------------------------------------------------------

    def _encode(self, model_id: int) -> None:
        """The block's values changed: it is encoded when next read (values change every
        physics step; a block is read at most a few times an interval)."""
        self._dirty.add(model_id)

    def _encoded(self) -> list[int]:
        """The image, with every changed block encoded."""
        while self._dirty:
            model_id = self._dirty.pop()
            values, sf = self._values[model_id], self._sf[model_id]
            block = encode_model(self._layouts[model_id], values, sf)
            start = self._start[model_id] - BASE_ADDRESS
            self._image[start : start + len(block)] = block
        return self._image

    def _locate(self, address: int, count: int) -> tuple[int, int] | None:
        """The model whose block holds all of ``address .. address+count-1`` and the offset."""
        if count <= 0:
            return None
        for model_id, start in self._start.items():
            span = self._layouts[model_id].length + 2
            if start <= address and address + count <= start + span:
                return model_id, address - start
        return None

    def _candidate(self, model_id: int, offset: int, values: Iterable[int]) -> dict[str, Value]:
        start = self._start[model_id] - BASE_ADDRESS
        model = self._layouts[model_id]
        block = self._encoded()[start : start + model.length + 2]
        words = [int(v) & 0xFFFF for v in values]
        block[offset : offset + len(words)] = words
        return decode_model(model, block)
