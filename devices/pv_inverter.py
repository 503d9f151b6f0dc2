"""A SunSpec PV inverter: output from model 103/102/101 or 701, ceiling through 123 or 704.

Model 123 (``WMaxLimPct`` with ``WMaxLimPct_RvrtTms``) reverts to 100 %: it fails open. Model 704
(``WMaxLimPct`` with ``WMaxLimPctRvrt``, ``WMaxLimPctEnaRvrt`` and ``WMaxLimPctRvrtTms``) reverts
to the explicit value feederd writes with every limit (``revert_limit_pct``, 100 % unless the
config says otherwise). Every write goes through the safety envelope and is read back.
"""

from __future__ import annotations

from devices.errors import DeviceProtocolError, ImplausibleReading, UnsafeWriteError
from devices.modbus_link import ModbusLink
from devices.protocol import Capabilities
from devices.records import DeviceKind, PvReading, PvSetpoint, Setpoint, WriteResult
from devices.safety import Ramp, pv_command, revert_limit
from devices.sunspec import encode_point, layout
from devices.sunspec_device import SunSpecDevice, required

__all__ = ["SunSpecInverter"]

INVERTER_MODELS = (103, 102, 101, 701)
CONTROL_MODELS = (123, 704)


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
    ) -> None:
        super().__init__(name, link, unit)
        self.rating_kw = rating_kw
        self.revert_s = revert_s
        self.ramp = ramp
        self.revert_limit_pct = revert_limit(name, revert_limit_pct)
        self._w_max_kw: float | None = None
        self._last_written_kw: float | None = None

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
        if self._w_max_kw is None:
            chain = await self._chain_or_discover()
            w_max = self.rating_kw
            for model_id, point in ((121, "WMax"), (120, "WRtg"), (702, "WMaxRtg")):
                if chain.find(model_id):
                    w_max = required(await self.read_model(model_id), self.name, point) / 1000.0
                    break
            # never trust a device rating above the configured one: clamp to the smaller
            self._w_max_kw = min(w_max, self.rating_kw)
        return self._w_max_kw

    async def read(self) -> PvReading:
        await self._chain_or_discover()
        w_max = await self._w_max()
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
        return PvReading(
            device=self.name,
            p_kw=max(p_kw, 0.0),
            w_max_kw=w_max,
            limit_pct=float(pct) if isinstance(pct, int | float) else None,
            limit_enabled=enabled,
            limit_revert_s=int(revert) if isinstance(revert, int | float) else None,
        )

    async def write(self, setpoint: Setpoint) -> WriteResult:
        """Write the limit, its revert time (and 704's revert value) and enable it, at once."""
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
        ctl = await self.control_block(ctl_id)
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
                + encode_point(model.point("WMaxLimPctRvrt"), self.revert_limit_pct, exponent)
                + [1]  # WMaxLimPctEnaRvrt: the revert value is enabled when the timer lapses
                + encode_point(model.point("WMaxLimPctRvrtTms"), cmd.revert_s)
            )
        await self.write_points(ctl_id, first, words, verify=True)
        self._last_written_kw = cmd.p_max_kw
        return WriteResult(
            device=self.name,
            requested=setpoint.p_max_kw,
            written=cmd.p_max_kw,
            clamped=cmd.clamped,
        )

    async def release(self) -> None:
        """Disable the limit (``on_stop = "release"``): the inverter runs unconstrained."""
        ctl_id = self.control_model
        point = "WMaxLim_Ena" if ctl_id == 123 else "WMaxLimPctEna"
        await self.write_points(ctl_id, point, [0], verify=True)
