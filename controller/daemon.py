"""The control loop: tick, poll, snapshot, dispatch, write, record.

The controller ticks at ``t0 + k·interval`` on an injected clock, never two cycles at once; an
overrun is counted and the next tick is the next one on the grid, never queued. Each phase has a
deadline inside the interval: a device that misses the poll deadline is missing this interval.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from controller.clock import Clock
from controller.config import LoadedConfig
from controller.fleet import Driver, build_fleet
from controller.metrics import Metrics
from controller.snapshot import EstimatorState, Snapshot, dispatch_input
from devices import (
    BatteryReading,
    BatterySetpoint,
    DeviceError,
    DeviceState,
    HealthTracker,
    LoadReading,
    LoadSetpoint,
    MeterReading,
    MqttDevice,
    PvReading,
    PvSetpoint,
    RegisterMapLoad,
    SunSpecBattery,
    SunSpecInverter,
    UnsafeWriteError,
)
from optimizer import (
    Dispatcher,
    DispatchResult,
    DispatchStatus,
    proportional_curtailment,
)

__all__ = ["Controller", "CycleRecord", "DeviceHealth"]

log = structlog.get_logger("feederd")


class JournalSink(Protocol):
    def append(self, record: CycleRecord, at: datetime) -> None: ...


class ActiveLimitsLike(Protocol):
    @property
    def import_kw(self) -> float | None: ...
    @property
    def export_kw(self) -> float | None: ...
    @property
    def event_ids(self) -> tuple[str, ...]: ...


class DrSource(Protocol):
    """DR events (controller/dr): the limits for each interval, and what the interval did."""

    def limits_for_cycle(self) -> ActiveLimitsLike: ...

    def cycle_done(self, record: CycleRecord) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleRecord:
    """What one interval did: the canonical log line and what the demo prints."""

    cycle: int
    status: str
    at_s: float
    import_kw: float | None
    import_estimate_kw: float | None
    import_limit_kw: float | None
    export_limit_kw: float | None
    losses_kw: float | None
    curtailed_kw: float | None
    v_min_pu: float | None
    setpoints_kw: Mapping[str, float]
    devices_up: int
    devices_missing: tuple[str, ...]
    poll_ms: float
    solve_ms: float
    write_ms: float
    cycle_ms: float
    dr_events: tuple[str, ...] = ()


@dataclass(slots=True)
class DeviceHealth:
    """A device's health: ``state`` is up, degraded or down (``devices.HealthTracker``)."""

    kind: str
    misses: int = 0
    stale: bool = False
    ever_read: bool = False
    tracker: HealthTracker = field(default_factory=HealthTracker)

    @property
    def state(self) -> DeviceState:
        return self.tracker.state

    def age_s(self) -> float | None:
        """Seconds since the last good reading, ``None`` if it never answered."""
        return self.tracker.age_s()


@dataclass(slots=True)
class _Limits:
    import_kw: float | None
    export_kw: float | None


@dataclass(slots=True)
class _Timings:
    poll_ms: float = 0.0
    solve_ms: float = 0.0
    write_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Controller:
    """One feeder's controller. ``run`` is the daemon; ``cycle`` is one interval."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: Clock,
        metrics: Metrics | None = None,
        fleet: Mapping[str, Driver] | None = None,
        on_cycle: Callable[[CycleRecord], None] | None = None,
        journal: JournalSink | None = None,
        dr: DrSource | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.network = loaded.network
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.fleet = (
            dict(fleet)
            if fleet is not None
            else build_fleet(self.config, clock=clock.monotonic, base_dir=_config_dir(loaded))
        )
        self.on_cycle = on_cycle
        self.journal = journal
        self.dr = dr
        self._dr_events: tuple[str, ...] = ()
        self.dispatcher = Dispatcher(self.network, time_limit_s=self.config.interval_s * 0.3)
        self._solving: asyncio.Future[DispatchResult] | None = None
        self.estimator = EstimatorState()
        self.health = {
            d.name: DeviceHealth(
                kind=d.kind,
                tracker=HealthTracker(
                    down_after=self.config.poll.stale_after_intervals, clock=clock.monotonic
                ),
            )
            for d in self.config.devices
        }
        self.limits = _Limits(self.config.dr.import_limit_kw, self.config.dr.export_limit_kw)
        self.head_name = loaded.head_meter.name
        self._bus = {d.name: d.bus for d in self.config.devices}
        self._ramp = {d.name: d.ramp_kw_per_s for d in self.config.devices}
        self._shed_cost = {
            d.name: d.shed_cost_per_kwh for d in self.config.devices if d.kind == "load"
        }
        self._cycle = 0
        self._armed = False  # no setpoint before the first complete, valid snapshot
        self.overruns = 0
        for name, h in self.health.items():
            self.metrics.device_up.labels(name, h.kind).set(0)
            self.metrics.device_stale.labels(name, h.kind).set(0)
        self._publish_limits()

    # -- limits ---------------------------------------------------------------------------

    def set_limits(self, *, import_kw: float | None, export_kw: float | None) -> None:
        self.limits = _Limits(import_kw, export_kw)
        self._publish_limits()

    def _publish_limits(self) -> None:
        imp, exp = self.limits.import_kw, self.limits.export_kw
        self.metrics.dr_import_limit_kw.set(math.nan if imp is None else imp)
        self.metrics.dr_export_limit_kw.set(math.nan if exp is None else exp)

    # -- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick on ``t0 + k·interval`` until ``stop`` is set."""
        interval = self.config.interval_s
        t0 = self.clock.monotonic()
        k = 0
        stopper = asyncio.create_task(stop.wait(), name=f"feederd[{self.config.site}].stop")
        try:
            while not stop.is_set():
                tick = t0 + k * interval
                delay = tick - self.clock.monotonic()
                if delay > 0:
                    sleeper = asyncio.create_task(self.clock.sleep(delay))
                    await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    sleeper.cancel()
                    if stop.is_set():
                        break
                await self.cycle()
                elapsed = self.clock.monotonic() - tick
                if elapsed > interval:
                    self.overruns += 1
                    self.metrics.overruns.inc()
                    log.warning("cycle_overrun", cycle=self._cycle, elapsed_s=round(elapsed, 3))
                    k = math.floor((self.clock.monotonic() - t0) / interval) + 1
                else:
                    k += 1
        finally:
            stopper.cancel()

    async def close(self) -> None:
        closers = {id(getattr(d, "link", d)): getattr(d, "link", d) for d in self.fleet.values()}
        for closer in closers.values():
            await closer.close()

    # -- one interval ---------------------------------------------------------------------

    async def cycle(self) -> CycleRecord:
        self._cycle += 1
        started = time.perf_counter()
        t = _Timings()
        if self.dr is not None:  # the active DR limit drives this interval's dispatch
            active = self.dr.limits_for_cycle()
            self._dr_events = active.event_ids
            if (active.import_kw, active.export_kw) != (
                self.limits.import_kw,
                self.limits.export_kw,
            ):
                self.set_limits(import_kw=active.import_kw, export_kw=active.export_kw)
        snapshot = await self._poll(t)
        result: DispatchResult | None = None
        setpoints: dict[str, float] = {}
        if not snapshot.valid:
            status = "no_head_meter"
        elif not self._armed and not self._first_snapshot_complete(snapshot):
            status = "waiting_first_snapshot"
        else:
            self._armed = True
            result = await self._dispatch(snapshot, t)
            setpoints = await self._write(snapshot, result, t)
            status = result.status.value
        cycle_ms = (time.perf_counter() - started) * 1000.0
        record = self._record(snapshot, result, setpoints, status, t, cycle_ms)
        self.metrics.cycles.labels(status).inc()
        self.metrics.cycle_duration.observe(cycle_ms / 1000.0)
        log.info(
            "cycle",
            cycle=record.cycle,
            status=status,
            import_kw=_r(record.import_kw),
            import_limit_kw=record.import_limit_kw,
            losses_kw=_r(record.losses_kw),
            curtailed_kw=_r(record.curtailed_kw),
            v_min_pu=_r(record.v_min_pu, 4),
            devices_up=record.devices_up,
            poll_ms=round(t.poll_ms, 1),
            solve_ms=round(t.solve_ms, 1),
            write_ms=round(t.write_ms, 1),
        )
        if self.journal is not None:
            try:
                self.journal.append(record, self.clock.now())
            except sqlite3.Error as err:
                self.metrics.journal_errors.inc()
                log.error("journal_write_failed", error=str(err))
        if self.dr is not None:
            self.dr.cycle_done(record)
        if self.on_cycle is not None:
            self.on_cycle(record)
        return record

    def _first_snapshot_complete(self, snapshot: Snapshot) -> bool:
        """Complete: every device answered, or has missed enough intervals to be given up."""
        return all(self.health[name].stale for name in snapshot.missing)

    async def _poll(self, t: _Timings) -> Snapshot:
        deadline = self.config.interval_s * self.config.poll.deadline_fraction
        started = time.perf_counter()
        tasks = {
            name: asyncio.create_task(drv.read(), name=f"feederd[{self.config.site}].poll.{name}")
            for name, drv in self.fleet.items()
        }
        _done, pending = await asyncio.wait(tasks.values(), timeout=deadline)
        for task in pending:
            task.cancel()
        readings: dict[str, object] = {}
        for name, task in tasks.items():
            reason: str | None = None
            if task in pending:
                reason = f"no answer within the poll deadline ({deadline:g} s)"
            elif (err := task.exception()) is not None:
                reason = str(err)
                if not isinstance(err, DeviceError):
                    reason = f"unexpected {type(err).__name__}: {err}"
                    log.error("device_read_crashed", device=name, error=reason)
            if reason is None:
                readings[name] = task.result()
                self._mark_up(name)
            else:
                self._mark_missed(name, reason)
        if pending:
            await asyncio.wait(pending)
        t.poll_ms = (time.perf_counter() - started) * 1000.0
        self.metrics.poll_duration.observe(t.poll_ms / 1000.0)
        head = readings.get(self.head_name)
        return Snapshot(
            cycle=self._cycle,
            taken_at=self.clock.now(),
            head=head if isinstance(head, MeterReading) else None,
            pv={n: r for n, r in readings.items() if isinstance(r, PvReading)},
            batteries={n: r for n, r in readings.items() if isinstance(r, BatteryReading)},
            loads={n: r for n, r in readings.items() if isinstance(r, LoadReading)},
            missing=frozenset(set(self.fleet) - set(readings)),
        )

    def _mark_up(self, name: str) -> None:
        h = self.health[name]
        if h.misses and h.ever_read:
            log.info("device_recovered", device=name, after_intervals=h.misses)
        h.misses, h.stale, h.ever_read = 0, False, True
        h.tracker.record_good()
        self.metrics.device_up.labels(name, h.kind).set(1)
        self.metrics.device_stale.labels(name, h.kind).set(0)

    def _mark_missed(self, name: str, reason: str) -> None:
        h = self.health[name]
        h.misses += 1
        self.metrics.device_up.labels(name, h.kind).set(0)
        implausible = any(w in reason for w in ("implausible", "not implemented", "outside"))
        if implausible:
            self.metrics.bad_readings.labels(name).inc()
        if h.tracker.record_failure(reason, implausible=implausible) is DeviceState.DOWN:
            log.error("device_state", device=name, state="down", age_s=_r(h.age_s()))
        if h.misses == 1:
            log.error("device_down", device=name, reason=reason)
        if not h.stale and h.misses >= self.config.poll.stale_after_intervals:
            h.stale = True
            self.metrics.device_stale.labels(name, h.kind).set(1)
            log.error("device_stale", device=name, missed_intervals=h.misses)

    async def _dispatch(self, snapshot: Snapshot, t: _Timings) -> DispatchResult:
        started = time.perf_counter()
        inp = dispatch_input(
            snapshot,
            self.network,
            pv_bus=self._bus,
            battery_bus=self._bus,
            ramp_kw_per_s=self._ramp,
            state=self.estimator,
            interval_s=self.config.interval_s,
            import_limit_kw=self.limits.import_kw,
            export_limit_kw=self.limits.export_kw,
            v_min_pu=self.config.feeder.dispatch_band_pu[0],
            v_max_pu=self.config.feeder.dispatch_band_pu[1],
            price_per_kwh=self.config.dr.price_per_kwh,
            load_bus=self._bus,
            shed_cost_per_kwh=self._shed_cost,
        )
        budget = self.config.interval_s * 0.4
        result: DispatchResult | None = None
        if self._solving is not None and not self._solving.done():
            reason = "the previous solve is still running"
        else:
            self._solving = asyncio.ensure_future(asyncio.to_thread(self.dispatcher.solve, inp))
            try:
                result = await asyncio.wait_for(asyncio.shield(self._solving), budget)
            except TimeoutError:
                reason = f"solver ran past its budget of {budget:g} s"
            else:
                reason = result.message
        if result is None or result.status in (
            DispatchStatus.SOLVER_FAILED,
            DispatchStatus.TIMED_OUT,
        ):
            log.error("solver_fallback", reason=reason, rule="proportional")
            self.metrics.fallbacks.inc()
            result = proportional_curtailment(self.network, inp)
        t.solve_ms = (time.perf_counter() - started) * 1000.0
        self.metrics.solve_duration.observe(t.solve_ms / 1000.0)
        for status in DispatchStatus:
            self.metrics.solver_status.labels(status.value).set(1 if status is result.status else 0)
        self.metrics.losses_kw.set(result.losses_kw)
        self.metrics.v_min_pu.set(result.v_min_pu)
        self.metrics.v_max_pu.set(result.v_max_pu)
        self.metrics.curtailed_kw.set(result.curtailed_kw)
        self.metrics.limit_slack_kw.labels("import").set(result.import_slack_kw)
        self.metrics.limit_slack_kw.labels("export").set(result.export_slack_kw)
        self.metrics.voltage_slack_pu.set(result.voltage_slack_pu)
        self.metrics.rating_slack_kva.set(result.rating_slack_kva)
        return result

    async def _write(
        self, snapshot: Snapshot, result: DispatchResult, t: _Timings
    ) -> dict[str, float]:
        """Write every dispatched setpoint of a device that answered this interval."""
        started = time.perf_counter()
        jobs: dict[str, asyncio.Task[Any]] = {}
        for name, p in result.pv_kw.items():
            drv = self.fleet.get(name)
            reading = snapshot.pv.get(name)
            if isinstance(drv, SunSpecInverter | MqttDevice) and reading is not None:
                uncurtailed = (
                    p >= reading.w_max_kw - 1e-6
                    or p >= self.estimator.pv_available_kw.get(name, math.inf) - 0.5
                )
                ceiling = reading.w_max_kw if uncurtailed else p
                jobs[name] = asyncio.create_task(
                    drv.write(PvSetpoint(device=name, p_max_kw=ceiling))
                )
        for name, p in result.battery_kw.items():
            drv = self.fleet.get(name)
            if isinstance(drv, SunSpecBattery) and name in snapshot.batteries:
                jobs[name] = asyncio.create_task(drv.write(BatterySetpoint(device=name, p_kw=p)))
        for name, p in result.load_kw.items():
            drv = self.fleet.get(name)
            load = snapshot.loads.get(name)
            if isinstance(drv, RegisterMapLoad | MqttDevice) and load is not None:
                # at its demand the load is not shed: lift the ceiling to the rating
                unshed = p >= self.estimator.load_demand_kw.get(name, math.inf) - 0.5
                ceiling = load.rating_kw if unshed else p
                jobs[name] = asyncio.create_task(
                    drv.write(LoadSetpoint(device=name, p_max_kw=ceiling))
                )
        written: dict[str, float] = {}
        if jobs:
            deadline = self.config.interval_s * 0.3
            _done, pending = await asyncio.wait(jobs.values(), timeout=deadline)
            for task in pending:
                task.cancel()
            for name, task in jobs.items():
                if task in pending:
                    self.metrics.write_errors.labels(name).inc()
                    log.error(
                        "write_failed", device=name, reason="no answer within the write deadline"
                    )
                    continue
                err = task.exception()
                if err is not None:
                    self.metrics.write_errors.labels(name).inc()
                    level = (
                        log.error
                        if isinstance(err, UnsafeWriteError | DeviceError)
                        else log.critical
                    )
                    level("write_failed", device=name, reason=str(err))
                    continue
                res = task.result()
                written[name] = res.written
                self.estimator.last_setpoint_kw[name] = res.written
                self.metrics.setpoint_kw.labels(name, self.health[name].kind).set(res.written)
            if pending:
                await asyncio.wait(pending)
        t.write_ms = (time.perf_counter() - started) * 1000.0
        self.metrics.write_duration.observe(t.write_ms / 1000.0)
        return written

    def _record(
        self,
        snapshot: Snapshot,
        result: DispatchResult | None,
        setpoints: dict[str, float],
        status: str,
        t: _Timings,
        cycle_ms: float,
    ) -> CycleRecord:
        if snapshot.head is not None:
            self.metrics.import_kw.set(snapshot.head.p_kw)
        return CycleRecord(
            cycle=self._cycle,
            status=status,
            at_s=self.clock.monotonic(),
            import_kw=snapshot.head.p_kw if snapshot.head else None,
            import_estimate_kw=result.import_kw if result else None,
            import_limit_kw=self.limits.import_kw,
            export_limit_kw=self.limits.export_kw,
            losses_kw=result.losses_kw if result else None,
            curtailed_kw=result.curtailed_kw if result else None,
            v_min_pu=result.v_min_pu if result else None,
            setpoints_kw=setpoints,
            devices_up=len(self.fleet) - len(snapshot.missing),
            devices_missing=tuple(sorted(snapshot.missing)),
            poll_ms=t.poll_ms,
            solve_ms=t.solve_ms,
            write_ms=t.write_ms,
            cycle_ms=cycle_ms,
            dr_events=self._dr_events,
        )


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _config_dir(loaded: LoadedConfig) -> Path | None:
    """Where the config file sits: relative device file paths (register maps) start there."""
    path = Path(loaded.source)
    return path.resolve().parent if path.is_file() else None
