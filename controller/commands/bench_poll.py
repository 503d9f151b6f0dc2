"""``feederd bench poll --devices N [--cycles C] --json``: one poll cycle over N Modbus devices.

Starts N simulated SunSpec PV inverters and a head meter in a separate process
(``controller.commands.rig.poll_fleet``, one port each), assembles the daemon from a config
(``Daemon.open``) and runs its own poll phase (``Controller.poll``: one task per device, the
poll deadline, health bookkeeping) for C cycles after one warm-up cycle
(discovery). Each inverter's cycle reads its measurements (103) and controls (123) in one
request. Prints one JSON object: ``devices``, ``cycles``, ``cycle_ms_median``, ``cycle_ms_p95``,
``cycle_ms_max``, ``first_cycle_ms`` (with discovery), ``requests_per_s``, ``devices_up``
(median), ``rss_mb`` (this process: the daemon's side only) and ``cpu_s_per_cycle``.
``--meters`` polls N smart meters along the feeder instead (model 203, 200 unit ids behind
each gateway port, ``--connections`` to each), one request per meter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from controller.commands.args import positive_int

HELP = "time one poll cycle over N simulated SunSpec inverters or meters (JSON figures)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=positive_int, default=1000, help="inverters (1000)")
    parser.add_argument(
        "--meters",
        action="store_true",
        help="the devices are smart meters along the feeder (model 203), 200 unit ids behind "
        "each gateway port, instead of inverters on a port each",
    )
    parser.add_argument(
        "--connections",
        type=positive_int,
        default=1,
        help="with --meters: parallel connections to each gateway (the transport's "
        "'connections', 1-16; default 1)",
    )
    parser.add_argument("--cycles", type=positive_int, default=10, help="timed cycles (10)")
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="per-request timeout, seconds (2)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (default)")


def _p95(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]
    )


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _config(
    meter_port: int, ports: list[int], timeout_s: float, *, meters: int = 0, connections: int = 1
) -> Any:
    from controller.config import parse_config  # noqa: PLC0415

    devices: list[dict[str, Any]] = [
        {
            "name": "head",
            "kind": "meter",
            "bus": 1,
            "transport": {"type": "tcp", "host": "127.0.0.1", "port": meter_port},
        }
    ]
    if meters:
        from controller.commands.rig.poll_fleet import METERS_PER_GATEWAY  # noqa: PLC0415

        per = METERS_PER_GATEWAY
        devices += [
            {
                "name": f"m{i}",
                "kind": "meter",
                "bus": 2 + i % 32,
                "transport": {
                    "type": "tcp",
                    "host": "127.0.0.1",
                    "port": ports[i // per],
                    "unit": i % per + 1,
                    "connections": connections,
                },
            }
            for i in range(meters)
        ]
        ports = []
    devices += [
        {
            "name": f"pv{i}",
            "kind": "pv",
            "bus": 2 + i % 32,
            "transport": {"type": "tcp", "host": "127.0.0.1", "port": port},
            "rating_kw": 100.0,
            "revert_s": 60,
        }
        for i, port in enumerate(ports)
    ]
    devices[0]["head"] = True
    data = {
        "site": "bench",
        "interval_s": 10.0,
        "feeder": {"case": "builtin:case33bw"},
        "poll": {"timeout_s": timeout_s, "deadline_fraction": 0.5},
        "metrics": {"enabled": False},
        "devices": devices,
    }
    return parse_config(data, source="<bench poll>", base_dir=Path.cwd())


def _start_fleet(n: int, kind: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "controller.commands.rig.poll_fleet", str(n), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


async def _bench(
    n: int, cycles: int, timeout_s: float, *, meters: bool, connections: int = 1
) -> dict[str, Any]:
    from controller.clock import SystemClock  # noqa: PLC0415
    from controller.daemon import Daemon  # noqa: PLC0415

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n + 256, hard), hard))
    rss_start = _rss_mb()
    fleet_proc = _start_fleet(n, "meters" if meters else "inverters")
    try:
        assert fleet_proc.stdout is not None
        started = time.perf_counter()
        line = await asyncio.to_thread(fleet_proc.stdout.readline)
        if not line:
            raise RuntimeError("the simulated fleet exited before listening")
        ports = json.loads(line)
        fleet_start_s = time.perf_counter() - started
        if meters:
            loaded = _config(
                ports["meter"], ports["gateways"], timeout_s, meters=n, connections=connections
            )
        else:
            loaded = _config(ports["meter"], ports["inverters"], timeout_s)
        async with Daemon.open(loaded, clock=SystemClock()) as daemon:
            ctl, links = daemon.controller, daemon.fleet.links
            t0 = time.perf_counter()
            await ctl.poll()  # the daemon's own poll phase
            first_ms = (time.perf_counter() - t0) * 1000.0
            requests_before = sum(link.stats.requests for link in links)
            cpu_before = time.process_time()
            times: list[float] = []
            up: list[int] = []
            for _ in range(cycles):
                t = time.perf_counter()
                snapshot = await ctl.poll()
                times.append((time.perf_counter() - t) * 1000.0)
                up.append(len(ctl.fleet) - len(snapshot.missing))
            cpu_s = time.process_time() - cpu_before
            requests = sum(link.stats.requests for link in links) - requests_before
            rss = _rss_mb()
    finally:
        if fleet_proc.stdin is not None:
            fleet_proc.stdin.close()
        try:
            await asyncio.to_thread(fleet_proc.wait, 10)
        except subprocess.TimeoutExpired:
            fleet_proc.kill()
    return {
        "devices": n + 1,
        ("meters" if meters else "inverters"): n,
        "cycles": cycles,
        "cycle_ms_median": round(statistics.median(times), 1),
        "cycle_ms_p95": round(_p95(times), 1),
        "cycle_ms_max": round(max(times), 1),
        "first_cycle_ms": round(first_ms, 1),
        "requests_per_cycle": round(requests / cycles, 1),
        "requests_per_s": round(requests / (sum(times) / 1000.0), 0),
        "devices_up_median": statistics.median(up),
        "cpu_s_per_cycle": round(cpu_s / cycles, 3),
        "rss_mb": round(rss, 1),
        "rss_mb_before_fleet": round(rss_start, 1),
        "fleet_start_s": round(fleet_start_s, 1),
        "cpu_count": os.cpu_count(),
    }


def run(args: argparse.Namespace) -> int:
    from controller.logs import configure_logging  # noqa: PLC0415

    configure_logging(level="warning")  # on stderr: stdout is the JSON alone
    result = asyncio.run(
        _bench(
            args.devices,
            args.cycles,
            args.timeout,
            meters=args.meters,
            connections=args.connections,
        )
    )
    print(json.dumps(result))
    return 0
