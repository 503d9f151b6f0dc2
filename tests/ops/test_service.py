"""`feederd run` as systemd runs it: sd_notify on a socket the test owns, SIGHUP, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

from ops_helpers import FEEDERD, daemon_toml

from hil import HilRig


async def _recv(sock: socket.socket, want: str, wait_s: float, seen: list[str]) -> str:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(wait_s):
        while True:
            msg = (await loop.sock_recv(sock, 4096)).decode()
            seen.append(msg)
            if want in msg.splitlines() or any(line.startswith(want) for line in msg.splitlines()):
                return msg


async def test_sd_notify_sighup_reload_and_sigterm(rig: HilRig, tmp_path: Path) -> None:
    config = tmp_path / "feederd.toml"
    good = daemon_toml(rig, tmp_path / "journal.sqlite")
    config.write_text(good)
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    seen: list[str] = []
    proc = await asyncio.create_subprocess_exec(
        FEEDERD,
        "run",
        "--config",
        str(config),
        env={"NOTIFY_SOCKET": address, "PATH": "/usr/bin:/bin", "WATCHDOG_USEC": "10000000"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = await _recv(sock, "READY=1", 30, seen)
        assert "STATUS=running svc" in ready
        # WATCHDOG only after a completed cycle, with a STATUS line per cycle
        await _recv(sock, "WATCHDOG=1", 10, seen)
        status = await _recv(sock, "STATUS=cycle", 10, seen)
        assert "limit 2000 kW" in status

        # a bad config on SIGHUP is refused and the old one kept: the loop keeps cycling
        config.write_text(good.replace("interval_s = 0.5", "interval_s = -1"))
        proc.send_signal(signal.SIGHUP)
        await _recv(sock, "RELOADING=1", 5, seen)
        refused = await _recv(sock, "STATUS=reload refused", 5, seen)
        assert "interval_s" in refused
        seen.clear()
        await _recv(sock, "WATCHDOG=1", 5, seen)

        # a good config on SIGHUP is taken: the new import limit shows in STATUS
        config.write_text(good.replace("import_limit_kw = 2000.0", "import_limit_kw = 1900.0"))
        proc.send_signal(signal.SIGHUP)
        await _recv(sock, "READY=1", 10, seen)
        for _ in range(20):
            msg = await _recv(sock, "STATUS=cycle", 10, seen)
            if "limit 1900 kW" in msg:
                break
        assert "limit 1900 kW" in msg

        # SIGTERM: STOPPING, then exit 0 within 2 s
        loop = asyncio.get_running_loop()
        proc.send_signal(signal.SIGTERM)
        started = loop.time()
        await _recv(sock, "STOPPING=1", 2, seen)
        rc = await asyncio.wait_for(proc.wait(), 5)
        assert loop.time() - started < 2.0
        assert rc == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sock.close()
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert "Traceback" not in err
    assert "reload_refused" in err
