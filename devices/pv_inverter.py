"""A SunSpec PV inverter: output from model 103 (or 101/102), ceiling through model 123."""

from __future__ import annotations

from devices.errors import DeviceProtocolError
from devices.modbus_link import ModbusTcpLink
from devices.records import PvReading, PvSetpoint, WriteResult
from devices.safety import pv_command
from devices.sunspec import encode_point, layout
from devices.sunspec_device import SunSpecDevice, required

__all__ = ["SunSpecInverter"]

INVERTER_MODELS = (103, 102, 101)


class SunSpecInverter(SunSpecDevice):
    """Reads W and the model-123 limit; writes ``WMaxLimPct`` with its revert timeout."""

    required_models = (INVERTER_MODELS, (123,))

    def __init__(
        self,
        name: str,
        link: ModbusTcpLink,
        unit: int,
        *,
        rating_kw: float,
        revert_s: int,
        ramp_kw_per_interval: float | None = None,
    ) -> None:
        super().__init__(name, link, unit)
        self.rating_kw = rating_kw
        self.revert_s = revert_s
        self.ramp_kw = ramp_kw_per_interval
        self._w_max_kw: float | None = None
        self._last_written_kw: float | None = None

    def _inverter_model(self) -> int:
        chain = self.chain
        for m in INVERTER_MODELS:
            if chain is not None and chain.find(m):
                return m
        raise DeviceProtocolError(self.name, "no inverter model (101, 102, 103)")

    async def _w_max(self) -> float:
        """WMax from model 121 if present, else WRtg from model 120, else the configured rating."""
        if self._w_max_kw is None:
            chain = await self._chain_or_discover()
            w_max = self.rating_kw
            if chain.find(121):
                w_max = required(await self.read_model(121), self.name, "WMax") / 1000.0
            elif chain.find(120):
                w_max = required(await self.read_model(120), self.name, "WRtg") / 1000.0
            # never trust a device rating above the configured one: clamp to the smaller
            self._w_max_kw = min(w_max, self.rating_kw)
        return self._w_max_kw

    async def read(self) -> PvReading:
        await self._chain_or_discover()
        w_max = await self._w_max()
        meas = await self.read_model(self._inverter_model())
        ctl = await self.read_model(123)
        p_kw = required(meas, self.name, "W") / 1000.0
        if not -0.05 * w_max <= p_kw <= 1.2 * w_max:
            raise DeviceProtocolError(self.name, f"W = {p_kw:.1f} kW is outside 0..{w_max:.1f} kW")
        pct = ctl.get("WMaxLimPct")
        revert = ctl.get("WMaxLimPct_RvrtTms")
        return PvReading(
            device=self.name,
            p_kw=max(p_kw, 0.0),
            w_max_kw=w_max,
            limit_pct=float(pct) if isinstance(pct, int | float) else None,
            limit_enabled=ctl.get("WMaxLim_Ena") == 1,
            limit_revert_s=int(revert) if isinstance(revert, int | float) else None,
        )

    async def write(self, setpoint: PvSetpoint) -> WriteResult:
        """Write ``WMaxLimPct``, its window, revert and ramp times and ``WMaxLim_Ena`` at once."""
        w_max = await self._w_max()
        cmd = pv_command(
            self.name,
            setpoint.p_max_kw,
            w_max_kw=w_max,
            revert_s=self.revert_s,
            last_kw=self._last_written_kw,
            ramp_kw=self.ramp_kw,
        )
        model = layout(123)
        ctl = await self.read_model(123)
        sf = ctl.get("WMaxLimPct_SF")
        exponent = int(sf) if isinstance(sf, int) else 0
        words = (
            encode_point(model.point("WMaxLimPct"), cmd.limit_pct, exponent)
            + [0]  # WMaxLimPct_WinTms: apply at once
            + encode_point(model.point("WMaxLimPct_RvrtTms"), cmd.revert_s)
            + [0]  # WMaxLimPct_RmpTms: the ramp is feederd's (safety envelope)
            + [1]  # WMaxLim_Ena: enabled
        )
        await self.write_points(123, "WMaxLimPct", words)
        self._last_written_kw = cmd.p_max_kw
        return WriteResult(
            device=self.name,
            requested=setpoint.p_max_kw,
            written=cmd.p_max_kw,
            clamped=cmd.clamped,
        )
