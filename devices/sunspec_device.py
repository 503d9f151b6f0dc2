"""The shared part of every SunSpec device: discovery and decoding of one model per read."""

from __future__ import annotations

from devices.errors import DeviceProtocolError
from devices.modbus_link import ModbusTcpLink
from devices.sunspec import DecodeError, Value, decode_model, layout
from devices.sunspec.discovery import ModelChain, discover

__all__ = ["SunSpecDevice"]


class SunSpecDevice:
    """A SunSpec device on a Modbus link; subclasses declare the models they need."""

    required_models: tuple[tuple[int, ...], ...] = ()
    """Each entry is a set of alternatives, at least one of which the device must have."""

    def __init__(self, name: str, link: ModbusTcpLink, unit: int) -> None:
        self.name = name
        self.link = link
        self.unit = unit
        self._chain: ModelChain | None = None

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
        chain = await self._chain_or_discover()
        where = chain.find(model_id)
        if where is None:
            raise DeviceProtocolError(self.name, f"model {model_id} is not in the chain")
        start, length = where
        model = layout(model_id)
        if length != model.length:
            self._chain = None
            raise DeviceProtocolError(
                self.name, f"model {model_id} has length {length}, definition says {model.length}"
            )
        registers = await self.link.read_holding(self.name, start, length + 2, self.unit)
        try:
            return decode_model(model, registers)
        except DecodeError as err:
            self._chain = None  # the chain moved under us: walk it again next time
            raise DeviceProtocolError(self.name, str(err), address=start) from err

    async def write_points(self, model_id: int, first_point: str, words: list[int]) -> None:
        """Write ``words`` starting at ``first_point`` of ``model_id``; only writable points."""
        chain = await self._chain_or_discover()
        where = chain.find(model_id)
        if where is None:
            raise DeviceProtocolError(self.name, f"model {model_id} is not in the chain")
        model = layout(model_id)
        pt = model.point(first_point)
        covered = [
            p for p in model.points.values() if pt.offset <= p.offset < pt.offset + len(words)
        ]
        read_only = [p.name for p in covered if not p.writable]
        if read_only:
            raise DeviceProtocolError(
                self.name, f"refusing to write read-only points {read_only} of model {model_id}"
            )
        await self.link.write_holding(self.name, where[0] + pt.offset, words, self.unit)

    async def close(self) -> None:
        await self.link.close()


def required(values: dict[str, Value], device: str, point: str) -> float:
    """A point that must be implemented and numeric, else the reading is unusable."""
    value = values.get(point)
    if not isinstance(value, int | float):
        raise DeviceProtocolError(device, f"point {point} is not implemented or not numeric")
    return float(value)
