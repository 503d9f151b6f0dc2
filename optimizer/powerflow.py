"""AC power flow of a radial feeder by backward/forward sweep, vectorised by tree depth.

Loads and fixed generators are constant power, shunts and line charging constant admittance
(`optimizer.tree`: `y` per bus). With `I_k = conj(S_k / V_k) + y_k·V_k` the current drawn at bus
k, the branch feeding k carries `J_k = I_k + Σ_{c∈children(k)} J_c / τ_c` (an ideal `τ`:1
transformer at the branch's upstream side), summed one depth level at a time from the leaves up;
the voltages follow root down, `V_k = V_π(k) / τ_k − Z_k·J_k`. Each sweep is a few numpy
operations per depth level.

Branch flows are at the sending end of the series impedance (after the tap and the upstream
half of the charging); losses are the series impedances' `|J|²·Z`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer.network import Network
from optimizer.tree import Tree, tree

__all__ = ["PowerFlowResult", "solve_powerflow"]

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]


@dataclass(frozen=True, slots=True, kw_only=True)
class PowerFlowResult:
    """The solved state. Branch quantities are keyed by the branch's downstream (to) bus."""

    converged: bool
    iterations: int
    v_pu: Mapping[int, float]
    angle_deg: Mapping[int, float]
    branch_p_kw: Mapping[int, float]
    branch_q_kvar: Mapping[int, float]
    branch_loss_kw: Mapping[int, float]
    losses_kw: float
    losses_kvar: float
    import_kw: float
    import_kvar: float
    v_min_pu: float
    v_min_bus: int
    v_max_pu: float
    v_max_bus: int


def solve_powerflow(
    net: Network,
    *,
    p_kw: Mapping[int, float],
    q_kvar: Mapping[int, float],
    v_slack_pu: float | None = None,
    tol: float = 1e-8,
    max_iter: int = 50,
) -> PowerFlowResult:
    """AC power flow with `p_kw`/`q_kvar` the net load per bus (load − generation; absent = 0)
    on top of what the network itself holds (shunts, charging, fixed generators), the slack bus
    at `v_slack_pu` (default: the network's, as its case gives it).

    Converged when the largest voltage change between sweeps is below `tol` p.u.; when it is not
    after `max_iter` sweeps the last iterate is returned with `converged=False`.
    """
    for bus_id in (*p_kw, *q_kvar):
        net.bus(bus_id)  # NetworkError for an unknown bus
    m = tree(net)
    z_pu = m.r + 1j * m.x
    base_kw = net.base_kw
    s_load = -m.gen.copy()
    for bus_id in set(p_kw) | set(q_kvar):
        k = m.pos.get(bus_id)
        if k is not None:
            s_load[k] += complex(p_kw.get(bus_id, 0.0), q_kvar.get(bus_id, 0.0)) / base_kw
    v_slack = complex(net.v_slack_pu if v_slack_pu is None else v_slack_pu, 0.0)
    v = _forward(m, v_slack, np.zeros_like(s_load), z_pu)
    j: ComplexArray = np.zeros_like(v)
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        j = _backward(m, np.conj(s_load / v) + m.y * v)
        v_new = _forward(m, v_slack, j, z_pu)
        step = float(np.max(np.abs(v_new - v))) if len(v) else 0.0
        v = v_new
        if step < tol:
            converged = True
            break
    # Recompute the currents at the final voltages so flows and voltages agree.
    j = _backward(m, np.conj(s_load / v) + m.y * v) if len(v) else j
    s_recv = v * np.conj(j)
    s_loss = z_pu * np.abs(j) ** 2
    s_send = (s_recv + s_loss) * base_kw
    slack_children = m.parent_pos < 0
    slack_load = complex(p_kw.get(net.slack_bus, 0.0), q_kvar.get(net.slack_bus, 0.0))
    slack_shunt = abs(v_slack) ** 2 * np.conj(m.y_slack) * base_kw
    s_import = complex(np.sum(s_send[slack_children])) + slack_load + slack_shunt
    mags = np.abs(v)
    all_ids = (net.slack_bus, *m.ids)
    all_mags = np.concatenate(([abs(v_slack)], mags))
    all_angles = np.concatenate(([0.0], np.degrees(np.angle(v))))
    k_min = int(np.argmin(all_mags))
    k_max = int(np.argmax(all_mags))
    return PowerFlowResult(
        converged=converged,
        iterations=iterations,
        v_pu=dict(zip(all_ids, map(float, all_mags), strict=True)),
        angle_deg=dict(zip(all_ids, map(float, all_angles), strict=True)),
        branch_p_kw=dict(zip(m.ids, map(float, s_send.real), strict=True)),
        branch_q_kvar=dict(zip(m.ids, map(float, s_send.imag), strict=True)),
        branch_loss_kw=dict(zip(m.ids, map(float, s_loss.real * base_kw), strict=True)),
        losses_kw=float(np.sum(s_loss.real) * base_kw),
        losses_kvar=float(np.sum(s_loss.imag) * base_kw),
        import_kw=s_import.real,
        import_kvar=s_import.imag,
        v_min_pu=float(all_mags[k_min]),
        v_min_bus=all_ids[k_min],
        v_max_pu=float(all_mags[k_max]),
        v_max_bus=all_ids[k_max],
    )


def _backward(m: Tree, current: ComplexArray) -> ComplexArray:
    """Branch currents from load currents, leaves first."""
    if m.down is not None:
        return m.down @ current
    j = current.copy()
    for level in reversed(m.levels[1:]):
        np.add.at(j, m.parent_pos[level], j[level] / m.tap[level])
    return j


def _forward(m: Tree, v_slack: complex, j: ComplexArray, z_pu: ComplexArray) -> ComplexArray:
    """Bus voltages from branch currents, root first."""
    if m.down is not None and m.gain is not None:
        return v_slack * m.gain - m.down.T @ (z_pu * j)
    v = np.empty_like(j)
    for depth, level in enumerate(m.levels):
        upstream = v_slack if depth == 0 else v[m.parent_pos[level]]
        v[level] = upstream / m.tap[level] - z_pu[level] * j[level]
    return v
