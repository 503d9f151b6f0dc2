"""How long one control interval takes on this machine: poll, solve, write.

Runs the real daemon (``Daemon.open``, as ``feederd run`` assembles it) against the HIL feeder
(IEEE 33-bus, 12 PV, 4 batteries, head meter; 17 Modbus TCP servers on 127.0.0.1, pandapower
physics in the same process) on the system clock, stepping the physics before each cycle, and
prints one JSON object of median and 95th-percentile milliseconds per phase. Only intervals
that dispatched are timed; the others are counted by status.

    .venv/bin/python benchmarks/cycle.py [--cycles N] [--import-limit-kw X]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from collections import Counter
from typing import Any

from controller.clock import SystemClock
from controller.commands.rig.config import rig_config
from controller.daemon import Daemon
from controller.records import CycleRecord
from hil import HilRig


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


async def bench(cycles: int, import_limit_kw: float) -> dict[str, Any]:
    clock = SystemClock()
    async with HilRig(
        monotonic=clock.monotonic,
        load_scale=lambda t: 1.0,
        pv_available_frac=lambda t: 0.8,
        physics_period_s=None,
        solve_on_write=False,
    ) as rig:
        loaded = rig_config(
            rig, overrides={"interval_s": 5.0, "dr": {"import_limit_kw": import_limit_kw}}
        )
        records: list[CycleRecord] = []
        async with Daemon.open(loaded, clock=clock, on_cycle=records.append) as daemon:
            await daemon.controller.cycle()  # warm-up: discovery of every device's model chain
            records.clear()
            for _ in range(cycles):
                await rig.step()
                await daemon.controller.cycle()
    timed = [r for r in records if r.status.dispatched]
    out: dict[str, Any] = {
        "cycles": cycles,
        "timed": len(timed),
        "devices": len(loaded.config.devices),
        "statuses": dict(Counter(r.status.value for r in records)),
    }
    for phase in ("poll", "solve", "write", "cycle"):
        values = [getattr(r, f"{phase}_ms") for r in timed]
        if values:
            out[f"{phase}_ms_median"] = round(statistics.median(values), 1)
            out[f"{phase}_ms_p95"] = round(_p95(values), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--import-limit-kw", type=float, default=2000.0)
    args = parser.parse_args()

    from controller.logs import configure_logging  # noqa: PLC0415

    configure_logging(level="error")
    print(json.dumps(asyncio.run(bench(args.cycles, args.import_limit_kw))))


if __name__ == "__main__":
    main()
