"""Device drivers: Modbus transports, SunSpec decoding and the write safety envelope."""

from devices.battery import SunSpecBattery
from devices.errors import DeviceError, DeviceProtocolError, DeviceUnavailable, UnsafeWriteError
from devices.meter import SunSpecMeter
from devices.modbus_link import ModbusTcpLink
from devices.protocol import Device, WritableDevice
from devices.pv_inverter import SunSpecInverter
from devices.records import (
    BatteryReading,
    BatterySetpoint,
    DeviceKind,
    MeterReading,
    PvReading,
    PvSetpoint,
    Reading,
    Setpoint,
    WriteResult,
)

__all__ = [
    "BatteryReading",
    "BatterySetpoint",
    "Device",
    "DeviceError",
    "DeviceKind",
    "DeviceProtocolError",
    "DeviceUnavailable",
    "MeterReading",
    "ModbusTcpLink",
    "PvReading",
    "PvSetpoint",
    "Reading",
    "Setpoint",
    "SunSpecBattery",
    "SunSpecInverter",
    "SunSpecMeter",
    "UnsafeWriteError",
    "WritableDevice",
    "WriteResult",
]
