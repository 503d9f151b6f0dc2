"""Real servers for the device tests: a socat pty pair, TLS certificates, Mosquitto
(the last two from ``tests.support``, shared with the ops tests).

The fixtures are re-exported by ``conftest.py``; the classes are imported by the tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymodbus.server import ModbusSerialServer, ModbusTlsServer

from hil.register_image import SimSunSpecDevice
from hil.server import SunSpecServer
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port
from tests.support.tls import Certs, make_certs

__all__ = [
    "Certs",
    "Mosquitto",
    "PtyPair",
    "SunSpecRtuServer",
    "SunSpecTlsServer",
    "certs",
    "free_port",
    "mosquitto",
    "pty_pair",
]


class SunSpecTlsServer(SunSpecServer):
    """The HIL's SunSpec server over Modbus/TCP Security (TLS, client certificate required)."""

    def __init__(
        self, devices: SimSunSpecDevice | Mapping[int, SimSunSpecDevice], *, sslctx: object
    ) -> None:
        super().__init__(devices)
        self._sslctx = sslctx
        self._tls_port = free_port()

    async def start(self) -> None:
        context = [self._sim_device(unit, dev) for unit, dev in self.devices.items()]
        server = ModbusTlsServer(
            context=context, address=("127.0.0.1", self._tls_port), sslctx=self._sslctx
        )
        await server.serve_forever(background=True)
        self._port = self._tls_port
        self._server = server  # type: ignore[assignment]


class SunSpecRtuServer(SunSpecServer):
    """The HIL's SunSpec devices on a serial line (one end of a pty pair), several unit ids."""

    def __init__(self, devices: Mapping[int, SimSunSpecDevice], *, tty: str) -> None:
        super().__init__(devices)
        self._tty = tty

    async def start(self) -> None:
        context = [self._sim_device(unit, dev) for unit, dev in self.devices.items()]
        server = ModbusSerialServer(context=context, port=self._tty, baudrate=115200)
        await server.serve_forever(background=True)
        self._port = 0
        self._server = server  # type: ignore[assignment]


@dataclass(frozen=True)
class PtyPair:
    server: str
    client: str


@pytest.fixture
def pty_pair() -> Iterator[PtyPair]:
    """Two linked pseudo-terminals from ``socat``: a virtual RS-485 line."""
    if shutil.which("socat") is None:
        pytest.fail("socat is not installed: apt-get install -y socat")
    proc = subprocess.Popen(
        ["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    ttys: list[str] = []
    deadline = time.monotonic() + 5
    while len(ttys) < 2 and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if match := re.search(r"PTY is (\S+)", line):
            ttys.append(match.group(1))
    assert len(ttys) == 2, "socat did not report two ptys"
    try:
        yield PtyPair(server=ttys[0], client=ttys[1])
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server and a client certificate it signed, and a client signed by another CA."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    await broker.start()
    try:
        yield broker
    finally:
        broker.stop()
