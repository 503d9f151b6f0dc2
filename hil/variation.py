"""How the rig's feeder differs from the case file the controller is given (seeded, pure).

A rig built from the controller's own model cannot find that model's errors. ``RigVariation``
says how far the simulated feeder strays from the case; ``FeederVariation`` is one seeded draw
of it for a given feeder (its load buses, base loads and branches), and holds:

* **model error**: every branch's R and X times a factor drawn uniformly within
  ``±impedance_spread``, and every bus's nominal load times one within ``±load_error``;
* **customer classes**: each load bus mixes residential, commercial and industrial customers
  (a Dirichlet draw of shares), whose day shapes (``CLASS_SHAPES``) differ;
* **per-bus noise**: a multiplicative, log-normal AR(1) process per bus on a grid of
  ``noise_step_s`` (correlation time ``noise_tau_s``), linear in between: a function of the
  seed and the time only, so any run, any step size, gives the same loads at the same instant;
* **meter accuracy**: gaussian noise of standard deviation half the accuracy class (so ~95% of
  readings fall within the class), a per-meter bias within ``meter_bias_frac`` of the class,
  both functions of the seed, the meter and the time; quantisation is the register's (a
  SunSpec scale factor) or the payload's resolution;
* **cloud motion**: each bus sits ``hops × span_m`` along the feeder from the substation; a
  cloud front moving at ``cloud_speed_m_s`` in ``cloud_direction_deg`` (0: outward, away from
  the substation; 180: inward) reaches it ``position × cos(direction) / speed`` seconds after
  it passes the substation (the time a scenario's ``[[cloud]]`` gives).

Each bus's load factor at scenario second ``t`` and hour of day ``h`` is

    load_scale(t) × e_b × shape_b(h) / mean(h) × noise_b(t),
    mean(h) = Σ_b L_b e_b shape_b(h) / Σ_b L_b

with ``L_b`` the case's load and ``e_b`` the nominal error, so without noise the feeder's total
is exactly ``load_scale(t)`` times the case's total: the scenario's load profile still holds
for the feeder, while its buses no longer move together.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CLASS_SHAPES",
    "CUSTOMER_CLASSES",
    "FeederVariation",
    "MeterReading",
    "RigVariation",
    "class_shape",
    "hop_distances",
]

CUSTOMER_CLASSES = ("residential", "commercial", "industrial")
CLASS_SHAPES: dict[str, tuple[float, ...]] = {
    "residential": (
        0.42, 0.36, 0.33, 0.32, 0.33, 0.38, 0.52, 0.68, 0.66, 0.55, 0.50, 0.49,
        0.50, 0.48, 0.47, 0.52, 0.64, 0.82, 0.96, 1.00, 0.96, 0.84, 0.67, 0.52,
    ),
    "commercial": (
        0.30, 0.29, 0.28, 0.28, 0.29, 0.32, 0.42, 0.62, 0.85, 0.95, 0.98, 1.00,
        0.98, 0.99, 0.98, 0.96, 0.92, 0.80, 0.62, 0.50, 0.43, 0.38, 0.34, 0.32,
    ),
    "industrial": (
        0.62, 0.60, 0.60, 0.60, 0.62, 0.72, 0.90, 0.98, 1.00, 1.00, 0.99, 0.96,
        0.90, 0.97, 1.00, 0.99, 0.96, 0.90, 0.80, 0.74, 0.70, 0.68, 0.66, 0.64,
    ),
}  # fmt: skip
"""Each class's load at each hour, per unit of its own peak: homes peak in the evening, shops
and offices through the working day, factories run two shifts with a night base."""


def class_shape(name: str, hour: float) -> float:
    """Class ``name``'s load at ``hour`` (per unit of its peak), linear between the hours."""
    points = CLASS_SHAPES[name]
    h = hour % 24.0
    i = int(h)
    frac = h - i
    return points[i] * (1.0 - frac) + points[(i + 1) % 24] * frac


def _fraction(name: str, value: float, top: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= top):
        raise ValueError(f"RigVariation.{name} must be within 0..{top:g}, got {value!r}")


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"RigVariation.{name} must be a number > 0, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RigVariation:
    """How far the rig strays from the case (see the module docstring); all draws come from
    ``seed``. The defaults are what ``feederd demo`` and the scenarios run with."""

    seed: int = 1
    impedance_spread: float = 0.12
    """R and X of each branch times a factor within 1 ± this (independently)."""
    load_error: float = 0.30
    """Each bus's nominal load times a factor within 1 ± this: a case file's loads are
    planning figures, and with the class shapes the buses end up 0.3-1.7x their share, the
    spread issue 13 measured the one-factor picture's errors with."""
    class_concentration: float = 0.7
    """Dirichlet concentration of each bus's customer-class shares: below 1 most buses are
    dominated by one class, above 1 they tend to an even mix."""
    noise_sigma: float = 0.05
    """Standard deviation of each bus's log load noise."""
    noise_tau_s: float = 900.0
    """Correlation time of the noise (AR(1) coefficient ``exp(-step/tau)``)."""
    noise_step_s: float = 60.0
    """Grid of the noise process (linear in between)."""
    meter_class_pct: float = 0.5
    """Accuracy class of the meters along the feeder, for P and Q (% of reading)."""
    meter_v_class_pct: float = 0.2
    """Their voltage accuracy (% of reading)."""
    head_meter_class_pct: float = 0.2
    """The substation's head meter, for P, Q and V."""
    meter_bias_frac: float = 0.3
    """Each meter's fixed bias is uniform within ± this fraction of its class."""
    cloud_speed_m_s: float = 8.0
    cloud_direction_deg: float = 0.0
    """0: the front moves outward from the substation; 180: inward; 90: across (all at once)."""
    span_m: float = 300.0
    """Length of one branch for positions along the feeder (hops × span)."""

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"RigVariation.seed must be an integer >= 0, got {self.seed!r}")
        _fraction("impedance_spread", self.impedance_spread, 0.9)
        _fraction("load_error", self.load_error, 0.9)
        _fraction("noise_sigma", self.noise_sigma, 1.0)
        _fraction("meter_class_pct", self.meter_class_pct, 10.0)
        _fraction("meter_v_class_pct", self.meter_v_class_pct, 10.0)
        _fraction("head_meter_class_pct", self.head_meter_class_pct, 10.0)
        _fraction("meter_bias_frac", self.meter_bias_frac, 1.0)
        for name in ("class_concentration", "noise_tau_s", "noise_step_s", "cloud_speed_m_s"):
            _positive(name, getattr(self, name))
        _positive("span_m", self.span_m)
        if not math.isfinite(self.cloud_direction_deg):
            raise ValueError("RigVariation.cloud_direction_deg must be a finite number")


def hop_distances(branches: Iterable[tuple[int, int]], root: int) -> dict[int, int]:
    """Branches from ``root`` to every bus reachable (breadth first; a radial feeder's depth)."""
    adjacent: dict[int, list[int]] = {}
    for a, b in branches:
        adjacent.setdefault(a, []).append(b)
        adjacent.setdefault(b, []).append(a)
    hops = {root: 0}
    frontier = deque([root])
    while frontier:
        bus = frontier.popleft()
        for nxt in adjacent.get(bus, ()):
            if nxt not in hops:
                hops[nxt] = hops[bus] + 1
                frontier.append(nxt)
    return hops


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterReading:
    """What a meter reports: the truth with its error (before the register's quantisation)."""

    p_kw: float
    q_kvar: float
    v_ll_v: float


_STREAM_IMPEDANCE, _STREAM_LOAD, _STREAM_CLASS, _STREAM_NOISE, _STREAM_METER = 1, 2, 3, 4, 5
_CHUNK = 256
"""Noise steps drawn per chunk (each chunk from its own seed: random access in order)."""


class FeederVariation:
    """One seeded draw of ``RigVariation`` for a feeder; see the module docstring.

    ``base_load_kw`` is each load bus's case load, ``branches`` the case's ``(from, to)``
    pairs, ``head_bus`` the substation's bus.
    """

    def __init__(
        self,
        spec: RigVariation,
        *,
        base_load_kw: Mapping[int, float],
        branches: Sequence[tuple[int, int]],
        head_bus: int,
    ) -> None:
        self.spec = spec
        self.buses = tuple(sorted(base_load_kw))
        seed = spec.seed
        rng = np.random.default_rng([seed, _STREAM_IMPEDANCE])
        s = spec.impedance_spread
        draws = rng.uniform(1.0 - s, 1.0 + s, size=(len(branches), 2))
        self.impedance_factors: dict[tuple[int, int], tuple[float, float]] = {
            (int(a), int(b)): (float(fr), float(fx))
            for (a, b), (fr, fx) in zip(branches, draws, strict=True)
        }
        rng = np.random.default_rng([seed, _STREAM_LOAD])
        e = spec.load_error
        errors = rng.uniform(1.0 - e, 1.0 + e, size=len(self.buses))
        self.nominal_error: dict[int, float] = {
            b: float(x) for b, x in zip(self.buses, errors, strict=True)
        }
        rng = np.random.default_rng([seed, _STREAM_CLASS])
        shares = rng.dirichlet([spec.class_concentration] * len(CUSTOMER_CLASSES), len(self.buses))
        self.class_mix: dict[int, tuple[float, ...]] = {
            b: tuple(float(x) for x in row) for b, row in zip(self.buses, shares, strict=True)
        }
        self._shares = shares
        base = np.array([base_load_kw[b] for b in self.buses], dtype=float)
        total = float(base.sum())
        self._weights = base * errors / total if total > 0 else np.zeros_like(base)
        self._errors = errors
        self.hops = hop_distances(branches, head_bus)
        direction = math.cos(math.radians(spec.cloud_direction_deg))
        self.positions_m: dict[int, float] = {b: h * spec.span_m for b, h in self.hops.items()}
        self._cloud_per_m = direction / spec.cloud_speed_m_s
        self._phi = math.exp(-spec.noise_step_s / spec.noise_tau_s)
        self._chunk_start: list[np.ndarray] = [
            np.random.default_rng([seed, _STREAM_NOISE]).standard_normal(len(self.buses))
        ]
        self._chunks: dict[int, np.ndarray] = {}
        self._bias: dict[tuple[int, bool], tuple[float, float]] = {}

    # --- loads -------------------------------------------------------------------------------

    def shapes(self, hour: float) -> np.ndarray:
        """Each load bus's mixed class shape at ``hour`` (in ``buses`` order)."""
        per_class = np.array([class_shape(c, hour) for c in CUSTOMER_CLASSES])
        result: np.ndarray = self._shares @ per_class
        return result

    def load_factors(self, *, t_s: float, hour: float, scale: float) -> dict[int, float]:
        """Each load bus's factor on its case load at scenario second ``t_s``, hour of day
        ``hour``, when the scenario's load profile says ``scale``."""
        shape = self.shapes(hour)
        mean = float(self._weights @ shape)
        relative = shape / mean if mean > 0 else np.ones_like(shape)
        factors = scale * self._errors * relative * self.noise(t_s)
        return {b: float(f) for b, f in zip(self.buses, factors, strict=True)}

    def noise(self, t_s: float) -> np.ndarray:
        """The multiplicative noise of every load bus at ``t_s`` (mean 1, log-normal)."""
        step = max(t_s, 0.0) / self.spec.noise_step_s
        k = math.floor(step)
        frac = step - k
        x = self._noise_at(k) * (1.0 - frac) + self._noise_at(k + 1) * frac
        sigma = self.spec.noise_sigma
        result: np.ndarray = np.exp(sigma * x - sigma**2 / 2.0)
        return result

    def _noise_at(self, k: int) -> np.ndarray:
        """The AR(1) state at grid step ``k`` (standard normal marginals)."""
        c, i = divmod(k, _CHUNK)
        chunk = self._chunks.get(c)
        if chunk is None:
            chunk = self._chunk(c)
        row: np.ndarray = chunk[i]
        return row

    def _chunk(self, c: int) -> np.ndarray:
        while len(self._chunk_start) <= c:  # the start of each chunk follows from the last
            last = self._chunk(len(self._chunk_start) - 1)
            self._chunk_start.append(self._advance(last[-1], self._eps(len(self._chunk_start))[0]))
        eps = self._eps(c)
        out = np.empty((_CHUNK, len(self.buses)))
        out[0] = self._chunk_start[c]
        for i in range(1, _CHUNK):
            out[i] = self._advance(out[i - 1], eps[i])
        if len(self._chunks) >= 4:  # time moves forward: keep the latest few
            self._chunks.pop(min(self._chunks))
        self._chunks[c] = out
        return out

    def _eps(self, c: int) -> np.ndarray:
        rng = np.random.default_rng([self.spec.seed, _STREAM_NOISE, c + 1])
        eps: np.ndarray = rng.standard_normal((_CHUNK, len(self.buses)))
        return eps

    def _advance(self, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
        phi = self._phi
        out: np.ndarray = phi * x + math.sqrt(1.0 - phi * phi) * eps
        return out

    # --- clouds ------------------------------------------------------------------------------

    def cloud_delay_s(self, bus: int) -> float:
        """Seconds after the substation that a cloud front reaches ``bus`` (negative: before)."""
        return self.positions_m.get(bus, 0.0) * self._cloud_per_m

    # --- meters ------------------------------------------------------------------------------

    def meter_bias(self, meter: int, *, head: bool = False) -> tuple[float, float]:
        """Meter ``meter``'s fixed relative bias on (P and Q, V)."""
        cached = self._bias.get((meter, head))
        if cached is not None:
            return cached
        cls_pq, cls_v = self._classes(head)
        rng = np.random.default_rng([self.spec.seed, _STREAM_METER, meter])
        b = self.spec.meter_bias_frac
        pq, v = rng.uniform(-b, b, size=2)
        bias = float(pq) * cls_pq / 100.0, float(v) * cls_v / 100.0
        self._bias[meter, head] = bias
        return bias

    def read(
        self,
        meter: int,
        *,
        t_s: float,
        p_kw: float,
        q_kvar: float,
        v_ll_v: float,
        head: bool = False,
    ) -> MeterReading:
        """What meter number ``meter`` reads at ``t_s`` when the truth is the rest: the same
        call gives the same reading (the noise is a function of the seed, meter and time)."""
        cls_pq, cls_v = self._classes(head)
        bias_pq, bias_v = self.meter_bias(meter, head=head)
        ms = round(max(t_s, 0.0) * 1000.0)
        rng = np.random.default_rng([self.spec.seed, _STREAM_METER, meter, ms + 1])
        n_p, n_q, n_v = rng.standard_normal(3)
        sd_pq, sd_v = cls_pq / 200.0, cls_v / 200.0
        return MeterReading(
            p_kw=p_kw * (1.0 + bias_pq + sd_pq * float(n_p)),
            q_kvar=q_kvar * (1.0 + bias_pq + sd_pq * float(n_q)),
            v_ll_v=v_ll_v * (1.0 + bias_v + sd_v * float(n_v)),
        )

    def _classes(self, head: bool) -> tuple[float, float]:
        spec = self.spec
        if head:
            return spec.head_meter_class_pct, spec.head_meter_class_pct
        return spec.meter_class_pct, spec.meter_v_class_pct
