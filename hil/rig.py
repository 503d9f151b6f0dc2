"""The HIL rig: the IEEE 33-bus feeder with PV, batteries and a head meter on Modbus TCP.

``pv_control_model=704`` gives the PV inverters the 700-series chain (models 1, 701, 702,
704) instead of models 1, 103, 120 and 123. Each inverter is rated ``pv_kva_ratio`` times its
kW rating in kVA (1.1 by default: IEEE 1547-2018 category B asks for 44 % vars at rated power,
which needs 1.09), and with ``pv_volt_var`` (the default) carries a volt-var model (126 with
123, 705 with 704) that feederd writes its fallback curve to.

``mqtt_pv_buses`` puts the PV inverters at those buses behind MQTT instead of Modbus: the rig
starts its own Mosquitto and a ``hil.mqtt_bridge.MqttPvBridge`` (their ``RigDevice`` carries
the broker's address and ``mqtt_root``; faults are for Modbus devices only).

``load_buses`` adds a controllable load (``hil.sim_load.SimLoad``, a register-map device,
rated ``load_kw``, its demand the rating times the load profile) at each bus given; none by
default.

``async with HilRig(...) as rig`` builds the feeder's physics, one simulated SunSpec device per
DER plus a meter at the head (bus 1), and serves each device on its own free port of 127.0.0.1
(unit id 1), or on ``base_port``, ``base_port + 1``, ... in the order of ``devices`` when
``base_port`` is given. ``case`` replaces the built-in 33-bus feeder by a MATPOWER file (the
DER buses must exist in it). The physics is re-solved

* shortly after any accepted write (coalesced: one solve per ``debounce_s``), so a curtailment
  or battery command written by any Modbus client shows in the head meter within milliseconds
  (unless ``solve_on_write`` is off: a runner that steps the physics before every read needs
  no more solves than that);
* on every ``await rig.step()`` and, unless ``physics_period_s`` is ``None``, every
  ``physics_period_s`` of real time in a background task. A step reads ``monotonic``, applies the
  load and sun profiles, integrates battery energy and applies due revert timers.

Each inverter injects its active and its reactive power (``SimInverter.q_kvar``, positive =
injecting vars: a fixed reactive mode, or its volt-var curve). The vars are computed from the
voltage the inverter saw at the last solve, so a volt-var curve responds one solve late (its
response time is one physics step, not iterated to a fixed point within a solve).

A varied feeder (``variation``, a ``hil.variation.RigVariation``; ``None``, the default, keeps
the case's own picture: one load scale for every bus, the case's impedances, exact meters, a
cloud over every inverter at once): the physics gets its own impedances (the controller's case
file is untouched), every load bus its own factor (customer classes by hour of ``now()``,
nominal error, noise; the feeder's total still follows ``load_scale``), the head meter and the
bus meters their accuracy class, and each inverter sees ``clouds`` when the front reaches its
bus. ``clouds`` (``hil.profiles.CloudPass``, timed at the substation) multiply
``pv_available_frac``, which then should not hold them too.

``days`` (a ``hil.days.DayVariation``) makes no two days alike: each day its own load level
and timing bus by bus (times whatever the variation gives), from the rig's ``t``; the
scenario lays the day's haze and cloud passes over ``pv_available_frac`` and ``clouds``. ``tz``
is the feeder's local time zone (the customer classes' hours are local; ``now`` stays UTC).

Smart meters along the feeder (``meter_buses``: ``"all"`` the case's load buses, ``"half"``
every other one, or a list; none by default), each measuring its bus's customers (P, Q,
consumption positive, the DERs there excluded) and voltage, over ``meter_transport``:
``"modbus"`` (SunSpec model 203, or 201 at ``single_phase_meter_buses``, named ``mNN``, unit
ids 1, 2, ... behind one gateway port), ``"mqtt"`` (AMI meters ``amiNN`` publishing JSON on
the rig's Mosquitto at their own cadence, see ``hil.ami``; ``ami`` sets how), or ``"mixed"``
(alternating). Their readings' timestamps come from ``now`` (wall clock by default; a
simulation passes its ``FakeClock.now``). ``miscalibrate`` makes a meter lie (bad data).

Profiles are functions of ``t``, the seconds of ``monotonic`` since the rig started. With a fake
``monotonic`` the rig runs in simulated time: advance the clock, then ``await rig.step()``.
``slack_v_pu`` is the substation busbar's voltage (p.u.), e.g. an on-load tap changer's steps:
``None`` (as the option, or as what it returns at ``t``) holds the case's slack voltage. The
head meter measures the busbar, so a controller that reads it sees each change at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from hil.ami import AmiPublisher, AmiSettings, ami_topic
from hil.broker import MosquittoBroker
from hil.days import DayVariation
from hil.feeder_meters import FeederMeters, MeterLayout, MeterTransport, meter_layout, plan_meters
from hil.mqtt_bridge import MqttPvBridge
from hil.physics import SLACK_V_RANGE_PU, FeederPhysics, PhysicsState
from hil.profiles import CloudPass
from hil.register_image import SimSunSpecDevice
from hil.server import DeviceFault, ServedImage, SunSpecServer
from hil.sim_devices import SimBattery, SimInverter, SimMeter
from hil.sim_load import LOAD_MAP, SimLoad
from hil.variation import FeederVariation, RigVariation

__all__ = [
    "DEFAULT_BATTERY_BUSES",
    "DEFAULT_LOAD_BUSES",
    "DEFAULT_PV_BUSES",
    "HilRig",
    "RigDevice",
]

log = structlog.get_logger("feederd.hil")

DEFAULT_PV_BUSES = (7, 10, 13, 15, 17, 18, 21, 24, 25, 29, 31, 33)
DEFAULT_BATTERY_BUSES = (8, 14, 26, 30)
DEFAULT_LOAD_BUSES = (12, 28)
"""Where ``feederd sim --serve`` puts its controllable loads (the rig's default has none)."""
UNIT = 1
AMI_MAX_AGE_S = 120.0
"""What the rig's config tells the controller an AMI reading is good for."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RigDevice:
    """Where to reach one simulated device and what it is rated for."""

    name: str
    kind: str
    """``"pv"``, ``"battery"``, ``"meter"`` or ``"load"``."""
    bus: int
    host: str
    port: int
    unit: int
    p_max_kw: float
    """PV/battery rating; the meter's measuring range."""
    energy_kwh: float | None
    """Battery capacity; ``None`` for the others."""
    s_max_kva: float | None = None
    """A PV inverter's apparent-power rating (``None`` for the others)."""
    register_map: str | None = None
    """The register map a config names for a non-SunSpec device (loads)."""
    mqtt_root: str | None = None
    """For a device behind the rig's MQTT broker (``host``/``port``): its topic root."""
    telemetry_topic: str | None = None
    """For an AMI meter: where it publishes its readings."""


def _one(_t: float) -> float:
    """The default profile: nominal load, full sun."""
    return 1.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class HilRig:
    """The simulated feeder behind Modbus servers; see the module docstring."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        load_scale: Callable[[float], float] = _one,
        pv_available_frac: Callable[[float], float] = _one,
        slack_v_pu: Callable[[float], float | None] | None = None,
        pv_buses: Sequence[int] = DEFAULT_PV_BUSES,
        pv_kw: float = 150.0,
        battery_buses: Sequence[int] = DEFAULT_BATTERY_BUSES,
        battery_kw: float = 250.0,
        battery_kwh: float = 500.0,
        battery_soc_pct: float = 60.0,
        meter_range_kw: float = 5000.0,
        physics_period_s: float | None = 0.5,
        debounce_s: float = 0.005,
        solve_on_write: bool = True,
        host: str = "127.0.0.1",
        case: Path | None = None,
        base_port: int | None = None,
        load_buses: Sequence[int] = (),
        load_kw: float = 100.0,
        pv_control_model: int = 123,
        pv_kva_ratio: float = 1.1,
        pv_volt_var: bool = True,
        mqtt_pv_buses: Sequence[int] = (),
        variation: RigVariation | None = None,
        now: Callable[[], datetime] = _utc_now,
        clouds: Sequence[CloudPass] = (),
        meter_buses: MeterLayout | Sequence[int] = (),
        meter_transport: MeterTransport = "modbus",
        single_phase_meter_buses: Sequence[int] = (),
        ami: AmiSettings | None = None,
        mqtt_root: str = "hil",
        days: DayVariation | None = None,
        tz: tzinfo = UTC,
    ) -> None:
        self.monotonic = monotonic
        self.tz = tz
        """The feeder's local time zone: the customer classes' hour of day is local."""
        self.now = now
        self.clouds = tuple(clouds)
        self.mqtt_root = mqtt_root
        self.load_scale = load_scale
        self.pv_available_frac = pv_available_frac
        self.slack_v_pu = slack_v_pu
        self.physics_period_s = physics_period_s
        self.debounce_s = debounce_s
        self.solve_on_write = solve_on_write
        self.host = host
        self.base_port = base_port
        self.variation: FeederVariation | None = None
        if variation is not None:
            case_physics = FeederPhysics(case)  # the case as the controller reads it
            self.variation = FeederVariation(
                variation,
                base_load_kw=case_physics.base_bus_load_kw,
                branches=case_physics.branches,
                head_bus=case_physics.head_bus,
            )
            self.physics = FeederPhysics(case, impedance_factors=self.variation.impedance_factors)
        else:
            self.physics = FeederPhysics(case)
        self.case_slack_v_pu = self.physics.slack_v_pu
        """The slack voltage the case file gives (what the busbar is held at by default)."""
        v_ll = 1000.0 * self.physics.head_vn_kv
        self.inverters: dict[str, SimInverter] = {}
        self.batteries: dict[str, SimBattery] = {}
        for bus in pv_buses:
            inv = SimInverter(
                f"pv{bus:02d}",
                bus,
                pv_kw,
                v_nominal_ll_v=v_ll,
                monotonic=monotonic,
                control_model=pv_control_model,
                s_max_kva=pv_kva_ratio * pv_kw,
                volt_var=pv_volt_var,
            )
            self.inverters[inv.name] = inv
        for bus in battery_buses:
            bat = SimBattery(
                f"bat{bus:02d}",
                bus,
                battery_kw,
                battery_kwh,
                battery_soc_pct,
                v_nominal_ll_v=v_ll,
                monotonic=monotonic,
            )
            self.batteries[bat.name] = bat
        self.meter = SimMeter(
            "head",
            bus=self.physics.head_bus,
            p_max_kw=meter_range_kw,
            v_nominal_ll_v=v_ll,
            monotonic=monotonic,
        )
        for der in (*self.inverters.values(), *self.batteries.values()):
            self.physics.add_der(der.name, der.bus)
            der.on_write = self._on_write
        self.days = None if days is None else days.for_buses(self.physics.load_buses)
        """The day-to-day variation of the loads (``hil.days``; ``None``: every day alike)."""
        self.loads: dict[str, SimLoad] = {}
        for bus in load_buses:
            ld = SimLoad(f"load{bus:02d}", bus, load_kw, monotonic=monotonic)
            self.physics.add_load(ld.name, bus)
            ld.on_write = self._on_load_write
            self.loads[ld.name] = ld
        self.meters = FeederMeters(
            plan_meters(
                meter_layout(self.physics.load_buses, meter_buses),
                meter_transport,
                single_phase=single_phase_meter_buses,
            ),
            base_load_kw=self.physics.base_bus_load_kw,
            bus_vn_kv=self.physics.bus_vn_kv,
            variation=self.variation,
            ami=ami if ami is not None else AmiSettings(seed=variation.seed if variation else 1),
            monotonic=monotonic,
            t0_s=0.0,
        )
        """The smart meters along the feeder (``hil.feeder_meters``)."""
        self._sims: dict[str, SimSunSpecDevice] = {
            **self.inverters,
            **self.batteries,
            self.meter.name: self.meter,
            **self.meters.modbus,
        }
        unknown = sorted(set(mqtt_pv_buses) - set(pv_buses))
        if unknown:
            raise ValueError(f"mqtt_pv_buses {unknown} have no PV inverter")
        self._mqtt_pv = {f"pv{bus:02d}": self.inverters[f"pv{bus:02d}"] for bus in mqtt_pv_buses}
        self._broker: MosquittoBroker | None = None
        self._bridge: MqttPvBridge | None = None
        self._ami: AmiPublisher | None = None
        served: dict[str, ServedImage] = {**self._sims, **self.loads}
        self._served = {  # each on its own port; the bus meters are behind their gateways
            name: sim
            for name, sim in served.items()
            if name not in self._mqtt_pv and name not in self.meters.modbus
        }
        self._servers: dict[str, SunSpecServer] = {}
        self._gateways: list[SunSpecServer] = []
        self._endpoints: dict[str, tuple[SunSpecServer, int]] = {}
        """Each Modbus device's server and unit id (the meters share gateways)."""
        self._devices: tuple[RigDevice, ...] = ()
        self._t0 = monotonic()
        self._state: PhysicsState | None = None
        self._solve_lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._solves = 0
        self._load_scale_now = 1.0
        self._bus_factors_now: dict[int, float] | None = None
        self._slack_v_now = self.case_slack_v_pu

    # --- what the rig offers ---------------------------------------------------------------

    @property
    def devices(self) -> tuple[RigDevice, ...]:
        return self._devices

    def config_devices(self, *, revert_s: float) -> list[dict[str, Any]]:
        """The ``[[devices]]`` entries a commissioning engineer would write for this rig."""
        entries: list[dict[str, Any]] = []
        for d in self._devices:
            entry: dict[str, Any] = {"name": d.name, "kind": d.kind, "bus": d.bus}
            if d.telemetry_topic is not None:  # an AMI meter: passive, read what it publishes
                entry["transport"] = {
                    "type": "mqtt",
                    "host": d.host,
                    "port": d.port,
                    "telemetry_topic": d.telemetry_topic,
                    "paths": {"p_kw": "p_w", "q_kvar": "q_var", "v_ll_v": "v_v", "timestamp": "ts"},
                    "scale": {"p_kw": 0.001, "q_kvar": 0.001},
                    "max_age_s": AMI_MAX_AGE_S,
                }
                entries.append(entry)
                continue
            if d.mqtt_root is not None:
                entry["transport"] = {
                    "type": "mqtt",
                    "host": d.host,
                    "port": d.port,
                    "telemetry_topic": f"{d.mqtt_root}/telemetry",
                    "paths": {"p_kw": "ac.p_w", "limit_pct": "limit_pct"},
                    "scale": {"p_kw": 0.001},
                    "setpoint_topic": f"{d.mqtt_root}/setpoint",
                    "status_topic": f"{d.mqtt_root}/status",
                    "max_age_s": 5.0,
                }
            else:
                entry["transport"] = {"type": "tcp", "host": d.host, "port": d.port, "unit": d.unit}
            if d.kind == "meter":
                if d.name == self.meter.name:
                    entry["head"] = True
            else:
                entry["rating_kw"] = d.p_max_kw
                entry["revert_s"] = revert_s
            if d.kind == "battery":
                entry["energy_kwh"] = d.energy_kwh
            if d.s_max_kva is not None:
                entry["rating_kva"] = d.s_max_kva
            if d.register_map is not None:
                entry["register_map"] = d.register_map
            entries.append(entry)
        return entries

    def device(self, name: str) -> RigDevice:
        for record in self._devices:
            if record.name == name:
                return record
        raise KeyError(f"no device named {name!r}")

    def sim(self, name: str) -> SimSunSpecDevice:
        """The simulated device behind ``name`` (for inspection in tests and KPIs)."""
        return self._sims[name]

    @property
    def load_kw(self) -> float:
        """What the controllable loads draw now."""
        return sum(ld.p_kw for ld in self.loads.values())

    @property
    def shed_kw(self) -> float:
        """How much below their demand the controllable loads draw now."""
        return sum(ld.shed_kw for ld in self.loads.values())

    @property
    def state(self) -> PhysicsState:
        """The latest power-flow solution."""
        if self._state is None:
            raise RuntimeError("the rig has not solved its physics yet")
        return self._state

    @property
    def solves(self) -> int:
        """How many power flows the rig has run."""
        return self._solves

    @property
    def t(self) -> float:
        """Seconds of ``monotonic`` since the rig was made: the profiles' time axis."""
        return self.monotonic() - self._t0

    def set_fault(self, name: str, fault: DeviceFault) -> None:
        server, unit = self._endpoints[name]
        server.set_fault(unit, fault)

    def fault(self, name: str) -> DeviceFault:
        server, unit = self._endpoints[name]
        return server.fault(unit)

    def set_silent(self, name: str, silent: bool = True) -> None:
        """Make device ``name`` stop (or resume) answering Modbus requests."""
        server, unit = self._endpoints[name]
        server.set_silent(unit, silent)

    def reset_connections(self, name: str) -> int:
        """Drop every client connection to device ``name``'s port now (it keeps listening;
        a meter's gateway drops its other meters' connections too)."""
        return self._endpoints[name][0].reset_connections()

    def miscalibrate(self, name: str, gain: float = 1.0) -> None:
        """Bad data: bus meter ``name`` reports its P and Q times ``gain`` from now on (−1 a
        wrong sign, 2 a wrong CT ratio; 1 heals it). Its voltage stays right."""
        if name not in self.meters.plans_by_name:
            raise KeyError(f"no bus meter named {name!r}")
        if not math.isfinite(gain):
            raise ValueError(f"gain must be finite, got {gain}")
        self.meters.gains[name] = gain
        self._dirty.set()

    @property
    def ami_publisher(self) -> AmiPublisher | None:
        """The AMI meters' publisher (``published``, ``dropped``), once started."""
        return self._ami

    @property
    def pv_kw(self) -> float:
        """What the PV inverters feed in now."""
        return sum(inv.p_kw for inv in self.inverters.values())

    @property
    def pv_kvar(self) -> float:
        """What reactive power the PV inverters feed in now (kvar, negative: absorbed)."""
        return sum(inv.q_kvar for inv in self.inverters.values())

    @property
    def pv_available_kw(self) -> float:
        """What the PV could feed in without limits."""
        return sum(min(inv.available_kw, inv.w_max_kw) for inv in self.inverters.values())

    @property
    def curtailed_kw(self) -> float:
        return sum(inv.curtailed_kw for inv in self.inverters.values())

    @property
    def battery_kw(self) -> float:
        """The batteries' power, discharge positive."""
        return sum(bat.p_kw for bat in self.batteries.values())

    @property
    def load_scale_now(self) -> float:
        """The load scale of the last step."""
        return self._load_scale_now

    @property
    def slack_v_pu_now(self) -> float:
        """The busbar's voltage (p.u.) as of the last step."""
        return self._slack_v_now

    # --- lifetime --------------------------------------------------------------------------

    async def __aenter__(self) -> HilRig:
        await self.step()
        try:
            for i, (name, sim) in enumerate(self._served.items()):
                port = 0 if self.base_port is None else self.base_port + i
                server = SunSpecServer({UNIT: sim}, host=self.host, port=port)
                await server.start()
                self._servers[name] = server
                self._endpoints[name] = (server, UNIT)
            for g, units in enumerate(self.meters.gateways()):
                port = 0 if self.base_port is None else self.base_port + len(self._served) + g
                server = SunSpecServer(dict(units), host=self.host, port=port)
                await server.start()
                self._gateways.append(server)
                for unit, meter in units.items():
                    self._endpoints[meter.name] = (server, unit)
            if self._mqtt_pv or self.meters.ami_names:
                self._broker = MosquittoBroker()
                await self._broker.start()
            if self._mqtt_pv:
                assert self._broker is not None
                self._bridge = MqttPvBridge(
                    self._mqtt_pv, host=self._broker.host, port=self._broker.port
                )
                await self._bridge.__aenter__()
            if self.meters.ami_names:
                assert self._broker is not None
                self._ami = AmiPublisher(
                    host=self._broker.host, port=self._broker.port, root=self.mqtt_root
                )
                await self._ami.__aenter__()
        except BaseException:
            await self._close()
            raise
        self._devices = tuple(
            self._record(name)
            for name in (*self._served, *self._mqtt_pv, *(p.name for p in self.meters.plans))
        )
        if self.solve_on_write:
            self._tasks.append(asyncio.create_task(self._solver(), name="hil.rig.solver"))
        if self.physics_period_s is not None:
            self._tasks.append(asyncio.create_task(self._ticker(), name="hil.rig.physics"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for server in (*self._servers.values(), *self._gateways):
            await server.stop()
        self._servers.clear()
        self._gateways.clear()
        self._endpoints.clear()
        if self._ami is not None:
            await self._ami.__aexit__(None, None, None)
            self._ami = None
        if self._bridge is not None:
            await self._bridge.__aexit__(None, None, None)
            self._bridge = None
        if self._broker is not None:
            await self._broker.__aexit__(None, None, None)
            self._broker = None

    def _record(self, name: str) -> RigDevice:
        plan = self.meters.plans_by_name.get(name)
        if plan is not None and plan.transport == "mqtt":
            assert self._broker is not None
            return RigDevice(
                name=name,
                kind="meter",
                bus=plan.bus,
                host=self._broker.host,
                port=self._broker.port,
                unit=0,
                p_max_kw=0.0,
                energy_kwh=None,
                mqtt_root=f"{self.mqtt_root}/ami/{name}",
                telemetry_topic=ami_topic(self.mqtt_root, name),
            )
        if name in self._mqtt_pv:
            assert self._broker is not None
            inv = self._mqtt_pv[name]
            return RigDevice(
                name=name,
                kind=inv.kind,
                bus=inv.bus,
                host=self._broker.host,
                port=self._broker.port,
                unit=0,
                p_max_kw=inv.w_max_kw,
                energy_kwh=None,
                mqtt_root=f"hil/{name}",
            )
        if name in self.loads:
            ld = self.loads[name]
            return RigDevice(
                name=name,
                kind=ld.kind,
                bus=ld.bus,
                host=self.host,
                port=self._servers[name].port,
                unit=UNIT,
                p_max_kw=ld.rating_kw,
                energy_kwh=None,
                register_map=LOAD_MAP,
            )
        sim = self._sims[name]
        s_max = None
        if isinstance(sim, SimInverter):
            bus, p_max, energy, s_max = sim.bus, sim.w_max_kw, None, sim.s_max_kva
        elif isinstance(sim, SimBattery):
            bus, p_max, energy = sim.bus, sim.p_max_kw, sim.energy_kwh
        else:
            assert isinstance(sim, SimMeter)
            bus, p_max, energy = sim.bus, sim.p_max_kw, None
        server, unit = self._endpoints[name]
        return RigDevice(
            name=name,
            kind=sim.kind,
            bus=bus,
            host=self.host,
            port=server.port,
            unit=unit,
            p_max_kw=p_max,
            energy_kwh=energy,
            s_max_kva=s_max,
        )

    # --- physics ---------------------------------------------------------------------------

    async def step(self) -> PhysicsState:
        """Advance every device to ``monotonic()``, apply the profiles and solve the power flow."""
        t = self.t
        scale = float(self.load_scale(t))
        if not scale >= 0.0:  # also catches NaN
            raise ValueError(f"load_scale({t:.1f}) = {scale}: must be >= 0")
        self._load_scale_now = scale
        self._bus_factors_now = self._bus_factors(t, scale)
        self._slack_v_now = self._busbar(t)
        sun = float(self.pv_available_frac(t))
        for inv in self.inverters.values():
            frac = sun * self._cloud_at(inv.bus, t)
            inv.update(available_kw=min(max(frac, 0.0), 1.0) * inv.w_max_kw)
        for bat in self.batteries.values():
            bat.update()
        for ld in self.loads.values():
            ld.update(demand_kw=scale * ld.rating_kw)
        state = await self.settle(force=True)
        if self._ami is not None:
            self._ami.submit(self.meters.ami_step(state, t, self.now().timestamp()))
        return state

    def _bus_factors(self, t: float, scale: float) -> dict[int, float] | None:
        """Each load bus's factor at ``t`` on a varied feeder, times the day's draws with
        ``days`` (``None``: one scale for all)."""
        factors: dict[int, float] | None = None
        if self.variation is not None:
            now = self.now().astimezone(self.tz)
            hour = now.hour + now.minute / 60.0 + (now.second + now.microsecond / 1e6) / 3600.0
            factors = self.variation.load_factors(t_s=t, hour=hour, scale=scale)
        if self.days is None:
            return factors
        if factors is None:
            factors = dict.fromkeys(self.physics.load_buses, scale)
        day = self.days.bus_factors(t)
        return {b: factors[b] * float(x) for b, x in zip(self.days.buses, day, strict=True)}

    def _cloud_at(self, bus: int, t: float) -> float:
        """What the clouds leave of the sun at ``bus`` at ``t`` (their front reaches each bus
        at its own time on a varied feeder)."""
        delay = 0.0 if self.variation is None else self.variation.cloud_delay_s(bus)
        value = 1.0
        for cloud in self.clouds:
            value *= cloud.factor(t - delay)
        return value

    def _busbar(self, t: float) -> float:
        v = None if self.slack_v_pu is None else self.slack_v_pu(t)
        if v is None:
            return self.case_slack_v_pu
        v = float(v)
        low, high = SLACK_V_RANGE_PU
        if not low <= v <= high:  # also catches NaN
            raise ValueError(f"slack_v_pu({t:.1f}) = {v}: must be within {low:g}..{high:g} p.u.")
        return v

    async def settle(self, *, force: bool = False) -> PhysicsState:
        """Run any pending (debounced) solve now, or wait for the one in flight, and return
        the latest state: it includes every write accepted before the call."""
        if force or self._dirty.is_set() or self._state is None:
            self._dirty.clear()
            await self._solve()
        else:
            async with self._solve_lock:  # the debounced solve took the writes: let it finish
                pass
        return self.state

    def _on_write(self, _device: SimSunSpecDevice, _model_id: int) -> None:
        self._dirty.set()

    def _on_load_write(self, _load: SimLoad, _address: int) -> None:
        self._dirty.set()

    async def _solver(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce_s)
            if self._dirty.is_set():
                self._dirty.clear()
                await self._solve()

    async def _ticker(self) -> None:
        assert self.physics_period_s is not None
        while True:
            await asyncio.sleep(self.physics_period_s)
            try:
                await self.step()
            except Exception:  # one bad step must not stop the rig
                log.exception("hil_physics_step_failed")

    async def _solve(self) -> None:
        async with self._solve_lock:
            scale, slack_v_pu = self._load_scale_now, self._slack_v_now
            factors = self._bus_factors_now
            # an inverter's vars follow the voltage of the last solve (a volt-var curve's
            # response time is one physics step); the batteries run at unity power factor
            injections = [(d.name, d.p_kw, d.q_kvar) for d in self.inverters.values()]
            injections += [(d.name, d.p_kw, 0.0) for d in self.batteries.values()]
            injections += [(name, -ld.p_kw, 0.0) for name, ld in self.loads.items()]
            state = await asyncio.to_thread(
                self._solve_sync, scale, factors, slack_v_pu, injections
            )
            self._state = state
            self._solves += 1
            self._update_meters(state)
            for inv in self.inverters.values():
                inv.set_voltage(state.v_pu[inv.bus])
            for bat in self.batteries.values():
                bat.set_voltage(state.v_pu[bat.bus])

    def _update_meters(self, state: PhysicsState) -> None:
        """The head meter and the bus meters read the new solution (with their accuracy)."""
        p, q, v = state.head_p_kw, state.head_q_kvar, state.head_v_ll_v
        a: float | None = state.head_a
        t = self.t
        if self.variation is not None:
            r = self.variation.read(0, t_s=t, p_kw=p, q_kvar=q, v_ll_v=v, head=True)
            p, q, v, a = r.p_kw, r.q_kvar, r.v_ll_v, None
        self.meter.update(p_kw=p, q_kvar=q, v_ll_v=v, a=a)
        self.meters.update_modbus(state, t)

    def _solve_sync(
        self,
        scale: float,
        factors: dict[int, float] | None,
        slack_v_pu: float,
        injections: list[tuple[str, float, float]],
    ) -> PhysicsState:
        """Runs in a worker thread, one at a time (under the solve lock)."""
        self.physics.load_scale = scale
        if factors is not None:
            self.physics.set_bus_load_factors(factors)
        self.physics.slack_v_pu = slack_v_pu
        for name, p_kw, q_kvar in injections:
            if name in self.loads:
                self.physics.set_load(name, -p_kw)
            else:
                self.physics.set_der(name, p_kw, q_kvar)
        return self.physics.solve()
