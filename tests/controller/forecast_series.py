"""Synthetic feeder histories for the forecast tests and ``benchmarks/forecast.py``: every bus's
load follows one daily shape (a morning and an evening peak, a lower weekend) times its case
load, with seeded noise; each inverter gives its rating times a clear-sky shape times a cloud
factor. Deterministic for a seed."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

__all__ = ["Sample", "horizon_steps", "load_shape", "samples", "sun_shape"]


def load_shape(hour: float) -> float:
    """The daily load shape (1.0 at the evening peak's top, about 0.6 at night)."""
    return (
        0.55
        + 0.2 * math.exp(-(((hour - 8.0) / 2.0) ** 2))
        + 0.45 * math.exp(-(((hour - 19.0) / 2.5) ** 2))
    )


def sun_shape(hour: float) -> float:
    """A plain PV day without a site: sunrise at 6:00, noon peak 1.0, sunset at 18:00."""
    return max(0.0, math.sin(math.pi * (hour - 6.0) / 12.0)) if 6.0 <= hour <= 18.0 else 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    at: datetime
    loads_kw: dict[int, float]
    pv_kw: dict[str, float]


def samples(
    start: datetime,
    *,
    days: float,
    interval_s: float,
    loads_kw: Mapping[int, float],
    pv_kwp: Mapping[str, float],
    seed: int,
    noise: float = 0.05,
    weekend_factor: float = 0.8,
    clouds: bool = False,
) -> Iterator[Sample]:
    """One sample per interval from ``start`` (UTC) for ``days``: each bus's load is its base
    times ``load_shape`` (times ``weekend_factor`` on Saturdays and Sundays) times ``1 + noise``
    Gaussian; each inverter's PV ``kWp × sun_shape`` (× a cloud factor drawn per hour in
    0.3..1 when ``clouds``)."""
    rng = np.random.default_rng(seed)
    n = int(days * 86400.0 / interval_s)
    cloud = 1.0
    for i in range(n):
        at = start + timedelta(seconds=i * interval_s)
        hour = at.hour + at.minute / 60.0 + at.second / 3600.0
        factor = load_shape(hour) * (weekend_factor if at.weekday() >= 5 else 1.0)
        eps = rng.normal(0.0, noise, len(loads_kw))
        loads = {
            b: kw * factor * (1.0 + e) for (b, kw), e in zip(loads_kw.items(), eps, strict=True)
        }
        if clouds and at.minute == 0 and at.second == 0:
            cloud = float(rng.uniform(0.3, 1.0))
        sun = sun_shape(hour) * (cloud if clouds else 1.0)
        yield Sample(at, loads, {u: kwp * sun for u, kwp in pv_kwp.items()})


def horizon_steps(interval_s: float, *, hours: float = 24.0, fine: int = 4, block_s: float = 900.0):
    """The default multi-resolution horizon (the contract's ``HorizonSpec.multi_resolution``):
    ``fine`` steps of ``interval_s``, then blocks of ``block_s`` to ``hours``; (starts, steps)."""
    steps = [interval_s] * fine
    total = hours * 3600.0
    while sum(steps) < total - 1e-9:
        steps.append(min(block_s, total - sum(steps)))
    starts = [sum(steps[:i]) for i in range(len(steps))]
    return starts, steps
