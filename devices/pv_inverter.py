"""A SunSpec PV inverter: output from model 103/102/101 or 701, ceiling through 123 or 704.

Model 123 (``WMaxLimPct`` with ``WMaxLimPct_RvrtTms``) reverts to 100 %: it fails open. Model 704
(``WMaxLimPct`` with ``WMaxLimPctRvrt``, ``WMaxLimPctEnaRvrt`` and ``WMaxLimPctRvrtTms``) reverts
to the explicit value feederd writes with every limit: the setpoint's ``revert_kw`` where the
controller gives one (its share of an export cap in force), never above ``revert_limit_pct``
(100 % unless the config says otherwise). Every write goes through the safety envelope and is
read back.

Reactive power (kvar, positive = injecting vars, over-excited): ``read`` reports the measured
``VAr`` (103/102/101) or ``Var`` (701), the apparent-power rating ``s_max_kva`` (121 ``VAMax``,
120 ``VARtg``, 702 ``VAMax``/``VAMaxRtg``, never above the configured ``rating_kva``, unset the
kW rating), the declared capability ``var_max_kvar`` (121 ``VArMaxQ1``, 702 ``VarMaxInj``, else
``s_max_kva``) and ``reactive``: whether the control model implements the fixed-var points. A
setpoint with ``q_kvar`` writes, after the ceiling, a fixed reactive power in % of WMax: on 123
``VArWMaxPct`` … ``VArPct_Ena`` (``VArPct_Mod`` 1, ``VArPct_RvrtTms``; ``VArMaxPct`` and
``VArAvalPct`` rewritten as the device holds them), on 704 ``VarSetEna`` … ``VarSetRvrtTms``
(``VarSetMod`` 0, active-power priority, ``VarSetPctRvrt`` 0 and ``VarSetEnaRvrt`` 0; ``VarSet``
and ``VarSetRvrt`` rewritten as held). Either way the revert turns the fixed mode off and the
inverter falls back to its own reactive behaviour (its volt-var curve where one is enabled). The
envelope clamps the value to the declared capability and to the kVA circle beside the active
power the inverter gives (the ceiling written in the same call, or its output at the last
reading when that is less: a rising sun takes vars back, active-power priority); the
registers are read back. A device without those points gets the
ceiling alone and one ``reactive_unsupported`` log line per run, never an error.

Volt-var fallback (``volt_var``, see ``devices.volt_var``): the curve is written to 126 or 705
once per discovery, before the first ceiling of that chain (a re-discovered device gets it
again), with no revert time. A chain without either model, or one that cannot take the curve,
keeps P/Q as before with one ``volt_var_unsupported`` log line per run; a curve the device does
not hold after the write is one ``volt_var_failed`` error line per chain, P/Q go on and the
curve is written again before the next ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import structlog

from devices.errors import DeviceProtocolError, ImplausibleReading, UnsafeWriteError
from devices.modbus_link import ModbusLink
from devices.protocol import Capabilities
from devices.records import DeviceKind, PvReading, PvSetpoint, Setpoint, WriteResult
from devices.safety import (
    Ramp,
    ReactiveCommand,
    pv_command,
    reactive_command,
    revert_limit,
    revert_pct,
)
from devices.sunspec import Value, encode_point, layout
from devices.sunspec.discovery import ModelChain
from devices.sunspec_device import SunSpecDevice, required
from devices.volt_var import (
    FALLBACK_REVERT_S,
    VoltVarCurve,
    VoltVarUnsupported,
    write_volt_var,
)

__all__ = ["SunSpecInverter", "reactive_gap"]

log = structlog.get_logger("feederd.devices.pv")

INVERTER_MODELS = (103, 102, 101, 701)
CONTROL_MODELS = (123, 704)
_REACTIVE_POINTS: dict[int, tuple[str, ...]] = {
    123: ("VArWMaxPct", "VArPct_RvrtTms", "VArPct_Mod", "VArPct_Ena"),
    704: ("VarSetEna", "VarSetMod", "VarSetPct", "VarSetRvrtTms"),
}
"""The fixed-var points a control model must implement for feederd to write reactive power."""
_REACTIVE_SF = {123: "VArPct_SF", 704: "VarSetPct_SF"}
_S_POINTS = ((121, "VAMax"), (120, "VARtg"), (702, "VAMax"), (702, "VAMaxRtg"))
_VAR_POINTS = ((121, "VArMaxQ1"), (702, "VarMaxInj"))


def reactive_gap(ctl_id: int, ctl: Mapping[str, Value]) -> str | None:
    """Why a decoded control block cannot take a fixed reactive setpoint (``None``: it can).

    Its fixed-var points must be implemented (not 0x8000/0xFFFF) and their percentage scale
    factor within 10^-3..10^0.
    """
    points = _REACTIVE_POINTS.get(ctl_id)
    if points is None:
        return f"model {ctl_id} has no fixed reactive-power points"
    missing = [p for p in points if not isinstance(ctl.get(p), int | float)]
    if missing:
        return f"model {ctl_id} does not implement {', '.join(missing)}"
    sf_name = _REACTIVE_SF[ctl_id]
    sf = ctl.get(sf_name)
    if not isinstance(sf, int) or not -3 <= sf <= 0:
        return f"model {ctl_id} {sf_name} {sf!r} is outside -3..0"
    return None


class SunSpecInverter(SunSpecDevice):
    """Reads W and the power limit; writes the limit with its revert timeout, then reads back."""

    required_models = (INVERTER_MODELS, CONTROL_MODELS)
    kind = DeviceKind.PV
    capabilities = Capabilities(writable=True, releasable=True)

    def __init__(
        self,
        name: str,
        link: ModbusLink,
        unit: int,
        *,
        rating_kw: float,
        revert_s: int,
        ramp: Ramp | None = None,
        revert_limit_pct: float = 100.0,
        rating_kva: float | None = None,
        volt_var: VoltVarCurve | None = None,
    ) -> None:
        super().__init__(name, link, unit)
        self.volt_var = volt_var
        self._volt_var_chain: ModelChain | None = None
        """The chain the curve was last written to (or found unable to take it)."""
        self._said_volt_var = False
        self._volt_var_failed: ModelChain | None = None
        self.rating_kw = rating_kw
        self.rating_kva = rating_kva
        self.revert_s = revert_s
        self.ramp = ramp
        self.revert_limit_pct = revert_limit(name, revert_limit_pct)
        self._ratings_kw: tuple[float, float, float] | None = None
        self._last_written_kw: float | None = None
        self._last_p_kw: float | None = None  # the output at the last reading
        self._wrote_reactive = False
        self._said_unsupported = False

    def _first(self, candidates: tuple[int, ...]) -> int:
        chain = self.chain
        for m in candidates:
            if chain is not None and chain.find(m):
                return m
        wanted = ", ".join(str(m) for m in candidates)
        raise DeviceProtocolError(self.name, f"no model among {wanted}")

    @property
    def control_model(self) -> int:
        """123 where the device has it, else 704."""
        return self._first(CONTROL_MODELS)

    async def _w_max(self) -> float:
        """WMax (121), WRtg (120) or WMaxRtg (702), else the rating; never above the rating."""
        return (await self._ratings())[0]

    async def _ratings(self) -> tuple[float, float, float]:
        """``(w_max_kw, s_max_kva, var_max_kvar)``, read once from 121, 120 or 702.

        Never above the configured ratings (``rating_kw``; ``rating_kva``, unset the kW
        rating): a device rating above them is clamped to the smaller. A point not implemented
        falls to the next source; the var capability never exceeds the kVA rating.
        """
        if self._ratings_kw is None:
            chain = await self._chain_or_discover()
            present = [m for m in (121, 120, 702) if chain.find(m)]
            blocks = {m: await self.read_model(m) for m in present}
            w_max = self.rating_kw
            for model_id, point in ((121, "WMax"), (120, "WRtg"), (702, "WMaxRtg")):
                if model_id in blocks:
                    w_max = required(blocks[model_id], self.name, point) / 1000.0
                    break
            s_cap = self.rating_kva if self.rating_kva is not None else self.rating_kw
            s_max = min(_first_positive(blocks, _S_POINTS, s_cap), s_cap)
            var_max = min(_first_positive(blocks, _VAR_POINTS, s_max), s_max)
            self._ratings_kw = (min(w_max, self.rating_kw), s_max, var_max)
        return self._ratings_kw

    async def read(self) -> PvReading:
        await self._chain_or_discover()
        w_max, s_max, var_max = await self._ratings()
        meas_id, ctl_id = self._first(INVERTER_MODELS), self.control_model
        blocks = await self.read_models((meas_id, ctl_id))
        meas, ctl = blocks[meas_id], blocks[ctl_id]
        p_kw = required(meas, self.name, "W") / 1000.0
        if not -0.05 * w_max <= p_kw <= 1.2 * w_max:
            raise ImplausibleReading(
                self.name, point="W", value=p_kw, low=-0.05 * w_max, high=1.2 * w_max, unit="kW"
            )
        if ctl_id == 123:
            pct, enabled = ctl.get("WMaxLimPct"), ctl.get("WMaxLim_Ena") == 1
            revert = ctl.get("WMaxLimPct_RvrtTms")
        else:
            pct, enabled = ctl.get("WMaxLimPct"), ctl.get("WMaxLimPctEna") == 1
            revert = ctl.get("WMaxLimPctRvrtTms")
        var = meas.get("Var" if meas_id == 701 else "VAr")
        # a var reading beyond 1.2 x the kVA rating cannot be right: unknown, not fatal to P
        q_kvar = float(var) / 1000.0 if isinstance(var, int | float) else None
        if q_kvar is not None and not abs(q_kvar) <= 1.2 * s_max:
            q_kvar = None
        self._last_p_kw = max(p_kw, 0.0)
        return PvReading(
            device=self.name,
            p_kw=max(p_kw, 0.0),
            w_max_kw=w_max,
            limit_pct=float(pct) if isinstance(pct, int | float) else None,
            limit_enabled=enabled,
            limit_revert_s=int(revert) if isinstance(revert, int | float) else None,
            q_kvar=q_kvar,
            explicit_revert=ctl_id == 704,
            s_max_kva=s_max,
            var_max_kvar=var_max,
            reactive=reactive_gap(ctl_id, ctl) is None,
        )

    async def write(self, setpoint: Setpoint) -> WriteResult:
        """Write the limit, its revert time (and 704's revert value) and enable it, at once;
        then, when the setpoint has ``q_kvar``, the fixed reactive power (both through the
        envelope, which refuses either before anything is written)."""
        if not isinstance(setpoint, PvSetpoint):
            raise UnsafeWriteError(self.name, f"a PV inverter takes no {type(setpoint).__name__}")
        w_max = await self._w_max()
        cmd = pv_command(
            self.name,
            setpoint.p_max_kw,
            w_max_kw=w_max,
            revert_s=self.revert_s,
            last_kw=self._last_written_kw,
            ramp=self.ramp,
        )
        ctl_id = self.control_model
        model = layout(ctl_id)
        revert = revert_pct(
            self.name,
            setpoint.revert_kw,
            w_max_kw=w_max,
            configured_pct=self.revert_limit_pct,
        )
        ctl = await self.control_block(ctl_id)
        # the vars must fit beside the active power the inverter gives: its ceiling, or what
        # it gave at the last reading if that is less (it gives up vars first when the sun
        # rises: active-power priority)
        p_now = cmd.p_max_kw if self._last_p_kw is None else min(cmd.p_max_kw, self._last_p_kw)
        q_cmd = await self._reactive_command(setpoint.q_kvar, ctl_id, ctl, p_now)
        sf = ctl.get("WMaxLimPct_SF")
        exponent = int(sf) if isinstance(sf, int) else 0
        if ctl_id == 123:
            first = "WMaxLimPct"
            words = (
                encode_point(model.point("WMaxLimPct"), cmd.limit_pct, exponent)
                + [0]  # WMaxLimPct_WinTms: apply at once
                + encode_point(model.point("WMaxLimPct_RvrtTms"), cmd.revert_s)
                + [0]  # WMaxLimPct_RmpTms: the ramp is feederd's (safety envelope)
                + [1]  # WMaxLim_Ena: enabled
            )
        else:
            first = "WMaxLimPctEna"
            words = (
                [1]  # WMaxLimPctEna: enabled
                + encode_point(model.point("WMaxLimPct"), cmd.limit_pct, exponent)
                + encode_point(model.point("WMaxLimPctRvrt"), revert, exponent)
                + [1]  # WMaxLimPctEnaRvrt: the revert value is enabled when the timer lapses
                + encode_point(model.point("WMaxLimPctRvrtTms"), cmd.revert_s)
            )
        await self._ensure_volt_var()
        await self.write_points(ctl_id, first, words, verify=True)
        self._last_written_kw = cmd.p_max_kw
        if q_cmd is not None:
            await self._write_reactive(ctl_id, ctl, q_cmd)
        return WriteResult(
            device=self.name,
            requested=setpoint.p_max_kw,
            written=cmd.p_max_kw,
            clamped=cmd.clamped,
            q_kvar=None if q_cmd is None else q_cmd.q_kvar,
            q_clamped=q_cmd is not None and q_cmd.clamped,
        )

    async def _ensure_volt_var(self) -> None:
        """Write the volt-var curve once per discovered chain (see the module docstring)."""
        chain = self.chain
        if self.volt_var is None or chain is None or chain is self._volt_var_chain:
            return
        try:
            await write_volt_var(self, self.volt_var, revert_s=FALLBACK_REVERT_S)
        except VoltVarUnsupported as err:
            if not self._said_volt_var:
                self._said_volt_var = True
                log.warning("volt_var_unsupported", device=self.name, reason=err.message)
        except UnsafeWriteError as err:  # tried again before the next ceiling, said once
            if self._volt_var_failed is not chain:
                self._volt_var_failed = chain
                log.error("volt_var_failed", device=self.name, reason=err.message)
            return
        self._volt_var_chain = chain

    async def _reactive_command(
        self, q_kvar: float | None, ctl_id: int, ctl: Mapping[str, Value], p_ceiling_kw: float
    ) -> ReactiveCommand | None:
        """The envelope's reactive command, or ``None``: none asked for, or the device has no
        fixed-var points (said once per run, ``reactive_unsupported``)."""
        if q_kvar is None:
            return None
        gap = reactive_gap(ctl_id, ctl)
        if gap is not None:
            if not self._said_unsupported:
                self._said_unsupported = True
                log.warning("reactive_unsupported", device=self.name, reason=gap)
            return None
        w_max, s_max, var_max = await self._ratings()
        return reactive_command(
            self.name,
            q_kvar,
            w_max_kw=w_max,
            s_max_kva=s_max,
            var_max_kvar=var_max,
            p_ceiling_kw=p_ceiling_kw,
            revert_s=self.revert_s,
            pct_sf=int(ctl[_REACTIVE_SF[ctl_id]] or 0),
        )

    async def _write_reactive(
        self, ctl_id: int, ctl: Mapping[str, Value], cmd: ReactiveCommand
    ) -> None:
        """Write the fixed-var block (see the module docstring) and read it back."""
        model = layout(ctl_id)
        sf = int(ctl[_REACTIVE_SF[ctl_id]] or 0)

        def point(name: str, value: Value, exponent: int = 0) -> list[int]:
            return encode_point(model.point(name), value, exponent)

        if ctl_id == 123:
            first = "VArWMaxPct"
            words = (
                point("VArWMaxPct", cmd.pct, sf)
                + point("VArMaxPct", ctl.get("VArMaxPct"), sf)  # as held: not in use (Mod 1)
                + point("VArAvalPct", ctl.get("VArAvalPct"), sf)
                + [0]  # VArPct_WinTms: apply at once
                + point("VArPct_RvrtTms", cmd.revert_s)
                + [0]  # VArPct_RmpTms: at once
                + [1]  # VArPct_Mod: % of WMax
                + [1]  # VArPct_Ena: enabled
            )
        else:
            var_sf = ctl.get("VarSet_SF")
            var_exp = int(var_sf) if isinstance(var_sf, int) else 0
            first = "VarSetEna"
            words = (
                [1, 0, 0]  # VarSetEna enabled, VarSetMod W_MAX_PCT, VarSetPri active power
                + point("VarSet", ctl.get("VarSet"), var_exp)  # as held: not in use (Mod 0)
                + point("VarSetRvrt", ctl.get("VarSetRvrt"), var_exp)
                + point("VarSetPct", cmd.pct, sf)
                + point("VarSetPctRvrt", 0.0, sf)
                + [0]  # VarSetEnaRvrt: the fixed mode is off after the revert
                + point("VarSetRvrtTms", cmd.revert_s)
            )
        await self.write_points(ctl_id, first, words, verify=True)
        self._wrote_reactive = True

    async def release(self) -> None:
        """Disable the limit (``on_stop = "release"``): the inverter runs unconstrained; a
        fixed reactive mode feederd wrote is disabled too (the inverter's own curve takes
        over)."""
        ctl_id = self.control_model
        point = "WMaxLim_Ena" if ctl_id == 123 else "WMaxLimPctEna"
        await self.write_points(ctl_id, point, [0], verify=True)
        if self._wrote_reactive:
            point = "VArPct_Ena" if ctl_id == 123 else "VarSetEna"
            await self.write_points(ctl_id, point, [0], verify=True)


def _first_positive(
    blocks: Mapping[int, Mapping[str, Value]], points: tuple[tuple[int, str], ...], default: float
) -> float:
    """The first implemented, positive, finite ``points`` value in kW-units (W / 1000)."""
    for model_id, point in points:
        value = blocks.get(model_id, {}).get(point)
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            return float(value) / 1000.0
    return default
