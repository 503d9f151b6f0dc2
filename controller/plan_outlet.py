"""Where each interval's plan goes: the metrics, the journal and the ``<root>/plan`` topic.

``PlanOutlet.made(result, inp, at, events)`` is called by the control loop after each solve by
the LP (``Controller._plan_ready``). It builds the ``Plan`` (``controller.plan``) and:

- sets the next hour's metrics every interval (``feederd_plan_*{minutes_ahead}``; NaN after
  an interval the fallback rule dispatched: ``missed``);
- when ``PlanGate`` lets the plan through (the first, one that changed materially, one
  ``REFRESH_S`` after the last), adds the forecasts' error (``Forecaster.errors()``, also set
  as ``feederd_forecast_*`` metrics), stores the document in the journal (``put_plan``: one row,
  replaced) and hands it to the listeners (the MQTT intake's ``publish_plan``: retained).

A plan that cannot be made or stored is logged once per reason and counted; the interval goes
on, and its setpoints are written all the same.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from controller.dr.events import DrEvent
from controller.dr.overlap import StoredEvent
from controller.metrics import Metrics
from controller.plan import ForecastError, Plan, PlanGate, plan_from

if TYPE_CHECKING:
    from optimizer import DispatchInput, DispatchResult

__all__ = ["ErrorSource", "PlanOutlet", "PlanStore", "forecast_errors"]

log = structlog.get_logger("feederd.plan")


@runtime_checkable
class PlanStore(Protocol):
    """The journal's plan table (``controller.journal.Journal``)."""

    def put_plan(self, doc: Mapping[str, Any], at: datetime) -> None: ...


class _BucketLike(Protocol):
    @property
    def quantity(self) -> str: ...
    @property
    def bucket(self) -> str: ...
    @property
    def n(self) -> int: ...
    @property
    def mape_pct(self) -> float | None: ...
    @property
    def rmse_kw(self) -> float | None: ...


class _ErrorsLike(Protocol):
    @property
    def buckets(self) -> tuple[_BucketLike, ...]: ...


@runtime_checkable
class ErrorSource(Protocol):
    """What ``controller.forecasts.Forecaster`` offers for its error."""

    def errors(self) -> Any: ...


def forecast_errors(errors: _ErrorsLike) -> tuple[ForecastError, ...]:
    """``Forecaster.errors()`` as the plan's records (rounded to 0.1 % and 0.1 kW)."""
    return tuple(
        ForecastError(
            quantity=b.quantity,
            bucket=b.bucket,
            mape_pct=None if b.mape_pct is None else round(b.mape_pct, 1),
            rmse_kw=None if b.rmse_kw is None else round(b.rmse_kw, 1),
            samples=b.n,
        )
        for b in errors.buckets
    )


class PlanOutlet:
    """The plan's way out of the control loop (see the module docstring)."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        journal: object | None = None,
        forecaster: object | None = None,
        gate: PlanGate | None = None,
    ) -> None:
        self.metrics = metrics
        self.journal = journal if isinstance(journal, PlanStore) else None
        self.forecaster = forecaster if isinstance(forecaster, ErrorSource) else None
        self.gate = gate or PlanGate()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        """Told each plan the gate lets through (its document)."""
        self.last: Plan | None = None
        """This interval's plan (``None`` until a solve by the LP made one)."""
        self.published = 0
        self._failed: str | None = None  # the last failure, said once

    def made(
        self,
        result: DispatchResult,
        inp: DispatchInput,
        at: datetime,
        events: Iterable[DrEvent | StoredEvent] = (),
    ) -> Plan | None:
        """One solve's plan: the metrics now, and out if the gate lets it through."""
        try:
            plan = plan_from(result, inp, at, events)
        except (ValueError, TypeError, ArithmeticError) as err:  # a result we cannot read
            self._fail("plan_failed", f"{type(err).__name__}: {err}")
            self.metrics.show_plan(None)  # no plan: NaN, never the last one's stale numbers
            return None
        self.last = plan
        self.metrics.show_plan(plan)
        if not self.gate.due(plan):
            return plan
        ok = True
        plan, ok = self._with_errors(plan)
        doc = plan.to_json()
        if self.journal is not None:
            try:
                self.journal.put_plan(doc, at)
            except (sqlite3.Error, OSError) as err:
                self.metrics.journal_errors.inc()
                ok = self._fail("plan_store_failed", str(err))
        for listener in self.listeners:
            try:
                listener(doc)
            except Exception as err:  # a listener's bug: said; the interval goes on
                ok = self._fail("plan_listener_failed", f"{type(err).__name__}: {err}")
        self.published += 1
        if ok and self._failed is not None:
            log.info("plan_recovered", after=self._failed)
            self._failed = None
        return plan

    def missed(self) -> None:
        """An interval without a plan (the fallback rule dispatched it): the next hour's
        metrics go NaN rather than keep an older plan's numbers. The journal and the broker
        keep the last plan, with the time it was made."""
        self.last = None
        self.metrics.show_plan(None)

    def _with_errors(self, plan: Plan) -> tuple[Plan, bool]:
        """The plan with the forecasts' error (and the error's metrics set); False: failed."""
        if self.forecaster is None:
            return plan, True
        try:
            errors = forecast_errors(self.forecaster.errors())
        except (ValueError, TypeError, ArithmeticError, AttributeError) as err:
            return plan, self._fail("forecast_errors_failed", f"{type(err).__name__}: {err}")
        self.metrics.show_forecast_errors(errors)
        return dataclasses.replace(plan, forecast_errors=errors), True

    def _fail(self, event: str, reason: str) -> bool:
        """Say a failure once (until it changes or the plan recovers); always False."""
        if reason != self._failed:
            log.error(event, reason=reason)
            self._failed = reason
        return False
