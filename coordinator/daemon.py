"""The coordinator daemon, assembled in one place: the journal and the core on one worker
thread, the broker session, the ticker, and (``serve``) the metrics endpoint, sd_notify, signals
and reloads.

All calls into the ``Coordinator`` (and so into its SQLite journal) run on one single-thread
executor, in the order they are made: the core has no locks, and an allocation over a thousand
feeders never blocks the event loop that reads the broker. A message is acknowledged once the
core has decided on it (``FleetBroker``).

The ticker ticks every ``interval_s`` on the injected clock (``ticker=True``), and at once
whenever the core says it is ``due`` after a message (a new target, a feeder lost, a
rejection): a target reaches the feeders in milliseconds, not an interval. A test leaves the
interval ticker off and drives ``await daemon.tick()`` on a shared ``FakeClock`` (whose
``sleep`` would move time for everyone); the ticks a message makes due still happen, as they
never wait on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.registry import Collector

from coordinator.broker import FleetBroker
from coordinator.core import Coordinator, Outgoing
from coordinator.journal import FleetJournal, JournalUnavailable
from coordinator.metrics import FleetMetrics
from devices.tasks import cancel_and_wait

if TYPE_CHECKING:
    from pathlib import Path
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric

    from controller.clock import Clock
    from controller.dr.mqtt_common import MqttSettings
    from controller.notify import Notifier
    from controller.openadr.ven import Ven
    from controller.signals import Signals
    from coordinator.config import FleetConfig
    from coordinator.journal import TargetRecord
    from coordinator.openadr import FleetEvents
    from coordinator.targets import TargetDecision

__all__ = ["FleetDaemon", "MetricsEndpoint", "serve"]

log = structlog.get_logger("feederd.fleet")

P = ParamSpec("P")
T = TypeVar("T")

STOP_GRACE_S = 1.0
"""How long a tick still running may take to finish once a stop or a reload is asked for."""


class FleetDaemon:
    """One coordinator on one config: ``async with FleetDaemon.open(...) as d: await
    d.run(stop)``. ``mqtt=None``: no broker (a test feeding ``deliver`` itself)."""

    def __init__(
        self,
        config: FleetConfig,
        *,
        clock: Clock,
        mqtt: MqttSettings | None,
        metrics: FleetMetrics,
        executor: ThreadPoolExecutor,
        ticker: bool = True,
        on_tick: Callable[[list[Outgoing]], None] | None = None,
    ) -> None:
        self.config = config
        self.fleet = config.fleet
        self.clock = clock
        self.metrics = metrics
        self.ticker = ticker
        self.on_tick = on_tick
        self.ticks = 0
        self._executor = executor
        self._core: Coordinator | None = None
        self._journal: FleetJournal | None = None
        self._due = asyncio.Event()
        self.ven: Ven | None = None
        """The OpenADR VEN, with ``[openadr]`` (``coordinator.openadr``)."""
        self.fleet_events: FleetEvents | None = None
        self._judge_at: float | None = None  # set on the worker by an online message
        self._tick_lock = asyncio.Lock()
        self.broker = (
            None
            if mqtt is None
            else FleetBroker(
                mqtt, self.fleet, self.deliver, on_connection=self._connection, metrics=metrics
            )
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        config: FleetConfig,
        *,
        clock: Clock,
        mqtt: MqttSettings | None,
        metrics: FleetMetrics | None = None,
        ticker: bool = True,
        on_tick: Callable[[list[Outgoing]], None] | None = None,
    ) -> AsyncIterator[FleetDaemon]:
        """The journal opened and the core made on the worker thread; both closed on exit. A
        journal that cannot be opened is a ``ConfigError`` (``journal.path``)."""
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"feederd-fleet[{config.fleet.name}]")
        daemon = cls(
            config,
            clock=clock,
            mqtt=mqtt,
            metrics=metrics or FleetMetrics(),
            executor=executor,
            ticker=ticker,
            on_tick=on_tick,
        )
        try:
            try:
                await daemon._call(daemon._open_core)
            except JournalUnavailable as err:  # a folder not writable, a file not a journal
                from controller.config import ConfigError  # noqa: PLC0415

                raise ConfigError(config.source, "journal.path", str(err)) from None
            await daemon._open_ven()
            yield daemon
        finally:
            with contextlib.suppress(Exception):
                await daemon._call(daemon._close_core)
            executor.shutdown(wait=True)

    async def _open_ven(self) -> None:
        """The OpenADR VEN (``[openadr]``): the utility's events become targets for its
        group (``coordinator.openadr``); off, nothing is imported."""
        if not self.config.openadr.enabled:
            return
        settings = self.config.ven_settings()  # files read, TLS loaded: before it serves
        if settings is None:
            return
        from controller.openadr.metrics import VenMetrics  # noqa: PLC0415
        from controller.openadr.ven import Ven  # noqa: PLC0415
        from coordinator.openadr import FleetEvents  # noqa: PLC0415

        events = FleetEvents(self, self.fleet, group=self.config.openadr.group, clock=self.clock)
        await events.load()
        self.ven = Ven(
            settings,
            dr=events,
            clock=self.clock,
            metrics=VenMetrics(self.metrics.registry),
            site=self.fleet.name,
        )
        events.listeners.append(self.ven.status_changed)
        self.fleet_events = events

    async def submit_target(self, payload: dict[str, Any], *, source: str) -> TargetDecision:
        """A target from the VEN (or any caller in this process), decided on the core's
        thread as one from MQTT is; a tick follows at once when one is due."""
        decision, due = await self._call(self._target, payload, source)
        if due:
            self._due.set()
        return decision

    def _target(self, payload: dict[str, Any], source: str) -> tuple[TargetDecision, bool]:
        decision = self.core.target_received(payload, source=source)
        log.info(
            "target", id=decision.id, result=decision.result, reason=decision.reason, via=source
        )
        return decision, self.core.due

    async def targets(self) -> list[TargetRecord]:
        """The targets not yet over (from the journal, on the core's thread)."""
        return await self._call(lambda: self.core.journal.targets(self.clock.now()))

    # -- the worker thread -----------------------------------------------------------------

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _open_core(self) -> None:
        c = self.config
        self._journal = FleetJournal(c.journal_path, retention_days=c.retention_days)
        self._core = Coordinator(
            self.fleet, journal=self._journal, clock=self.clock, metrics=self.metrics
        )

    def _close_core(self) -> None:
        if self._journal is not None:
            self._journal.close()

    @property
    def core(self) -> Coordinator:
        """The core (touch it only through ``call``: it lives on the worker thread)."""
        assert self._core is not None, "FleetDaemon.open() makes the core"
        return self._core

    async def call(self, fn: Callable[[Coordinator], T]) -> T:
        """``fn(core)`` on the worker thread, in turn with every other call."""
        return await self._call(fn, self.core)

    def _decide(self, kind: str, topic: str, payload: bytes) -> bool:
        core = self.core
        if kind == "online":
            core.online_received(topic, payload)
            self._judge_at = core.next_judgement
            return core.due
        if kind == "flex":
            core.flex_received(topic, payload)
        elif kind == "dr_status":
            core.dr_status_received(topic, payload)
        elif kind == "target":
            decision = core.target_received(payload, source="mqtt")
            log.info(
                "target", id=decision.id, result=decision.result, reason=decision.reason, via="mqtt"
            )
        return core.due

    # -- from the broker ---------------------------------------------------------------------

    async def deliver(self, kind: str, topic: str, payload: bytes) -> None:
        """One message decided by the core (returns once it is); a tick follows at once when
        the core says one is due."""
        if await self._call(self._decide, kind, topic, payload):
            self._due.set()
        if self._judge_at is not None:  # a feeder's will: a tick once it is to be believed
            delay = max(self._judge_at - self.clock.monotonic(), 0.0) + 0.05
            self._judge_at = None
            asyncio.get_running_loop().call_later(delay, self._due.set)

    async def _connection(self, up: bool) -> None:
        await self._call(self.core.connected, up)
        if up:
            self._due.set()  # what was queued meanwhile goes out, the statuses are fresh

    # -- ticks -------------------------------------------------------------------------------

    async def tick(self) -> list[Outgoing]:
        """One tick of the core (on its thread); what it returns (journaled by then) goes to the
        broker's queue. Ticks never overlap."""
        async with self._tick_lock:
            self._due.clear()
            out = await self._call(self.core.tick)
            if self.broker is not None:
                self.broker.publish(out)
            if self.fleet_events is not None:
                self.fleet_events.ticked(out)
            self.ticks += 1
            _log_outgoing(out)
            if self.on_tick is not None:
                self.on_tick(out)
            return out

    async def run(self, stop: asyncio.Event) -> None:
        """The broker session and the ticker until ``stop`` is set."""
        name = f"feederd-fleet[{self.fleet.name}]"
        tasks: set[asyncio.Future[None]] = {
            asyncio.create_task(self._ticks(stop), name=f"{name}.tick"),
        }
        if self.broker is not None:
            tasks.add(asyncio.create_task(self.broker.run(stop), name=f"{name}.mqtt"))
        if self.ven is not None:
            tasks.add(asyncio.create_task(self.ven.run(stop), name=f"{name}.openadr"))
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            waiting: set[asyncio.Future[Any]] = {*tasks, stopped}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in done & tasks:
                if not task.cancelled() and (err := task.exception()) is not None:
                    raise err
            # stopping: the broker says goodbye (what is queued, online=false) within its bound
            await asyncio.wait(tasks, timeout=STOP_GRACE_S + 2.5)
        finally:
            await cancel_and_wait({*tasks, stopped})

    async def _ticks(self, stop: asyncio.Event) -> None:
        """Every ``interval_s`` (with ``ticker``), and at once when due; missed interval ticks
        are skipped, never queued."""
        interval = self.fleet.interval_s
        next_at = self.clock.monotonic()
        while not stop.is_set():
            waits: set[asyncio.Future[Any]] = {
                asyncio.ensure_future(self._due.wait()),
                asyncio.ensure_future(stop.wait()),
            }
            if self.ticker:
                delay = next_at - self.clock.monotonic()
                if delay <= 0:
                    await self._safe_tick()
                    now = self.clock.monotonic()
                    while next_at <= now:
                        next_at += interval
                    await cancel_and_wait(waits)
                    continue
                waits.add(asyncio.ensure_future(self.clock.sleep(delay)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(waits)
            if self._due.is_set() and not stop.is_set():
                await self._safe_tick()

    async def _safe_tick(self) -> None:
        """A tick whose failure (a bug in the core) is logged and waited past: the next tick
        tries again, and the watchdog, fed only after a completed tick, says if none does."""
        try:
            await self.tick()
        except Exception as err:
            log.error("tick_failed", error=f"{type(err).__name__}: {err}", exc_info=True)


def _log_outgoing(out: Iterable[Outgoing]) -> None:
    for o in out:
        if o.retain:
            continue
        p = o.payload
        if p.get("cancel") is True:
            log.info("fleet_cancel", topic=o.topic, id=p.get("id"))
        else:
            log.info("fleet_event", topic=o.topic, id=p.get("id"), kw=p.get("kw"))


# -- the service: metrics endpoint, sd_notify, signals, reloads ------------------------------


class _Current(Collector):
    """The metrics of the generation running now (a reload makes a fresh ``FleetMetrics``;
    the endpoint stays)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


class MetricsEndpoint:
    """``/metrics`` on the configured address, served afresh only when it moved."""

    def __init__(self) -> None:
        self.current = _Current()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self.current)
        self._server: WSGIServer | None = None
        self._served: tuple[str, int] | None = None
        self.port: int | None = None

    def follow(self, config: FleetConfig, metrics: FleetMetrics) -> None:
        """Serve ``metrics`` where ``config`` says; a reload that cannot serve keeps the old
        endpoint (logged), a start that cannot is a ``ConfigError``."""
        from controller.config import ConfigError  # noqa: PLC0415

        self.current.registry = metrics.registry
        m = config.metrics
        want = (m.address, m.port) if m.enabled else None
        if want == self._served:
            return
        old, first = self._served, self._server is None and self._served is None
        self.close()
        try:
            self._listen(want)
        except OSError as err:
            problem = f"cannot serve metrics on {m.address}:{m.port}: {err.strerror or err}"
            if first:
                raise ConfigError(config.source, "metrics.port", problem) from None
            log.error("metrics_endpoint_failed", error=problem, kept=old is not None)
            self._listen(old)

    def _listen(self, where: tuple[str, int] | None) -> None:
        if where is not None:
            server, _thread = start_http_server(where[1], addr=where[0], registry=self._registry)
            self._server = server
            self.port = int(server.server_port)
        self._served = where

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self.port = None


async def serve(config: FleetConfig, path: Path) -> None:
    """``feederd coordinate``: generations of the daemon until SIGTERM/SIGINT; SIGHUP reloads
    ``path`` through the same validation (a bad one is refused, the running one kept)."""
    from controller.notify import Notifier  # noqa: PLC0415
    from controller.signals import Signals  # noqa: PLC0415

    notifier = Notifier.from_env()
    endpoint = MetricsEndpoint()
    current: FleetConfig | None = config
    try:
        with Signals() as signals:
            while current is not None:
                current = await _generation(current, path, signals, endpoint, notifier)
    finally:
        endpoint.close()
        notifier.close()


async def _generation(
    config: FleetConfig, path: Path, signals: Signals, endpoint: MetricsEndpoint, notifier: Notifier
) -> FleetConfig | None:
    """Run on one config until a stop (None) or a good reload (the new config)."""
    from controller.clock import SystemClock  # noqa: PLC0415

    fleet = config.fleet
    metrics = FleetMetrics()
    endpoint.follow(config, metrics)

    def on_tick(out: list[Outgoing]) -> None:
        notifier.watchdog()  # only after a completed tick
        sent = sum(1 for o in out if not o.retain)
        notifier.status(f"tick {daemon.ticks}: {sent} events and cancels, mqtt {_up(daemon)}")

    stop = asyncio.Event()
    async with FleetDaemon.open(
        config, clock=SystemClock(), mqtt=config.mqtt_settings(), metrics=metrics, on_tick=on_tick
    ) as daemon:
        running = asyncio.ensure_future(daemon.run(stop))
        notifier.ready(
            f"coordinating {fleet.name}: {len(fleet.feeders)} feeders, "
            f"interval {fleet.interval_s:g} s"
        )
        log.info(
            "started",
            fleet=fleet.name,
            feeders=len(fleet.feeders),
            topic_root=fleet.topic_root,
            config=config.source,
            metrics_port=endpoint.port,
        )
        for note in config.notes:
            log.warning("config_note", note=note, config=config.source)
        try:
            successor = await _next(running, signals, path, config, notifier)
        finally:
            stop.set()
            await asyncio.wait({running}, timeout=STOP_GRACE_S + 5.0)
            await cancel_and_wait([running])
        if running.done() and not running.cancelled() and (err := running.exception()):
            raise err
    return successor


def _up(daemon: FleetDaemon) -> str:
    return "up" if daemon.broker is not None and daemon.broker.connected.is_set() else "down"


async def _next(
    running: asyncio.Future[None],
    signals: Signals,
    path: Path,
    current: FleetConfig,
    notifier: Notifier,
) -> FleetConfig | None:
    """Wait for a stop (None), a good reload (the new config), or the daemon ending by itself
    (None; its error is raised by the caller). A bad reload is refused and waited past."""
    from controller.config import ConfigError  # noqa: PLC0415
    from coordinator.config import load_fleet  # noqa: PLC0415

    def load() -> FleetConfig:
        candidate = load_fleet(path, require_credentials=True)
        candidate.mqtt_settings()
        return candidate

    from controller.signals import next_config  # noqa: PLC0415

    candidate = await next_config(
        running, signals, notifier, load=load, error=ConfigError, current=current.source, logger=log
    )
    if candidate is not None:
        log.info("reload", config=candidate.source)
    return candidate
