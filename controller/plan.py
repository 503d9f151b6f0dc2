"""The plan an interval's dispatch made for the next 24 hours, as an operator reads it.

``plan_from(result, inp, at, events)`` turns one solve's horizon (``DispatchResult``'s
``*_plan`` fields, one value per step; step 0 is the interval being dispatched) into a
``Plan``: per step its start and end (RFC 3339, from ``at`` and the step's offset), the head
import planned, the import limit the plan held, the shortfall (how far the plan misses a
limit at that step), the batteries' state of charge at the step's end (kWh and % of their
total energy), their power (+ discharging), the PV curtailed and the energy price; per DR event
not yet over, the shortfall the plan predicts for it. ``Plan.to_json()`` is the document
published retained on ``<root>/plan``, stored in the journal (``put_plan``) and shown by
``feederd report``; ``Plan.from_json`` reads it back.

Bounded whatever the horizon: the steps that start within ``PLAN_HOURS`` of ``at`` (at most
``MAX_STEPS``), numbers rounded to 0.1 kW, 0.1 kWh and 0.1 %. Pure: no clock, no I/O; the
optimizer's records are read, never imported at run time (``feederd report`` stays light).

``PlanGate`` decides which plans are worth publishing and storing: the first, one that changed
materially since the last published (``materially_changed``), or one ``REFRESH_S`` after it.
The metrics are set every interval whatever the gate says.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from controller.dr.events import DrEvent, EventType
from controller.dr.overlap import StoredEvent

if TYPE_CHECKING:
    from optimizer import DispatchInput, DispatchResult

__all__ = [
    "MAX_STEPS",
    "MINUTES_AHEAD",
    "PLAN_HOURS",
    "REFRESH_S",
    "EventOutlook",
    "ForecastError",
    "Plan",
    "PlanError",
    "PlanGate",
    "PlanStep",
    "materially_changed",
    "plan_from",
]

PLAN_HOURS = 24.0
"""How far ahead the plan is shown: the steps that start within this of ``at``."""
MAX_STEPS = 400
"""The most steps a plan holds, whatever the horizon (a 24 h horizon has about a hundred)."""
MINUTES_AHEAD = (15, 30, 45, 60)
"""The moments of the next hour the plan's metrics give (``minutes_ahead`` label)."""
REFRESH_S = 300.0
"""A plan that has not changed materially is published again after this long (its ``at``
keeps a reader's idea of its age honest)."""
KW_TOLERANCE = 1.0
"""A planned power moving by less than this (kW) and less than ``REL_TOLERANCE`` of itself is
not a material change."""
REL_TOLERANCE = 0.01
SOC_TOLERANCE_PCT = 1.0
"""A planned state of charge moving by less than this (% of the energy) is not material."""
WINDOW_S = 900.0
"""Plans are compared quarter-hour by quarter-hour of the clock (``materially_changed``)."""


class PlanError(ValueError):
    """A plan document that cannot be read (``feederd report`` on a damaged journal row)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanStep:
    """One step of the plan. ``soc_*`` is at the step's end, summed over the batteries
    (``None`` without batteries); ``battery_kw`` is their total power, + discharging (``None``
    without batteries);
    ``shortfall_kw`` is by how much the plan misses the import or export limit in that step
    (0: met); ``import_limit_kw`` is the limit the plan held (``None``: none)."""

    start: datetime
    end: datetime
    import_kw: float | None
    import_limit_kw: float | None
    shortfall_kw: float
    soc_kwh: float | None
    soc_pct: float | None
    battery_kw: float | None
    curtailed_kw: float | None
    price: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "start": _rfc3339(self.start),
            "end": _rfc3339(self.end),
            "import_kw": self.import_kw,
            "import_limit_kw": self.import_limit_kw,
            "shortfall_kw": self.shortfall_kw,
            "soc_kwh": self.soc_kwh,
            "soc_pct": self.soc_pct,
            "battery_kw": self.battery_kw,
            "curtailed_kw": self.curtailed_kw,
            "price": self.price,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EventOutlook:
    """A DR event not yet over, as the plan sees it: the largest shortfall (kW) over the steps
    it covers and the energy over its limit (kWh); both 0 when the plan meets it, ``None`` when
    the event lies beyond the plan (it starts after the plan's last step ends)."""

    id: str
    start: datetime
    end: datetime
    predicted_shortfall_kw: float | None
    predicted_shortfall_kwh: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "start": _rfc3339(self.start),
            "end": _rfc3339(self.end),
            "predicted_shortfall_kw": self.predicted_shortfall_kw,
            "predicted_shortfall_kwh": self.predicted_shortfall_kwh,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ForecastError:
    """How far the forecasts missed what was measured, for one quantity (``load``, ``pv``) and
    one horizon bucket (``0-1h``, ...): mean absolute percentage error and root mean square
    error (``None``: nothing to judge yet), over ``samples`` forecasts."""

    quantity: str
    bucket: str
    mape_pct: float | None
    rmse_kw: float | None
    samples: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "quantity": self.quantity,
            "bucket": self.bucket,
            "mape_pct": self.mape_pct,
            "rmse_kw": self.rmse_kw,
            "samples": self.samples,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The plan made at ``at`` (the start of the interval that made it)."""

    at: datetime
    steps: tuple[PlanStep, ...]
    events: tuple[EventOutlook, ...] = ()
    forecast_errors: tuple[ForecastError, ...] = ()
    """The forecasts' error when the plan was made (an extension of the plan's contract: the
    report shows it from the journal alone)."""

    @property
    def end(self) -> datetime:
        """When the plan's last step ends (``at`` for an empty plan)."""
        return self.steps[-1].end if self.steps else self.at

    def step_at(self, when: datetime) -> PlanStep | None:
        """The step covering ``when`` (``start <= when < end``), ``None`` outside the plan."""
        k = bisect.bisect_right(self.steps, when, key=lambda s: s.start) - 1
        if k >= 0 and when < self.steps[k].end:
            return self.steps[k]
        return None

    def ahead(self, minutes: float) -> PlanStep | None:
        """The step covering ``at + minutes``."""
        return self.step_at(self.at + timedelta(minutes=minutes))

    @property
    def max_shortfall_kw(self) -> float:
        """The largest shortfall over the plan (0: every limit met)."""
        return max((s.shortfall_kw for s in self.steps), default=0.0)

    def to_json(self) -> dict[str, Any]:
        """The ``<root>/plan`` document (README, "The plan")."""
        doc: dict[str, Any] = {
            "at": _rfc3339(self.at),
            "steps": [s.to_json() for s in self.steps],
            "events": [e.to_json() for e in self.events],
        }
        if self.forecast_errors:
            doc["forecast_errors"] = [e.to_json() for e in self.forecast_errors]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Plan:
        """Read a document ``to_json`` wrote; ``PlanError`` names what is wrong."""
        try:
            return cls(
                at=_time(doc["at"]),
                steps=tuple(
                    PlanStep(
                        start=_time(s["start"]),
                        end=_time(s["end"]),
                        import_kw=_num(s.get("import_kw")),
                        import_limit_kw=_num(s.get("import_limit_kw")),
                        shortfall_kw=_num(s.get("shortfall_kw")) or 0.0,
                        soc_kwh=_num(s.get("soc_kwh")),
                        soc_pct=_num(s.get("soc_pct")),
                        battery_kw=_num(s.get("battery_kw")),
                        curtailed_kw=_num(s.get("curtailed_kw")),
                        price=_num(s.get("price")),
                    )
                    for s in doc["steps"][:MAX_STEPS]
                ),
                events=tuple(
                    EventOutlook(
                        id=str(e["id"]),
                        start=_time(e["start"]),
                        end=_time(e["end"]),
                        predicted_shortfall_kw=_num(e.get("predicted_shortfall_kw")),
                        predicted_shortfall_kwh=_num(e.get("predicted_shortfall_kwh")),
                    )
                    for e in doc.get("events", [])
                ),
                forecast_errors=tuple(
                    ForecastError(
                        quantity=str(e["quantity"]),
                        bucket=str(e["bucket"]),
                        mape_pct=_num(e.get("mape_pct")),
                        rmse_kw=_num(e.get("rmse_kw")),
                        samples=int(e.get("samples") or 0),
                    )
                    for e in doc.get("forecast_errors", [])
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise PlanError(f"not a plan document: {type(err).__name__}: {err}") from None


# -- building a plan from a solve -------------------------------------------------------------


def plan_from(
    result: DispatchResult,
    inp: DispatchInput,
    at: datetime,
    events: Iterable[DrEvent | StoredEvent] = (),
    *,
    forecast_errors: Iterable[ForecastError] = (),
) -> Plan:
    """The plan of one solve made at ``at`` (see the module docstring). ``events`` are the
    accepted DR events (cancelled and finished ones are left out). A result without plan
    fields (a one-step horizon of an older optimizer, the fallback rule) gives a one-step plan
    of its step-0 values."""
    at = at.astimezone(UTC)
    starts, lengths = _structure(result, inp)
    n = len(starts)
    import_kw = _per_step(result.import_plan_kw, n, result.import_kw)
    curtailed = _per_step(result.curtailed_plan_kw, n, result.curtailed_kw)
    limit = _per_step(result.import_limit_plan_kw, n, _nan(inp.import_limit_kw))
    imp_slack = _per_step(result.import_slack_plan_kw, n, result.import_slack_kw)
    exp_slack = _per_step(result.export_slack_plan_kw, n, result.export_slack_kw)
    price = _prices(inp, n)
    energy = sum(b.energy_kwh for b in inp.batteries)
    soc = _battery_sum(result.soc_plan_kwh, inp, n)
    power = _battery_sum(result.battery_plan_kw, inp, n)
    if soc is None and inp.batteries:  # no SOC plan: step 0's end at the dispatched power
        soc = _per_step(
            (),
            n,
            sum(
                b.soc_after_kwh(result.battery_kw.get(b.name, 0.0), lengths[0])
                for b in inp.batteries
            ),
        )
    if power is None:
        power = _per_step((), n, sum(result.battery_kw.values()))
    steps: list[PlanStep] = []
    for i in range(n):
        if starts[i] >= PLAN_HOURS * 3600.0 or len(steps) >= MAX_STEPS:
            break
        start = at + timedelta(seconds=starts[i])
        soc_kwh = None if soc is None else soc[i]
        steps.append(
            PlanStep(
                start=start,
                end=start + timedelta(seconds=lengths[i]),
                import_kw=_r(import_kw[i]),
                import_limit_kw=_r(limit[i]),
                shortfall_kw=_r(max(imp_slack[i], 0.0) + max(exp_slack[i], 0.0)) or 0.0,
                soc_kwh=_r(soc_kwh),
                soc_pct=None if soc_kwh is None else _r(100.0 * soc_kwh / energy),
                battery_kw=_r(power[i]) if inp.batteries else None,
                curtailed_kw=_r(curtailed[i]),
                price=_r(price[i], 4),
            )
        )
    held = _per_step(result.import_limit_plan_kw, n, math.nan)
    events = list(events)
    baselines = {
        item.event.id: item.baseline_import_kw for item in events if isinstance(item, StoredEvent)
    }
    outlook = tuple(
        _outlook(e, at, starts, lengths, (imp_slack, exp_slack), held, baselines.get(e.id))
        for e in _live(events, at)
    )
    return Plan(at=at, steps=tuple(steps), events=outlook, forecast_errors=tuple(forecast_errors))


def _structure(result: DispatchResult, inp: DispatchInput) -> tuple[list[float], list[float]]:
    """Each step's start offset and length (s): the result's, else the input's, else one."""
    starts = [float(s) for s in result.step_start_s]
    lengths = [float(s) for s in result.step_s]
    if starts and len(lengths) == len(starts):
        return starts, lengths
    lengths = [float(s) for s in inp.steps_s] or [inp.interval_s] * inp.horizon
    plan_len = len(result.import_plan_kw)
    lengths = lengths[: plan_len or 1]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    return starts, lengths


def _per_step(values: Sequence[float], n: int, now: float) -> list[float]:
    """``values`` as ``n`` floats (NaN where missing); none at all: ``now`` at step 0."""
    out = [float(v) for v in list(values)[:n]]
    if not out:
        return [now] + [math.nan] * (n - 1)
    return out + [math.nan] * (n - len(out))


def _battery_sum(
    plans: Mapping[str, Sequence[float]], inp: DispatchInput, n: int
) -> list[float] | None:
    """The batteries' per-step values summed (``None``: no battery or no plan for them)."""
    names = [b.name for b in inp.batteries]
    if not names or not all(len(plans.get(name, ())) >= n for name in names):
        return None
    return [sum(float(plans[name][i]) for name in names) for i in range(n)]


def _prices(inp: DispatchInput, n: int) -> list[float]:
    """The import price of each step: the forecast's by position, else the input's."""
    series = None if inp.forecast is None else inp.forecast.price
    if series is None:
        return [inp.price_per_kwh] * n
    values = [float(v) for v in list(series)[:n]]
    return values + [inp.price_per_kwh] * (n - len(values))


def _live(events: Iterable[DrEvent | StoredEvent], at: datetime) -> list[DrEvent]:
    """The events not cancelled and not yet over at ``at``, soonest first."""
    out: list[DrEvent] = []
    for item in events:
        if isinstance(item, StoredEvent) and not item.live:
            continue
        event = item.event if isinstance(item, StoredEvent) else item
        if event.end > at:
            out.append(event)
    return sorted(out, key=lambda e: (e.start, e.id))


def _outlook(
    event: DrEvent,
    at: datetime,
    starts: Sequence[float],
    lengths: Sequence[float],
    slack: tuple[Sequence[float], Sequence[float]],
    held: Sequence[float] = (),
    baseline_kw: float | None = None,
) -> EventOutlook:
    """The shortfall the plan predicts for ``event``: the slack on its own axis (import for
    ``import_limit`` and ``reduce_by``, export for ``export_limit``) over the steps of the
    whole horizon it overlaps (as ``dr/status`` says it: ``controller.horizon.event_outlook``),
    weighted by the overlap. Where events overlap, a step's slack is counted against each of
    them: it misses whichever limit wins. A later step's import limit may be held inside the
    event's own (the plan's reserve): its miss is then measured against the event's limit, as
    ``dr/status`` measures it."""
    axis = slack[1] if event.type is EventType.EXPORT_LIMIT else slack[0]
    own: float | None = None
    if event.type is EventType.IMPORT_LIMIT:
        own = event.kw
    elif event.type is EventType.REDUCE_BY and baseline_kw is not None:
        own = baseline_kw - event.kw
    a, b = (event.start - at).total_seconds(), (event.end - at).total_seconds()
    worst, energy, covered = 0.0, 0.0, False
    for k, (start, length, slack_k) in enumerate(zip(starts, lengths, axis, strict=True)):
        overlap = min(b, start + length) - max(a, start)
        if overlap <= 0:
            continue
        covered = True
        value = slack_k
        if k > 0 and own is not None and k < len(held) and math.isfinite(held[k]):
            value = slack_k - (own - held[k])  # how far inside its limit the plan held it
        miss = max(value, 0.0) if math.isfinite(value) else 0.0
        worst = max(worst, miss)
        energy += miss * overlap / 3600.0
    return EventOutlook(
        id=event.id,
        start=event.start.astimezone(UTC),
        end=event.end.astimezone(UTC),
        predicted_shortfall_kw=_r(worst) if covered else None,
        predicted_shortfall_kwh=_r(energy) if covered else None,
    )


# -- which plans to publish -------------------------------------------------------------------


def _moved(old: float | None, new: float | None, tol: float, rel: float = 0.0) -> bool:
    if old is None or new is None:
        return (old is None) != (new is None)
    return abs(new - old) > max(tol, rel * abs(old))


@dataclass(slots=True)
class _Window:
    """One quarter-hour of a plan: time-weighted sums and the extremes that matter."""

    seconds: float = 0.0
    import_kw_s: float = 0.0
    import_s: float = 0.0
    curtailed_kw_s: float = 0.0
    curtailed_s: float = 0.0
    soc_pct_s: float = 0.0
    soc_s: float = 0.0
    shortfall_kw: float = 0.0
    limits: set[float | None] = field(default_factory=set)

    def add(self, step: PlanStep, seconds: float) -> None:
        self.seconds += seconds
        if step.import_kw is not None:
            self.import_kw_s += step.import_kw * seconds
            self.import_s += seconds
        if step.curtailed_kw is not None:
            self.curtailed_kw_s += step.curtailed_kw * seconds
            self.curtailed_s += seconds
        if step.soc_pct is not None:
            self.soc_pct_s += step.soc_pct * seconds
            self.soc_s += seconds
        self.shortfall_kw = max(self.shortfall_kw, step.shortfall_kw)
        self.limits.add(step.import_limit_kw)

    def view(self) -> tuple[float | None, float | None, float | None, float]:
        """Mean import, mean curtailment, mean state of charge, largest shortfall."""
        return (
            self.import_kw_s / self.import_s if self.import_s else None,
            self.curtailed_kw_s / self.curtailed_s if self.curtailed_s else None,
            self.soc_pct_s / self.soc_s if self.soc_s else None,
            self.shortfall_kw,
        )


def _windows(plan: Plan, start: datetime, count: int) -> list[_Window]:
    """``count`` quarter-hours of ``plan`` from ``start`` (one pass over its steps)."""
    windows = [_Window() for _ in range(count)]
    for step in plan.steps:
        first = max(0, int((step.start - start).total_seconds() // WINDOW_S))
        for j in range(first, count):
            w0 = start + timedelta(seconds=j * WINDOW_S)
            if w0 >= step.end:
                break
            seconds = (
                min(step.end, w0 + timedelta(seconds=WINDOW_S)) - max(step.start, w0)
            ).total_seconds()
            if seconds > 0:
                windows[j].add(step, seconds)
    return windows


def materially_changed(old: Plan, new: Plan) -> bool:
    """Whether ``new`` says something ``old`` did not: a DR event's outlook changed, or, in a
    quarter-hour of the clock both plans cover whole, the mean import, mean curtailment or
    largest shortfall moved by more than ``KW_TOLERANCE`` (and ``REL_TOLERANCE`` of itself),
    the mean state of charge by more than ``SOC_TOLERANCE_PCT``, or the limits held changed.
    Compared by quarter-hours, not step by step: the fine steps at the start of a plan made
    one interval later cover what a block covered before, which is no news."""
    if [e.id for e in old.events] != [e.id for e in new.events]:
        return True
    for a, b in zip(old.events, new.events, strict=True):
        if _moved(a.predicted_shortfall_kw, b.predicted_shortfall_kw, KW_TOLERANCE, REL_TOLERANCE):
            return True
        if _moved(
            a.predicted_shortfall_kwh, b.predicted_shortfall_kwh, KW_TOLERANCE, REL_TOLERANCE
        ):
            return True
    if not old.steps or not new.steps:
        return bool(old.steps) != bool(new.steps)
    begin = max(old.steps[0].start, new.steps[0].start)
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    skip = math.ceil((begin - epoch).total_seconds() / WINDOW_S - 1e-9)
    start = epoch + timedelta(seconds=skip * WINDOW_S)
    end = min(old.end, new.end)
    count = max(0, int((end - start).total_seconds() // WINDOW_S))
    for was, now in zip(_windows(old, start, count), _windows(new, start, count), strict=True):
        v0, v1 = was.view(), now.view()
        if (
            _moved(v0[0], v1[0], KW_TOLERANCE, REL_TOLERANCE)
            or _moved(v0[1], v1[1], KW_TOLERANCE, REL_TOLERANCE)
            or _moved(v0[2], v1[2], SOC_TOLERANCE_PCT)
            or _moved(v0[3], v1[3], KW_TOLERANCE, REL_TOLERANCE)
            or was.limits != now.limits
        ):
            return True
    return False


class PlanGate:
    """Which plans are published and stored: the first, one that changed materially since
    the last one let through, or one ``refresh_s`` (of plan time) after it."""

    def __init__(self, refresh_s: float = REFRESH_S) -> None:
        self.refresh_s = refresh_s
        self.last: Plan | None = None

    def due(self, plan: Plan) -> bool:
        """Whether ``plan`` goes out; if it does, it is the one the next are compared with."""
        last = self.last
        if (
            last is None
            or not last.steps
            or (plan.at - last.at).total_seconds() >= self.refresh_s
            or plan.at < last.at  # the clock went back: say so with a fresh plan
            or materially_changed(last, plan)
        ):
            self.last = plan
            return True
        return False


# -- small helpers ----------------------------------------------------------------------------


def _r(value: float | None, digits: int = 1) -> float | None:
    """Rounded for the document; ``None`` for NaN, infinities and ``None``."""
    if value is None or not math.isfinite(value):
        return None
    rounded = round(float(value), digits)
    return 0.0 if rounded == 0 else rounded  # no -0.0 in the document


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _num(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not an RFC 3339 time")
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return at


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
