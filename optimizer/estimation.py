"""State estimation: every bus's load and voltage from the meters a feeder has, and the rest.

**Measured** (`Measurement`, each with its standard deviation, which the caller widens with
the reading's age): the load a bus's customers draw, P and Q (a smart meter at the customer or
the service transformer; the controlled DERs are not in it: their outputs are known injections,
`injections_kw`/`injections_kvar`), a bus's voltage magnitude, and the feeder's import at the
head, P and Q.

**Pseudo-measurements** stand in where no meter is. Every bus with a pseudo load (the case's
load shaped by a profile) gets P and Q at that value with σ = `pseudo_sigma_frac` ×
max(|value|, floor), the floor being `PSEUDO_FLOOR_FRAC` of the bus's apparent pseudo load and
at least `PSEUDO_FLOOR_KW`; a bus without one draws nothing (a tight zero, `TIGHT_ZERO_KW`),
unless a meter measures it: then a loose zero, σ = `pseudo_sigma_frac` × the feeder's largest
pseudo load. The slack voltage, when it is not given, has a wide pseudo-measurement at the
case's value (`SLACK_PSEUDO_SIGMA_PU`). Pseudo-measurements are counted in the fit, never in
`n_measurements`, and are never dropped.

**The model.** The state is every bus's load `s_k = (p_k, q_k)` and, unless given, the slack
voltage. With `F_k = (P_k, Q_k)` the flow into the branch feeding bus k (at its sending end,
after the tap) and `u_k = |V_k|²`, LinDistFlow with the losses taken at the operating point:

    F_k = s_k + Σ_{c ∈ children(k)} F_c + λ_k
    u_k = u_π(k) / τ_k² − 2 (r_k P_k + x_k Q_k) + κ_k

`λ_k` (the branch's series losses, the bus's shunt at its voltage, less the known injections
and fixed generators) and `κ_k = |z_k|²·|J_k|²` come from an AC power flow (backward/forward
sweep) at the current estimate; the least squares is solved, the power flow redone at the new
estimate, and so on until the voltages move less than `V_TOL_PU`. At that point the model
reproduces the AC power flow exactly: only its gradient leaves out how the losses move with the
loads. A voltage measurement enters as `u = v²` with `σ_u = 2·v·σ_v`; the head import is `F`
at the slack bus (its own load and shunt included).

**Weights and solution.** Weighted least squares: minimise Σ (z_i − h_i(x))² / σ_i² over
every measurement, pseudo included. The model is a tree of linear Gaussian relations, so the
solution and the variance of every estimated quantity come exactly from two passes over it (a
Kalman smoother on the tree), O(N) numpy operations by depth level with no matrix to factor:
upwards, each subtree's measurements are folded into a Gaussian of its feeding flow given its
parent's voltage, `F_k | u_π(k) ~ N(m_k + g_k·u_π(k), Σ_k)`, and a likelihood of `u_π(k)`;
at the slack the head measurements join; downwards, each bus's posterior flow, voltage and load
with their covariances. The gains depend only on the σ's and the impedances: they are computed
once per estimate, the means once per re-linearisation.

**Bad data.** The largest normalised residual test: `|r_i| / √Ω_ii` with `Ω = R − H G⁻¹ Hᵀ`,
whose diagonal is σ_i² less the variance of the estimated quantity the measurement sees (which
the downward pass gives). When the largest exceeds `bad_data_threshold`, that measurement is
dropped, named in `StateEstimate.dropped`, and the estimate redone, up to `max_drops` times.
A measurement whose Ω_ii vanishes (nothing else sees what it sees) cannot be tested and is kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp  # type: ignore[import-untyped]
import scipy.sparse.linalg as spla  # type: ignore[import-untyped]

from optimizer.network import Network
from optimizer.tree import tree
from optimizer.tree_smoother import TreeSmoother

__all__ = [
    "BadMeasurement",
    "Measurement",
    "MeasurementKind",
    "StateEstimate",
    "StateEstimator",
]

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]
IntArray = npt.NDArray[np.intp]

MeasurementKind = Literal["p", "q", "v", "head_p", "head_q"]
_KINDS: tuple[str, ...] = get_args(MeasurementKind)
_CODE = {kind: code for code, kind in enumerate(_KINDS)}
_P, _Q, _V, _HP, _HQ = range(5)
_BUS, _KIND = attrgetter("bus"), attrgetter("kind")
_VALUE, _SIGMA = attrgetter("value"), attrgetter("sigma")

PSEUDO_FLOOR_KW = 1.0
"""The smallest load a pseudo-measurement's σ is taken from (kW or kvar)."""
PSEUDO_FLOOR_FRAC = 0.2
"""...and the smallest share of the bus's apparent pseudo load (so a pseudo Q of zero at a bus
drawing P still has room to move)."""
TIGHT_ZERO_KW = 1e-3
"""σ of the zero load of a bus without pseudo load and meter (kW or kvar)."""
SLACK_PSEUDO_SIGMA_PU = 0.05
"""σ of the slack voltage's pseudo-measurement (at the case's value) when it is not given."""
V_TOL_PU = 1e-6
"""Re-linearise until no bus voltage moves more than this between two estimates."""
MAX_ITERATIONS = 30
SWEEP_TOL_PU = 1e-9
"""Each AC power flow sweeps until no voltage moves more than this (from the last one's)."""
OMEGA_MIN = 1e-9
"""A measurement whose Ω_ii is below this share of σ_i² is not tested (it is critical)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One reading. `p`, `q`: the load drawn at `bus` (kW, kvar, consumption positive, the
    controlled DERs excluded); `v`: the bus's voltage magnitude (p.u. of its base); `head_p`,
    `head_q`: the import into the feeder at the slack bus (kW, kvar). `sigma` is the reading's
    standard deviation in the same unit, > 0; `source` names the device that read it."""

    source: str
    kind: MeasurementKind
    bus: int
    value: float
    sigma: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BadMeasurement:
    """A measurement the bad-data test dropped, with its normalised residual when it did."""

    source: str
    kind: MeasurementKind
    bus: int
    normalized_residual: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StateEstimate:
    """The estimated state, keyed by bus id.

    `loads_kw`/`loads_kvar`: every bus's own load (the slack's included), as `p`/`q`
    measurements mean it; `v_pu`: every bus's voltage (the AC power flow at the estimate) and
    `v_sigma_pu` its standard deviation; `residual`: the weighted sum of squared residuals
    (pseudo-measurements included) over the degrees of freedom, the number of measurements
    used (about 1 when the σ's are right); `iterations`: re-linearisations, over every
    re-estimate.
    """

    loads_kw: dict[int, float]
    loads_kvar: dict[int, float]
    v_pu: dict[int, float]
    v_sigma_pu: dict[int, float]
    residual: float
    dropped: tuple[BadMeasurement, ...]
    n_measurements: int
    iterations: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Readings:
    """The measurements as arrays: node index (the slack is node N), kind code, value and σ
    in the model's units (p.u. power; u = v² for voltages)."""

    node: IntArray
    kind: IntArray
    value: FloatArray
    sigma: FloatArray


class StateEstimator:
    """Weighted least-squares state estimation of one radial feeder (see the module docstring).

    The network's tree and the sweep's triangular factor are built once here; `estimate` is
    then pure and cheap: call it every interval with that interval's measurements.
    """

    def __init__(
        self,
        network: Network,
        *,
        pseudo_sigma_frac: float = 0.5,
        bad_data_threshold: float = 4.0,
        max_drops: int = 5,
    ) -> None:
        if not (math.isfinite(pseudo_sigma_frac) and pseudo_sigma_frac > 0):
            raise ValueError(f"pseudo_sigma_frac must be > 0, got {pseudo_sigma_frac}")
        if not (math.isfinite(bad_data_threshold) and bad_data_threshold > 0):
            raise ValueError(f"bad_data_threshold must be > 0, got {bad_data_threshold}")
        if max_drops < 0:
            raise ValueError(f"max_drops must be >= 0, got {max_drops}")
        self.network = network
        self.pseudo_sigma_frac = pseudo_sigma_frac
        self.bad_data_threshold = bad_data_threshold
        self.max_drops = max_drops
        m = tree(network)
        n = len(m.ids)
        self._n = n
        self._ids: tuple[int, ...] = (*m.ids, network.slack_bus)
        self._node = {bus_id: k for k, bus_id in enumerate(self._ids)}
        self._smoother = TreeSmoother(m)
        self._z = m.r + 1j * m.x
        self._y = np.append(m.y, m.y_slack)
        self._gen = np.append(m.gen, 0.0)
        self._root_children = np.flatnonzero(m.parent_pos < 0)
        self._root_gain = np.where(m.parent_pos < 0, 1.0 / m.tap, 0.0)
        child = np.flatnonzero(m.parent_pos >= 0)
        # (I − Pτ) j = i sums currents up the tree, (I − Pτ)ᵀ v = b carries voltages down
        sweep = sp.identity(n, format="csc") - sp.csc_matrix(
            (1.0 / m.tap[child], (m.parent_pos[child], child)), shape=(n, n)
        )
        self._sweep = spla.splu(sweep.tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0)

    # -- the public call ---------------------------------------------------------------------

    def estimate(
        self,
        measurements: Sequence[Measurement],
        *,
        pseudo_loads_kw: Mapping[int, float],
        pseudo_loads_kvar: Mapping[int, float],
        injections_kw: Mapping[int, float] | None = None,
        injections_kvar: Mapping[int, float] | None = None,
        v_slack_pu: float | None = None,
    ) -> StateEstimate:
        """The state that best explains `measurements` (see the module docstring).

        `pseudo_loads_*`: the expected load per bus (kW, kvar); `injections_*`: the known
        injections per bus (the controlled DERs' outputs, generation positive); `v_slack_pu`:
        the slack voltage if known (else it is estimated). ValueError, naming the source and
        bus, for a measurement on an unknown bus, a non-finite value or a σ that is not > 0.
        """
        readings = self._readings(measurements)
        base = self.network.base_kw
        mu0, var0 = self._pseudo(pseudo_loads_kw, pseudo_loads_kvar, readings)
        inj = self._injections(injections_kw, injections_kvar) + self._gen
        u_fixed = None
        if v_slack_pu is not None:
            if not (math.isfinite(v_slack_pu) and 0.5 <= v_slack_pu <= 1.5):
                raise ValueError(f"v_slack_pu must be within 0.5..1.5 p.u., got {v_slack_pu}")
            u_fixed = v_slack_pu * v_slack_pu
        keep = np.ones(len(readings.node), dtype=bool)
        dropped: list[BadMeasurement] = []
        start: tuple[ComplexArray, float] | None = None
        iterations = 0
        while True:
            fit = self._fit(readings, keep, mu0, var0, inj, u_fixed, start)
            start, iterations = (fit.v, fit.v_slack), iterations + fit.iterations
            worst = int(np.argmax(fit.normalized)) if len(fit.normalized) else -1
            if (
                worst < 0
                or fit.normalized[worst] <= self.bad_data_threshold
                or len(dropped) >= self.max_drops
            ):
                break
            keep[worst] = False
            m = measurements[worst]
            dropped.append(
                BadMeasurement(
                    source=m.source,
                    kind=m.kind,
                    bus=m.bus,
                    normalized_residual=float(fit.normalized[worst]),
                )
            )
        n_used = int(keep.sum())
        mags = np.abs(fit.v_all)
        return StateEstimate(
            loads_kw=dict(zip(self._ids, (fit.s[:, 0] * base).tolist(), strict=True)),
            loads_kvar=dict(zip(self._ids, (fit.s[:, 1] * base).tolist(), strict=True)),
            v_pu=dict(zip(self._ids, mags.tolist(), strict=True)),
            v_sigma_pu=dict(
                zip(self._ids, (np.sqrt(fit.var_u) / (2.0 * mags)).tolist(), strict=True)
            ),
            residual=fit.weighted_sse / max(n_used, 1),
            dropped=tuple(dropped),
            n_measurements=n_used,
            iterations=iterations,
        )

    # -- inputs ------------------------------------------------------------------------------

    def _readings(self, measurements: Sequence[Measurement]) -> _Readings:
        count = len(measurements)
        node = np.fromiter(
            map(self._node.get, map(_BUS, measurements), repeat(-1)), dtype=np.intp, count=count
        )
        kind = np.fromiter(map(_CODE.get, map(_KIND, measurements), repeat(-1)), np.intp, count)
        value = np.fromiter(map(_VALUE, measurements), dtype=float, count=count)
        sigma = np.fromiter(map(_SIGMA, measurements), dtype=float, count=count)
        is_head = (kind == _HP) | (kind == _HQ)
        bad = (
            (node < 0)
            | (kind < 0)
            | ~np.isfinite(value)
            | ~(np.isfinite(sigma) & (sigma > 0))
            | (is_head & (node != self._n))
            | ((kind == _V) & ~(value > 0))
        )
        if bad.any():
            raise ValueError(self._complaint(measurements[int(np.argmax(bad))]))
        base = self.network.base_kw
        is_v = kind == _V
        return _Readings(
            node=node,
            kind=kind,
            value=np.where(is_v, value * value, value / base),
            sigma=np.where(is_v, 2.0 * value * sigma, sigma / base),
        )

    def _complaint(self, m: Measurement) -> str:
        where = f"measurement {m.kind!r} from {m.source!r} at bus {m.bus}"
        if m.kind not in _CODE:
            return f"{where}: kind must be one of {', '.join(_KINDS)}"
        if not self.network.has_bus(m.bus):
            return f"{where}: network {self.network.name!r} has no bus {m.bus}"
        if m.kind in ("head_p", "head_q") and m.bus != self.network.slack_bus:
            return f"{where}: a head measurement is at the slack bus {self.network.slack_bus}"
        if not math.isfinite(m.value):
            return f"{where}: value must be finite, got {m.value}"
        if not (math.isfinite(m.sigma) and m.sigma > 0):
            return f"{where}: sigma must be > 0, got {m.sigma}"
        return f"{where}: a voltage must be > 0 p.u., got {m.value}"

    def _pseudo(
        self, p_kw: Mapping[int, float], q_kvar: Mapping[int, float], readings: _Readings
    ) -> tuple[FloatArray, FloatArray]:
        """Each node's pseudo load (p.u.) and its variance (see the module docstring)."""
        size = self._n + 1
        mu = np.zeros((size, 2))
        for col, loads, name in ((0, p_kw, "pseudo_loads_kw"), (1, q_kvar, "pseudo_loads_kvar")):
            for bus_id, value in loads.items():
                k = self._node.get(bus_id)
                if k is None:
                    raise ValueError(f"{name}: network {self.network.name!r} has no bus {bus_id}")
                if not math.isfinite(value):
                    raise ValueError(f"{name}: bus {bus_id}: value must be finite, got {value}")
                mu[k, col] = value
        base = self.network.base_kw
        size_kw = np.hypot(mu[:, 0], mu[:, 1])
        floor = np.maximum(PSEUDO_FLOOR_KW, PSEUDO_FLOOR_FRAC * size_kw)
        sigma = self.pseudo_sigma_frac * np.maximum(np.abs(mu), floor[:, None])
        metered = np.zeros(size, dtype=bool)
        metered[readings.node[readings.kind <= _Q]] = True
        loose = self.pseudo_sigma_frac * max(PSEUDO_FLOOR_KW, float(size_kw.max(initial=0.0)))
        empty = size_kw == 0
        sigma[empty & metered] = loose
        sigma[empty & ~metered] = TIGHT_ZERO_KW
        return mu / base, (sigma / base) ** 2

    def _injections(
        self, p_kw: Mapping[int, float] | None, q_kvar: Mapping[int, float] | None
    ) -> ComplexArray:
        out = np.zeros(self._n + 1, dtype=np.complex128)
        base = self.network.base_kw
        for scale, loads, name in ((1.0, p_kw, "injections_kw"), (1j, q_kvar, "injections_kvar")):
            for bus_id, value in (loads or {}).items():
                k = self._node.get(bus_id)
                if k is None:
                    raise ValueError(f"{name}: network {self.network.name!r} has no bus {bus_id}")
                if not math.isfinite(value):
                    raise ValueError(f"{name}: bus {bus_id}: value must be finite, got {value}")
                out[k] += scale * value / base
        return out

    # -- one estimate ------------------------------------------------------------------------

    def _fit(
        self,
        readings: _Readings,
        keep: npt.NDArray[np.bool_],
        mu0: FloatArray,
        var0: FloatArray,
        inj: ComplexArray,
        u_fixed: float | None,
        start: tuple[ComplexArray, float] | None,
    ) -> _Fit:
        """The WLS estimate with the kept measurements, re-linearised to convergence."""
        n = self._n
        node, kind = readings.node[keep], readings.kind[keep]
        w = readings.sigma[keep] ** -2.0
        wz = w * readings.value[keep]
        # the loads' own measurements, pseudo and metered, make one Gaussian per load
        info = 1.0 / var0
        h = mu0 * info
        for code, col in ((_P, 0), (_Q, 1)):
            sel = kind == code
            info[:, col] += np.bincount(node[sel], w[sel], minlength=n + 1)
            h[:, col] += np.bincount(node[sel], wz[sel], minlength=n + 1)
        var_s = 1.0 / info
        mu_s = h * var_s
        sel = kind == _V
        alpha = np.bincount(node[sel], w[sel], minlength=n + 1).astype(float)
        beta = np.bincount(node[sel], wz[sel], minlength=n + 1).astype(float)
        u_prior = self.network.v_slack_pu**2
        if u_fixed is None:
            w_prior = (2.0 * self.network.v_slack_pu * SLACK_PSEUDO_SIGMA_PU) ** -2.0
            alpha[n] += w_prior
            beta[n] += w_prior * u_prior
        w_head = np.array([w[kind == _HP].sum(), w[kind == _HQ].sum()])
        h_head = np.array([wz[kind == _HP].sum(), wz[kind == _HQ].sum()])
        gains = self._smoother.gains(var_s, alpha, w_head, fixed=u_fixed is not None)
        # the operating point: the current estimate's AC power flow (first: the priors')
        if start is None:
            v_slack = math.sqrt(u_fixed if u_fixed is not None else beta[n] / alpha[n])
            start = (np.full(n, v_slack, dtype=np.complex128), v_slack)
        v_slack = start[1] if u_fixed is None else math.sqrt(u_fixed)
        s = mu_s
        v, j = self._powerflow(s, inj, v_slack, start[0])
        iterations = 0
        while True:
            iterations += 1
            lam, kap = self._offsets(s, inj, v, j, v_slack)
            s, u_hat, _ = self._smoother.means(gains, mu_s, lam, kap, beta, h_head, u_fixed)
            v_slack = math.sqrt(u_hat[n])
            v_new, j = self._powerflow(s, inj, v_slack, v)
            moved = float(np.max(np.abs(np.abs(v_new) - np.abs(v)), initial=0.0))
            v = v_new
            if moved < V_TOL_PU or iterations >= MAX_ITERATIONS:
                break
        # residuals at the AC power flow of the estimate
        lam, _ = self._offsets(s, inj, v, j, v_slack)
        head = s[n] + lam[n] + self._send(v, j)[self._root_children].sum(axis=0)
        v_all = np.append(v, v_slack)
        predicted = np.empty(len(node))
        estimate_var = np.empty(len(node))
        for code, values, variances in (
            (_P, s[:, 0], gains.var_load[:, 0]),
            (_Q, s[:, 1], gains.var_load[:, 1]),
            (_V, np.abs(v_all) ** 2, gains.cov[:, 2, 2]),
        ):
            sel = kind == code
            predicted[sel] = values[node[sel]]
            estimate_var[sel] = variances[node[sel]]
        for code, col in ((_HP, 0), (_HQ, 1)):
            sel = kind == code
            predicted[sel] = head[col]
            estimate_var[sel] = gains.cov[n, col, col]
        residual = readings.value[keep] - predicted
        omega = 1.0 / w - estimate_var
        testable = omega > OMEGA_MIN / w
        normalized = np.zeros(len(readings.node))
        normalized[keep] = np.where(
            testable, np.abs(residual) / np.sqrt(np.where(testable, omega, 1.0)), 0.0
        )
        pseudo_sse = float(np.sum((s - mu0) ** 2 / var0))
        if u_fixed is None:
            pseudo_sse += float(w_prior * (u_hat[n] - u_prior) ** 2)
        return _Fit(
            s=s,
            v=v,
            v_slack=v_slack,
            v_all=v_all,
            var_u=np.maximum(gains.cov[:, 2, 2], 0.0),
            normalized=normalized,
            weighted_sse=float(np.sum(w * residual**2)) + pseudo_sse,
            iterations=iterations,
        )

    # -- the AC operating point ----------------------------------------------------------------

    def _powerflow(
        self, s: FloatArray, inj: ComplexArray, v_slack: float, v: ComplexArray
    ) -> tuple[ComplexArray, ComplexArray]:
        """Backward/forward sweep from `v` (optimizer.powerflow's, by triangular solves):
        bus voltages and branch currents at loads `s` less `inj` (p.u.)."""
        n = self._n
        if n == 0:
            return v, v
        load = (s[:n, 0] + 1j * s[:n, 1]) - inj[:n]
        y = self._y[:n]
        j = v
        for _ in range(50):
            j = self._tri(np.conj(load / v) + y * v, trans="N")
            v_new = self._tri(v_slack * self._root_gain - self._z * j, trans="T")
            step = float(np.max(np.abs(v_new - v)))
            v = v_new
            if step < SWEEP_TOL_PU:
                break
        j = self._tri(np.conj(load / v) + y * v, trans="N")
        return v, j

    def _tri(self, rhs: ComplexArray, *, trans: str) -> ComplexArray:
        both = self._sweep.solve(np.column_stack([rhs.real, rhs.imag]), trans=trans)
        return np.asarray(both[:, 0] + 1j * both[:, 1])

    def _send(self, v: ComplexArray, j: ComplexArray) -> FloatArray:
        """Each branch's sending-end flow (p.u., as columns P, Q)."""
        s_send = (v + self._z * j) * np.conj(j)
        return np.column_stack([s_send.real, s_send.imag])

    def _offsets(
        self, s: FloatArray, inj: ComplexArray, v: ComplexArray, j: ComplexArray, v_slack: float
    ) -> tuple[FloatArray, FloatArray]:
        """λ (per node, P and Q) and κ (per branch) at this operating point."""
        n = self._n
        mag2 = np.append(np.abs(v) ** 2, v_slack * v_slack)
        extra = np.conj(self._y) * mag2 - inj
        extra[:n] += self._z * np.abs(j) ** 2
        lam = np.column_stack([extra.real, extra.imag])
        kap = np.abs(self._z) ** 2 * np.abs(j) ** 2
        return lam, kap


@dataclass(frozen=True, slots=True, kw_only=True)
class _Fit:
    s: FloatArray
    v: ComplexArray
    v_slack: float
    v_all: ComplexArray
    var_u: FloatArray
    normalized: FloatArray
    weighted_sse: float
    iterations: int
