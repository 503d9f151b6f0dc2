"""Helpers for the optimizer tests: an independent AC engine (pandapower)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandapower as pp
from pandapower.converter.pypower.from_ppc import from_ppc

from optimizer import Network


@dataclass(frozen=True, slots=True, kw_only=True)
class AcState:
    """pandapower's AC solution."""

    import_kw: float
    losses_kw: float
    vm_pu: Mapping[int, float]


def pandapower_ac(
    net: Network,
    *,
    p_kw: Mapping[int, float],
    q_kvar: Mapping[int, float],
    v_slack_pu: float = 1.0,
) -> AcState:
    """AC power flow by pandapower (Newton-Raphson) of `net` with the given net loads."""
    ids = [b.id for b in net.buses]
    bus = np.zeros((len(ids), 13))
    for row, b in enumerate(net.buses):
        kind = 3 if b.id == net.slack_bus else 1
        bus[row] = [
            b.id,
            kind,
            p_kw.get(b.id, 0.0) / 1000.0,
            q_kvar.get(b.id, 0.0) / 1000.0,
            0,
            0,
            1,
            v_slack_pu,
            0,
            b.base_kv,
            1,
            b.v_max_pu,
            b.v_min_pu,
        ]
    branch = np.array(
        [
            [br.from_bus, br.to_bus, br.r_pu, br.x_pu, 0, 0, 0, 0]
            + [0.0 if br.tap == 1.0 else br.tap, 0, 1, -360, 360]
            for br in net.branches
            if br.in_service
        ],
        dtype=float,
    )
    gen = np.array([[net.slack_bus, 0, 0, 100, -100, v_slack_pu, 100, 1, 100, -100] + [0] * 11])
    ppc = {"version": "2", "baseMVA": net.base_mva, "bus": bus, "branch": branch, "gen": gen}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp_net = from_ppc(ppc, f_hz=50)
        pp.runpp(pp_net, numba=False, tolerance_mva=1e-10)
    losses = float(pp_net.res_line.pl_mw.sum() + pp_net.res_trafo.pl_mw.sum()) * 1000.0
    import_kw = float(pp_net.res_ext_grid.p_mw.sum()) * 1000.0
    vm = {ids[k]: float(v) for k, v in enumerate(pp_net.res_bus.vm_pu.to_numpy())}
    return AcState(import_kw=import_kw, losses_kw=losses, vm_pu=vm)
