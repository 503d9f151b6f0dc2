"""The control loop: tick, poll, snapshot, dispatch, write, record.

The controller ticks at ``t0 + k·interval`` on an injected clock, never two cycles at once; an
overrun is counted and the next tick is the next one on the grid, never queued. Each phase has a
deadline inside the interval, on the clock: a device that misses the poll deadline is missing
this interval. ``Controller`` knows devices only through ``devices.Device``: it reads each one,
keys the snapshot on the reading's kind, and writes each the setpoint of its kind
(``controller.setpoints``). It is built by the composition root (``controller.daemon.Daemon``),
which owns the fleet, the journal, the DR service and the background tasks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from controller.clock import Clock
from controller.config import LoadedConfig
from controller.correction import CorrectionSettings, LimitCorrection, LimitCorrector, headroom_kw
from controller.dr.overlap import StoredEvent
from controller.estimation import BusEstimator, EstimateSummary
from controller.flex_outlet import FlexOutlet
from controller.horizon import (
    EventOutlook,
    ForecasterLike,
    ForecastFramesLike,
    PlanReserve,
    StepLimits,
    event_outlook,
    horizon_forecast,
    horizon_spec,
    limits_when_step0_ends,
    net_import_kw,
    step_limits,
    total_at,
)
from controller.metrics import Metrics
from controller.plan_outlet import PlanOutlet
from controller.prices import PriceFeed, Tariff, step_prices
from controller.records import ActiveLimits, CycleRecord, CycleStatus
from controller.setpoints import Headroom, setpoints
from controller.snapshot import (
    EstimatorState,
    SlackVoltage,
    Snapshot,
    case_loads,
    der_injections_kvar,
    der_injections_kw,
    dispatch_input,
    estimate_load_scale,
    slack_voltage,
)
from devices import (
    BadReading,
    BatteryReading,
    Device,
    DeviceError,
    DeviceState,
    HealthTracker,
    LoadReading,
    MeterReading,
    PvReading,
    Reading,
    Transition,
    WriteResult,
)
from optimizer import (
    Dispatcher,
    DispatchInput,
    DispatchResult,
    DispatchStatus,
    proportional_curtailment,
)

__all__ = ["Controller", "DrSource", "JournalSink"]

log = structlog.get_logger("feederd")

SOLVE_BUDGET_FRACTION = 0.4
"""Of the interval: how long the controller waits for the solver before the fallback rule."""
SOLVER_TIME_LIMIT_FRACTION = 0.3
"""Of the interval: the solver's own time limit (inside the budget)."""
FORECAST_BUDGET_FRACTION = 0.05
"""Of the interval: how long the controller waits for the forecast before persistence."""
WRITE_DEADLINE_FRACTION = 0.3
"""Of the interval: how long the writes may take; a write still running is an error."""


class JournalSink(Protocol):
    def append(self, record: CycleRecord, at: datetime) -> None: ...


class DrSource(Protocol):
    """DR events (controller/dr): the limits for each interval, the events the horizon sees,
    what the plan predicts for them, and what the interval did."""

    def limits_for_cycle(self) -> ActiveLimits: ...

    def events_now(self) -> list[StoredEvent]: ...

    def predicted(self, outlook: Mapping[str, EventOutlook]) -> None: ...

    def cycle_done(self, record: CycleRecord) -> None: ...


class PriceSource(Protocol):
    """The price feed (``controller.pricefeed.PriceFeedService``): the feed in force."""

    def feed(self, now: datetime) -> PriceFeed | None: ...


CLOCK_JUMP_S = 60.0
"""The wall clock moving this much more (or less) than the monotonic one between two intervals
is a jump (an NTP step, a manual change), said in the log; smaller is drift."""


@dataclass(slots=True)
class _Timings:
    poll_ms: float = 0.0
    solve_ms: float = 0.0
    write_ms: float = 0.0


class Controller:
    """One feeder's controller. ``run`` is the daemon's loop; ``cycle`` is one interval."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: Clock,
        fleet: Mapping[str, Device],
        metrics: Metrics | None = None,
        on_cycle: Callable[[CycleRecord], None] | None = None,
        journal: JournalSink | None = None,
        dr: DrSource | None = None,
        forecaster: ForecasterLike | None = None,
        prices: PriceSource | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.network = loaded.network
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.fleet = fleet
        self.on_cycle = on_cycle
        self.journal = journal
        self.dr = dr
        self._dr_events: tuple[str, ...] = ()
        self.forecaster = forecaster
        self.prices = prices
        self.horizon = horizon_spec(self.config)
        """The dispatch's steps: fixed for the config, so the kept model warm-starts."""
        tariff = self.config.tariff
        self.tariff = None if tariff is None else Tariff(tariff, self.config.tariff_timezone)
        control = self.config.control
        self.reserve = PlanReserve(
            margin_pct=control.limit_margin_pct,
            reserve_pct=control.correction_max_pct if control.limit_correction else 0.0,
            floor_kw=control.correction_max_floor_kw if control.limit_correction else 0.0,
        )
        """How far inside its limits the plan holds its later steps (``PlanReserve``)."""
        self._forecast_failed: str | None = None  # the forecaster's last error, said once
        self._forecasting: asyncio.Future[ForecastFramesLike | None] | None = None
        self._frames: ForecastFramesLike | None = None  # this interval's forecast
        self._outlook_kw: float | None = None  # this interval's plan's largest shortfall
        self._clock_mark: tuple[float, datetime] | None = None  # (monotonic, wall) last interval
        self._beyond: set[str] = set()  # events said to begin beyond the horizon
        self.last_plan_input: tuple[DispatchResult, DispatchInput, datetime] | None = None
        """The last plan the LP made, with what it was made from and when (``_plan_ready``)."""
        self.plans = PlanOutlet(metrics=self.metrics, journal=journal, forecaster=forecaster)
        """The plan's metrics, journal row and ``<root>/plan`` (``controller.plan_outlet``)."""
        interval = self.config.interval_s
        self.dispatcher = Dispatcher(
            self.network, time_limit_s=interval * SOLVER_TIME_LIMIT_FRACTION
        )
        self._solving: asyncio.Future[DispatchResult] | None = None
        self.flex = (
            FlexOutlet(
                self.config.flex,
                site=self.config.site,
                interval_s=interval,
                clock=clock,
                metrics=self.metrics,
                dispatcher=self.dispatcher,
            )
            if self.config.flex.enabled
            else None
        )
        """The flexibility, after each interval's writes (``controller.flex_outlet``)."""
        self.stop: asyncio.Event | None = None
        """``run``'s stop: set, the interval in progress ends without publishing more."""
        self.estimator = EstimatorState()
        self.health = {
            name: HealthTracker(
                monotonic=clock.monotonic, stale_after=self.config.poll.stale_after_intervals
            )
            for name in fleet
        }
        self.limits = ActiveLimits(
            import_kw=self.config.dr.import_limit_kw, export_kw=self.config.dr.export_limit_kw
        )
        control = self.config.control
        self.corrector = LimitCorrector(
            CorrectionSettings(
                enabled=control.limit_correction,
                gain=control.correction_gain,
                max_pct=control.correction_max_pct,
                max_floor_kw=control.correction_max_floor_kw,
                reset_pct=control.correction_reset_pct,
                margin_pct=control.limit_margin_pct,
            )
        )
        self._correction: LimitCorrection | None = None  # this interval's
        self.head_name = loaded.head_meter.name
        devices = {d.name: d for d in self.config.devices}
        self._bus = {name: devices[name].bus for name in fleet}
        self._ramp = {name: devices[name].ramp_kw_per_s for name in fleet}
        self._shed_cost = {
            name: devices[name].shed_cost_per_kwh for name in fleet if fleet[name].kind == "load"
        }
        self._bands = loaded.bus_bands_pu
        self._slack: SlackVoltage | None = None  # the last interval's that dispatched
        self.bus_estimator = (
            BusEstimator(self.config, self.network, metrics=self.metrics)
            if self.config.estimation_enabled
            else None
        )
        self._estimate: EstimateSummary | None = None  # this interval's, if it made one
        self._refused: dict[tuple[str, str], int] = {}  # messages refused, as last counted
        self._p_only: set[str] = set()  # inverters said to have no reactive points
        self._fails_open_said = False  # revert_fails_open said for the export limit in force
        self.last_input: DispatchInput | None = None
        """What the last interval that dispatched dispatched on (its bus loads, units)."""
        self._cycle = 0
        self._armed = False  # no setpoint before the first complete, valid snapshot
        self.overruns = 0
        for name, device in fleet.items():
            self.metrics.device_up.labels(name, device.kind).set(0)
            self.metrics.device_stale.labels(name, device.kind).set(0)
        self._publish_limits()

    # -- limits ---------------------------------------------------------------------------

    def set_limits(self, *, import_kw: float | None, export_kw: float | None) -> None:
        """The limits for the next intervals (without a DR source: the caller's own)."""
        self.limits = ActiveLimits(import_kw=import_kw, export_kw=export_kw)
        self._publish_limits()

    def _publish_limits(self) -> None:
        imp, exp = self.limits.import_kw, self.limits.export_kw
        self.metrics.dr_import_limit_kw.set(math.nan if imp is None else imp)
        self.metrics.dr_export_limit_kw.set(math.nan if exp is None else exp)

    # -- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick on ``t0 + k·interval`` until ``stop`` is set."""
        interval = self.config.interval_s
        self.stop = stop
        t0 = self.clock.monotonic()
        k = 0
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                tick = t0 + k * interval
                delay = tick - self.clock.monotonic()
                if delay > 0:
                    sleeper = asyncio.ensure_future(self.clock.sleep(delay))
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
                self.limits = active
                self._publish_limits()
        snapshot = await self.poll(t)
        self._note_reactive(snapshot)
        self._note_revert(snapshot)
        self._correct(snapshot)
        self._estimate = None
        self._frames = None
        self._outlook_kw = None
        result: DispatchResult | None = None
        written: dict[str, float] = {}
        if not snapshot.valid:
            status = CycleStatus.NO_HEAD_METER
        elif not self._armed and not self._first_snapshot_complete(snapshot):
            status = CycleStatus.WAITING_FIRST_SNAPSHOT
        else:
            self._armed = True
            result = await self._dispatch(snapshot, t)
            written = await self._write(snapshot, result, t)
            status = CycleStatus.of(result.status)
        cycle_ms = (time.perf_counter() - started) * 1000.0
        record = self._record(snapshot, result, written, status, t, cycle_ms)
        self.metrics.cycles.labels(status.value).inc()
        self.metrics.cycle_duration.observe(cycle_ms / 1000.0)
        log.info(
            "cycle",
            cycle=record.cycle,
            status=status.value,
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
        if self.flex is not None:  # after the writes and the record: it never delays them
            await self.flex.interval(self, record)
        return record

    def _first_snapshot_complete(self, snapshot: Snapshot) -> bool:
        """Complete: every device answered, or has missed enough intervals to be given up."""
        return all(self.health[name].stale for name in snapshot.missing)

    async def poll(self, t: _Timings | None = None) -> Snapshot:
        """The poll phase alone: read every device within the poll deadline, update their
        health, and return this interval's snapshot (``feederd bench poll`` times it)."""
        t = t or _Timings()
        deadline = self.config.interval_s * self.config.poll.deadline_fraction
        started = time.perf_counter()
        tasks = {name: asyncio.ensure_future(device.read()) for name, device in self.fleet.items()}
        _done, pending = await self.clock.wait(tasks.values(), deadline)
        for task in pending:
            task.cancel()
        readings: dict[str, Reading] = {}
        for name, task in tasks.items():
            if task in pending:
                self._failed(name, f"no answer within the poll deadline ({deadline:g} s)")
                continue
            err = task.exception()
            if err is None:
                reading: Reading = task.result()
                readings[name] = reading
                dropped = getattr(reading, "dropped", ())
                if dropped:
                    self.metrics.bad_readings.labels(name).inc(len(dropped))
                self._health(name, self.health[name].record_good(dropped=len(dropped)))
            elif isinstance(err, DeviceError):
                bad = isinstance(err, BadReading)
                if bad:
                    self.metrics.bad_readings.labels(name).inc()
                self._failed(name, str(err), bad_reading=bad)
            else:  # a driver bug: the interval goes on without the device
                reason = f"unexpected {type(err).__name__}: {err}"
                log.error("device_read_crashed", device=name, error=reason)
                self._failed(name, reason)
        if pending:
            await asyncio.wait(pending)
        self._count_refusals()
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
            meters={
                n: r
                for n, r in readings.items()
                if isinstance(r, MeterReading) and n != self.head_name
            },
            missing=frozenset(set(self.fleet) - set(readings)),
        )

    def _count_refusals(self) -> None:
        """Messages a device refused since the last poll (an MQTT meter's garbage, or a
        timestamp too old or in the future), into ``feederd_device_refused_messages_total``;
        the device itself logs the first of each run."""
        for name, device in self.fleet.items():
            refused: Mapping[str, int] = getattr(device, "refused", None) or {}
            for reason, count in refused.items():
                seen = self._refused.get((name, reason), 0)
                if count > seen:
                    self.metrics.refused_messages.labels(name, reason).inc(count - seen)
                    self._refused[(name, reason)] = count

    def _failed(self, name: str, reason: str, *, bad_reading: bool = False) -> None:
        self._health(name, self.health[name].record_failure(reason, bad_reading=bad_reading))

    def _health(self, name: str, change: Transition | None) -> None:
        """Metrics follow the state; a log line marks each change of it, never a repetition."""
        tracker = self.health[name]
        kind = self.fleet[name].kind
        answered = tracker.state in (DeviceState.UP, DeviceState.DEGRADED) and tracker.failures == 0
        self.metrics.device_up.labels(name, kind).set(1 if answered else 0)
        self.metrics.device_stale.labels(name, kind).set(1 if tracker.stale else 0)
        if change is None:
            return
        if change.new is DeviceState.UP and change.old is DeviceState.DOWN:
            log.debug("device_up", device=name)
        elif change.new is DeviceState.UP and change.failures == 0:
            log.info("device_recovered", device=name, reason="every value usable again")
        elif change.new is DeviceState.UP:
            log.info("device_recovered", device=name, after_intervals=change.failures)
        elif change.new is DeviceState.DEGRADED:
            log.warning("device_degraded", device=name, reason=change.reason)
        elif change.new is DeviceState.STALE:
            log.error(
                "device_stale",
                device=name,
                reason=change.reason,
                missed_intervals=change.failures,
                last_good_age_s=_r(tracker.age_s()),
            )

    def _correct(self, snapshot: Snapshot) -> LimitCorrection:
        """This interval's corrections of the limits: the head import measured now against
        the one the last dispatch predicted (``controller.correction``)."""
        units = (
            id(self.network),
            frozenset(snapshot.pv) | frozenset(snapshot.batteries) | frozenset(snapshot.loads),
        )
        corr = self.corrector.begin(
            measured_kw=snapshot.head.p_kw if snapshot.head is not None else None,
            import_limit_kw=self.limits.import_kw,
            export_limit_kw=self.limits.export_kw,
            units=units,
        )
        for reason in corr.reset:
            log.info("limit_correction_reset", reason=reason)
        for label, value in (("import", corr.import_kw), ("export", corr.export_kw)):
            self.metrics.limit_correction_kw.labels(label).set(math.nan if value is None else value)
        self._correction = corr
        return corr

    def _slack_voltage(self, snapshot: Snapshot) -> SlackVoltage:
        """This interval's slack voltage; a log line when its source changes (or why the head
        meter's voltage is not believed, once per reason)."""
        sv = slack_voltage(
            snapshot.head, self.network, from_meter=self.config.feeder.v_slack_from_meter
        )
        last = self._slack
        if sv.rejected is not None and (last is None or last.rejected != sv.rejected):
            log.warning("slack_voltage_not_measured", reason=sv.rejected, using_pu=sv.v_pu)
        elif last is not None and last.source != sv.source:
            log.info("slack_voltage_source", source=sv.source, v_pu=round(sv.v_pu, 4))
        self._slack = sv
        self.metrics.slack_voltage_pu.set(sv.v_pu)
        self.metrics.slack_voltage_measured.set(1 if sv.source == "meter" else 0)
        return sv

    def _estimated_loads(
        self, snapshot: Snapshot, v_slack_pu: float
    ) -> tuple[Mapping[int, float], Mapping[int, float]] | None:
        """The bus loads of this interval's state estimate (``None``: estimation is off, or
        failed this interval, and the dispatch takes the head-scaled loads as before)."""
        if self.bus_estimator is None or snapshot.head is None:
            return None
        injections = der_injections_kw(
            snapshot, pv_bus=self._bus, battery_bus=self._bus, load_bus=self._bus
        )
        injections_kvar = der_injections_kvar(snapshot, pv_bus=self._bus)
        scale = estimate_load_scale(
            self.network,
            head_import_kw=snapshot.head.p_kw,
            injections_kw=injections,
            v_slack_pu=v_slack_pu,
            injections_kvar=injections_kvar,
        )
        pseudo_kw, pseudo_kvar = case_loads(self.network, scale)
        measured = self._slack is not None and self._slack.source == "meter"
        self._estimate = self.bus_estimator.estimate(
            snapshot.head,
            snapshot.meters,
            pseudo_loads_kw=pseudo_kw,
            pseudo_loads_kvar=pseudo_kvar,
            injections_kw=injections,
            injections_kvar=injections_kvar,
            # a measured busbar is estimated with the meters along the feeder; a configured
            # one (feeder.v_slack_pu, v_slack_from_meter = false) is held
            v_slack_pu=None if measured else v_slack_pu,
        )
        if self._estimate is None:
            return pseudo_kw, pseudo_kvar
        return self._estimate.loads_kw, self._estimate.loads_kvar

    def _ramp_direction(self, corr: LimitCorrection) -> int:
        """Which way the sun's ramp is anticipated this interval: toward the limit in force
        (+1 rising under an export limit, -1 falling under an import limit; 0: neither, or
        ``ramp_anticipation`` off)."""
        if not self.config.control.ramp_anticipation:
            return 0
        if corr.export_limit_kw is not None:
            return 1
        return -1 if corr.import_limit_kw is not None else 0

    def _dispatched_against(self) -> dict[str, float] | None:
        """What each inverter was dispatched against this interval (its sun as the dispatch
        saw it, anticipated along its ramp)."""
        inp = self.last_input
        return None if inp is None else {u.name: u.available_kw for u in inp.pv}

    def _headroom(self, result: DispatchResult) -> Headroom | None:
        """The headroom this interval's dispatch left to its limits, for firm ceilings
        (``None``: ``firm_limits`` off, or no limit in force)."""
        corr = self._correction
        if not self.config.control.firm_limits or corr is None:
            return None
        if corr.import_limit_kw is None and corr.export_limit_kw is None:
            return None
        return Headroom(
            predicted_import_kw=result.import_kw,
            import_limit_kw=corr.import_limit_kw,
            export_limit_kw=corr.export_limit_kw,
        )

    async def _dispatch(self, snapshot: Snapshot, t: _Timings) -> DispatchResult:
        started = time.perf_counter()
        corr = self._correction or self._correct(snapshot)
        sv = self._slack_voltage(snapshot)
        bus_loads = self._estimated_loads(snapshot, sv.v_pu)
        if self._estimate is not None and sv.source == "meter":
            sv = dataclasses.replace(sv, v_pu=self._estimate.v_pu[self.network.slack_bus])
            self._slack = sv
            self.metrics.slack_voltage_pu.set(sv.v_pu)
        at = snapshot.taken_at
        inp = dispatch_input(
            snapshot,
            self.network,
            pv_bus=self._bus,
            battery_bus=self._bus,
            ramp_kw_per_s=self._ramp,
            state=self.estimator,
            interval_s=self.config.interval_s,
            import_limit_kw=corr.import_limit_kw,
            export_limit_kw=corr.export_limit_kw,
            v_min_pu=self.config.feeder.dispatch_band_pu[0],
            v_max_pu=self.config.feeder.dispatch_band_pu[1],
            price_per_kwh=self.config.dr.price_per_kwh,
            load_bus=self._bus,
            shed_cost_per_kwh=self._shed_cost,
            v_slack_pu=sv.v_pu,
            v_band_pu=self._bands,
            bus_loads=bus_loads,
            ramp_direction=self._ramp_direction(corr),
            reactive=self.config.control.reactive_power,
            reactive_cost_per_kvarh=self.config.control.reactive_cost_per_kvarh,
            horizon=self.horizon,
            battery_end_value_per_kwh=self.config.control.battery_end_value_per_kwh,
        )
        inp = await self._ahead(inp, snapshot, at, corr)
        self.last_input = inp
        budget = self.config.interval_s * SOLVE_BUDGET_FRACTION
        result: DispatchResult | None = None
        if self._solving is not None and not self._solving.done():
            reason = "the previous solve is still running"
        else:
            solving = asyncio.ensure_future(asyncio.to_thread(self.dispatcher.solve, inp))
            self._solving = solving
            done, _ = await self.clock.wait({solving}, budget)  # never cancels the solve
            if not done:
                reason = f"solver ran past its budget of {budget:g} s"
            elif (err := solving.exception()) is not None:
                reason = f"the dispatch raised {type(err).__name__}: {err}"
            else:
                result = solving.result()
                reason = result.message
        if result is None or result.status in (
            DispatchStatus.SOLVER_FAILED,
            DispatchStatus.TIMED_OUT,
        ):
            log.error("solver_fallback", reason=reason, rule="proportional")
            self.metrics.fallbacks.inc()
            self.plans.missed()
            result = proportional_curtailment(self.network, inp)
        else:
            self._planned(result, inp, at)
            if math.isfinite(result.import_kw):  # the LP's prediction, for the next interval
                room_down, room_up = headroom_kw(inp, result)
                self.corrector.dispatched(
                    predicted_kw=result.import_kw,
                    room_down_kw=room_down,
                    room_up_kw=room_up,
                    import_slack_kw=result.import_slack_kw,
                    export_slack_kw=result.export_slack_kw,
                )
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

    # -- the horizon ----------------------------------------------------------------------

    async def _ahead(
        self, inp: DispatchInput, snapshot: Snapshot, at: datetime, corr: LimitCorrection
    ) -> DispatchInput:
        """``inp`` with what its horizon sees ahead (``controller.horizon``): the forecast's
        loads and PV, each step's prices and the DR events' limits. Nothing here stops the
        interval: a forecaster that fails leaves persistence (each step as now)."""
        spec = self.horizon
        starts, steps = spec.starts_s, spec.steps_s
        pv_now = {n: self.estimator.pv_available_kw.get(n, 0.0) for n in snapshot.pv}
        self._frames = await self._forecast(inp, pv_now, at)
        feed = self.prices.feed(at) if self.prices is not None else None
        prices = step_prices(
            at,
            starts,
            steps,
            default_per_kwh=self.config.dr.price_per_kwh,
            tariff=self.tariff,
            feed=feed,
        )
        limits: StepLimits | None = None
        if spec.horizon > 1:
            net = net_import_kw(inp.loads_kw, pv_now, self._frames, spec.horizon)
            dr = self.config.dr
            limits = step_limits(
                self.dr.events_now() if self.dr is not None else (),
                at,
                starts,
                steps,
                default_import_kw=dr.import_limit_kw,
                default_export_kw=dr.export_limit_kw,
                net_kw=net,
            )
        imp0, exp0 = self._step0_limits(inp, pv_now, at, corr)
        forecast = horizon_forecast(
            spec,
            frames=self._frames,
            prices=prices,
            limits=limits,
            step0_import_limit_kw=imp0,
            step0_export_limit_kw=exp0,
            reserve=self.reserve,
            held_now_import_kw=corr.import_limit_kw,
            held_now_export_kw=corr.export_limit_kw,
            pv_units={u.name for u in inp.pv},
        )
        return dataclasses.replace(
            inp,
            price_per_kwh=prices.import_per_kwh[0],
            forecast=forecast,
            import_limit_kw=imp0,
            export_limit_kw=exp0,
        )

    def _step0_limits(
        self, inp: DispatchInput, pv_now: Mapping[str, float], at: datetime, corr: LimitCorrection
    ) -> tuple[float | None, float | None]:
        """Step 0's limits: those in force now (corrected), and those of an event that begins
        before the next interval's writes replace step 0's setpoints
        (``controller.horizon.limits_when_step0_ends``), held inside by the plan's reserve."""
        if self.dr is None:
            return corr.import_limit_kw, corr.export_limit_kw
        ending = limits_when_step0_ends(
            self.dr.events_now(),
            at,
            self.config.interval_s,
            default_import_kw=None,
            default_export_kw=None,
            net_kw=sum(inp.loads_kw.values()) - sum(pv_now.values()),
        )
        reserve = self.reserve or PlanReserve()

        def tighter(now: float | None, then: float | None, low: float) -> float | None:
            if then is None:
                return now
            then = max(then - reserve.kw(then), low)
            return then if now is None else min(now, then)

        return (
            tighter(corr.import_limit_kw, ending.import_kw[0], -math.inf),
            tighter(corr.export_limit_kw, ending.export_kw[0], 0.0),
        )

    async def _forecast(
        self, inp: DispatchInput, pv_now: Mapping[str, float], at: datetime
    ) -> ForecastFramesLike | None:
        """This interval's measurements into the forecaster, and its frames for the horizon,
        on a thread of their own within ``FORECAST_BUDGET_FRACTION`` of the interval (a model
        fit must not hold the loop). ``None`` (persistence: each step as now): no forecaster,
        a one-step horizon, or it failed or ran late (said once per cause)."""
        steady = self._clock_steady(at)
        if self.forecaster is None:
            return None
        if self._forecasting is not None and not self._forecasting.done():
            self._forecast_trouble("the last forecast is still running")
            return None
        spec = self.horizon
        job = asyncio.ensure_future(
            asyncio.to_thread(
                self._forecast_work, self.forecaster, at, inp.loads_kw, pv_now, steady
            )
        )
        self._forecasting = job
        budget = self.config.interval_s * FORECAST_BUDGET_FRACTION
        done, _ = await self.clock.wait({job}, budget)  # never cancels the thread
        if not done:
            self._forecast_trouble(f"the forecast ran past its budget of {budget:g} s")
            return None
        if (err := job.exception()) is not None:
            self._forecast_trouble(f"{type(err).__name__}: {err}")
            return None
        if self._forecast_failed is not None:
            log.info("forecast_recovered", source=getattr(job.result(), "source", None))
            self._forecast_failed = None
        return job.result() if spec.horizon > 1 else None

    def _forecast_work(
        self,
        forecaster: ForecasterLike,
        at: datetime,
        loads_kw: Mapping[int, float],
        pv_now: Mapping[str, float],
        observe: bool,
    ) -> ForecastFramesLike | None:
        """The forecaster's work for one interval (on a worker thread)."""
        spec = self.horizon
        if observe:
            forecaster.observe(at, loads_kw, pv_now)
        if spec.horizon <= 1:
            return None
        return forecaster.forecast(at, spec.starts_s, spec.steps_s)

    def _forecast_trouble(self, reason: str) -> None:
        if reason != self._forecast_failed:
            log.error("forecast_failed", error=reason, fallback="persistence (as now)")
            self._forecast_failed = reason

    def _clock_steady(self, at: datetime) -> bool:
        """Whether the wall clock moved with the monotonic one since the last interval; a jump
        is said once, and that interval's measurements are kept out of the history (they
        would land in the wrong slot); the horizon reads every time from the new clock."""
        mono = self.clock.monotonic()
        mark, self._clock_mark = self._clock_mark, (mono, at)
        if mark is None:
            return True
        jump = (at - mark[1]).total_seconds() - (mono - mark[0])
        if abs(jump) < max(CLOCK_JUMP_S, self.config.interval_s):
            return True
        log.warning(
            "clock_jumped",
            jump_s=round(jump, 1),
            now=at.isoformat(),
            reason="the wall clock moved unlike the monotonic one: this interval is left out "
            "of the forecasts' history",
        )
        return False

    def _planned(self, result: DispatchResult, inp: DispatchInput, at: datetime) -> None:
        """After a solve by the LP: what its plan predicts for the DR events, and the plan's
        hook."""
        outlook: dict[str, EventOutlook] = {}
        if self.dr is not None:
            events = self.dr.events_now()
            outlook = event_outlook(events, at, result, self.reserve)
            self.dr.predicted(outlook)
            self._note_beyond(events, outlook, at)
        slacks = [
            v
            for v in (*result.import_slack_plan_kw, *result.export_slack_plan_kw)
            if math.isfinite(v)
        ]
        self._outlook_kw = max([0.0, *slacks])
        self._plan_ready(result, inp, at)

    def _note_beyond(
        self, events: list[StoredEvent], outlook: Mapping[str, EventOutlook], at: datetime
    ) -> None:
        """Say once per event that it begins beyond the horizon: the plan sees it, and
        dr/status judges it, once it comes within reach."""
        end = at + timedelta(seconds=self.horizon.span_s)
        live = {s.event.id for s in events}
        self._beyond &= live
        for s in events:
            if s.event.id in outlook or s.event.id in self._beyond or s.event.start < end:
                continue
            self._beyond.add(s.event.id)
            log.info(
                "dr_event_beyond_horizon",
                id=s.event.id,
                start=s.event.start.isoformat(),
                seen_from=(s.event.start - timedelta(seconds=self.horizon.span_s)).isoformat(),
            )

    def _plan_ready(self, result: DispatchResult, inp: DispatchInput, at: datetime) -> None:
        """The hook for the plan (``controller.plan``): called after each solve by the LP."""
        self.last_plan_input = (result, inp, at)
        self.plans.made(result, inp, at, self.dr.events_now() if self.dr is not None else ())

    def _forecast_1h(self, inp: DispatchInput | None) -> tuple[float | None, float | None]:
        """The forecast's total load and PV available an hour from now (``None``: none)."""
        frames = self._frames
        if frames is None or inp is None:
            return None, None
        starts = self.horizon.starts_s
        k = max(i for i, s in enumerate(starts) if s <= 3600.0)
        if k == 0 or starts[-1] + self.horizon.steps_s[-1] < 3600.0:
            return None, None
        n = self.horizon.horizon
        pv_now = {u.name: u.available_kw for u in inp.pv}
        load = total_at(frames.load_kw, dict(inp.loads_kw), n)[k]
        pv = total_at(frames.pv_kw, dict(pv_now), n)[k]
        return load, pv

    async def _write(
        self, snapshot: Snapshot, result: DispatchResult, t: _Timings
    ) -> dict[str, float]:
        """Write every dispatched setpoint of a device that answered this interval."""
        started = time.perf_counter()
        jobs: dict[str, asyncio.Future[Any]] = {
            name: asyncio.ensure_future(self.fleet[name].write(sp))
            for name, sp in setpoints(
                result,
                snapshot,
                self.estimator,
                self._headroom(result),
                reactive=self.config.control.reactive_power,
                available_kw=self._dispatched_against(),
            ).items()
            if self.fleet[name].capabilities.writable
        }
        written: dict[str, float] = {}
        if jobs:
            deadline = self.config.interval_s * WRITE_DEADLINE_FRACTION
            _done, pending = await self.clock.wait(jobs.values(), deadline)
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
                    level = log.error if isinstance(err, DeviceError) else log.critical
                    level("write_failed", device=name, reason=f"{type(err).__name__}: {err}")
                    continue
                res = task.result()
                written[name] = res.written
                self._reactive_written(name, res)
                self.estimator.last_setpoint_kw[name] = res.written
                self.metrics.setpoint_kw.labels(name, self.fleet[name].kind).set(res.written)
            if pending:
                await asyncio.wait(pending)
        t.write_ms = (time.perf_counter() - started) * 1000.0
        self.metrics.write_duration.observe(t.write_ms / 1000.0)
        return written

    def _reactive_written(self, name: str, res: WriteResult) -> None:
        """The vars an inverter was sent (and whether the envelope moved them)."""
        if self.fleet[name].kind != "pv" or not self.config.control.reactive_power:
            return
        self.metrics.reactive_kvar.labels(name).set(math.nan if res.q_kvar is None else res.q_kvar)
        if res.q_clamped:
            self.metrics.reactive_clamped.labels(name).inc()

    def _note_revert(self, snapshot: Snapshot) -> None:
        """When an export limit comes into force, name the inverters whose limit fails open
        to 100 % when feederd stops (123): the cap then rests on the site's own settings."""
        if self.limits.export_kw is None:
            self._fails_open_said = False
            return
        if self._fails_open_said or not snapshot.pv:
            return
        self._fails_open_said = True
        open_ = sorted(n for n, r in snapshot.pv.items() if not r.explicit_revert)
        if open_:
            log.warning(
                "revert_fails_open",
                devices=open_,
                export_limit_kw=self.limits.export_kw,
                reason="their limit reverts to 100 % when feederd stops (SunSpec 123): the "
                "export cap then rests on the site's export limitation (README, Firm limits)",
            )

    def _note_reactive(self, snapshot: Snapshot) -> None:
        """Say once per run which inverters are dispatched on their active power alone."""
        if not self.config.control.reactive_power:
            return
        for name, r in snapshot.pv.items():
            if not r.reactive and name not in self._p_only:
                self._p_only.add(name)
                self.metrics.reactive_kvar.labels(name).set(math.nan)
                log.warning(
                    "reactive_unsupported",
                    device=name,
                    reason="no fixed reactive-power points (SunSpec 123 VArPct, 704 VarSet): "
                    "dispatched on its active power alone",
                )

    def _record(
        self,
        snapshot: Snapshot,
        result: DispatchResult | None,
        written: dict[str, float],
        status: CycleStatus,
        t: _Timings,
        cycle_ms: float,
    ) -> CycleRecord:
        if snapshot.head is not None:
            self.metrics.import_kw.set(snapshot.head.p_kw)
        est = self._estimate
        corr = self._correction
        load_1h, pv_1h = self._forecast_1h(self.last_input) if result else (None, None)
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
            v_slack_pu=self._slack.v_pu if result and self._slack else None,
            setpoints_kw=written,
            devices_up=len(self.fleet) - len(snapshot.missing),
            devices_missing=tuple(sorted(snapshot.missing)),
            poll_ms=t.poll_ms,
            solve_ms=t.solve_ms,
            write_ms=t.write_ms,
            cycle_ms=cycle_ms,
            dr_events=self._dr_events,
            estimation_residual=est.residual if est else None,
            estimation_dropped=est.dropped if est else (),
            estimated_v_min_pu=est.v_min_pu if est and est.v_pu else None,
            estimated_v_max_pu=est.v_max_pu if est and est.v_pu else None,
            estimated_v_pu=dict(est.v_pu) if est else None,
            picture_v_pu=self._picture_v_pu(result),
            import_correction_kw=corr.import_kw if corr and result else None,
            export_correction_kw=corr.export_kw if corr and result else None,
            model_error_kw=corr.error_kw if corr else None,
            forecast_load_1h_kw=load_1h,
            forecast_pv_1h_kw=pv_1h,
            plan_shortfall_kw=self._outlook_kw if result else None,
        )

    def _picture_v_pu(self, result: DispatchResult | None) -> dict[int, float] | None:
        """The bus voltages of the operating point the completed dispatch linearised at."""
        ops = self.dispatcher.last_operating_points
        solved = (DispatchStatus.OPTIMAL, DispatchStatus.LIMIT_RELAXED)
        if result is None or result.status not in solved or not ops:
            return None  # the fallback rule has no picture (and a late solve may be writing)
        return dict(ops[0].v_pu)


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)
