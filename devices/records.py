"""Frozen records the drivers return and accept; units are in the field names."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BatteryReading",
    "BatterySetpoint",
    "DeviceKind",
    "LoadReading",
    "LoadSetpoint",
    "MeterReading",
    "PvReading",
    "PvSetpoint",
    "Reading",
    "Setpoint",
    "WriteResult",
]


class DeviceKind(StrEnum):
    PV = "pv"
    BATTERY = "battery"
    METER = "meter"
    LOAD = "load"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterReading:
    """A meter at a bus; ``p_kw`` is signed, positive = power flowing into the feeder at the
    head, into the bus's customers (consumption) for a meter along the feeder."""

    device: str
    p_kw: float
    q_kvar: float | None
    v_ll_v: float | None
    a: float | None
    dropped: tuple[str, ...] = ()
    """Points left out of this reading as implausible (their fields are ``None``)."""
    age_s: float = 0.0
    """How old the measurement is when read: 0 for a meter polled now, the time since its own
    timestamp (else since its message arrived) for one that publishes (MQTT)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PvReading:
    """A PV inverter's output, the state of its power limit (123 or 704) and its reactive side.

    Reactive power is positive when the inverter injects vars (over-excited: it raises the
    voltage), negative when it absorbs them.
    """

    device: str
    p_kw: float
    w_max_kw: float
    limit_pct: float | None
    limit_enabled: bool
    limit_revert_s: int | None
    q_kvar: float | None = None
    """Measured reactive power (103 ``VAr``, 701 ``Var``); ``None`` when not reported."""
    s_max_kva: float | None = None
    """Apparent-power rating (121 ``VAMax``, 120 ``VARtg``, 702 ``VAMax``/``VAMaxRtg``), never
    above the configured kVA rating (unset: the kW rating)."""
    var_max_kvar: float | None = None
    """The reactive capability the device declares (121 ``VArMaxQ1``, 702 ``VarMaxInj``), else
    ``s_max_kva``."""
    reactive: bool = False
    """The device has fixed reactive-power points feederd can write (123 ``VArPct*`` or 704
    ``VarSet*``)."""
    explicit_revert: bool = False
    """Its limit reverts to a value feederd writes (704 ``WMaxLimPctRvrt``); ``False``: it fails
    open to 100 % (123) when the revert timer lapses."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatteryReading:
    """A battery inverter: ``p_kw`` is signed, positive = discharging into the grid."""

    device: str
    p_kw: float
    p_max_kw: float
    energy_kwh: float
    soc_pct: float
    min_reserve_pct: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadReading:
    """A controllable load: ``p_kw`` is what it draws now (positive = consumed).

    ``rating_kw`` (nominal) and ``min_kw`` (the floor it may be shed to) come from the config;
    ``limit_kw`` is the ceiling the device holds now (``None`` if it does not say), and
    ``limit_active`` whether that ceiling is in force (``None`` if the map has no such point).
    """

    device: str
    p_kw: float
    rating_kw: float
    min_kw: float
    limit_kw: float | None
    limit_active: bool | None
    dropped: tuple[str, ...] = ()
    """Points left out of this reading as implausible (their fields are ``None``)."""


Reading = MeterReading | PvReading | BatteryReading | LoadReading


@dataclass(frozen=True, slots=True, kw_only=True)
class PvSetpoint:
    """An absolute active-power ceiling for one inverter, and optionally a fixed reactive power
    (kvar, positive = injecting; ``None`` leaves the inverter's reactive mode alone)."""

    device: str
    p_max_kw: float
    q_kvar: float | None = None
    revert_kw: float | None = None
    """The ceiling the limit reverts to when feederd stops rewriting it, where the device takes
    one (704); ``None``: the configured ``revert_limit_pct``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatterySetpoint:
    """An absolute battery power: positive discharges, negative charges."""

    device: str
    p_kw: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSetpoint:
    """An absolute ceiling on what one controllable load may draw (kW)."""

    device: str
    p_max_kw: float


Setpoint = PvSetpoint | BatterySetpoint | LoadSetpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteResult:
    """What was written after the safety envelope: the value sent and whether it was clamped.

    For a PV inverter, ``q_kvar`` is the reactive power written after the envelope (``None``:
    none was asked for, or the device has no reactive points) and ``q_clamped`` whether the
    envelope moved it.
    """

    device: str
    requested: float
    written: float
    clamped: bool
    q_kvar: float | None = None
    q_clamped: bool = False
