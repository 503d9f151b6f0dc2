"""Test feeders as MATPOWER version-2 `.m` files, each written into a given directory.

Three families, each builder `name(directory) -> Path` deterministic and documented in one line
by what it exercises:

- public networks from `pandapower.networks` converted as a new user would convert them
  (pandapower's `to_mpc`, then `write_case`): the file keeps whatever the converter writes
  (VMIN 0 / VMAX 2, a stub bus at the far end of each open switch's line, TAP 0 with SHIFT on
  transformers at nominal ratio). The converter puts a transformer's magnetising conductance
  in a separate `branch_g` array, which a MATPOWER file has no column for: it is not written,
  and BR_B keeps only the susceptance left (1e-8 to 1e-6 p.u. here: these transformers' no-load
  losses are as large as their no-load apparent power or larger);
- the seeded synthetic feeders of `optimizer.synthetic`, written by `optimizer.write_matpower`;
- hand-made variants of the IEEE 33-bus case, one feature each (slack voltage, cable charging,
  off-nominal taps at either end, bus shunts, distributed generation, unusual voltage limits).

`FEEDERS` maps every name to its builder; `summary(path)` says what a file contains;
`variant(path, ...)` rewrites one without charging, at another slack voltage or other loads;
`dispatched_point(net)` is the LP's dispatch with DERs as `feederd solve --synthetic-ders` has.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matpowercaseframes import CaseFrames

from optimizer import (
    Dispatcher,
    DispatchInput,
    DispatchResult,
    Network,
    builtin_case,
    synthetic_ders,
    synthetic_feeder,
    write_matpower,
)

__all__ = [
    "CONVERTED",
    "FEEDERS",
    "HAND_MADE",
    "MV_CABLE",
    "SYNTHETIC",
    "Dispatched",
    "dispatched_point",
    "read_case",
    "summary",
    "variant",
    "write_case",
]

FloatArray = npt.NDArray[np.float64]
Builder = Callable[[Path], Path]

# MATPOWER column indices (0-based), as in MATPOWER's idx_bus / idx_gen / idx_brch.
BUS_I, BUS_TYPE, PD, QD, GS, BS, VM, BASE_KV, VMAX, VMIN = 0, 1, 2, 3, 4, 5, 7, 9, 11, 12
GEN_BUS, PG, QG, VG, GEN_STATUS = 0, 1, 2, 5, 7
F_BUS, T_BUS, BR_R, BR_X, BR_B, TAP, SHIFT, BR_STATUS = 0, 1, 2, 3, 4, 8, 9, 10
BUS_COLS, GEN_COLS, BRANCH_COLS = 13, 21, 13


# --- reading and writing MATPOWER text ---------------------------------------------------------


def _num(value: float) -> str:
    """A number as MATPOWER text, exactly: integers bare, NaN and Inf as MATPOWER spells them."""
    x = float(value)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _rows(table: FloatArray, max_cols: int) -> list[str]:
    return ["\t" + "\t".join(_num(v) for v in row[:max_cols]) + ";" for row in table]


def write_case(ppc: Mapping[str, Any], path: Path) -> Path:
    """Write `ppc` (`baseMVA`, `bus`, `gen`, `branch` as MATPOWER arrays, 1-based bus numbers)
    as a MATPOWER version-2 `.m` file named after `path`'s stem; returns `path`.

    At most 13 bus, 21 generator and 13 branch columns are written (a converter's extra result
    columns are dropped); a bus table of 11 columns stays at 11 (no voltage limits)."""
    bus = np.atleast_2d(np.asarray(ppc["bus"], dtype=float))
    gen = np.atleast_2d(np.asarray(ppc["gen"], dtype=float))
    branch = np.atleast_2d(np.asarray(ppc["branch"], dtype=float))
    lines = [
        f"function mpc = {path.stem}",
        "%% written by tests/support/feeders.py",
        "mpc.version = '2';",
        f"mpc.baseMVA = {_num(float(ppc['baseMVA']))};",
        "%% bus_i type Pd Qd Gs Bs area Vm Va baseKV zone Vmax Vmin",
        "mpc.bus = [",
        *_rows(bus, BUS_COLS),
        "];",
        "%% bus Pg Qg Qmax Qmin Vg mBase status Pmax Pmin ...",
        "mpc.gen = [",
        *_rows(gen, GEN_COLS),
        "];",
        "%% fbus tbus r x b rateA rateB rateC ratio angle status angmin angmax",
        "mpc.branch = [",
        *_rows(branch, BRANCH_COLS),
        "];",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_case(path: Path) -> dict[str, Any]:
    """A MATPOWER file as a ppc dict of float arrays (`baseMVA`, `bus`, `gen`, `branch`),
    read by matpowercaseframes (the parser pandapower's `from_mpc` uses)."""
    frames = CaseFrames(str(path))
    return {
        "baseMVA": float(frames.baseMVA),
        "bus": frames.bus.to_numpy(dtype=float, copy=True),
        "gen": frames.gen.to_numpy(dtype=float, copy=True),
        "branch": frames.branch.to_numpy(dtype=float, copy=True),
    }


def summary(path: Path) -> dict[str, Any]:
    """What a file contains, for reports: bus counts, charging, taps, shunts, generators, the
    slack voltage (VG of the reference bus's first in-service generator, else its VM). A
    transformer is an in-service branch with a ratio, a phase shift or two voltage levels."""
    ppc = read_case(path)
    bus, gen, branch = ppc["bus"], ppc["gen"], ppc["branch"]
    live = branch[branch[:, BR_STATUS] != 0]
    slack = bus[bus[:, BUS_TYPE] == 3][0]
    slack_gens = gen[(gen[:, GEN_BUS] == slack[BUS_I]) & (gen[:, GEN_STATUS] > 0)]
    other_gens = gen[(gen[:, GEN_BUS] != slack[BUS_I]) & (gen[:, GEN_STATUS] > 0)]
    kv = dict(zip(bus[:, BUS_I], bus[:, BASE_KV], strict=True))
    ratio = (live[:, TAP] != 0) & (live[:, TAP] != 1)
    levels = np.array([kv[a] != kv[b] for a, b in live[:, [F_BUS, T_BUS]]], dtype=bool)
    transformer = ratio | (live[:, SHIFT] != 0) | levels
    limits = "absent" if bus.shape[1] <= VMIN else _limits(bus[:, VMIN], bus[:, VMAX])
    return {
        "buses": int(np.sum(bus[:, BUS_TYPE] != 4)),
        "isolated_buses": int(np.sum(bus[:, BUS_TYPE] == 4)),
        "branches_out": int(np.sum(branch[:, BR_STATUS] == 0)),
        "charging_b_pu": float(np.sum(live[~transformer, BR_B])),
        "transformers": int(np.sum(transformer)),
        "transformer_b_pu": float(np.sum(live[transformer, BR_B])),
        "taps": sorted({float(t) for t in live[ratio, TAP]}),
        "voltage_levels_kv": sorted({float(v) for v in kv.values()}),
        "shifts_deg": sorted({float(s) for s in live[:, SHIFT] if s != 0}),
        "shunts_gs_mw": float(np.sum(bus[:, GS])),
        "shunts_bs_mvar": float(np.sum(bus[:, BS])),
        "fixed_gens": len(other_gens),
        "fixed_gen_mw": float(np.sum(other_gens[:, PG])),
        "load_mw": float(np.sum(bus[bus[:, BUS_TYPE] != 4, PD])),
        "slack_bus": int(slack[BUS_I]),
        "slack_v_pu": float(slack_gens[0, VG]) if len(slack_gens) else float(slack[VM]),
        "limits": limits,
    }


def _limits(v_min: FloatArray, v_max: FloatArray) -> str:
    pairs = sorted({(_num(lo), _num(hi)) for lo, hi in zip(v_min, v_max, strict=True)})
    return ", ".join(f"[{lo}, {hi}]" for lo, hi in pairs)


# --- public networks through pandapower's converter --------------------------------------------


def _converted(net: Any, path: Path) -> Path:
    """`net` through pandapower's MATPOWER converter (`to_mpc`, flat start), written as is."""
    from pandapower.converter.matpower.to_mpc import to_mpc  # noqa: PLC0415 - heavy import

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mpc = to_mpc(net, init="flat")["mpc"]
    return write_case(mpc, path)


def _networks() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandapower.networks as pn  # noqa: PLC0415 - heavy import

    return pn


def kerber_landnetz(directory: Path) -> Path:
    """Exercises a converter's LV file: VMIN 0 / VMAX 2, a 10/0.4 kV transformer, SHIFT 150.

    Kerber Landnetz Kabel 1 (village cables, 18 buses, 64 kW); slight charging; TAP 0."""
    return _converted(_networks().create_kerber_landnetz_kabel_1(), directory / "kerber_landnetz.m")


def kerber_vorstadt(directory: Path) -> Path:
    """Exercises a converter's deep LV file: 294 buses, VMIN 0 / VMAX 2, SHIFT 150.

    Kerber Vorstadtnetz Kabel 1 (suburban cables, 292 kW); slight charging; a 10/0.4 kV
    transformer written with TAP 0."""
    return _converted(
        _networks().create_kerber_vorstadtnetz_kabel_1(), directory / "kerber_vorstadt.m"
    )


def cigre_mv(directory: Path) -> Path:
    """Exercises a converter's MV file: slack at 1.03 p.u., cable charging, VMIN 0 / VMAX 2.

    CIGRE MV benchmark without DER (44.7 MW), radial with its three open switches (each leaves
    a stub bus, written with VMIN 0.9 / VMAX 1.1); two 110/20 kV transformers (TAP 0, SHIFT
    30); the charging moves the losses by 2.7 %."""
    return _converted(_networks().create_cigre_network_mv(with_der=False), directory / "cigre_mv.m")


def oberrhein(directory: Path) -> Path:
    """Exercises a converter's MV file: tap 0.97 at the slack side, cable charging, slack 1.02.

    MV Oberrhein, the first substation's cable feeders (71 buses, 16.8 MW), its slack set to
    1.02 p.u.; a 110/20 kV transformer (SHIFT 150); the charging moves the losses by 4.4 %; a
    stub bus at its open switch; VMIN 0 / VMAX 2."""
    net = _networks().mv_oberrhein(separation_by_sub=True)[0]
    net.ext_grid["vm_pu"] = 1.02
    return _converted(net, directory / "oberrhein.m")


# --- synthetic feeders -------------------------------------------------------------------------


def synthetic300(directory: Path) -> Path:
    """Exercises `write_matpower`'s own file: taps 0.98 and 1.0125, open ties, 300 buses.

    `synthetic_feeder(300)`: a head transformer, one lateral transformer, BR_STATUS 0 ties."""
    path = directory / "synthetic300.m"
    write_matpower(synthetic_feeder(300), path)
    return path


def synthetic1000(directory: Path) -> Path:
    """Exercises a large, deep feeder: 1,000 buses, taps 0.98 and 1.0125, open ties.

    `synthetic_feeder(1000)` as `write_matpower` writes it (depth ~70)."""
    path = directory / "synthetic1000.m"
    write_matpower(synthetic_feeder(1000), path)
    return path


# --- hand-made variants of the IEEE 33-bus case ------------------------------------------------


def _case33() -> dict[str, Any]:
    """The built-in IEEE 33-bus case as arrays (bus 13, gen 10, branch 13 columns)."""
    return read_case(builtin_case("case33bw"))


def _branch_row(from_bus: int, to_bus: int, r: float, x: float, **cols: float) -> FloatArray:
    row = np.array([from_bus, to_bus, r, x, 0, 0, 0, 0, 0, 0, 1, -360, 360], dtype=float)
    for name, value in cols.items():
        row[{"b": BR_B, "tap": TAP, "shift": SHIFT, "status": BR_STATUS}[name]] = value
    return row


def _bus_row(bus_id: int, kind: int, pd: float, qd: float, base_kv: float) -> FloatArray:
    return np.array([bus_id, kind, pd, qd, 0, 0, 1, 1, 0, base_kv, 1, 1.1, 0.9], dtype=float)


def _find_branch(ppc: Mapping[str, Any], from_bus: int, to_bus: int) -> int:
    branch = ppc["branch"]
    hits = np.flatnonzero((branch[:, F_BUS] == from_bus) & (branch[:, T_BUS] == to_bus))
    return int(hits[0])


def _slack(ppc: dict[str, Any], v_pu: float) -> None:
    ppc["bus"][ppc["bus"][:, BUS_TYPE] == 3, VM] = v_pu
    ppc["gen"][0, VG] = v_pu


def case33_slack103(directory: Path) -> Path:
    """Exercises the slack voltage: IEEE 33-bus held at 1.03 p.u. (VG and VM)."""
    ppc = _case33()
    _slack(ppc, 1.03)
    return write_case(ppc, directory / "case33_slack103.m")


def case33_slack098(directory: Path) -> Path:
    """Exercises the slack voltage: IEEE 33-bus held at 0.98 p.u. (VG and VM)."""
    ppc = _case33()
    _slack(ppc, 0.98)
    return write_case(ppc, directory / "case33_slack098.m")


CABLE_B_PER_X = 0.02
"""case33_cable's charging, BR_B = 0.02 × BR_X on every line: 0.22 MVAr in all at 1 p.u., which
moves the losses by 5 % (202.7 to 192.0 kW) and the lowest voltage by 0.004 p.u. (Baran & Wu's
impedances are long overhead lines: a cable of the same reactance would charge ten times more.)"""


def case33_cable(directory: Path) -> Path:
    """Exercises line charging: IEEE 33-bus with BR_B = 0.02·BR_X on every line.

    0.22 MVAr in all, enough to move the losses by 5 % and the lowest voltage by 0.004 p.u."""
    ppc = _case33()
    ppc["branch"][:, BR_B] = CABLE_B_PER_X * ppc["branch"][:, BR_X]
    return write_case(ppc, directory / "case33_cable.m")


def case33_tap_head(directory: Path) -> Path:
    """Exercises a tap at the slack side: a 66/12.66 kV transformer at TAP 0.975 feeding bus 1.

    The slack moves to a new bus 34 (VG 1.0); the transformer, written 34→1, boosts by 2.5 %
    and has SHIFT 30 and a magnetising BR_B of −0.002."""
    ppc = _case33()
    bus = ppc["bus"]
    head_bus = bus[:, BUS_TYPE] == 3
    bus[head_bus, BUS_TYPE] = 1
    bus[head_bus, VMAX], bus[head_bus, VMIN] = 1.1, 0.9
    slack = _bus_row(34, 3, 0.0, 0.0, 66.0)
    ppc["bus"] = np.vstack([bus, slack])
    ppc["gen"][0, GEN_BUS] = 34
    head = _branch_row(34, 1, 0.005, 0.08, b=-0.002, tap=0.975, shift=30.0)
    ppc["branch"] = np.vstack([head, ppc["branch"]])
    return write_case(ppc, directory / "case33_tap_head.m")


def case33_tap_far(directory: Path) -> Path:
    """Exercises taps at the far end: transformers written from their downstream bus.

    An MV/LV transformer written from its LV bus 34 (0.4 kV, 200 kW) to bus 25 with TAP 1.025,
    and the 13-14 line turned into a regulator written 14→13 with TAP 1.0125: the from-bus,
    where MATPOWER puts the tap, is the downstream one."""
    ppc = _case33()
    lv = _bus_row(34, 1, 0.2, 0.06, 0.4)
    ppc["bus"] = np.vstack([ppc["bus"], lv])
    k = _find_branch(ppc, 13, 14)
    row = ppc["branch"][k]
    row[[F_BUS, T_BUS]] = [14, 13]
    row[TAP] = 1.0125
    mv_lv = _branch_row(34, 25, 0.159, 0.635, tap=1.025)  # 630 kVA, uk 4 %, on 10 MVA
    ppc["branch"] = np.vstack([ppc["branch"], mv_lv])
    return write_case(ppc, directory / "case33_tap_far.m")


def case33_shunts(directory: Path) -> Path:
    """Exercises bus shunts: capacitor banks (BS > 0) and a conductance (GS > 0).

    BS 0.6 MVAr at bus 30 and 0.3 at bus 14; GS 0.05 MW at bus 18, the lowest voltage (a
    constant impedance: it draws 0.05 MW × V²)."""
    ppc = _case33()
    bus = ppc["bus"]
    for bus_id, gs, bs in ((30, 0.0, 0.6), (14, 0.0, 0.3), (18, 0.05, 0.0)):
        row = np.flatnonzero(bus[:, BUS_I] == bus_id)[0]
        bus[row, GS], bus[row, BS] = gs, bs
    return write_case(ppc, directory / "case33_shunts.m")


def case33_dg(directory: Path) -> Path:
    """Exercises generators at other buses: fixed PG/QG injections, one out of service.

    Bus 18 a PV bus (type 2; PG 0.4, QG 0.1; its VG 1.05 is not held), bus 25 type 1 (PG 0.3,
    QG −0.05), and a 1 MW generator at bus 33 with GEN_STATUS 0."""
    ppc = _case33()
    bus = ppc["bus"]
    bus[bus[:, BUS_I] == 18, BUS_TYPE] = 2
    gens = [
        [18, 0.4, 0.1, 1.0, -1.0, 1.05, 1, 1, 0.5, 0],
        [25, 0.3, -0.05, 1.0, -1.0, 1.0, 1, 1, 0.5, 0],
        [33, 1.0, 0.0, 1.0, -1.0, 1.0, 1, 0, 1.0, 0],
    ]
    ppc["gen"] = np.vstack([ppc["gen"][:, :10], np.array(gens, dtype=float)])
    return write_case(ppc, directory / "case33_dg.m")


TIES = ((8, 21), (9, 15), (12, 22), (18, 33), (25, 29))
"""Baran & Wu's five normally-open tie switches (2 Ω each)."""


def case33_limits(directory: Path) -> Path:
    """Exercises file quirks: VMIN 0 / VMAX 2, NaN limits, type-4 bus, elements out of service.

    NaN limits at buses 5-10, the five open ties (BR_STATUS 0), an isolated bus 34 (type 4)
    behind an out-of-service branch, and an out-of-service generator (VG 1.05) listed first at
    the slack bus, whose in-service one holds 1.0."""
    ppc = _case33()
    bus = ppc["bus"]
    bus[:, VMIN], bus[:, VMAX] = 0.0, 2.0
    bus[(bus[:, BUS_I] >= 5) & (bus[:, BUS_I] <= 10), VMAX : VMIN + 1] = np.nan
    isolated = _bus_row(34, 4, 0.1, 0.05, 12.66)
    ppc["bus"] = np.vstack([bus, isolated])
    z_tie = 2.0 / (12.66**2 / ppc["baseMVA"])
    open_rows = [_branch_row(f, t, z_tie, z_tie, status=0) for f, t in TIES]
    open_rows.append(_branch_row(33, 34, 0.02, 0.02, status=0))
    ppc["branch"] = np.vstack([ppc["branch"], *open_rows])
    spare = np.array([[1, 0, 0, 10, -10, 1.05, 1, 0, 10, 0]], dtype=float)
    ppc["gen"] = np.vstack([spare, ppc["gen"][:, :10]])  # listed first: not the slack's VG
    return write_case(ppc, directory / "case33_limits.m")


def case33_no_limits(directory: Path) -> Path:
    """Exercises missing limits: an 11-column bus table (no VMAX/VMIN), as MATPOWER allows."""
    ppc = _case33()
    ppc["bus"] = ppc["bus"][:, : BASE_KV + 2]
    return write_case(ppc, directory / "case33_no_limits.m")


CONVERTED: dict[str, Builder] = {
    "kerber_landnetz": kerber_landnetz,
    "kerber_vorstadt": kerber_vorstadt,
    "cigre_mv": cigre_mv,
    "oberrhein": oberrhein,
}
SYNTHETIC: dict[str, Builder] = {"synthetic300": synthetic300, "synthetic1000": synthetic1000}
HAND_MADE: dict[str, Builder] = {
    "case33_slack103": case33_slack103,
    "case33_slack098": case33_slack098,
    "case33_cable": case33_cable,
    "case33_tap_head": case33_tap_head,
    "case33_tap_far": case33_tap_far,
    "case33_shunts": case33_shunts,
    "case33_dg": case33_dg,
    "case33_limits": case33_limits,
    "case33_no_limits": case33_no_limits,
}
FEEDERS: dict[str, Builder] = {**CONVERTED, **SYNTHETIC, **HAND_MADE}
MV_CABLE = ("cigre_mv", "oberrhein")
"""The converted medium-voltage cable networks (the issue's worst cases)."""


# --- variants of a file, for the tests' own controls and the benchmark ------------------------


def variant(
    path: Path,
    out: Path,
    *,
    charging: bool = True,
    slack_v_pu: float | None = None,
    p_kw: Mapping[int, float] | None = None,
    q_kvar: Mapping[int, float] | None = None,
) -> Path:
    """`path` rewritten to `out`: without any branch's BR_B (`charging=False`), with the slack
    held at `slack_v_pu` (VG of its generators and VM), or with the loads PD/QD of the buses
    `p_kw`/`q_kvar` name replaced (kW/kvar, e.g. the net load at a dispatched point)."""
    ppc = read_case(path)
    if not charging:
        ppc["branch"][:, BR_B] = 0.0
    if slack_v_pu is not None:
        bus, gen = ppc["bus"], ppc["gen"]
        slack = bus[bus[:, BUS_TYPE] == 3, BUS_I][0]
        bus[bus[:, BUS_I] == slack, VM] = slack_v_pu
        gen[gen[:, GEN_BUS] == slack, VG] = slack_v_pu
    row_of = {int(b): k for k, b in enumerate(ppc["bus"][:, BUS_I])}
    for column, values in ((PD, p_kw), (QD, q_kvar)):
        for bus_id, value in (values or {}).items():
            ppc["bus"][row_of[bus_id], column] = value / 1000.0
    return write_case(ppc, out)


# --- the LP's dispatched point -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispatched:
    """One dispatch and the net load per bus (kW, kvar) at the point it dispatched."""

    inp: DispatchInput
    result: DispatchResult
    p_kw: dict[int, float]
    q_kvar: dict[int, float]


def dispatched_point(net: Network, *, pv_available: float = 0.8) -> Dispatched:
    """The dispatch `feederd solve --synthetic-ders` makes (PV at every load bus, a battery at
    every fifth, import limit 70 % of the load; 300 s, band 0.95-1.05, three passes), with
    `pv_available` of the PV's rating offered (0.8 there; 0.2 leaves the feeder loaded, its
    lowest voltage away from the head). The slack is at the network's own voltage."""
    ders = synthetic_ders(net, pv_available=pv_available)
    inp = DispatchInput(
        loads_kw=net.loads_kw,
        loads_kvar=net.loads_kvar,
        pv=ders.pv,
        batteries=ders.batteries,
        interval_s=300.0,
        import_limit_kw=ders.import_limit_kw,
        v_min_pu=0.95,
        v_max_pu=1.05,
    )
    res = Dispatcher(net, time_limit_s=60.0, passes=3).solve(inp)
    p = {b: inp.loads_kw.get(b, 0.0) for b in net.bus_ids}
    q = {b: inp.loads_kvar.get(b, 0.0) for b in net.bus_ids}
    if res.status.has_setpoints:
        for u in inp.pv:
            p[u.bus] -= res.pv_kw[u.name]
            q[u.bus] -= res.pv_kvar.get(u.name, 0.0)
        for bat in inp.batteries:
            p[bat.bus] -= res.battery_kw[bat.name]
    return Dispatched(inp=inp, result=res, p_kw=p, q_kvar=q)
