"""Simulated SunSpec devices: a PV inverter, a battery inverter and a feeder-head meter.

Pure: no sockets; time comes from an injected ``monotonic`` (monotonic seconds). Each device holds
a register image (see ``hil.register_image``) that a Modbus server serves as is.

PV inverter (models 1, 103, 120, 123)
    Output ``p_kw = min(available_kw, WMaxLimPct % × WMax)`` while ``WMaxLim_Ena == 1`` (else
    ``available_kw``, capped at WMax); ``Conn = 0`` disconnects it (0 kW). ``WMaxLimPct_SF`` is
    −1 (0.1 % steps); limits outside 0..100 % are refused. Ramp: a limit written with
    ``WMaxLimPct_RmpTms > 0`` moves the output ceiling linearly from where it was to the new
    limit over that many seconds (0: at once). Revert (model 123 fails open): when
    ``WMaxLimPct_RvrtTms > 0`` and no write to the limit points (``WMaxLimPct`` …
    ``WMaxLim_Ena``) came for that many seconds, the limit returns to 100 % and is disabled.

    With ``control_model=704`` the chain is 1, 701, 702, 704 instead: output in 701, the limit
    in 704 (``WMaxLimPct``, ``WMaxLimPctEna``, no ramp); when ``WMaxLimPctRvrtTms`` lapses the
    limit takes ``WMaxLimPctRvrt`` and its enable ``WMaxLimPctEnaRvrt``.

    With ``volt_var=True`` the chain ends with a volt-var model, 126 (123 chain) or 705 (704
    chain), holding the IEEE 1547 category B curve, disabled (see ``hil.volt_var``).

    Reactive power ``q_kvar`` (positive = injecting vars), see ``hil.sim_reactive``: a fixed
    mode in force (123: ``VArPct_Ena`` with ``VArPct_Mod`` 1/2/3, ``OutPFSet_Ena``; 704:
    ``VarSetEna`` with ``VarSetMod`` 0-4, ``PFWInjEna``), else the volt-var curve at the
    terminal voltage the rig last set, else 0; then ``|q| <= min(var_max, sqrt(S² - p²))``
    (active-power priority). Each fixed mode reverts on its ``*RvrtTms`` like the limit (123:
    disabled; 704: its ``*Rvrt`` values). ``S`` is ``s_max_kva`` (default WMax: at full output
    no vars are left), published as 120 ``VARtg`` / 702 ``VAMax``; ``var_max_kvar`` (default
    ``S``) as 120 ``VArRtgQ1`` / 702 ``VarMaxInj``. Published: 103 ``VAr``, ``VA``, ``PF`` (%,
    signed as ``OutPFSet``: negative while absorbing) or 701 ``Var``, ``VA``, ``PF`` (signed as
    the active power, as 701 defines it); the current is ``S / (√3 V)``.

Battery inverter (models 1, 103, 120, 124)
    Power ``P`` in kW, discharge positive. With ``StorCtl_Mod`` bit 0 (charge limit) set,
    ``P ≥ −InWRte % × WChaMax``; with bit 1 (discharge limit) set, ``P ≤ OutWRte % × WChaMax``;
    ``P`` always stays within ``±WChaMax``. The battery's own preference is idle, so it sits at
    the point of that interval nearest 0 (an empty interval means idle too):
    ``OutWRte = x, InWRte = −x`` (x ≥ 0) forces discharge at x %, ``OutWRte = −c, InWRte = c``
    forces charge at c %. State of charge integrates with 95 % efficiency each way as time
    passes; discharge stops at ``MinRsvPct``, charge at 100 %. Revert: after
    ``InOutWRte_RvrtTms`` seconds (> 0) without a write to model 124, ``StorCtl_Mod`` returns to
    0 (idle); the energy up to the revert instant is integrated with the old command.

Meter (models 1, 203; or 1, 201 with ``model=201``, a single-phase meter)
    ``W`` is the power it measures, signed: at the head, positive = import into the feeder; at a
    bus, its customers' consumption; ``VAR``, ``VA``, ``PF``,
    ``A``, ``PhV`` (line-neutral), ``PPV`` (line-line), ``Hz``; ``TotWhImp``/``TotWhExp``
    accumulate. Scale factors come from the meter's range (``p_max_kw``): 5 MW gives
    ``W_SF = 3`` (1 kW steps, 0.03 % of the 33-bus feeder's load); readings beyond the range
    saturate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import ClassVar

from devices.sunspec import Value
from hil import volt_var as volt_var_sim
from hil.register_image import SimSunSpecDevice, fit_scale_factor, saturate
from hil.sim_reactive import RevertTimers, accepts_reactive, fixed_q_kvar, within_kva

__all__ = ["MANUFACTURER", "SimBattery", "SimInverter", "SimMeter"]

MANUFACTURER = "feederd-hil"
_SQRT3 = math.sqrt(3.0)
_ACC32 = 1 << 32
_HZ = 50.0

# model 103 operating states
_ST_OFF, _ST_SLEEPING, _ST_MPPT, _ST_THROTTLED, _ST_STANDBY = 1, 2, 4, 5, 8
# model 124 charge states
_CHA_EMPTY, _CHA_DISCHARGING, _CHA_CHARGING, _CHA_FULL, _CHA_HOLDING = 2, 3, 4, 5, 6
STORCTL_CHARGE = 0b01
STORCTL_DISCHARGE = 0b10


def _common(md: str, serial: str) -> dict[str, Value]:
    return {"Mn": MANUFACTURER, "Md": md, "Opt": None, "Vr": "0.1.0", "SN": serial, "DA": 1}


def _within(value: Value, lo: float, hi: float) -> bool:
    return isinstance(value, int | float) and lo <= value <= hi


class _AcDevice(SimSunSpecDevice):
    """Common model-103 bookkeeping of the two inverters (voltage, energy, scale factors)."""

    def __init__(
        self,
        name: str,
        *,
        md: str,
        bus: int,
        rating_kw: float,
        models: tuple[int, ...],
        scale_factors: Mapping[int, Mapping[str, int]],
        v_nominal_ll_v: float,
        monotonic: Callable[[], float],
        repeats: Mapping[int, Mapping[str, int]] | None = None,
    ) -> None:
        w_sf = fit_scale_factor(1200.0 * rating_kw, signed=True, min_sf=0)
        a_max = 1200.0 * rating_kw / (_SQRT3 * 0.8 * v_nominal_ll_v)
        sf103 = {
            "A_SF": fit_scale_factor(a_max, signed=False, min_sf=-2),
            "V_SF": fit_scale_factor(1.2 * v_nominal_ll_v, signed=False, min_sf=-1),
            "W_SF": w_sf,
            "Hz_SF": -2,
            "VA_SF": w_sf,
            "VAr_SF": w_sf,
            "PF_SF": -1,
            "WH_SF": 0,
        }
        super().__init__(
            name,
            models=models,
            scale_factors={**scale_factors, 103: sf103},
            monotonic=monotonic,
            repeats=repeats,
        )
        self.bus = bus
        self.rating_kw = rating_kw
        self.v_nominal_ll_v = v_nominal_ll_v
        self._v_pu = 1.0
        self._wh = 0.0
        self._energy_t = monotonic()
        self._set(1, _common(md, name))

    @property
    def p_kw(self) -> float:
        raise NotImplementedError

    @property
    def v_pu(self) -> float:
        return self._v_pu

    def set_voltage(self, v_pu: float) -> None:
        """The grid voltage at the device's bus (per unit), as the physics last solved it."""
        self._v_pu = v_pu
        self._publish()

    def _publish(self) -> None:
        raise NotImplementedError

    def _accumulate_energy(self, now: float) -> None:
        self._wh += max(self.p_kw, 0.0) * 1000.0 * max(now - self._energy_t, 0.0) / 3600.0
        self._energy_t = now

    def _publish_103(self, st: int, q_kvar: float = 0.0) -> None:
        p_w, q_var = self.p_kw * 1000.0, q_kvar * 1000.0
        s_va = math.hypot(p_w, q_var)
        v_ll = self._v_pu * self.v_nominal_ll_v
        amps = s_va / (_SQRT3 * v_ll) if v_ll > 0 else 0.0
        # PF in %, its sign that of OutPFSet: negative while absorbing vars
        pf = 100.0 if s_va <= 0.0 else math.copysign(100.0 * abs(p_w) / s_va, q_var)
        sf = self._sf[103]
        wh = int(self._wh) % _ACC32
        self._set(
            103,
            {
                "A": amps,
                "AphA": amps,
                "AphB": amps,
                "AphC": amps,
                "PPVphAB": v_ll,
                "PPVphBC": v_ll,
                "PPVphCA": v_ll,
                "PhVphA": v_ll / _SQRT3,
                "PhVphB": v_ll / _SQRT3,
                "PhVphC": v_ll / _SQRT3,
                "W": saturate(p_w, sf["W_SF"], signed=True),
                "Hz": _HZ,
                "VA": saturate(s_va, sf["VA_SF"], signed=True),
                "VAr": saturate(q_var, sf["VAr_SF"], signed=True),
                "PF": pf if q_var < 0.0 else abs(pf),
                "WH": wh if wh else None,
                "St": st,
                "Evt1": 0,
                "Evt2": 0,
            },
        )


# The active-power-limit points of each control model: (limit %, enable, revert seconds, ramp).
_LIMIT_POINTS: dict[int, tuple[str, str, str, str | None]] = {
    123: ("WMaxLimPct", "WMaxLim_Ena", "WMaxLimPct_RvrtTms", "WMaxLimPct_RmpTms"),
    704: ("WMaxLimPct", "WMaxLimPctEna", "WMaxLimPctRvrtTms", None),
}
_CHAINS: dict[int, tuple[int, ...]] = {123: (1, 103, 120, 123), 704: (1, 701, 702, 704)}
# model 701 states: St (0 off, 1 on), InvSt (1 sleeping, 3 running, 4 throttled)
_701_ON, _701_SLEEPING, _701_RUNNING, _701_THROTTLED = 1, 1, 3, 4


class SimInverter(_AcDevice):
    """A PV inverter with an active-power limit that reverts on its timer: model 123 (fails
    open to 100 %) or, with ``control_model=704``, the 700-series chain whose limit reverts to
    its explicit value (``WMaxLimPctRvrt`` enabled as ``WMaxLimPctEnaRvrt`` says)."""

    kind: ClassVar[str] = "pv"

    def __init__(
        self,
        name: str,
        bus: int,
        w_max_kw: float,
        *,
        available_kw: float = 0.0,
        v_nominal_ll_v: float = 12660.0,
        monotonic: Callable[[], float] = time.monotonic,
        control_model: int = 123,
        volt_var: bool = False,
        s_max_kva: float | None = None,
        var_max_kvar: float | None = None,
    ) -> None:
        if w_max_kw <= 0:
            raise ValueError(f"{name}: w_max_kw must be > 0, got {w_max_kw}")
        s_max = w_max_kw if s_max_kva is None else s_max_kva
        var_max = s_max if var_max_kvar is None else var_max_kvar
        if not (math.isfinite(s_max) and s_max > 0 and math.isfinite(var_max) and var_max >= 0):
            raise ValueError(f"{name}: s_max_kva must be > 0 and var_max_kvar >= 0")
        if control_model not in _CHAINS:
            raise ValueError(f"{name}: control_model must be 123 or 704, got {control_model}")
        vv_model = (126 if control_model == 123 else 705) if volt_var else None
        rating_sf = fit_scale_factor(1000.0 * max(w_max_kw, s_max), signed=False, min_sf=0)
        w_sf = fit_scale_factor(1200.0 * w_max_kw, signed=True, min_sf=0)
        a_max = 1200.0 * w_max_kw / (_SQRT3 * 0.8 * v_nominal_ll_v)
        super().__init__(
            name,
            md="PV",
            bus=bus,
            rating_kw=w_max_kw,
            models=_CHAINS[control_model] + ((vv_model,) if vv_model else ()),
            scale_factors={
                **volt_var_sim.SCALE_FACTORS,
                120: {
                    "WRtg_SF": rating_sf,
                    "VARtg_SF": rating_sf,
                    "VArRtg_SF": fit_scale_factor(1000.0 * var_max, signed=True, min_sf=0),
                },
                123: {"WMaxLimPct_SF": -1, "OutPFSet_SF": -3, "VArPct_SF": -1},
                701: {
                    "A_SF": fit_scale_factor(a_max, signed=False, min_sf=-2),
                    "V_SF": fit_scale_factor(1.2 * v_nominal_ll_v, signed=False, min_sf=-1),
                    "Hz_SF": -2,
                    "W_SF": w_sf,
                    "PF_SF": -3,
                    "VA_SF": w_sf,
                    "Var_SF": w_sf,
                    "TotWh_SF": 0,
                },
                702: {"W_SF": rating_sf, "VA_SF": rating_sf, "Var_SF": rating_sf},
                704: {
                    "WMaxLimPct_SF": -1,
                    "WSet_SF": w_sf,
                    "WSetPct_SF": -1,
                    "PF_SF": -3,
                    "VarSet_SF": w_sf,
                    "VarSetPct_SF": -1,
                },
            },
            v_nominal_ll_v=v_nominal_ll_v,
            monotonic=monotonic,
            repeats=volt_var_sim.REPEATS,
        )
        self.control_model = control_model
        self.volt_var_model = vv_model
        """126 (123 chain) or 705 (704 chain) when the inverter has a volt-var curve."""
        if vv_model is not None:
            self._set(vv_model, volt_var_sim.initial_values(vv_model))
        self._pct, self._ena, self._rvrt, self._rmp = _LIMIT_POINTS[control_model]
        self.w_max_kw = w_max_kw
        self.s_max_kva = s_max
        self.var_max_kvar = var_max
        self._q_timers = RevertTimers(control_model)
        self._available_kw = max(0.0, available_kw)
        self._limit_written_at: float | None = None
        self._ramp: tuple[float, float, float] | None = None
        """(ceiling % at the ramp's start, start time, ramp seconds) while a ramp runs."""
        self._ceiling_before_write = 100.0
        if control_model == 704:
            self._init_700_series()
        else:
            self._init_123()
        self._publish()

    def _init_700_series(self) -> None:
        w = 1000.0 * self.w_max_kw
        va, var = 1000.0 * self.s_max_kva, 1000.0 * self.var_max_kvar
        self._set(
            702,
            {
                "WMaxRtg": w,
                "VAMaxRtg": va,
                "WMax": w,
                "VAMax": va,
                "VarMaxInjRtg": var,
                "VarMaxAbsRtg": var,
                "VarMaxInj": var,
                "VarMaxAbs": var,
            },
        )
        self._set(
            704,
            {
                "WMaxLimPctEna": 0,
                "WMaxLimPct": 100.0,
                "WMaxLimPctRvrt": 100.0,
                "WMaxLimPctEnaRvrt": 0,
                "WMaxLimPctRvrtTms": 0,
                "WSetEna": 0,
                "VarSetEna": 0,
                "VarSetMod": 0,
                "VarSetPri": 0,
                "VarSet": 0.0,
                "VarSetRvrt": 0.0,
                "VarSetPct": 0.0,
                "VarSetPctRvrt": 0.0,
                "VarSetEnaRvrt": 0,
                "VarSetRvrtTms": 0,
                "PFWInjEna": 0,
                "PFWInjEnaRvrt": 0,
                "PFWInjRvrtTms": 0,
                "PFWInj.PF": 1.0,
                "PFWInj.Ext": 0,
                "PFWInjRvrt.PF": 1.0,
                "PFWInjRvrt.Ext": 0,
                "PFWAbsEna": 0,
                "AntiIslEna": 0,
            },
        )

    def _init_123(self) -> None:
        w = 1000.0 * self.w_max_kw
        var = 1000.0 * self.var_max_kvar
        self._set(
            120,
            {
                "DERTyp": 4,
                "WRtg": w,
                "VARtg": 1000.0 * self.s_max_kva,
                "VArRtgQ1": var,
                "VArRtgQ4": -var,
            },
        )
        self._set(
            123,
            {
                "Conn_WinTms": 0,
                "Conn_RvrtTms": 0,
                "Conn": 1,
                "WMaxLimPct": 100.0,
                "WMaxLimPct_WinTms": 0,
                "WMaxLimPct_RvrtTms": 0,
                "WMaxLimPct_RmpTms": 0,
                "WMaxLim_Ena": 0,
                "OutPFSet": 1.0,
                "OutPFSet_WinTms": 0,
                "OutPFSet_RvrtTms": 0,
                "OutPFSet_RmpTms": 0,
                "OutPFSet_Ena": 0,
                "VArWMaxPct": 0.0,
                "VArMaxPct": 0.0,
                "VArAvalPct": 0.0,
                "VArPct_WinTms": 0,
                "VArPct_RvrtTms": 0,
                "VArPct_RmpTms": 0,
                "VArPct_Mod": 1,
                "VArPct_Ena": 0,
            },
        )

    # --- state -----------------------------------------------------------------------------

    @property
    def available_kw(self) -> float:
        return self._available_kw

    @property
    def limit_pct(self) -> float:
        value = self._get(self.control_model, self._pct)
        return float(value) if isinstance(value, int | float) else 100.0

    @property
    def limit_enabled(self) -> bool:
        return self._get(self.control_model, self._ena) == 1

    @property
    def connected(self) -> bool:
        return self.control_model != 123 or self._get(123, "Conn") != 0

    @property
    def p_kw(self) -> float:
        if not self.connected:
            return 0.0
        ceiling = self.w_max_kw * self.ceiling_pct / 100.0
        return min(self._available_kw, self.w_max_kw, ceiling)

    @property
    def ceiling_pct(self) -> float:
        """The output ceiling now, % of WMax: the enabled limit, part way there while ramping."""
        target = self.limit_pct if self.limit_enabled else 100.0
        if self._ramp is None:
            return target
        start_pct, started, ramp_s = self._ramp
        done = (self.monotonic() - started) / ramp_s
        if done >= 1.0:
            return target
        return start_pct + (target - start_pct) * max(done, 0.0)

    @property
    def curtailed_kw(self) -> float:
        return min(self._available_kw, self.w_max_kw) - self.p_kw

    @property
    def q_kvar(self) -> float:
        """Reactive power now (kvar, positive = injecting): the fixed mode in force, else the
        volt-var curve, else 0, within ``±min(var_max, sqrt(S² - p²))``; 0 disconnected."""
        if not self.connected:
            return 0.0
        p = self.p_kw
        q = fixed_q_kvar(
            self.control_model,
            lambda point: self._get(self.control_model, point),
            p_kw=p,
            w_max_kw=self.w_max_kw,
            s_max_kva=self.s_max_kva,
            var_max_kvar=self.var_max_kvar,
        )
        if q is None:
            q = self._volt_var_q_kvar()
        return within_kva(
            q or 0.0, p_kw=p, s_max_kva=self.s_max_kva, var_max_kvar=self.var_max_kvar
        )

    def _volt_var_q_kvar(self) -> float | None:
        """The vars the volt-var curve asks for at the terminal voltage the rig last set
        (% of WMax × WMax, positive = injecting), ``None`` while no curve is enabled. Before the
        kVA limit: ``q_kvar`` applies it, and a fixed reactive mode wins over the curve."""
        if self.volt_var_model is None:
            return None
        q_pct = volt_var_sim.volt_var_q_pct(
            self.volt_var_model, self._values[self.volt_var_model], self._v_pu
        )
        return None if q_pct is None else q_pct / 100.0 * self.w_max_kw

    # --- the rig's side --------------------------------------------------------------------

    def update(self, *, available_kw: float | None = None, v_pu: float | None = None) -> None:
        """Advance to ``monotonic()``: apply a due revert, take new sun and grid voltage."""
        now = self.monotonic()
        self._accumulate_energy(now)
        self._check_revert(now)
        if available_kw is not None:
            self._available_kw = max(0.0, available_kw)
        if v_pu is not None:
            self._v_pu = v_pu
        self._publish()

    def _check_revert(self, now: float) -> None:
        due = self._q_timers.due(lambda point: self._get(self.control_model, point), now)
        if due:  # a fixed reactive mode lapsed (hil.sim_reactive)
            self._set(self.control_model, due)
        revert_s = self._get(self.control_model, self._rvrt)
        if (
            self.limit_enabled
            and isinstance(revert_s, int)
            and revert_s > 0
            and self._limit_written_at is not None
            and now - self._limit_written_at >= revert_s
        ):
            if self.control_model == 704:  # to the explicit revert value
                value = self._get(704, "WMaxLimPctRvrt")
                self._set(
                    704,
                    {
                        "WMaxLimPct": value if isinstance(value, int | float) else 100.0,
                        "WMaxLimPctEna": 1 if self._get(704, "WMaxLimPctEnaRvrt") == 1 else 0,
                    },
                )
            else:  # model 123 fails open
                self._set(123, {"WMaxLimPct": 100.0, "WMaxLim_Ena": 0})
            self._limit_written_at = None
            self._ramp = None

    # --- register semantics ----------------------------------------------------------------

    def _accepts(self, model_id: int, candidate: Mapping[str, Value], written: set[str]) -> bool:
        if not super()._accepts(model_id, candidate, written):
            return False
        if model_id == self.volt_var_model:
            return volt_var_sim.accepts(model_id, candidate, written)
        if not accepts_reactive(model_id, candidate, written, s_max_kva=self.s_max_kva):
            return False
        if model_id == 704:
            checks = {
                "WMaxLimPct": _within(candidate.get("WMaxLimPct"), 0.0, 100.0),
                "WMaxLimPctRvrt": _within(candidate.get("WMaxLimPctRvrt"), 0.0, 100.0),
                "WMaxLimPctEna": candidate.get("WMaxLimPctEna") in (0, 1),
                "WMaxLimPctEnaRvrt": candidate.get("WMaxLimPctEnaRvrt") in (0, 1),
            }
            return all(ok for name, ok in checks.items() if name in written)
        if model_id != 123:
            return True
        checks = {
            "WMaxLimPct": _within(candidate.get("WMaxLimPct"), 0.0, 100.0),
            "WMaxLim_Ena": candidate.get("WMaxLim_Ena") in (0, 1),
            "Conn": candidate.get("Conn") in (0, 1),
            "OutPFSet_Ena": candidate.get("OutPFSet_Ena") in (0, 1),
            "VArPct_Ena": candidate.get("VArPct_Ena") in (0, 1),
            "OutPFSet": _within(candidate.get("OutPFSet"), -1.0, 1.0),
        }
        return all(ok for name, ok in checks.items() if name in written)

    def _before_write(self, model_id: int, written: set[str]) -> None:
        now = self.monotonic()
        self._accumulate_energy(now)
        self._check_revert(now)
        self._ceiling_before_write = self.ceiling_pct

    def _after_write(self, model_id: int, written: set[str]) -> None:
        if model_id == 705 and "AdptCrvReq" in written:  # adopt the requested stored curve
            self._set(705, volt_var_sim.adopt(self._values[705]))
        limit_points = {self._pct, self._ena, self._rvrt, "WMaxLimPct_WinTms", "WMaxLimPctRvrt"}
        if self._rmp is not None:
            limit_points.add(self._rmp)
        if model_id == self.control_model:
            self._q_timers.wrote(written, self.monotonic())
        if model_id == self.control_model and written & limit_points:
            now = self.monotonic()
            self._limit_written_at = now
            ramp_s = self._get(model_id, self._rmp) if self._rmp else None
            if isinstance(ramp_s, int) and ramp_s > 0:
                self._ramp = (self._ceiling_before_write, now, float(ramp_s))
            else:
                self._ramp = None
        self._publish()

    def _publish(self) -> None:
        if self.control_model == 704:
            self._publish_701()
            return
        if not self.connected:
            st = _ST_OFF
        elif self.p_kw <= 0.0:
            st = _ST_SLEEPING
        elif self.curtailed_kw > 1e-9:
            st = _ST_THROTTLED
        else:
            st = _ST_MPPT
        self._publish_103(st, self.q_kvar)

    def _publish_701(self) -> None:
        p_w, q_var = self.p_kw * 1000.0, self.q_kvar * 1000.0
        s_va = math.hypot(p_w, q_var)
        v_ll = self._v_pu * self.v_nominal_ll_v
        sf = self._sf[701]
        if self.p_kw <= 0.0:
            inv_st = _701_SLEEPING
        elif self.curtailed_kw > 1e-9:
            inv_st = _701_THROTTLED
        else:
            inv_st = _701_RUNNING
        ceiling = min(self.ceiling_pct, 100.0)
        self._set(
            701,
            {
                "ACType": 1,  # three-phase, three wires
                "St": _701_ON,
                "InvSt": inv_st,
                "ConnSt": 1,
                "W": saturate(p_w, sf["W_SF"], signed=True),
                "VA": saturate(s_va, sf["VA_SF"], signed=True),
                "Var": saturate(q_var, sf["Var_SF"], signed=True),
                "PF": math.copysign(abs(p_w) / s_va, p_w) if s_va > 0.0 else 1.0,
                "A": s_va / (_SQRT3 * v_ll) if v_ll > 0 else 0.0,
                "LLV": v_ll,
                "LNV": v_ll / _SQRT3,
                "Hz": _HZ,
                "TotWhInj": float(int(self._wh)),
                "ThrotPct": 100.0 - ceiling if self.limit_enabled else 0.0,
            },
        )


class SimBattery(_AcDevice):
    """A battery inverter driven through model 124 (see the module docstring)."""

    kind: ClassVar[str] = "battery"

    def __init__(
        self,
        name: str,
        bus: int,
        p_max_kw: float,
        energy_kwh: float,
        soc_pct: float,
        *,
        min_reserve_pct: float = 10.0,
        efficiency: float = 0.95,
        v_nominal_ll_v: float = 12660.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if p_max_kw <= 0 or energy_kwh <= 0:
            raise ValueError(f"{name}: p_max_kw and energy_kwh must be > 0")
        if not 0.0 <= soc_pct <= 100.0:
            raise ValueError(f"{name}: soc_pct must be within 0..100, got {soc_pct}")
        if not 0.0 < efficiency <= 1.0:
            raise ValueError(f"{name}: efficiency must be within (0, 1], got {efficiency}")
        w_sf = fit_scale_factor(1000.0 * p_max_kw, signed=False, min_sf=0)
        super().__init__(
            name,
            md="Battery",
            bus=bus,
            rating_kw=p_max_kw,
            models=(1, 103, 120, 124),
            scale_factors={
                120: {
                    "WRtg_SF": w_sf,
                    "VARtg_SF": w_sf,
                    "WHRtg_SF": fit_scale_factor(1000.0 * energy_kwh, signed=False, min_sf=0),
                    "MaxChaRte_SF": w_sf,
                    "MaxDisChaRte_SF": w_sf,
                },
                124: {
                    "WChaMax_SF": w_sf,
                    "WChaDisChaGra_SF": 0,
                    "VAChaMax_SF": w_sf,
                    "MinRsvPct_SF": -1,
                    "ChaState_SF": -1,
                    "InOutWRte_SF": -1,
                },
            },
            v_nominal_ll_v=v_nominal_ll_v,
            monotonic=monotonic,
        )
        self.p_max_kw = p_max_kw
        self.energy_kwh = energy_kwh
        self.efficiency = efficiency
        self._soc_kwh = soc_pct / 100.0 * energy_kwh
        self._soc_t = monotonic()
        self._ctl_written_at: float | None = None
        p_w = 1000.0 * p_max_kw
        self._set(
            120,
            {
                "DERTyp": 82,
                "WRtg": p_w,
                "VARtg": p_w,
                "WHRtg": 1000.0 * energy_kwh,
                "MaxChaRte": p_w,
                "MaxDisChaRte": p_w,
            },
        )
        self._set(
            124,
            {
                "WChaMax": p_w,
                "WChaGra": 100,
                "WDisChaGra": 100,
                "StorCtl_Mod": 0,
                "VAChaMax": p_w,
                "MinRsvPct": min_reserve_pct,
                "OutWRte": 100.0,
                "InWRte": 100.0,
                "InOutWRte_WinTms": 0,
                "InOutWRte_RvrtTms": 0,
                "InOutWRte_RmpTms": 0,
                "ChaGriSet": 1,
            },
        )
        self._publish()

    # --- state -----------------------------------------------------------------------------

    @property
    def soc_kwh(self) -> float:
        return self._soc_kwh

    @property
    def soc_pct(self) -> float:
        return 100.0 * self._soc_kwh / self.energy_kwh

    @property
    def min_reserve_pct(self) -> float:
        value = self._get(124, "MinRsvPct")
        return float(value) if isinstance(value, int | float) else 0.0

    @property
    def storctl_mod(self) -> int:
        value = self._get(124, "StorCtl_Mod")
        return value if isinstance(value, int) else 0

    @property
    def w_cha_max_kw(self) -> float:
        value = self._get(124, "WChaMax")
        kw = float(value) / 1000.0 if isinstance(value, int | float) else self.p_max_kw
        return min(kw, self.p_max_kw)

    @property
    def commanded_kw(self) -> float:
        """The power model 124 asks for, before the state-of-charge limits."""
        w = self.w_cha_max_kw
        lo, hi = -w, w
        mod = self.storctl_mod
        in_pct, out_pct = self._get(124, "InWRte"), self._get(124, "OutWRte")
        if mod & STORCTL_CHARGE and isinstance(in_pct, int | float):
            lo = max(lo, -float(in_pct) / 100.0 * w)
        if mod & STORCTL_DISCHARGE and isinstance(out_pct, int | float):
            hi = min(hi, float(out_pct) / 100.0 * w)
        if lo > hi:
            return 0.0
        return min(max(0.0, lo), hi)

    @property
    def p_kw(self) -> float:
        """Battery power, discharge positive, after the reserve and full limits."""
        p = self.commanded_kw
        if p > 0.0 and self.soc_pct <= self.min_reserve_pct + 1e-9:
            return 0.0
        if p < 0.0 and self._soc_kwh >= self.energy_kwh - 1e-9:
            return 0.0
        return p

    # --- the rig's side --------------------------------------------------------------------

    def update(self, *, v_pu: float | None = None) -> None:
        """Advance to ``monotonic()``: integrate the state of charge and apply a due revert."""
        self._advance(self.monotonic())
        if v_pu is not None:
            self._v_pu = v_pu
        self._publish()

    def _advance(self, now: float) -> None:
        revert_s = self._get(124, "InOutWRte_RvrtTms")
        if (
            self.storctl_mod != 0
            and isinstance(revert_s, int)
            and revert_s > 0
            and self._ctl_written_at is not None
            and now >= self._ctl_written_at + revert_s
        ):
            self._integrate(self._ctl_written_at + revert_s)
            self._set(124, {"StorCtl_Mod": 0})
            self._ctl_written_at = None
        self._integrate(now)

    def _integrate(self, until: float) -> None:
        dt_h = max(until - self._soc_t, 0.0) / 3600.0
        self._accumulate_energy(until)
        self._soc_t = max(until, self._soc_t)
        p = self.p_kw
        if p > 0.0:
            floor = self.min_reserve_pct / 100.0 * self.energy_kwh
            self._soc_kwh = max(
                min(floor, self._soc_kwh), self._soc_kwh - p * dt_h / self.efficiency
            )
        elif p < 0.0:
            self._soc_kwh = min(self.energy_kwh, self._soc_kwh - p * dt_h * self.efficiency)

    # --- register semantics ----------------------------------------------------------------

    def _accepts(self, model_id: int, candidate: Mapping[str, Value], written: set[str]) -> bool:
        if not super()._accepts(model_id, candidate, written):
            return False
        if model_id != 124:
            return True
        checks = {
            "WChaMax": _within(candidate.get("WChaMax"), 0.0, 1000.0 * self.p_max_kw),
            "StorCtl_Mod": candidate.get("StorCtl_Mod") in (0, 1, 2, 3),
            "MinRsvPct": _within(candidate.get("MinRsvPct"), 0.0, 100.0),
            "OutWRte": _within(candidate.get("OutWRte"), -100.0, 100.0),
            "InWRte": _within(candidate.get("InWRte"), -100.0, 100.0),
            "ChaGriSet": candidate.get("ChaGriSet") in (0, 1),
        }
        return all(ok for name, ok in checks.items() if name in written)

    def _before_write(self, model_id: int, written: set[str]) -> None:
        self._advance(self.monotonic())

    def _after_write(self, model_id: int, written: set[str]) -> None:
        if model_id == 124:
            self._ctl_written_at = self.monotonic()
        self._publish()

    def _publish(self) -> None:
        p = self.p_kw
        if p > 0.0:
            cha_st, st = _CHA_DISCHARGING, _ST_MPPT
        elif p < 0.0:
            cha_st, st = _CHA_CHARGING, _ST_MPPT
        elif self._soc_kwh >= self.energy_kwh - 1e-9:
            cha_st, st = _CHA_FULL, _ST_STANDBY
        elif self.soc_pct <= self.min_reserve_pct + 1e-9:
            cha_st, st = _CHA_EMPTY, _ST_STANDBY
        else:
            cha_st, st = _CHA_HOLDING, _ST_STANDBY
        self._set(124, {"ChaState": round(self.soc_pct, 1), "ChaSt": cha_st})
        self._publish_103(st)


class SimMeter(SimSunSpecDevice):
    """A three-phase meter (model 203) at the feeder head or a bus; ``model=201`` makes it a
    single-phase meter (phase A carries it all; ``PhV`` line-neutral, ``PPV`` line-line)."""

    kind: ClassVar[str] = "meter"

    def __init__(
        self,
        name: str,
        *,
        bus: int = 1,
        p_max_kw: float = 5000.0,
        v_nominal_ll_v: float = 12660.0,
        monotonic: Callable[[], float] = time.monotonic,
        model: int = 203,
    ) -> None:
        if model not in (201, 203):
            raise ValueError(f"{name}: a meter is model 201 or 203, got {model}")
        self.model = model
        w_sf = fit_scale_factor(1000.0 * p_max_kw, signed=True, min_sf=0)
        a_max = 1250.0 * p_max_kw / (_SQRT3 * 0.9 * v_nominal_ll_v)
        super().__init__(
            name,
            models=(1, model),
            scale_factors={
                model: {
                    "A_SF": fit_scale_factor(a_max, signed=True, min_sf=-2),
                    "V_SF": fit_scale_factor(1.2 * v_nominal_ll_v, signed=True, min_sf=-1),
                    "Hz_SF": -2,
                    "W_SF": w_sf,
                    "VA_SF": w_sf,
                    "VAR_SF": w_sf,
                    "PF_SF": -1,
                    "TotWh_SF": 0,
                }
            },
            monotonic=monotonic,
        )
        self.bus = bus
        self.p_max_kw = p_max_kw
        self.v_nominal_ll_v = v_nominal_ll_v
        self._p_kw = 0.0
        self._imp_wh = 0.0
        self._exp_wh = 0.0
        self._t = monotonic()
        self._set(1, _common("Meter", name))
        self.update(p_kw=0.0, q_kvar=0.0, v_ll_v=v_nominal_ll_v)

    @property
    def p_kw(self) -> float:
        return self._p_kw

    def update(self, *, p_kw: float, q_kvar: float, v_ll_v: float, a: float | None = None) -> None:
        """New head readings (``p_kw`` positive = import); energy so far is accumulated first."""
        now = self.monotonic()
        wh = self._p_kw * 1000.0 * max(now - self._t, 0.0) / 3600.0
        if wh >= 0.0:
            self._imp_wh += wh
        else:
            self._exp_wh -= wh
        self._t = now
        self._p_kw = p_kw
        sf = self._sf[self.model]
        s_kva = math.hypot(p_kw, q_kvar)
        amps = a if a is not None else (s_kva * 1000.0 / (_SQRT3 * v_ll_v) if v_ll_v > 0 else 0.0)
        v_ln = v_ll_v / _SQRT3

        def sat(value: float, sf_name: str) -> float:
            return saturate(value, sf[sf_name], signed=True)

        w, var, va = 1000.0 * p_kw, 1000.0 * q_kvar, 1000.0 * s_kva
        pf = 100.0 * p_kw / s_kva if s_kva > 0 else 100.0
        imp, exp = int(self._imp_wh) % _ACC32, int(self._exp_wh) % _ACC32
        if self.model == 201:
            self._set(201, self._single_phase(sat, amps, v_ln, v_ll_v, w, var, va, pf, imp, exp))
            return
        self._set(
            203,
            {
                "A": sat(amps, "A_SF"),
                "AphA": sat(amps, "A_SF"),
                "AphB": sat(amps, "A_SF"),
                "AphC": sat(amps, "A_SF"),
                "PhV": sat(v_ln, "V_SF"),
                "PhVphA": sat(v_ln, "V_SF"),
                "PhVphB": sat(v_ln, "V_SF"),
                "PhVphC": sat(v_ln, "V_SF"),
                "PPV": sat(v_ll_v, "V_SF"),
                "PhVphAB": sat(v_ll_v, "V_SF"),
                "PhVphBC": sat(v_ll_v, "V_SF"),
                "PhVphCA": sat(v_ll_v, "V_SF"),
                "Hz": _HZ,
                "W": sat(w, "W_SF"),
                "WphA": sat(w / 3.0, "W_SF"),
                "WphB": sat(w / 3.0, "W_SF"),
                "WphC": sat(w / 3.0, "W_SF"),
                "VA": sat(va, "VA_SF"),
                "VAphA": sat(va / 3.0, "VA_SF"),
                "VAphB": sat(va / 3.0, "VA_SF"),
                "VAphC": sat(va / 3.0, "VA_SF"),
                "VAR": sat(var, "VAR_SF"),
                "VARphA": sat(var / 3.0, "VAR_SF"),
                "VARphB": sat(var / 3.0, "VAR_SF"),
                "VARphC": sat(var / 3.0, "VAR_SF"),
                "PF": pf,
                "PFphA": pf,
                "PFphB": pf,
                "PFphC": pf,
                "TotWhImp": imp if imp else None,
                "TotWhExp": exp if exp else None,
                "Evt": 0,
            },
        )

    @staticmethod
    def _single_phase(
        sat: Callable[[float, str], float],
        amps: float,
        v_ln: float,
        v_ll_v: float,
        w: float,
        var: float,
        va: float,
        pf: float,
        imp: int,
        exp: int,
    ) -> dict[str, Value]:
        """Model 201's points: phase A carries the whole reading, B and C are absent."""
        return {
            "A": sat(amps, "A_SF"),
            "AphA": sat(amps, "A_SF"),
            "PhV": sat(v_ln, "V_SF"),
            "PhVphA": sat(v_ln, "V_SF"),
            "PPV": sat(v_ll_v, "V_SF"),
            "Hz": _HZ,
            "W": sat(w, "W_SF"),
            "WphA": sat(w, "W_SF"),
            "VA": sat(va, "VA_SF"),
            "VAphA": sat(va, "VA_SF"),
            "VAR": sat(var, "VAR_SF"),
            "VARphA": sat(var, "VAR_SF"),
            "PF": pf,
            "PFphA": pf,
            "TotWhImp": imp if imp else None,
            "TotWhExp": exp if exp else None,
            "Evt": 0,
        }
