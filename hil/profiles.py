"""Profiles of a simulated day: the load shape, clear-sky PV and the events laid over them.

Pure functions of the hour of day (0..24, wrapping) or of the scenario's seconds; the rig calls
them with ``t``, the seconds since it started, so a scenario's profile is
``lambda t: profile(start_hour + t / 3600)`` with its clouds and load steps multiplied in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "LOAD_SHAPE",
    "CloudPass",
    "LoadStep",
    "TapChange",
    "busbar",
    "clear_sky",
    "load",
    "load_shape",
    "sun",
]

LOAD_SHAPE: tuple[float, ...] = (
    0.55, 0.50, 0.48, 0.47, 0.48, 0.52, 0.62, 0.72, 0.76, 0.74, 0.72, 0.72,
    0.73, 0.72, 0.72, 0.75, 0.82, 0.93, 1.00, 1.00, 0.95, 0.85, 0.72, 0.62,
)  # fmt: skip
"""A mixed residential and commercial feeder's load at each hour, per unit of its evening peak:
a night trough near half the peak, a morning shoulder, a flat midday and the peak at 18-20 h."""

SUNRISE_H = 6.0
SUNSET_H = 20.0


def load_shape(hour: float) -> float:
    """The day's load at ``hour`` (per unit of the peak), linear between the hourly points."""
    h = hour % 24.0
    i = int(h)
    frac = h - i
    return LOAD_SHAPE[i] * (1.0 - frac) + LOAD_SHAPE[(i + 1) % 24] * frac


def clear_sky(hour: float) -> float:
    """PV output of a clear day at ``hour`` (per unit of the noon peak, 13 h): 0 at night."""
    h = hour % 24.0
    if not SUNRISE_H < h < SUNSET_H:
        return 0.0
    return float(math.sin(math.pi * (h - SUNRISE_H) / (SUNSET_H - SUNRISE_H)) ** 1.2)


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudPass:
    """A cloud over the whole feeder: the sun drops by ``depth`` (0..1) between ``start_s`` and
    ``end_s``, with linear edges of ``edge_s`` on both sides (a cloud front, not a switch)."""

    start_s: float
    end_s: float
    depth: float
    edge_s: float = 60.0

    def factor(self, t_s: float) -> float:
        """What remains of the sun at ``t_s`` (1 outside the pass)."""
        if t_s <= self.start_s or t_s >= self.end_s:
            return 1.0
        edge = max(min(self.edge_s, (self.end_s - self.start_s) / 2.0), 1e-9)
        cover = min(1.0, (t_s - self.start_s) / edge, (self.end_s - t_s) / edge)
        return 1.0 - self.depth * cover


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadStep:
    """Every load times ``factor`` from ``start_s`` until ``end_s`` (for good when ``None``)."""

    start_s: float
    factor: float
    end_s: float | None = None

    def factor_at(self, t_s: float) -> float:
        if t_s < self.start_s or (self.end_s is not None and t_s >= self.end_s):
            return 1.0
        return self.factor


@dataclass(frozen=True, slots=True, kw_only=True)
class TapChange:
    """The substation's on-load tap changer moves the busbar to ``v_pu`` at ``start_s``."""

    start_s: float
    v_pu: float


def busbar(t_s: float, *, start_pu: float | None, changes: Sequence[TapChange]) -> float | None:
    """The busbar's voltage at scenario second ``t_s`` (p.u.): the latest tap change made by
    then, else ``start_pu`` (``None``: the case's slack voltage)."""
    made = [c for c in changes if c.start_s <= t_s]
    if not made:
        return start_pu
    return max(made, key=lambda c: c.start_s).v_pu


def sun(t_s: float, *, start_hour: float, peak_frac: float, clouds: Sequence[CloudPass]) -> float:
    """PV availability at scenario second ``t_s`` (per unit of the inverters' rating)."""
    value = peak_frac * clear_sky(start_hour + t_s / 3600.0)
    for cloud in clouds:
        value *= cloud.factor(t_s)
    return value


def load(t_s: float, *, start_hour: float, scale: float, steps: Sequence[LoadStep]) -> float:
    """The load scale at scenario second ``t_s`` (1 = the case's loads as written)."""
    value = scale * load_shape(start_hour + t_s / 3600.0)
    for step in steps:
        value *= step.factor_at(t_s)
    return value
