"""The weighted least squares of `optimizer.estimation`, solved exactly by two passes over the tree.

The model (per unit; k a non-slack bus, π(k) its parent, the slack is node N):

    F_k = s_k + Σ_{c ∈ children(k)} F_c + λ_k          (flows, P and Q, at the sending end)
    u_k = a_k·u_π(k) + e_k·F_k + κ_k                   (a_k = 1/τ_k², e_k = −2 (r_k, x_k))

with independent Gaussian information on each load `s_k` (mean, diagonal variance: its
pseudo-measurement and meters combined), on each `u_k` (curvature α_k, linear term β_k: the
voltage meters), on the import `F_N` (the head meters) and on `u_N` (given, or measured and
pseudo). Being linear and Gaussian on a tree, the least-squares estimate is the posterior mean,
and the passes of a Kalman smoother give it and every posterior variance:

- **up**, leaves first: the subtree below k gives `F_k | u_k ~ N(M_k + G_k·u_k, S_k)` and a
  likelihood `exp(−½·α_k·u_k² + β_k·u_k)`; substituting `u_k = a_k·u_π + e_k·F_k + κ_k` and
  conditioning on `u_π` gives `F_k | u_π ~ N(m_k + g_k·u_π, Σ_k)` and a likelihood of `u_π`.
  The children's are independent given `u_π`, so at the parent they add (with its load);
- **at the slack**: the import and u_N together (a 3×3 system), with the head meters;
- **down**, root first: given the parent's posterior of (F_π, u_π), each child's flow is its
  conditional share of the parent's flow innovation, `F_k = m_k + g_k·u_π + K_k·(F_π − M_π −
  G_π·u_π) + noise`; its voltage follows. Each load likewise takes its share of its own bus's.

The gains (S, G, α, the maps of the means, K, the posterior covariances) depend only on the
variances and the impedances: `gains` computes them once per estimate; `means` is then a few
matrix products per depth level, once per re-linearisation (λ, κ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer.tree import Tree

__all__ = ["Gains", "TreeSmoother"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

_ADJ_ROW = np.array([[1, 0], [1, 0]])
_ADJ_COL = np.array([[1, 1], [0, 0]])
_ADJ_SIGN = np.array([[1.0, -1.0], [-1.0, 1.0]])


@dataclass(frozen=True, slots=True, kw_only=True)
class Gains:
    """The passes' operating-point-free part (see the module docstring), by node 0..N."""

    up: list[tuple[FloatArray, FloatArray]]  # per level: the mean's map (3×3) and κ's (3)
    down: list[FloatArray]  # per level: (F_k, u_k) from (F_π, u_π), 3×3
    m_down: FloatArray  # (N, 2, 2) K_k, the share of the parent's flow innovation
    acc: FloatArray  # (N+1, 3, 3) [[S, G], [Gᵀ, α]] of each node
    a_inv: FloatArray  # (N+1, 2, 2) S⁻¹
    k_load: FloatArray  # (N+1, 2, 2) each load's share of its bus's flow innovation
    cov: FloatArray  # (N+1, 3, 3) posterior covariance of (P_k, Q_k, u_k)
    var_load: FloatArray  # (N+1, 2) posterior variance of each load (P, Q)
    fixed: bool  # u_N given


class TreeSmoother:
    """The passes over one network's tree (its levels and transforms, built once)."""

    def __init__(self, m: Tree) -> None:
        n = len(m.ids)
        self.n = n
        par = np.where(m.parent_pos < 0, n, m.parent_pos)
        self.parent = par
        self.a = 1.0 / m.tap**2
        self.e = -2.0 * np.column_stack([m.r, m.x])
        t = np.zeros((n, 3, 3))
        t[:, 0, 0] = t[:, 1, 1] = 1.0
        t[:, 2, :2] = self.e
        t[:, 2, 2] = self.a
        self.t = t  # (F_k, u_k) = T_k (F_k, u_π) + (0, 0, κ_k)
        # positions are breadth first, so each depth level is a contiguous range: a slice
        self.levels = [(_span(lv), par[lv], self.e[lv], self.a[lv]) for lv in m.levels]

    def gains(
        self, var_load: FloatArray, alpha: FloatArray, w_head: FloatArray, *, fixed: bool
    ) -> Gains:
        """The gains for loads of variance `var_load` (N+1, 2), voltage information `alpha`
        (N+1, in u), head information `w_head` (P, Q), and u_N given or not.

        Up, at node k with `F = M + G·u_k + ε`, ε ~ N(0, S): the substitution gives
        `u_k = c·(a·u_π + e·M + κ) + h·ε` with `c = 1/(1 − e·G)`, `h = c·e`, and
        `F = M + G·μ_u + B·ε`, `B = I + G·hᵀ`; the subtree's voltage likelihood (α, β) is then
        a scalar measurement of `h·ε` (a Kalman update: no matrix to invert)."""
        n = self.n
        eye = np.eye(2)
        acc = np.zeros((n + 1, 3, 3))
        acc[:, 0, 0], acc[:, 1, 1], acc[:, 2, 2] = var_load[:, 0], var_load[:, 1], alpha
        up: list[tuple[FloatArray, FloatArray]] = []
        sig_all = np.empty((n, 2, 2))
        g_all = np.empty((n, 2))
        for lv, par, e, a in reversed(self.levels):
            blk = acc[lv]
            s, g, al = blk[:, :2, :2], blk[:, :2, 2], blk[:, 2, 2]
            c = 1.0 / (1.0 - e[:, 0] * g[:, 0] - e[:, 1] * g[:, 1])
            h = c[:, None] * e
            sh = _mv(s, h)
            hsh = h[:, 0] * sh[:, 0] + h[:, 1] * sh[:, 1]
            den = 1.0 + al * hsh
            q = sh / den[:, None]
            bq = q + g * (hsh / den)[:, None]  # B·q, B = I + g·hᵀ
            w = g - al[:, None] * bq
            ca = c * a
            b = eye + g[:, :, None] * h[:, None, :]
            sig = b @ (s - (al[:, None] * q)[:, :, None] * sh[:, None, :]) @ b.transpose(0, 2, 1)
            out = np.empty_like(blk)
            out[:, :2, :2] = sig
            out[:, :2, 2] = out[:, 2, :2] = g1 = w * ca[:, None]
            out[:, 2, 2] = al * ca * ca / den
            np.add.at(acc, par, out)
            sig_all[lv], g_all[lv] = sig, g1
            # the means: m = (I + c·w·eᵀ)·M + B·q·β + c·w·κ,  β_π = (c·a·β − f·(e·M + κ)) / den
            wc = w * c[:, None]
            f = c * ca * al / den
            mat = np.empty_like(blk)
            mat[:, :2, :2] = eye + wc[:, :, None] * e[:, None, :]
            mat[:, :2, 2] = bq
            mat[:, 2, :2] = -f[:, None] * e
            mat[:, 2, 2] = ca / den
            shift = np.empty((len(c), 3))
            shift[:, :2], shift[:, 2] = wc, -f
            up.append((mat, shift))
        up.reverse()
        a_inv = _inv2(acc[:, :2, :2])
        cov = np.zeros((n + 1, 3, 3))
        a0, g0 = a_inv[n], acc[n, :2, 2]
        if fixed:
            cov[n, :2, :2] = np.linalg.inv(a0 + np.diag(w_head))
        else:
            info0 = np.empty((3, 3))
            info0[:2, :2] = a0 + np.diag(w_head)
            info0[:2, 2] = info0[2, :2] = -a0 @ g0
            info0[2, 2] = g0 @ a0 @ g0 + acc[n, 2, 2]
            cov[n] = np.linalg.inv(info0)
        # down: (F_k, u_k) = R_k (F_π, u_π) + ..., with noise T_k diag(Σ_k − K_k Σ_k, 0) T_kᵀ
        par = self.parent
        k = sig_all @ a_inv[par]
        ell = np.zeros((n, 3, 3))
        ell[:, :2, :2] = k
        ell[:, :2, 2] = g_all - _mv(k, acc[par, :2, 2])
        ell[:, 2, 2] = 1.0
        r = self.t @ ell
        noise = np.zeros((n, 3, 3))
        noise[:, :2, :2] = sig_all - k @ sig_all
        noise = self.t @ noise @ self.t.transpose(0, 2, 1)
        down: list[FloatArray] = []
        for lv, par_l, _, _ in self.levels:
            r_l = r[lv]
            cov[lv] = r_l @ cov[par_l] @ r_l.transpose(0, 2, 1) + noise[lv]
            down.append(r_l)
        k_load = var_load[:, :, None] * a_inv
        ell = np.concatenate([k_load, -_mv(k_load, acc[:, :2, 2])[:, :, None]], axis=2)
        var_post = np.einsum("nij,njk,nik->ni", ell, cov, ell) + var_load * (
            1.0 - np.einsum("nii->ni", k_load)
        )
        return Gains(
            up=up,
            down=down,
            m_down=k,
            acc=acc,
            a_inv=a_inv,
            k_load=k_load,
            cov=cov,
            var_load=np.maximum(var_post, 0.0),
            fixed=fixed,
        )

    def means(
        self,
        gains: Gains,
        mu_load: FloatArray,
        lam: FloatArray,
        kap: FloatArray,
        beta: FloatArray,
        h_head: FloatArray,
        u_fixed: float | None,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The posterior means for load means `mu_load` (N+1, 2), offsets `lam` (N+1, 2) and
        `kap` (N), voltage information `beta` (N+1) and head information `h_head`: each load
        (N+1, 2), each node's u (N+1) and the import (2)."""
        n = self.n
        x = np.empty((n + 1, 3))
        x[:, :2] = mu_load + lam
        x[:, 2] = beta
        moved = np.empty((n, 3))
        for (lv, par, _, _), (mat, shift) in zip(
            reversed(self.levels), reversed(gains.up), strict=True
        ):
            out = _mv(mat, x[lv]) + kap[lv][:, None] * shift
            moved[lv] = out
            np.add.at(x, par, out)
        acc, a0 = gains.acc, gains.a_inv[n]
        g0 = acc[n, :2, 2]
        m_tot = x[:, :2]
        y = np.empty((n + 1, 3))
        if u_fixed is not None:
            y[n, :2] = gains.cov[n, :2, :2] @ (a0 @ (m_tot[n] + g0 * u_fixed) + h_head)
            y[n, 2] = u_fixed
        else:
            rhs = np.append(a0 @ m_tot[n] + h_head, -g0 @ a0 @ m_tot[n] + x[n, 2])
            y[n] = gains.cov[n] @ rhs
        # (F_k, u_k) = R_k (F_π, u_π) + T_k (m_k − K_k M_π, 0) + (0, 0, κ_k)
        d = moved[:, :2] - _mv(gains.m_down, m_tot[self.parent])
        shift = np.column_stack([d, np.sum(self.e * d, axis=1) + kap])
        for (lv, par, _, _), r in zip(self.levels, gains.down, strict=True):
            y[lv] = _mv(r, y[par]) + shift[lv]
        innovation = y[:, :2] - m_tot - acc[:, :2, 2] * y[:, 2:]
        load = mu_load + _mv(gains.k_load, innovation)
        return load, y[:, 2], y[n, :2]


def _span(positions: IntArray) -> slice | IntArray:
    """`positions` as a slice when they are a contiguous ascending range (a view, no copy)."""
    if len(positions) and positions[-1] - positions[0] + 1 == len(positions):
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def _inv2(m: FloatArray) -> FloatArray:
    """Stacked 2×2 inverses (the adjugate over the determinant)."""
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    return np.asarray(m[:, _ADJ_ROW, _ADJ_COL] * _ADJ_SIGN / det[:, None, None])


def _mv(mat: FloatArray, vec: FloatArray) -> FloatArray:
    """Stacked matrix times stacked vector."""
    return np.asarray((mat @ vec[:, :, None])[:, :, 0])
