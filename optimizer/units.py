"""The dispatch's input records: controllable units and one interval's snapshot."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from optimizer.forecast import Forecast
from optimizer.horizon import HorizonSpec
from optimizer.network import Network

__all__ = [
    "BatteryUnit",
    "DispatchCosts",
    "DispatchInput",
    "FlexibleLoad",
    "PvUnit",
    "band_violation",
]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _finite(owner: str, **values: float | None) -> None:
    for name, value in values.items():
        _require(value is None or math.isfinite(value), f"{owner}: {name} must be finite")


@dataclass(frozen=True, slots=True, kw_only=True)
class PvUnit:
    """A PV inverter. The dispatch chooses `0 <= p <= min(available_kw, p_max_kw)` and
    `|q| <= q_max_kvar` with `(p, q)` inside the `rating_kva` circle (a 12-sided polygon inside
    it); `q_max_kvar = 0` (the default) keeps the inverter at unity power factor.

    `available_kw` is what the sun offers now (measured output if not curtailed, else an
    estimate). `q` is positive when the inverter injects reactive power.
    """

    name: str
    bus: int
    rating_kva: float
    p_max_kw: float
    available_kw: float
    last_setpoint_kw: float | None = None
    ramp_kw_per_s: float | None = None
    q_max_kvar: float = 0.0

    def __post_init__(self) -> None:
        owner = f"PV unit {self.name!r}"
        _finite(
            owner,
            rating_kva=self.rating_kva,
            p_max_kw=self.p_max_kw,
            available_kw=self.available_kw,
            last_setpoint_kw=self.last_setpoint_kw,
            ramp_kw_per_s=self.ramp_kw_per_s,
            q_max_kvar=self.q_max_kvar,
        )
        _require(self.rating_kva > 0, f"{owner}: rating_kva must be > 0")
        _require(self.q_max_kvar >= 0, f"{owner}: q_max_kvar must be >= 0")
        _require(self.p_max_kw >= 0, f"{owner}: p_max_kw must be >= 0")
        _require(self.available_kw >= 0, f"{owner}: available_kw must be >= 0")
        _require(
            self.ramp_kw_per_s is None or self.ramp_kw_per_s >= 0,
            f"{owner}: ramp_kw_per_s must be >= 0",
        )

    @property
    def p_upper_kw(self) -> float:
        """The most this unit can produce now: `min(available_kw, p_max_kw)`."""
        return min(self.available_kw, self.p_max_kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatteryUnit:
    """A battery, `p = p_dis − p_ch` (kW, discharge positive).

    Over one interval of `dt` hours the state of charge becomes
    `soc_kwh − p_dis·dt/eta_discharge + p_ch·dt·eta_charge`, kept within
    `[soc_min_kwh, soc_max_kwh]` (or not made worse when it is already outside).
    """

    name: str
    bus: int
    p_max_kw: float
    energy_kwh: float
    soc_kwh: float
    soc_min_kwh: float
    soc_max_kwh: float
    eta_charge: float = 0.95
    eta_discharge: float = 0.95
    last_setpoint_kw: float | None = None
    ramp_kw_per_s: float | None = None

    def __post_init__(self) -> None:
        owner = f"battery {self.name!r}"
        _finite(
            owner,
            p_max_kw=self.p_max_kw,
            energy_kwh=self.energy_kwh,
            soc_kwh=self.soc_kwh,
            soc_min_kwh=self.soc_min_kwh,
            soc_max_kwh=self.soc_max_kwh,
            last_setpoint_kw=self.last_setpoint_kw,
            ramp_kw_per_s=self.ramp_kw_per_s,
        )
        _require(self.p_max_kw >= 0, f"{owner}: p_max_kw must be >= 0")
        _require(self.energy_kwh > 0, f"{owner}: energy_kwh must be > 0")
        _require(
            0 <= self.soc_min_kwh <= self.soc_max_kwh <= self.energy_kwh,
            f"{owner}: need 0 <= soc_min_kwh <= soc_max_kwh <= energy_kwh",
        )
        _require(0 < self.eta_charge <= 1, f"{owner}: eta_charge must be in (0, 1]")
        _require(0 < self.eta_discharge <= 1, f"{owner}: eta_discharge must be in (0, 1]")
        _require(
            self.ramp_kw_per_s is None or self.ramp_kw_per_s >= 0,
            f"{owner}: ramp_kw_per_s must be >= 0",
        )

    def soc_after_kwh(self, p_kw: float, interval_s: float) -> float:
        """The state of charge after holding net power `p_kw` for `interval_s` seconds."""
        dt_h = interval_s / 3600.0
        if p_kw >= 0:
            return self.soc_kwh - p_kw * dt_h / self.eta_discharge
        return self.soc_kwh - p_kw * dt_h * self.eta_charge

    def p_range_kw(self, interval_s: float) -> tuple[float, float]:
        """`(−max charge, max discharge)` in kW that p_max and the SOC limits allow now."""
        dt_h = interval_s / 3600.0
        soc_lo = min(self.soc_min_kwh, self.soc_kwh)
        soc_hi = max(self.soc_max_kwh, self.soc_kwh)
        dis = min(self.p_max_kw, (self.soc_kwh - soc_lo) * self.eta_discharge / dt_h)
        ch = min(self.p_max_kw, (soc_hi - self.soc_kwh) / (self.eta_charge * dt_h))
        return -max(ch, 0.0), max(dis, 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class FlexibleLoad:
    """A controllable load: the dispatch chooses `p_min_kw <= p <= p_nominal_kw` (kW drawn),
    with reactive power `q = q_per_kw · p`; serving less than `p_nominal_kw` costs the
    load-shed price: `shed_cost_per_kwh`, or `DispatchCosts.load_shed_per_kwh` when None."""

    name: str
    bus: int
    p_nominal_kw: float
    p_min_kw: float = 0.0
    q_per_kw: float = 0.0
    last_setpoint_kw: float | None = None
    ramp_kw_per_s: float | None = None
    shed_cost_per_kwh: float | None = None

    def __post_init__(self) -> None:
        owner = f"flexible load {self.name!r}"
        _finite(
            owner,
            p_nominal_kw=self.p_nominal_kw,
            p_min_kw=self.p_min_kw,
            q_per_kw=self.q_per_kw,
            last_setpoint_kw=self.last_setpoint_kw,
            ramp_kw_per_s=self.ramp_kw_per_s,
            shed_cost_per_kwh=self.shed_cost_per_kwh,
        )
        _require(self.p_min_kw >= 0, f"{owner}: p_min_kw must be >= 0")
        _require(
            self.shed_cost_per_kwh is None or self.shed_cost_per_kwh >= 0,
            f"{owner}: shed_cost_per_kwh must be >= 0",
        )
        _require(
            self.p_min_kw <= self.p_nominal_kw,
            f"{owner}: p_min_kw {self.p_min_kw} exceeds p_nominal_kw {self.p_nominal_kw}, "
            "no setpoint can meet both",
        )
        _require(
            self.ramp_kw_per_s is None or self.ramp_kw_per_s >= 0,
            f"{owner}: ramp_kw_per_s must be >= 0",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchCosts:
    """Objective weights. Energy terms are per kWh over the interval; slack penalties are large.

    `loss_per_kwh` must exceed `curtailment_per_kwh`, so that the LP never prefers inflating its
    (outer-approximated) losses to curtailing PV when an export limit binds.
    `battery_energy_value_per_kwh` values energy left in storage at the end of the horizon
    (None: the import price averaged over the horizon's time), so that a short horizon does
    not drain batteries for no reason. Energy terms are per kWh of each step, whatever its
    duration.
    """

    curtailment_per_kwh: float = 0.05
    loss_per_kwh: float = 0.20
    battery_wear_per_kwh: float = 0.01
    battery_energy_value_per_kwh: float | None = None
    setpoint_change_per_kwh: float = 0.001
    limit_slack_per_kwh: float = 1000.0
    voltage_slack_per_pu2_h: float = 1.0e6
    load_shed_per_kwh: float = 0.50
    rating_slack_per_kvah: float = 1000.0
    slack_lead_halving_h: float = 24.0
    """Lead time (h) at which a step's slack penalties are half of step 0's: the penalty of a
    step starting `lead` ahead is `penalty / (1 + lead / slack_lead_halving_h)`. A limit that
    cannot be held all day is held now first (what is certain), the shortfall left to the
    forecast, which says so (`import_slack_plan_kw`). Still far above any energy price, so the
    plan charges ahead of an event it can meet."""
    reactive_per_kvarh: float = 0.01
    """On the vars a PV inverter is dispatched to, either way (its own losses and wear, and the
    operator's preference for unity power factor): vars are used where they save more, in
    curtailment, losses or voltage, than they cost, not to trim the feeder's losses by a hair."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchInput:
    """One interval's snapshot for the dispatch.

    `loads_kw`/`loads_kvar` are the uncontrollable load per bus (absent = 0). `import_kw` at
    the feeder head is signed (positive draws from the upstream grid): an import limit `L`
    means `import_kw <= L`, an export limit `E >= 0` means `import_kw >= −E`.

    `horizon` steps are optimised together (receding horizon: only step 0's setpoints are
    applied): `steps_s` gives each step's duration (seconds; `()` means `horizon` steps of
    `interval_s`; when given, `len(steps_s) == horizon` and `steps_s[0] == interval_s`), and
    the first `network_steps` of them are modelled with the full network, the later ones with
    the reduced tail model (`optimizer.lp`; None: every step with the full network). Step 0
    uses the values given here; the `forecast` gives loads, PV availability, prices and limits
    of the later steps (without one, every step is like step 0).

    `v_slack_pu` is the slack bus's voltage this interval (the head meter's measurement), None
    for the network's own (its case's). Every bus is held within `v_min_pu`..`v_max_pu` except
    those `v_band_pu` gives a band of their own.
    """

    loads_kw: Mapping[int, float]
    loads_kvar: Mapping[int, float]
    pv: tuple[PvUnit, ...] = ()
    batteries: tuple[BatteryUnit, ...] = ()
    interval_s: float = 60.0
    import_limit_kw: float | None = None
    export_limit_kw: float | None = None
    v_min_pu: float = 0.95
    v_max_pu: float = 1.05
    v_slack_pu: float | None = None
    v_band_pu: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    price_per_kwh: float = 0.10
    costs: DispatchCosts = field(default_factory=DispatchCosts)
    slack_tol_kw: float = 1e-3
    slack_tol_pu: float = 1e-5
    flexible_loads: tuple[FlexibleLoad, ...] = ()
    horizon: int = 1
    forecast: Forecast | None = None
    steps_s: tuple[float, ...] = ()
    network_steps: int | None = None

    def __post_init__(self) -> None:
        owner = "dispatch input"
        _require(
            isinstance(self.horizon, int) and self.horizon >= 1,
            f"{owner}: horizon must be a whole number >= 1, got {self.horizon!r}",
        )
        self._check_steps(owner)
        if self.forecast is not None:
            self.forecast.check(self.horizon)
        _finite(
            owner,
            interval_s=self.interval_s,
            import_limit_kw=self.import_limit_kw,
            export_limit_kw=self.export_limit_kw,
            v_min_pu=self.v_min_pu,
            v_max_pu=self.v_max_pu,
            v_slack_pu=self.v_slack_pu,
            price_per_kwh=self.price_per_kwh,
        )
        for bus, value in (*self.loads_kw.items(), *self.loads_kvar.items()):
            _require(math.isfinite(value), f"{owner}: load at bus {bus} must be finite")
        _require(self.interval_s > 0, f"{owner}: interval_s must be > 0")
        _require(
            self.export_limit_kw is None or self.export_limit_kw >= 0,
            f"{owner}: export_limit_kw must be >= 0",
        )
        _require(0 < self.v_min_pu <= self.v_max_pu, f"{owner}: need 0 < v_min_pu <= v_max_pu")
        _require(self.v_slack_pu is None or self.v_slack_pu > 0, f"{owner}: v_slack_pu must be > 0")
        for bus, (low, high) in self.v_band_pu.items():
            _require(
                math.isfinite(low) and math.isfinite(high) and 0 < low <= high,
                f"{owner}: bus {bus}'s voltage band must satisfy 0 < low <= high",
            )
        names = [u.name for u in (*self.units, *self.flexible_loads)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        _require(not duplicates, f"{owner}: duplicate unit name(s) {duplicates}")

    def _check_steps(self, owner: str) -> None:
        if self.steps_s:
            _require(
                len(self.steps_s) == self.horizon,
                f"{owner}: steps_s has {len(self.steps_s)} steps, horizon is {self.horizon}",
            )
            for k, step in enumerate(self.steps_s):
                _require(
                    isinstance(step, int | float) and math.isfinite(step) and step > 0,
                    f"{owner}: steps_s[{k}] is {step!r}, must be a finite number > 0",
                )
            _require(
                math.isclose(self.steps_s[0], self.interval_s, rel_tol=1e-9),
                f"{owner}: steps_s[0] is {self.steps_s[0]!r}, must equal interval_s "
                f"{self.interval_s!r} (step 0 is the interval being dispatched)",
            )
        if self.network_steps is not None:
            _require(
                isinstance(self.network_steps, int)
                and not isinstance(self.network_steps, bool)
                and 1 <= self.network_steps <= self.horizon,
                f"{owner}: network_steps must be a whole number in 1..{self.horizon} "
                f"(the horizon), got {self.network_steps!r}",
            )

    @classmethod
    def for_horizon(cls, spec: HorizonSpec, **fields: object) -> DispatchInput:
        """A `DispatchInput` shaped by `spec`: its horizon, step durations (`interval_s` is
        `spec.steps_s[0]`) and network steps, with `fields` for the rest."""
        fields = {"interval_s": spec.steps_s[0], **fields}
        return cls(
            horizon=spec.horizon,
            steps_s=spec.steps_s,
            network_steps=spec.network_steps,
            **fields,  # type: ignore[arg-type]
        )

    @property
    def step_durations_s(self) -> tuple[float, ...]:
        """Each step's duration, seconds (`steps_s`, or `horizon` × `interval_s`)."""
        return self.steps_s if self.steps_s else (float(self.interval_s),) * self.horizon

    @property
    def step_starts_s(self) -> tuple[float, ...]:
        """Each step's start, seconds from now."""
        out, at = [], 0.0
        for step in self.step_durations_s:
            out.append(at)
            at += step
        return tuple(out)

    @property
    def n_network_steps(self) -> int:
        """How many of the first steps see the full network (`network_steps`, None: all)."""
        return self.horizon if self.network_steps is None else self.network_steps

    def slack_v(self, net: Network) -> float:
        """The slack voltage this interval: `v_slack_pu`, else the network's."""
        return net.v_slack_pu if self.v_slack_pu is None else self.v_slack_pu

    def band(self, bus: int) -> tuple[float, float]:
        """The voltage band bus `bus` is held within."""
        return self.v_band_pu.get(bus, (self.v_min_pu, self.v_max_pu))

    @property
    def dt_h(self) -> float:
        """The interval in hours."""
        return self.interval_s / 3600.0

    @property
    def units(self) -> tuple[PvUnit | BatteryUnit, ...]:
        """Every controllable unit, PV first."""
        return (*self.pv, *self.batteries)

    @property
    def unit_set_key(self) -> tuple[tuple[str, int], ...]:
        """What the LP's structure depends on besides the network: each unit's kind, name, bus."""
        return (
            tuple((f"pv:{u.name}:{'pq' if u.q_max_kvar > 0 else 'p'}", u.bus) for u in self.pv)
            + tuple(("battery:" + u.name, u.bus) for u in self.batteries)
            + tuple((f"load:{u.name}:{u.q_per_kw!r}", u.bus) for u in self.flexible_loads)
        )


def band_violation(inp: DispatchInput, v_pu: Mapping[int, float]) -> tuple[float, int | None]:
    """How far (p.u.) the voltage furthest outside its bus's band is outside it, and that bus;
    `(0.0, None)` if every bus is within its band."""
    worst, where = 0.0, None
    for bus, v in v_pu.items():
        low, high = inp.band(bus)
        miss = max(low - v, v - high)
        if miss > worst:
            worst, where = miss, bus
    return worst, where
