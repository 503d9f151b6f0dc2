"""The simulated fleet ``feederd bench poll`` starts in its own process.

``python -m controller.commands.rig.poll_fleet N`` serves N simulated SunSpec PV inverters
(``hil.SimInverter``, models 1, 103, 120, 123), each on its own port of 127.0.0.1 as if each
had its own address, plus one feeder-head meter, with the HIL's pymodbus servers. It prints one
JSON line ``{"meter": port, "inverters": [port, ...]}`` when every server listens, and exits
when its standard input closes (so it never outlives the benchmark).

``python -m controller.commands.rig.poll_fleet N meters`` serves N smart meters (model 203)
instead, ``METERS_PER_GATEWAY`` unit ids behind each port as behind a meter gateway, and prints
``{"meter": port, "gateways": [port, ...]}``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys

from hil.server import SunSpecServer
from hil.sim_devices import SimInverter, SimMeter

RATING_KW = 100.0
METERS_PER_GATEWAY = 200
"""Unit ids behind one gateway port (Modbus allows 247)."""


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def _serve(n: int, kind: str) -> None:
    _raise_fd_limit(3 * n + 256)
    meter = SunSpecServer(SimMeter("head", p_max_kw=50_000.0))
    await meter.start()
    servers = [meter]
    ports: list[int] = []
    if kind == "meters":
        for first in range(0, n, METERS_PER_GATEWAY):
            units = {
                u: SimMeter(f"m{first + u}", bus=2 + (first + u) % 32, p_max_kw=500.0)
                for u in range(1, min(METERS_PER_GATEWAY, n - first) + 1)
            }
            server = SunSpecServer(units)
            await server.start()
            servers.append(server)
            ports.append(server.port)
    else:
        for i in range(n):
            sim = SimInverter(f"pv{i}", 2 + i % 32, RATING_KW, available_kw=0.6 * RATING_KW)
            server = SunSpecServer(sim)
            await server.start()
            servers.append(server)
            ports.append(server.port)
    key = "gateways" if kind == "meters" else "inverters"
    print(json.dumps({"meter": meter.port, key: ports}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes our stdin
    for server in servers:
        await server.stop()


def main() -> None:
    asyncio.run(_serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "inverters"))


if __name__ == "__main__":
    main()
