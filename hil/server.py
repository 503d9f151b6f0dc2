"""Serve simulated SunSpec devices over Modbus TCP with pymodbus's server.

One ``SunSpecServer`` listens on one port of 127.0.0.1 (port 0 picks a free one) and answers for
one or several unit ids, each a ``SimSunSpecDevice``. pymodbus's ``SimDevice`` holds a copy of
the registers; its ``action`` hook runs before every request touches that copy, so reads are
refreshed from the device's own image and writes go through the device's checks:

* function codes 3 (read holding), 6 and 16 (write) are served; others get ILLEGAL_FUNCTION;
* a write to an unknown or read-only register gets ILLEGAL_ADDRESS, a refused value
  ILLEGAL_VALUE, and changes nothing.

Faults (``set_fault``) are injected per unit: ``silent`` accepts the request and never answers
it (the client times out; requests received while silent stay unanswered for good), ``delay_s``
answers late, ``exception`` answers every request with that Modbus exception code, ``garbage``
answers reads with random words (a seeded generator, so runs repeat), ``frozen`` answers reads
from the image as it was when the fault began (writes are accepted and change nothing you can
read back), and ``reset`` closes every client connection of the port as a request arrives
(the request is never answered: the client sees the connection drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hil.register_image import WriteRejection

__all__ = ["DeviceFault", "ServedImage", "SunSpecServer"]


class ServedImage(Protocol):
    """What a server needs of a device: its register image and its write checks
    (``SimSunSpecDevice``, or a plain register-map device such as ``hil.sim_load.SimLoad``)."""

    @property
    def base_address(self) -> int: ...

    def registers(self) -> list[int]: ...

    def registers_at(self, address: int, count: int) -> list[int]: ...

    def check_write(self, address: int, values: Sequence[int]) -> WriteRejection | None: ...

    def apply_write(self, address: int, values: Sequence[int]) -> bool: ...


_WRITE_FUNCTIONS = frozenset({6, 16})
_READ_FUNCTIONS = frozenset({3}) | _WRITE_FUNCTIONS  # fc 6 reads its register back


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFault:
    """How a unit misbehaves; the default is a healthy device."""

    silent: bool = False
    delay_s: float = 0.0
    exception: ExcCodes | None = None
    garbage: bool = False
    frozen: bool = False
    reset: bool = False


class SunSpecServer:
    """A Modbus TCP server for simulated SunSpec devices (``async with`` or start/stop)."""

    def __init__(
        self,
        devices: ServedImage | Mapping[int, ServedImage],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.devices: dict[int, ServedImage] = (
            dict(devices) if isinstance(devices, Mapping) else {1: devices}
        )
        if not self.devices:
            raise ValueError("a server needs at least one device")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: ModbusTcpServer | None = None
        self._faults: dict[int, DeviceFault] = {unit: DeviceFault() for unit in self.devices}
        self._parked: dict[int, set[asyncio.Task[object]]] = {unit: set() for unit in self.devices}
        self._frozen: dict[int, list[int]] = {}
        self._rng = random.Random(0x5EED)
        self.resets = 0
        """How many client connections the ``reset`` fault has closed."""

    @property
    def port(self) -> int:
        """The port actually listened on (known once started)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    # --- lifetime --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        context = [self._sim_device(unit, device) for unit, device in self.devices.items()]
        server = ModbusTcpServer(context=context, address=(self.host, self._requested_port))
        await server.serve_forever(background=True)
        listener = server.transport
        sockets = getattr(listener, "sockets", None)
        if not sockets:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus: untyped
            raise RuntimeError(f"Modbus server on {self.host}:{self._requested_port} not listening")
        self._port = int(sockets[0].getsockname()[1])
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        for unit in self._parked:
            self._release(unit)
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus: untyped

    async def __aenter__(self) -> SunSpecServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- faults ----------------------------------------------------------------------------

    def set_fault(self, unit: int, fault: DeviceFault) -> None:
        if unit not in self.devices:
            raise KeyError(f"no device with unit id {unit}")
        self._faults[unit] = fault
        if not fault.silent:
            self._release(unit)
        if not fault.frozen:
            self._frozen.pop(unit, None)
        elif unit not in self._frozen:
            self._frozen[unit] = self.devices[unit].registers()

    def fault(self, unit: int) -> DeviceFault:
        return self._faults[unit]

    def set_silent(self, unit: int, silent: bool = True) -> None:
        """Shorthand: make ``unit`` stop (or resume) answering."""
        self.set_fault(unit, dataclasses.replace(self._faults[unit], silent=silent))

    def reset_connections(self) -> int:
        """Close every client connection of this port now; returns how many were closed."""
        server = self._server
        if server is None:
            return 0
        connections = list(server.active_connections.values())
        for conn in connections:
            conn.close()
        self.resets += len(connections)
        return len(connections)

    def _release(self, unit: int) -> None:
        """Drop the requests parked while ``unit`` was silent: they are never answered."""
        for task in self._parked[unit]:
            task.cancel()
        self._parked[unit].clear()

    # --- the pymodbus side -----------------------------------------------------------------

    def _sim_device(self, unit: int, device: ServedImage) -> SimDevice:
        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            current_registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            fault = self._faults[unit]
            if fault.silent:
                await self._park(unit)
            if fault.reset:
                self.reset_connections()
                await self._park(unit)
            if fault.delay_s > 0:
                await asyncio.sleep(fault.delay_s)
            if fault.exception is not None:
                return fault.exception
            if set_values is None:
                if function_code not in _READ_FUNCTIONS:
                    return ExcCodes.ILLEGAL_FUNCTION
                offset = address - start_address
                current_registers[offset : offset + count] = self._read(unit, address, count)
                return None
            if fault.frozen:  # accepted, and nothing changes
                return None
            if function_code not in _WRITE_FUNCTIONS:
                return ExcCodes.ILLEGAL_FUNCTION
            words = [int(v) for v in set_values]
            rejection = device.check_write(address, words)
            if rejection is WriteRejection.ADDRESS:
                return ExcCodes.ILLEGAL_ADDRESS
            if rejection is WriteRejection.VALUE or not device.apply_write(address, words):
                return ExcCodes.ILLEGAL_VALUE
            return None

        return SimDevice(
            id=unit,
            simdata=[
                SimData(
                    address=device.base_address,
                    values=device.registers(),
                    datatype=DataType.REGISTERS,
                )
            ],
            action=action,
        )

    def _read(self, unit: int, address: int, count: int) -> list[int]:
        fault = self._faults[unit]
        device = self.devices[unit]
        if fault.garbage:
            device.registers_at(address, count)  # still ILLEGAL_ADDRESS outside the image
            return [self._rng.randrange(0x10000) for _ in range(count)]
        frozen = self._frozen.get(unit)
        if frozen is not None:
            device.registers_at(address, count)
            offset = address - device.base_address
            return frozen[offset : offset + count]
        return device.registers_at(address, count)

    async def _park(self, unit: int) -> None:
        """Wait until cancelled: the request is never answered."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - actions always run in a task
            return
        self._parked[unit].add(task)
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(KeyError):
                self._parked[unit].remove(task)
