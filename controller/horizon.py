"""What the dispatch's horizon sees ahead, assembled each interval (pure: no I/O, no clock).

The horizon's shape (``optimizer.HorizonSpec``) comes from the ``[control]`` table and is the
same every interval, so the dispatcher's kept model warm-starts; only its numbers change:

- loads and PV per step: the forecaster's frames (``controller.forecasts``), or none (each
  step sees the loads and sun of now: persistence);
- prices per step: ``controller.prices.step_prices`` (the price feed, the tariff, the default);
- the feeder's limits per step from the DR events accepted and not cancelled: an event is
  mapped onto every step it overlaps, and a step it covers only in part takes its limit (the
  conservative reading). Among the events at one instant the usual overlap rules decide
  (``controller.dr.overlap.resolve``); over a step, the tightest limit of its instants holds.
  A ``reduce_by`` event that has not begun has no measured baseline yet: its limit is the
  forecast's uncontrolled net import (loads less PV) at its start, less its kW. An event that
  begins beyond the horizon is not seen yet. Step 0's limits are the interval's own (the
  corrected ones, ``controller.correction``); the later steps hold each limit a reserve
  inside it (``PlanReserve``: the model error the feedback would take out at step 0).

After the solve, ``event_outlook`` reads the plan's slacks: for each event the plan covers, the
predicted shortfall (the largest slack over its steps, kW, and the energy over the limit, kWh).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from controller.dr.events import EventType
from controller.dr.overlap import StoredEvent, resolve
from controller.prices import StepPrices
from controller.records import COMPLIANCE_TOLERANCE

if TYPE_CHECKING:
    from controller.config import Config
    from optimizer import DispatchResult, Forecast, HorizonSpec

__all__ = [
    "READY_FLOOR_KW",
    "EventOutlook",
    "ForecastFramesLike",
    "ForecasterLike",
    "PlanReserve",
    "StepLimits",
    "event_outlook",
    "horizon_forecast",
    "horizon_spec",
    "limits_when_step0_ends",
    "net_import_kw",
    "step_limits",
    "total_at",
]

READY_FLOOR_KW = 1.0
"""A predicted shortfall within the compliance tolerance of the event's limit
(``records.COMPLIANCE_TOLERANCE`` of its kW), and at least this (kW), counts as none: the
event is ready (the step-0 limit is the corrected one, which a model error keeps in motion)."""


class ForecastFramesLike(Protocol):
    """What ``Forecaster.forecast`` returns (``controller.forecasts.ForecastFrames``)."""

    @property
    def load_kw(self) -> pd.DataFrame | None: ...
    @property
    def pv_kw(self) -> pd.DataFrame | None: ...
    @property
    def source(self) -> str: ...


class ForecasterLike(Protocol):
    """What the loop asks of ``controller.forecasts.Forecaster``."""

    def observe(
        self, at: datetime, loads_kw: Mapping[int, float], pv_available_kw: Mapping[str, float]
    ) -> None: ...

    def forecast(
        self, at: datetime, starts_s: Sequence[float], steps_s: Sequence[float]
    ) -> ForecastFramesLike: ...


def horizon_spec(config: Config) -> HorizonSpec:
    """The horizon the ``[control]`` table describes (fixed for a config)."""
    from optimizer.horizon import HorizonSpec  # noqa: PLC0415

    c = config.control
    return HorizonSpec.multi_resolution(
        config.interval_s,
        hours=c.horizon_h,
        fine_steps=c.horizon_fine_steps,
        block_s=c.horizon_block_s,
        network_steps=c.horizon_network_steps,
    )


def _frame_rows(frame: pd.DataFrame | None, n: int) -> np.ndarray | None:
    if frame is None or len(frame) < n or frame.shape[1] == 0:
        return None
    try:
        values = frame.iloc[:n].to_numpy(dtype=float)
    except (TypeError, ValueError):
        return None
    return values


def total_at(frame: pd.DataFrame | None, now: Mapping[Any, float], n: int) -> list[float]:
    """Per step, the total of ``now`` with the frame's columns replaced by its rows (a column
    the frame lacks keeps its value of now; no frame: now's total at every step)."""
    base = math.fsum(now.values())
    values = _frame_rows(frame, n)
    if values is None:
        return [base] * n
    assert frame is not None
    kept = math.fsum(v for k, v in now.items() if k not in set(frame.columns))
    rows = np.nan_to_num(values, nan=0.0).sum(axis=1)
    out = [kept + float(r) for r in rows]
    out[0] = base  # step 0 is what was measured
    return out


def net_import_kw(
    load_kw: Mapping[int, float],
    pv_kw: Mapping[str, float],
    frames: ForecastFramesLike | None,
    n: int,
) -> list[float]:
    """The uncontrolled net import per step (loads less PV available, kW; losses and the
    controllable units left out): what a ``reduce_by`` event that has not begun reduces."""
    loads = total_at(None if frames is None else frames.load_kw, dict(load_kw), n)
    pv = total_at(None if frames is None else frames.pv_kw, dict(pv_kw), n)
    return [a - b for a, b in zip(loads, pv, strict=True)]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanReserve:
    """How far inside its limit each later step of the plan is held: the larger of
    ``margin_pct`` (the aim inside the limit, as at step 0), ``reserve_pct`` of the limit and
    ``floor_kw``. The head meter's feedback corrects step 0's limit for the model's error
    (``controller.correction``, bounded by ``correction_max_pct`` and its floor); it cannot
    reach a step that has not come, so the plan keeps that much in reserve there: the batteries
    charged for an event with room for the model's error, not just enough by the model."""

    margin_pct: float = 0.0
    reserve_pct: float = 0.0
    floor_kw: float = 0.0

    def kw(self, limit_kw: float) -> float:
        size = abs(limit_kw)
        return max(self.margin_pct / 100.0 * size, self.reserve_pct / 100.0 * size, self.floor_kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepLimits:
    """Each step's import and export limit (``None``: none), before the margin."""

    import_kw: tuple[float | None, ...]
    export_kw: tuple[float | None, ...]


def _with_baselines(
    events: Iterable[StoredEvent], at: datetime, starts_s: Sequence[float], net_kw: Sequence[float]
) -> list[StoredEvent]:
    """The events, a ``reduce_by`` that has not begun given the forecast's net import at its
    start (the step it starts in) as its baseline."""
    out = []
    for s in events:
        if s.event.type is EventType.REDUCE_BY and s.baseline_import_kw is None:
            offset = (s.event.start - at).total_seconds()
            k = max(int(np.searchsorted(starts_s, offset, side="right")) - 1, 0)
            out.append(replace(s, baseline_import_kw=net_kw[k]))
        else:
            out.append(s)
    return out


def _tightest(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def step_limits(
    events: Iterable[StoredEvent],
    at: datetime,
    starts_s: Sequence[float],
    steps_s: Sequence[float],
    *,
    default_import_kw: float | None,
    default_export_kw: float | None,
    net_kw: Sequence[float],
) -> StepLimits:
    """Each step's limits from the live events (see the module docstring)."""
    end_s = starts_s[-1] + steps_s[-1]
    horizon_end = at + timedelta(seconds=end_s)
    seen = [s for s in events if s.live and s.event.end > at and s.event.start < horizon_end]
    seen = _with_baselines(seen, at, starts_s, net_kw)
    cuts = sorted({(t - at).total_seconds() for s in seen for t in (s.event.start, s.event.end)})
    imports: list[float | None] = []
    exports: list[float | None] = []
    for start, step in zip(starts_s, steps_s, strict=True):
        instants = [start, *(c for c in cuts if start < c < start + step)]
        limits = [
            resolve(
                seen,
                at + timedelta(seconds=t),
                default_import_kw=default_import_kw,
                default_export_kw=default_export_kw,
            )
            for t in instants
        ]
        imports.append(_tightest(a.import_kw for a in limits))
        exports.append(_tightest(a.export_kw for a in limits))
    return StepLimits(import_kw=tuple(imports), export_kw=tuple(exports))


def limits_when_step0_ends(
    events: Iterable[StoredEvent],
    at: datetime,
    step0_s: float,
    *,
    default_import_kw: float | None,
    default_export_kw: float | None,
    net_kw: float,
) -> StepLimits:
    """The limits of the events that begin between now and the instant step 0 ends (the next
    poll), as one step (those in force now are step 0's own, corrected).

    Step 0's setpoints stay in the devices until the next interval has polled, solved and
    written: an event that begins by then finds them in force. Step 0 is therefore held to the
    limits of that instant as well as to those of its own start, or it would charge the
    batteries up to the last second before a cap and begin the event over it."""
    when = at + timedelta(seconds=step0_s)
    seen = [s for s in events if s.live and s.event.active_at(when) and not s.event.active_at(at)]
    seen = _with_baselines(seen, at, [0.0], [net_kw])
    now = resolve(
        seen, when, default_import_kw=default_import_kw, default_export_kw=default_export_kw
    )
    return StepLimits(import_kw=(now.import_kw,), export_kw=(now.export_kw,))


def horizon_forecast(
    spec: HorizonSpec,
    *,
    frames: ForecastFramesLike | None,
    prices: StepPrices,
    limits: StepLimits | None,
    step0_import_limit_kw: float | None,
    step0_export_limit_kw: float | None,
    reserve: PlanReserve | None = None,
    held_now_import_kw: float | None = None,
    held_now_export_kw: float | None = None,
    pv_units: Collection[str] | None = None,
) -> Forecast:
    """The ``optimizer.Forecast`` of one interval's horizon (see the module docstring).

    A later step under the limit in force now is held where step 0 holds it
    (``held_now_*``: the limit less the head meter's correction and the margin), since the
    correction goes on for as long as the limit does; a later step under another limit (an
    event to come) is held ``reserve`` inside it, the model error no correction has reached
    yet. (A reserve on the limit in force too had the plan ask more of every later step than
    of now: under a limit held all day by shedding loads, the battery was charged now, with
    more shed, for a stricter future that was never coming.)"""
    from optimizer import Forecast  # noqa: PLC0415

    n = spec.horizon
    index = pd.RangeIndex(n)
    imp = prices.import_per_kwh
    exp = prices.export_per_kwh
    export_price = None if exp == imp else pd.Series(exp, index=index, dtype=float)
    import_limit = export_limit = None
    if limits is not None and n > 1:
        r = reserve or PlanReserve()

        def held(
            values: Sequence[float | None], step0: float | None, now: float | None, low: float
        ) -> pd.Series:
            def one(v: float | None) -> float:
                if v is None:
                    return math.nan
                if now is not None and values[0] is not None and v == values[0]:
                    return now
                return max(v - r.kw(v), low)

            out = [one(v) for v in values]
            out[0] = math.nan if step0 is None else step0
            return pd.Series(out, index=index, dtype=float)

        import_limit = held(limits.import_kw, step0_import_limit_kw, held_now_import_kw, -math.inf)
        export_limit = held(limits.export_kw, step0_export_limit_kw, held_now_export_kw, 0.0)
    load_kw = pv_kw = None
    if frames is not None and n > 1:
        load_kw = _rows(frames.load_kw, n)
        pv_kw = _rows(frames.pv_kw, n)
        if pv_kw is not None and pv_units is not None:
            # an inverter that did not answer this interval is not in the dispatch: its
            # forecast goes with it (the dispatch refuses a forecast of a unit it lacks)
            pv_kw = pv_kw[[c for c in pv_kw.columns if c in pv_units]]
            pv_kw = pv_kw if pv_kw.shape[1] else None
    return Forecast(
        price=pd.Series(imp, index=index, dtype=float),
        export_price=export_price,
        import_limit_kw=import_limit,
        export_limit_kw=export_limit,
        load_kw=load_kw,
        pv_kw=pv_kw,
    )


def _rows(frame: pd.DataFrame | None, n: int) -> pd.DataFrame | None:
    """The frame's first ``n`` rows, by position (``None``: too short or empty)."""
    if frame is None or len(frame) < n or frame.shape[1] == 0:
        return None
    return frame.iloc[:n].reset_index(drop=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventOutlook:
    """What the plan predicts for one event it covers."""

    id: str
    shortfall_kw: float
    """The largest slack on the event's limit over the steps it overlaps (kW)."""
    shortfall_kwh: float
    """The energy over the limit: each step's slack times its overlap with the event (kWh)."""
    covered: bool
    """Whether the plan reaches the event's end (else the prediction is for its start)."""
    tolerance_kw: float = READY_FLOOR_KW
    """A shortfall up to this is none (see ``READY_FLOOR_KW``)."""

    @property
    def ready(self) -> bool:
        return self.shortfall_kw <= self.tolerance_kw


def event_outlook(
    events: Iterable[StoredEvent],
    at: datetime,
    result: DispatchResult,
    reserve: PlanReserve | None = None,
) -> dict[str, EventOutlook]:
    """The predicted shortfall of every live event the plan of ``result`` reaches (none
    when the result carries no plan, e.g. the fallback rule's), against the event's own
    limit: a later step's slack less the ``reserve`` it was held inside the limit by."""
    starts, steps = result.step_start_s, result.step_s
    n = len(starts)
    if not n or len(steps) != n:
        return {}
    imp = result.import_slack_plan_kw
    exp = result.export_slack_plan_kw
    end_s = starts[-1] + steps[-1]
    out: dict[str, EventOutlook] = {}
    for s in events:
        e = s.event
        if not s.live:
            continue
        a = (e.start - at).total_seconds()
        b = (e.end - at).total_seconds()
        if b <= 0 or a >= end_s:
            continue
        slack = exp if e.type is EventType.EXPORT_LIMIT else imp
        if len(slack) != n:
            continue
        limit = e.kw
        if e.type is EventType.REDUCE_BY and s.baseline_import_kw is not None:
            limit = s.baseline_import_kw - e.kw
        held_by = 0.0 if reserve is None else reserve.kw(limit)
        held_plan = result.import_limit_plan_kw if e.type is not EventType.EXPORT_LIMIT else ()
        worst = 0.0
        kwh = 0.0
        for k in range(n):
            lo, hi = max(a, starts[k]), min(b, starts[k] + steps[k])
            if hi <= lo:
                continue
            inside = held_by
            if k > 0 and len(held_plan) == n and math.isfinite(held_plan[k]):
                inside = limit - float(held_plan[k])  # how far inside the plan held it
            value = float(slack[k]) - (inside if k > 0 else 0.0)
            value = max(value, 0.0) if math.isfinite(value) else 0.0
            worst = max(worst, value)
            kwh += value * (hi - lo) / 3600.0
        out[e.id] = EventOutlook(
            id=e.id,
            shortfall_kw=worst,
            shortfall_kwh=kwh,
            covered=b <= end_s + 1e-6,
            tolerance_kw=max(READY_FLOOR_KW, COMPLIANCE_TOLERANCE * abs(limit)),
        )
    return out
