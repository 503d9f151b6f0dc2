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

__all__ = ["PowerFlowResult", "StepFlows", "solve_powerflow", "solve_powerflow_steps"]

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


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFlows:
    """The AC state of several load cases (steps) at once, as arrays with the steps first and
    the tree's positions last (`optimizer.tree`): complex bus voltages, the sending-end power
    of each position's feeding branch (kW, kvar as a complex number) and its series loss (kW),
    and the head import (complex, kW + j kvar)."""

    converged: bool
    iterations: int
    v: ComplexArray
    s_send_kw: ComplexArray
    loss_kw: FloatArray
    import_kw: ComplexArray


def solve_powerflow_steps(
    net: Network,
    *,
    p_kw: FloatArray,
    q_kvar: FloatArray,
    v_slack_pu: float | None = None,
    tol: float = 1e-8,
    max_iter: int = 50,
) -> StepFlows:
    """`solve_powerflow` for many steps in one vectorised sweep: `p_kw`, `q_kvar` are
    (steps × buses in `net.order`, the slack first) net loads. Converged when every step's
    largest voltage change is below `tol`."""
    m = tree(net)
    base_kw = net.base_kw
    z = (m.r + 1j * m.x)[:, None]
    p = np.atleast_2d(np.asarray(p_kw, dtype=float))
    q = np.atleast_2d(np.asarray(q_kvar, dtype=float))
    s_load = (p[:, 1:] + 1j * q[:, 1:]).T / base_kw - m.gen[:, None]  # positions × steps
    v_slack = complex(net.v_slack_pu if v_slack_pu is None else v_slack_pu, 0.0)
    y = m.y[:, None]
    v = _forward(m, v_slack, np.zeros_like(s_load), z)
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        v_new = _forward(m, v_slack, _backward(m, np.conj(s_load / v) + y * v), z)
        step = float(np.max(np.abs(v_new - v))) if v.size else 0.0
        v = v_new
        if step < tol:
            converged = True
            break
    j = _backward(m, np.conj(s_load / v) + y * v)
    s_loss = z * np.abs(j) ** 2
    s_send = (v * np.conj(j) + s_loss) * base_kw
    slack_children = m.parent_pos < 0
    slack_shunt = abs(v_slack) ** 2 * np.conj(m.y_slack) * base_kw
    s_import = np.sum(s_send[slack_children], axis=0) + p[:, 0] + 1j * q[:, 0] + slack_shunt
    return StepFlows(
        converged=converged,
        iterations=iterations,
        v=v.T.copy(),
        s_send_kw=s_send.T.copy(),
        loss_kw=(s_loss.real * base_kw).T.copy(),
        import_kw=np.asarray(s_import, dtype=np.complex128),
    )


def _backward(m: Tree, current: ComplexArray) -> ComplexArray:
    """Branch currents from load currents, leaves first (one matrix product for a small tree
    and one load case; a numpy operation per depth level otherwise: a complex matrix product
    over many steps goes to a threaded BLAS that is slower on a busy box than the loop)."""
    if m.down is not None and current.ndim == 1:
        return m.down @ current
    j = current.copy()
    extra = (None,) * (j.ndim - 1)  # positions first, then any steps
    for level in reversed(m.levels[1:]):
        np.add.at(j, m.parent_pos[level], j[level] / m.tap[level][(..., *extra)])
    return j


def _forward(m: Tree, v_slack: complex, j: ComplexArray, z_pu: ComplexArray) -> ComplexArray:
    """Bus voltages from branch currents, root first."""
    extra = (None,) * (j.ndim - 1)  # positions first, then any steps
    if m.down is not None and m.gain is not None and j.ndim == 1:
        return v_slack * m.gain[(..., *extra)] - m.down.T @ (z_pu * j)
    v = np.empty_like(j)
    for depth, level in enumerate(m.levels):
        upstream = v_slack if depth == 0 else v[m.parent_pos[level]]
        v[level] = upstream / m.tap[level][(..., *extra)] - z_pu[level] * j[level]
    return v
