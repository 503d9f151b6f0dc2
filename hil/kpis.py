"""What a scenario run measured, interval by interval, and the KPIs that grade it.

Pure: ``Sample`` is one interval as the rig's physics saw it at the controller's poll (so it
shows the previous interval's setpoints at work), ``kpis(samples, ...)`` the figures. Every
figure comes from the physics (pandapower), never from the controller's own estimates.

``dr_compliance``
    Share of intervals under an active DR limit in which the head import is within 2% of the
    limit: ``import <= L + 2%·|L|`` for an import limit ``L``, ``import >= -(E + 2%·E)`` for an
    export limit ``E``. The interval in which an event starts counts: the controller sees the
    limit only at that poll, so its first interval is already a miss if the feeder is above it.
``time_to_comply_s``
    The longest, over the DR events, time from an event's first interval to its first compliant
    one (0 when the feeder already complied; the event's length when it never did).
``energy_over_limit_kwh``
    Integral of the excess over the limit (beyond the limit itself, no tolerance).
``worst_overshoot_pct``
    Issue 14's grade of a firm limit: the largest excess over a limit, in % of its size, in the
    intervals of each DR event after its first two (``None``: no event that long).
``intervals_over_after_first``
    How many intervals of the events, after each one's first, were beyond the limit plus 2%.
``energy_over_after_first_kwh``
    The energy over the limits after each event's first interval: what the controller could
    have held (in the first, the limit arrives with the poll that sees the feeder past it).
``voltage_violation_bus_intervals``
    How many (bus, interval) pairs had a voltage outside the band.
``curtailed_kwh``, ``losses_kwh``
    PV energy held back by the limits, and the feeder's AC losses.
``curtailed_outside_events_kwh``
    The PV energy held back outside the DR events: for the voltage band alone (under an
    export cap, active power must go whatever reactive power does).
``undervoltage_bus_intervals``
    How many (bus, interval) pairs were below ``UNDERVOLTAGE_PU`` (0.92 p.u., the rig's band's
    floor; ``below_band_bus_intervals`` counts against the run's own band).
``energy_cost``
    The head's energy at the tariff: import times the import price, export times the export
    price, interval by interval (``None`` without a tariff).
``events``
    Each DR event (a run of intervals under the same limits): its start, limits, compliance,
    energy over the limit, and the batteries' state of charge as it starts (the physics' at
    the event's first tick, before the controller's first cycle under it) and as it ends.
``days``
    The same figures day by day (the site's local calendar days, when the run's ``start`` is
    given), and each day's forecast error.
``forecast_error`` (in each day)
    The controller's forecast for an hour ahead (``forecast_load_1h_kw``,
    ``forecast_pv_1h_kw``, made at ``t``) against the physics' total load and PV available at
    ``t + 1 h`` (the sample then), counted on the day of ``t + 1 h``: MAPE (%) and RMSE (kW).
    PV is graded in daylight only (the truth at least ``PV_DAYLIGHT_FRAC`` of the run's largest
    PV available): a forecast of nothing at night is no skill, and a percentage of nothing is
    undefined.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "COMPLIANCE_TOLERANCE",
    "FORECAST_AHEAD_S",
    "PV_DAYLIGHT_FRAC",
    "UNDERVOLTAGE_PU",
    "Sample",
    "compliant",
    "event_kpis",
    "forecast_error",
    "kpis",
]

COMPLIANCE_TOLERANCE = 0.02
UNDERVOLTAGE_PU = 0.92
FORECAST_AHEAD_S = 3600.0
"""How far ahead the graded forecasts look (the controller's ``forecast_*_1h_kw``)."""
PV_DAYLIGHT_FRAC = 0.05
_BAND_EPS_PU = 1e-6


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One interval of a run (powers in kW, the head import positive into the feeder)."""

    t_s: float
    import_kw: float
    meter_kw: float | None
    """What the controller read from the head meter (``None``: it got no reading)."""
    import_limit_kw: float | None
    export_limit_kw: float | None
    v_pu: Mapping[int, float]
    losses_kw: float
    load_kw: float
    pv_kw: float
    pv_available_kw: float
    curtailed_kw: float
    battery_kw: float
    battery_soc_pct: float
    status: str
    devices_up: int
    pv_kvar: float = 0.0
    """The reactive power the PV inverters feed in (kvar, negative: absorbed)."""
    dispatched: bool = True
    """Whether the controller dispatched in this interval (it had a head reading, and its first
    complete snapshot)."""
    seen_import_limit_kw: float | None = None
    """The import limit the controller enforced (it may lag the operator's, e.g. over MQTT)."""
    seen_export_limit_kw: float | None = None
    v_slack_pu: float | None = None
    """The substation busbar's (slack bus's) voltage the physics held, p.u."""
    seen_v_slack_pu: float | None = None
    """The slack voltage the controller dispatched with (``None``: it did not dispatch)."""
    est_v_rms_err_pu: float | None = None
    """RMS over the buses of the controller's picture of the bus voltages (its state estimate,
    or the one-factor load picture) against the physics, p.u. (``None``: no picture)."""
    est_v_max_err_pu: float | None = None
    """The largest such error at one bus, p.u."""
    import_correction_kw: float | None = None
    """How far the controller's feedback tightened the import limit it dispatched with (kW;
    ``None``: no import limit, or it did not dispatch)."""
    export_correction_kw: float | None = None
    """Likewise the export limit."""
    model_error_kw: float | None = None
    """The controller's measured head import less what its last dispatch predicted (kW)."""
    devices_missing: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    cycle_ms: float = 0.0
    forecast_load_1h_kw: float | None = None
    """The controller's forecast, made this interval, of the total load an hour on (kW)."""
    forecast_pv_1h_kw: float | None = None
    """Likewise of the PV available an hour on (kW)."""
    plan_shortfall_kw: float | None = None
    """The largest shortfall the controller's plan predicted (kW; its own view)."""
    price_per_kwh: float | None = None
    """The tariff's import price this interval (``None``: no tariff)."""
    export_price_per_kwh: float | None = None
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def limited(self) -> bool:
        return self.import_limit_kw is not None or self.export_limit_kw is not None


def compliant(s: Sample, tolerance: float = COMPLIANCE_TOLERANCE) -> bool:
    """Whether the head import is within the active limits (plus ``tolerance``)."""
    if s.import_limit_kw is not None:
        lim = s.import_limit_kw
        if s.import_kw > lim + tolerance * abs(lim):
            return False
    if s.export_limit_kw is not None:
        lim = s.export_limit_kw
        if s.import_kw < -(lim + tolerance * lim):
            return False
    return True


def _over_kw(s: Sample) -> float:
    over = 0.0
    if s.import_limit_kw is not None:
        over += max(0.0, s.import_kw - s.import_limit_kw)
    if s.export_limit_kw is not None:
        over += max(0.0, -s.export_limit_kw - s.import_kw)
    return over


def _events(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Runs of consecutive samples under the same limits: one per DR event."""
    events: list[list[Sample]] = []
    key: tuple[float | None, float | None] | None = None
    for s in samples:
        k = (s.import_limit_kw, s.export_limit_kw) if s.limited else None
        if k is None:
            key = None
            continue
        if k != key:
            events.append([])
            key = k
        events[-1].append(s)
    return events


def _over_pct(s: Sample) -> float:
    """The excess over the limits in % of each limit's size (the larger one; floor 1 kW)."""
    out = 0.0
    if s.import_limit_kw is not None:
        out = max(out, (s.import_kw - s.import_limit_kw) / max(abs(s.import_limit_kw), 1.0))
    if s.export_limit_kw is not None:
        out = max(out, (-s.export_limit_kw - s.import_kw) / max(s.export_limit_kw, 1.0))
    return 100.0 * out


def _cost(samples: Sequence[Sample], dt_h: float) -> float | None:
    if not samples or any(s.price_per_kwh is None for s in samples):
        return None
    total = 0.0
    for s in samples:
        assert s.price_per_kwh is not None
        export = s.export_price_per_kwh if s.export_price_per_kwh is not None else s.price_per_kwh
        total += s.import_kw * (s.price_per_kwh if s.import_kw >= 0 else export) * dt_h
    return round(total, 3)


def _below(samples: Sequence[Sample], floor_pu: float) -> int:
    return sum(1 for s in samples for v in s.v_pu.values() if v < floor_pu - _BAND_EPS_PU)


def _compliance(samples: Sequence[Sample]) -> float | None:
    limited = [s for s in samples if s.limited]
    return round(sum(1 for s in limited if compliant(s)) / len(limited), 4) if limited else None


def event_kpis(
    samples: Sequence[Sample], *, interval_s: float, when: Callable[[float], str] | None = None
) -> list[dict[str, Any]]:
    """Each DR event's figures (see ``events`` in the module docstring)."""
    dt_h = interval_s / 3600.0
    out = []
    for event in _events(samples):
        first, last = event[0], event[-1]
        out.append(
            {
                "start_s": first.t_s,
                "start": when(first.t_s) if when is not None else None,
                "end_s": last.t_s + interval_s,
                "import_limit_kw": first.import_limit_kw,
                "export_limit_kw": first.export_limit_kw,
                "intervals": len(event),
                "dr_compliance": _compliance(event),
                "energy_over_limit_kwh": round(sum(_over_kw(s) for s in event) * dt_h, 3),
                "max_import_kw": round(max(s.import_kw for s in event), 1),
                "soc_at_start_pct": round(first.battery_soc_pct, 2),
                "soc_at_end_pct": round(last.battery_soc_pct, 2),
                "undervoltage_bus_intervals": _below(event, UNDERVOLTAGE_PU),
            }
        )
    return out


def _errors(pairs: Sequence[tuple[float, float]]) -> tuple[float | None, float | None]:
    """MAPE (%) and RMSE of (forecast, truth) pairs; MAPE over the truths > 0."""
    if not pairs:
        return None, None
    rmse = math.sqrt(math.fsum((f - t) ** 2 for f, t in pairs) / len(pairs))
    pct = [abs(f - t) / t for f, t in pairs if t > 0]
    mape = 100.0 * math.fsum(pct) / len(pct) if pct else None
    return (round(mape, 2) if mape is not None else None), round(rmse, 2)


def forecast_error(
    samples: Sequence[Sample], *, ahead_s: float = FORECAST_AHEAD_S
) -> dict[float, tuple[tuple[float, float] | None, tuple[float, float] | None]]:
    """For each sample whose forecast can be graded, keyed by the graded (target) time:
    the (forecast, truth) of the load, and of the PV in daylight (``None``: not graded)."""
    by_t = {round(s.t_s, 3): s for s in samples}
    pv_top = max((s.pv_available_kw for s in samples), default=0.0)
    floor = PV_DAYLIGHT_FRAC * pv_top
    out: dict[float, tuple[tuple[float, float] | None, tuple[float, float] | None]] = {}
    for s in samples:
        target = by_t.get(round(s.t_s + ahead_s, 3))
        if target is None:
            continue
        load = None
        if s.forecast_load_1h_kw is not None:
            load = (s.forecast_load_1h_kw, target.load_kw)
        pv = None
        if s.forecast_pv_1h_kw is not None and pv_top > 0 and target.pv_available_kw >= floor:
            pv = (s.forecast_pv_1h_kw, target.pv_available_kw)
        if load is not None or pv is not None:
            out[target.t_s] = (load, pv)
    return out


def _forecast_figures(
    graded: Mapping[float, tuple[tuple[float, float] | None, tuple[float, float] | None]],
) -> dict[str, Any]:
    loads = [p[0] for p in graded.values() if p[0] is not None]
    pvs = [p[1] for p in graded.values() if p[1] is not None]
    load_mape, load_rmse = _errors(loads)
    pv_mape, pv_rmse = _errors(pvs)
    return {
        "load_points": len(loads),
        "load_mape_pct": load_mape,
        "load_rmse_kw": load_rmse,
        "pv_points": len(pvs),
        "pv_mape_pct": pv_mape,
        "pv_rmse_kw": pv_rmse,
    }


def _day_kpis(
    samples: Sequence[Sample],
    *,
    interval_s: float,
    v_min_pu: float,
    v_max_pu: float,
    start: datetime | None,
) -> list[dict[str, Any]]:
    dt_h = interval_s / 3600.0

    def day_of(t_s: float) -> str:
        if start is None:
            return f"day {math.floor(t_s / 86400.0) + 1}"
        at = (start.astimezone(UTC) + timedelta(seconds=t_s)).astimezone(start.tzinfo)
        return at.date().isoformat()

    days: dict[str, list[Sample]] = {}
    for s in samples:
        days.setdefault(day_of(s.t_s), []).append(s)
    graded = forecast_error(samples)
    out = []
    for name, group in days.items():
        times = {s.t_s for s in group}
        mine = {t: p for t, p in graded.items() if t in times}
        out.append(
            {
                "day": name,
                "intervals": len(group),
                "dr_intervals": sum(1 for s in group if s.limited),
                "dr_compliance": _compliance(group),
                "energy_over_limit_kwh": round(sum(_over_kw(s) for s in group) * dt_h, 3),
                "undervoltage_bus_intervals": _below(group, UNDERVOLTAGE_PU),
                "below_band_bus_intervals": _below(group, v_min_pu),
                "voltage_violation_bus_intervals": sum(
                    1
                    for s in group
                    for v in s.v_pu.values()
                    if v < v_min_pu - _BAND_EPS_PU or v > v_max_pu + _BAND_EPS_PU
                ),
                "imported_kwh": round(sum(s.import_kw for s in group) * dt_h, 3),
                "energy_cost": _cost(group, dt_h),
                "battery_charged_kwh": round(sum(max(-s.battery_kw, 0.0) for s in group) * dt_h, 3),
                "battery_discharged_kwh": round(
                    sum(max(s.battery_kw, 0.0) for s in group) * dt_h, 3
                ),
                "soc_min_pct": round(min(s.battery_soc_pct for s in group), 2),
                "soc_max_pct": round(max(s.battery_soc_pct for s in group), 2),
                "forecast_error": _forecast_figures(mine),
            }
        )
    return out


def kpis(
    samples: Sequence[Sample],
    *,
    interval_s: float,
    v_min_pu: float,
    v_max_pu: float,
    start: datetime | None = None,
) -> dict[str, Any]:
    """The run's figures (see the module docstring); JSON-ready. ``start`` is when the run
    starts (timezone-aware, the site's local time): it names the days and the events."""
    dt_h = interval_s / 3600.0
    limited = [s for s in samples if s.limited]
    ok = [s for s in limited if compliant(s)]
    times: list[float] = []
    settled: list[float] = []
    over_after_first = 0
    energy_after_first = 0.0
    for event in _events(samples):
        first = next((s for s in event if compliant(s)), None)
        times.append(first.t_s - event[0].t_s if first is not None else len(event) * interval_s)
        settled += [_over_pct(s) for s in event[2:]]
        over_after_first += sum(1 for s in event[1:] if not compliant(s))
        energy_after_first += sum(_over_kw(s) for s in event[1:]) * dt_h
    violations = sum(
        1
        for s in samples
        for v in s.v_pu.values()
        if v < v_min_pu - _BAND_EPS_PU or v > v_max_pu + _BAND_EPS_PU
    )
    all_v = [v for s in samples for v in s.v_pu.values()] or [math.nan]
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[s.status] = statuses.get(s.status, 0) + 1
    return {
        "intervals": len(samples),
        "interval_s": interval_s,
        "v_band_pu": [v_min_pu, v_max_pu],
        "dr_intervals": len(limited),
        "dr_events": len(times),
        "dr_compliance": round(len(ok) / len(limited), 4) if limited else None,
        "time_to_comply_s": max(times) if times else None,
        "energy_over_limit_kwh": round(sum(_over_kw(s) for s in samples) * dt_h, 3),
        "worst_overshoot_pct": round(max(settled), 3) if settled else None,
        "intervals_over_after_first": over_after_first,
        "energy_over_after_first_kwh": round(energy_after_first, 3),
        "voltage_violation_bus_intervals": violations,
        "v_min_pu": round(min(all_v), 4),
        "v_max_pu": round(max(all_v), 4),
        "curtailed_kwh": round(sum(s.curtailed_kw for s in samples) * dt_h, 3),
        "curtailed_outside_events_kwh": round(
            sum(s.curtailed_kw for s in samples if not s.limited) * dt_h, 3
        ),
        "pv_reactive_kvarh": round(sum(abs(s.pv_kvar) for s in samples) * dt_h, 3),
        "losses_kwh": round(sum(s.losses_kw for s in samples) * dt_h, 3),
        "imported_kwh": round(sum(s.import_kw for s in samples) * dt_h, 3),
        "battery_discharged_kwh": round(sum(max(s.battery_kw, 0.0) for s in samples) * dt_h, 3),
        "battery_charged_kwh": round(sum(max(-s.battery_kw, 0.0) for s in samples) * dt_h, 3),
        "max_import_kw": round(max((s.import_kw for s in samples), default=math.nan), 1),
        "device_missed_intervals": sum(len(s.devices_missing) for s in samples),
        "estimate_v_rms_err_pu": _rms_or_none([s.est_v_rms_err_pu for s in samples]),
        "estimate_v_max_err_pu": _max_or_none([s.est_v_max_err_pu for s in samples]),
        "statuses": statuses,
        "undervoltage_bus_intervals": _below(samples, UNDERVOLTAGE_PU),
        "below_band_bus_intervals": _below(samples, v_min_pu),
        "energy_cost": _cost(samples, dt_h),
        "forecast_error": _forecast_figures(forecast_error(samples)),
        "events": event_kpis(samples, interval_s=interval_s, when=_when(start)),
        "days": _day_kpis(
            samples, interval_s=interval_s, v_min_pu=v_min_pu, v_max_pu=v_max_pu, start=start
        ),
    }


def _when(start: datetime | None) -> Callable[[float], str] | None:
    if start is None:
        return None

    def at(t_s: float) -> str:
        return (
            (start.astimezone(UTC) + timedelta(seconds=t_s))
            .astimezone(start.tzinfo)
            .isoformat(timespec="minutes")
        )

    return at


def _rms_or_none(values: Sequence[float | None]) -> float | None:
    """The RMS of the values given (each an interval's RMS over the buses), 6 decimals."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return round(math.sqrt(math.fsum(v * v for v in known) / len(known)), 6)


def _max_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(max(known), 6) if known else None
