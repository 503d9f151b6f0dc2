"""Device drivers: Modbus and MQTT transports, SunSpec decoding and the write safety envelope."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devices.battery import (
        SunSpecBattery,
    )
    from devices.errors import (
        BadReading,
        DeviceError,
        DeviceProtocolError,
        DeviceUnavailable,
        ImplausibleReading,
        PointNotImplemented,
        UnsafeWriteError,
    )
    from devices.health import (
        DeviceState,
        HealthTracker,
        Transition,
    )
    from devices.load import (
        RegisterMapLoad,
        check_load_map,
    )
    from devices.meter import (
        SunSpecMeter,
    )
    from devices.modbus_link import (
        LinkStats,
        ModbusLink,
        ModbusRtuLink,
        ModbusTcpLink,
        ModbusTlsLink,
        tls_context,
    )
    from devices.mqtt_device import (
        MqttDevice,
        PayloadError,
    )
    from devices.protocol import (
        Background,
        Capabilities,
        Device,
    )
    from devices.pv_inverter import (
        SunSpecInverter,
    )
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
        BUNDLED_MAPS,
        RegisterMap,
        RegisterMapError,
        RegisterMapMeter,
        load_register_map,
    )
    from devices.safety import (
        Ramp,
    )
    from devices.volt_var import (
        VoltVarCurve,
    )

__all__ = [
    "BUNDLED_MAPS",
    "Background",
    "BadReading",
    "BatteryReading",
    "BatterySetpoint",
    "Capabilities",
    "Device",
    "DeviceError",
    "DeviceKind",
    "DeviceProtocolError",
    "DeviceState",
    "DeviceUnavailable",
    "HealthTracker",
    "ImplausibleReading",
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
    "PointNotImplemented",
    "PvReading",
    "PvSetpoint",
    "Ramp",
    "Reading",
    "RegisterMap",
    "RegisterMapError",
    "RegisterMapLoad",
    "RegisterMapMeter",
    "Setpoint",
    "SunSpecBattery",
    "SunSpecInverter",
    "SunSpecMeter",
    "Transition",
    "UnsafeWriteError",
    "VoltVarCurve",
    "WriteResult",
    "check_load_map",
    "load_register_map",
    "tls_context",
]

# Loaded on first use, so that importing one part (say the journal) loads only what it needs.
_EXPORTS = {
    "BUNDLED_MAPS": "devices.register_map",
    "Background": "devices.protocol",
    "BadReading": "devices.errors",
    "BatteryReading": "devices.records",
    "BatterySetpoint": "devices.records",
    "Capabilities": "devices.protocol",
    "Device": "devices.protocol",
    "DeviceError": "devices.errors",
    "DeviceKind": "devices.records",
    "DeviceProtocolError": "devices.errors",
    "DeviceState": "devices.health",
    "DeviceUnavailable": "devices.errors",
    "HealthTracker": "devices.health",
    "ImplausibleReading": "devices.errors",
    "LinkStats": "devices.modbus_link",
    "LoadReading": "devices.records",
    "LoadSetpoint": "devices.records",
    "MeterReading": "devices.records",
    "ModbusLink": "devices.modbus_link",
    "ModbusRtuLink": "devices.modbus_link",
    "ModbusTcpLink": "devices.modbus_link",
    "ModbusTlsLink": "devices.modbus_link",
    "MqttDevice": "devices.mqtt_device",
    "PayloadError": "devices.mqtt_device",
    "PointNotImplemented": "devices.errors",
    "PvReading": "devices.records",
    "PvSetpoint": "devices.records",
    "Ramp": "devices.safety",
    "Reading": "devices.records",
    "RegisterMap": "devices.register_map",
    "RegisterMapError": "devices.register_map",
    "RegisterMapLoad": "devices.load",
    "RegisterMapMeter": "devices.register_map",
    "Setpoint": "devices.records",
    "SunSpecBattery": "devices.battery",
    "SunSpecInverter": "devices.pv_inverter",
    "SunSpecMeter": "devices.meter",
    "Transition": "devices.health",
    "UnsafeWriteError": "devices.errors",
    "VoltVarCurve": "devices.volt_var",
    "WriteResult": "devices.records",
    "check_load_map": "devices.load",
    "load_register_map": "devices.register_map",
    "tls_context": "devices.modbus_link",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
