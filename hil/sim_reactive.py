"""The reactive-power rules of the simulated PV inverter (``hil.sim_devices.SimInverter``).

Pure: functions of the control model's point values (``get(point)``), the inverter's output and
ratings; the clock is the caller's. Reactive power is in kvar, positive when the inverter
injects vars (over-excited, raising the voltage), negative when it absorbs them.

Fixed modes, model 123
    ``VArPct_Ena = 1`` with ``VArPct_Mod`` 1 (``VArWMaxPct`` % of WMax), 2 (``VArMaxPct`` % of
    the var capability) or 3 (``VArAvalPct`` % of the vars the kVA circle leaves); 0 (none)
    asks for nothing. ``OutPFSet_Ena = 1``: a fixed power factor, ``OutPFSet`` positive =
    injecting. Fixed vars win over the power factor when both are enabled.

Fixed modes, model 704
    ``VarSetEna = 1`` with ``VarSetMod`` 0 (``VarSetPct`` % of WMax), 1 (% of the var
    capability), 2 (% of the available vars), 3 (% of VAMax) or 4 (``VarSet`` in var).
    ``PFWInjEna = 1``: ``PFWInj.PF`` while injecting active power, ``PFWInj.Ext`` 0 over-excited
    (injecting vars), 1 under-excited (absorbing). ``VarSetPri`` must be 0: the simulated
    inverter has active-power priority only.

Every mode has a revert timer (``RevertingControl``): when its ``*RvrtTms`` is > 0 and no write
to its points came for that long, model 123 disables it, model 704 takes its ``*Rvrt`` values.
The inverter's limits: ``|q| <= min(var_max, sqrt(S² - p²))`` with active-power priority (it
gives up vars, never watts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from devices.sunspec import Value

__all__ = [
    "CONTROLS",
    "RevertTimers",
    "RevertingControl",
    "accepts_reactive",
    "fixed_q_kvar",
    "within_kva",
]

Get = Callable[[str], Value]


@dataclass(frozen=True, slots=True)
class RevertingControl:
    """A reactive mode with a revert timer: a write to any of ``points`` restarts it; when it
    lapses while ``enable`` is 1, ``revert(get)`` gives the values the mode takes."""

    points: frozenset[str]
    enable: str
    revert_tms: str
    revert: Callable[[Get], dict[str, Value]]


def _rvrt_704(enable: str, pairs: tuple[tuple[str, str], ...]) -> Callable[[Get], dict[str, Value]]:
    """Model 704: the enable takes ``<enable>Rvrt``, each point its revert twin (where set)."""

    def revert(get: Get) -> dict[str, Value]:
        out: dict[str, Value] = {enable: 1 if get(f"{enable}Rvrt") == 1 else 0}
        out.update({point: get(twin) for point, twin in pairs if get(twin) is not None})
        return out

    return revert


CONTROLS: dict[int, tuple[RevertingControl, ...]] = {
    123: (
        RevertingControl(
            frozenset(
                (
                    "VArWMaxPct",
                    "VArMaxPct",
                    "VArAvalPct",
                    "VArPct_WinTms",
                    "VArPct_RvrtTms",
                    "VArPct_RmpTms",
                    "VArPct_Mod",
                    "VArPct_Ena",
                )
            ),
            "VArPct_Ena",
            "VArPct_RvrtTms",
            lambda _get: {"VArPct_Ena": 0},
        ),
        RevertingControl(
            frozenset(
                (
                    "OutPFSet",
                    "OutPFSet_WinTms",
                    "OutPFSet_RvrtTms",
                    "OutPFSet_RmpTms",
                    "OutPFSet_Ena",
                )
            ),
            "OutPFSet_Ena",
            "OutPFSet_RvrtTms",
            lambda _get: {"OutPFSet_Ena": 0},
        ),
    ),
    704: (
        RevertingControl(
            frozenset(
                (
                    "VarSetEna",
                    "VarSetMod",
                    "VarSetPri",
                    "VarSet",
                    "VarSetRvrt",
                    "VarSetPct",
                    "VarSetPctRvrt",
                    "VarSetEnaRvrt",
                    "VarSetRvrtTms",
                )
            ),
            "VarSetEna",
            "VarSetRvrtTms",
            _rvrt_704("VarSetEna", (("VarSetPct", "VarSetPctRvrt"), ("VarSet", "VarSetRvrt"))),
        ),
        RevertingControl(
            frozenset(
                (
                    "PFWInjEna",
                    "PFWInjEnaRvrt",
                    "PFWInjRvrtTms",
                    "PFWInj.PF",
                    "PFWInj.Ext",
                    "PFWInjRvrt.PF",
                    "PFWInjRvrt.Ext",
                )
            ),
            "PFWInjEna",
            "PFWInjRvrtTms",
            _rvrt_704(
                "PFWInjEna", (("PFWInj.PF", "PFWInjRvrt.PF"), ("PFWInj.Ext", "PFWInjRvrt.Ext"))
            ),
        ),
    ),
}
"""The reverting reactive modes of each control model."""


class RevertTimers:
    """When each reactive mode of one control model was last written (simulated seconds)."""

    def __init__(self, model_id: int) -> None:
        self.controls = CONTROLS.get(model_id, ())
        self._written_at: dict[str, float] = {}

    def wrote(self, written: set[str], now: float) -> None:
        for ctl in self.controls:
            if written & ctl.points:
                self._written_at[ctl.enable] = now

    def due(self, get: Get, now: float) -> dict[str, Value]:
        """The values of every mode whose revert time lapsed by ``now`` (its timer stops)."""
        out: dict[str, Value] = {}
        for ctl in self.controls:
            written_at = self._written_at.get(ctl.enable)
            revert_s = get(ctl.revert_tms)
            if (
                get(ctl.enable) == 1
                and isinstance(revert_s, int)
                and revert_s > 0
                and written_at is not None
                and now - written_at >= revert_s
            ):
                out.update(ctl.revert(get))
                del self._written_at[ctl.enable]
        return out


def _num(value: Value) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _pf_q(p_kw: float, pf: float | None, injecting: bool) -> float | None:
    """The vars of power factor ``|pf|`` at ``p_kw``, signed by ``injecting``."""
    if pf is None or not 0.0 < abs(pf) <= 1.0:
        return None
    q = max(p_kw, 0.0) * math.tan(math.acos(min(abs(pf), 1.0)))
    return q if injecting else -q


def fixed_q_kvar(
    model_id: int,
    get: Get,
    *,
    p_kw: float,
    w_max_kw: float,
    s_max_kva: float,
    var_max_kvar: float,
) -> float | None:
    """What the fixed reactive mode in force asks for (kvar), ``None`` when none is enabled."""
    aval = math.sqrt(max(s_max_kva**2 - p_kw**2, 0.0))
    if model_id == 123:
        if get("VArPct_Ena") == 1:
            base = {1: ("VArWMaxPct", w_max_kw), 2: ("VArMaxPct", var_max_kvar)}
            base[3] = ("VArAvalPct", aval)
            mode = get("VArPct_Mod")
            if isinstance(mode, int) and mode in base:
                point, full = base[mode]
                pct = _num(get(point))
                return None if pct is None else pct / 100.0 * full
        if get("OutPFSet_Ena") == 1:
            pf = _num(get("OutPFSet"))
            return _pf_q(p_kw, pf, injecting=pf is not None and pf > 0)
        return None
    if model_id == 704:
        if get("VarSetEna") == 1:
            mode = get("VarSetMod")
            if mode == 4:
                var = _num(get("VarSet"))
                return None if var is None else var / 1000.0
            fulls = {0: w_max_kw, 1: var_max_kvar, 2: aval, 3: s_max_kva}
            pct = _num(get("VarSetPct"))
            if isinstance(mode, int) and mode in fulls and pct is not None:
                return pct / 100.0 * fulls[mode]
        if get("PFWInjEna") == 1:
            return _pf_q(p_kw, _num(get("PFWInj.PF")), injecting=get("PFWInj.Ext") == 0)
    return None


def within_kva(q_kvar: float, *, p_kw: float, s_max_kva: float, var_max_kvar: float) -> float:
    """``q_kvar`` inside ``±min(var_max, sqrt(S² - p²))``: active-power priority."""
    limit = min(var_max_kvar, math.sqrt(max(s_max_kva**2 - p_kw**2, 0.0)))
    return min(max(q_kvar, -limit), limit)


def _within(value: Value, lo: float, hi: float) -> bool:
    return isinstance(value, int | float) and lo <= value <= hi


def _pf(value: Value) -> bool:
    return isinstance(value, int | float) and 0.0 < abs(value) <= 1.0


def accepts_reactive(
    model_id: int, candidate: Mapping[str, Value], written: set[str], *, s_max_kva: float
) -> bool:
    """Whether the reactive points among ``written`` hold values this inverter takes."""
    var_w = 1000.0 * s_max_kva
    checks: dict[str, Callable[[Value], bool]]
    if model_id == 123:
        checks = {
            "VArWMaxPct": lambda v: _within(v, -100.0, 100.0),
            "VArMaxPct": lambda v: _within(v, -100.0, 100.0),
            "VArAvalPct": lambda v: _within(v, -100.0, 100.0),
            "VArPct_Mod": lambda v: v in (0, 1, 2, 3),
            "VArPct_Ena": lambda v: v in (0, 1),
            "OutPFSet": _pf,
            "OutPFSet_Ena": lambda v: v in (0, 1),
        }
    elif model_id == 704:
        checks = {
            "VarSetEna": lambda v: v in (0, 1),
            "VarSetEnaRvrt": lambda v: v in (0, 1),
            "VarSetMod": lambda v: v in (0, 1, 2, 3, 4),
            "VarSetPri": lambda v: v == 0,  # active-power priority only
            "VarSetPct": lambda v: _within(v, -100.0, 100.0),
            "VarSetPctRvrt": lambda v: _within(v, -100.0, 100.0),
            "VarSet": lambda v: _within(v, -var_w, var_w),
            "VarSetRvrt": lambda v: _within(v, -var_w, var_w),
            "PFWInjEna": lambda v: v in (0, 1),
            "PFWInjEnaRvrt": lambda v: v in (0, 1),
            "PFWInj.PF": _pf,
            "PFWInjRvrt.PF": _pf,
            "PFWInj.Ext": lambda v: v in (0, 1),
            "PFWInjRvrt.Ext": lambda v: v in (0, 1),
        }
    else:
        return True
    return all(check(candidate.get(name)) for name, check in checks.items() if name in written)
