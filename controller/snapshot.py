"""The frozen picture of one interval, and its translation into the optimizer's input.

Only readings from this interval's poll enter a snapshot: a device that did not answer is in
``missing`` and contributes nothing (the dispatch treats it as uncontrollable, at zero, and the
load estimate, anchored on the measured head import, absorbs what it really does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from devices import BatteryReading, LoadReading, MeterReading, PvReading
from optimizer import (
    BatteryUnit,
    DispatchCosts,
    DispatchInput,
    FlexibleLoad,
    Forecast,
    HorizonSpec,
    Network,
    PvUnit,
    solve_powerflow,
)

__all__ = [
    "EstimatorState",
    "SlackVoltage",
    "Snapshot",
    "case_loads",
    "der_injections_kvar",
    "der_injections_kw",
    "dispatch_input",
    "estimate_load_scale",
    "flexible_loads",
    "reactive_kvar",
    "s_max_kva",
    "slack_voltage",
]

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
    loads: Mapping[str, LoadReading] = field(default_factory=dict)
    meters: Mapping[str, MeterReading] = field(default_factory=dict)
    """The meters along the feeder that answered (the head meter is ``head``)."""

    @property
    def valid(self) -> bool:
        """A snapshot can be dispatched on only with a fresh head-meter reading."""
        return self.head is not None


SLACK_V_PLAUSIBLE_PU = (0.8, 1.2)
"""A head-meter voltage outside this band (p.u. of the slack bus's base) is not believed: a
wrong scale, a wrong base kV in the case, or a meter fault, never a substation busbar."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackVoltage:
    """The slack bus's voltage an interval dispatches with, and where it came from."""

    v_pu: float
    source: str
    """"meter" (the head meter measured it) or "config" (the config's or the case's value)."""
    rejected: str | None = None
    """Why the head meter's voltage was not used, when it gave one."""


def slack_voltage(
    head: MeterReading | None, network: Network, *, from_meter: bool = True
) -> SlackVoltage:
    """The head meter's line-to-line voltage in p.u. of the slack bus's base when it measures a
    plausible one (and ``from_meter``), else the network's ``v_slack_pu`` (the config's
    ``feeder.v_slack_pu``, else the case's)."""
    fallback = SlackVoltage(v_pu=network.v_slack_pu, source="config")
    if not from_meter or head is None or head.v_ll_v is None:
        return fallback
    base_v = network.bus(network.slack_bus).base_kv * 1000.0
    v_pu = head.v_ll_v / base_v
    low, high = SLACK_V_PLAUSIBLE_PU
    if not (math.isfinite(v_pu) and low <= v_pu <= high):
        return SlackVoltage(
            v_pu=network.v_slack_pu,
            source="config",
            rejected=(
                f"head meter {head.device!r} reads {head.v_ll_v:g} V line to line, "
                f"{v_pu:.3g} p.u. of the slack bus's base {base_v / 1000.0:g} kV: outside "
                f"{low:g}..{high:g} p.u. (check the case's BASE_KV)"
            ),
        )
    return SlackVoltage(v_pu=v_pu, source="meter")


@dataclass(slots=True)
class EstimatorState:
    """What the controller remembers between intervals to estimate what it cannot measure."""

    pv_available_kw: dict[str, float] = field(default_factory=dict)
    last_setpoint_kw: dict[str, float] = field(default_factory=dict)
    load_demand_kw: dict[str, float] = field(default_factory=dict)
    pv_trend_kw: dict[str, float] = field(default_factory=dict)
    """Each inverter's sun ramp: how much more it offered each interval lately (kW, smoothed;
    negative as the sun goes)."""


TREND_GAIN = 0.5
"""Share of the newest interval's change taken into an inverter's ramp."""
HELD_TREND_DECAY = 0.7
"""While a ceiling holds an inverter, its ramp is carried on, shrinking by this each interval."""
PROBE_FRACTION = 0.02
"""... and at least this share of WMax is assumed to be there above its ceiling each interval:
a held inverter shows only its ceiling, so the estimate climbs until the next reading below
it says where the sun is (an estimate too high only leaves the export under its cap)."""


def _pv_available(reading: PvReading, state: EstimatorState, *, anticipate: bool = False) -> float:
    """Output below its ceiling is what the sun offers; at the ceiling, the last such value (with
    ``anticipate``, under an export limit: carried on along the ramp it was on, at least
    ``PROBE_FRACTION`` of WMax an interval, which the next reading below the ceiling
    corrects)."""
    name = reading.device
    ceiling = (
        reading.w_max_kw * (reading.limit_pct or 100.0) / 100.0
        if reading.limit_enabled
        else reading.w_max_kw
    )
    held = reading.limit_enabled and reading.p_kw >= ceiling - BINDING_MARGIN * reading.w_max_kw
    last = state.pv_available_kw.get(name)
    trend = state.pv_trend_kw.get(name, 0.0)
    if held and ceiling < reading.w_max_kw * (1 - BINDING_MARGIN):
        rise = max(trend, PROBE_FRACTION * reading.w_max_kw) if anticipate else 0.0
        available = max(reading.p_kw, (reading.p_kw if last is None else last) + rise)
        state.pv_trend_kw[name] = max(trend, 0.0) * HELD_TREND_DECAY
    else:
        available = reading.p_kw
        if last is not None:
            state.pv_trend_kw[name] = trend + TREND_GAIN * (available - last - trend)
    available = min(available, reading.w_max_kw)
    state.pv_available_kw[name] = available
    return available


def s_max_kva(reading: PvReading) -> float:
    """An inverter's apparent-power rating: the one it declares, else its active-power one."""
    s = reading.s_max_kva
    return s if s is not None and s > 0 else reading.w_max_kw


def reactive_kvar(reading: PvReading) -> float:
    """The reactive power an inverter can be dispatched to (either way): its declared
    capability within its kVA rating; 0 when it has no fixed reactive points."""
    if not reading.reactive:
        return 0.0
    s = s_max_kva(reading)
    q = reading.var_max_kvar
    return min(q, s) if q is not None and q >= 0 else s


def _anticipated(available_kw: float, trend_kw: float, w_max_kw: float, direction: int) -> float:
    """What an inverter will offer by the interval's end along its ramp, where the ramp goes
    the way that threatens the limit (``direction`` +1: rising, under an export limit; -1:
    falling, under an import limit; 0: not anticipated)."""
    if direction == 0 or trend_kw * direction <= 0:
        return available_kw
    return min(max(available_kw + trend_kw, 0.0), w_max_kw)


def _load_demand(reading: LoadReading, state: EstimatorState) -> float:
    """What a load would draw without a ceiling: its draw, or while a ceiling holds it, the
    last draw seen unheld (the ceiling is the one it reports, else the last one written)."""
    name, rating = reading.device, reading.rating_kw
    ceiling = reading.limit_kw if reading.limit_kw is not None else state.last_setpoint_kw.get(name)
    held = (
        reading.limit_active is not False
        and ceiling is not None
        and ceiling < rating * (1 - BINDING_MARGIN)
        and reading.p_kw >= ceiling - BINDING_MARGIN * rating
    )
    demand = (
        max(reading.p_kw, state.load_demand_kw.get(name, reading.p_kw)) if held else reading.p_kw
    )
    state.load_demand_kw[name] = demand
    return min(demand, rating)


def flexible_loads(
    loads: Mapping[str, LoadReading],
    *,
    bus: Mapping[str, int],
    ramp_kw_per_s: Mapping[str, float | None],
    shed_cost_per_kwh: Mapping[str, float],
    state: EstimatorState,
) -> tuple[FlexibleLoad, ...]:
    """Each load that answered as a unit the dispatch may shed down to its floor."""
    out = []
    for name, r in sorted(loads.items()):
        nominal = _load_demand(r, state)
        last = state.last_setpoint_kw.get(name)
        out.append(
            FlexibleLoad(
                name=name,
                bus=bus[name],
                p_nominal_kw=nominal,
                p_min_kw=min(r.min_kw, nominal),
                last_setpoint_kw=None if last is None else min(last, nominal),
                ramp_kw_per_s=ramp_kw_per_s.get(name),
                shed_cost_per_kwh=shed_cost_per_kwh.get(name),
            )
        )
    return tuple(out)


def estimate_load_scale(
    network: Network,
    *,
    head_import_kw: float,
    injections_kw: Mapping[int, float],
    v_slack_pu: float | None = None,
    injections_kvar: Mapping[int, float] | None = None,
) -> float:
    """The factor on the case's bus loads that makes the AC power flow meet the measured import.

    Two secant steps on ``import(s) = head_import_kw``: import is nearly linear in ``s``. The
    known injections (``injections_kw``, and the inverters' vars ``injections_kvar``) are in
    the power flow: what they change in the losses is not taken for load.
    """
    total = network.total_load_kw
    if total <= 0:
        return 1.0
    q_inj = injections_kvar or {}

    def imported(s: float) -> float:
        p = {b.id: s * b.p_load_kw - injections_kw.get(b.id, 0.0) for b in network.buses}
        q = {b.id: s * b.q_load_kvar - q_inj.get(b.id, 0.0) for b in network.buses}
        return solve_powerflow(network, p_kw=p, q_kvar=q, v_slack_pu=v_slack_pu).import_kw

    s0 = max((head_import_kw + sum(injections_kw.values())) / total, 0.0)
    i0 = imported(s0)
    s1 = max(s0 + (head_import_kw - i0) / total, 0.0)
    i1 = imported(s1)
    if abs(i1 - i0) > 1e-9:
        s1 = max(s1 + (head_import_kw - i1) * (s1 - s0) / (i1 - i0), 0.0)
    return s1


def der_injections_kw(
    snapshot: Snapshot,
    *,
    pv_bus: Mapping[str, int],
    battery_bus: Mapping[str, int],
    load_bus: Mapping[str, int],
) -> dict[int, float]:
    """What the controlled units that answered put into each bus (kW): PV and battery
    output, less what controllable loads draw. The bus loads estimated are the rest."""
    injections: dict[int, float] = {}
    for name, r in snapshot.pv.items():
        injections[pv_bus[name]] = injections.get(pv_bus[name], 0.0) + r.p_kw
    for name, rb in snapshot.batteries.items():
        injections[battery_bus[name]] = injections.get(battery_bus[name], 0.0) + rb.p_kw
    for name, rl in snapshot.loads.items():
        injections[load_bus[name]] = injections.get(load_bus[name], 0.0) - rl.p_kw
    return injections


def der_injections_kvar(snapshot: Snapshot, *, pv_bus: Mapping[str, int]) -> dict[int, float]:
    """What the PV inverters that report it put into each bus in reactive power (kvar): known,
    so the bus loads estimated do not carry it."""
    injections: dict[int, float] = {}
    for name, r in snapshot.pv.items():
        if r.q_kvar is not None:
            injections[pv_bus[name]] = injections.get(pv_bus[name], 0.0) + r.q_kvar
    return injections


def case_loads(network: Network, scale: float) -> tuple[dict[int, float], dict[int, float]]:
    """The case's bus loads (kW, kvar) times one factor: the picture the head meter gives."""
    return (
        {b.id: scale * b.p_load_kw for b in network.buses},
        {b.id: scale * b.q_load_kvar for b in network.buses},
    )


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
    load_bus: Mapping[str, int] | None = None,
    shed_cost_per_kwh: Mapping[str, float] | None = None,
    v_slack_pu: float | None = None,
    v_band_pu: Mapping[int, tuple[float, float]] | None = None,
    bus_loads: tuple[Mapping[int, float], Mapping[int, float]] | None = None,
    ramp_direction: int = 0,
    reactive: bool = False,
    reactive_cost_per_kvarh: float | None = None,
    horizon: HorizonSpec | None = None,
    forecast: Forecast | None = None,
    battery_end_value_per_kwh: float | None = None,
) -> DispatchInput:
    """Translate a valid snapshot into the optimizer's input.

    The bus loads (kW, kvar) are ``bus_loads`` when given (the state estimate), else the
    case's loads scaled to the head import. A controllable load's measured draw is part of its
    bus's load: it is taken out of the head import before the other loads are scaled, and comes
    back as a ``FlexibleLoad`` whose draw the dispatch chooses between its floor and its
    demand.

    With ``reactive``, the inverters that can take a fixed reactive power
    (``PvReading.reactive``) are dispatched in P and Q inside their kVA rating, their vars
    priced at ``reactive_cost_per_kvarh`` (unset: ``DispatchCosts``'s).

    ``ramp_direction`` anticipates the sun's ramp by one interval where it threatens a limit:
    +1 (an export limit) takes a rising inverter's next output, -1 (an import limit) a falling
    one's, 0 the readings as they are.

    ``horizon`` shapes the dispatch's steps (``None``: the interval alone); ``forecast`` is
    what the later steps see (``controller.horizon``); ``battery_end_value_per_kwh`` values the
    energy left at the horizon's end (``None``: the mean import price over it)."""
    if snapshot.head is None:
        raise ValueError("dispatch_input needs a snapshot with a head-meter reading")
    pv_units = tuple(
        PvUnit(
            name=name,
            bus=pv_bus[name],
            rating_kva=s_max_kva(r),
            p_max_kw=r.w_max_kw,
            available_kw=_anticipated(
                _pv_available(r, state, anticipate=ramp_direction > 0),
                state.pv_trend_kw.get(name, 0.0),
                r.w_max_kw,
                ramp_direction,
            ),
            last_setpoint_kw=state.last_setpoint_kw.get(name),
            ramp_kw_per_s=ramp_kw_per_s.get(name),
            q_max_kvar=reactive_kvar(r) if reactive else 0.0,
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
    load_bus = load_bus if load_bus is not None else pv_bus
    injections = der_injections_kw(
        snapshot, pv_bus=pv_bus, battery_bus=battery_bus, load_bus=load_bus
    )
    loads = flexible_loads(
        snapshot.loads,
        bus=load_bus,
        ramp_kw_per_s=ramp_kw_per_s,
        shed_cost_per_kwh=shed_cost_per_kwh or {},
        state=state,
    )
    if bus_loads is None:
        scale = estimate_load_scale(
            network,
            head_import_kw=snapshot.head.p_kw,
            injections_kw=injections,
            v_slack_pu=v_slack_pu,
            injections_kvar=der_injections_kvar(snapshot, pv_bus=pv_bus),
        )
        bus_loads = case_loads(network, scale)
    loads_kw, loads_kvar = bus_loads
    fixed_q = {  # the vars of inverters not dispatched in Q stay what they are (a volt-var curve)
        name: r.q_kvar
        for name, r in snapshot.pv.items()
        if r.q_kvar is not None and not (reactive and r.reactive)
    }
    costs: dict[str, float] = {}
    if reactive_cost_per_kvarh is not None:
        costs["reactive_per_kvarh"] = reactive_cost_per_kvarh
    if battery_end_value_per_kwh is not None:
        costs["battery_energy_value_per_kwh"] = battery_end_value_per_kwh
    kvar = dict(loads_kvar)
    for name, q in fixed_q.items():
        kvar[pv_bus[name]] = kvar.get(pv_bus[name], 0.0) - q
    return DispatchInput(
        loads_kw=dict(loads_kw),
        loads_kvar=kvar,
        pv=pv_units,
        batteries=batteries,
        flexible_loads=loads,
        interval_s=interval_s,
        import_limit_kw=import_limit_kw,
        export_limit_kw=export_limit_kw,
        v_min_pu=v_min_pu,
        v_max_pu=v_max_pu,
        v_slack_pu=v_slack_pu,
        v_band_pu=v_band_pu or {},
        price_per_kwh=price_per_kwh,
        costs=DispatchCosts(**costs),
        horizon=1 if horizon is None else horizon.horizon,
        steps_s=() if horizon is None else horizon.steps_s,
        network_steps=None if horizon is None else horizon.network_steps,
        forecast=forecast,
    )
