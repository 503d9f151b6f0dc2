"""SunSpec discovery: find the ``SunS`` marker and walk the model chain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from devices.errors import DeviceProtocolError, DeviceUnavailable

__all__ = ["BASE_ADDRESSES", "ModelChain", "RegisterReader", "discover"]

BASE_ADDRESSES = (40000, 0, 50000)
SUNS = (0x5375, 0x6E53)
END_ID = 0xFFFF
MAX_MODELS = 64


class RegisterReader(Protocol):
    async def read_holding(self, device: str, address: int, count: int, unit: int) -> list[int]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelChain:
    """Where each model's block starts (its ``ID`` register) and its ``L``."""

    base: int
    models: tuple[tuple[int, int, int], ...]  # (model id, start address, length)

    def find(self, model_id: int) -> tuple[int, int] | None:
        for mid, start, length in self.models:
            if mid == model_id:
                return start, length
        return None

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(m[0] for m in self.models)


async def discover(link: RegisterReader, device: str, unit: int) -> ModelChain:
    """Find ``SunS`` at 40000, 0 or 50000 and walk the chain to the end marker."""
    for base in BASE_ADDRESSES:
        try:
            marker = await link.read_holding(device, base, 2, unit)
        except DeviceProtocolError:
            continue
        if tuple(marker) != SUNS:
            continue
        models: list[tuple[int, int, int]] = []
        address = base + 2
        for _ in range(MAX_MODELS):
            model_id, length = await link.read_holding(device, address, 2, unit)
            if model_id == END_ID:
                return ModelChain(base=base, models=tuple(models))
            models.append((model_id, address, length))
            address += 2 + length
        raise DeviceProtocolError(device, f"model chain at {base} has no end marker")
    raise DeviceUnavailable(device, "no SunSpec marker 'SunS' at 40000, 0 or 50000")
