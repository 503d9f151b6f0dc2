"""The documented fallback rule, for when the LP fails or runs out of time.

1. Start from every PV at `min(available, p_max)` (ramp limits respected) and every battery at
   its last setpoint clamped to what p_max, SOC and ramp allow (idle if unknown).
2. Export limit violated (`import < −E`): curtail all PV by the same fraction of their output,
   just enough to meet it (if all PV at zero cannot meet it, it stays missed).
3. Import limit violated (`import > L`): discharge the batteries in proportion to the
   discharge power each can give now (p_max, SOC, ramp), just enough to meet it.

Flexible loads are left as they are (their last setpoint, else nominal) and get no setpoint.

Each step is sized with the AC power flow (losses included) by a few fixed-point corrections;
the estimates in the result are the AC power flow at the final setpoints. Status `FALLBACK`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from optimizer.lp import battery_bounds_kw, pv_bounds_kw
from optimizer.network import Network
from optimizer.powerflow import PowerFlowResult, solve_powerflow
from optimizer.result import DispatchResult, DispatchStatus
from optimizer.units import DispatchInput, band_violation

__all__ = ["proportional_curtailment"]

_CORRECTIONS = 6


def _flow(
    net: Network, inp: DispatchInput, pv_kw: Mapping[str, float], bat_kw: Mapping[str, float]
) -> PowerFlowResult:
    p = {b: inp.loads_kw.get(b, 0.0) for b in net.order}
    for u in inp.pv:
        p[u.bus] -= pv_kw[u.name]
    for b in inp.batteries:
        p[b.bus] -= bat_kw[b.name]
    for f in inp.flexible_loads:  # the rule leaves loads as they are: last setpoint or nominal
        p[f.bus] += f.p_nominal_kw if f.last_setpoint_kw is None else f.last_setpoint_kw
    return solve_powerflow(net, p_kw=p, q_kvar=inp.loads_kvar, v_slack_pu=inp.slack_v(net))


def proportional_curtailment(network: Network, inp: DispatchInput) -> DispatchResult:
    """Setpoints by the fallback rule (see the module docstring); never raises for limits."""
    for unit in inp.units:
        if not network.has_bus(unit.bus):
            raise ValueError(f"unit {unit.name!r} is on bus {unit.bus}, not in the network")
    pv_range = {u.name: pv_bounds_kw(u, inp.interval_s) for u in inp.pv}
    bat_range = {b.name: battery_bounds_kw(b, inp.interval_s) for b in inp.batteries}
    pv_kw = {name: hi for name, (_, hi) in pv_range.items()}
    bat_kw = {
        b.name: min(max(b.last_setpoint_kw or 0.0, bat_range[b.name][0]), bat_range[b.name][1])
        for b in inp.batteries
    }
    flow = _flow(network, inp, pv_kw, bat_kw)
    actions: list[str] = []
    export_limit = inp.export_limit_kw
    if export_limit is not None and flow.import_kw < -export_limit:
        full = dict(pv_kw)
        total = math.fsum(full.values())
        keep = 1.0
        for _ in range(_CORRECTIONS):
            excess = -export_limit - flow.import_kw  # > 0: too much export
            if total <= 0 or abs(excess) < inp.slack_tol_kw:
                break
            keep = min(max(keep - excess / total, 0.0), 1.0)
            pv_kw = {n: max(full[n] * keep, pv_range[n][0]) for n in full}
            flow = _flow(network, inp, pv_kw, bat_kw)
        actions.append(f"PV curtailed to {keep:.1%} of output for export limit {export_limit} kW")
    import_limit = inp.import_limit_kw
    if import_limit is not None and flow.import_kw > import_limit:
        start = dict(bat_kw)
        room = {n: max(bat_range[n][1] - start[n], 0.0) for n in start}
        total_room = math.fsum(room.values())
        share = 0.0
        for _ in range(_CORRECTIONS):
            excess = flow.import_kw - import_limit
            if total_room <= 0 or abs(excess) < inp.slack_tol_kw:
                break
            share = min(max(share + excess / total_room, 0.0), 1.0)
            bat_kw = {n: start[n] + room[n] * share for n in start}
            flow = _flow(network, inp, pv_kw, bat_kw)
        actions.append(
            f"batteries discharged at {share:.1%} of their room for import limit {import_limit} kW"
        )
    import_slack = 0.0 if import_limit is None else max(flow.import_kw - import_limit, 0.0)
    export_slack = 0.0 if export_limit is None else max(-export_limit - flow.import_kw, 0.0)
    voltage_slack, _ = band_violation(inp, flow.v_pu)
    missed = [
        f"{label} missed by {value:.3f} kW"
        for label, value in (("import limit", import_slack), ("export limit", export_slack))
        if value > inp.slack_tol_kw
    ]
    return DispatchResult(
        status=DispatchStatus.FALLBACK,
        pv_kw=pv_kw,
        battery_kw=bat_kw,
        import_kw=flow.import_kw,
        import_kvar=flow.import_kvar,
        losses_kw=flow.losses_kw,
        v_min_pu=flow.v_min_pu,
        v_min_bus=flow.v_min_bus,
        v_max_pu=flow.v_max_pu,
        v_max_bus=flow.v_max_bus,
        curtailed_kw=math.fsum(u.p_upper_kw - pv_kw[u.name] for u in inp.pv),
        import_slack_kw=import_slack,
        export_slack_kw=export_slack,
        voltage_slack_pu=voltage_slack,
        message="fallback: " + ("; ".join(actions + missed) or "no limit violated"),
    )
