"""The write safety envelope (DESIGN.md §4): every setpoint passes through here before a write.

Pure functions: a setpoint is clamped to the device's rating and ramp limit; a value that is not
a finite number is refused; a power limit is never written as 0% (some inverters treat 0% as
standby), and every control carries a revert timeout. A reactive-power setpoint is clamped to
the inverter's kVA circle around the active-power ceiling written with it (active-power
priority) and to the capability the device declares. The other rules sit where the write
happens and are checked here too: ``check_writable`` (only points the model declares writable,
``SunSpecDevice.write_points`` and register maps) and ``check_read_back`` (what the device holds
after the write is what was written).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from devices.errors import UnsafeWriteError

__all__ = [
    "MIN_LIMIT_PCT",
    "BatteryCommand",
    "LoadCommand",
    "PvCommand",
    "Ramp",
    "ReactiveCommand",
    "battery_command",
    "check_read_back",
    "check_writable",
    "load_command",
    "pv_command",
    "reactive_command",
    "revert_limit",
    "revert_pct",
]

MIN_LIMIT_PCT = 0.1
"""The lowest WMaxLimPct feederd writes: 0% means standby on some inverters."""
_INT16_MAX = 32767


@dataclass(frozen=True, slots=True, kw_only=True)
class Ramp:
    """A ramp limit: ``kw_per_s`` (the config's ``ramp_kw_per_s``) between writes that come
    ``interval_s`` apart, so one write moves a setpoint by at most ``step_kw``."""

    kw_per_s: float
    interval_s: float

    def __post_init__(self) -> None:
        for name in ("kw_per_s", "interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ramp {name} must be a positive finite number, got {value!r}")

    @property
    def step_kw(self) -> float:
        return self.kw_per_s * self.interval_s


@dataclass(frozen=True, slots=True, kw_only=True)
class PvCommand:
    """A model-123 power-limit write, ready to encode."""

    limit_pct: float
    revert_s: int
    p_max_kw: float
    clamped: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactiveCommand:
    """A fixed reactive-power write (123 ``VArWMaxPct``, 704 ``VarSetPct``), ready to encode:
    ``pct`` of WMax, signed (positive injects vars), and the kvar that percentage means."""

    pct: float
    q_kvar: float
    revert_s: int
    clamped: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BatteryCommand:
    """A model-124 forced charge/discharge write: ``rate_pct`` > 0 discharges."""

    rate_pct: float
    revert_s: int
    p_kw: float
    clamped: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadCommand:
    """A controllable load's ceiling, ready to encode: ``p_max_kw`` within ``[min, rating]``."""

    p_max_kw: float
    revert_s: int
    clamped: bool


def _finite(device: str, value: float) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise UnsafeWriteError(
            device, f"setpoint {value!r} is not a finite number; nothing written"
        )
    return float(value)


def _window(lo: float, hi: float, last: float | None, ramp: Ramp | None) -> tuple[float, float]:
    """The rating range narrowed by the ramp limit around the last setpoint."""
    if last is None or ramp is None:
        return lo, hi
    step = ramp.step_kw
    r_lo, r_hi = max(lo, last - step), min(hi, last + step)
    return (r_lo, r_hi) if r_lo <= r_hi else (r_hi, r_hi) if r_hi < lo else (r_lo, r_lo)


def _percent(value: float, lo: float, hi: float, full: float) -> float:
    """``value`` as a percentage of ``full`` in 0.1% steps, never outside ``[lo, hi]``."""
    step_lo = math.ceil(round(lo / full * 1000.0, 6)) / 10.0
    step_hi = math.floor(round(hi / full * 1000.0, 6)) / 10.0
    pct = round(min(max(value, lo), hi) / full * 100.0, 1)
    return min(max(pct, step_lo), step_hi) if step_lo <= step_hi else pct


def _revert(device: str, revert_s: int) -> int:
    if not 1 <= revert_s <= 0xFFFE:
        raise UnsafeWriteError(device, f"revert timeout {revert_s} s is outside 1..65534")
    return revert_s


def pv_command(
    device: str,
    p_max_kw: float,
    *,
    w_max_kw: float,
    revert_s: int,
    last_kw: float | None = None,
    ramp: Ramp | None = None,
) -> PvCommand:
    """Clamp a PV ceiling into ``[MIN_LIMIT_PCT% × w_max, w_max]`` and the ramp limit.

    ``pct = clamp(p_max_kw) / w_max_kw × 100`` in 0.1% steps (WMaxLimPct_SF = -1), rounded
    inside the window, never below ``MIN_LIMIT_PCT``.
    """
    requested = _finite(device, p_max_kw)
    if not w_max_kw > 0:
        raise UnsafeWriteError(
            device, f"rating WMax {w_max_kw} kW is not positive; nothing written"
        )
    lo, hi = _window(w_max_kw * MIN_LIMIT_PCT / 100.0, w_max_kw, last_kw, ramp)
    pct = min(max(_percent(requested, lo, hi, w_max_kw), MIN_LIMIT_PCT), 100.0)
    return PvCommand(
        limit_pct=pct,
        revert_s=_revert(device, revert_s),
        p_max_kw=pct * w_max_kw / 100.0,
        clamped=not lo <= requested <= hi,
    )


def reactive_command(
    device: str,
    q_kvar: float,
    *,
    w_max_kw: float,
    s_max_kva: float,
    var_max_kvar: float,
    p_ceiling_kw: float,
    revert_s: int,
    pct_sf: int = -1,
) -> ReactiveCommand:
    """Clamp a reactive setpoint to ``±q_lim`` and express it in % of WMax.

    ``q_lim = min(var_max, sqrt(S² - p_ceiling²), w_max)``: the device's declared capability,
    what the kVA circle leaves beside the active-power ceiling written in the same call (the
    inverter gives up vars, never watts), and 100 % of WMax (the most ``VArWMaxPct`` and
    ``VarSetPct`` can say). ``pct`` is in the steps of the scale factor ``pct_sf`` (-1: 0.1 %),
    rounded towards zero where rounding would step outside ``±q_lim``.
    """
    requested = _finite(device, q_kvar)
    for name, value in (("WMax", w_max_kw), ("kVA rating", s_max_kva)):
        if not (math.isfinite(value) and value > 0):
            raise UnsafeWriteError(
                device, f"{name} {value} is not a positive finite number; nothing written"
            )
    for name, value in (("var capability", var_max_kvar), ("active ceiling", p_ceiling_kw)):
        if not (math.isfinite(value) and value >= 0):
            raise UnsafeWriteError(
                device, f"{name} {value} is not a finite number >= 0; nothing written"
            )
    if not -10 <= pct_sf <= 0:
        raise UnsafeWriteError(device, f"scale factor 10^{pct_sf} is outside 10^-10..10^0")
    head_kvar = math.sqrt(max(s_max_kva * s_max_kva - p_ceiling_kw * p_ceiling_kw, 0.0))
    q_lim = min(var_max_kvar, head_kvar, w_max_kw)
    value = min(max(requested, -q_lim), q_lim)
    step = 10.0**pct_sf
    # and no more than an int16 point carries at that scale factor
    lim_steps = min(math.floor(round(q_lim / w_max_kw * 100.0 / step, 6)), _INT16_MAX)
    steps = min(max(round(value / w_max_kw * 100.0 / step), -lim_steps), lim_steps)
    pct = round(steps * step, -pct_sf)
    return ReactiveCommand(
        pct=pct,
        q_kvar=pct * w_max_kw / 100.0,
        revert_s=_revert(device, revert_s),
        clamped=not -q_lim <= requested <= q_lim,
    )


def battery_command(
    device: str,
    p_kw: float,
    *,
    p_max_kw: float,
    revert_s: int,
    last_kw: float | None = None,
    ramp: Ramp | None = None,
) -> BatteryCommand:
    """Clamp a battery power into ``[-p_max, p_max]`` and the ramp limit."""
    requested = _finite(device, p_kw)
    if not p_max_kw > 0:
        raise UnsafeWriteError(device, f"rating {p_max_kw} kW is not positive; nothing written")
    lo, hi = _window(-p_max_kw, p_max_kw, last_kw, ramp)
    pct = min(max(_percent(requested, lo, hi, p_max_kw), -100.0), 100.0)
    return BatteryCommand(
        rate_pct=pct,
        revert_s=_revert(device, revert_s),
        p_kw=pct * p_max_kw / 100.0,
        clamped=not lo <= requested <= hi,
    )


def load_command(
    device: str,
    p_max_kw: float,
    *,
    min_kw: float,
    rating_kw: float,
    revert_s: int,
    last_kw: float | None = None,
    ramp: Ramp | None = None,
) -> LoadCommand:
    """Clamp a load's ceiling into ``[min_kw, rating_kw]`` and the ramp limit.

    ``min_kw`` is the floor the load may be shed to: no setpoint below it is ever written, so a
    load is never switched off by a bad number. The ramp window is taken around the last
    ceiling written.
    """
    requested = _finite(device, p_max_kw)
    if not rating_kw > 0:
        raise UnsafeWriteError(device, f"rating {rating_kw} kW is not positive; nothing written")
    if not 0 <= min_kw <= rating_kw:
        raise UnsafeWriteError(
            device, f"floor {min_kw} kW is outside 0..{rating_kw} kW; nothing written"
        )
    lo, hi = _window(min_kw, rating_kw, last_kw, ramp)
    # a last ceiling outside [min_kw, rating_kw] (the config changed) never drags the
    # setpoint out of it: the floor and the rating win over the ramp
    lo, hi = min(max(lo, min_kw), rating_kw), max(min(hi, rating_kw), min_kw)
    value = min(max(requested, lo), hi)
    return LoadCommand(
        p_max_kw=value,
        revert_s=_revert(device, revert_s),
        clamped=not lo <= requested <= hi,
    )


def revert_limit(device: str, pct: float) -> float:
    """The value a model-704 limit reverts to: a finite percentage in ``[MIN_LIMIT_PCT, 100]``."""
    value = _finite(device, pct)
    if not MIN_LIMIT_PCT <= value <= 100.0:
        raise UnsafeWriteError(
            device, f"revert limit {value}% is outside {MIN_LIMIT_PCT}..100%; nothing written"
        )
    return value


def revert_pct(
    device: str, revert_kw: float | None, *, w_max_kw: float, configured_pct: float
) -> float:
    """The value a model-704 limit reverts to: ``revert_kw`` (the controller's, under an export
    limit) as a percentage of WMax in 0.1% steps rounded down, never above the configured
    ``revert_limit_pct`` nor below ``MIN_LIMIT_PCT``; without one, the configured value."""
    configured = revert_limit(device, configured_pct)
    if revert_kw is None:
        return configured
    value = _finite(device, revert_kw)
    if not w_max_kw > 0:
        raise UnsafeWriteError(
            device, f"rating WMax {w_max_kw} kW is not positive; nothing written"
        )
    pct = math.floor(round(value / w_max_kw * 1000.0, 6)) / 10.0
    return min(max(pct, MIN_LIMIT_PCT), configured)


def check_writable(device: str, what: str, read_only: list[str]) -> None:
    """Refuse a write that would touch any point not declared writable."""
    if read_only:
        raise UnsafeWriteError(device, f"refusing to write read-only points {read_only} of {what}")


def check_read_back(device: str, address: int, written: list[int], read: list[int]) -> None:
    """The registers read after a write must hold what was written."""
    if list(written) != list(read):
        raise UnsafeWriteError(
            device, f"read-back at {address} differs: wrote {list(written)}, device holds {read}"
        )
