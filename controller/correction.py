"""Feedback on the feeder's limits: the dispatch's model error, measured at the head, corrects
the next interval's import and export limits (pure, no I/O; ``controller.loop`` drives it).

The dispatch predicts the head import its setpoints will give (``DispatchResult.import_kw``);
the next interval's head meter says what they gave. The difference, ``error = measured −
predicted`` (positive: the feeder drew more than the model expected), is what the model does
not know: loads and sun drifting within the interval, line impedances off the case's, losses
between the linear model and the feeder. ``LimitCorrector`` keeps, per limit, a bias
estimate of it and tightens that limit by it:

    import limit L:  import <= L − c_import − margin·|L|,   c_import ≈ error
    export limit E:  import >= −(E − c_export − margin·E),  c_export ≈ −error

so each correction is positive when it tightens its limit. A model that over-predicts may
loosen it by the margin, never past the limit itself: an error learnt while the sun went
behind a cloud must not let the export past the cap when it comes out. Each update is
``c += g·(error − c)``, an integral of the error the corrected prediction makes (``g = 1`` for
the first after a reset, when the last error is all that is known). Anti-windup: ``c`` stays
within ``max_pct`` of the limit (at least ``max_floor_kw``), and ``c`` is frozen (not
updated) after an interval whose limit was not binding (the error there says nothing about
the import at the limit) or whose dispatch had no room left toward it (units at their bounds,
or the limit's slack in use).
A correction restarts from zero when its limit appears, goes or moves by more than
``reset_pct``, when the units the dispatch controls or the network change, and after an
interval without a fresh head reading or dispatched by the fallback rule.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

from optimizer import DispatchInput, DispatchResult

__all__ = [
    "Axis",
    "CorrectionSettings",
    "LimitCorrection",
    "LimitCorrector",
    "headroom_kw",
]

BINDING_TOLERANCE_PCT = 0.1
"""A prediction within this share of its (corrected) limit, or ``BINDING_FLOOR_KW``, is at it."""
BINDING_FLOOR_KW = 0.5
ROOM_FLOOR_KW = 1.0
"""Less room than this (kW) toward a limit, or a slack above it, is none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CorrectionSettings:
    """The ``[control]`` table's correction keys (see ``deploy/feederd.example.toml``)."""

    enabled: bool = True
    gain: float = 0.5
    """Share of each new error taken into the bias (0 < g <= 1)."""
    max_pct: float = 5.0
    """The clamp on a correction, % of its limit's size ..."""
    max_floor_kw: float = 20.0
    """... and at least this many kW (a zero-export limit still gets a correction)."""
    reset_pct: float = 10.0
    """A limit that moves by more than this % of its size (or of ``max_floor_kw``) restarts."""
    margin_pct: float = 0.1
    """Aim this % of the limit inside it: held at or just below, not around it."""


@dataclass(slots=True)
class Axis:
    """One limit's correction: its value (kW, positive tightens) and what it was learnt at."""

    name: str
    correction_kw: float = 0.0
    limit_kw: float | None = None
    """The limit in force when the correction was last set (``None``: no limit)."""
    updates: int = 0
    """Errors taken in since the last reset (the first one is taken whole)."""
    learn: bool = False
    """Whether the last dispatch was at this limit with room left: its error may be taken."""

    def reset(self, limit_kw: float | None) -> bool:
        """Restart at zero for ``limit_kw``; whether there was anything to forget."""
        had = self.correction_kw != 0.0
        self.correction_kw, self.limit_kw, self.updates, self.learn = 0.0, limit_kw, 0, False
        return had


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitCorrection:
    """An interval's corrections, and the limits the dispatch is given with them."""

    import_kw: float | None
    """The import limit's correction (kW, positive tightens; ``None``: no import limit)."""
    export_kw: float | None
    import_limit_kw: float | None
    """The import limit the dispatch holds: ``L − correction − margin``."""
    export_limit_kw: float | None
    error_kw: float | None
    """This interval's measured import less what the last dispatch predicted (``None``: no
    comparison, e.g. the first interval or after one that did not dispatch)."""
    reset: tuple[str, ...] = ()
    """Why corrections were restarted this interval (only those that held a value)."""


@dataclass(slots=True)
class _Prediction:
    import_kw: float


@dataclass(slots=True)
class LimitCorrector:
    """Each interval: ``begin`` with what the head meter measured and the limits in force
    (returns the limits to dispatch with), then ``dispatched`` with what the dispatch did."""

    settings: CorrectionSettings = field(default_factory=CorrectionSettings)
    import_axis: Axis = field(default_factory=lambda: Axis("import"))
    export_axis: Axis = field(default_factory=lambda: Axis("export"))
    _pending: _Prediction | None = None
    _units: Hashable | None = None
    _effective: tuple[float | None, float | None] = (None, None)

    def begin(
        self,
        *,
        measured_kw: float | None,
        import_limit_kw: float | None,
        export_limit_kw: float | None,
        units: Hashable,
    ) -> LimitCorrection:
        """Take in the last dispatch's error (where it may be taken) and apply the resets.
        ``units`` identifies the network and the units the dispatch controls this interval;
        ``measured_kw`` is ``None`` when the head meter gave no fresh reading."""
        pending, self._pending = self._pending, None
        reasons: list[str] = []
        if not self.settings.enabled:
            self._effective = (import_limit_kw, export_limit_kw)
            return LimitCorrection(
                import_kw=None,
                export_kw=None,
                import_limit_kw=import_limit_kw,
                export_limit_kw=export_limit_kw,
                error_kw=None,
            )
        error = None
        if measured_kw is None:
            reasons += self._reset_all("no fresh head-meter reading")
        elif pending is None:
            # the interval before did not dispatch by the LP (first, fallback, no reading)
            reasons += self._reset_all("no dispatch to compare with")
        else:
            error = measured_kw - pending.import_kw
            self._take(self.import_axis, error)
            self._take(self.export_axis, -error)
        if self._units is not None and units != self._units:
            reasons += self._reset_all("the network or the units dispatched changed")
        self._units = units
        for axis, limit in (
            (self.import_axis, import_limit_kw),
            (self.export_axis, export_limit_kw),
        ):
            if self._moved(axis.limit_kw, limit) and axis.reset(limit):
                reasons.append(f"{axis.name} limit changed")
            axis.limit_kw = limit
        imp = self._limit(self.import_axis, import_limit_kw)
        exp = self._limit(self.export_axis, export_limit_kw)
        self._effective = (imp, exp)
        return LimitCorrection(
            import_kw=None if import_limit_kw is None else self.import_axis.correction_kw,
            export_kw=None if export_limit_kw is None else self.export_axis.correction_kw,
            import_limit_kw=imp,
            export_limit_kw=exp,
            error_kw=error,
            reset=tuple(dict.fromkeys(reasons)),
        )

    def dispatched(
        self,
        *,
        predicted_kw: float,
        room_down_kw: float,
        room_up_kw: float,
        import_slack_kw: float = 0.0,
        export_slack_kw: float = 0.0,
    ) -> None:
        """What the LP dispatched (not the fallback rule): the head import it predicted, how
        much further its units could have lowered (``room_down_kw``) or raised
        (``room_up_kw``) it, and the limits' slacks. Not called: the next ``begin`` resets."""
        if not self.settings.enabled:
            return
        self._pending = _Prediction(import_kw=predicted_kw)
        imp, exp = self._effective
        self.import_axis.learn = (
            imp is not None
            and predicted_kw >= imp - _tolerance(imp)
            and room_down_kw >= ROOM_FLOOR_KW
            and import_slack_kw <= _tolerance(imp)
        )
        self.export_axis.learn = (
            exp is not None
            and predicted_kw <= -exp + _tolerance(exp)
            and room_up_kw >= ROOM_FLOOR_KW
            and export_slack_kw <= _tolerance(exp)
        )

    # -- inside ---------------------------------------------------------------------------

    def _take(self, axis: Axis, error_kw: float) -> None:
        if not axis.learn or axis.limit_kw is None:
            return  # frozen: not at its limit, or no room toward it
        gain = 1.0 if axis.updates == 0 else self.settings.gain
        value = axis.correction_kw + gain * (error_kw - axis.correction_kw)
        loosest = -self.settings.margin_pct / 100.0 * abs(axis.limit_kw)
        axis.correction_kw = min(max(value, loosest), self._bound(axis.limit_kw))
        axis.updates += 1

    def _reset_all(self, reason: str) -> list[str]:
        had = [axis.reset(axis.limit_kw) for axis in (self.import_axis, self.export_axis)]
        return [reason] if any(had) else []

    def _bound(self, limit_kw: float) -> float:
        return max(self.settings.max_pct / 100.0 * abs(limit_kw), self.settings.max_floor_kw)

    def _moved(self, old: float | None, new: float | None) -> bool:
        if old is None or new is None:
            return (old is None) != (new is None)
        size = max(abs(old), self.settings.max_floor_kw)
        return abs(new - old) > self.settings.reset_pct / 100.0 * size

    def _limit(self, axis: Axis, limit_kw: float | None) -> float | None:
        if limit_kw is None:
            return None
        return limit_kw - axis.correction_kw - self.settings.margin_pct / 100.0 * abs(limit_kw)


def _tolerance(limit_kw: float) -> float:
    return max(BINDING_TOLERANCE_PCT / 100.0 * abs(limit_kw), BINDING_FLOOR_KW)


def headroom_kw(inp: DispatchInput, result: DispatchResult) -> tuple[float, float]:
    """How much further the dispatched units could have lowered and raised the head import
    this interval (kW): each unit between its bounds for the interval (rating, what the sun
    offers, a load's floor and demand, the ramp from its last setpoint, a battery's state of
    charge), less where the dispatch put it."""
    dt_h = inp.interval_s / 3600.0
    down = up = 0.0
    for pv in inp.pv:
        p = result.pv_kw.get(pv.name, 0.0)
        high, low = _ramped(min(pv.available_kw, pv.p_max_kw), 0.0, pv, inp.interval_s)
        down, up = down + max(high - p, 0.0), up + max(p - low, 0.0)
    for b in inp.batteries:
        p = result.battery_kw.get(b.name, 0.0)
        discharge = min(b.p_max_kw, max(b.soc_kwh - b.soc_min_kwh, 0.0) * b.eta_discharge / dt_h)
        charge = min(b.p_max_kw, max(b.soc_max_kwh - b.soc_kwh, 0.0) / b.eta_charge / dt_h)
        high, low = _ramped(discharge, -charge, b, inp.interval_s)
        down, up = down + max(high - p, 0.0), up + max(p - low, 0.0)
    for load in inp.flexible_loads:
        p = result.load_kw.get(load.name, load.p_nominal_kw)
        high, low = _ramped(load.p_nominal_kw, load.p_min_kw, load, inp.interval_s)
        down, up = down + max(p - low, 0.0), up + max(high - p, 0.0)  # a load draws: signs flip
    return down, up


class _Ramped(Protocol):  # what _ramped reads of a unit (PvUnit, BatteryUnit, FlexibleLoad)
    @property
    def last_setpoint_kw(self) -> float | None: ...
    @property
    def ramp_kw_per_s(self) -> float | None: ...


def _ramped(high: float, low: float, unit: _Ramped, interval_s: float) -> tuple[float, float]:
    """A unit's bounds for the interval: ``low..high``, within its ramp of its last setpoint."""
    last, ramp = unit.last_setpoint_kw, unit.ramp_kw_per_s
    if last is not None and ramp is not None:
        high, low = min(high, last + ramp * interval_s), max(low, last - ramp * interval_s)
    return high, min(low, high)
