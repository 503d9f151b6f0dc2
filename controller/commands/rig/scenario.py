"""``feederd sim``: the real daemon against the HIL rig through a scenario, in simulated time.

The rig's devices are real pymodbus servers on 127.0.0.1 and the daemon (``Daemon.open``, as
``feederd run`` assembles it) talks to them over real Modbus TCP; only the clock is simulated.
One ``FakeClock`` drives both: every interval the runner lets the operator act (a DR event is
submitted to the daemon's DR service when it is announced, or with ``[mqtt]`` published on a real
Mosquitto for the daemon's MQTT intake; a broker outage stops it), applies the faults due on the
devices' ports, advances the rig's physics to the tick (``await rig.step()``), records what the
physics shows, then runs one ``await daemon.controller.cycle()`` and moves the clock on by the
interval. Deadlines are on the clock, so a busy machine changes how long a run takes, never
what it does. A two-hour scenario at 5 s intervals is 1,440 cycles and takes about a minute.
The clock starts at the scenario's ``date`` and ``start`` in its ``timezone`` (the site's,
which the controller's ``[forecast] timezone`` is set to); a scenario over days runs at a
coarse interval (five minutes: 576 cycles for 48 h, one power flow each, the devices'
revert timers ten intervals), and each interval's price at the scenario's tariff is recorded
beside the physics (the KPIs' energy cost).

``run_scenario`` returns the samples and KPIs; ``write_results`` puts ``intervals.csv``,
``kpis.json`` and the PNG plots in a folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
from pymodbus.constants import ExcCodes

from controller.clock import FakeClock
from controller.commands.rig.config import merge, rig_config
from controller.config import ConfigError, LoadedConfig
from controller.daemon import Daemon
from controller.dr.intake import MqttSettings
from controller.prices import Tariff, step_prices
from hil import DeviceFault, HilRig, MosquittoBroker
from hil.kpis import Sample, kpis
from hil.scenario import BROKER, DrEvent, Fault, Scenario, ScenarioError
from optimizer import builtin_case

__all__ = ["SIM_DATE", "SimResult", "case_path", "run_scenario", "scenario_config", "write_results"]

SIM_DATE = datetime(2026, 7, 1, tzinfo=UTC)
"""The (arbitrary) day scenarios run on unless their ``date`` says otherwise."""
SIM_DEFAULTS: dict[str, Any] = {"poll": {"timeout_s": 2.0}}
"""What a scenario's run sets unless its ``[controller]`` says otherwise: the devices' request
timeout is real seconds (the rig's I/O is real, only the clock is simulated), so a generous one
keeps a busy machine from making a healthy device miss; only a silent device pays it."""
REAL_WAIT_S = 10.0
"""How long (real seconds) the runner waits for what MQTT must do within an interval."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    scenario: Scenario
    samples: tuple[Sample, ...]
    kpis: dict[str, Any]
    wall_s: float
    buses: tuple[int, ...]
    v_band_pu: tuple[float, float]


def case_path(scenario: Scenario, base_dir: Path, source: str = "<scenario>") -> Path:
    """The MATPOWER file of ``feeder.case`` (``builtin:NAME`` or a path next to the scenario)."""
    case = scenario.feeder.case
    if case.startswith("builtin:"):
        try:
            return builtin_case(case.removeprefix("builtin:"))
        except KeyError as err:
            raise ScenarioError(source, "feeder.case", str(err.args[0])) from None
    path = Path(case)
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise ScenarioError(source, "feeder.case", f"MATPOWER file {str(path)!r} does not exist")
    return path


def scenario_config(rig: HilRig, scenario: Scenario, case: Path, source: str) -> LoadedConfig:
    """The rig's config with the scenario's ``[controller]`` merged in; a problem in it is a
    ``ScenarioError`` naming the key under ``controller``."""
    site = {"forecast": {"timezone": scenario.timezone}}  # the rig's local time is the site's
    overrides = merge(merge(SIM_DEFAULTS, site), scenario.controller)
    try:
        return rig_config(rig, overrides=overrides, site="sim", case=case, source=source)
    except ConfigError as err:
        key = f"controller.{err.key}" if err.key else "controller"
        raise ScenarioError(source, key, err.problem) from None


def _device_fault(fault: Fault) -> DeviceFault:
    match fault.kind:
        case "silent":
            return DeviceFault(silent=True)
        case "slow":
            return DeviceFault(delay_s=fault.delay_s)
        case "exception":
            return DeviceFault(exception=ExcCodes(fault.code))
        case "garbage":
            return DeviceFault(garbage=True)
        case "frozen":
            return DeviceFault(frozen=True)
        case "reset":
            return DeviceFault(reset=True)
    raise AssertionError(fault.kind)  # pragma: no cover - an outage is the broker's


async def run_scenario(
    scenario: Scenario,
    *,
    base_dir: Path | None = None,
    source: str = "<scenario>",
    on_sample: Callable[[Sample], None] | None = None,
) -> SimResult:
    """Run ``scenario`` against a fresh rig; see the module docstring."""
    started = time.perf_counter()
    case = case_path(scenario, base_dir or Path.cwd(), source)
    interval = scenario.interval_s
    clock = FakeClock(start=scenario.start_utc)
    rig = HilRig(
        monotonic=clock.monotonic,
        now=clock.now,
        physics_period_s=None,  # the runner steps the physics, tick by tick ...
        solve_on_write=False,  # ... and only then: one power flow per interval
        case=case,
        **scenario.rig_options(),
    )
    samples: list[Sample] = []
    active: dict[int, Fault] = {}
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(rig)
        stack.callback(_clear_faults, rig, active)
        loaded = scenario_config(rig, scenario, case, source)
        broker: MosquittoBroker | None = None
        mqtt: MqttSettings | None = None
        if scenario.mqtt.enabled:
            broker = await stack.enter_async_context(MosquittoBroker())
            token = f"{id(scenario):x}"
            mqtt = MqttSettings(
                host=broker.host,
                port=broker.port,
                topic_root=f"feederd/sim-{token}",
                client_id=f"feederd-sim-{token}",
                keepalive_s=5,
                backoff_min_s=0.05,
                backoff_max_s=0.5,
            )
        daemon = await stack.enter_async_context(Daemon.open(loaded, clock=clock, mqtt=mqtt))
        operator = _Operator(scenario, daemon, clock, broker)
        prices = _TariffPrices(loaded, interval)
        await operator.ready()
        n = math.floor(scenario.duration_s / interval + 1e-9)
        for k in range(n):
            t = k * interval
            truth = scenario.limits_at(t)  # what the operator asks for now
            await operator.tick(t)
            _apply_faults(rig, scenario, t, active)
            await rig.step()
            seen = _physics(rig)  # before the cycle's writes move the physics on
            price = prices.at(clock.now())
            rec = await daemon.controller.cycle()
            picture = rec.estimated_v_pu if rec.estimated_v_pu is not None else rec.picture_v_pu
            rms_err, max_err = _estimate_error(picture, seen["v_pu"])
            sample = Sample(
                t_s=t,
                meter_kw=rec.import_kw,
                import_limit_kw=truth[0],
                export_limit_kw=truth[1],
                seen_import_limit_kw=rec.import_limit_kw,
                seen_export_limit_kw=rec.export_limit_kw,
                status=rec.status.value,
                dispatched=rec.status.dispatched,
                devices_up=rec.devices_up,
                devices_missing=rec.devices_missing,
                faults=tuple(f"{f.device}:{f.kind}" for f in active.values()),
                cycle_ms=rec.cycle_ms,
                seen_v_slack_pu=rec.v_slack_pu,
                est_v_rms_err_pu=rms_err,
                est_v_max_err_pu=max_err,
                import_correction_kw=rec.import_correction_kw,
                export_correction_kw=rec.export_correction_kw,
                model_error_kw=rec.model_error_kw,
                forecast_load_1h_kw=rec.forecast_load_1h_kw,
                forecast_pv_1h_kw=rec.forecast_pv_1h_kw,
                plan_shortfall_kw=rec.plan_shortfall_kw,
                price_per_kwh=price[0],
                export_price_per_kwh=price[1],
                **seen,
            )
            samples.append(sample)
            if on_sample is not None:
                on_sample(sample)
            clock.advance(interval)
    band = loaded.config.feeder.v_min_pu, loaded.config.feeder.v_max_pu
    figures = kpis(
        samples,
        interval_s=interval,
        v_min_pu=band[0],
        v_max_pu=band[1],
        start=scenario.start_local,
    )
    wall_s = time.perf_counter() - started
    figures["sim_s"] = len(samples) * interval
    figures["wall_s"] = round(wall_s, 2)
    return SimResult(
        scenario=scenario,
        samples=tuple(samples),
        kpis=figures,
        wall_s=wall_s,
        buses=rig.physics.buses,
        v_band_pu=band,
    )


class _TariffPrices:
    """The import and export price of each interval at the scenario's tariff
    (``[controller.tariff]``), as the controller's own ``controller.prices`` reads it: what
    the run's energy cost is graded at. Without a tariff, nothing (no cost figures)."""

    def __init__(self, loaded: LoadedConfig, interval_s: float) -> None:
        config = loaded.config
        self.interval_s = interval_s
        self.default = config.dr.price_per_kwh
        self.tariff = (
            None if config.tariff is None else Tariff(config.tariff, config.tariff_timezone)
        )

    def at(self, now: datetime) -> tuple[float | None, float | None]:
        """The (import, export) price of the interval starting ``now``."""
        if self.tariff is None:
            return None, None
        p = step_prices(
            now, [0.0], [self.interval_s], default_per_kwh=self.default, tariff=self.tariff
        )
        return p.import_per_kwh[0], p.export_per_kwh[0]


def _apply_faults(rig: HilRig, scenario: Scenario, t: float, active: dict[int, Fault]) -> None:
    """Start and end the device faults due at ``t``; ``active`` also lists a broker outage
    (which the operator carries out)."""
    for i, fault in enumerate(scenario.fault):
        due = fault.start_s <= t < fault.end_s
        device = fault.device != BROKER
        if due and i not in active:
            active[i] = fault
            if device:
                rig.set_fault(fault.device, _device_fault(fault))
        elif not due and i in active:
            del active[i]
            if device:
                rig.set_fault(fault.device, DeviceFault())


def _clear_faults(rig: HilRig, active: dict[int, Fault]) -> None:
    for fault in active.values():
        if fault.device != BROKER:
            rig.set_fault(fault.device, DeviceFault())


def _estimate_error(
    estimated: Mapping[int, float] | None, true_v_pu: Mapping[int, float]
) -> tuple[float | None, float | None]:
    """How far the bus voltages the controller dispatched on were from the physics' (RMS and
    largest over the buses both know, p.u.); ``None`` when it had no picture this interval."""
    errors = [estimated[b] - v for b, v in true_v_pu.items() if b in estimated] if estimated else []
    if not errors:
        return None, None
    return math.sqrt(math.fsum(e * e for e in errors) / len(errors)), max(map(abs, errors))


def _physics(rig: HilRig) -> dict[str, Any]:
    """The physics' side of a sample: what the feeder does at this tick."""
    state = rig.state
    socs = [b.soc_pct for b in rig.batteries.values()]
    return {
        "import_kw": state.head_p_kw,
        "v_pu": dict(state.v_pu),
        "v_slack_pu": state.head_v_pu,
        "losses_kw": state.losses_kw,
        "load_kw": state.load_kw,
        "pv_kw": rig.pv_kw,
        "pv_available_kw": rig.pv_available_kw,
        "curtailed_kw": rig.curtailed_kw,
        "pv_kvar": rig.pv_kvar,
        "battery_kw": rig.battery_kw,
        "battery_soc_pct": sum(socs) / len(socs) if socs else math.nan,
    }


class _Operator:
    """The distribution operator of a scenario: announces its DR events to the daemon, through
    the DR service (as ``feederd event add`` does) or, with ``[mqtt]``, as JSON published on a
    real Mosquitto; and takes the broker down for an outage.

    MQTT runs in real time beside the simulated clock, so at each tick the runner waits (a few
    real seconds at most) for what a real feeder would see within the interval: a published
    event decided by the daemon, the intake reconnected once the broker is back. An event due
    for publication while the broker is down is published when it returns.
    """

    def __init__(
        self, scenario: Scenario, daemon: Daemon, clock: FakeClock, broker: MosquittoBroker | None
    ) -> None:
        self.scenario = scenario
        self.daemon = daemon
        self.broker = broker
        self._t0 = clock.now()
        self._sent: set[str] = set()

    def _connects(self) -> int:
        return 0 if self.daemon.intake is None else self.daemon.intake.connects

    async def ready(self) -> None:
        if self.broker is not None:
            await _until(lambda: self._connects() >= 1, "the MQTT intake to connect")

    async def tick(self, t: float) -> None:
        """Carry out the broker outages and the announcements due at scenario second ``t``."""
        if self.broker is not None:
            down = any(f.device == BROKER and f.start_s <= t < f.end_s for f in self.scenario.fault)
            if down:
                await self.broker.stop()
                return
            if not self.broker.running:
                before = self._connects()
                await self.broker.start()
                await _until(lambda: self._connects() > before, "the intake to reconnect")
        for i, event in enumerate(self.scenario.dr):
            if event.announced_at_s > t:
                continue
            for payload in self._payloads(i, event):
                if payload["id"] not in self._sent:
                    await self._send(payload)
                    self._sent.add(payload["id"])

    def _payloads(self, i: int, event: DrEvent) -> list[dict[str, Any]]:
        base = event.id or f"sim-{i + 1}"
        start = (self._t0 + timedelta(seconds=event.start_s)).isoformat()
        end = (self._t0 + timedelta(seconds=event.end_s)).isoformat()
        both = event.import_limit_kw is not None and event.export_limit_kw is not None
        out = []
        for kind, kw in (
            ("import_limit", event.import_limit_kw),
            ("export_limit", event.export_limit_kw),
        ):
            if kw is not None:
                ident = f"{base}-{kind.split('_')[0]}" if both else base
                out.append({"id": ident, "type": kind, "kw": kw, "start": start, "end": end})
        return out

    async def _send(self, payload: dict[str, Any]) -> None:
        ident = payload["id"]
        if self.broker is None or self.daemon.intake is None:
            decision = await self.daemon.dr.submit_async(payload, source="scenario")
            if decision.result != "accepted":
                raise ScenarioError("<scenario>", "dr", f"event {ident!r}: {decision.reason}")
            return
        topic = self.daemon.intake.settings.event_topic
        async with aiomqtt.Client(
            self.broker.host, self.broker.port, identifier=f"operator-{id(self):x}"
        ) as client:
            await client.publish(topic, json.dumps(payload).encode(), qos=1)
        await _until(
            lambda: any(d.id == ident for d in self.daemon.dr.recent), f"DR event {ident!r}"
        )


async def _until(done: Callable[[], bool], what: str) -> None:
    """Wait (real time, at most ``REAL_WAIT_S``) for ``done()``: MQTT's side of a tick."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REAL_WAIT_S
    while not done():
        if loop.time() > deadline:
            raise TimeoutError(f"scenario: gave up waiting {REAL_WAIT_S:g} s for {what}")
        await asyncio.sleep(0.01)


def write_results(result: SimResult, out_dir: Path) -> list[Path]:
    """Write ``intervals.csv``, ``kpis.json`` and the plots into ``out_dir``; return the paths."""
    from hil.plots import plot_run  # noqa: PLC0415 (matplotlib is slow to import)

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "intervals.csv"
    start_h = result.scenario.start_hour
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "t_s",
                "time",
                "import_kw",
                "meter_kw",
                "import_limit_kw",
                "export_limit_kw",
                "seen_import_limit_kw",
                "seen_export_limit_kw",
                "losses_kw",
                "load_kw",
                "pv_kw",
                "pv_available_kw",
                "curtailed_kw",
                "pv_kvar",
                "battery_kw",
                "battery_soc_pct",
                "v_min_pu",
                "v_max_pu",
                "v_slack_pu",
                "seen_v_slack_pu",
                "est_v_rms_err_pu",
                "est_v_max_err_pu",
                "import_correction_kw",
                "export_correction_kw",
                "model_error_kw",
                "price_per_kwh",
                "forecast_load_1h_kw",
                "forecast_pv_1h_kw",
                "plan_shortfall_kw",
                "status",
                "devices_up",
                "devices_missing",
                "faults",
                "cycle_ms",
                *(f"v_bus{b}" for b in result.buses),
            ]
        )
        for s in result.samples:
            writer.writerow(
                [
                    f"{s.t_s:g}",
                    _clock_text(start_h, s.t_s),
                    f"{s.import_kw:.2f}",
                    _opt(s.meter_kw, ".2f"),
                    _opt(s.import_limit_kw, "g"),
                    _opt(s.export_limit_kw, "g"),
                    _opt(s.seen_import_limit_kw, "g"),
                    _opt(s.seen_export_limit_kw, "g"),
                    f"{s.losses_kw:.2f}",
                    f"{s.load_kw:.2f}",
                    f"{s.pv_kw:.2f}",
                    f"{s.pv_available_kw:.2f}",
                    f"{s.curtailed_kw:.2f}",
                    f"{s.pv_kvar:.2f}",
                    f"{s.battery_kw:.2f}",
                    f"{s.battery_soc_pct:.2f}",
                    f"{min(s.v_pu.values()):.5f}",
                    f"{max(s.v_pu.values()):.5f}",
                    _opt(s.v_slack_pu, ".5f"),
                    _opt(s.seen_v_slack_pu, ".5f"),
                    _opt(s.est_v_rms_err_pu, ".5f"),
                    _opt(s.est_v_max_err_pu, ".5f"),
                    _opt(s.import_correction_kw, ".2f"),
                    _opt(s.export_correction_kw, ".2f"),
                    _opt(s.model_error_kw, ".2f"),
                    _opt(s.price_per_kwh, "g"),
                    _opt(s.forecast_load_1h_kw, ".2f"),
                    _opt(s.forecast_pv_1h_kw, ".2f"),
                    _opt(s.plan_shortfall_kw, ".2f"),
                    s.status,
                    s.devices_up,
                    " ".join(s.devices_missing),
                    " ".join(s.faults),
                    f"{s.cycle_ms:.1f}",
                    *(f"{s.v_pu[b]:.5f}" for b in result.buses),
                ]
            )
    kpi_path = out_dir / "kpis.json"
    kpi_path.write_text(
        json.dumps({"scenario": result.scenario.name, **result.kpis}, indent=2) + "\n",
        encoding="utf-8",
    )
    plots = plot_run(result.scenario, result.samples, out_dir, v_band_pu=result.v_band_pu)
    return [csv_path, kpi_path, *plots]


def _opt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _clock_text(start_hour: float, t_s: float) -> str:
    minutes = round(start_hour * 60.0 + t_s / 60.0)
    return f"{(minutes // 60) % 24:02d}:{minutes % 60:02d}"
