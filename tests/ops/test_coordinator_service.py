"""``feederd coordinate`` as systemd runs it: sd_notify on a socket the test owns (READY once
serving, WATCHDOG after every completed tick), its metrics endpoint, ``online`` retained on the
broker, SIGHUP with a bad fleet.toml refused and the running one kept, a good one taken, SIGTERM
ending in STOPPING, a clean ``online = false`` and exit 0. A real process on the real clock
(interval_s of half a second), waited on by condition within a hang guard."""

from __future__ import annotations

import asyncio
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from ops_helpers import GUARD_S, Feederd, free_port, mqtt_retained

pytestmark = pytest.mark.integration

ROOT = "svc-fleet"


def _toml(broker: int, metrics: int, *, interval_s: float = 0.5) -> str:
    return (
        f'name = "svc"\ntopic_root = "{ROOT}"\nfeeder_root = "svc-feeders"\n'
        f"interval_s = {interval_s}\n"
        '[journal]\npath = "journal.sqlite"\n'
        f'[mqtt]\nport = {broker}\nclient_id = "svc-coordinator"\nkeepalive_s = 5\n'
        f'[metrics]\naddress = "127.0.0.1"\nport = {metrics}\n'
        '[[feeders]]\nsite = "a"\nrating_kw = 1000.0\n'
        '[[feeders]]\nsite = "b"\nrating_kw = 1000.0\n'
    )


async def _recv(sock: socket.socket, want: str, seen: list[str]) -> str:
    """The next notification with a line starting with ``want``, within the hang guard."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(GUARD_S):
            while True:
                msg = (await loop.sock_recv(sock, 4096)).decode()
                seen.append(msg)
                if any(line.startswith(want) for line in msg.splitlines()):
                    return msg
    except TimeoutError:
        raise AssertionError(f"no {want!r} notification: {seen[-5:]}") from None


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


async def test_notify_metrics_reload_and_sigterm(broker: int, tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    metrics = free_port()
    good = _toml(broker, metrics)
    config.write_text(good)
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    seen: list[str] = []
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000"}
    try:
        async with Feederd("coordinate", "--config", str(config), env=env) as daemon:
            ready = await _recv(sock, "READY=1", seen)
            assert "STATUS=coordinating svc: 2 feeders" in ready
            await _recv(sock, "WATCHDOG=1", seen)  # after a completed tick
            status = await _recv(sock, "STATUS=tick", seen)
            assert "mqtt up" in status or "mqtt down" in status
            await daemon.wait_log("mqtt_connected")
            online = await asyncio.to_thread(mqtt_retained, broker, f"{ROOT}/online")
            assert online == "true"
            text = await asyncio.to_thread(_scrape, metrics)
            assert "feederd_fleet_mqtt_connected 1.0" in text
            assert 'feederd_fleet_feeders{state="up"}' in text

            # a bad fleet.toml on SIGHUP is refused and the old one kept: it keeps ticking
            config.write_text(
                good.replace(
                    'rating_kw = 1000.0\n[[feeders]]\nsite = "b"',
                    'rating_kw = 1000.0\n[[feeders]]\nsite = "a"',
                )
            )
            daemon.signal(signal.SIGHUP)
            await _recv(sock, "RELOADING=1", seen)
            refused = await _recv(sock, "STATUS=reload refused", seen)
            assert "feeders[1].site: site 'a' is listed twice" in refused
            seen.clear()
            await _recv(sock, "WATCHDOG=1", seen)

            # a good one is taken: a new generation, READY again, on the same endpoint
            config.write_text(good.replace('site = "b"', 'site = "c"'))
            daemon.signal(signal.SIGHUP)
            await _recv(sock, "READY=1", seen)
            await daemon.wait_log("reload")
            await _recv(sock, "WATCHDOG=1", seen)
            text = await asyncio.to_thread(_scrape, metrics)
            assert 'feederd_fleet_feeder_up{site="c"}' in text
            assert 'site="b"' not in text  # the new generation's metrics only

            # SIGTERM: STOPPING, a clean goodbye on the broker, exit 0
            daemon.signal(signal.SIGTERM)
            await _recv(sock, "STOPPING=1", seen)
            rc = await daemon.wait_exit("the exit after SIGTERM")
            assert rc == 0, daemon.stderr[-20:]
    finally:
        sock.close()
    assert daemon.events("stopping")
    assert daemon.events("reload_refused")
    assert not any("Traceback" in line for line in daemon.stderr), daemon.stderr[-20:]
    online = await asyncio.to_thread(mqtt_retained, broker, f"{ROOT}/online")
    assert online == "false"
