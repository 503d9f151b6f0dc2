"""Ops test helpers: free ports, the feederd executable and a config for the HIL rig, the
daemon as a child process with its log lines, mosquitto_pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.mosquitto import MOSQUITTO
from tests.support.net import free_port, wait_port

if TYPE_CHECKING:
    from hil import HilRig

__all__ = [
    "FEEDERD",
    "MOSQUITTO",
    "Daemon",
    "daemon_toml",
    "free_port",
    "mqtt_pub",
    "mqtt_retained",
    "wait_port",
]

FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"


def mqtt_pub(port: int, topic: str, payload: str, *opts: str) -> None:
    """Publish at QoS 1; ``opts`` are more mosquitto_pub options (``--cafile``, ``--cert``...)."""
    subprocess.run(
        [
            "mosquitto_pub",
            *opts,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ],
        check=True,
        timeout=10,
    )


def mqtt_retained(port: int, topic: str, *opts: str) -> str:
    """The retained message on ``topic`` (waits up to 3 s for one)."""
    out = subprocess.run(
        [
            "mosquitto_sub",
            *opts,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return out.stdout.strip()


def daemon_toml(
    rig: HilRig,
    journal: Path,
    *,
    site: str = "svc",
    interval_s: float = 0.5,
    revert_s: int = 10,
    poll_timeout_s: float = 0.2,
    extra: str = "",
) -> str:
    """A `feederd run` config for the HIL rig's devices; ``extra`` is TOML placed before the
    devices (top-level keys first, then tables such as ``[mqtt]``)."""
    lines = [
        f'site = "{site}"',
        f"interval_s = {interval_s}",
        extra.strip(),
        "[feeder]",
        'case = "builtin:case33bw"',
        "v_min_pu = 0.92",
        "[dr]",
        "import_limit_kw = 2000.0",
        "[poll]",
        f"timeout_s = {poll_timeout_s}",
        "[journal]",
        f'path = "{journal}"',
    ]
    if "[metrics]" not in extra:
        lines += ["[metrics]", "enabled = false"]
    for d in rig.devices:
        lines += [
            "[[devices]]",
            f'name = "{d.name}"',
            f'kind = "{d.kind}"',
            f"bus = {d.bus}",
            f'host = "{d.host}"',
            f"port = {d.port}",
            f"unit = {d.unit}",
        ]
        lines += (
            ["head = true"]
            if d.kind == "meter"
            else [f"rating_kw = {d.p_max_kw}", f"revert_s = {revert_s}"]
        )
        if d.kind == "battery":
            lines.append(f"energy_kwh = {d.energy_kwh}")
    return "\n".join(line for line in lines if line) + "\n"


class Daemon:
    """``feederd run --config PATH`` as a child process; its JSON log lines are collected in
    ``logs`` (and the raw stderr in ``stderr``) while it runs. ``async with`` stops it."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {"PATH": "/usr/bin:/bin", **(env or {})}
        self.logs: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Daemon:
        self.proc = await asyncio.create_subprocess_exec(
            FEEDERD,
            "run",
            "--config",
            str(self.config),
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stderr.append(line)
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    self.logs.append(doc)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [doc for doc in self.logs if doc.get("event") == name]

    async def wait_log(
        self, name: str, timeout_s: float = 15.0, *, after: int = 0
    ) -> dict[str, Any]:
        """The first log line ``event == name`` among ``logs[after:]``, waiting for it."""
        async with asyncio.timeout(timeout_s):
            while True:
                for doc in self.logs[after:]:
                    if doc.get("event") == name:
                        return doc
                if self.proc is not None and self.proc.returncode is not None:
                    raise AssertionError(f"feederd exited: {self.stderr[-20:]}")
                await asyncio.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
