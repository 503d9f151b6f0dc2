"""Ops test helpers: free ports, the feederd executable and a config for the HIL rig, feederd
as a child process with its output and log lines, mosquitto_pub/sub, and waiting for a
condition with a hang guard (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tests.support.mosquitto import MOSQUITTO
from tests.support.net import free_port, wait_port

if TYPE_CHECKING:
    from hil import HilRig

__all__ = [
    "FEEDERD",
    "GUARD_S",
    "MOSQUITTO",
    "Daemon",
    "Feederd",
    "RigClock",
    "daemon_toml",
    "eventually",
    "free_port",
    "mqtt_pub",
    "mqtt_retained",
    "poll_until",
    "wait_port",
]

FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"

GUARD_S = 20.0
"""The default hang guard: how long a wait for something that happens in well under a second
on an idle machine may take before the test fails (generous, for a busy 2-core box)."""


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = GUARD_S
) -> None:
    """Poll ``predicate`` (a function, sync or async) until it holds; fail with ``what`` once
    ``timeout_s`` has passed without it: a hang guard, not a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.05)


def poll_until(predicate: Callable[[], bool], what: str, timeout_s: float = GUARD_S) -> None:
    """``eventually`` for synchronous tests."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.1)


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
        timeout=30,
    )


def mqtt_retained(port: int, topic: str, *opts: str) -> str:
    """The retained message on ``topic`` ("" when there is none: mosquitto_sub gives up after
    3 s, which a retained message, delivered on subscribing, never needs)."""
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
        timeout=30,
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
    deadline_fraction: float = 0.4,
    extra: str = "",
    legacy: bool = False,
) -> str:
    """A `feederd run` config for the HIL rig's devices; ``extra`` is TOML placed before the
    devices (top-level keys first, then tables such as ``[mqtt]``). Each device's transport is
    a ``transport = { type = "tcp", ... }`` table; ``legacy`` writes the first format instead
    (flat ``host``/``port``/``unit``), which feederd still accepts."""
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
        f"deadline_fraction = {deadline_fraction}",
        "[journal]",
        f'path = "{journal}"',
    ]
    if "[metrics]" not in extra:
        lines += ["[metrics]", "enabled = false"]
    for d in rig.devices:
        lines += ["[[devices]]", f'name = "{d.name}"', f'kind = "{d.kind}"', f"bus = {d.bus}"]
        if legacy:
            lines += [f'host = "{d.host}"', f"port = {d.port}", f"unit = {d.unit}"]
        else:
            lines.append(
                f'transport = {{ type = "tcp", host = "{d.host}", port = {d.port},'
                f" unit = {d.unit} }}"
            )
        lines += (
            ["head = true"]
            if d.kind == "meter"
            else [f"rating_kw = {d.p_max_kw}", f"revert_s = {revert_s}"]
        )
        if d.kind == "battery":
            lines.append(f"energy_kwh = {d.energy_kwh}")
    return "\n".join(line for line in lines if line) + "\n"


class RigClock:
    """``time.monotonic`` plus an offset that only grows: the rig's time, which a test moves
    ahead (``advance``) once the daemon is gone, so a revert timer lapses without a wait."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go back")
        self.offset += seconds


class Feederd:
    """``feederd ARGS...`` as a child process: its stdout lines are collected in ``stdout``,
    its stderr lines in ``stderr`` and those that are JSON log lines in ``logs``, while it runs.
    ``async with`` stops it (SIGTERM, then SIGKILL after 10 s) and waits for the readers."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = {"PATH": "/usr/bin:/bin", **(env or {})}
        self.logs: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self.proc = await asyncio.create_subprocess_exec(
            FEEDERD,
            *self.args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(self.proc.stdout, self.stdout, parse=False)),
            asyncio.create_task(self._read(self.proc.stderr, self.stderr, parse=True)),
        ]
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
        await asyncio.wait_for(asyncio.gather(*self._readers), 10)

    async def _read(self, stream: asyncio.StreamReader, into: list[str], *, parse: bool) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            into.append(line)
            if parse:
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict):
                        self.logs.append(doc)

    @property
    def returncode(self) -> int | None:
        assert self.proc is not None
        return self.proc.returncode

    def events(self, name: str) -> list[dict[str, Any]]:
        return [doc for doc in self.logs if doc.get("event") == name]

    def _exited(self) -> AssertionError:
        return AssertionError(f"feederd exited ({self.returncode}): {self.stderr[-20:]}")

    async def wait_log(
        self, name: str, timeout_s: float = GUARD_S, *, after: int = 0
    ) -> dict[str, Any]:
        """The first log line ``event == name`` among ``logs[after:]``, waiting for it."""
        deadline = time.monotonic() + timeout_s
        while True:
            for doc in self.logs[after:]:
                if doc.get("event") == name:
                    return doc
            if self.proc is not None and self.proc.returncode is not None:
                await asyncio.wait_for(asyncio.gather(*self._readers), 10)
                for doc in self.logs[after:]:  # the readers may have been behind
                    if doc.get("event") == name:
                        return doc
                raise self._exited()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {name!r} log line within {timeout_s:g} s: {self.stderr[-20:]}"
                )
            await asyncio.sleep(0.05)

    async def wait_stdout(
        self, predicate: Callable[[list[str]], bool], what: str, timeout_s: float = GUARD_S
    ) -> None:
        """Until ``predicate(stdout lines so far)`` holds (fails if feederd exits first)."""

        def check() -> bool:
            if predicate(self.stdout):
                return True
            if self.returncode is not None:
                raise self._exited()
            return False

        await eventually(check, what, timeout_s)

    async def wait_exit(self, what: str, timeout_s: float = GUARD_S) -> int:
        """The exit status, once feederd has exited and its output is read; ``what`` says
        what the test was waiting for when it did not (a hang guard)."""
        assert self.proc is not None
        try:
            rc = await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            raise AssertionError(
                f"feederd still running after {timeout_s:g} s: {what}; {self.stderr[-20:]}"
            ) from None
        await asyncio.wait_for(asyncio.gather(*self._readers), 10)
        return rc

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


class Daemon(Feederd):
    """``feederd run --config PATH`` as a child process (see ``Feederd``)."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        super().__init__("run", "--config", str(config), env=env)
        self.config = config


def start_prometheus(
    prometheus: str, workdir: Path, *, job: str, target_port: int, rules: Path, port: int
) -> subprocess.Popen[bytes]:
    """A real Prometheus on 127.0.0.1:``port`` scraping 127.0.0.1:``target_port`` every second
    with the alert rules ``rules`` (copied into ``workdir``), ready when returned (its port
    opens before its TSDB is: 503 until then). The caller stops it."""
    shutil.copy(rules, workdir / rules.name)
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{rules.name}]\n"
        f"scrape_configs:\n  - job_name: {job}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    prom = subprocess.Popen(
        [
            prometheus,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = f"http://127.0.0.1:{port}/-/ready"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(ready, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        poll_until(answers, f"Prometheus ready at {ready}", 60)
    except BaseException:
        prom.kill()
        prom.wait()
        raise
    return prom
