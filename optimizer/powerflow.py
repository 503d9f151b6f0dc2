"""AC power flow of a radial feeder by backward/forward sweep.

Loads are constant power. With buses in root-first order, the branch currents are
`J = D · I` and the voltages `V = V_slack · g − Dᵀ · (Z ∘ J)`, where `D[b, k]` is the
product of `1/tap` along the path from branch `b` (exclusive) down to bus `k` (inclusive) when
`k` is downstream of `b`, else 0, and `g[k]` the product of `1/tap` along the whole path to `k`.
Both sweeps are therefore one matrix product each.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer.network import Network

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


@dataclass(frozen=True, slots=True, kw_only=True)
class _SweepMatrices:
    """Topology arrays for non-slack buses in root-first order (index k <-> order[k + 1])."""

    ids: tuple[int, ...]
    down: ComplexArray  # D (real-valued, stored complex for the sweeps)
    gain: ComplexArray  # g
    z_pu: ComplexArray
    r_pu: FloatArray
    tap: FloatArray
    parent_pos: npt.NDArray[np.intp]  # -1 for a child of the slack


@functools.lru_cache(maxsize=16)
def _sweep_matrices(net: Network) -> _SweepMatrices:
    ids = net.order[1:]
    n = len(ids)
    pos = {bus_id: k for k, bus_id in enumerate(ids)}
    down = np.zeros((n, n), dtype=np.complex128)
    gain = np.ones(n, dtype=np.complex128)
    z_pu = np.zeros(n, dtype=np.complex128)
    tap = np.ones(n)
    parent_pos = np.full(n, -1, dtype=np.intp)
    for k, bus_id in enumerate(ids):
        branch = net.branch_to(bus_id)
        z_pu[k] = complex(branch.r_pu, branch.x_pu)
        tap[k] = branch.tap
        p = pos.get(net.parent[bus_id], -1)
        parent_pos[k] = p
        if p >= 0:
            down[:, k] = down[:, p] / branch.tap
            gain[k] = gain[p] / branch.tap
        else:
            gain[k] = 1.0 / branch.tap
        down[k, k] = 1.0
    return _SweepMatrices(
        ids=ids,
        down=down,
        gain=gain,
        z_pu=z_pu,
        r_pu=z_pu.real.copy(),
        tap=tap,
        parent_pos=parent_pos,
    )


def solve_powerflow(
    net: Network,
    *,
    p_kw: Mapping[int, float],
    q_kvar: Mapping[int, float],
    v_slack_pu: float = 1.0,
    tol: float = 1e-8,
    max_iter: int = 50,
) -> PowerFlowResult:
    """AC power flow with `p_kw`/`q_kvar` the net load per bus (load − generation; absent = 0).

    Converged when the largest voltage change between sweeps is below `tol` p.u.; when it is not
    after `max_iter` sweeps the last iterate is returned with `converged=False`.
    """
    for bus_id in (*p_kw, *q_kvar):
        net.bus(bus_id)  # NetworkError for an unknown bus
    m = _sweep_matrices(net)
    base_kw = net.base_kw
    s_load = np.array(
        [complex(p_kw.get(b, 0.0), q_kvar.get(b, 0.0)) / base_kw for b in m.ids],
        dtype=np.complex128,
    )
    v_slack = complex(v_slack_pu, 0.0)
    v: ComplexArray = v_slack * m.gain
    j: ComplexArray = np.zeros_like(v)
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        current = np.conj(s_load / v)
        j = m.down @ current
        v_new = v_slack * m.gain - m.down.T @ (m.z_pu * j)
        step = float(np.max(np.abs(v_new - v))) if len(v) else 0.0
        v = v_new
        if step < tol:
            converged = True
            break
    # Recompute the currents at the final voltages so flows and voltages agree.
    j = m.down @ np.conj(s_load / v) if len(v) else j
    s_recv = v * np.conj(j)
    s_loss = m.z_pu * np.abs(j) ** 2
    s_send = (s_recv + s_loss) * base_kw
    slack_children = m.parent_pos < 0
    slack_load = complex(p_kw.get(net.slack_bus, 0.0), q_kvar.get(net.slack_bus, 0.0))
    s_import = complex(np.sum(s_send[slack_children])) + slack_load
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
