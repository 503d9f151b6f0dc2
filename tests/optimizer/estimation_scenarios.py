"""Seeded feeder states and smart-meter readings for grading the state estimator.

A draw gives every load bus its own factor (uniform 0.3-1.7) on top of a time-of-day profile:
the evening peak (profile 1.0) or midday (profile 0.5, with a PV inverter at every load bus
making 1.2 x the bus's nominal load, so the feeder exports). The truth is pandapower's AC power
flow (Newton-Raphson, from the same network), independent of the estimator's model. The
estimator is told only the profile: its pseudo loads are the case's loads times the profile.

Meters read with an accuracy class: P and Q with a standard deviation of 0.5 % of the reading,
quantised to 0.1 kW / kvar; V with 0.2 %, quantised to 0.0005 p.u. (0.1 V of 230 V); each
reading's sigma, as a caller would compute it, is the class and the quantisation step
combined. Faults: a meter with the wrong sign (P and Q negated), a 2 x CT ratio error (P and Q
doubled), or frozen at the readings of an earlier, lighter hour (P, Q and V).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandapower as pp
from pandapower.converter.pypower.from_ppc import from_ppc

from optimizer import Network
from optimizer.estimation import Measurement, MeasurementKind, StateEstimate

PQ_CLASS = 0.005
PQ_STEP_KW = 0.1
V_CLASS = 0.002
V_STEP_PU = 0.0005
PV_OF_LOAD = 1.2
"""A midday PV inverter's output, as a share of its bus's nominal load."""

Fault = Literal["sign", "ct", "stale"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Truth:
    """pandapower's AC solution: every bus's voltage, the import at the head, the series
    losses."""

    v_pu: Mapping[int, float]
    import_kw: float
    import_kvar: float
    losses_kw: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Draw:
    """One state of the feeder and what the estimator is told about it."""

    net: Network
    p_kw: Mapping[int, float]
    q_kvar: Mapping[int, float]
    injections_kw: Mapping[int, float]
    pseudo_kw: Mapping[int, float]
    pseudo_kvar: Mapping[int, float]
    truth: Truth

    @property
    def load_buses(self) -> list[int]:
        return sorted(self.pseudo_kw)


def truth(
    net: Network,
    p_kw: Mapping[int, float],
    q_kvar: Mapping[int, float],
    inj_kw: Mapping[int, float],
    *,
    v_slack_pu: float | None = None,
) -> Truth:
    """pandapower's AC power flow of `net` with these loads and PV injections (static
    generators), the slack at `v_slack_pu` (default: the case's)."""
    v0 = net.v_slack_pu if v_slack_pu is None else v_slack_pu
    ids = [b.id for b in net.buses]
    bus = np.zeros((len(ids), 13))
    for row, b in enumerate(net.buses):
        kind = 3 if b.id == net.slack_bus else 1
        bus[row] = [
            *(b.id, kind, p_kw.get(b.id, 0.0) / 1e3, q_kvar.get(b.id, 0.0) / 1e3),
            *(b.gs_kw / 1e3, b.bs_kvar / 1e3, 1, v0, 0, b.base_kv, 1, 1.1, 0.9),
        ]
    branch = np.array(
        [
            [br.from_bus, br.to_bus, br.r_pu, br.x_pu, br.b_pu, 0, 0, 0]
            + [0.0 if br.tap == 1.0 else br.tap, 0, 1, -360, 360]
            for br in net.branches
            if br.in_service
        ],
        dtype=float,
    )
    gen = np.array([[net.slack_bus, 0, 0, 100, -100, v0, 100, 1, 100, -100] + [0] * 11])
    ppc = {"version": "2", "baseMVA": net.base_mva, "bus": bus, "branch": branch, "gen": gen}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp_net = from_ppc(ppc, f_hz=50)
        for bus_id, value in inj_kw.items():  # from_ppc keeps the case's bus numbers as index
            pp.create_sgen(pp_net, bus=bus_id, p_mw=value / 1e3)
        pp.runpp(pp_net, numba=False, tolerance_mva=1e-10)
    vm = pp_net.res_bus.vm_pu
    assert sorted(int(b) for b in vm.index) == sorted(ids), "pandapower renumbered the buses"
    return Truth(
        v_pu={int(b): float(v) for b, v in vm.items()},
        import_kw=float(pp_net.res_ext_grid.p_mw.sum()) * 1e3,
        import_kvar=float(pp_net.res_ext_grid.q_mvar.sum()) * 1e3,
        losses_kw=float(pp_net.res_line.pl_mw.sum() + pp_net.res_trafo.pl_mw.sum()) * 1e3,
    )


def draw(
    net: Network,
    seed: int,
    *,
    midday: bool = False,
    profile: float | None = None,
    v_slack_pu: float | None = None,
) -> Draw:
    """A state of `net`: each load bus's own factor, the profile (1.0, or 0.5 at midday with
    PV), pandapower's solution of it (the slack at `v_slack_pu`, default the case's)."""
    rng = np.random.default_rng(seed)
    shape = profile if profile is not None else (0.5 if midday else 1.0)
    nominal = {b.id: (b.p_load_kw, b.q_load_kvar) for b in net.buses if b.p_load_kw > 0}
    factor = {b: shape * float(rng.uniform(0.3, 1.7)) for b in nominal}
    p_kw = {b: nominal[b][0] * factor[b] for b in nominal}
    q_kvar = {b: nominal[b][1] * factor[b] for b in nominal}
    inj = {b: PV_OF_LOAD * nominal[b][0] for b in nominal} if midday else {}
    return Draw(
        net=net,
        p_kw=p_kw,
        q_kvar=q_kvar,
        injections_kw=inj,
        pseudo_kw={b: shape * nominal[b][0] for b in nominal},
        pseudo_kvar={b: shape * nominal[b][1] for b in nominal},
        truth=truth(net, p_kw, q_kvar, inj, v_slack_pu=v_slack_pu),
    )


def _read(rng: np.random.Generator, value: float, cls: float, step: float) -> tuple[float, float]:
    """A class-`cls` reading of `value`, quantised to `step`, and its sigma."""
    noisy = value * (1.0 + cls * float(rng.normal()))
    reading = round(noisy / step) * step
    return reading, math.hypot(cls * abs(reading), step / math.sqrt(12.0))


def readings(
    d: Draw,
    buses: Iterable[int],
    rng: np.random.Generator,
    *,
    faults: Mapping[int, Fault] | None = None,
    stale: Draw | None = None,
) -> list[Measurement]:
    """The head meter (P, Q, V at the slack) and a P, Q, V meter `m<bus>` at each of `buses`;
    `faults` makes a bus's meter lie (`stale`: the draw it froze at)."""
    slack = d.net.slack_bus
    out: list[Measurement] = []
    head: tuple[tuple[MeasurementKind, float, float, float], ...] = (
        ("head_p", d.truth.import_kw, PQ_CLASS, PQ_STEP_KW),
        ("head_q", d.truth.import_kvar, PQ_CLASS, PQ_STEP_KW),
        ("v", d.truth.v_pu[slack], V_CLASS, V_STEP_PU),
    )
    for kind, value, cls, step in head:
        reading, sigma = _read(rng, value, cls, step)
        out.append(Measurement(source="head", kind=kind, bus=slack, value=reading, sigma=sigma))
    for bus in buses:
        p, q, v = d.p_kw.get(bus, 0.0), d.q_kvar.get(bus, 0.0), d.truth.v_pu[bus]
        fault = (faults or {}).get(bus)
        if fault == "sign":
            p, q = -p, -q
        elif fault == "ct":
            p, q = 2.0 * p, 2.0 * q
        elif fault == "stale":
            assert stale is not None, "a stale meter needs the draw it froze at"
            p, q, v = stale.p_kw.get(bus, 0.0), stale.q_kvar.get(bus, 0.0), stale.truth.v_pu[bus]
        for kind, value, cls, step in (
            ("p", p, PQ_CLASS, PQ_STEP_KW),
            ("q", q, PQ_CLASS, PQ_STEP_KW),
            ("v", v, V_CLASS, V_STEP_PU),
        ):
            reading, sigma = _read(rng, value, cls, step)
            out.append(
                Measurement(source=f"m{bus}", kind=kind, bus=bus, value=reading, sigma=sigma)
            )  # type: ignore[arg-type]
    return out


def errors(estimate: StateEstimate, d: Draw) -> tuple[float, float]:
    """RMS and largest bus-voltage error of `estimate` against the truth (p.u.)."""
    err = np.array([estimate.v_pu[b] - v for b, v in d.truth.v_pu.items()])
    return float(np.sqrt(np.mean(err**2))), float(np.max(np.abs(err)))
