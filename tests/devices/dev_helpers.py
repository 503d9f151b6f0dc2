"""Real servers for the device tests: a socat pty pair, TLS certificates, Mosquitto.

The fixtures are re-exported by ``conftest.py``; the classes are imported by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymodbus.server import ModbusSerialServer, ModbusTlsServer

from hil.register_image import SimSunSpecDevice
from hil.server import SunSpecServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _leaf(d: Path, name: str, ca: str, ca_key: str, *, server: bool) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
    ext = d / f"{name}.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else "extendedKeyUsage=clientAuth\n"
    )
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", ca, "-CAkey", ca_key,
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=d)  # fmt: skip


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server and a client certificate it signed, and a client signed by another CA."""
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}", cwd=d)  # fmt: skip
    _leaf(d, "server", "ca.pem", "ca.key", server=True)
    _leaf(d, "client", "ca.pem", "ca.key", server=False)
    _leaf(d, "rogue", "rogue-ca.pem", "rogue-ca.key", server=False)
    return Certs(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        rogue_cert=d / "rogue.pem",
        rogue_key=d / "rogue.key",
    )


class Mosquitto:
    """A real broker on a free port of 127.0.0.1; ``stop``/``start`` to test reconnects."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            pytest.fail("mosquitto is not installed: apt-get install -y mosquitto")
        self.proc = subprocess.Popen(
            [exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def start(self) -> None:
        self._spawn()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.proc = None


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    await broker.start()
    try:
        yield broker
    finally:
        broker.stop()
