"""The independent AC power flow of a MATPOWER file: pandapower (Newton–Raphson).

`reference(path)` reads the file as pandapower's `from_mpc` does (matpowercaseframes, then
`from_ppc`) and solves it with `runpp(trafo_model="pi")`: a transformer is then MATPOWER's
branch, an ideal tap at the from bus in series with the impedance, not pandapower's default T
model. What a radial feeder's power flow means by the file, and the converter does not do by
itself, is set explicitly, each time without changing the bus admittance matrix:

- isolated buses (type 4) and everything out of service are left out;
- the slack voltage is VG of the reference bus's first in-service generator, else its VM
  (`from_ppc` takes the first generator's VG even if it is out of service);
- generators at other buses are fixed PQ injections (PG, QG), as a radial power flow treats
  distributed generation (`from_ppc` makes a type-2 bus's generator a voltage-controlling PV
  generator);
- a transformer's BR_B becomes bus shunts, b/2/τ² at its from bus and b/2 at its to bus, as
  MATPOWER's branch model places it (`from_ppc` turns it into a no-load current, always
  inductive whatever its sign);
- a transformer written from its low-voltage bus (its tap at that end) is written the other
  way round with tap 1/τ, impedance τ²·z and SHIFT −θ (`from_ppc` would move the tap to the
  high-voltage end);
- a bus table without VMAX/VMIN is padded with NaN (pandapower needs the columns).

`matpower_flow(path)` is a second, small engine for cross-checking the first: MATPOWER's
branch model assembled into a bus admittance matrix straight from the file's rows and solved by
Newton–Raphson with every non-slack bus PQ.

Losses are given twice: `series_losses_kw` (I²R in branches) and `losses_kw`, defined
independently of any model as import − Σ load + Σ fixed generation − Σ shunt conductance P.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp  # type: ignore[import-untyped]
import scipy.sparse.linalg as spla  # type: ignore[import-untyped]

from tests.support.feeders import (
    BASE_KV,
    BR_B,
    BR_R,
    BR_STATUS,
    BR_X,
    BS,
    BUS_I,
    BUS_TYPE,
    F_BUS,
    GEN_BUS,
    GEN_STATUS,
    GS,
    PD,
    PG,
    QD,
    QG,
    SHIFT,
    T_BUS,
    TAP,
    VG,
    VM,
    read_case,
)

__all__ = ["Reference", "matpower_flow", "reference"]

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    """A solved AC power flow, keyed by the file's bus numbers; powers in kW / kvar."""

    converged: bool
    v_pu: Mapping[int, float]
    v_min_pu: float
    v_min_bus: int
    v_slack_pu: float
    losses_kw: float
    series_losses_kw: float
    import_kw: float
    import_kvar: float
    load_kw: float
    gen_kw: float
    shunt_kw: float


@dataclass(frozen=True, slots=True, kw_only=True)
class _Case:
    """The in-service part of a file, in MATPOWER's terms."""

    base_mva: float
    bus: FloatArray  # in-service buses (type != 4), 13 columns
    branch: FloatArray  # in-service branches between in-service buses
    gen: FloatArray  # in-service generators at other buses than the slack
    slack_bus: int
    v_slack_pu: float


def _case(path: Path) -> _Case:
    ppc = read_case(path)
    bus = ppc["bus"]
    if bus.shape[1] < 13:  # no VMAX / VMIN columns
        bus = np.hstack([bus, np.full((len(bus), 13 - bus.shape[1]), np.nan)])
    bus = bus[bus[:, BUS_TYPE] != 4]
    live = set(bus[:, BUS_I])
    branch = ppc["branch"]
    branch = branch[
        (branch[:, BR_STATUS] != 0)
        & np.isin(branch[:, F_BUS], list(live))
        & np.isin(branch[:, T_BUS], list(live))
    ]
    slacks = bus[bus[:, BUS_TYPE] == 3]
    if len(slacks) != 1:
        raise ValueError(f"{path}: expected one reference bus, found {len(slacks)}")
    slack_bus = int(slacks[0, BUS_I])
    gen = ppc["gen"]
    gen = gen[(gen[:, GEN_STATUS] > 0) & np.isin(gen[:, GEN_BUS], list(live))]
    at_slack = gen[:, GEN_BUS] == slack_bus
    v_slack = float(gen[at_slack][0, VG]) if at_slack.any() else float(slacks[0, VM])
    return _Case(
        base_mva=float(ppc["baseMVA"]),
        bus=bus,
        branch=branch,
        gen=gen[~at_slack],
        slack_bus=slack_bus,
        v_slack_pu=v_slack,
    )


def _for_pandapower(case: _Case) -> tuple[FloatArray, FloatArray]:
    """The bus and branch tables rewritten for `from_ppc`, with the same bus admittance matrix:
    a transformer's BR_B as bus shunts (b/2/τ² at its from bus, b/2 at its to bus), and every
    transformer written from its high-voltage bus (tap 1/τ, impedance τ²·z, SHIFT −θ)."""
    bus, branch = case.bus.copy(), case.branch.copy()
    row_of = {b: k for k, b in enumerate(bus[:, BUS_I])}
    kv = bus[:, BASE_KV]
    branch[branch[:, TAP] == 0, TAP] = 1.0  # as from_mpc does
    for row in branch:
        if row[TAP] == 1.0 and row[SHIFT] == 0:
            continue  # a line (or, between voltage levels, a pandapower impedance)
        t, f_row, t_row = row[TAP], row_of[row[F_BUS]], row_of[row[T_BUS]]
        bus[f_row, BS] += row[BR_B] / 2 / (t * t) * case.base_mva
        bus[t_row, BS] += row[BR_B] / 2 * case.base_mva
        row[BR_B] = 0.0
        if kv[t_row] > kv[f_row]:
            row[[F_BUS, T_BUS]] = row[[T_BUS, F_BUS]]
            row[TAP] = 1.0 / t
            row[BR_R] *= t * t
            row[BR_X] *= t * t
            row[SHIFT] = -row[SHIFT]
    return bus, branch


def _pandapower() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandapower as pp  # noqa: PLC0415 - heavy import, only for the reference

    return pp


def reference(path: Path) -> Reference:
    """pandapower's AC power flow of the MATPOWER file at `path` (see the module docstring)."""
    pp = _pandapower()
    from pandapower.converter.pypower.from_ppc import from_ppc  # noqa: PLC0415

    case = _case(path)
    bus, branch = _for_pandapower(case)
    ppc: dict[str, Any] = {
        "version": "2",
        "baseMVA": case.base_mva,
        "bus": bus,
        "branch": branch,
        # the slack's generator only: the others are added below as PQ injections
        "gen": np.array([[case.slack_bus, 0, 0, 1e9, -1e9, case.v_slack_pu, 1, 1, 1e9, -1e9]]),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = from_ppc(ppc, f_hz=50)
        for row in case.gen:
            pp.create_sgen(net, bus=int(row[GEN_BUS]), p_mw=row[PG], q_mvar=row[QG])
        pp.runpp(
            net,
            algorithm="nr",
            trafo_model="pi",
            calculate_voltage_angles=True,
            tolerance_mva=1e-10,
            max_iteration=50,
            numba=False,
        )
    vm = net.res_bus.vm_pu.dropna()
    v_pu = {int(b): float(v) for b, v in vm.items()}
    import_mw = float(net.res_ext_grid.p_mw.sum())
    load_mw = float(net.res_load.p_mw.sum())
    gen_mw = float(net.res_sgen.p_mw.sum())
    shunt_mw = float(net.res_shunt.p_mw.sum()) if len(net.shunt) else 0.0
    series_mw = sum(
        float(net[f"res_{kind}"].pl_mw.sum())
        for kind in ("line", "trafo", "impedance")
        if len(net[kind])
    )
    v_min_bus = min(v_pu, key=v_pu.__getitem__)
    return Reference(
        converged=bool(net.converged),
        v_pu=v_pu,
        v_min_pu=v_pu[v_min_bus],
        v_min_bus=v_min_bus,
        v_slack_pu=case.v_slack_pu,
        losses_kw=(import_mw - load_mw + gen_mw - shunt_mw) * 1000.0,
        series_losses_kw=series_mw * 1000.0,
        import_kw=import_mw * 1000.0,
        import_kvar=float(net.res_ext_grid.q_mvar.sum()) * 1000.0,
        load_kw=load_mw * 1000.0,
        gen_kw=gen_mw * 1000.0,
        shunt_kw=shunt_mw * 1000.0,
    )


def matpower_flow(path: Path, *, tol: float = 1e-10, max_iter: int = 30) -> Reference:
    """MATPOWER's model of the file solved by Newton–Raphson, every non-slack bus PQ.

    Per branch (series admittance y = 1/(r + jx), tap τ·e^{jθ}, τ = 1 when TAP is 0, charging
    b): Y_ff = (y + jb/2)/τ², Y_ft = −y/(τ·e^{−jθ}), Y_tf = −y/(τ·e^{jθ}), Y_tt = y + jb/2; bus
    shunts (GS + jBS)/baseMVA on the diagonal."""
    case = _case(path)
    base = case.base_mva
    ids = [int(b) for b in case.bus[:, BUS_I]]
    pos = {b: k for k, b in enumerate(ids)}
    n = len(ids)
    br = case.branch
    f = np.array([pos[int(b)] for b in br[:, F_BUS]], dtype=np.intp)
    t = np.array([pos[int(b)] for b in br[:, T_BUS]], dtype=np.intp)
    y = 1.0 / (br[:, BR_R] + 1j * br[:, BR_X])
    tau = np.where(br[:, TAP] == 0, 1.0, br[:, TAP]) * np.exp(1j * np.radians(br[:, SHIFT]))
    ytt = y + 0.5j * br[:, BR_B]
    yff = ytt / (tau * np.conj(tau))
    yft = -y / np.conj(tau)
    ytf = -y / tau
    ysh = (case.bus[:, GS] + 1j * case.bus[:, BS]) / base
    diag = np.arange(n)
    ybus = sp.csr_matrix(
        (
            np.concatenate([yff, yft, ytf, ytt, ysh]),
            (np.concatenate([f, f, t, t, diag]), np.concatenate([f, t, f, t, diag])),
        ),
        shape=(n, n),
    )
    s_bus = -(case.bus[:, PD] + 1j * case.bus[:, QD]) / base
    for row in case.gen:
        s_bus[pos[int(row[GEN_BUS])]] += (row[PG] + 1j * row[QG]) / base
    ref = pos[case.slack_bus]
    pq = np.array([k for k in range(n) if k != ref], dtype=np.intp)
    v = _start(n, ref, f, t, tau, case.v_slack_pu)
    converged = False
    for _ in range(max_iter):
        i_bus = ybus @ v
        mis = v * np.conj(i_bus) - s_bus
        step = np.concatenate([mis[pq].real, mis[pq].imag])
        if np.max(np.abs(step), initial=0.0) < tol:
            converged = True
            break
        # MATPOWER's dSbus_dV, in polar coordinates
        d_v, d_unit = sp.diags(v), sp.diags(v / np.abs(v))
        ds_dvm = d_v @ (ybus @ d_unit).conj() + sp.diags(np.conj(i_bus)) @ d_unit
        ds_dva = 1j * d_v @ (sp.diags(i_bus) - ybus @ d_v).conj()
        ds_dvm = ds_dvm.tocsr()[pq][:, pq]
        ds_dva = ds_dva.tocsr()[pq][:, pq]
        jac = sp.bmat([[ds_dva.real, ds_dvm.real], [ds_dva.imag, ds_dvm.imag]], format="csc")
        dx = spla.spsolve(jac, -step)
        angle, mag = np.angle(v), np.abs(v)
        angle[pq] += dx[: len(pq)]
        mag[pq] += dx[len(pq) :]
        v = mag * np.exp(1j * angle)
    s_ref = v[ref] * np.conj((ybus @ v)[ref]) * base + complex(case.bus[ref, PD], case.bus[ref, QD])
    i_series = (v[f] / tau - v[t]) * y
    series_mw = float(np.sum(np.abs(i_series) ** 2 * br[:, BR_R]) * base)
    mags = np.abs(v)
    load_mw = float(np.sum(case.bus[:, PD]))
    gen_mw = float(np.sum(case.gen[:, PG]))
    shunt_mw = float(np.sum(case.bus[:, GS] * mags**2))
    k_min = int(np.argmin(mags))
    return Reference(
        converged=converged,
        v_pu={b: float(mags[k]) for b, k in pos.items()},
        v_min_pu=float(mags[k_min]),
        v_min_bus=ids[k_min],
        v_slack_pu=case.v_slack_pu,
        losses_kw=(s_ref.real - load_mw + gen_mw - shunt_mw) * 1000.0,
        series_losses_kw=series_mw * 1000.0,
        import_kw=s_ref.real * 1000.0,
        import_kvar=s_ref.imag * 1000.0,
        load_kw=load_mw * 1000.0,
        gen_kw=gen_mw * 1000.0,
        shunt_kw=shunt_mw * 1000.0,
    )


def _start(
    n: int, ref: int, f: npt.NDArray[np.intp], t: npt.NDArray[np.intp], tau: ComplexArray, v0: float
) -> ComplexArray:
    """A start for Newton–Raphson: the no-load voltages, each bus its upstream bus's voltage
    through the ideal taps and phase shifts on the way (a flat start diverges behind a 150°
    transformer)."""
    v: ComplexArray = np.full(n, np.nan, dtype=np.complex128)
    v[ref] = v0
    adjacent: dict[int, list[tuple[int, complex]]] = {k: [] for k in range(n)}
    for a, b, ratio in zip(f.tolist(), t.tolist(), tau.tolist(), strict=True):
        adjacent[a].append((b, 1.0 / ratio))  # V_t = V_f / τ
        adjacent[b].append((a, ratio))  # V_f = τ·V_t
    queue = [ref]
    while queue:
        k = queue.pop()
        for other, gain in adjacent[k]:
            if np.isnan(v[other]):
                v[other] = v[k] * gain
                queue.append(other)
    return np.where(np.isnan(v), v0, v)


def describe(ref: Reference) -> str:
    """One line for assertion messages."""
    return (
        f"losses {ref.losses_kw:.3f} kW (series {ref.series_losses_kw:.3f}), lowest "
        f"{ref.v_min_pu:.5f} p.u. at bus {ref.v_min_bus}, import {ref.import_kw:.2f} kW / "
        f"{ref.import_kvar:.2f} kvar, slack {ref.v_slack_pu} p.u."
        + ("" if math.isfinite(ref.losses_kw) else " (not finite)")
    )
