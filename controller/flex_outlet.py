"""Each interval's flexibility: computed after the writes, published on ``<root>/flex``.

``FlexOutlet.interval(controller, record)`` is awaited by the control loop at the end of each
interval, after the writes, the journal and the DR service have had the interval's record: it
never delays a setpoint. It

- takes the interval's dispatch input when the LP dispatched it, and each step's import limit
  that holds without the fleet coordinator (``base_import_limits``: the coordinator's events,
  ids starting ``controller.flex.FLEET_EVENT_PREFIX``, are left out, so that ``max_kw`` does
  not chase what the coordinator asked);
- runs the parametric solves of the kept LP (``optimizer.Dispatcher.flexibility``) on a worker
  thread, as the dispatch runs, within ``[flex] budget_fraction`` of the interval on the
  daemon's clock (the solves keep to the same budget on their own timer, and give way to the
  next interval's dispatch);
- builds the contract's ``controller.flex.Flexibility`` (nulls when the fallback rule
  dispatched, the solves found nothing or ran late), sets the ``feederd_flex_*`` metrics and
  hands the document to the listeners (the MQTT intake's ``publish_retained`` on
  ``<root>/flex``: retained, QoS 1, only the latest sent).

A daemon that publishes nowhere (no ``[mqtt]``) computes nothing. An interval whose
flexibility could not be computed is counted by reason
(``feederd_flex_missed_total``) and said in the log when the reason changes (its recovery too);
the loop goes on. An interval that ends while the daemon stops publishes nothing more.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from controller.clock import Clock
from controller.config.flex import FlexConfig
from controller.dr.overlap import StoredEvent
from controller.flex import FLEET_EVENT_PREFIX, MAX_EVENTS, FlexEvent, Flexibility
from controller.horizon import PlanReserve, step_limits
from controller.metrics import Metrics
from controller.records import CycleRecord, CycleStatus
from devices import DeviceState

if TYPE_CHECKING:
    from controller.loop import Controller
    from optimizer import Dispatcher, DispatchInput, Network
    from optimizer.flexibility import FlexResult

__all__ = ["MIN_RANGE_KW", "FlexOutlet", "base_import_limits", "flex_events", "health_of"]

log = structlog.get_logger("feederd.flex")

MIN_RANGE_KW = 1.0
"""A range narrower than this is published as none (``min_kw = max_kw``, one point): the
contract's figures are rounded to 0.01 kW, and points closer than that would collide."""
_SOLVED = (CycleStatus.OPTIMAL, CycleStatus.LIMIT_RELAXED)


def is_fleet(event: StoredEvent) -> bool:
    """One of the fleet coordinator's events (``fleet:<target>:<revision>``)."""
    return event.event.id.startswith(FLEET_EVENT_PREFIX)


def base_import_limits(
    network: Network,
    inp: DispatchInput,
    events: Iterable[StoredEvent],
    at: datetime,
    *,
    default_import_kw: float | None,
    reserve: PlanReserve,
) -> list[float]:
    """Each step's import limit (NaN: none) that holds without the coordinator's events.

    Where the coordinator's events change no step's limit (none live, or another event wins
    over them) this is the input's own limit, exactly as the dispatch held it (corrected at
    step 0, the reserve after). A step whose limit they set is given the limit of the other
    events and the configured default (``controller.horizon.step_limits`` without them),
    held the plan's reserve inside it, or none."""
    from optimizer.profiles import profiles  # noqa: PLC0415 - the optimizer loads lazily

    prof = profiles(network, inp)
    out = [float(v) for v in prof.import_limit]
    events = [s for s in events if s.live]
    if not any(is_fleet(s) for s in events):
        return out
    net_kw = list(np.sum(prof.p_load, axis=1) - np.sum(prof.pv_upper, axis=1))
    starts, steps = inp.step_starts_s, inp.step_durations_s

    def limits(which: Sequence[StoredEvent]) -> tuple[float | None, ...]:
        return step_limits(
            which,
            at,
            starts,
            steps,
            default_import_kw=default_import_kw,
            default_export_kw=None,
            net_kw=net_kw,
        ).import_kw

    every = limits(events)
    alone = limits([s for s in events if not is_fleet(s)])
    for k, (a, b) in enumerate(zip(every, alone, strict=True)):
        if a != b:
            out[k] = math.nan if b is None else b - reserve.kw(b)
    return out


def flex_events(events: Iterable[StoredEvent], now: datetime) -> tuple[FlexEvent, ...]:
    """The DR events in force (first) and coming, at most ``MAX_EVENTS``, as the contract
    lists them."""
    live = [s for s in events if s.live and s.event.end > now]
    live.sort(key=lambda s: (not s.event.active_at(now), s.event.start, s.event.id))
    return tuple(
        FlexEvent(
            id=s.event.id,
            type=s.event.type.value,
            kw=s.event.kw,
            start=s.event.start,
            end=s.event.end,
            source=s.source,
            active=s.event.active_at(now),
        )
        for s in live[:MAX_EVENTS]
    )


def health_of(record: CycleRecord, states: Iterable[DeviceState], *, planned: bool) -> str:
    """``starting`` (no complete snapshot yet, nothing ever dispatched), ``fallback`` (this
    interval not dispatched by the LP), ``degraded`` (a device down, stale or degraded, or a
    limit relaxed) or ``ok``."""
    if record.status is CycleStatus.WAITING_FIRST_SNAPSHOT or (
        record.status is CycleStatus.NO_HEAD_METER and not planned
    ):
        return "starting"
    if record.status not in _SOLVED:
        return "fallback"
    if (
        record.status is CycleStatus.LIMIT_RELAXED
        or record.devices_missing
        or any(s is not DeviceState.UP for s in states)
    ):
        return "degraded"
    return "ok"


class FlexOutlet:
    """The flexibility's way out of the control loop (see the module docstring)."""

    def __init__(
        self,
        settings: FlexConfig,
        *,
        site: str,
        interval_s: float,
        clock: Clock,
        metrics: Metrics,
        dispatcher: Dispatcher,
    ) -> None:
        self.settings = settings
        self.site = site
        self.interval_s = interval_s
        self.clock = clock
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        """Told each interval's document (``Flexibility.to_json()``)."""
        self.last: Flexibility | None = None
        """The last interval's flexibility (``None`` before the first)."""
        self.published = 0
        self._job: asyncio.Future[tuple[FlexResult, float]] | None = None
        self._trouble: str | None = None  # the last reason said in the log
        self._misses: list[tuple[str, str, bool]] = []  # this interval's, until its end

    @property
    def window_s(self) -> float:
        return self.settings.window_min * 60.0

    @property
    def budget_s(self) -> float:
        return self.interval_s * self.settings.budget_fraction

    async def interval(self, ctl: Controller, record: CycleRecord) -> Flexibility | None:
        """One interval's flexibility, computed, counted and handed to the listeners; nothing
        is computed while nobody listens (a daemon without ``[mqtt]``)."""
        if not self.listeners:
            return None
        self._misses = []
        try:
            flex: Flexibility | None = await self._interval(ctl, record)
        except Exception as err:  # a bug here must never stop the control loop
            self._missed("failed", f"{type(err).__name__}: {err}", error=True)
            flex = None
        if ctl.stop is not None and ctl.stop.is_set():
            return None  # the daemon is stopping: its last word is not this interval's flex
        for reason, detail, error in self._misses:
            self._count(reason, detail, error=error)
        if flex is not None and flex.flexible and not self._misses and self._trouble:
            log.info("flex_recovered", after=self._trouble)
            self._trouble = None
        if flex is None:
            return None
        self.last = flex
        self.metrics.flex_min_kw.set(math.nan if flex.min_kw is None else flex.min_kw)
        self.metrics.flex_max_kw.set(math.nan if flex.max_kw is None else flex.max_kw)
        doc = flex.to_json()
        for listener in self.listeners:
            listener(doc)
        self.published += 1
        return flex

    async def _interval(self, ctl: Controller, record: CycleRecord) -> Flexibility:
        now = self.clock.now()
        events = ctl.dr.events_now() if ctl.dr is not None else []
        planned = ctl.last_plan_input
        window = min(self.window_s, ctl.horizon.span_s)
        found: FlexResult | None = None
        if record.status not in _SOLVED or planned is None or planned[1] is not ctl.last_input:
            self._missed("not_dispatched")
        elif self._job is not None and not self._job.done():
            self._missed("busy", "the last interval's flex solves are still running")
        else:
            _, inp, at = planned
            window = min(self.window_s, sum(inp.step_durations_s))
            base = base_import_limits(
                ctl.network,
                inp,
                events,
                at,
                default_import_kw=ctl.config.dr.import_limit_kw,
                reserve=ctl.reserve,
            )
            found = await self._solve(inp, base)
        min_kw = max_kw = None
        curve: tuple[tuple[float, float], ...] = ()
        if found is not None and found.min_kw is not None and found.max_kw is not None:
            min_kw, max_kw, curve = found.min_kw, found.max_kw, found.curve
            if max_kw - min_kw < MIN_RANGE_KW:
                min_kw, curve = max_kw, ((max_kw, 0.0),)
        return Flexibility(
            site=self.site,
            at=now,
            seq=record.cycle,
            interval_s=self.interval_s,
            window_s=window,
            import_kw=record.import_kw,
            limit_kw=record.import_limit_kw,
            min_kw=min_kw,
            max_kw=max_kw,
            curve=curve,
            health=health_of(
                record, (h.state for h in ctl.health.values()), planned=planned is not None
            ),
            devices_up=record.devices_up,
            devices=len(ctl.fleet),
            events=flex_events(events, now),
        )

    async def _solve(self, inp: DispatchInput, base: list[float]) -> FlexResult | None:
        """The flex solves on a worker thread, waited for within the budget on the clock."""
        job = asyncio.ensure_future(asyncio.to_thread(self._work, inp, base))
        self._job = job
        done, _ = await self.clock.wait({job}, self.budget_s)  # never cancels the thread
        if not done:
            self._missed("late", f"the flex solves ran past their budget of {self.budget_s:g} s")
            return None
        if (err := job.exception()) is not None:
            self._missed("failed", f"{type(err).__name__}: {err}", error=True)
            return None
        found, seconds = job.result()
        self.metrics.flex_duration.observe(seconds)
        self.metrics.flex_solves.inc(found.solves)
        if not found.available:
            self._missed("budget" if "budget" in found.reason else "failed", found.reason)
        elif not found.complete:
            self._missed("budget", found.reason)
        return found

    def _work(self, inp: DispatchInput, base: list[float]) -> tuple[FlexResult, float]:
        started = time.perf_counter()
        found = self.dispatcher.flexibility(
            inp,
            base,
            window_s=self.window_s,
            points=self.settings.points,
            budget_s=self.budget_s,
        )
        return found, time.perf_counter() - started

    def _missed(self, reason: str, detail: str = "", *, error: bool = False) -> None:
        """Noted now, counted and said at the interval's end (unless the daemon stops)."""
        self._misses.append((reason, detail, error))

    def _count(self, reason: str, detail: str, *, error: bool) -> None:
        self.metrics.flex_missed.labels(reason).inc()
        if reason in ("not_dispatched", self._trouble):
            return  # the fallback rule is said by the loop; a trouble once until it ends
        self._trouble = reason
        (log.error if error else log.warning)("flex_missed", reason=reason, detail=detail)
