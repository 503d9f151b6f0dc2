"""``feederd sim``: HIL scenarios in simulated time, or the simulated devices on their own.

``feederd sim --scenario PATH [--out DIR]`` runs the real daemon against the rig through a
scenario (see controller/commands/rig/scenario.py) and writes ``intervals.csv``, ``kpis.json``, ``feederd.log`` and
PNG plots into DIR. PATH may also name a bundled scenario (``evening_peak``, ...,
``announced_evening_event``, ``two_evening_caps``). ``--control horizon_h=0`` (any key of
``[control]``) runs it with that setting. Besides the run's KPIs it prints each DR event's
(compliance, energy over, the batteries' state of charge at its start) and, over days or with
a tariff, each day's (compliance, energy over, undervoltage, energy cost, forecast error).

``feederd sim --serve [--case FILE.m] [--base-port N]`` starts only the simulated devices (real
time, the day's load and sun at the wall clock's hour), and once every one answers prints one
line ``{"devices": [{"name", "kind", "host", "port", "unit"}, ...]}``; it serves until SIGINT or
SIGTERM. Besides the SunSpec devices there are controllable loads (kind ``load``, the
``builtin:controllable_load`` register map, 100 kW each, at buses 12 and 28 of the 33-bus case).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from controller.commands.args import port

HELP = "run a HIL scenario in simulated time, or serve the simulated devices"

_KPI_ORDER = (
    ("dr_compliance", "DR compliance"),
    ("time_to_comply_s", "time to comply, s"),
    ("energy_over_limit_kwh", "energy over limit, kWh"),
    ("worst_overshoot_pct", "worst over limit after 2 intervals, %"),
    ("intervals_over_after_first", "intervals over limit +2% after the first"),
    ("energy_over_after_first_kwh", "energy over limit after the first, kWh"),
    ("voltage_violation_bus_intervals", "voltage violations, bus-intervals"),
    ("curtailed_kwh", "curtailed, kWh"),
    ("curtailed_outside_events_kwh", "curtailed outside DR events, kWh"),
    ("pv_reactive_kvarh", "PV reactive, kvarh"),
    ("losses_kwh", "losses, kWh"),
    ("battery_discharged_kwh", "battery discharged, kWh"),
    ("device_missed_intervals", "device-intervals missed"),
)


def compression(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be within (0, 1], got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--scenario", metavar="PATH", help="scenario TOML file, or a bundled scenario's name"
    )
    mode.add_argument("--serve", action="store_true", help="serve the simulated devices only")
    parser.add_argument("--out", metavar="DIR", help="results folder (default ./sim-NAME)")
    parser.add_argument(
        "--compress",
        type=compression,
        default=1.0,
        metavar="F",
        help="scale the scenario's timeline by F (0 < F <= 1), e.g. 0.25 for a quick run",
    )
    parser.add_argument(
        "--uniform",
        action="store_true",
        help="with --scenario: the rig without its variation (every bus load the case's times "
        "one factor, the case's impedances, exact meters), for comparison",
    )
    parser.add_argument(
        "--estimation",
        choices=("on", "off"),
        default=None,
        help="with --scenario: state estimation from the meters along the feeder on or off "
        "(off: the head meter's one-factor picture); default: the scenario's config",
    )
    parser.add_argument(
        "--control",
        action="append",
        type=control_setting,
        default=[],
        metavar="KEY=VALUE",
        help="with --scenario: set a key of the controller's [control] table for this run "
        "(repeatable), e.g. --control reactive_power=false --control firm_limits=false",
    )
    parser.add_argument("--case", metavar="FILE.m", help="with --serve: a MATPOWER case")
    parser.add_argument(
        "--base-port",
        type=port,
        default=None,
        metavar="N",
        help="with --serve: devices on N, N+1, ... (default: free ports)",
    )
    parser.add_argument(
        "--pv-model",
        type=int,
        choices=(123, 704),
        default=123,
        help="with --serve: the PV inverters' control model (123: models 1/103/120/123; "
        "704: the 700-series chain 1/701/702/704)",
    )


def control_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a TOML value (``true``, ``0.5``, ``"x"``) for ``--control``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. firm_limits=false")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        raise argparse.ArgumentTypeError(
            f'{text!r}: {value.strip()!r} is not a TOML value (true, false, a number, "text")'
        ) from None
    return key, parsed


def run(args: argparse.Namespace) -> int:
    from controller.cli import UsageError  # noqa: PLC0415 (the CLI imports this module)

    if args.serve:
        if (
            args.out is not None
            or args.compress != 1.0
            or args.uniform
            or args.estimation
            or args.control
        ):
            raise UsageError(
                "--out, --compress, --uniform, --estimation and --control go with --scenario, "
                "not --serve"
            )
        return _serve(args.case, args.base_port, args.pv_model, sys.stdout)
    if args.case is not None or args.base_port is not None or args.pv_model != 123:
        raise UsageError(
            "--case, --base-port and --pv-model go with --serve (a scenario names its case)"
        )
    return _scenario(
        args.scenario,
        args.out,
        args.compress,
        sys.stdout,
        uniform=args.uniform,
        estimation=args.estimation,
        control=dict(args.control),
    )


def _scenario_path(text: str) -> Path:
    from hil.scenario import ALL_SCENARIOS, bundled_scenario  # noqa: PLC0415

    path = Path(text)
    if not path.is_file() and text in ALL_SCENARIOS:
        return bundled_scenario(text)
    return path


def _scenario(
    text: str,
    out: str | None,
    compress: float,
    stream: TextIO,
    *,
    uniform: bool = False,
    estimation: str | None = None,
    control: dict[str, Any] | None = None,
) -> int:
    from controller.cli import UsageError  # noqa: PLC0415
    from controller.commands.rig.counterfactual import journaled, remove_journal  # noqa: PLC0415
    from controller.commands.rig.scenario import run_scenario, write_results  # noqa: PLC0415
    from controller.logs import configure_logging  # noqa: PLC0415
    from hil.scenario import ScenarioError, load_scenario  # noqa: PLC0415

    path = _scenario_path(text)
    try:
        scenario = load_scenario(path)
    except ScenarioError as err:
        raise UsageError(str(err)) from None
    if compress != 1.0:
        scenario = scenario.compressed(compress)
    scenario = scenario.variant(
        uniform=uniform,
        estimation=None if estimation is None else estimation == "on",
        control=control,
    )
    out_dir = Path(out) if out is not None else Path(f"sim-{scenario.name}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {out_dir}: cannot create folder: {err.strerror or err}") from None
    journal: Path | None = None
    if not (scenario.controller.get("journal") or {}).get("path"):
        # the daemon's journal beside the results: `feederd report --journal ... --event ID`
        journal = out_dir / "journal.sqlite"
        remove_journal(journal)
        scenario = journaled(scenario, journal)
    n = int(scenario.duration_s // scenario.interval_s)
    print(
        f"feederd sim: {scenario.name} from {scenario.start}, {scenario.duration_s / 3600:g} h"
        f" at {scenario.interval_s:g} s ({n} intervals), {len(scenario.dr)} DR"
        f" events, {len(scenario.fault)} faults",
        file=stream,
        flush=True,
    )
    with (out_dir / "feederd.log").open("w", encoding="utf-8") as log_file:
        configure_logging(level="info", stream=log_file)
        try:
            result = asyncio.run(
                run_scenario(scenario, base_dir=path.resolve().parent, source=str(path))
            )
        except ScenarioError as err:
            raise UsageError(str(err)) from None
    paths = write_results(result, out_dir)
    k = result.kpis
    for key, label in _KPI_ORDER:
        value = k.get(key)
        text_value = (
            "n/a (no DR event)"
            if value is None
            else f"{100 * value:.1f}%"
            if key == "dr_compliance"
            else f"{value:g}"
        )
        print(f"  {label:<36} {text_value}", file=stream)
    for line in _event_and_day_lines(k):
        print(f"  {line}", file=stream)
    print(
        f"  simulated {k['sim_s'] / 3600:.2f} h in {k['wall_s']:.1f} s of wall time"
        f" ({k['sim_s'] / max(k['wall_s'], 1e-9):.0f}x real time)",
        file=stream,
    )
    print(f"  wrote {', '.join(p.name for p in paths)} to {out_dir}", file=stream, flush=True)
    if journal is not None:
        print(
            f"  the daemon's journal: {journal} (feederd report --journal {journal} [--event ID])",
            file=stream,
            flush=True,
        )
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _event_and_day_lines(k: dict[str, Any]) -> list[str]:
    """Each DR event's and, for a run of more than one day or with a tariff, each day's
    figures (``hil.kpis``), one line each."""
    lines = []
    for e in k.get("events", []):
        limits = " ".join(
            f"{kind} cap {e[f'{kind}_limit_kw']:g} kW"
            for kind in ("import", "export")
            if e[f"{kind}_limit_kw"] is not None
        )
        lines.append(
            f"event {e['start'] or e['start_s']} {limits}: compliance {_pct(e['dr_compliance'])},"
            f" {e['energy_over_limit_kwh']:g} kWh over, SoC {e['soc_at_start_pct']:.1f}% at"
            f" its start"
        )
    days = k.get("days", [])
    if len(days) > 1 or k.get("energy_cost") is not None:
        for d in days:
            f = d["forecast_error"]
            cost = "" if d["energy_cost"] is None else f", cost {d['energy_cost']:.0f}"
            lines.append(
                f"{d['day']}: compliance {_pct(d['dr_compliance'])},"
                f" {d['energy_over_limit_kwh']:g} kWh over,"
                f" {d['undervoltage_bus_intervals']} bus-intervals < 0.92 p.u.{cost},"
                f" forecast 1 h MAPE load {_opt_pct(f['load_mape_pct'])}"
                f" PV {_opt_pct(f['pv_mape_pct'])}"
            )
    return lines


def _opt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _serve(case: str | None, base_port: int | None, pv_model: int, stream: TextIO) -> int:
    from controller.cli import UsageError  # noqa: PLC0415

    case_path: Path | None = None
    if case is not None:
        case_path = Path(case)
        if not case_path.is_file():
            raise UsageError(f"--case {case}: no such file")
    try:
        return asyncio.run(_serve_async(case_path, base_port, pv_model, stream))
    except _ServeError as err:
        raise UsageError(str(err)) from None


class _ServeError(Exception):
    pass


def _der_buses(case: Path | None) -> tuple[list[int], list[int], list[int]]:
    """PV, battery and load buses: the 33-bus defaults that the case has, else spread over it."""
    from hil import (  # noqa: PLC0415
        DEFAULT_BATTERY_BUSES,
        DEFAULT_LOAD_BUSES,
        DEFAULT_PV_BUSES,
        FeederPhysics,
    )

    if case is None:
        return list(DEFAULT_PV_BUSES), list(DEFAULT_BATTERY_BUSES), list(DEFAULT_LOAD_BUSES)
    try:
        physics = FeederPhysics(case)
    except Exception as err:  # pandapower's converter raises anything on a bad file
        raise _ServeError(f"--case {case}: not a usable MATPOWER case ({err})") from None
    others = [b for b in physics.buses if b != physics.head_bus]
    if not others:
        raise _ServeError(f"--case {case}: the case has no bus besides the slack")
    pv = [b for b in DEFAULT_PV_BUSES if b in others] or others[2::3] or others[-1:]
    bat = [b for b in DEFAULT_BATTERY_BUSES if b in others] or others[4::8] or others[-1:]
    loads = [b for b in DEFAULT_LOAD_BUSES if b in others] or others[1::10] or others[-1:]
    return pv, bat, loads


async def _serve_async(
    case: Path | None, base_port: int | None, pv_model: int, stream: TextIO
) -> int:
    from controller.signals import Signals  # noqa: PLC0415
    from devices import DeviceError, ModbusTcpLink  # noqa: PLC0415
    from hil import HilRig  # noqa: PLC0415
    from hil.profiles import load, sun  # noqa: PLC0415

    pv_buses, battery_buses, load_buses = _der_buses(case)
    now = datetime.now().astimezone()
    start_hour = now.hour + now.minute / 60.0 + now.second / 3600.0
    rig = HilRig(
        load_scale=lambda t: load(t, start_hour=start_hour, scale=1.0, steps=()),
        pv_available_frac=lambda t: sun(t, start_hour=start_hour, peak_frac=0.85, clouds=()),
        pv_buses=pv_buses,
        battery_buses=battery_buses,
        load_buses=load_buses,
        case=case,
        base_port=base_port,
        pv_control_model=pv_model,
    )
    async with contextlib.AsyncExitStack() as stack:
        signals = stack.enter_context(Signals(reload=False))
        try:
            await stack.enter_async_context(rig)
        except (OSError, RuntimeError) as err:
            n = len(pv_buses) + len(battery_buses) + len(load_buses)
            last = None if base_port is None else base_port + n
            where = f"ports {base_port}..{last}" if base_port is not None else "free ports"
            raise _ServeError(f"cannot serve the devices on 127.0.0.1 {where}: {err}") from None
        for d in rig.devices:  # every device answers a read (SunSpec header, or a load's map)
            link = ModbusTcpLink(d.host, d.port, timeout_s=2.0)
            try:
                await link.read_holding(d.name, 0 if d.kind == "load" else 40000, 2, d.unit)
            except DeviceError as err:
                raise _ServeError(f"device {d.name} does not answer: {err}") from None
            finally:
                await link.close()
        line = {
            "devices": [
                {"name": d.name, "kind": d.kind, "host": d.host, "port": d.port, "unit": d.unit}
                for d in rig.devices
            ]
        }
        print(json.dumps(line), file=stream, flush=True)
        await signals.stop.wait()
    return 0
