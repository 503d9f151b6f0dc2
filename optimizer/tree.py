"""Array views of a network's radial tree, shared by the LP and its updates (cached per network).

Positions `0..N−1` are the non-slack buses in root-first order (`Network.order[1:]`); the
branch feeding position `k` has `r[k]`, `x[k]`, `tap[k]` and `rating_kva[k]` (NaN if unrated).

Every feeding branch is seen as the feeder runs: an ideal `tap[k]`:1 transformer at the parent's
side, then the series impedance `r[k] + j x[k]` into bus `k`. A MATPOWER branch whose tap sits at
the downstream end (its from-bus is the child) is the same two-port with the tap inverted and the
impedance referred through it (`1/τ`, `τ²·z`). The branches' charging and the buses' shunts are
constant admittances to ground, lumped per bus: `y[k]` at position `k` (p.u., referred to the
bus's own voltage), `y_slack` at the slack bus. `gen[k]` is the fixed generators' injection
(p.u.).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer.network import Network

__all__ = ["Tree", "tree"]

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True, kw_only=True)
class Tree:
    """The tree as arrays (see the module docstring)."""

    ids: tuple[int, ...]
    pos: dict[int, int]
    parent_pos: IntArray  # -1 for a child of the slack bus
    r: FloatArray
    x: FloatArray
    tap: FloatArray
    rating_kva: FloatArray
    y: ComplexArray  # shunt admittance at each bus (its own, and its branches' charging)
    y_slack: complex  # the same at the slack bus
    gen: ComplexArray  # fixed generation at each bus, p.u.
    levels: tuple[IntArray, ...]  # positions by depth, the slack's children first
    down: FloatArray | None = None  # small trees: D[b, k] = Π 1/tap from b (excl.) to k
    below: FloatArray | None = None  # small trees: 1 where k is b or downstream of b
    gain: FloatArray | None = None  # small trees: Π 1/tap from the slack to k

    def position(self, bus_id: int) -> int:
        """The position of `bus_id`, or −1 for the slack bus."""
        return self.pos.get(bus_id, -1)

    def subtree_sum(self, values: FloatArray) -> FloatArray:
        """For each position, the sum of `values` over it and everything downstream.

        `values` has the positions on its last axis; any leading axes are kept (then summed
        level by level: a matrix product over many rows goes to a threaded BLAS, which on a
        busy two-core box is many times slower than the loop).
        """
        if self.below is not None and np.ndim(values) == 1:
            return np.asarray(values, dtype=float) @ self.below.T
        out = np.array(values, dtype=float, copy=True)
        moved = np.moveaxis(out, -1, 0)  # a view: positions first
        for level in reversed(self.levels[1:]):
            np.add.at(moved, self.parent_pos[level], moved[level])
        return out

    def path_sum(self, values: FloatArray) -> FloatArray:
        """For each position, the sum of `values` over the branches from the slack bus down
        to it (its own included). `values` has the positions on its last axis."""
        if self.below is not None and np.ndim(values) == 1:
            return np.asarray(values, dtype=float) @ self.below
        out = np.array(values, dtype=float, copy=True)
        for level in self.levels[1:]:
            out[..., level] += out[..., self.parent_pos[level]]
        return out


DENSE_MAX = 400
"""Trees up to this many non-slack buses also get dense path matrices: for them one matrix
product is faster than a numpy operation per depth level."""

_CACHE: dict[int, tuple[Network, Tree]] = {}
_CACHE_SIZE = 16


def tree(net: Network) -> Tree:
    """The array view of `net`, cached by identity (networks are immutable; hashing a large
    one would cost more than the lookup saves)."""
    hit = _CACHE.get(id(net))
    if hit is not None and hit[0] is net:
        return hit[1]
    result = _build(net)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(net)] = (net, result)
    return result


def _build(net: Network) -> Tree:
    ids = net.order[1:]
    pos = {bus_id: k for k, bus_id in enumerate(ids)}
    n = len(ids)
    parent_pos = np.full(n, -1, dtype=np.intp)
    depth = np.zeros(n, dtype=np.intp)
    r, x, tap, rating = np.zeros(n), np.zeros(n), np.ones(n), np.full(n, np.nan)
    base_kw = net.base_kw
    y = np.array([_bus_shunt(net, b, base_kw) for b in ids], dtype=np.complex128)
    y_slack = _bus_shunt(net, net.slack_bus, base_kw)
    gen = np.zeros(n, dtype=np.complex128)
    for g in net.generators:
        gen[pos[g.bus]] += complex(g.p_kw, g.q_kvar) / base_kw
    for k, bus_id in enumerate(ids):
        br = net.branch_to(bus_id)
        p = pos.get(net.parent[bus_id], -1)
        parent_pos[k] = p
        depth[k] = 0 if p < 0 else depth[p] + 1
        half_b = 0.5j * br.b_pu
        if br.from_bus == net.parent[bus_id]:  # the tap at the parent's side, as MATPOWER's
            tap[k], r[k], x[k] = br.tap, br.r_pu, br.x_pu
            y_parent, y[k] = half_b / br.tap**2, y[k] + half_b
        else:  # the tap at bus k's side: invert it, refer the impedance to the parent's side
            tap[k], r[k], x[k] = 1.0 / br.tap, br.r_pu * br.tap**2, br.x_pu * br.tap**2
            y_parent, y[k] = half_b, y[k] + half_b / br.tap**2
        if p >= 0:
            y[p] += y_parent
        else:
            y_slack += y_parent
        if br.rating_kva is not None:
            rating[k] = br.rating_kva
    down = below = gain = None
    if n <= DENSE_MAX:
        down, below, gain = np.zeros((n, n)), np.zeros((n, n)), np.ones(n)
        for k in range(n):
            p = parent_pos[k]
            if p >= 0:
                down[:, k] = down[:, p] / tap[k]
                below[:, k] = below[:, p]
                gain[k] = gain[p] / tap[k]
            else:
                gain[k] = 1.0 / tap[k]
            down[k, k] = below[k, k] = 1.0
    levels = tuple(np.flatnonzero(depth == d) for d in range(int(depth.max()) + 1 if n else 0))
    return Tree(
        ids=ids,
        pos=pos,
        parent_pos=parent_pos,
        r=r,
        x=x,
        tap=tap,
        rating_kva=rating,
        y=y,
        y_slack=complex(y_slack),
        gen=gen,
        levels=levels,
        down=down,
        below=below,
        gain=gain,
    )


def _bus_shunt(net: Network, bus_id: int, base_kw: float) -> complex:
    bus = net.bus(bus_id)
    return complex(bus.gs_kw, bus.bs_kvar) / base_kw
