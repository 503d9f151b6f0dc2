"""``feederd demo``: the real daemon against the built-in HIL feeder, in one command.

The IEEE 33-bus feeder with PV at a dozen buses, four batteries and a SunSpec head meter is
served on 127.0.0.1 by ``hil`` (pandapower physics behind pymodbus servers); the controller
talks to it over Modbus TCP exactly as it would to a substation. A cloud passes over the PV
in the middle of the run. One readable line per interval, a summary at the end.
"""

from __future__ import annotations

import asyncio
import math
import signal
import ssl
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from controller.clock import SystemClock
from controller.config import LoadedConfig, parse_config
from controller.daemon import Controller, CycleRecord
from controller.dr import MqttSettings, parse_mqtt_url
from controller.dr.runtime import DrRuntime
from controller.logs import configure_logging
from controller.metrics import Metrics
from hil import HilRig

__all__ = ["DEFAULT_IMPORT_LIMIT_KW", "DemoOptions", "demo_config", "run_demo"]

DEFAULT_IMPORT_LIMIT_KW = 2000.0
COMPLIANCE_TOLERANCE = 0.02


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    duration_s: float = 60.0
    import_limit_kw: float | None = None
    export_limit_kw: float | None = None
    interval_s: float = 2.0
    metrics_port: int | None = None
    log_level: str = "warning"
    mqtt_url: str | None = None  # mqtt://host:port: DR events in, status and telemetry out
    journal_path: str | None = None
    site: str = "demo"


def demo_config(rig: HilRig, opts: DemoOptions) -> LoadedConfig:
    """The config a commissioning engineer would write for the rig's devices."""
    devices = rig.config_devices(revert_s=max(30, math.ceil(10 * opts.interval_s)))
    import_limit = opts.import_limit_kw
    if import_limit is None and opts.export_limit_kw is None:
        import_limit = DEFAULT_IMPORT_LIMIT_KW
    dr: dict[str, Any] = {}
    if import_limit is not None:
        dr["import_limit_kw"] = import_limit
    if opts.export_limit_kw is not None:
        dr["export_limit_kw"] = opts.export_limit_kw
    data = {
        "site": opts.site,
        "interval_s": opts.interval_s,
        "feeder": {"case": "builtin:case33bw", "v_min_pu": 0.92, "v_max_pu": 1.05},
        "dr": dr,
        "poll": {"timeout_s": min(1.0, opts.interval_s / 4)},
        "metrics": {"enabled": opts.metrics_port is not None, "port": opts.metrics_port or 0},
        "devices": devices,
    }
    return parse_config(data, source="<demo>", base_dir=Path.cwd())


def _mqtt(opts: DemoOptions) -> MqttSettings | None:
    if opts.mqtt_url is None:
        return None
    host, port, tls = parse_mqtt_url(opts.mqtt_url)
    return MqttSettings(
        host=host,
        port=port,
        topic_root=f"feederd/{opts.site}",
        tls=ssl.create_default_context() if tls else None,
        client_id=f"feederd-{opts.site}",
    )


def cloud(t_s: float, duration_s: float) -> float:
    """PV availability: 80% of rating, dipping to 50% while a cloud passes mid-run."""
    start, end = 0.45 * duration_s, 0.65 * duration_s
    if start <= t_s <= end:
        return 0.5
    return 0.8


@dataclass(slots=True)
class _Summary:
    records: list[CycleRecord] = field(default_factory=list)
    measured_kw: list[float] = field(default_factory=list)


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "   n/a" if value is None else f"{value:{spec}}{unit}"


def _line(
    rec: CycleRecord, measured_kw: float, t0: float, batteries: frozenset[str], controlled: bool
) -> str:
    limit = rec.import_limit_kw
    battery = sum(v for k, v in rec.setpoints_kw.items() if k in batteries)
    flag = ""
    if not controlled:
        flag = "  (before control)"
    elif limit is not None and measured_kw > limit * (1 + COMPLIANCE_TOLERANCE):
        flag = "  over limit"
    return (
        f"t={rec.at_s - t0:6.1f}s  import {measured_kw:7.1f} kW"
        f"  limit {_fmt(limit, '6.0f')} kW"
        f"  losses {_fmt(rec.losses_kw, '6.1f')} kW"
        f"  curtailed {_fmt(rec.curtailed_kw, '6.1f')} kW"
        f"  battery {battery:+7.1f} kW"
        f"  Vmin {_fmt(rec.v_min_pu, '.4f')} pu"
        f"  [{rec.status}, {rec.devices_up} up, cycle {rec.cycle_ms:.0f} ms]{flag}"
    )


def run_demo(opts: DemoOptions, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    configure_logging(level=opts.log_level)
    return asyncio.run(_demo(opts, stream))


async def _demo(opts: DemoOptions, out: TextIO) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with HilRig(
        time_fn=time.monotonic,
        # t is seconds since the rig started: a slow load swing and a passing cloud
        load_scale=lambda t: 1.0 + 0.03 * math.sin(2 * math.pi * t / 600.0),
        pv_available_frac=lambda t: cloud(t, opts.duration_s),
    ) as rig:
        loaded = demo_config(rig, opts)
        metrics = Metrics()
        if opts.metrics_port is not None:
            port = metrics.serve("127.0.0.1", opts.metrics_port)
            print(f"metrics on http://127.0.0.1:{port}/metrics", file=out)
        summary = _Summary()
        batteries = frozenset(d.name for d in rig.devices if d.kind == "battery")
        clock = SystemClock()
        t0 = clock.monotonic()

        def on_cycle(rec: CycleRecord) -> None:
            # what the head meter measured at this interval's poll (the physics, over Modbus),
            # i.e. the result of the previous interval's setpoints
            measured = rec.import_kw if rec.import_kw is not None else math.nan
            controlled = any(r.setpoints_kw for r in summary.records)
            summary.records.append(rec)
            summary.measured_kw.append(measured)
            print(_line(rec, measured, t0, batteries, controlled), file=out, flush=True)

        dr = DrRuntime.open(
            loaded.config,
            clock=clock,
            metrics=metrics,
            mqtt=_mqtt(opts),
            journal_path=opts.journal_path,
        )
        controller = Controller(
            loaded,
            clock=clock,
            metrics=metrics,
            on_cycle=on_cycle,
            journal=dr.journal,
            dr=dr.service,
        )
        intake = asyncio.create_task(dr.run(stop), name=f"feederd[{opts.site}].mqtt")
        if dr.intake is not None:
            print(f"DR events on {dr.intake.settings.event_topic}", file=out, flush=True)
        n_pv = sum(1 for d in rig.devices if d.kind == "pv")
        n_bat = sum(1 for d in rig.devices if d.kind == "battery")
        print(
            f"feederd demo: IEEE 33-bus feeder, {n_pv} PV inverters, {n_bat} batteries, "
            f"head meter; interval {opts.interval_s:g} s, duration {opts.duration_s:g} s, "
            f"import limit {_fmt(controller.limits.import_kw, '.0f')} kW",
            file=out,
            flush=True,
        )
        loop.call_later(opts.duration_s, stop.set)
        try:
            await controller.run(stop)
        finally:
            stop.set()
            await asyncio.wait({intake}, timeout=1.0)
            intake.cancel()
            await controller.close()
            metrics.shutdown()
            dr.close()
    _print_summary(summary, out)
    return 0


def _print_summary(s: _Summary, out: TextIO) -> None:
    recs = s.records
    if not recs:
        print("no interval completed", file=out)
        return
    # an interval's measurement shows the previous interval's setpoints at work
    limited = [
        (r.import_limit_kw, m)
        for prev, r, m in zip(recs, recs[1:], s.measured_kw[1:], strict=False)
        if r.import_limit_kw is not None and prev.setpoints_kw and not math.isnan(m)
    ]
    within = sum(1 for limit, m in limited if m <= limit * (1 + COMPLIANCE_TOLERANCE))
    valid = [m for m in s.measured_kw if not math.isnan(m)] or [math.nan]
    print("\nsummary", file=out)
    print(
        f"  intervals            {len(recs)} ({sum(1 for r in recs if r.status == 'optimal')} optimal)",
        file=out,
    )
    if limited:
        print(f"  within limit +2%     {within}/{len(limited)} controlled intervals", file=out)
    print(
        f"  head import          min {min(valid):.1f} / max {max(valid):.1f} kW",
        file=out,
    )
    for label, values in (
        ("cycle", [r.cycle_ms for r in recs]),
        ("poll", [r.poll_ms for r in recs]),
        ("solve", [r.solve_ms for r in recs if r.solve_ms]),
        ("write", [r.write_ms for r in recs if r.write_ms]),
    ):
        if values:
            print(
                f"  {label:<6} ms           median {statistics.median(values):.1f}, max {max(values):.1f}",
                file=out,
            )
