"""Real servers for the device tests: the HIL rig on a simulated clock, a socat pty pair,
TLS certificates, Mosquitto (the last two from ``tests.support``, shared with the ops tests),
and an MQTT device whose progress a test can await.

The fixtures are re-exported by ``conftest.py``; the classes are imported by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymodbus.server import ModbusSerialServer, ModbusTlsServer

from controller.clock import FakeClock
from devices import MqttDevice
from devices.tasks import cancel_and_wait
from hil import HilRig
from hil.register_image import SimSunSpecDevice
from hil.server import SunSpecServer
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port
from tests.support.tls import Certs, make_certs

__all__ = [
    "HANG_GUARD_S",
    "Certs",
    "Mosquitto",
    "PtyPair",
    "SunSpecRtuServer",
    "SunSpecTlsServer",
    "WatchedMqttDevice",
    "certs",
    "clock",
    "free_port",
    "mosquitto",
    "pty_pair",
    "rig",
    "serving",
]

HANG_GUARD_S = 30.0
"""Real seconds after which a wait for something that must happen fails the test instead of
hanging it (never a timing assertion: a busy machine only makes the wait longer)."""


@pytest.fixture
def clock() -> FakeClock:
    """The simulated clock of the rig (and of any driver or health tracker a test builds)."""
    return FakeClock()


@pytest.fixture
async def rig(clock: FakeClock) -> AsyncIterator[HilRig]:
    """The 33-bus rig at nominal load and 80% sun, on the simulated clock: its physics moves
    only on ``await rig.step()`` (no background ticker, no solve behind the test's back)."""
    async with HilRig(
        monotonic=clock.monotonic,
        load_scale=lambda _t: 1.0,
        pv_available_frac=lambda _t: 0.8,
        physics_period_s=None,
        solve_on_write=False,
    ) as r:
        yield r


class WatchedMqttDevice(MqttDevice):
    """An ``MqttDevice`` that tells the test when something happened to it: a message handled
    (``handled``), a session with the broker begun or ended (``connects``, ``sessions_ended``).
    ``await dev.until(lambda: ...)`` wakes at each of those and returns once the condition
    holds: the test awaits the thing itself, never a sleep."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handled = 0
        self.sessions_ended = 0
        self._changed = asyncio.Event()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def handle(self, topic: str, payload: bytes) -> None:
        super().handle(topic, payload)
        self.handled += 1
        self._poke()

    async def _consume(self, client: Any, stop: asyncio.Event) -> None:
        self._poke()  # a session began: ``connects`` has just been counted
        try:
            await super()._consume(client, stop)
        finally:
            self.sessions_ended += 1
            self._poke()

    async def until(self, condition: Callable[[], bool], timeout_s: float = HANG_GUARD_S) -> None:
        async def wait() -> None:
            while not condition():
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout_s)


@contextlib.asynccontextmanager
async def serving(dev: MqttDevice) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``dev.serve(stop)`` as the daemon's task group does; on the way out set ``stop``
    and let it end on its own (cancelled only if it would not, so nothing is left behind)."""
    stop = asyncio.Event()
    task = asyncio.create_task(dev.serve(stop), name=f"test.mqtt-device.{dev.name}")
    try:
        yield task
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=HANG_GUARD_S)
        if not done:
            await cancel_and_wait([task])
        elif not task.cancelled():
            task.result()  # serve must end cleanly, not with an error


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
        self._server = server


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
