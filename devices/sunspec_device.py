"""The shared part of every SunSpec device: discovery, and decoding of the models it reads.

``read_models`` reads the blocks of several models with as few requests as the 125-register
limit allows (models sit next to each other in the chain), then decodes each block on its own.
The link is shared with the other devices behind the same gateway or bus: the fleet that built
it closes it, not the device.
"""

from __future__ import annotations

from collections.abc import Sequence

from devices.errors import DeviceProtocolError, PointNotImplemented, UnsafeWriteError
from devices.modbus_link import MAX_READ_REGISTERS, ModbusLink
from devices.protocol import Capabilities
from devices.records import DeviceKind, Setpoint, WriteResult
from devices.safety import check_read_back, check_writable
from devices.sunspec import DecodeError, ModelLayout, Value, decode_model, layout
from devices.sunspec.discovery import ModelChain, discover

__all__ = ["SunSpecDevice"]


class SunSpecDevice:
    """A SunSpec device on a Modbus link; subclasses declare the models they need, their kind
    and capabilities, and implement ``read`` (and ``write``, ``release`` when they control)."""

    required_models: tuple[tuple[int, ...], ...] = ()
    """Each entry is a set of alternatives, at least one of which the device must have."""
    kind: DeviceKind
    capabilities = Capabilities()

    def __init__(self, name: str, link: ModbusLink, unit: int) -> None:
        self.name = name
        self.link = link
        self.unit = unit
        self._chain: ModelChain | None = None
        self._polled: dict[int, dict[str, Value]] = {}

    @property
    def chain(self) -> ModelChain | None:
        return self._chain

    async def discover(self) -> ModelChain:
        chain = await discover(self.link, self.name, self.unit)
        for alternatives in self.required_models:
            if not any(chain.find(m) for m in alternatives):
                wanted = " or ".join(str(m) for m in alternatives)
                raise DeviceProtocolError(
                    self.name, f"model {wanted} missing from the chain {list(chain.ids)}"
                )
        self._chain = chain
        return chain

    async def _chain_or_discover(self) -> ModelChain:
        return self._chain if self._chain is not None else await self.discover()

    async def read_model(self, model_id: int) -> dict[str, Value]:
        """Read and decode one model block; a changed id or length forces re-discovery."""
        return (await self.read_models((model_id,)))[model_id]

    async def read_models(self, model_ids: Sequence[int]) -> dict[int, dict[str, Value]]:
        """Read and decode several model blocks, adjacent ones in one request."""
        chain = await self._chain_or_discover()
        blocks: list[tuple[int, int, ModelLayout]] = []
        for model_id in model_ids:
            where = chain.find(model_id)
            if where is None:
                raise DeviceProtocolError(self.name, f"model {model_id} is not in the chain")
            start, length = where
            model = layout(model_id)
            if length != model.length:
                self._chain = None
                raise DeviceProtocolError(
                    self.name,
                    f"model {model_id} has length {length}, definition says {model.length}",
                )
            blocks.append((start, length + 2, model))
        out: dict[int, dict[str, Value]] = {}
        for span_start, span_len, members in _spans(blocks):
            registers = await self.read_span(span_start, span_len)
            for start, size, model in members:
                block = registers[start - span_start : start - span_start + size]
                try:
                    out[model.model_id] = decode_model(model, block)
                    self._polled[model.model_id] = out[model.model_id]
                except DecodeError as err:
                    self._chain = None  # the chain moved under us: walk it again next time
                    raise DeviceProtocolError(self.name, str(err), address=start) from err
        return out

    async def control_block(self, model_id: int) -> dict[str, Value]:
        """A control model's values to encode a write with (its scale factors): the block the
        last read decoded, taken once (so it is never older than the last poll), else read
        now."""
        polled = self._polled.pop(model_id, None)
        return polled if polled is not None else await self.read_model(model_id)

    async def read_span(self, start: int, count: int) -> list[int]:
        """``count`` holding registers from ``start``, in as many requests as the limit needs."""
        out: list[int] = []
        while len(out) < count:
            n = min(MAX_READ_REGISTERS, count - len(out))
            out += await self.link.read_holding(self.name, start + len(out), n, self.unit)
        return out

    async def write_points(
        self, model_id: int, first_point: str, words: list[int], *, verify: bool = False
    ) -> None:
        """Write ``words`` from ``first_point`` of ``model_id``: only writable points.

        With ``verify``, the registers are read back and must hold what was written.
        """
        chain = await self._chain_or_discover()
        where = chain.find(model_id)
        if where is None:
            raise DeviceProtocolError(self.name, f"model {model_id} is not in the chain")
        model = layout(model_id)
        pt = model.point(first_point)
        covered = [
            p for p in model.points.values() if pt.offset <= p.offset < pt.offset + len(words)
        ]
        if pt.offset + len(words) > model.length + 2:
            raise UnsafeWriteError(
                self.name,
                f"write of {len(words)} words at {first_point} runs past model {model_id}",
            )
        check_writable(self.name, f"model {model_id}", [p.name for p in covered if not p.writable])
        address = where[0] + pt.offset
        await self.link.write_holding(self.name, address, words, self.unit)
        if verify:
            held = await self.link.read_holding(self.name, address, len(words), self.unit)
            check_read_back(self.name, address, words, held)

    async def write(self, setpoint: Setpoint) -> WriteResult:
        raise UnsafeWriteError(self.name, f"a {self.kind} takes no setpoint; nothing written")

    async def release(self) -> None:
        """Nothing to give back (devices that control override this)."""

    async def close(self) -> None:
        """Nothing of its own to close: the link is the fleet's."""


def _spans(
    blocks: list[tuple[int, int, ModelLayout]],
) -> list[tuple[int, int, list[tuple[int, int, ModelLayout]]]]:
    """Group blocks ``(start, size, layout)`` into reads of at most ``MAX_READ_REGISTERS``."""
    spans: list[tuple[int, int, list[tuple[int, int, ModelLayout]]]] = []
    for block in sorted(blocks, key=lambda b: b[0]):
        start, size, _ = block
        if spans:
            s_start, s_len, members = spans[-1]
            end = max(s_start + s_len, start + size)
            if start >= s_start and end - s_start <= MAX_READ_REGISTERS:
                spans[-1] = (s_start, end - s_start, [*members, block])
                continue
        spans.append((start, size, [block]))
    return spans


def required(values: dict[str, Value], device: str, point: str) -> float:
    """A point that must be implemented and numeric, else the reading is unusable."""
    value = values.get(point)
    if not isinstance(value, int | float):
        raise PointNotImplemented(device, point)
    return float(value)
