"""``feederd sim``: run the real daemon against the HIL rig through a scenario, in simulated time.

The rig's devices are real pymodbus servers on 127.0.0.1 and the controller talks to them over
real Modbus TCP; only the clock is simulated. One ``FakeClock`` drives both: every interval the
runner applies the scenario's timeline (DR limits through ``Controller.set_limits``, or with
``[mqtt]`` as events published on a real Mosquitto for the daemon's MQTT intake, see
``MqttDr``; faults on the devices' ports), advances the rig's physics to the tick (``await rig.step()``), records what
the physics shows, then runs one ``await controller.cycle()`` and moves the clock on by the
interval. A two-hour scenario at 5 s intervals is 1,440 cycles and takes about a minute.

``run_scenario`` returns the samples and KPIs; ``write_results`` puts ``intervals.csv``,
``kpis.json``, the daemon's log and the PNG plots in a folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymodbus.constants import ExcCodes

from controller.clock import FakeClock
from controller.config import LoadedConfig, parse_config
from controller.daemon import Controller
from hil import DeviceFault, HilRig
from hil.kpis import Sample, kpis
from hil.profiles import load, sun
from hil.scenario import BROKER, Fault, Scenario, ScenarioError
from optimizer import builtin_case

if TYPE_CHECKING:
    from controller.dr.intake import MqttIntake
    from controller.dr.service import DrService
    from controller.journal import Journal

__all__ = ["SimResult", "case_path", "rig_config", "run_scenario", "write_results"]

SIM_DATE = datetime(2026, 7, 1, tzinfo=UTC)
"""The (arbitrary) day scenarios run on; ``start`` places them within it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    scenario: Scenario
    samples: tuple[Sample, ...]
    kpis: dict[str, Any]
    wall_s: float
    buses: tuple[int, ...]


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


def rig_config(rig: HilRig, scenario: Scenario, case: Path) -> LoadedConfig:
    """The config a commissioning engineer would write for the rig's devices."""
    ctl = scenario.controller
    devices = rig.config_devices(revert_s=ctl.revert_s)
    data = {
        "site": "sim",
        "interval_s": ctl.interval_s,
        "feeder": {"case": str(case), "v_min_pu": ctl.v_min_pu, "v_max_pu": ctl.v_max_pu},
        "dr": {"price_per_kwh": ctl.price_per_kwh},
        "poll": {
            "timeout_s": ctl.poll_timeout_s,
            "stale_after_intervals": ctl.stale_after_intervals,
        },
        "metrics": {"enabled": False},
        "devices": devices,
    }
    return parse_config(data, source=f"<scenario {scenario.name}>", base_dir=case.parent)


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


def _label(fault: Fault) -> str:
    return f"{fault.device}:{fault.kind}"


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
    feeder, ctl_spec = scenario.feeder, scenario.controller
    interval = ctl_spec.interval_s
    clock = FakeClock(start=SIM_DATE + timedelta(hours=scenario.start_hour))
    clouds, steps = scenario.clouds(), scenario.load_steps()
    rig = HilRig(
        time_fn=clock.monotonic,
        load_scale=lambda t: load(
            t, start_hour=scenario.start_hour, scale=feeder.load_scale, steps=steps
        ),
        pv_available_frac=lambda t: sun(
            t, start_hour=scenario.start_hour, peak_frac=feeder.pv_peak_frac, clouds=clouds
        ),
        pv_buses=feeder.pv_buses,
        pv_kw=feeder.pv_kw,
        battery_buses=feeder.battery_buses,
        battery_kw=feeder.battery_kw,
        battery_kwh=feeder.battery_kwh,
        battery_soc_frac=feeder.battery_soc_pct / 100.0,
        physics_period_s=None,  # the runner steps the physics, tick by tick
        case=case,
    )
    samples: list[Sample] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(rig)
        loaded = rig_config(rig, scenario, case)
        mqtt: MqttDr | None = None
        if scenario.mqtt.enabled:
            mqtt = await stack.enter_async_context(MqttDr(scenario, clock))
        controller = Controller(loaded, clock=clock, dr=None if mqtt is None else mqtt.service)
        active: dict[int, Fault] = {}
        limits: tuple[float | None, float | None] = (None, None)
        n = math.floor(scenario.duration_s / interval + 1e-9)
        try:
            for k in range(n):
                t = k * interval
                truth = scenario.limits_at(t)  # what the operator asks for now
                if mqtt is not None:
                    await mqtt.tick(t)  # publish due events; stop or start the broker
                elif truth != limits:
                    limits = truth
                    controller.set_limits(import_kw=limits[0], export_kw=limits[1])
                _apply_faults(rig, scenario, t, active)
                await rig.step()
                seen = _physics(rig)  # before the cycle's writes move the physics on
                rec = await controller.cycle()
                sample = Sample(
                    t_s=t,
                    meter_kw=rec.import_kw,
                    import_limit_kw=truth[0],
                    export_limit_kw=truth[1],
                    seen_import_limit_kw=rec.import_limit_kw,
                    seen_export_limit_kw=rec.export_limit_kw,
                    status=rec.status,
                    devices_up=rec.devices_up,
                    devices_missing=rec.devices_missing,
                    faults=tuple(_label(f) for f in active.values()),
                    cycle_ms=rec.cycle_ms,
                    **seen,
                )
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
                clock.advance(interval)
        finally:
            for fault in active.values():
                if fault.device != BROKER:
                    rig.set_fault(fault.device, DeviceFault())
            await controller.close()
    figures = kpis(
        samples, interval_s=interval, v_min_pu=ctl_spec.v_min_pu, v_max_pu=ctl_spec.v_max_pu
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
    )


def _apply_faults(rig: HilRig, scenario: Scenario, t: float, active: dict[int, Fault]) -> None:
    """Start and end the device faults due at ``t``; ``active`` also lists a broker outage
    (which the MQTT side carries out)."""
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


def _physics(rig: HilRig) -> dict[str, Any]:
    """The physics' side of a sample: what the feeder does at this tick."""
    state = rig.state
    socs = [b.soc_pct for b in rig.batteries.values()]
    return {
        "import_kw": state.head_p_kw,
        "v_pu": dict(state.v_pu),
        "losses_kw": state.losses_kw,
        "load_kw": state.load_kw,
        "pv_kw": rig.pv_kw,
        "pv_available_kw": rig.pv_available_kw,
        "curtailed_kw": rig.curtailed_kw,
        "battery_kw": rig.battery_kw,
        "battery_soc_pct": sum(socs) / len(socs) if socs else math.nan,
    }


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
                "battery_kw",
                "battery_soc_pct",
                "v_min_pu",
                "v_max_pu",
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
                    "" if s.meter_kw is None else f"{s.meter_kw:.2f}",
                    "" if s.import_limit_kw is None else f"{s.import_limit_kw:g}",
                    "" if s.export_limit_kw is None else f"{s.export_limit_kw:g}",
                    "" if s.seen_import_limit_kw is None else f"{s.seen_import_limit_kw:g}",
                    "" if s.seen_export_limit_kw is None else f"{s.seen_export_limit_kw:g}",
                    f"{s.losses_kw:.2f}",
                    f"{s.load_kw:.2f}",
                    f"{s.pv_kw:.2f}",
                    f"{s.pv_available_kw:.2f}",
                    f"{s.curtailed_kw:.2f}",
                    f"{s.battery_kw:.2f}",
                    f"{s.battery_soc_pct:.2f}",
                    f"{min(s.v_pu.values()):.5f}",
                    f"{max(s.v_pu.values()):.5f}",
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
    return [csv_path, kpi_path, *plot_run(result.scenario, result.samples, out_dir)]


def _clock_text(start_hour: float, t_s: float) -> str:
    minutes = round(start_hour * 60.0 + t_s / 60.0)
    return f"{(minutes // 60) % 24:02d}:{minutes % 60:02d}"


def run_and_write(
    scenario: Scenario, out_dir: Path, *, base_dir: Path, source: str
) -> tuple[SimResult, list[Path]]:
    """The whole of ``feederd sim --scenario``: run, then write the results."""
    result = asyncio.run(run_scenario(scenario, base_dir=base_dir, source=source))
    return result, write_results(result, out_dir)


class MqttDr:
    """DR events over MQTT for a scenario with ``[mqtt]``: a real Mosquitto (``hil.broker``),
    the daemon's own intake and DR service, and the operator's publisher.

    MQTT runs in real time beside the simulated clock, so at each tick the runner waits (a few
    real seconds at most) for what a real feeder would see within the interval: a published
    event decided by the service, the intake reconnected once the broker is back. An event due
    for publication while the broker is down is published when it returns.
    """

    def __init__(self, scenario: Scenario, clock: FakeClock) -> None:
        from hil.broker import MosquittoBroker  # noqa: PLC0415

        self.scenario = scenario
        self.clock = clock
        self.broker = MosquittoBroker()
        self.token = f"{id(self):x}"
        self._t0 = clock.now()
        self._published: set[str] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.journal: Journal | None = None
        self.intake: MqttIntake | None = None
        self._service: DrService | None = None

    @property
    def service(self) -> DrService:
        assert self._service is not None, "MqttDr is used inside async with"
        return self._service

    async def __aenter__(self) -> MqttDr:
        from controller.dr.intake import MqttIntake, MqttSettings  # noqa: PLC0415
        from controller.dr.service import DrService  # noqa: PLC0415
        from controller.journal import Journal  # noqa: PLC0415

        await self.broker.start()
        self.journal = Journal(":memory:")
        self._service = DrService(
            self.journal,
            clock=self.clock,
            site="sim",
            default_import_kw=None,
            default_export_kw=None,
        )
        self.intake = MqttIntake(
            MqttSettings(
                host=self.broker.host,
                port=self.broker.port,
                topic_root=f"feederd/sim-{self.token}",
                client_id=f"feederd-sim-{self.token}",
                keepalive_s=5,
                backoff_min_s=0.05,
                backoff_max_s=0.5,
            ),
            self._service.submit,
        )
        self._task = asyncio.create_task(self.intake.run(self._stop), name="feederd[sim].mqtt")
        await self._until(lambda: self._connects() >= 1, "the MQTT intake to connect")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10.0)
        await self.broker.__aexit__(None, None, None)
        if self.journal is not None:
            self.journal.close()

    def _connects(self) -> int:
        return 0 if self.intake is None else self.intake.connects

    async def _until(self, done: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done():
            if loop.time() > deadline:
                raise TimeoutError(f"scenario: gave up waiting {timeout_s:g} s for {what}")
            await asyncio.sleep(0.01)

    async def tick(self, t: float) -> None:
        """Carry out the broker outages and publications due at scenario second ``t``."""
        down = any(f.device == BROKER and f.start_s <= t < f.end_s for f in self.scenario.fault)
        if down:
            await self.broker.stop()
            return
        if not self.broker.running:
            before = self._connects()
            await self.broker.start()
            await self._until(lambda: self._connects() > before, "the intake to reconnect")
        for i, event in enumerate(self.scenario.dr):
            if event.announced_at_s > t:
                continue
            for payload in self._payloads(i, event):
                if payload["id"] in self._published:
                    continue
                await self._publish(payload)
                self._published.add(payload["id"])

    def _payloads(self, i: int, event: Any) -> list[dict[str, Any]]:
        base = event.id or f"sim-{i + 1}"
        start = (self._t0 + timedelta(seconds=event.start_s)).isoformat()
        end = (self._t0 + timedelta(seconds=event.end_s)).isoformat()
        out = []
        for kind, kw in (
            ("import_limit", event.import_limit_kw),
            ("export_limit", event.export_limit_kw),
        ):
            if kw is not None:
                both = event.import_limit_kw is not None and event.export_limit_kw is not None
                ident = f"{base}-{kind.split('_')[0]}" if both else base
                out.append({"id": ident, "type": kind, "kw": kw, "start": start, "end": end})
        return out

    async def _publish(self, payload: dict[str, Any]) -> None:
        import aiomqtt  # noqa: PLC0415

        assert self.intake is not None
        topic = self.intake.settings.event_topic
        async with aiomqtt.Client(
            self.broker.host, self.broker.port, identifier=f"operator-{self.token}"
        ) as client:
            await client.publish(topic, json.dumps(payload).encode(), qos=1)
        ident = payload["id"]
        await self._until(
            lambda: any(d.id == ident for d in self.service.recent), f"DR event {ident!r}"
        )
