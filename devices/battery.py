"""A SunSpec battery inverter: state from models 103/120/124, power through model 124.

Model 124 holds the battery inside ``[−InWRte% × WChaMax, OutWRte% × WChaMax]`` (discharge
positive) while ``StorCtl_Mod`` enables both limits; the battery idles at the point of that
interval nearest zero. So an absolute power x% is forced by ``OutWRte = x, InWRte = −x``; the
controls revert to idle after ``InOutWRte_RvrtTms`` without a rewrite.
"""

from __future__ import annotations

from devices.errors import DeviceProtocolError
from devices.modbus_link import ModbusTcpLink
from devices.records import BatteryReading, BatterySetpoint, WriteResult
from devices.safety import battery_command
from devices.sunspec import encode_point, layout
from devices.sunspec_device import SunSpecDevice, required

__all__ = ["SunSpecBattery"]

STORCTL_CHARGE_AND_DISCHARGE = 0b11


class SunSpecBattery(SunSpecDevice):
    required_models = ((103, 102, 101), (124,))

    def __init__(
        self,
        name: str,
        link: ModbusTcpLink,
        unit: int,
        *,
        rating_kw: float,
        energy_kwh: float,
        revert_s: int,
        ramp_kw_per_interval: float | None = None,
    ) -> None:
        super().__init__(name, link, unit)
        self.rating_kw = rating_kw
        self.energy_kwh = energy_kwh
        self.revert_s = revert_s
        self.ramp_kw = ramp_kw_per_interval
        self._last_written_kw: float | None = None

    def _meas_model(self) -> int:
        for m in (103, 102, 101):
            if self.chain is not None and self.chain.find(m):
                return m
        raise DeviceProtocolError(self.name, "no inverter model (101, 102, 103)")

    async def read(self) -> BatteryReading:
        await self._chain_or_discover()
        meas = await self.read_model(self._meas_model())
        storage = await self.read_model(124)
        p_kw = required(meas, self.name, "W") / 1000.0
        w_cha_max = min(required(storage, self.name, "WChaMax") / 1000.0, self.rating_kw)
        soc = required(storage, self.name, "ChaState")
        if not 0.0 <= soc <= 100.0:
            raise DeviceProtocolError(self.name, f"ChaState = {soc}% is outside 0..100%")
        if abs(p_kw) > 1.2 * w_cha_max:
            raise DeviceProtocolError(self.name, f"W = {p_kw:.1f} kW exceeds ±{w_cha_max:.1f} kW")
        reserve = storage.get("MinRsvPct")
        return BatteryReading(
            device=self.name,
            p_kw=p_kw,
            p_max_kw=w_cha_max,
            energy_kwh=self.energy_kwh,
            soc_pct=soc,
            min_reserve_pct=float(reserve) if isinstance(reserve, int | float) else 0.0,
        )

    async def write(self, setpoint: BatterySetpoint) -> WriteResult:
        cmd = battery_command(
            self.name,
            setpoint.p_kw,
            p_max_kw=self.rating_kw,
            revert_s=self.revert_s,
            last_kw=self._last_written_kw,
            ramp_kw=self.ramp_kw,
        )
        model = layout(124)
        storage = await self.read_model(124)
        sf = storage.get("InOutWRte_SF")
        exponent = int(sf) if isinstance(sf, int) else 0
        words = (
            encode_point(model.point("OutWRte"), cmd.rate_pct, exponent)
            + encode_point(model.point("InWRte"), -cmd.rate_pct, exponent)
            + [0]  # InOutWRte_WinTms: apply at once
            + encode_point(model.point("InOutWRte_RvrtTms"), cmd.revert_s)
            + [0]  # InOutWRte_RmpTms
        )
        await self.write_points(124, "OutWRte", words)
        await self.write_points(124, "StorCtl_Mod", [STORCTL_CHARGE_AND_DISCHARGE])
        self._last_written_kw = cmd.p_kw
        return WriteResult(
            device=self.name, requested=setpoint.p_kw, written=cmd.p_kw, clamped=cmd.clamped
        )
