"""``feederd demo``: the real daemon against the built-in HIL feeder, in one command.

The IEEE 33-bus feeder with PV at a dozen buses, four batteries and a SunSpec head meter is
served on 127.0.0.1 by ``hil`` (pandapower physics behind pymodbus servers); the daemon
(``Daemon.open``, as ``feederd run`` assembles it) talks to it over Modbus TCP exactly as it
would to a substation. A cloud passes over the PV in the middle of the run. The feeder is not
the case file: each bus follows its own customers, the lines differ from the case by up to
12 %, meters have an accuracy class, and a smart meter at every load bus (behind one Modbus
gateway) lets the daemon estimate the state (``--uniform``: the case file's feeder, no bus
meters). One readable line per interval, a summary at the end.

In real time by default (the rig's physics ticks on its own, the daemon on its interval); with
``simulated`` the daemon and the rig share a simulated clock and the run goes as fast as the
machine allows, interval by interval, with the same lines and summary.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import ssl
import statistics
import sys
from dataclasses import dataclass, field
from typing import TextIO

from controller.clock import Clock, FakeClock, SystemClock
from controller.commands.rig.config import rig_config
from controller.config import LoadedConfig
from controller.daemon import Daemon
from controller.dr.intake import MqttSettings, parse_mqtt_url
from controller.logs import configure_logging
from controller.metrics import Metrics
from controller.records import COMPLIANCE_TOLERANCE, CycleRecord, CycleStatus, within_limits
from controller.signals import Signals
from hil import HilRig, RigVariation

__all__ = ["DEFAULT_IMPORT_LIMIT_KW", "DemoOptions", "demo_config", "run_demo"]

DEFAULT_IMPORT_LIMIT_KW = 2000.0


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
    simulated: bool = False
    uniform: bool = False  # the rig as the case file has it: no variation, no bus meters


def demo_config(rig: HilRig, opts: DemoOptions) -> LoadedConfig:
    """The config a commissioning engineer would write for the rig's devices."""
    import_limit = opts.import_limit_kw
    if import_limit is None and opts.export_limit_kw is None:
        import_limit = DEFAULT_IMPORT_LIMIT_KW
    dr: dict[str, float] = {}
    if import_limit is not None:
        dr["import_limit_kw"] = import_limit
    if opts.export_limit_kw is not None:
        dr["export_limit_kw"] = opts.export_limit_kw
    overrides = {
        "interval_s": opts.interval_s,
        "dr": dr,
        "poll": {"timeout_s": min(1.0, opts.interval_s * 0.4)},
    }
    return rig_config(rig, overrides=overrides, site=opts.site, source="<demo>")


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


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "   n/a" if value is None else f"{value:{spec}}{unit}"


def _line(rec: CycleRecord, t0: float, batteries: frozenset[str], controlled: bool) -> str:
    limit = rec.import_limit_kw
    battery = sum(v for k, v in rec.setpoints_kw.items() if k in batteries)
    flag = ""
    if not controlled:
        flag = "  (before control)"
    elif rec.compliant is False:
        flag = "  over limit"
    return (
        f"t={rec.at_s - t0:6.1f}s  import {_fmt(rec.import_kw, '7.1f')} kW"
        f"  limit {_fmt(limit, '6.0f')} kW"
        f"  losses {_fmt(rec.losses_kw, '6.1f')} kW"
        f"  curtailed {_fmt(rec.curtailed_kw, '6.1f')} kW"
        f"  battery {battery:+7.1f} kW"
        f"  Vmin {_fmt(rec.v_min_pu, '.4f')} pu"
        f"  [{rec.status}, {rec.devices_up} up, cycle {rec.cycle_ms:.0f} ms]{flag}"
    )


def run_demo(opts: DemoOptions, out: TextIO | None = None) -> int:
    configure_logging(level=opts.log_level)
    return asyncio.run(_demo(opts, out or sys.stdout))


async def _demo(opts: DemoOptions, out: TextIO) -> int:
    clock: Clock = FakeClock() if opts.simulated else SystemClock()
    summary = _Summary()
    with Signals(reload=False) as signals:
        async with HilRig(
            monotonic=clock.monotonic,
            # t is seconds since the rig started: a slow load swing and a passing cloud
            load_scale=lambda t: 1.0 + 0.03 * math.sin(2 * math.pi * t / 600.0),
            pv_available_frac=lambda t: cloud(t, opts.duration_s),
            physics_period_s=None if opts.simulated else 0.5,
            solve_on_write=not opts.simulated,
            now=clock.now,
            variation=None if opts.uniform else RigVariation(seed=1),
            meter_buses="none" if opts.uniform else "all",
        ) as rig:
            loaded = demo_config(rig, opts)
            metrics = Metrics()
            try:
                if opts.metrics_port is not None:
                    port = metrics.serve("127.0.0.1", opts.metrics_port)
                    print(f"metrics on http://127.0.0.1:{port}/metrics", file=out)
                batteries = frozenset(d.name for d in rig.devices if d.kind == "battery")
                t0 = clock.monotonic()

                def on_cycle(rec: CycleRecord) -> None:
                    # the head meter's reading at this interval's poll (the physics, over
                    # Modbus): the result of the previous interval's setpoints
                    controlled = any(r.setpoints_kw for r in summary.records)
                    summary.records.append(rec)
                    print(_line(rec, t0, batteries, controlled), file=out, flush=True)

                async with Daemon.open(
                    loaded,
                    clock=clock,
                    metrics=metrics,
                    mqtt=_mqtt(opts),
                    journal_path=opts.journal_path,
                    on_cycle=on_cycle,
                ) as daemon:
                    if daemon.intake is not None:
                        topic = daemon.intake.settings.event_topic
                        print(f"DR events on {topic}", file=out, flush=True)
                    _header(rig, opts, daemon, out)
                    if isinstance(clock, FakeClock):
                        await _simulated(daemon, rig, clock, opts, signals.stop)
                    else:
                        asyncio.get_running_loop().call_later(opts.duration_s, signals.stop.set)
                        await daemon.run(signals.stop)
            finally:
                metrics.shutdown()
    _print_summary(summary, out)
    return 0


def _header(rig: HilRig, opts: DemoOptions, daemon: Daemon, out: TextIO) -> None:
    n_pv = sum(1 for d in rig.devices if d.kind == "pv")
    n_bat = sum(1 for d in rig.devices if d.kind == "battery")
    clock = "simulated time" if opts.simulated else "real time"
    print(
        f"feederd demo: IEEE 33-bus feeder, {n_pv} PV inverters, {n_bat} batteries, "
        f"head meter; interval {opts.interval_s:g} s, duration {opts.duration_s:g} s "
        f"({clock}), import limit {_fmt(daemon.controller.limits.import_kw, '.0f')} kW",
        file=out,
        flush=True,
    )


async def _simulated(
    daemon: Daemon, rig: HilRig, clock: FakeClock, opts: DemoOptions, stop: asyncio.Event
) -> None:
    """Interval by interval on the shared clock: the physics at the tick, then one cycle."""
    for _ in range(math.floor(opts.duration_s / opts.interval_s + 1e-9)):
        if stop.is_set():
            break
        await rig.step()
        await daemon.controller.cycle()
        clock.advance(opts.interval_s)


def _print_summary(s: _Summary, out: TextIO) -> None:
    recs = s.records
    if not recs:
        print("no interval completed", file=out)
        return
    # an interval's measurement shows the previous interval's setpoints at work
    limited = [
        r
        for prev, r in itertools.pairwise(recs)
        if r.import_limit_kw is not None and prev.setpoints_kw and r.import_kw is not None
    ]
    within = sum(
        1
        for r in limited
        if r.import_kw is not None and within_limits(r.import_kw, import_limit_kw=r.import_limit_kw)
    )
    measured = [r.import_kw for r in recs if r.import_kw is not None] or [math.nan]
    optimal = sum(1 for r in recs if r.status is CycleStatus.OPTIMAL)
    pct = f"{100 * COMPLIANCE_TOLERANCE:g}%"
    print("\nsummary", file=out)
    print(f"  intervals            {len(recs)} ({optimal} optimal)", file=out)
    if limited:
        print(f"  within limit +{pct}     {within}/{len(limited)} controlled intervals", file=out)
    print(f"  head import          min {min(measured):.1f} / max {max(measured):.1f} kW", file=out)
    for label, values in (
        ("cycle", [r.cycle_ms for r in recs]),
        ("poll", [r.poll_ms for r in recs]),
        ("solve", [r.solve_ms for r in recs if r.solve_ms]),
        ("write", [r.write_ms for r in recs if r.write_ms]),
    ):
        if values:
            print(
                f"  {label:<6} ms           median {statistics.median(values):.1f},"
                f" max {max(values):.1f}",
                file=out,
            )
