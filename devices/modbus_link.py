"""One Modbus TCP connection, shared by the devices behind it, one request at a time.

The only module here that touches pymodbus's client. Each request runs under a lock (pymodbus
clients are not safe for concurrent requests on one connection) with a single attempt and a
timeout, so the worst case per call is ``timeout_s``, known to the poll deadline. A timed-out
connection is closed, so a late reply can never be matched to a newer request; reconnects back
off exponentially with jitter, capped, and never busy-loop.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from devices.errors import DeviceProtocolError, DeviceUnavailable

__all__ = ["ModbusTcpLink"]


class ModbusTcpLink:
    """A serialised Modbus TCP connection to ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float = 1.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | None = None
        self._failures = 0
        self._next_attempt = 0.0

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    def _new_client(self) -> AsyncModbusTcpClient:
        # retries=0: one attempt per call; the link owns reconnection (reconnect_delay is large
        # so pymodbus does not reconnect behind our back and never busy-loops).
        return AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=self._backoff_max_s,
            reconnect_delay_max=self._backoff_max_s,
        )

    async def _connected(self, device: str) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        now = self._clock()
        if now < self._next_attempt:
            raise DeviceUnavailable(
                device, f"{self.label} is backing off for {self._next_attempt - now:.1f} s"
            )
        await self._drop()
        client = self._new_client()
        try:
            ok = await asyncio.wait_for(client.connect(), self.timeout_s)
        except (TimeoutError, OSError, ModbusException):
            ok = False
        if not ok:
            client.close()
            self._fail()
            raise DeviceUnavailable(device, f"cannot connect to {self.label}")
        self._client = client
        return client

    def _fail(self) -> None:
        self._failures += 1
        delay = min(self._backoff_max_s, self._backoff_min_s * 2 ** (self._failures - 1))
        self._next_attempt = self._clock() + delay * random.uniform(0.5, 1.0)

    async def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read_holding(self, device: str, address: int, count: int, unit: int) -> list[int]:
        """Read ``count`` holding registers; raises DeviceUnavailable or DeviceProtocolError."""
        async with self._lock:
            client = await self._connected(device)
            try:
                rr = await asyncio.wait_for(
                    client.read_holding_registers(address, count=count, device_id=unit),
                    self.timeout_s,
                )
            except (TimeoutError, ModbusException, OSError) as err:
                await self._drop()
                self._fail()
                raise DeviceUnavailable(
                    device,
                    f"read {address}+{count} on {self.label}: {err or 'timeout'}",
                    address=address,
                ) from err
            if rr.isError():
                raise DeviceProtocolError(
                    device,
                    f"read {address}+{count} on {self.label}: exception response {rr}",
                    address=address,
                )
            self._failures = 0
            registers = list(rr.registers)
            if len(registers) != count:
                raise DeviceProtocolError(
                    device,
                    f"read {address}+{count}: {len(registers)} registers returned",
                    address=address,
                )
            return registers

    async def write_holding(
        self, device: str, address: int, values: Sequence[int], unit: int
    ) -> None:
        """Write holding registers in one request (function 16)."""
        async with self._lock:
            client = await self._connected(device)
            try:
                rr = await asyncio.wait_for(
                    client.write_registers(address, list(values), device_id=unit),
                    self.timeout_s,
                )
            except (TimeoutError, ModbusException, OSError) as err:
                await self._drop()
                self._fail()
                raise DeviceUnavailable(
                    device,
                    f"write {address}+{len(values)} on {self.label}: {err or 'timeout'}",
                    address=address,
                ) from err
            if rr.isError():
                raise DeviceProtocolError(
                    device,
                    f"write {address}+{len(values)} on {self.label}: exception {rr}",
                    address=address,
                )
            self._failures = 0

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
