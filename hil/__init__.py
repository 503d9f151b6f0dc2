"""The hardware-in-the-loop rig: the simulated feeder that feederd is tested against.

Independent physics (pandapower AC power flow of the IEEE 33-bus case), simulated SunSpec
devices (PV inverters, batteries, a head meter, smart meters along the feeder over Modbus or
MQTT; controllable loads on a plain register map) and the pymodbus servers that expose them,
with faults; a feeder varied away from the controller's case (``hil.variation``); day
profiles, days unlike each other (``hil.days``), scenarios, KPIs and a Mosquitto broker for scenario runs (the runner that drives the
daemon through a scenario is ``controller.commands.rig.scenario``; the plots are
``hil.plots``).
"""

from hil.ami import AmiPublisher, AmiSchedule, AmiSettings
from hil.broker import BrokerError, MosquittoBroker
from hil.cases import case33bw_path
from hil.days import DaySettings, DayVariation
from hil.feeder_meters import FeederMeters, MeterPlan, meter_layout, plan_meters
from hil.kpis import Sample, compliant, kpis
from hil.physics import FeederPhysics, PhysicsError, PhysicsState
from hil.profiles import CloudPass, LoadStep, TapChange, clear_sky, load_shape
from hil.register_image import (
    BASE_ADDRESS,
    END_MARKER,
    SUNS_MARKER,
    SimSunSpecDevice,
    WriteHook,
    WriteRejection,
    fit_scale_factor,
)
from hil.rig import (
    DEFAULT_BATTERY_BUSES,
    DEFAULT_LOAD_BUSES,
    DEFAULT_PV_BUSES,
    HilRig,
    RigDevice,
)
from hil.scenario import Scenario, ScenarioError, bundled_scenario, load_scenario
from hil.server import DeviceFault, SunSpecServer
from hil.sim_devices import SimBattery, SimInverter, SimMeter
from hil.sim_load import SimLoad
from hil.variation import FeederVariation, RigVariation

__all__ = [
    "BASE_ADDRESS",
    "DEFAULT_BATTERY_BUSES",
    "DEFAULT_LOAD_BUSES",
    "DEFAULT_PV_BUSES",
    "END_MARKER",
    "SUNS_MARKER",
    "AmiPublisher",
    "AmiSchedule",
    "AmiSettings",
    "BrokerError",
    "CloudPass",
    "DaySettings",
    "DayVariation",
    "DeviceFault",
    "FeederMeters",
    "FeederPhysics",
    "FeederVariation",
    "HilRig",
    "LoadStep",
    "MeterPlan",
    "MosquittoBroker",
    "PhysicsError",
    "PhysicsState",
    "RigDevice",
    "RigVariation",
    "Sample",
    "Scenario",
    "ScenarioError",
    "SimBattery",
    "SimInverter",
    "SimLoad",
    "SimMeter",
    "SimSunSpecDevice",
    "SunSpecServer",
    "TapChange",
    "WriteHook",
    "WriteRejection",
    "bundled_scenario",
    "case33bw_path",
    "clear_sky",
    "compliant",
    "fit_scale_factor",
    "kpis",
    "load_scenario",
    "load_shape",
    "meter_layout",
    "plan_meters",
]
