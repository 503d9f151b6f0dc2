"""The config's tables as pydantic models: every number bounded, NaN and infinity refused, a
device's transport a tagged union (with the first format's flat keys still read)."""

from __future__ import annotations

import ipaddress
import itertools
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

if TYPE_CHECKING:  # loaded when a config is: `feederd event --journal` needs neither
    pass

from controller.config.errors import short_value
from controller.config.fields import MAX_KW, FilePath
from controller.config.fields import Strict as _Strict
from controller.config.flex import FlexConfig
from controller.config.openadr import OpenAdrConfig
from controller.config.outlook import ForecastConfig, TariffConfig, TimeZone

MAX_KWH = 1e7
"""No energy (a battery's) is 10 GWh or more."""
MIN_RATING_KW = 0.01
"""A device's rating or energy is at least 10 W (10 Wh): smaller is a typing error (kW vs W)."""
MAX_PRICE = 1000.0
"""Prices and costs per kWh are within ±1000 (any currency)."""
MAX_BUS_ID = 2**31 - 1
Kw = Annotated[float, Field(ge=-MAX_KW, le=MAX_KW)]
RatingKw = Annotated[float, Field(ge=MIN_RATING_KW, le=MAX_KW)]
BusId = Annotated[int, Field(ge=0, le=MAX_BUS_ID)]
PerUnit = Annotated[float, Field(gt=0, le=2.0)]
AccuracyPct = Annotated[float, Field(gt=0.0, le=50.0)]
"""A meter's accuracy class, % of the reading (0.2, 0.5, 1, 2 are the usual classes)."""


MIN_BASE_KV = 0.01
MAX_BASE_KV = 1000.0
MIN_BASE_MVA = 0.001
MAX_BASE_MVA = 10_000.0
MAX_OHM = 10_000.0
MAX_BUSES = 100_000
MAX_DEVICES = 10_000


class BusTable(_Strict):
    id: BusId
    p_kw: Kw = 0.0
    q_kvar: Kw = 0.0
    base_kv: Annotated[float, Field(ge=MIN_BASE_KV, le=MAX_BASE_KV)]
    v_min_pu: PerUnit = 0.95
    v_max_pu: PerUnit = 1.05


class BranchTable(_Strict):
    from_bus: BusId
    to_bus: BusId
    r_ohm: Annotated[float, Field(ge=0, le=MAX_OHM)]
    x_ohm: Annotated[float, Field(ge=0, le=MAX_OHM)]
    rating_kva: Annotated[float, Field(gt=0, le=MAX_KW)] | None = None


class FeederConfig(_Strict):
    """Either ``case`` (a MATPOWER file, or ``builtin:case33bw``) or inline buses and branches."""

    case: FilePath | None = None
    # what the feeder can carry at its head, kW (DR events are bounded by a multiple of it);
    # unset: the case's total load
    rating_kw: Annotated[float, Field(gt=0, le=MAX_KW)] | None = None
    base_mva: Annotated[float, Field(ge=MIN_BASE_MVA, le=MAX_BASE_MVA)] = 10.0
    slack_bus: BusId = 1
    buses: Annotated[list[BusTable], Field(max_length=MAX_BUSES)] = Field(default_factory=list)
    branches: Annotated[list[BranchTable], Field(max_length=MAX_BUSES)] = Field(
        default_factory=list
    )
    v_min_pu: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    v_max_pu: Annotated[float, Field(gt=1.0, lt=1.5)] = 1.05
    # The dispatch aims this far inside the band: the linear model's voltages differ from the
    # AC ones by a few thousandths of a p.u., and a bus held at the band's edge in the model
    # would sit just outside it on the feeder.
    v_margin_pu: Annotated[float, Field(ge=0.0, le=0.02)] = 0.002
    # "case": a bus whose case gives it voltage limits is held within those (the margin
    # inside them); the others, and every bus with "config", within v_min_pu..v_max_pu.
    voltage_limits: Literal["config", "case"] = "config"
    # The slack bus's voltage when the head meter does not measure it (unset: the case's,
    # VG of its generator, else VM; 1.0 for inline tables).
    v_slack_pu: Annotated[float, Field(ge=0.8, le=1.2)] | None = None
    # Take the slack voltage from the head meter's line-to-line voltage each interval.
    v_slack_from_meter: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> FeederConfig:
        if (self.case is None) == (not self.buses):
            raise ValueError(
                "give either 'case' (a MATPOWER file) or inline 'buses' and 'branches'"
            )
        if self.v_max_pu - self.v_min_pu <= 2 * self.v_margin_pu:
            raise ValueError(
                f"v_margin_pu {self.v_margin_pu:g} leaves no band between "
                f"v_min_pu {self.v_min_pu:g} and v_max_pu {self.v_max_pu:g}"
            )
        return self

    @property
    def dispatch_band_pu(self) -> tuple[float, float]:
        """The band the dispatch holds: the configured one, `v_margin_pu` inside each edge."""
        return self.v_min_pu + self.v_margin_pu, self.v_max_pu - self.v_margin_pu


_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def _host(value: str) -> str:
    """A DNS name (labels of ASCII letters, digits, '-' and '_', 63 at most each) or an IP
    address: what the resolver takes without raising (it refuses an empty or long label)."""
    try:
        ipaddress.ip_address(value)  # an IPv6 address may name its zone (fe80::1%eth0)
        if value.isprintable() and " " not in value:
            return value
    except ValueError:
        pass
    name = value.removesuffix(".")
    if name and all(_HOST_NAME.match(label) for label in name.split(".")):
        return value
    raise ValueError("must be a host name or an IP address")


Host = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_host)]
Unit = Annotated[int, Field(ge=0, le=255)]
# an MQTT topic: no wildcard, no NUL (the protocol forbids it), no other control character
Topic = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^#+\x00-\x1f\x7f]+$")]
TopicFilter = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f]+$")]


class TcpTransport(_Strict):
    """Modbus TCP to a device or a gateway (devices behind one gateway share a link)."""

    type: Literal["tcp"]
    host: Host
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit: Unit = 1
    connections: Annotated[int, Field(ge=1, le=16)] = 1  # parallel connections to a gateway

    @property
    def address(self) -> str:
        return f"tcp {self.host}:{self.port} unit {self.unit}"

    @property
    def link_key(self) -> tuple[str, str, int]:
        return (self.type, self.host, self.port)


class TlsTransport(_Strict):
    """Modbus/TCP Security: TLS with a client certificate (files next to the config)."""

    type: Literal["tls"]
    host: Host
    port: Annotated[int, Field(ge=1, le=65535)] = 802
    unit: Unit = 1
    connections: Annotated[int, Field(ge=1, le=16)] = 1
    cert_file: FilePath
    key_file: FilePath
    ca_file: FilePath | None = None

    @property
    def address(self) -> str:
        return f"tls {self.host}:{self.port} unit {self.unit}"

    @property
    def link_key(self) -> tuple[str, str, int]:
        return (self.type, self.host, self.port)


class RtuTransport(_Strict):
    """Modbus RTU on a serial line (devices on one line share it, one request at a time)."""

    type: Literal["rtu"]
    serial_port: FilePath
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 19200
    parity: Literal["N", "E", "O"] = "N"
    unit: Unit = 1

    @property
    def address(self) -> str:
        return f"rtu {self.serial_port} unit {self.unit}"

    @property
    def link_key(self) -> tuple[str, str, int]:
        return (self.type, self.serial_port, 0)


_Field = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")]
_JsonPath = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


def _scale(value: float) -> float:
    if not 1e-6 <= abs(value) <= 1e6:
        raise ValueError("a scale is not zero, and at most a million either way (1e-6..1e6)")
    return value


_Scale = Annotated[float, AfterValidator(_scale)]


class MqttTransport(_Strict):
    """An MQTT device: telemetry JSON on a topic, numbers at dotted paths (``ac.p_w``)."""

    type: Literal["mqtt"]
    host: Host
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    telemetry_topic: Topic
    # reading field (p_kw, q_kvar, v_ll_v, a, limit_kw, limit_pct) -> dotted JSON path
    paths: Annotated[dict[_Field, _JsonPath], Field(max_length=16)]
    # e.g. {p_kw = 0.001} for watts (not zero, at most a million either way)
    scale: Annotated[dict[_Field, _Scale], Field(max_length=16)] = Field(default_factory=dict)
    setpoint_topic: Topic | None = None
    status_topic: TopicFilter | None = None
    max_age_s: Annotated[float, Field(ge=0.1, le=86400)] = 10.0

    @model_validator(mode="after")
    def _power(self) -> MqttTransport:
        if "p_kw" not in self.paths:
            raise ValueError("'paths' needs a JSON path for 'p_kw'")
        return self

    @property
    def address(self) -> str:
        return f"mqtt {self.host}:{self.port} {self.telemetry_topic}"

    @property
    def link_key(self) -> tuple[str, str, int]:
        return (self.type, self.host, self.port)


Transport = Annotated[
    TcpTransport | TlsTransport | RtuTransport | MqttTransport, Field(discriminator="type")
]
TRANSPORT_TYPES = ("tcp", "tls", "rtu", "mqtt")

# The flat keys of the first config format, and where each went in [devices.transport].
_LEGACY_TRANSPORTS = {"modbus-tcp": "tcp", "modbus-tls": "tls", "modbus-rtu": "rtu", "mqtt": "mqtt"}
_LEGACY_KEYS = {
    "host": "host",
    "port": "port",
    "unit": "unit",
    "connections": "connections",
    "serial_port": "serial_port",
    "baudrate": "baudrate",
    "parity": "parity",
    "tls_cert_file": "cert_file",
    "tls_key_file": "key_file",
    "tls_ca_file": "ca_file",
}


def _legacy_transport(data: dict[str, Any]) -> dict[str, Any]:
    """A device written in the first format (``transport = "modbus-tcp"`` and flat ``host``,
    ``port``, ``unit``, ... or an ``[devices.mqtt]`` table) in the current one."""
    flat = [k for k in (*_LEGACY_KEYS, "mqtt") if k in data]
    transport = data.get("transport")
    if isinstance(transport, dict):
        if flat:
            raise ValueError(
                f"'{flat[0]}' belongs in the [devices.transport] table (with type = "
                f'"{transport.get("type", "tcp")}")'
            )
        return data
    if transport is None and not flat:
        return data  # the "missing transport" error says what to write
    if transport is None:
        transport = "modbus-tcp"
    if not isinstance(transport, str) or transport not in _LEGACY_TRANSPORTS:
        kinds = ", ".join(TRANSPORT_TYPES)
        raise ValueError(
            f"transport {short_value(transport)} is not known: write a [devices.transport] table "
            f"with type = one of {kinds}"
        )
    out = {k: v for k, v in data.items() if k not in (*_LEGACY_KEYS, "mqtt", "transport")}
    table: dict[str, Any] = {"type": _LEGACY_TRANSPORTS[transport]}
    for old, new in _LEGACY_KEYS.items():
        if old in data:
            table[new] = data[old]
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict):
        table.update(mqtt)
    elif mqtt is not None:
        raise ValueError("'mqtt' must be a table")
    out["transport"] = table
    return out


class DeviceConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Literal["meter", "pv", "battery", "load"]
    bus: BusId
    transport: Transport
    register_map: FilePath | None = None  # a TOML map (or builtin:NAME): non-SunSpec meters, loads
    rating_kw: RatingKw | None = None
    energy_kwh: Annotated[float, Field(ge=MIN_RATING_KW, le=MAX_KWH)] | None = None
    revert_s: Annotated[int, Field(ge=1, le=65534)] = 60
    revert_limit_pct: Annotated[float, Field(ge=0.1, le=100.0)] = 100.0  # model 704's revert
    # PV: the inverter's apparent-power rating (kVA), at least rating_kw; unset: rating_kw.
    # What it declares (SunSpec 120/121/702) is believed up to this, never above it
    rating_kva: RatingKw | None = None
    ramp_kw_per_s: Annotated[float, Field(ge=0.001, le=MAX_KW)] | None = None
    head: bool = False
    # loads: rating_kw is the nominal draw; min_kw the floor it may be shed to; serving less
    # than its demand costs shed_cost_per_kwh (default 0.50, five times the default energy
    # price, so PV and batteries are used first and a load is shed only when a limit needs it)
    min_kw: Annotated[float, Field(ge=0, le=MAX_KW)] = 0.0
    shed_cost_per_kwh: Annotated[float, Field(ge=0, le=MAX_PRICE)] = 0.50
    # meters: the accuracy class, % of the reading (the [estimation] table's when unset)
    accuracy_pct: AccuracyPct | None = None

    @model_validator(mode="before")
    @classmethod
    def _first_format(cls, data: Any) -> Any:
        return _legacy_transport(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _ratings(self) -> DeviceConfig:
        if self.kind in ("pv", "battery", "load") and self.rating_kw is None:
            raise ValueError(f"a {self.kind} device needs 'rating_kw'")
        if self.kind == "battery" and self.energy_kwh is None:
            raise ValueError("a battery needs 'energy_kwh'")
        if self.rating_kva is not None:
            if self.kind != "pv":
                raise ValueError("'rating_kva' is for PV inverters only (kind = \"pv\")")
            if self.rating_kw is not None and self.rating_kva < self.rating_kw:
                raise ValueError(
                    f"'rating_kva' {self.rating_kva:g} is below 'rating_kw' "
                    f"{self.rating_kw:g}: an inverter's kVA rating is at least its kW rating"
                )
        if self.kind != "meter" and "accuracy_pct" in self.model_fields_set:
            raise ValueError("'accuracy_pct' is for meters only (kind = \"meter\")")
        if self.kind != "load":
            for key in ("min_kw", "shed_cost_per_kwh"):
                if key in self.model_fields_set:
                    raise ValueError(f"'{key}' is for loads only (kind = \"load\")")
        elif self.rating_kw is not None and self.min_kw > self.rating_kw:
            raise ValueError(
                f"'min_kw' {self.min_kw:g} exceeds 'rating_kw' {self.rating_kw:g}: "
                "no setpoint can meet both"
            )
        return self

    @model_validator(mode="after")
    def _transport(self) -> DeviceConfig:
        t = self.transport
        if isinstance(t, MqttTransport):
            if self.kind == "battery":
                raise ValueError("a battery over mqtt is not supported; use Modbus (SunSpec)")
            if self.kind == "load" and not t.setpoint_topic:
                raise ValueError("an mqtt load needs 'setpoint_topic' in [devices.transport]")
            if self.register_map is not None:
                raise ValueError("'register_map' is for Modbus meters and loads only")
            return self
        if self.register_map is not None and self.kind not in ("meter", "load"):
            raise ValueError("'register_map' is for Modbus meters and loads only")
        if self.kind == "load" and self.register_map is None:
            raise ValueError(
                "a Modbus load needs 'register_map' with points p_kw, p_limit_kw (writable) and "
                'revert_s (writable), e.g. "builtin:controllable_load"'
            )
        return self

    @property
    def address(self) -> str:
        """Where the device is, as a commissioning engineer would write it down."""
        return self.transport.address


class EstimationConfig(_Strict):
    """State estimation from the meters along the feeder (``optimizer.StateEstimator``)."""

    # unset: on when any meter along the feeder (kind = "meter" without head) is configured
    enabled: bool | None = None
    # a bus without a meter keeps the case's load scaled to the head meter (the estimate
    # without meters) as a pseudo-measurement with this sigma, a share of that load: large, so
    # that a real measurement outweighs it
    pseudo_sigma_frac: Annotated[float, Field(gt=0.0, le=10.0)] = 0.5
    # a measurement whose normalised residual is above this is dropped as bad data (then the
    # next largest, at most max_drops per interval)
    bad_data_threshold: Annotated[float, Field(ge=1.0, le=100.0)] = 4.0
    max_drops: Annotated[int, Field(ge=0, le=100)] = 5
    # a meter's accuracy class: the sigma of its P and Q in % of the reading, never below
    # floor_kw (kW, kvar: a reading near zero is not exact), and of its voltage
    accuracy_pct: AccuracyPct = 1.0
    v_accuracy_pct: Annotated[float, Field(gt=0.0, le=10.0)] = 0.5
    floor_kw: Annotated[float, Field(gt=0.0, le=1000.0)] = 0.5
    # an older reading (MQTT meters publish every 15-60 s) is widened, in quadrature, by this
    # share of the reading per minute of age: what a load or a voltage drifts in a minute
    age_pq_pct_per_min: Annotated[float, Field(ge=0.0, le=100.0)] = 5.0
    age_v_pct_per_min: Annotated[float, Field(ge=0.0, le=10.0)] = 0.2


MAX_HORIZON_H = 168.0
"""A week: no plan looks further (prices and events are bounded to a week too)."""
MAX_HORIZON_STEPS = 1000
"""The most steps a horizon may have (each is a copy of the dispatch model)."""


class ControlConfig(_Strict):
    """Feedback on the import and export limits (``controller.correction``), firm limits
    (``controller.setpoints``)."""

    # each interval, the head import measured less the one the last dispatch predicted
    # tightens (or loosens) the limit the next dispatch holds; false: the model alone
    limit_correction: bool = True
    # share of each new error taken into the correction (over 0, at most 1)
    correction_gain: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    # anti-windup: a correction stays within this % of its limit (0-50) ...
    correction_max_pct: Annotated[float, Field(ge=0.0, le=50.0)] = 5.0
    # ... or this many kW, whichever is more (0-100000; a zero-export limit has no size)
    correction_max_floor_kw: Annotated[float, Field(ge=0.0, le=1e5)] = 20.0
    # a limit that moves by more than this % of its size (over 0, at most 1000) starts afresh
    correction_reset_pct: Annotated[float, Field(gt=0.0, le=1000.0)] = 10.0
    # the dispatch aims this % of the limit inside it (0-10): held at or just below it
    limit_margin_pct: Annotated[float, Field(ge=0.0, le=10.0)] = 0.1
    # while a limit is in force, the devices left uncapped (PV not curtailed under an export
    # limit, loads not shed under an import limit) get ceilings that share the headroom the
    # dispatch leaves; false: they run free (a clearing cloud can carry the export past it)
    firm_limits: bool = True
    # the sun's and the loads' ramps over the last intervals are carried one interval ahead
    # in the direction that threatens the limit in force; false: the last reading only
    ramp_anticipation: bool = True
    # the PV inverters with fixed reactive-power points (SunSpec 123 VArPct, 704 VarSet) are
    # dispatched in P and Q inside their kVA rating: vars before curtailment where that is
    # cheaper; false: active power only (the inverters' own reactive settings stay)
    reactive_power: bool = True
    # what a kvarh of PV vars costs the dispatch, either way (0-1000, the currency of
    # price_per_kwh): vars are used where they save more (curtailment, losses, a voltage
    # held) than this; higher keeps the inverters nearer unity power factor
    reactive_cost_per_kvarh: Annotated[float, Field(ge=0.0, le=MAX_PRICE)] = 0.01
    # the volt-var curve written once to each inverter with SunSpec 126 or 705, in force
    # whenever feederd's fixed reactive power has reverted (feederd stopped or silent):
    # points [v_pu, q_pct] with q in % of WMax, positive injecting; the default is IEEE
    # 1547-2018 category B. volt_var_fallback = false writes none.
    volt_var_fallback: bool = True
    volt_var_curve: Annotated[
        list[
            tuple[Annotated[float, Field(gt=0.5, lt=1.5)], Annotated[float, Field(ge=-100, le=100)]]
        ],
        Field(min_length=2, max_length=20),
    ] = Field(default_factory=lambda: [(0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -44.0)])

    # The dispatch's horizon (``optimizer.horizon.HorizonSpec.multi_resolution``): the next
    # horizon_fine_steps intervals at the control interval, then blocks of horizon_block_s
    # seconds out to horizon_h hours (0-168; 0: the interval alone, no plan). Step 0 is
    # applied; the rest is the plan that lets the batteries get ready for what is coming.
    horizon_h: Annotated[float, Field(ge=0.0, le=MAX_HORIZON_H)] = 24.0
    horizon_fine_steps: Annotated[int, Field(ge=1, le=MAX_HORIZON_STEPS)] = 4
    horizon_block_s: Annotated[float, Field(ge=1.0, le=86400.0)] = 900.0
    # how many leading steps get the full network model (every bus's voltage, the loss cuts);
    # the later steps a reduced one (head import, a few watched buses)
    horizon_network_steps: Annotated[int, Field(ge=1, le=MAX_HORIZON_STEPS)] = 1
    # what a kWh left in the batteries at the end of the horizon is worth (-1000..1000);
    # unset: the mean import price over the horizon
    battery_end_value_per_kwh: Annotated[float, Field(ge=-MAX_PRICE, le=MAX_PRICE)] | None = None

    @model_validator(mode="after")
    def _curve(self) -> ControlConfig:
        volts = [v for v, _q in self.volt_var_curve]
        for i, (a, b) in enumerate(itertools.pairwise(volts)):
            if not b > a:
                raise ValueError(
                    f"'volt_var_curve' point {i + 2} ({b:g} p.u.) is not above point {i + 1} "
                    f"({a:g} p.u.): the voltages must increase"
                )
        return self


class PollConfig(_Strict):
    # one attempt per request: it must fit inside the poll deadline (checked with interval_s)
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    deadline_fraction: Annotated[float, Field(gt=0.0, le=0.8)] = 0.4
    stale_after_intervals: Annotated[int, Field(ge=1, le=1000)] = 3


class DrConfig(_Strict):
    import_limit_kw: Annotated[float, Field(ge=-MAX_KW, le=MAX_KW)] | None = None
    export_limit_kw: Annotated[float, Field(ge=0, le=MAX_KW)] | None = None
    price_per_kwh: Annotated[float, Field(ge=-MAX_PRICE, le=MAX_PRICE)] = 0.10
    # bounds on what a DR event may ask (over MQTT, the CLI, OpenADR): a sender controls none
    # of them. An event's kW is at most this multiple of the feeder's rating (feeder.rating_kw,
    # else the case's total load) ...
    max_event_kw_factor: Annotated[float, Field(gt=0, le=100)] = 5.0
    # ... it ends within this many days of its arrival, and lasts at most as long ...
    horizon_days: Annotated[float, Field(gt=0, le=366)] = 7.0
    # ... and at most this many events not yet over are stored (a new one is refused when full)
    max_events: Annotated[int, Field(ge=1, le=100_000)] = 1000


class MqttTlsConfig(_Strict):
    """TLS to the broker. Paths may be ``credential:NAME`` (systemd ``LoadCredential=``)."""

    ca_file: FilePath | None = None  # None: the system's trust store
    cert_file: FilePath | None = None  # client certificate (with key_file)
    key_file: FilePath | None = None

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both 'cert_file' and 'key_file' for a client certificate")
        return self


class MqttConfig(_Strict):
    enabled: bool = False
    host: Host = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    topic_root: Annotated[Topic, Field(max_length=256)] | None = None
    client_id: (
        Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")] | None
    ) = None
    username: (
        Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")] | None
    ) = None
    # the password is read from a file (or ``credential:NAME``), never given inline
    password_file: FilePath | None = None
    tls: MqttTlsConfig | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    queue_size: Annotated[int, Field(ge=1, le=10000)] = 1000

    @model_validator(mode="after")
    def _credentials(self) -> MqttConfig:
        if self.password_file is not None and self.username is None:
            raise ValueError("'password_file' needs a 'username'")
        return self


class MetricsConfig(_Strict):
    enabled: bool = True
    host: Host = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9410
    tls_cert_file: FilePath | None = None  # serve /metrics over HTTPS (both files, or neither)
    tls_key_file: FilePath | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> MetricsConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both 'tls_cert_file' and 'tls_key_file', or neither")
        return self


class JournalConfig(_Strict):
    path: FilePath | None = None
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30


class MvConfig(_Strict):
    """M&V: the baselines each DR event is assessed against (``optimizer.baselines``,
    ``controller.performance``)."""

    # "10 of 10": the mean of the same local hours on the last `days` eligible days (same day
    # type, no DR event, measured) among the `lookback_days` before the event ...
    days: Annotated[int, Field(ge=1, le=60)] = 10
    lookback_days: Annotated[int, Field(ge=1, le=366)] = 45
    # ... scaled by the same-day adjustment: the import measured over `adjustment_hours` that
    # end `adjustment_gap_h` before the start over the baseline's, capped to 1 ± the cap
    adjustment_hours: Annotated[float, Field(ge=0.0, le=24.0)] = 3.0
    adjustment_gap_h: Annotated[float, Field(ge=0.0, le=24.0)] = 1.0
    adjustment_cap: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    # "meter before / meter after": the mean import over this many minutes before the start,
    # and after the end (from after_gap_min past it, to skip the rebound), interpolated
    meter_window_min: Annotated[float, Field(gt=0.0, le=1440.0)] = 30.0
    after_gap_min: Annotated[float, Field(ge=0.0, le=1440.0)] = 0.0
    # the local time of day and day type of the baselines; unset: [forecast] timezone
    timezone: TimeZone | None = None

    @model_validator(mode="after")
    def _days(self) -> MvConfig:
        if self.days > self.lookback_days:
            raise ValueError(
                f"'days' ({self.days}) is more than 'lookback_days' ({self.lookback_days})"
            )
        return self


class Config(_Strict):
    site: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    interval_s: Annotated[float, Field(ge=0.2, le=3600)] = 5.0
    feeder: FeederConfig
    devices: Annotated[list[DeviceConfig], Field(max_length=MAX_DEVICES)]
    poll: PollConfig = PollConfig()
    dr: DrConfig = DrConfig()
    mqtt: MqttConfig = MqttConfig()
    metrics: MetricsConfig = MetricsConfig()
    journal: JournalConfig = JournalConfig()
    estimation: EstimationConfig = EstimationConfig()
    control: ControlConfig = ControlConfig()
    # time-of-use prices for the horizon (unset: dr.price_per_kwh at every step)
    tariff: TariffConfig | None = None
    forecast: ForecastConfig = ForecastConfig()
    # the OpenADR 2.0b VEN: DR events from the utility's VTN
    openadr: OpenAdrConfig = OpenAdrConfig()
    # M&V: what each DR event delivered against the baselines
    mv: MvConfig = MvConfig()
    # the flexibility published on <root>/flex for a fleet coordinator
    flex: FlexConfig = FlexConfig()
    # on SIGTERM: "revert" leaves each control to its revert timer; "release" also disables
    # the controls (PV limit off, battery idle) before exiting
    on_stop: Literal["revert", "release"] = "revert"
    # how long "release" waits for the devices; one that has not answered by then keeps its
    # control until its revert timer lapses (the unit's stop budget: keep it under a second)
    release_timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.5

    @model_validator(mode="before")
    @classmethod
    def _default_poll_timeout(cls, data: Any) -> Any:
        """Unset, ``poll.timeout_s`` is 1 s, or the poll deadline when that is shorter (an
        interval of 1 s polls within 0.4 s): a default always fits."""
        if not isinstance(data, dict):
            return data
        poll = data.get("poll", {})
        if not isinstance(poll, dict) or "timeout_s" in poll:
            return data
        interval, fraction = data.get("interval_s", 5.0), poll.get("deadline_fraction", 0.4)
        try:
            deadline = float(interval) * float(fraction)
        except (TypeError, ValueError, OverflowError):
            return data  # the fields' own checks say what is wrong
        if isinstance(interval, bool) or isinstance(fraction, bool) or not deadline > 0:
            return data
        return {**data, "poll": {**poll, "timeout_s": min(PollConfig().timeout_s, deadline)}}

    @property
    def topic_root(self) -> str:
        return self.mqtt.topic_root or f"feederd/{self.site}"

    @property
    def tariff_timezone(self) -> str:
        """The time zone of the tariff's periods: its own, else the forecast's."""
        own = self.tariff.timezone if self.tariff is not None else None
        return own or self.forecast.timezone

    @property
    def bus_meters(self) -> list[DeviceConfig]:
        """The meters along the feeder: every meter but the head's."""
        return [d for d in self.devices if d.kind == "meter" and not d.head]

    @property
    def estimation_enabled(self) -> bool:
        """``estimation.enabled``, else whether any meter along the feeder is configured."""
        enabled = self.estimation.enabled
        return bool(self.bus_meters) if enabled is None else enabled
