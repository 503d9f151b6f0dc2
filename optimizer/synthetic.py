"""Seeded synthetic feeders and DER fleets, for benchmarks, tests and `--synthetic-ders`.

Pure: the same arguments always give the same network and units.
"""

from __future__ import annotations

import math

import numpy as np

from optimizer.network import Branch, Bus, Network
from optimizer.units import BatteryUnit, PvUnit

__all__ = ["SyntheticDers", "synthetic_ders", "synthetic_feeder"]

_OHM_PER_KM = (0.30, 0.35)  # r, x of a typical MV overhead line


def synthetic_feeder(
    n_buses: int = 1000,
    *,
    seed: int = 1,
    total_load_kw: float | None = None,
    base_kv: float = 12.66,
    base_mva: float = 10.0,
) -> Network:
    """A radial MV feeder of `n_buses` buses fed through a substation transformer.

    Bus 1 is the slack; branch 1-2 is a transformer (tap 0.98, 2 % boost); every later bus
    hangs off one of the 30 buses added just before it (long laterals, depth ~n/15), by a line
    of 50-300 m. About 80 % of the buses carry a load of 5-40 kW at power factor 0.90-0.95,
    scaled so the feeder's total is `total_load_kw` (default 6 kW per bus). Every 97th line is
    out of service and a transformer with tap 1.0125 feeds every 149th lateral. Trunk branches
    (those carrying more than 10 % of the load) get a rating of twice their nominal flow.
    """
    if n_buses < 3:
        raise ValueError(f"a synthetic feeder needs at least 3 buses, got {n_buses}")
    rng = np.random.default_rng(seed)
    z_base = base_kv**2 / base_mva
    target = 6.0 * n_buses if total_load_kw is None else total_load_kw
    has_load = rng.random(n_buses) < 0.8
    has_load[:2] = False
    p = np.where(has_load, rng.uniform(5.0, 40.0, n_buses), 0.0)
    p *= target / p.sum()
    pf = rng.uniform(0.90, 0.95, n_buses)
    q = p * np.tan(np.arccos(pf))
    parent = np.zeros(n_buses, dtype=int)
    parent[1] = 0
    for i in range(2, n_buses):
        parent[i] = int(rng.integers(max(1, i - 30), i))
    length_km = rng.uniform(0.05, 0.3, n_buses)
    branches: list[Branch] = [
        Branch(from_bus=1, to_bus=2, r_pu=0.001, x_pu=0.02, tap=0.98, rating_kva=None)
    ]
    downstream = p.copy()
    for i in range(n_buses - 1, 1, -1):
        downstream[parent[i]] += downstream[i]
    for i in range(2, n_buses):
        tap = 1.0125 if i % 149 == 0 else 1.0
        rating = 2.0 * downstream[i] / 0.9 if downstream[i] > 0.1 * target else None
        branches.append(
            Branch(
                from_bus=int(parent[i]) + 1,
                to_bus=i + 1,
                r_pu=_OHM_PER_KM[0] * length_km[i] / z_base,
                x_pu=_OHM_PER_KM[1] * length_km[i] / z_base,
                tap=tap,
                rating_kva=None if rating is None else float(rating),
            )
        )
        if i % 97 == 0 and i + 1 < n_buses:
            # a normally-open tie to a nearby bus: out of service, as in a real feeder
            branches.append(
                Branch(
                    from_bus=i + 1,
                    to_bus=i + 2,
                    r_pu=0.01,
                    x_pu=0.01,
                    in_service=False,
                )
            )
    buses = tuple(
        Bus(
            id=i + 1,
            p_load_kw=float(p[i]),
            q_load_kvar=float(q[i]),
            base_kv=base_kv,
            v_min_pu=0.9,
            v_max_pu=1.1,
        )
        for i in range(n_buses)
    )
    return Network(
        name=f"synthetic{n_buses}_s{seed}",
        base_mva=base_mva,
        slack_bus=1,
        buses=buses,
        branches=tuple(branches),
    )


class SyntheticDers:
    """What `synthetic_ders` attaches (a plain holder: PV units, batteries, default limit)."""

    __slots__ = ("batteries", "import_limit_kw", "pv")

    def __init__(
        self, pv: tuple[PvUnit, ...], batteries: tuple[BatteryUnit, ...], import_limit_kw: float
    ) -> None:
        self.pv = pv
        self.batteries = batteries
        self.import_limit_kw = import_limit_kw


def synthetic_ders(net: Network, *, pv_available: float = 0.8) -> SyntheticDers:
    """At every bus with load a PV inverter rated 1.5 × the bus's load with `pv_available` of
    its rating available (and reactive power up to 44 % of its rating, power factor 0.9); at
    every fifth such bus a battery rated at the bus load with two hours of energy at 50 %
    charge (reserve 10 %). The default import limit is 70 % of the total load."""
    pv: list[PvUnit] = []
    batteries: list[BatteryUnit] = []
    loaded = [b for b in net.buses if b.p_load_kw > 0]
    for n, bus in enumerate(loaded):
        rating = 1.5 * bus.p_load_kw
        pv.append(
            PvUnit(
                name=f"pv{bus.id}",
                bus=bus.id,
                rating_kva=rating,
                p_max_kw=rating,
                available_kw=pv_available * rating,
                q_max_kvar=round(rating * math.sin(math.acos(0.9)), 9),
            )
        )
        if n % 5 == 4:
            energy = 2.0 * bus.p_load_kw
            batteries.append(
                BatteryUnit(
                    name=f"bat{bus.id}",
                    bus=bus.id,
                    p_max_kw=bus.p_load_kw,
                    energy_kwh=energy,
                    soc_kwh=0.5 * energy,
                    soc_min_kwh=0.1 * energy,
                    soc_max_kwh=energy,
                )
            )
    return SyntheticDers(tuple(pv), tuple(batteries), 0.7 * net.total_load_kw)
