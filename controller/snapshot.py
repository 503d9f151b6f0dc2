"""The frozen picture of one interval, and its translation into the optimizer's input.

Only readings from this interval's poll enter a snapshot: a device that did not answer is in
``missing`` and contributes nothing (the dispatch treats it as uncontrollable, at zero, and the
load estimate, anchored on the measured head import, absorbs what it really does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from devices import BatteryReading, MeterReading, PvReading
from optimizer import BatteryUnit, DispatchInput, Network, PvUnit, solve_powerflow

__all__ = ["EstimatorState", "Snapshot", "dispatch_input", "estimate_load_scale"]

BINDING_MARGIN = 0.02
"""A PV output within this share of WMax below its ceiling is taken as held by the ceiling."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    cycle: int
    taken_at: datetime
    head: MeterReading | None
    pv: Mapping[str, PvReading]
    batteries: Mapping[str, BatteryReading]
    missing: frozenset[str]

    @property
    def valid(self) -> bool:
        """A snapshot can be dispatched on only with a fresh head-meter reading."""
        return self.head is not None

    @property
    def complete(self) -> bool:
        return self.valid and not self.missing


@dataclass(slots=True)
class EstimatorState:
    """What the controller remembers between intervals to estimate what it cannot measure."""

    pv_available_kw: dict[str, float] = field(default_factory=dict)
    last_setpoint_kw: dict[str, float] = field(default_factory=dict)


def _pv_available(reading: PvReading, state: EstimatorState) -> float:
    """Output below its ceiling is what the sun offers; at the ceiling, the last such value."""
    ceiling = (
        reading.w_max_kw * (reading.limit_pct or 100.0) / 100.0
        if reading.limit_enabled
        else reading.w_max_kw
    )
    held = reading.limit_enabled and reading.p_kw >= ceiling - BINDING_MARGIN * reading.w_max_kw
    if held and ceiling < reading.w_max_kw * (1 - BINDING_MARGIN):
        available = max(reading.p_kw, state.pv_available_kw.get(reading.device, reading.p_kw))
    else:
        available = reading.p_kw
    state.pv_available_kw[reading.device] = available
    return min(available, reading.w_max_kw)


def estimate_load_scale(
    network: Network, *, head_import_kw: float, injections_kw: Mapping[int, float]
) -> float:
    """The factor on the case's bus loads that makes the AC power flow meet the measured import.

    Two secant steps on ``import(s) = head_import_kw``: import is nearly linear in ``s``.
    """
    total = network.total_load_kw
    if total <= 0:
        return 1.0

    def imported(s: float) -> float:
        p = {b.id: s * b.p_load_kw - injections_kw.get(b.id, 0.0) for b in network.buses}
        q = {b.id: s * b.q_load_kvar for b in network.buses}
        return solve_powerflow(network, p_kw=p, q_kvar=q).import_kw

    s0 = max((head_import_kw + sum(injections_kw.values())) / total, 0.0)
    i0 = imported(s0)
    s1 = max(s0 + (head_import_kw - i0) / total, 0.0)
    i1 = imported(s1)
    if abs(i1 - i0) > 1e-9:
        s1 = max(s1 + (head_import_kw - i1) * (s1 - s0) / (i1 - i0), 0.0)
    return s1


def dispatch_input(
    snapshot: Snapshot,
    network: Network,
    *,
    pv_bus: Mapping[str, int],
    battery_bus: Mapping[str, int],
    ramp_kw_per_s: Mapping[str, float | None],
    state: EstimatorState,
    interval_s: float,
    import_limit_kw: float | None,
    export_limit_kw: float | None,
    v_min_pu: float,
    v_max_pu: float,
    price_per_kwh: float,
) -> DispatchInput:
    """Translate a valid snapshot into the optimizer's input (loads estimated from the head)."""
    if snapshot.head is None:
        raise ValueError("dispatch_input needs a snapshot with a head-meter reading")
    pv_units = tuple(
        PvUnit(
            name=name,
            bus=pv_bus[name],
            rating_kva=r.w_max_kw,
            p_max_kw=r.w_max_kw,
            available_kw=_pv_available(r, state),
            last_setpoint_kw=state.last_setpoint_kw.get(name),
            ramp_kw_per_s=ramp_kw_per_s.get(name),
        )
        for name, r in sorted(snapshot.pv.items())
    )
    batteries = tuple(
        BatteryUnit(
            name=name,
            bus=battery_bus[name],
            p_max_kw=r.p_max_kw,
            energy_kwh=r.energy_kwh,
            soc_kwh=r.soc_pct / 100.0 * r.energy_kwh,
            soc_min_kwh=min(r.min_reserve_pct, r.soc_pct) / 100.0 * r.energy_kwh,
            soc_max_kwh=r.energy_kwh,
            last_setpoint_kw=state.last_setpoint_kw.get(name),
            ramp_kw_per_s=ramp_kw_per_s.get(name),
        )
        for name, r in sorted(snapshot.batteries.items())
    )
    injections: dict[int, float] = {}
    for name, r in snapshot.pv.items():
        injections[pv_bus[name]] = injections.get(pv_bus[name], 0.0) + r.p_kw
    for name, rb in snapshot.batteries.items():
        injections[battery_bus[name]] = injections.get(battery_bus[name], 0.0) + rb.p_kw
    scale = estimate_load_scale(
        network, head_import_kw=snapshot.head.p_kw, injections_kw=injections
    )
    return DispatchInput(
        loads_kw={b.id: scale * b.p_load_kw for b in network.buses},
        loads_kvar={b.id: scale * b.q_load_kvar for b in network.buses},
        pv=pv_units,
        batteries=batteries,
        interval_s=interval_s,
        import_limit_kw=import_limit_kw,
        export_limit_kw=export_limit_kw,
        v_min_pu=v_min_pu,
        v_max_pu=v_max_pu,
        price_per_kwh=price_per_kwh,
    )
