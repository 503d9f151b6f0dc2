"""The hardware-in-the-loop rig: the simulated feeder that feederd is tested against.

Independent physics (pandapower AC power flow of the IEEE 33-bus case), simulated SunSpec
devices (PV inverters, batteries, a head meter) and the pymodbus servers that expose them.
"""

from hil.cases import case33bw_path
from hil.clock import ManualClock
from hil.physics import FeederPhysics, PhysicsError, PhysicsState
from hil.register_image import (
    BASE_ADDRESS,
    END_MARKER,
    SUNS_MARKER,
    SimSunSpecDevice,
    WriteHook,
    WriteRejection,
    fit_scale_factor,
)
from hil.rig import DEFAULT_BATTERY_BUSES, DEFAULT_PV_BUSES, HilRig, RigDevice
from hil.server import DeviceFault, SunSpecServer
from hil.sim_devices import SimBattery, SimInverter, SimMeter

__all__ = [
    "BASE_ADDRESS",
    "DEFAULT_BATTERY_BUSES",
    "DEFAULT_PV_BUSES",
    "END_MARKER",
    "SUNS_MARKER",
    "DeviceFault",
    "FeederPhysics",
    "HilRig",
    "ManualClock",
    "PhysicsError",
    "PhysicsState",
    "RigDevice",
    "SimBattery",
    "SimInverter",
    "SimMeter",
    "SimSunSpecDevice",
    "SunSpecServer",
    "WriteHook",
    "WriteRejection",
    "case33bw_path",
    "fit_scale_factor",
]
