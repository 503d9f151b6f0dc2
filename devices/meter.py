"""A SunSpec meter (models 201-204): signed real power, reactive power, voltage, current."""

from __future__ import annotations

from devices.errors import ImplausibleReading
from devices.modbus_link import ModbusLink
from devices.records import DeviceKind, MeterReading
from devices.sunspec_device import SunSpecDevice, required

__all__ = ["SunSpecMeter"]

METER_MODELS = (203, 201, 202, 204)


class SunSpecMeter(SunSpecDevice):
    required_models = (METER_MODELS,)
    kind = DeviceKind.METER

    def __init__(self, name: str, link: ModbusLink, unit: int, *, p_limit_kw: float) -> None:
        super().__init__(name, link, unit)
        self.p_limit_kw = p_limit_kw

    async def read(self) -> MeterReading:
        chain = await self._chain_or_discover()
        model = next(m for m in METER_MODELS if chain.find(m))
        values = await self.read_model(model)
        p_kw = required(values, self.name, "W") / 1000.0
        if abs(p_kw) > self.p_limit_kw:
            raise ImplausibleReading(
                self.name,
                point="W",
                value=p_kw,
                low=-self.p_limit_kw,
                high=self.p_limit_kw,
                unit="kW",
            )
        q = values.get("VAR")
        v = values.get("PPV")
        a = values.get("A")
        return MeterReading(
            device=self.name,
            p_kw=p_kw,
            q_kvar=float(q) / 1000.0 if isinstance(q, int | float) else None,
            v_ll_v=float(v) if isinstance(v, int | float) else None,
            a=float(a) if isinstance(a, int | float) else None,
        )
