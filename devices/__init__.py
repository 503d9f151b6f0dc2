"""Device drivers: Modbus and MQTT transports, SunSpec decoding and the write safety envelope."""

from devices.battery import SunSpecBattery
from devices.errors import DeviceError, DeviceProtocolError, DeviceUnavailable, UnsafeWriteError
from devices.health import DeviceState, HealthTracker
from devices.load import RegisterMapLoad, check_load_map
from devices.meter import SunSpecMeter
from devices.modbus_link import (
    LinkStats,
    ModbusLink,
    ModbusRtuLink,
    ModbusTcpLink,
    ModbusTlsLink,
    tls_context,
)
from devices.mqtt_device import MqttDevice, PayloadError
from devices.protocol import Device, WritableDevice
from devices.pv_inverter import SunSpecInverter
from devices.records import (
    BatteryReading,
    BatterySetpoint,
    DeviceKind,
    LoadReading,
    LoadSetpoint,
    MeterReading,
    PvReading,
    PvSetpoint,
    Reading,
    Setpoint,
    WriteResult,
)
from devices.register_map import (
    RegisterMap,
    RegisterMapError,
    RegisterMapMeter,
    load_register_map,
)

__all__ = [
    "BatteryReading",
    "BatterySetpoint",
    "Device",
    "DeviceError",
    "DeviceKind",
    "DeviceProtocolError",
    "DeviceState",
    "DeviceUnavailable",
    "HealthTracker",
    "LinkStats",
    "LoadReading",
    "LoadSetpoint",
    "MeterReading",
    "ModbusLink",
    "ModbusRtuLink",
    "ModbusTcpLink",
    "ModbusTlsLink",
    "MqttDevice",
    "PayloadError",
    "PvReading",
    "PvSetpoint",
    "Reading",
    "RegisterMap",
    "RegisterMapError",
    "RegisterMapLoad",
    "RegisterMapMeter",
    "Setpoint",
    "SunSpecBattery",
    "SunSpecInverter",
    "SunSpecMeter",
    "UnsafeWriteError",
    "WritableDevice",
    "WriteResult",
    "check_load_map",
    "load_register_map",
    "tls_context",
]
