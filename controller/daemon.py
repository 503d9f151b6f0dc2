"""The composition root: one place assembles the daemon's parts and tears them down.

``async with Daemon.open(loaded, clock=...) as daemon`` builds, in order, the metrics, the
device fleet (drivers and their shared links), the journal, the DR service (with its M&V
assessor, ``controller.assessor``), the price feed, the MQTT intake (when given settings; it
also takes in ``<root>/price``), the OpenADR VEN (``[openadr]``), the forecaster
(``[forecast]``) and the controller, and starts the background tasks in one
``asyncio.TaskGroup`` with names (``feederd[site].mqtt``, ``feederd[site].openadr``,
``feederd[site].device.NAME``). Then:

- ``await daemon.run(stop)`` runs the control loop (``feederd[site].control``) until ``stop``;
- or the caller drives ``daemon.controller.cycle()`` itself (``feederd sim``, in simulated
  time);
- ``await daemon.release()`` gives every control back (``on_stop = "release"``).

Leaving the block stops the background tasks (cooperatively, then by cancellation after
``STOP_GRACE_S``), closes the fleet and the journal, in the reverse order of their making.
``feederd run``, ``feederd demo`` and ``feederd sim`` all go through here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from controller.assessor import Assessor
from controller.clock import Clock
from controller.config import LoadedConfig
from controller.dr.events import EventBounds
from controller.dr.intake import MqttIntake, MqttSettings
from controller.dr.service import DrService
from controller.fleet import Fleet
from controller.horizon import ForecasterLike
from controller.journal import MEMORY, Journal
from controller.loop import Controller
from controller.metrics import Metrics
from controller.performance import MvSettings
from controller.pricefeed import PriceFeedService
from controller.records import CycleRecord
from devices.tasks import cancel_and_wait

if TYPE_CHECKING:  # the VEN (and openleadr) is loaded only when [openadr] is enabled
    from controller.openadr.ven import Ven

__all__ = ["STOP_GRACE_S", "Daemon", "ReleaseReport"]

log = structlog.get_logger("feederd")

STOP_GRACE_S = 1.0
"""How long background tasks get to end on their own before they are cancelled."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseReport:
    released: tuple[str, ...]
    failed: tuple[str, ...]
    withheld: tuple[str, ...] = ()
    """Devices whose control was kept because a limit is in force (firm limits)."""


def forecaster(loaded: LoadedConfig, journal: Journal) -> ForecasterLike | None:
    """The load and PV forecaster of ``[forecast]`` (``None``: ``enabled = false``, or a
    horizon of one step, which looks no further than now)."""
    config = loaded.config
    if not config.forecast.enabled or config.control.horizon_h <= 0:
        return None
    from controller.forecasts import Forecaster, ForecastSettings  # noqa: PLC0415

    f = config.forecast
    settings = ForecastSettings(
        latitude=f.latitude,
        longitude=f.longitude,
        timezone=f.timezone,
        history_days=f.history_days,
        slot_s=float(f.slot_s),
        model=f.model,
    )
    pv = sorted(d.name for d in config.devices if d.kind == "pv")
    return Forecaster([b.id for b in loaded.network.buses], pv, settings, journal)


class Daemon:
    """The assembled daemon; made only by ``Daemon.open``."""

    def __init__(
        self,
        *,
        loaded: LoadedConfig,
        clock: Clock,
        metrics: Metrics,
        fleet: Fleet,
        journal: Journal,
        dr: DrService,
        prices: PriceFeedService,
        intake: MqttIntake | None,
        controller: Controller,
        tasks: asyncio.TaskGroup,
        stop: asyncio.Event,
    ) -> None:
        self.loaded = loaded
        self.clock = clock
        self.metrics = metrics
        self.fleet = fleet
        self.journal = journal
        self.dr = dr
        self.prices = prices
        self.intake = intake
        self.controller = controller
        self._tasks = tasks
        self._stop = stop
        self._background: list[asyncio.Task[None]] = []
        self.ven: Ven | None = None
        """The OpenADR VEN (``[openadr] enabled``)."""

    @property
    def site(self) -> str:
        return self.loaded.config.site

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        loaded: LoadedConfig,
        *,
        clock: Clock,
        metrics: Metrics | None = None,
        mqtt: MqttSettings | None = None,
        journal_path: str | None = None,
        on_cycle: Callable[[CycleRecord], None] | None = None,
    ) -> AsyncIterator[Daemon]:
        """Assemble the daemon for ``loaded``; see the module docstring. ``journal_path``
        overrides the config's (``None`` and no ``journal.path``: in memory)."""
        config = loaded.config
        metrics = metrics or Metrics()
        async with contextlib.AsyncExitStack() as stack:
            fleet = Fleet.build(
                loaded, monotonic=clock.monotonic, wall_s=lambda: clock.now().timestamp()
            )
            stack.push_async_callback(fleet.close)
            journal = Journal(
                journal_path or loaded.journal_path or MEMORY,
                retention_days=config.journal.retention_days,
            )
            stack.callback(journal.close)
            # the DR service's work (parsing, storing, looking up) runs on a thread of its
            # own with a connection of its own: an intake's burst never stalls the loop
            dr_journal = journal.sibling()
            stack.callback(dr_journal.close)
            worker = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"feederd[{config.site}].dr"
            )
            stack.callback(worker.shutdown, wait=True)
            dr = DrService(
                dr_journal,
                clock=clock,
                site=config.site,
                default_import_kw=config.dr.import_limit_kw,
                default_export_kw=config.dr.export_limit_kw,
                metrics=metrics,
                bounds=EventBounds(
                    max_kw=loaded.max_event_kw, horizon=timedelta(days=config.dr.horizon_days)
                ),
                max_events=config.dr.max_events,
                worker=worker,
            )
            stack.push_async_callback(dr.drain)
            # M&V: each event assessed once over, on the DR service's worker thread
            assessor = Assessor(
                dr_journal,
                settings=MvSettings.from_config(config),
                clock=clock,
                metrics=metrics,
                worker=worker,
            )
            dr.record_listeners.append(assessor.cycle_done)
            stack.push_async_callback(assessor.drain)
            prices = PriceFeedService(
                clock=clock,
                metrics=metrics,
                worker=worker,
                fallback="the tariff" if config.tariff is not None else "dr.price_per_kwh",
            )
            intake = None
            if mqtt is not None:
                intake = MqttIntake(
                    mqtt,
                    lambda payload: dr.submit_async(payload, source="mqtt"),
                    metrics=metrics,
                    initial_status=dr.status,
                )
                dr.listeners.append(intake.status_changed)
                dr.record_listeners.append(intake.publish_telemetry)
                intake.route(mqtt.price_topic, prices.submit_async)
                price_status = mqtt.price_status_topic
                prices.listeners.append(functools.partial(intake.publish_retained, price_status))
                intake.publish_retained(price_status, prices.status())
            ven = None
            if config.openadr.enabled:  # the OpenADR VEN: the utility's events in
                from controller.openadr.settings import ven_settings  # noqa: PLC0415
                from controller.openadr.ven import Ven  # noqa: PLC0415

                settings = ven_settings(config, source=loaded.source, base_dir=loaded.base_dir)
                if settings is not None:
                    ven = Ven(settings, dr=dr, clock=clock, metrics=metrics.ven, site=config.site)
                    dr.listeners.append(ven.status_changed)
                    dr.record_listeners.append(ven.record)
            # the forecaster's work runs on a thread of its own too: its own connection
            forecast_journal = journal.sibling()
            stack.callback(forecast_journal.close)
            controller = Controller(
                loaded,
                clock=clock,
                fleet=fleet,
                metrics=metrics,
                journal=journal,
                dr=dr,
                on_cycle=on_cycle,
                forecaster=forecaster(loaded, forecast_journal),
                prices=prices,
            )
            if intake is not None:  # the plan, retained on <root>/plan
                controller.plans.listeners.append(intake.publish_plan)
                if controller.flex is not None:  # the flexibility, retained on <root>/flex
                    flex_topic = intake.settings.flex_topic
                    controller.flex.listeners.append(
                        functools.partial(intake.publish_retained, flex_topic)
                    )
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            stop = asyncio.Event()
            daemon = cls(
                loaded=loaded,
                clock=clock,
                metrics=metrics,
                fleet=fleet,
                journal=journal,
                dr=dr,
                prices=prices,
                intake=intake,
                controller=controller,
                tasks=tasks,
                stop=stop,
            )
            stack.push_async_callback(daemon._stop_background)  # runs before the group exits
            daemon.ven = ven
            if intake is not None:
                daemon._start(intake.run(stop), "mqtt")
            if ven is not None:
                daemon._start(ven.run(stop), "openadr")
            for name, device in fleet.background():
                daemon._start(device.serve(stop), f"device.{name}")
            yield daemon

    def _start(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        name = f"feederd[{self.site}].{what}"

        async def guarded() -> None:
            try:
                await coro
            except Exception:  # a bug: say which part failed; the group then stops the daemon
                log.critical("background_task_failed", task=name, exc_info=True)
                raise

        task = self._tasks.create_task(guarded(), name=name)
        self._background.append(task)
        return task

    async def _stop_background(self) -> None:
        self._stop.set()
        pending = [t for t in self._background if not t.done()]
        if pending:
            _done, late = await asyncio.wait(pending, timeout=STOP_GRACE_S)
            if late and not await cancel_and_wait(list(late)):
                log.error("stop_incomplete", tasks=sorted(t.get_name() for t in late))

    async def run(self, stop: asyncio.Event) -> None:
        """Run the control loop (a task of the group, ``feederd[site].control``) until
        ``stop`` is set."""
        await self._tasks.create_task(
            self.controller.run(stop), name=f"feederd[{self.site}].control"
        )

    async def release(self) -> ReleaseReport:
        """Disable every control (PV limit off, battery idle, load ceiling lifted) within the
        config's ``release_timeout_s``: each driver that can runs its own ``release()`` (it
        knows its control model, 123/124 or 704). A device that does not answer in time keeps
        its control until its revert timer lapses.

        A limit in force is kept firm: under an export limit the PV inverters keep their
        ceilings, under an import limit the loads theirs (each until its revert timer lapses,
        when its revert value takes over); they are named in the log and the report."""
        limits = self.controller.limits
        kept = {"pv"} if limits.export_kw is not None else set()
        kept |= {"load"} if limits.import_kw is not None else set()
        releasable = [n for n, d in self.fleet.items() if d.capabilities.releasable]
        withheld = tuple(sorted(n for n in releasable if self.fleet[n].kind in kept))
        for name in withheld:
            which = "export" if self.fleet[name].kind == "pv" else "import"
            value = limits.export_kw if which == "export" else limits.import_kw
            log.warning(
                "release_withheld",
                device=name,
                reason=f"{which} limit {value:g} kW in force: the control stays until its "
                "revert timer lapses",
            )
        names = [n for n in releasable if n not in withheld]
        jobs: dict[asyncio.Future[Any], str] = {
            asyncio.ensure_future(self.fleet[n].release()): n for n in names
        }
        if not jobs:
            return ReleaseReport(released=(), failed=(), withheld=withheld)
        done, pending = await self.clock.wait(jobs, self.loaded.config.release_timeout_s)
        await cancel_and_wait(list(pending))
        failed: list[str] = []
        for task in done:
            if (err := task.exception()) is not None:
                failed.append(jobs[task])
                log.error("release_failed", device=jobs[task], error=f"{type(err).__name__}: {err}")
        for task in pending:
            failed.append(jobs[task])
            log.error("release_failed", device=jobs[task], error="timed out")
        released = tuple(sorted(set(names) - set(failed)))
        log.info("released", controls=len(jobs), failed=len(failed))
        return ReleaseReport(released=released, failed=tuple(sorted(failed)), withheld=withheld)
