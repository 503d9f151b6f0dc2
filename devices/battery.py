"""A SunSpec battery inverter: power through model 124, or model 704 on 700-series devices.

Model 124 holds the battery inside ``[−InWRte% × WChaMax, OutWRte% × WChaMax]`` (discharge
positive) while ``StorCtl_Mod`` enables both limits; the battery idles at the point of that
interval nearest zero. So an absolute power x% is forced by ``OutWRte = x, InWRte = −x``; the
controls revert to idle after ``InOutWRte_RvrtTms`` without a rewrite.

Model 704 sets the power directly (``WSetMod = 1``: watts, discharge positive) with
``WSetRvrt = 0`` W as the explicit revert value, enabled after ``WSetRvrtTms``; state of charge
comes from model 713 and measurements from model 701.
"""

from __future__ import annotations

from devices.errors import DeviceProtocolError, ImplausibleReading, UnsafeWriteError
from devices.modbus_link import ModbusLink
from devices.protocol import Capabilities
from devices.records import BatteryReading, BatterySetpoint, DeviceKind, Setpoint, WriteResult
from devices.safety import Ramp, battery_command
from devices.sunspec import Value, encode_point, layout
from devices.sunspec_device import SunSpecDevice, required

__all__ = ["SunSpecBattery"]

STORCTL_CHARGE_AND_DISCHARGE = 0b11
MEASUREMENT_MODELS = (103, 102, 101, 701)
WSET_MOD_WATTS = 1


class SunSpecBattery(SunSpecDevice):
    required_models = (MEASUREMENT_MODELS, (124, 704))
    kind = DeviceKind.BATTERY
    capabilities = Capabilities(writable=True, releasable=True)

    def __init__(
        self,
        name: str,
        link: ModbusLink,
        unit: int,
        *,
        rating_kw: float,
        energy_kwh: float,
        revert_s: int,
        ramp: Ramp | None = None,
    ) -> None:
        super().__init__(name, link, unit)
        self.rating_kw = rating_kw
        self.energy_kwh = energy_kwh
        self.revert_s = revert_s
        self.ramp = ramp
        self._last_written_kw: float | None = None

    def _meas_model(self) -> int:
        for m in MEASUREMENT_MODELS:
            if self.chain is not None and self.chain.find(m):
                return m
        raise DeviceProtocolError(self.name, "no inverter model (101, 102, 103, 701)")

    @property
    def uses_704(self) -> bool:
        return self.chain is not None and self.chain.find(124) is None

    async def read(self) -> BatteryReading:
        await self._chain_or_discover()
        meas_id = self._meas_model()
        if self.uses_704:
            blocks = await self.read_models((meas_id, 713))
            meas, storage = blocks[meas_id], blocks[713]
            w_cha_max = self.rating_kw
            soc = required(storage, self.name, "SoC")
            reserve: Value = None
        else:
            blocks = await self.read_models((meas_id, 124))
            meas, storage = blocks[meas_id], blocks[124]
            w_cha_max = min(required(storage, self.name, "WChaMax") / 1000.0, self.rating_kw)
            soc = required(storage, self.name, "ChaState")
            reserve = storage.get("MinRsvPct")
        p_kw = required(meas, self.name, "W") / 1000.0
        if not 0.0 <= soc <= 100.0:
            raise ImplausibleReading(
                self.name, point="SoC", value=soc, low=0.0, high=100.0, unit="%"
            )
        if abs(p_kw) > 1.2 * w_cha_max:
            raise ImplausibleReading(
                self.name,
                point="W",
                value=p_kw,
                low=-1.2 * w_cha_max,
                high=1.2 * w_cha_max,
                unit="kW",
            )
        return BatteryReading(
            device=self.name,
            p_kw=p_kw,
            p_max_kw=w_cha_max,
            energy_kwh=self.energy_kwh,
            soc_pct=soc,
            min_reserve_pct=float(reserve) if isinstance(reserve, int | float) else 0.0,
        )

    async def write(self, setpoint: Setpoint) -> WriteResult:
        if not isinstance(setpoint, BatterySetpoint):
            raise UnsafeWriteError(self.name, f"a battery takes no {type(setpoint).__name__}")
        await self._chain_or_discover()
        cmd = battery_command(
            self.name,
            setpoint.p_kw,
            p_max_kw=self.rating_kw,
            revert_s=self.revert_s,
            last_kw=self._last_written_kw,
            ramp=self.ramp,
        )
        if self.uses_704:
            model = layout(704)
            ctl = await self.control_block(704)
            sf = ctl.get("WSet_SF")
            exponent = int(sf) if isinstance(sf, int) else 0
            words = (
                [1, WSET_MOD_WATTS]  # WSetEna, WSetMod: watts
                + encode_point(model.point("WSet"), cmd.p_kw * 1000.0, exponent)
                + encode_point(model.point("WSetRvrt"), 0.0, exponent)  # revert to idle
                + encode_point(model.point("WSetPct"), None)
                + encode_point(model.point("WSetPctRvrt"), None)
                + [1]  # WSetEnaRvrt: the revert value (0 W) applies when the timer lapses
                + encode_point(model.point("WSetRvrtTms"), cmd.revert_s)
            )
            await self.write_points(704, "WSetEna", words, verify=True)
        else:
            model = layout(124)
            storage = await self.control_block(124)
            sf = storage.get("InOutWRte_SF")
            exponent = int(sf) if isinstance(sf, int) else 0
            words = (
                encode_point(model.point("OutWRte"), cmd.rate_pct, exponent)
                + encode_point(model.point("InWRte"), -cmd.rate_pct, exponent)
                + [0]  # InOutWRte_WinTms: apply at once
                + encode_point(model.point("InOutWRte_RvrtTms"), cmd.revert_s)
                + [0]  # InOutWRte_RmpTms
            )
            await self.write_points(124, "OutWRte", words, verify=True)
            await self.write_points(124, "StorCtl_Mod", [STORCTL_CHARGE_AND_DISCHARGE])
        self._last_written_kw = cmd.p_kw
        return WriteResult(
            device=self.name, requested=setpoint.p_kw, written=cmd.p_kw, clamped=cmd.clamped
        )

    async def release(self) -> None:
        """Give up control (``on_stop = "release"``): model 124 back to idle (``StorCtl_Mod``
        0), model 704's power setpoint disabled (``WSetEna`` 0)."""
        await self._chain_or_discover()
        if self.uses_704:
            await self.write_points(704, "WSetEna", [0], verify=True)
        else:
            await self.write_points(124, "StorCtl_Mod", [0], verify=True)
        self._last_written_kw = None
