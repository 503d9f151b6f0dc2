"""The rig's physics: an AC power flow of the feeder by pandapower, independent of the optimizer.

The controller under test estimates losses and voltages with its own linearised model; the rig
grades it against a full Newton–Raphson solution of the same case, so the two never share code.
Loads are the case's loads times one load scale, plus any controllable load (``add_load``) at
what it draws; every PV inverter and battery is a static generator at its bus (battery
discharge positive, charge negative). The slack bus (the substation's busbar) is held at
``slack_v_pu``: the case's (VG of its generator) until set, e.g. by an on-load tap changer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
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


class FeederPhysics:
    """A pandapower model of a MATPOWER case, re-solved as loads and DER injections change.

    Not thread-safe: one caller at a time (the rig serialises its solves).
    """

    def __init__(self, case: Path | None = None, *, load_scale: float = 1.0) -> None:
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
    def base_load_kw(self) -> float:
        """Total case load at a load scale of 1."""
        return float(self._base_load_p_mw.sum() * 1000.0)

    @property
    def load_scale(self) -> float:
        return self._load_scale

    @load_scale.setter
    def load_scale(self, scale: float) -> None:
        if not math.isfinite(scale) or scale < 0.0:
            raise ValueError(f"load scale must be a finite number >= 0, got {scale}")
        self._load_scale = scale

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
        net.load.loc[self._case_loads, "p_mw"] = self._base_load_p_mw * self._load_scale
        net.load.loc[self._case_loads, "q_mvar"] = self._base_load_q_mvar * self._load_scale
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
        )
