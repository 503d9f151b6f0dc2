"""The feederd configuration: one TOML file, validated by pydantic at the boundary.

``load_config`` returns plain validated models and the feeder network, or raises
``ConfigError`` whose message names the file, the key path and what is wrong, on one line.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:  # loaded when a config is: `feederd event --journal` needs neither
    from devices import RegisterMap
    from optimizer import Network


__all__ = [
    "TRANSPORT_TYPES",
    "Config",
    "ConfigError",
    "DeviceConfig",
    "LoadedConfig",
    "MqttTransport",
    "RtuTransport",
    "TcpTransport",
    "TlsTransport",
    "load_config",
    "parse_config",
    "resolve_path",
]


class ConfigError(Exception):
    """A config that cannot be used; ``str()`` is the one-line message for the operator."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + problem)
        self.source = source
        self.key = key
        self.problem = problem


class _Strict(BaseModel):
    # NaN and infinity are refused everywhere: no limit, rating or duration can be one
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


PositiveFloat = Annotated[float, Field(gt=0)]


class BusTable(_Strict):
    id: int
    p_kw: float = 0.0
    q_kvar: float = 0.0
    base_kv: PositiveFloat
    v_min_pu: float = 0.95
    v_max_pu: float = 1.05


class BranchTable(_Strict):
    from_bus: int
    to_bus: int
    r_ohm: float
    x_ohm: float
    rating_kva: PositiveFloat | None = None


class FeederConfig(_Strict):
    """Either ``case`` (a MATPOWER file, or ``builtin:case33bw``) or inline buses and branches."""

    case: str | None = None
    base_mva: PositiveFloat = 10.0
    slack_bus: int = 1
    buses: list[BusTable] = Field(default_factory=list)
    branches: list[BranchTable] = Field(default_factory=list)
    v_min_pu: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    v_max_pu: Annotated[float, Field(gt=1.0, lt=1.5)] = 1.05
    # The dispatch aims this far inside the band: the linear model's voltages differ from the
    # AC ones by a few thousandths of a p.u., and a bus held at the band's edge in the model
    # would sit just outside it on the feeder.
    v_margin_pu: Annotated[float, Field(ge=0.0, le=0.02)] = 0.002

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


Host = Annotated[str, Field(min_length=1, max_length=253)]
Unit = Annotated[int, Field(ge=0, le=255)]
Topic = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^#+]+$")]


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
    cert_file: Annotated[str, Field(min_length=1)]
    key_file: Annotated[str, Field(min_length=1)]
    ca_file: str | None = None

    @property
    def address(self) -> str:
        return f"tls {self.host}:{self.port} unit {self.unit}"

    @property
    def link_key(self) -> tuple[str, str, int]:
        return (self.type, self.host, self.port)


class RtuTransport(_Strict):
    """Modbus RTU on a serial line (devices on one line share it, one request at a time)."""

    type: Literal["rtu"]
    serial_port: Annotated[str, Field(min_length=1)]
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 19200
    parity: Literal["N", "E", "O"] = "N"
    unit: Unit = 1

    @property
    def address(self) -> str:
        return f"rtu {self.serial_port} unit {self.unit}"

    @property
    def link_key(self) -> tuple[str, str, int]:
        return (self.type, self.serial_port, 0)


class MqttTransport(_Strict):
    """An MQTT device: telemetry JSON on a topic, numbers at dotted paths (``ac.p_w``)."""

    type: Literal["mqtt"]
    host: Host
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    telemetry_topic: Topic
    paths: dict[str, str]  # reading field (p_kw, q_kvar, v_ll_v, a, limit_pct) -> JSON path
    scale: dict[str, float] = Field(default_factory=dict)  # e.g. {p_kw = 0.001} for watts
    setpoint_topic: Topic | None = None
    status_topic: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    max_age_s: Annotated[float, Field(gt=0, le=86400)] = 10.0

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
    if transport not in _LEGACY_TRANSPORTS:
        kinds = ", ".join(TRANSPORT_TYPES)
        raise ValueError(
            f"transport {transport!r} is not known: write a [devices.transport] table with "
            f"type = one of {kinds}"
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
    bus: int
    transport: Transport
    register_map: str | None = None  # a TOML map (or builtin:NAME): non-SunSpec meters, loads
    rating_kw: PositiveFloat | None = None
    energy_kwh: PositiveFloat | None = None
    revert_s: Annotated[int, Field(ge=1, le=65534)] = 60
    revert_limit_pct: Annotated[float, Field(ge=0.1, le=100.0)] = 100.0  # model 704's revert
    ramp_kw_per_s: PositiveFloat | None = None
    head: bool = False
    # loads: rating_kw is the nominal draw; min_kw the floor it may be shed to; serving less
    # than its demand costs shed_cost_per_kwh (default 0.50, five times the default energy
    # price, so PV and batteries are used first and a load is shed only when a limit needs it)
    min_kw: Annotated[float, Field(ge=0)] = 0.0
    shed_cost_per_kwh: Annotated[float, Field(ge=0)] = 0.50

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


class PollConfig(_Strict):
    timeout_s: PositiveFloat = 1.0
    deadline_fraction: Annotated[float, Field(gt=0.0, le=0.8)] = 0.4
    stale_after_intervals: Annotated[int, Field(ge=1)] = 3


class DrConfig(_Strict):
    import_limit_kw: float | None = None
    export_limit_kw: Annotated[float, Field(ge=0)] | None = None
    price_per_kwh: float = 0.10


class MqttTlsConfig(_Strict):
    """TLS to the broker. Paths may be ``credential:NAME`` (systemd ``LoadCredential=``)."""

    ca_file: str | None = None  # None: the system's trust store
    cert_file: str | None = None  # client certificate (with key_file)
    key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both 'cert_file' and 'key_file' for a client certificate")
        return self


class MqttConfig(_Strict):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    topic_root: Annotated[str, Field(min_length=1, pattern=r"^[^#+]+$")] | None = None
    client_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    username: str | None = None
    # the password is read from a file (or ``credential:NAME``), never given inline
    password_file: str | None = None
    tls: MqttTlsConfig | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    queue_size: Annotated[int, Field(ge=1, le=10000)] = 100

    @model_validator(mode="after")
    def _credentials(self) -> MqttConfig:
        if self.password_file is not None and self.username is None:
            raise ValueError("'password_file' needs a 'username'")
        return self


class MetricsConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9410
    tls_cert_file: str | None = None  # serve /metrics over HTTPS (both files, or neither)
    tls_key_file: str | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> MetricsConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both 'tls_cert_file' and 'tls_key_file', or neither")
        return self


class JournalConfig(_Strict):
    path: str | None = None
    retention_days: Annotated[int, Field(ge=1)] = 30


class Config(_Strict):
    site: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")]
    interval_s: Annotated[float, Field(ge=0.2, le=3600)] = 5.0
    feeder: FeederConfig
    devices: list[DeviceConfig]
    poll: PollConfig = PollConfig()
    dr: DrConfig = DrConfig()
    mqtt: MqttConfig = MqttConfig()
    metrics: MetricsConfig = MetricsConfig()
    journal: JournalConfig = JournalConfig()
    # on SIGTERM: "revert" leaves each control to its revert timer; "release" also disables
    # the controls (PV limit off, battery idle) before exiting
    on_stop: Literal["revert", "release"] = "revert"
    # how long "release" waits for the devices; one that has not answered by then keeps its
    # control until its revert timer lapses (the unit's stop budget: keep it under a second)
    release_timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.5

    @property
    def topic_root(self) -> str:
        return self.mqtt.topic_root or f"feederd/{self.site}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedConfig:
    """A validated config, the network it describes, and the register maps its devices name
    (read once, here: what ``check`` accepted is what ``run`` uses)."""

    config: Config
    network: Network
    source: str
    base_dir: Path
    """Where relative paths in the config (case, register maps, TLS files) start."""
    register_maps: Mapping[str, RegisterMap]
    """Each register-map device's map, by device name."""
    notes: tuple[str, ...] = ()
    """Things ``check`` should tell the operator (a deprecated form that still works)."""

    @property
    def head_meter(self) -> DeviceConfig:
        return next(d for d in self.config.devices if d.kind == "meter" and d.head)


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-before")) or (
            previous == "transport" and part in TRANSPORT_TYPES  # the union's tag
        ):
            pass
        else:
            out += ("." if out else "") + part
        previous = part
    return out


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_not_found":
        return f"missing 'type' ({', '.join(TRANSPORT_TYPES)})"
    if kind == "union_tag_invalid":
        return f"type must be one of {', '.join(TRANSPORT_TYPES)} (got {err['ctx']['tag']!r})"
    if kind == "finite_number":
        return f"must be a finite number (got {err.get('input')!r})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    # a whole table as "input" (a model-level check) would bury the message: leave it out
    if (
        "input" in err
        and kind not in ("model_type", "dict_type")
        and not isinstance(err["input"], dict)
    ):
        return f"{msg} (got {err['input']!r})"
    return msg


def parse_config(data: dict[str, Any], *, source: str, base_dir: Path) -> LoadedConfig:
    """Validate a parsed TOML document and build its network."""
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(source, _key_path(first["loc"]), _describe(dict(first)) + more) from None
    network = _network(config.feeder, source=source, base_dir=base_dir)
    _check_devices(config, network, source)
    maps = _register_maps(config, source, base_dir)
    _check_device_files(config, source, base_dir)
    return LoadedConfig(
        config=config,
        network=network,
        source=source,
        base_dir=base_dir,
        register_maps=maps,
        notes=_notes(data),
    )


def _notes(data: dict[str, Any]) -> tuple[str, ...]:
    devices = data.get("devices")
    if not isinstance(devices, list):
        return ()
    legacy = [
        f"devices[{i}]"
        for i, d in enumerate(devices)
        if isinstance(d, dict) and not isinstance(d.get("transport"), dict)
    ]
    if not legacy:
        return ()
    return (
        f"{', '.join(legacy[:3])}{' ...' if len(legacy) > 3 else ''}: the flat transport keys"
        ' (transport = "modbus-tcp", host, port, unit, ...) still work but are deprecated;'
        " write a [devices.transport] table (see deploy/feederd.example.toml)",
    )


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate ``path``; every problem is a ``ConfigError``."""
    p = Path(path)
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(source, "", f"cannot read config: {err.strerror or err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, "", f"not valid TOML: {err}") from None
    return parse_config(data, source=source, base_dir=p.resolve().parent)


def _network(feeder: FeederConfig, *, source: str, base_dir: Path) -> Network:
    from optimizer import (  # noqa: PLC0415
        NetworkError,
        builtin_case,
        load_matpower,
        network_from_tables,
    )

    try:
        if feeder.case is not None:
            if feeder.case.startswith("builtin:"):
                try:
                    case_path = builtin_case(feeder.case.removeprefix("builtin:"))
                except KeyError as err:
                    raise ConfigError(source, "feeder.case", str(err.args[0])) from None
            else:
                case_path = Path(feeder.case)
                if not case_path.is_absolute():
                    case_path = base_dir / case_path
                if not case_path.is_file():
                    raise ConfigError(
                        source, "feeder.case", f"MATPOWER file {str(case_path)!r} does not exist"
                    )
            return load_matpower(case_path)
        return network_from_tables(
            name="inline",
            base_mva=feeder.base_mva,
            slack_bus=feeder.slack_bus,
            buses=[b.model_dump() for b in feeder.buses],
            branches=[b.model_dump() for b in feeder.branches],
        )
    except NetworkError as err:
        raise ConfigError(source, "feeder", str(err)) from None


def _check_devices(config: Config, network: Network, source: str) -> None:
    bus_ids = {b.id for b in network.buses}
    names: set[str] = set()
    for i, dev in enumerate(config.devices):
        key = f"devices[{i}]"
        if dev.name in names:
            raise ConfigError(source, f"{key}.name", f"duplicate device name {dev.name!r}")
        names.add(dev.name)
        if dev.bus not in bus_ids:
            raise ConfigError(
                source,
                f"{key}.bus",
                f"device {dev.name!r} is on bus {dev.bus}, which the feeder does not have",
            )
        if dev.kind != "meter" and dev.revert_s < 2 * config.interval_s:
            raise ConfigError(
                source,
                f"{key}.revert_s",
                f"revert timeout {dev.revert_s} s must be at least twice the interval "
                f"({config.interval_s:g} s) so each control is rewritten before it lapses",
            )
        if dev.head and dev.kind != "meter":
            raise ConfigError(source, f"{key}.head", "only a meter can be the feeder-head meter")
    heads = [d for d in config.devices if d.kind == "meter" and d.head]
    if len(heads) != 1:
        raise ConfigError(
            source, "devices", f"exactly one meter must have head = true (found {len(heads)})"
        )
    if heads[0].bus != network.slack_bus:
        raise ConfigError(
            source,
            "devices",
            f"the head meter {heads[0].name!r} must sit on the slack bus {network.slack_bus}",
        )


def resolve_path(value: str, base_dir: Path) -> Path:
    """A path from the config: relative ones start next to the config file."""
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


def _register_maps(config: Config, source: str, base_dir: Path) -> dict[str, RegisterMap]:
    """Each register-map device's map, read and checked once."""
    from devices import RegisterMapError, check_load_map, load_register_map  # noqa: PLC0415

    maps: dict[str, RegisterMap] = {}
    for i, dev in enumerate(config.devices):
        if dev.register_map is None:
            continue
        path = dev.register_map
        if not path.startswith("builtin:"):
            path = str(resolve_path(path, base_dir))
        try:
            rmap = load_register_map(path)
            if dev.kind == "load":
                check_load_map(rmap)
        except RegisterMapError as err:
            raise ConfigError(source, f"devices[{i}].register_map", str(err)) from None
        maps[dev.name] = rmap
    return maps


def _check_device_files(config: Config, source: str, base_dir: Path) -> None:
    """TLS files exist before the daemon starts."""
    for i, dev in enumerate(config.devices):
        t = dev.transport
        if not isinstance(t, TlsTransport):
            continue
        for field_name in ("cert_file", "key_file", "ca_file"):
            value = getattr(t, field_name)
            if value is not None and not resolve_path(value, base_dir).is_file():
                raise ConfigError(
                    source, f"devices[{i}].transport.{field_name}", f"no such file {value!r}"
                )
