"""Smart meters along the rig's feeder: which buses have one, and what each reads.

A bus meter measures its bus's customers: the load the physics put there (consumption
positive; the controlled DERs and loads at the bus are not behind it) and the bus's voltage.
With a ``FeederVariation`` each reading carries the meter's accuracy class (noise and a fixed
bias); without one it is exact (but for the register's or payload's quantisation).

* ``meter_layout`` picks the buses: ``"all"`` the case's load buses, ``"half"`` every other
  one of them, ``"none"``, or an explicit list;
* ``plan_meters`` names them and picks each one's transport: ``m05`` (SunSpec over Modbus,
  model 203, or 201 for the buses in ``single_phase``) or ``ami05`` (JSON over MQTT); ``mixed``
  alternates, Modbus first, in bus order;
* ``FeederMeters`` holds the Modbus meters' register images (served behind one gateway port per
  ``GATEWAY_UNITS`` meters, unit ids 1, 2, ...) and the AMI meters' schedule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from hil.ami import AmiPublication, AmiSchedule, AmiSettings
from hil.physics import PhysicsState
from hil.sim_devices import SimMeter
from hil.variation import FeederVariation, MeterReading

__all__ = [
    "GATEWAY_UNITS",
    "METER_LAYOUTS",
    "METER_TRANSPORTS",
    "FeederMeters",
    "MeterLayout",
    "MeterPlan",
    "MeterTransport",
    "meter_layout",
    "plan_meters",
]

MeterLayout = Literal["none", "half", "all"]
MeterTransport = Literal["modbus", "mqtt", "mixed"]
METER_LAYOUTS: tuple[MeterLayout, ...] = ("none", "half", "all")
METER_TRANSPORTS: tuple[MeterTransport, ...] = ("modbus", "mqtt", "mixed")
GATEWAY_UNITS = 247
"""Unit ids one Modbus gateway answers for (1..247)."""
RANGE_PER_LOAD = 3.0
"""A bus meter's range is this many times its bus's case load (at least ``MIN_RANGE_KW``)."""
MIN_RANGE_KW = 30.0


def meter_layout(load_buses: Sequence[int], which: MeterLayout | Sequence[int]) -> tuple[int, ...]:
    """The buses that get a meter: see the module docstring."""
    buses = tuple(sorted(load_buses))
    if isinstance(which, str):
        if which == "all":
            return buses
        if which == "half":
            return buses[::2]
        if which == "none":
            return ()
        raise ValueError(f"meter layout must be one of {', '.join(METER_LAYOUTS)}, got {which!r}")
    chosen = tuple(int(b) for b in which)
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"meter_buses: a bus is named twice in {list(chosen)}")
    return chosen


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterPlan:
    """One meter along the feeder."""

    name: str
    bus: int
    transport: Literal["modbus", "mqtt"]
    model: int = 203
    """SunSpec model (201 single-phase, 203 three-phase); Modbus meters only."""


def plan_meters(
    buses: Sequence[int], transport: MeterTransport, *, single_phase: Sequence[int] = ()
) -> tuple[MeterPlan, ...]:
    if transport not in METER_TRANSPORTS:
        raise ValueError(
            f"meter transport must be one of {', '.join(METER_TRANSPORTS)}, got {transport!r}"
        )
    plans = []
    for i, bus in enumerate(sorted(buses)):
        mqtt = transport == "mqtt" or (transport == "mixed" and i % 2 == 1)
        if mqtt:
            plans.append(MeterPlan(name=f"ami{bus:02d}", bus=bus, transport="mqtt"))
        else:
            model = 201 if bus in single_phase else 203
            plans.append(MeterPlan(name=f"m{bus:02d}", bus=bus, transport="modbus", model=model))
    return tuple(plans)


class FeederMeters:
    """The meters of ``plans`` on a feeder; see the module docstring.

    ``base_load_kw`` sizes each Modbus meter's range, ``bus_vn_kv`` gives each bus's nominal
    line-line voltage (kV) to turn the physics' per-unit voltages into volts.
    """

    def __init__(
        self,
        plans: Sequence[MeterPlan],
        *,
        base_load_kw: dict[int, float],
        bus_vn_kv: dict[int, float],
        variation: FeederVariation | None,
        ami: AmiSettings,
        monotonic: Callable[[], float] = time.monotonic,
        t0_s: float = 0.0,
    ) -> None:
        self.plans = tuple(plans)
        self.variation = variation
        self._vn_kv = bus_vn_kv
        for plan in self.plans:
            if plan.bus not in bus_vn_kv:
                raise ValueError(f"meter {plan.name}: bus {plan.bus} is not in the case")
        self.modbus: dict[str, SimMeter] = {
            p.name: SimMeter(
                p.name,
                bus=p.bus,
                p_max_kw=max(RANGE_PER_LOAD * base_load_kw.get(p.bus, 0.0), MIN_RANGE_KW),
                v_nominal_ll_v=1000.0 * bus_vn_kv[p.bus],
                model=p.model,
                monotonic=monotonic,
            )
            for p in self.plans
            if p.transport == "modbus"
        }
        self.ami_names = tuple(p.name for p in self.plans if p.transport == "mqtt")
        self.schedule = AmiSchedule(self.ami_names, ami, t0_s=t0_s)
        self._bus = {p.name: p.bus for p in self.plans}
        self.plans_by_name = {p.name: p for p in self.plans}
        self.gains: dict[str, float] = {}
        """Meters that lie (``HilRig.miscalibrate``): their P and Q times this."""

    def gateways(self) -> list[dict[int, SimMeter]]:
        """The Modbus meters by gateway: unit id -> meter, ``GATEWAY_UNITS`` per gateway."""
        meters = list(self.modbus.values())
        return [
            {k + 1: m for k, m in enumerate(meters[i : i + GATEWAY_UNITS])}
            for i in range(0, len(meters), GATEWAY_UNITS)
        ]

    def bus(self, name: str) -> int:
        return self._bus[name]

    def reading(self, name: str, state: PhysicsState, t_s: float) -> MeterReading:
        """What meter ``name`` reads of ``state`` at the rig's second ``t_s``."""
        bus = self._bus[name]
        p, q = state.bus_p_kw.get(bus, 0.0), state.bus_q_kvar.get(bus, 0.0)
        v = state.v_pu[bus] * 1000.0 * self._vn_kv[bus]
        gain = self.gains.get(name, 1.0)
        if self.variation is None:
            return MeterReading(p_kw=gain * p, q_kvar=gain * q, v_ll_v=v)
        r = self.variation.read(bus, t_s=t_s, p_kw=p, q_kvar=q, v_ll_v=v)
        return MeterReading(p_kw=gain * r.p_kw, q_kvar=gain * r.q_kvar, v_ll_v=r.v_ll_v)

    def update_modbus(self, state: PhysicsState, t_s: float) -> None:
        """Refresh the Modbus meters' registers from a new power-flow solution."""
        for name, meter in self.modbus.items():
            r = self.reading(name, state, t_s)
            meter.update(p_kw=r.p_kw, q_kvar=r.q_kvar, v_ll_v=r.v_ll_v)

    def ami_step(self, state: PhysicsState, t_s: float, ts: float) -> list[AmiPublication]:
        """Take the AMI readings due at ``t_s`` (Unix time ``ts``); the ones released now."""
        for name in self.schedule.due(t_s):
            r = self.reading(name, state, t_s)
            body = self.schedule.reading(ts=ts, p_kw=r.p_kw, q_kvar=r.q_kvar, v_ll_v=r.v_ll_v)
            self.schedule.take(name, t_s, body)
        return self.schedule.ready(t_s)
