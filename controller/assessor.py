"""The daemon's M&V: each DR event assessed once it is over, stored, and shown as metrics.

An ``Assessor`` listens to the DR service's intervals (``DrService.record_listeners``). After
each interval, unless its last job is still running, it hands one job to the DR service's
worker thread (never the control loop's), with the DR service's journal connection (used on
that thread only): find the earliest event that is over (ended, or cancelled) and whose
meter-after window has passed, without an assessment; assess it (``controller.performance
.assess``); store one row per baseline in the journal's ``performance`` table. One event per
interval, so a backlog (a journal from before M&V) costs each interval little.

Back on the loop's thread the result sets ``feederd_dr_delivered_kwh``,
``feederd_dr_requested_kwh`` and ``feederd_dr_performance_ratio`` ``{event, baseline}`` for the
last ``SHOWN`` events assessed (those stored before a restart included); an older event's
labels are removed. Events cancelled before they began and export limits are not assessed.

Nothing here stops an interval: a journal error is logged once (and once more when the journal
is back), an event whose series the baselines refuse is logged once and left unassessed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import sqlite3
from datetime import datetime, timedelta

import structlog

from controller.clock import Clock
from controller.dr.events import EventType
from controller.journal import Journal, PerformanceRow
from controller.metrics import Metrics
from controller.performance import MvSettings, assess
from controller.records import CycleRecord

__all__ = ["SHOWN", "Assessor"]

log = structlog.get_logger("feederd.mv")

SHOWN = 10
"""Events whose assessment the metrics show (the last assessed)."""


class Assessor:
    def __init__(
        self,
        journal: Journal,
        *,
        settings: MvSettings,
        clock: Clock,
        metrics: Metrics | None,
        worker: concurrent.futures.Executor,
    ) -> None:
        self.journal = journal
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self._worker = worker
        self._job: asyncio.Future[list[PerformanceRow]] | None = None
        self._loaded = False
        self._failing = False
        self._skipped: set[str] = set()
        """Events not to assess (touched on the worker thread only)."""
        self._shown: dict[str, set[str]] = {}
        """Event id -> the baselines its labels were set for, oldest event first."""

    def cycle_done(self, record: CycleRecord) -> None:
        """A DR record listener (the loop's thread): start the next job unless one runs."""
        if self._job is not None and not self._job.done():
            return
        loop = asyncio.get_running_loop()
        self._job = loop.run_in_executor(self._worker, self._work, self.clock.now())
        self._job.add_done_callback(self._done)

    async def drain(self) -> None:
        """Wait for the job under way (before the journal closes)."""
        if self._job is not None:
            await asyncio.gather(self._job, return_exceptions=True)

    # -- the worker thread ----------------------------------------------------------------

    def _work(self, now: datetime) -> list[PerformanceRow]:
        """The rows to show: at first the journal's last ``SHOWN`` events, then the event
        assessed now (if one was due). Never raises."""
        rows: list[PerformanceRow] = []
        try:
            if not self._loaded:
                rows = self.journal.performance(SHOWN)
                self._loaded = True
            due = self.journal.unassessed_events(now - timedelta(seconds=self.settings.after_s))
            if self._failing:
                self._failing = False
                log.info("mv_journal_available")
        except (sqlite3.Error, OSError) as err:
            if not self._failing:
                self._failing = True
                log.error("mv_journal_unavailable", error=str(err))
            return rows
        for stored in due:
            event = stored.event
            if event.id in self._skipped:
                continue
            if event.type is EventType.EXPORT_LIMIT or (
                stored.cancelled_at is not None and stored.cancelled_at <= event.start
            ):
                self._skipped.add(event.id)
                continue
            try:
                perf = assess(self.journal, event.id, settings=self.settings, now=now)
                new = perf.rows(assessed_at=now)
                self.journal.put_performance(new)
            except (sqlite3.Error, OSError) as err:
                if not self._failing:
                    self._failing = True
                    log.error("mv_journal_unavailable", id=event.id, error=str(err))
                return rows
            except Exception as err:  # a series or setting the baselines refuse, or a bug
                self._skipped.add(event.id)
                log.error(
                    "dr_event_not_assessed", id=event.id, error=f"{type(err).__name__}: {err}"
                )
                continue
            log.info(
                "dr_event_assessed",
                id=event.id,
                **{f"{s.baseline}_delivered_kwh": _rounded(s.delivered_kwh) for s in perf.summary},
                **{f"{s.baseline}_ratio": _rounded(s.performance_ratio, 3) for s in perf.summary},
            )
            return rows + new
        return rows

    # -- back on the loop's thread ----------------------------------------------------------

    def _done(self, job: asyncio.Future[list[PerformanceRow]]) -> None:
        if job.cancelled():
            return
        if (err := job.exception()) is not None:  # the executor itself failed (shut down)
            log.error("mv_job_failed", error=f"{type(err).__name__}: {err}")
            return
        self._show(job.result())

    def _show(self, rows: list[PerformanceRow]) -> None:
        if self.metrics is None or not rows:
            return
        m = self.metrics
        for r in rows:
            if r.event_id in self._shown:  # assessed again: it becomes the newest
                self._shown[r.event_id] = self._shown.pop(r.event_id)
        for r in rows:
            labels = (r.event_id, r.baseline)
            m.dr_delivered_kwh.labels(*labels).set(_value(r.delivered_kwh))
            m.dr_requested_kwh.labels(*labels).set(_value(r.requested_kwh))
            m.dr_performance_ratio.labels(*labels).set(_value(r.performance_ratio))
            self._shown.setdefault(r.event_id, set()).add(r.baseline)
        while len(self._shown) > SHOWN:
            oldest = next(iter(self._shown))
            for baseline in self._shown.pop(oldest):
                for gauge in (m.dr_delivered_kwh, m.dr_requested_kwh, m.dr_performance_ratio):
                    with contextlib.suppress(KeyError):
                        gauge.remove(oldest, baseline)


def _value(x: float | None) -> float:
    return math.nan if x is None else x


def _rounded(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)
