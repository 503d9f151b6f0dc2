"""A real Mosquitto broker on 127.0.0.1 that a scenario can stop and start (a broker outage).

``async with MosquittoBroker() as broker`` starts ``mosquitto`` on a free port with a config of
its own (anonymous, loopback only, persistence in a temporary folder so sessions and queued
QoS 1 messages survive a restart); ``await broker.stop()`` and ``await broker.start()`` take it
down and bring it back on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["BrokerError", "MosquittoBroker", "find_mosquitto"]

_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(RuntimeError):
    """Mosquitto is missing or does not come up."""


def find_mosquitto() -> str | None:
    """The mosquitto executable, or ``None`` when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((c for c in _CANDIDATES if Path(c).is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoBroker:
    """One mosquitto process; see the module docstring."""

    def __init__(self, *, port: int | None = None, extra_config: str = "") -> None:
        exe = find_mosquitto()
        if exe is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self.exe = exe
        self.host = "127.0.0.1"
        self._dir = tempfile.TemporaryDirectory(prefix="feederd-broker-")
        self._conf = Path(self._dir.name) / "mosquitto.conf"
        self._proc: asyncio.subprocess.Process | None = None
        self._extra = extra_config  # more mosquitto.conf lines (e.g. max_queued_messages 0)
        self._chosen = port is None  # a port of our choosing may be chosen again
        self._started = False
        self._listen_on(port or _free_port())

    def _listen_on(self, port: int) -> None:
        self.port = port
        self._conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self._dir.name}/\n"
            "autosave_interval 1\n" + self._extra,
            encoding="utf-8",
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start mosquitto and wait until it listens. The first start of a broker whose port
        was chosen here tries other ports if another program took it meanwhile; a restart
        keeps its port (the clients reconnect to it)."""
        if self.running:
            return
        for _ in range(5):
            if await self._spawn(timeout_s):
                self._started = True
                return
            if self._started or not self._chosen:
                break
            self._listen_on(_free_port())
        raise BrokerError(f"mosquitto could not listen on {self.host}:{self.port}")

    async def _spawn(self, timeout_s: float) -> bool:
        proc = await asyncio.create_subprocess_exec(
            self.exe,
            "-c",
            str(self._conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._proc = proc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if proc.returncode is not None:  # e.g. the port is taken
                self._proc = None
                return False
            try:
                _r, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            await asyncio.sleep(0.05)  # still ours: a program that answered instead exits now
            if proc.returncode is None:
                return True
            self._proc = None
            return False
        await self.stop()
        return False

    async def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s); its clients lose their sessions'
        connections at once."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def __aenter__(self) -> MosquittoBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        self._dir.cleanup()
