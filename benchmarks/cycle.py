"""How long one control interval takes on this machine: poll, solve, write.

Runs the real daemon's cycle against the HIL feeder (IEEE 33-bus, 12 PV, 4 batteries, head
meter; 17 Modbus TCP servers on 127.0.0.1, pandapower physics in the same process) and prints
one JSON object of median and 95th-percentile milliseconds per phase.

    .venv/bin/python benchmarks/cycle.py [--cycles N] [--import-limit-kw X]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from controller.clock import SystemClock
from controller.config import parse_config
from controller.daemon import Controller, CycleRecord
from hil import HilRig


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


async def bench(cycles: int, import_limit_kw: float) -> dict[str, Any]:
    async with HilRig(
        monotonic=time.monotonic,
        load_scale=lambda t: 1.0,
        pv_available_frac=lambda t: 0.8,
        physics_period_s=None,
    ) as rig:
        devices = rig.config_devices(revert_s=30)
        loaded = parse_config(
            {
                "site": "bench",
                "interval_s": 5.0,
                "feeder": {"case": "builtin:case33bw", "v_min_pu": 0.92},
                "dr": {"import_limit_kw": import_limit_kw},
                "metrics": {"enabled": False},
                "devices": devices,
            },
            source="<bench>",
            base_dir=Path.cwd(),
        )
        records: list[CycleRecord] = []
        ctl = Controller(loaded, clock=SystemClock(), on_cycle=records.append)
        try:
            await ctl.cycle()  # warm-up: discovery of every device's model chain
            records.clear()
            for _ in range(cycles):
                await ctl.cycle()
                await rig.step()
        finally:
            await ctl.close()
    out: dict[str, Any] = {"cycles": cycles, "devices": len(loaded.config.devices)}
    for phase in ("poll", "solve", "write", "cycle"):
        values = [getattr(r, f"{phase}_ms") for r in records]
        out[f"{phase}_ms_median"] = round(statistics.median(values), 1)
        out[f"{phase}_ms_p95"] = round(_p95(values), 1)
    out["statuses"] = sorted({r.status for r in records})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--import-limit-kw", type=float, default=2000.0)
    args = parser.parse_args()
    import logging  # noqa: PLC0415

    from controller.logs import configure_logging  # noqa: PLC0415

    configure_logging(level="error")
    logging.getLogger().setLevel(logging.ERROR)
    print(json.dumps(asyncio.run(bench(args.cycles, args.import_limit_kw))))


if __name__ == "__main__":
    main()
