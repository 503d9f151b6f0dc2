"""A real Mosquitto on free loopback ports, configured by the test (listeners, TLS, passwords)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.support.net import free_port

__all__ = ["MOSQUITTO", "Mosquitto"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    """``listeners`` is mosquitto.conf text in which ``{0}``, ``{1}``, ... are free ports
    (``ports`` of them; ``self.port`` is the first); the default is one anonymous listener.
    ``stop``/``start`` to test reconnects, ``reload`` (SIGHUP) to re-read password files."""

    def __init__(self, workdir: Path, listeners: str | None = None, *, ports: int = 1) -> None:
        self.ports = [free_port() for _ in range(ports)]
        self.port = self.ports[0]
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        body = listeners or "listener {0} 127.0.0.1\nallow_anonymous true\n"
        # `user root`: as root, read the test's files instead of dropping to `mosquitto`
        self.conf.write_text(
            f"user root\npersistence false\nlog_dest file {self.log}\n" + body.format(*self.ports)
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        if not Path(MOSQUITTO).exists():
            raise RuntimeError("mosquitto is not installed: apt-get install -y mosquitto")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", self.ports[-1])
                w.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}")

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.proc = None
