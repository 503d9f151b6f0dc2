"""Modbus connections (TCP, RTU on a serial line, TLS), shared by the devices behind them.

The only module here that touches pymodbus's clients. A link is one or a few connections to one
gateway or bus; every device behind it calls ``read`` (holding or input registers),
``read_holding`` and ``write_holding`` with its unit id.

* Each connection carries one request at a time (pymodbus clients are not safe for concurrent
  requests on one connection). A TCP link may open ``connections`` parallel connections to a
  gateway (bounded concurrency); a serial bus always has exactly one.
* Each request is a single attempt with ``timeout_s``, so the worst case per call is known to
  the poll deadline; retries are the caller's (the next interval).
* A timed-out TCP or TLS connection is closed, so a late reply can never be matched to a newer
  request. A serial port is never closed for one device's timeout (the other devices on the bus
  keep it): the link waits a quiet time instead, so a late reply is drained before the next one.
* A failed connect backs the link off exponentially with jitter, capped; it never busy-loops.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, AsyncModbusTlsClient
from pymodbus.exceptions import ModbusException

from devices.backoff import Backoff
from devices.errors import DeviceProtocolError, DeviceUnavailable

__all__ = [
    "MAX_READ_REGISTERS",
    "LinkStats",
    "ModbusLink",
    "ModbusRtuLink",
    "ModbusTcpLink",
    "ModbusTlsLink",
    "tls_context",
]

MAX_READ_REGISTERS = 125
"""Modbus allows at most 125 registers in one read request."""

Table = Literal["holding", "input"]
_Client = AsyncModbusTcpClient | AsyncModbusTlsClient | AsyncModbusSerialClient


@dataclass(slots=True)
class LinkStats:
    """Counters of one link, for metrics and the poll benchmark."""

    requests: int = 0
    timeouts: int = 0
    exceptions: int = 0
    failures: int = 0
    connects: int = 0


class _Lane:
    """One connection and its lock."""

    __slots__ = ("client", "lock")

    def __init__(self) -> None:
        self.client: _Client | None = None
        self.lock = asyncio.Lock()


class ModbusLink:
    """The transport-independent part: lanes, timeouts, backoff and error translation."""

    serial = False

    def __init__(
        self,
        *,
        label: str,
        connections: int = 1,
        timeout_s: float = 1.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if connections < 1:
            raise ValueError(f"{label}: connections must be at least 1, got {connections}")
        if timeout_s <= 0:
            raise ValueError(f"{label}: timeout_s must be positive, got {timeout_s}")
        self._label = label
        self.timeout_s = timeout_s
        self._backoff = Backoff(backoff_min_s, backoff_max_s)
        self._monotonic = monotonic
        self._lanes = [_Lane() for _ in range(connections)]
        self._free: asyncio.Queue[_Lane] | None = None
        self._next_attempt = 0.0
        self.stats = LinkStats()

    @property
    def label(self) -> str:
        return self._label

    @property
    def connections(self) -> int:
        return len(self._lanes)

    # --- subclasses ----------------------------------------------------------------------

    def _new_client(self) -> _Client:
        raise NotImplementedError

    async def _after_timeout(self, lane: _Lane) -> None:
        """TCP and TLS: close, so a late reply is never taken for the next request's."""
        self._drop(lane)

    # --- connections ---------------------------------------------------------------------

    def _lane_queue(self) -> asyncio.Queue[_Lane]:
        if self._free is None:
            self._free = asyncio.Queue()
            for lane in self._lanes:
                self._free.put_nowait(lane)
        return self._free

    async def _connected(self, lane: _Lane, device: str) -> _Client:
        if lane.client is not None and lane.client.connected:
            return lane.client
        now = self._monotonic()
        if now < self._next_attempt:
            raise DeviceUnavailable(
                device, f"{self.label} is backing off for {self._next_attempt - now:.1f} s"
            )
        self._drop(lane)
        client = self._new_client()
        self.stats.connects += 1
        try:
            ok = await asyncio.wait_for(client.connect(), self.timeout_s)
        except (TimeoutError, OSError, ModbusException, ssl.SSLError):
            ok = False
        if not ok:
            client.close()
            self._fail()
            raise DeviceUnavailable(device, f"cannot connect to {self.label}")
        lane.client = client
        return client

    def _fail(self) -> None:
        self.stats.failures += 1
        self._next_attempt = self._monotonic() + self._backoff.failed()

    @staticmethod
    def _drop(lane: _Lane) -> None:
        if lane.client is not None:
            lane.client.close()
            lane.client = None

    async def _call(
        self, device: str, what: str, address: int, request: Callable[[_Client], Any]
    ) -> Any:
        """Run one request on a free lane; translate every failure into the project's errors."""
        queue = self._lane_queue()
        lane = await queue.get()
        try:
            async with lane.lock:
                client = await self._connected(lane, device)
                self.stats.requests += 1
                try:
                    rr = await asyncio.wait_for(request(client), self.timeout_s + 0.05)
                except (TimeoutError, ModbusException, OSError) as err:
                    # a request that fails drops (TCP) or quiets (RTU) its connection; only a
                    # failed connect backs the link off, so one silent unit behind a gateway
                    # does not silence the others
                    self.stats.timeouts += 1
                    await self._after_timeout(lane)
                    detail = str(err) or "no answer within the timeout"
                    raise DeviceUnavailable(
                        device, f"{what} on {self.label}: {detail}", address=address
                    ) from err
                if rr.isError():
                    self.stats.exceptions += 1
                    raise DeviceProtocolError(
                        device,
                        f"{what} on {self.label}: exception response {rr}",
                        address=address,
                    )
                self._backoff.succeeded()
                return rr
        finally:
            queue.put_nowait(lane)

    # --- requests ------------------------------------------------------------------------

    async def read(
        self, device: str, address: int, count: int, unit: int, table: Table = "holding"
    ) -> list[int]:
        """Read ``count`` registers of ``table``; DeviceUnavailable or DeviceProtocolError."""
        if not 1 <= count <= MAX_READ_REGISTERS:
            raise ValueError(f"read of {count} registers: Modbus allows 1..{MAX_READ_REGISTERS}")
        what = f"read {table} {address}+{count} unit {unit}"

        def request(client: _Client) -> Any:
            if table == "input":
                return client.read_input_registers(address, count=count, device_id=unit)
            return client.read_holding_registers(address, count=count, device_id=unit)

        rr = await self._call(device, what, address, request)
        registers = [int(r) for r in rr.registers]
        if len(registers) != count:
            raise DeviceProtocolError(
                device, f"{what}: {len(registers)} registers returned", address=address
            )
        return registers

    async def read_holding(self, device: str, address: int, count: int, unit: int) -> list[int]:
        return await self.read(device, address, count, unit, "holding")

    async def write_holding(
        self, device: str, address: int, values: Sequence[int], unit: int
    ) -> None:
        """Write holding registers in one request (function 16)."""
        words = [int(v) & 0xFFFF for v in values]
        what = f"write {address}+{len(words)} unit {unit}"
        await self._call(
            device,
            what,
            address,
            lambda client: client.write_registers(address, words, device_id=unit),
        )

    async def close(self) -> None:
        for lane in self._lanes:
            async with lane.lock:
                self._drop(lane)


class ModbusTcpLink(ModbusLink):
    """Modbus TCP to ``host:port``; ``connections`` > 1 for a gateway that takes several."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connections: int = 1,
        timeout_s: float = 1.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            label=f"{host}:{port}",
            connections=connections,
            timeout_s=timeout_s,
            backoff_min_s=backoff_min_s,
            backoff_max_s=backoff_max_s,
            monotonic=monotonic,
        )
        self.host = host
        self.port = port

    def _new_client(self) -> _Client:
        # retries=0: one attempt per call; the link owns reconnection (reconnect_delay is large
        # so pymodbus does not reconnect behind our back and never busy-loops).
        return AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=self._backoff.max_s,
            reconnect_delay_max=self._backoff.max_s,
        )


def tls_context(*, cert_file: str, key_file: str, ca_file: str | None) -> ssl.SSLContext:
    """The client context of Modbus/TCP Security: a client certificate, the server verified.

    Loads the files once (it blocks): call it when the link is built, never per request.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class ModbusTlsLink(ModbusTcpLink):
    """Modbus/TCP Security (TLS, port 802 by default) with a client certificate."""

    def __init__(
        self,
        host: str,
        port: int = 802,
        *,
        sslctx: ssl.SSLContext,
        connections: int = 1,
        timeout_s: float = 1.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            host,
            port,
            connections=connections,
            timeout_s=timeout_s,
            backoff_min_s=backoff_min_s,
            backoff_max_s=backoff_max_s,
            monotonic=monotonic,
        )
        self._label = f"tls://{host}:{port}"
        self._sslctx = sslctx

    def _new_client(self) -> _Client:
        return AsyncModbusTlsClient(
            self.host,
            port=self.port,
            sslctx=self._sslctx,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=self._backoff.max_s,
            reconnect_delay_max=self._backoff.max_s,
        )


class ModbusRtuLink(ModbusLink):
    """Modbus RTU on one serial line: one request at a time for every device on the bus."""

    serial = True

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 19200,
        parity: Literal["N", "E", "O"] = "N",
        stopbits: int = 1,
        timeout_s: float = 1.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            label=f"rtu:{port}",
            connections=1,
            timeout_s=timeout_s,
            backoff_min_s=backoff_min_s,
            backoff_max_s=backoff_max_s,
            monotonic=monotonic,
        )
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits

    @property
    def quiet_s(self) -> float:
        """How long the link waits after a timeout so a late reply drains off the line."""
        char_s = 11.0 / self.baudrate
        return min(self.timeout_s, max(0.05, 256 * char_s))

    def _new_client(self) -> _Client:
        return AsyncModbusSerialClient(
            self.port,
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=self._backoff.max_s,
            reconnect_delay_max=self._backoff.max_s,
        )

    async def _after_timeout(self, lane: _Lane) -> None:
        # One silent device must not close the port for the others: keep it open, let any late
        # reply arrive and be discarded (pymodbus clears its buffer before the next request).
        if lane.client is None or not lane.client.connected:
            self._drop(lane)
            return
        await asyncio.sleep(self.quiet_s)
