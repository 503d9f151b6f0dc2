"""The rig's physics: an AC power flow of the feeder by pandapower, independent of the optimizer.

The controller under test estimates losses and voltages with its own linearised model; the rig
grades it against a full Newton–Raphson solution of the same case, so the two never share code.
Loads are the case's loads times a factor per bus (``load_scale`` sets them all to one value;
``set_bus_load_factors`` sets some buses' own), plus any controllable load (``add_load``) at
what it draws; every PV inverter and battery is a static generator at its bus (battery
discharge positive, charge negative). The slack bus (the substation's busbar) is held at
``slack_v_pu``: the case's (VG of its generator) until set, e.g. by an on-load tap changer.

``impedance_factors`` builds the physics with its own line impedances: each branch
``(from_bus, to_bus)`` named has its R and X multiplied by the factors given (a transformer's
``vkr``/``vk`` so that its R and X scale alike). The case file is not touched: the controller
that reads it keeps the case's impedances, and the two disagree as a real feeder and its
model do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandapower as pp
from pandapower.converter.matpower import from_mpc

from hil.cases import case33bw_path

__all__ = ["FeederPhysics", "PhysicsError", "PhysicsState"]

_SQRT3 = math.sqrt(3.0)
_RECYCLE = {"bus_pq": True, "trafo": False, "gen": False}
"""pandapower keeps its internal model between solves; only the buses' P and Q are updated."""
_RECYCLE_GEN = {"bus_pq": True, "trafo": False, "gen": True}
"""The same, with the generators' part rebuilt too: how a new slack voltage (the external
grid's ``vm_pu``) reaches a recycled model, which ``_RECYCLE`` would leave at the old one."""
SLACK_V_RANGE_PU = (0.8, 1.2)
"""The slack voltages the physics accepts (a busbar, not a fault)."""


class PhysicsError(RuntimeError):
    """The power flow did not converge (or the case cannot be used)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhysicsState:
    """One AC power-flow solution of the feeder.

    ``head_p_kw`` is signed: positive is import from the upstream grid into the feeder.
    ``v_pu`` is keyed by the case's bus numbers (1-based, as in the MATPOWER file).
    """

    head_p_kw: float
    head_q_kvar: float
    head_v_pu: float
    head_v_ll_v: float
    head_a: float
    v_pu: dict[int, float]
    v_min_pu: float
    v_min_bus: int
    losses_kw: float
    load_kw: float
    der_kw: float
    bus_p_kw: dict[int, float] = field(default_factory=dict)
    """The true load of each bus's customers (kW, consumption positive): the case's loads as
    the physics scaled them, without the DERs and controllable loads at the bus; every bus of
    the case, 0 where it has no load. What a state estimate is graded against."""
    bus_q_kvar: dict[int, float] = field(default_factory=dict)
    """Likewise reactive (kvar)."""


class FeederPhysics:
    """A pandapower model of a MATPOWER case, re-solved as loads and DER injections change.

    Not thread-safe: one caller at a time (the rig serialises its solves).
    """

    def __init__(
        self,
        case: Path | None = None,
        *,
        load_scale: float = 1.0,
        impedance_factors: Mapping[tuple[int, int], tuple[float, float]] | None = None,
    ) -> None:
        path = case if case is not None else case33bw_path()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas FutureWarnings from inside the converter
            net = from_mpc(str(path), f_hz=50)
        if len(net.ext_grid) != 1:
            raise PhysicsError(f"{path.name}: expected one slack bus, found {len(net.ext_grid)}")
        self._net = net
        # from_mpc indexes buses by the case's bus number minus one
        self._bus_numbers = tuple(int(i) + 1 for i in net.bus.index)
        self._bus_index = np.asarray(net.bus.index)
        self._head_bus = int(net.ext_grid.bus.iloc[0])
        self._head_vn_kv = float(net.bus.vn_kv.at[self._head_bus])
        self._case_loads = net.load.index.copy()
        self._base_load_p_mw = net.load.p_mw.to_numpy(dtype=float, copy=True)
        self._base_load_q_mvar = net.load.q_mvar.to_numpy(dtype=float, copy=True)
        self._load_bus_numbers = net.load.bus.to_numpy(dtype=int) + 1
        self._load_factor = np.full(len(self._case_loads), float(load_scale))
        self._check_factor(load_scale, "load scale")
        self._branches = self._branch_list()
        if impedance_factors:
            self._scale_impedances(impedance_factors)
        self._sgen: dict[str, int] = {}
        self._loads: dict[str, int] = {}
        self._load_scale = load_scale
        self._solved_once = False
        self._slack_changed = False

    @property
    def buses(self) -> tuple[int, ...]:
        """The case's bus numbers."""
        return self._bus_numbers

    @property
    def head_bus(self) -> int:
        return self._head_bus + 1

    @property
    def head_vn_kv(self) -> float:
        """Nominal line-line voltage of the slack bus."""
        return self._head_vn_kv

    @property
    def bus_vn_kv(self) -> dict[int, float]:
        """Each bus's nominal line-line voltage (kV)."""
        return {
            int(i) + 1: float(v)
            for i, v in zip(self._net.bus.index, self._net.bus.vn_kv, strict=True)
        }

    @property
    def base_load_kw(self) -> float:
        """Total case load at a load scale of 1."""
        return float(self._base_load_p_mw.sum() * 1000.0)

    @property
    def load_scale(self) -> float:
        """The one factor last set for every bus, or after ``set_bus_load_factors`` the
        load-weighted mean factor (total load over the case's total)."""
        return self._load_scale

    @load_scale.setter
    def load_scale(self, scale: float) -> None:
        self._check_factor(scale, "load scale")
        self._load_scale = scale
        self._load_factor.fill(scale)

    @property
    def load_buses(self) -> tuple[int, ...]:
        """The buses with a load in the case (sorted, once each)."""
        return tuple(sorted({int(b) for b in self._load_bus_numbers}))

    @property
    def base_bus_load_kw(self) -> dict[int, float]:
        """Each load bus's case load (kW) at a factor of 1."""
        out: dict[int, float] = {}
        for bus, p_mw in zip(self._load_bus_numbers, self._base_load_p_mw, strict=True):
            out[int(bus)] = out.get(int(bus), 0.0) + float(p_mw) * 1000.0
        return out

    def set_bus_load_factors(self, factors: Mapping[int, float]) -> None:
        """Set the load factor of each bus named (the case's load there times it); buses not
        named keep theirs. A bus without a case load is refused."""
        known = set(self.load_buses)
        for bus, factor in factors.items():
            if bus not in known:
                raise ValueError(f"bus {bus} has no load in the case")
            self._check_factor(factor, f"load factor of bus {bus}")
        for i, bus in enumerate(self._load_bus_numbers):
            if int(bus) in factors:
                self._load_factor[i] = float(factors[int(bus)])
        base = self._base_load_p_mw.sum()
        if base > 0:
            self._load_scale = float((self._base_load_p_mw * self._load_factor).sum() / base)

    @staticmethod
    def _check_factor(value: float, what: str) -> None:
        if not math.isfinite(value) or value < 0.0:
            raise ValueError(f"{what} must be a finite number >= 0, got {value}")

    # --- impedances --------------------------------------------------------------------------

    @property
    def branches(self) -> tuple[tuple[int, int], ...]:
        """The case's branches as ``(from_bus, to_bus)``: lines first, then transformers."""
        return self._branches

    def impedance_ohm(self, branch: tuple[int, int]) -> tuple[float, float]:
        """The physics' series R and X of ``branch`` (ohms; a transformer's on its LV side)."""
        net = self._net
        f, t = branch[0] - 1, branch[1] - 1
        lines = net.line[(net.line.from_bus == f) & (net.line.to_bus == t)]
        if len(lines):
            row = lines.iloc[0]
            length = float(row.length_km) / float(row.parallel)
            return float(row.r_ohm_per_km) * length, float(row.x_ohm_per_km) * length
        trafos = net.trafo[(net.trafo.hv_bus == f) & (net.trafo.lv_bus == t)]
        if not len(trafos):
            raise KeyError(f"no branch {branch}")
        row = trafos.iloc[0]
        z_base = float(row.vn_lv_kv) ** 2 / float(row.sn_mva)
        vk, vkr = float(row.vk_percent), float(row.vkr_percent)
        return vkr / 100.0 * z_base, math.sqrt(max(vk**2 - vkr**2, 0.0)) / 100.0 * z_base

    def _branch_list(self) -> tuple[tuple[int, int], ...]:
        net = self._net
        lines = [
            (int(f) + 1, int(t) + 1)
            for f, t in zip(net.line.from_bus, net.line.to_bus, strict=True)
        ]
        trafos = [
            (int(f) + 1, int(t) + 1)
            for f, t in zip(net.trafo.hv_bus, net.trafo.lv_bus, strict=True)
        ]
        return (*lines, *trafos)

    def _scale_impedances(self, factors: Mapping[tuple[int, int], tuple[float, float]]) -> None:
        """Multiply the named branches' R and X by their factors (see the module docstring)."""
        unknown = sorted(set(factors) - set(self._branches))
        if unknown:
            raise ValueError(f"impedance_factors: no branch {unknown[0]} in the case")
        net = self._net
        for (f_bus, t_bus), (fr, fx) in factors.items():
            if not (math.isfinite(fr) and math.isfinite(fx) and fr > 0 and fx > 0):
                raise ValueError(f"impedance factors of branch {(f_bus, t_bus)} must be > 0")
            f, t = f_bus - 1, t_bus - 1
            mask = (net.line.from_bus == f) & (net.line.to_bus == t)
            net.line.loc[mask, "r_ohm_per_km"] *= fr
            net.line.loc[mask, "x_ohm_per_km"] *= fx
            tmask = (net.trafo.hv_bus == f) & (net.trafo.lv_bus == t)
            for idx in net.trafo.index[tmask]:
                vk, vkr = (
                    float(net.trafo.at[idx, "vk_percent"]),
                    float(net.trafo.at[idx, "vkr_percent"]),
                )
                vkx = math.sqrt(max(vk**2 - vkr**2, 0.0)) * fx
                net.trafo.at[idx, "vkr_percent"] = vkr * fr
                net.trafo.at[idx, "vk_percent"] = math.hypot(vkr * fr, vkx)

    @property
    def slack_v_pu(self) -> float:
        """The slack bus's voltage magnitude (p.u. of its base): the case's until set."""
        return float(self._net.ext_grid.vm_pu.iloc[0])

    @slack_v_pu.setter
    def slack_v_pu(self, v_pu: float) -> None:
        low, high = SLACK_V_RANGE_PU
        if not (math.isfinite(v_pu) and low <= v_pu <= high):
            raise ValueError(f"slack voltage must be within {low:g}..{high:g} p.u., got {v_pu}")
        if v_pu != self.slack_v_pu:
            self._net.ext_grid.at[self._net.ext_grid.index[0], "vm_pu"] = v_pu
            self._slack_changed = True  # the next recycled solve rebuilds the generators' part

    def add_der(self, name: str, bus: int) -> None:
        """Add a static generator ``name`` at case bus ``bus`` (initially 0 kW)."""
        if name in self._sgen:
            raise ValueError(f"DER {name!r} already exists")
        if bus not in self._bus_numbers:
            raise ValueError(f"DER {name!r}: bus {bus} is not in the case")
        self._sgen[name] = int(pp.create_sgen(self._net, bus - 1, p_mw=0.0, q_mvar=0.0, name=name))
        self._solved_once = False  # a new element: the next solve builds the model afresh

    def set_der(self, name: str, p_kw: float, q_kvar: float = 0.0) -> None:
        """Set a DER's injection: positive ``p_kw`` feeds the grid (PV, battery discharge)."""
        idx = self._sgen[name]
        self._net.sgen.at[idx, "p_mw"] = p_kw / 1000.0
        self._net.sgen.at[idx, "q_mvar"] = q_kvar / 1000.0

    def add_load(self, name: str, bus: int) -> None:
        """Add a controllable load ``name`` at case bus ``bus`` (initially 0 kW), not scaled."""
        if name in self._loads or name in self._sgen:
            raise ValueError(f"device {name!r} already exists")
        if bus not in self._bus_numbers:
            raise ValueError(f"load {name!r}: bus {bus} is not in the case")
        self._loads[name] = int(pp.create_load(self._net, bus - 1, p_mw=0.0, name=name))
        self._solved_once = False

    def set_load(self, name: str, p_kw: float, q_kvar: float = 0.0) -> None:
        """Set what a controllable load draws (positive ``p_kw`` is consumed)."""
        idx = self._loads[name]
        self._net.load.at[idx, "p_mw"] = p_kw / 1000.0
        self._net.load.at[idx, "q_mvar"] = q_kvar / 1000.0

    def solve(self) -> PhysicsState:
        """Run the AC power flow (warm-started from the last solution) and return its state."""
        net = self._net
        net.load.loc[self._case_loads, "p_mw"] = self._base_load_p_mw * self._load_factor
        net.load.loc[self._case_loads, "q_mvar"] = self._base_load_q_mvar * self._load_factor
        try:
            if self._solved_once:  # same elements, new powers: reuse the model of the last solve
                recycle = _RECYCLE_GEN if self._slack_changed else _RECYCLE
                pp.runpp(net, numba=False, init="results", recycle=recycle)
            else:
                pp.runpp(net, numba=False, init="auto")
        except pp.LoadflowNotConverged:
            try:  # a bad warm start: once more from a flat start
                pp.runpp(net, numba=False, init="flat")
            except pp.LoadflowNotConverged as err:
                self._solved_once = False
                raise PhysicsError("AC power flow did not converge") from err
        self._solved_once = True
        self._slack_changed = False
        return self._state()

    def _state(self) -> PhysicsState:
        net = self._net
        head_p_mw = float(net.res_ext_grid.p_mw.iloc[0])
        head_q_mvar = float(net.res_ext_grid.q_mvar.iloc[0])
        vm = net.res_bus.vm_pu.to_numpy(dtype=float)
        head_v_pu = float(net.res_bus.vm_pu.at[self._head_bus])
        head_v_ll_v = head_v_pu * self._head_vn_kv * 1000.0
        head_a = math.hypot(head_p_mw, head_q_mvar) * 1e6 / (_SQRT3 * head_v_ll_v)
        load_mw = float(net.load.p_mw.sum())
        der_mw = float(net.sgen.p_mw.sum()) if len(net.sgen) else 0.0
        i_min = int(np.argmin(vm))
        bus_p = dict.fromkeys(self._bus_numbers, 0.0)
        bus_q = dict.fromkeys(self._bus_numbers, 0.0)
        p_kw = self._base_load_p_mw * self._load_factor * 1000.0
        q_kvar = self._base_load_q_mvar * self._load_factor * 1000.0
        for bus, p, q in zip(self._load_bus_numbers, p_kw, q_kvar, strict=True):
            bus_p[int(bus)] += float(p)
            bus_q[int(bus)] += float(q)
        return PhysicsState(
            head_p_kw=head_p_mw * 1000.0,
            head_q_kvar=head_q_mvar * 1000.0,
            head_v_pu=head_v_pu,
            head_v_ll_v=head_v_ll_v,
            head_a=head_a,
            v_pu={int(b) + 1: float(v) for b, v in zip(self._bus_index, vm, strict=True)},
            v_min_pu=float(vm[i_min]),
            v_min_bus=int(self._bus_index[i_min]) + 1,
            losses_kw=(head_p_mw + der_mw - load_mw) * 1000.0,
            load_kw=load_mw * 1000.0,
            der_kw=der_mw * 1000.0,
            bus_p_kw=bus_p,
            bus_q_kvar=bus_q,
        )
