"""The one small protocol every device driver meets."""

from __future__ import annotations

from typing import Protocol

from devices.records import Reading, Setpoint, WriteResult

__all__ = ["Device", "WritableDevice"]


class Device(Protocol):
    name: str

    async def read(self) -> Reading: ...

    async def close(self) -> None: ...


class WritableDevice(Device, Protocol):
    async def write(self, setpoint: Setpoint) -> WriteResult: ...
