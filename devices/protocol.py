"""The one small protocol every device driver meets.

A driver is one module under ``devices/`` (``meter.py``, ``pv_inverter.py``, ...). It declares
its ``kind`` and what it can do (``capabilities``), reads a frozen record of its kind, writes a
setpoint of its kind through the safety envelope, can release its control when the daemon stops,
and closes what it owns alone (a Modbus link shared by several devices is the fleet's to close).

Failures are the project's errors (``devices.errors``): ``DeviceUnavailable`` when it does not
answer, ``BadReading`` (``PointNotImplemented``, ``ImplausibleReading``) when the answer cannot be
used, ``UnsafeWriteError`` when the envelope refuses a setpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from devices.records import DeviceKind, Reading, Setpoint, WriteResult

__all__ = ["Background", "Capabilities", "Device"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a device can do beyond being read."""

    writable: bool = False
    """It takes a setpoint of its kind (``write``)."""
    releasable: bool = False
    """``release`` gives its control back (``on_stop = "release"``); otherwise a no-op."""


@runtime_checkable
class Device(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> DeviceKind: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def read(self) -> Reading: ...

    async def write(self, setpoint: Setpoint) -> WriteResult: ...

    async def release(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Background(Protocol):
    """A device that keeps a connection of its own in the background (an MQTT device): the
    daemon runs ``serve`` in its task group until ``stop`` is set."""

    async def serve(self, stop: object) -> None: ...
