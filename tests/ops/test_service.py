"""`feederd run` as systemd runs it: sd_notify on a socket the test owns, SIGHUP, SIGTERM.

It starts on a config in the first format (flat ``host``/``port``/``unit`` per device), as an
upgraded edge box would, and is reloaded onto the same config in the current format.

How fast it stops is a benchmark figure; here it must announce STOPPING, log ``stopping`` and
exit 0 (within a generous hang guard)."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from ops_helpers import FEEDERD, GUARD_S, Daemon, daemon_toml

from hil import HilRig

pytestmark = pytest.mark.integration


async def _recv(sock: socket.socket, want: str, seen: list[str], wait_s: float = GUARD_S) -> str:
    """The next notification with a line ``want`` (or starting with it), within ``wait_s``."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(wait_s):
            while True:
                msg = (await loop.sock_recv(sock, 4096)).decode()
                seen.append(msg)
                lines = msg.splitlines()
                if want in lines or any(line.startswith(want) for line in lines):
                    return msg
    except TimeoutError:
        raise AssertionError(f"no {want!r} notification within {wait_s:g} s: {seen[-5:]}") from None


async def _status_with(sock: socket.socket, *texts: str, seen: list[str], cycles: int = 20) -> str:
    """The first STATUS=cycle notification that says every one of ``texts``, among the next
    ``cycles``."""
    for _ in range(cycles):
        msg = await _recv(sock, "STATUS=cycle", seen)
        if all(text in msg for text in texts):
            return msg
    raise AssertionError(f"{texts!r} in none of {cycles} cycles' STATUS: {seen[-3:]}")


async def test_sd_notify_sighup_reload_and_sigterm(rig: HilRig, tmp_path: Path) -> None:
    config = tmp_path / "feederd.toml"
    journal = tmp_path / "journal.sqlite"
    old_format = daemon_toml(rig, journal, legacy=True)
    assert "transport" not in old_format
    config.write_text(old_format)
    # the first format still passes `check`, which says how to write it now
    check = await asyncio.to_thread(
        subprocess.run,
        [FEEDERD, "check", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "note: devices[0], devices[1], devices[2] ...: the flat transport keys" in check.stdout
    assert "write a [devices.transport] table" in check.stdout

    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    seen: list[str] = []
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000"}
    try:
        async with Daemon(config, env=env) as daemon:
            ready = await _recv(sock, "READY=1", seen, 60)
            assert "STATUS=running svc" in ready
            # WATCHDOG only after a completed cycle, with a STATUS line per cycle
            await _recv(sock, "WATCHDOG=1", seen)
            status = await _recv(sock, "STATUS=cycle", seen)
            assert "limit 2000 kW" in status
            # every device answers over the transport the first format described, and the
            # dispatch is optimal (on the system clock a busy machine may make an interval
            # fall back: the line that says both is waited for, among the next 20)
            up = f"{len(rig.devices)} devices up"
            status = await _status_with(sock, "optimal, import", up, seen=seen)
            assert up in status

            # a bad config on SIGHUP is refused and the old one kept: the loop keeps cycling
            config.write_text(old_format.replace("interval_s = 0.5", "interval_s = -1"))
            daemon.signal(signal.SIGHUP)
            await _recv(sock, "RELOADING=1", seen)
            refused = await _recv(sock, "STATUS=reload refused", seen)
            assert "interval_s" in refused
            seen.clear()
            await _recv(sock, "WATCHDOG=1", seen)

            # a good config on SIGHUP is taken: the same devices in the current format, and a
            # new import limit that shows in STATUS
            new_format = daemon_toml(rig, journal)
            assert new_format.count('transport = { type = "tcp"') == len(rig.devices)
            config.write_text(
                new_format.replace("import_limit_kw = 2000.0", "import_limit_kw = 1900.0")
            )
            daemon.signal(signal.SIGHUP)
            await _recv(sock, "READY=1", seen)
            msg = await _status_with(sock, "limit 1900 kW", seen=seen)
            assert "limit 1900 kW" in msg
            assert up in await _status_with(sock, up, seen=seen)

            # SIGTERM: STOPPING, the `stopping` line, then exit 0
            daemon.signal(signal.SIGTERM)
            await _recv(sock, "STOPPING=1", seen)
            rc = await daemon.wait_exit("the exit after SIGTERM")
            assert rc == 0, daemon.stderr[-20:]
    finally:
        sock.close()
    assert daemon.events("stopping"), daemon.stderr[-20:]
    assert not any("Traceback" in line for line in daemon.stderr), daemon.stderr[-20:]
    assert daemon.events("reload_refused")
