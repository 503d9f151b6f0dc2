"""The feederd configuration: one TOML file, validated by pydantic at the boundary.

``load_config`` returns plain validated models and the feeder network, or raises
``ConfigError`` whose message names the file, the key path and what is wrong, on one line.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from optimizer import (
    Network,
    NetworkError,
    builtin_case,
    load_matpower,
    network_from_tables,
)

__all__ = [
    "Config",
    "ConfigError",
    "DeviceConfig",
    "LoadedConfig",
    "load_config",
    "parse_config",
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
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class DeviceMqttConfig(_Strict):
    """An MQTT device: telemetry JSON on a topic, numbers at dotted paths (``ac.p_w``)."""

    telemetry_topic: Annotated[str, Field(min_length=1, pattern=r"^[^#+]+$")]
    paths: dict[str, str]  # reading field (p_kw, q_kvar, v_ll_v, a, limit_pct) -> JSON path
    scale: dict[str, float] = Field(default_factory=dict)  # e.g. {p_kw = 0.001} for watts
    setpoint_topic: Annotated[str, Field(min_length=1, pattern=r"^[^#+]+$")] | None = None
    status_topic: Annotated[str, Field(min_length=1)] | None = None
    max_age_s: PositiveFloat = 10.0

    @model_validator(mode="after")
    def _power(self) -> DeviceMqttConfig:
        if "p_kw" not in self.paths:
            raise ValueError("'paths' needs a JSON path for 'p_kw'")
        return self


class DeviceConfig(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Literal["meter", "pv", "battery", "load"]
    bus: int
    # modbus-tcp / modbus-tls: host, port (TLS: tls_cert_file, tls_key_file, tls_ca_file);
    # modbus-rtu: serial_port, baudrate, parity; mqtt: host, port (the broker) and [mqtt]
    transport: Literal["modbus-tcp", "modbus-rtu", "modbus-tls", "mqtt"] = "modbus-tcp"
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 502  # unset: 802 for TLS, 1883 for MQTT
    unit: Annotated[int, Field(ge=0, le=255)] = 1
    serial_port: str | None = None
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 19200
    parity: Literal["N", "E", "O"] = "N"
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    connections: Annotated[int, Field(ge=1, le=16)] = 1  # parallel connections to a gateway
    register_map: str | None = None  # a TOML map (or builtin:NAME): non-SunSpec meters, loads
    mqtt: DeviceMqttConfig | None = None
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
        if t in ("modbus-tcp", "modbus-tls", "mqtt") and not self.host:
            raise ValueError(f"a {t} device needs 'host'")
        if t == "modbus-rtu" and not self.serial_port:
            raise ValueError("a modbus-rtu device needs 'serial_port' (e.g. /dev/ttyUSB0)")
        if t == "modbus-tls" and not (self.tls_cert_file and self.tls_key_file):
            raise ValueError("a modbus-tls device needs 'tls_cert_file' and 'tls_key_file'")
        if t == "mqtt" and self.mqtt is None:
            raise ValueError("an mqtt device needs an [devices.mqtt] table with 'telemetry_topic'")
        if t == "mqtt" and self.kind == "battery":
            raise ValueError("a battery over mqtt is not supported; use Modbus (SunSpec)")
        if t == "mqtt" and self.kind == "load" and self.mqtt and not self.mqtt.setpoint_topic:
            raise ValueError("an mqtt load needs 'setpoint_topic' in [devices.mqtt]")
        if self.register_map is not None and (self.kind not in ("meter", "load") or t == "mqtt"):
            raise ValueError("'register_map' is for Modbus meters and loads only")
        if self.kind == "load" and t != "mqtt" and self.register_map is None:
            raise ValueError(
                "a Modbus load needs 'register_map' with points p_kw, p_limit_kw (writable) and "
                'revert_s (writable), e.g. "builtin:controllable_load"'
            )
        return self

    @property
    def endpoint_port(self) -> int:
        """The port, or the transport's default (502, 802 for TLS, 1883 for MQTT)."""
        if "port" in self.model_fields_set:
            return self.port
        return {"modbus-tls": 802, "mqtt": 1883}.get(self.transport, 502)

    @property
    def address(self) -> str:
        """Where the device is, as a commissioning engineer would write it down."""
        if self.transport == "modbus-rtu":
            return f"rtu {self.serial_port} unit {self.unit}"
        if self.transport == "mqtt":
            topic = self.mqtt.telemetry_topic if self.mqtt else "?"
            return f"mqtt {self.host}:{self.endpoint_port} {topic}"
        scheme = "tls" if self.transport == "modbus-tls" else "tcp"
        return f"{scheme} {self.host}:{self.endpoint_port} unit {self.unit}"


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

    @property
    def topic_root(self) -> str:
        return self.mqtt.topic_root or f"feederd/{self.site}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedConfig:
    """A validated config and the network it describes."""

    config: Config
    network: Network
    source: str

    @property
    def head_meter(self) -> DeviceConfig:
        return next(d for d in self.config.devices if d.kind == "meter" and d.head)


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-before")):
            continue
        else:
            out += ("." if out else "") + part
    return out


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        return "unknown key"
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
    _check_device_files(config, source, base_dir)
    return LoadedConfig(config=config, network=network, source=source)


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


def _check_device_files(config: Config, source: str, base_dir: Path) -> None:
    """Register maps parse, and TLS files exist, before the daemon starts."""
    from devices import RegisterMapError, check_load_map, load_register_map  # noqa: PLC0415

    for i, dev in enumerate(config.devices):
        key = f"devices[{i}]"
        if dev.register_map is not None:
            path = dev.register_map
            if not path.startswith("builtin:") and not Path(path).is_absolute():
                path = str(base_dir / path)
            try:
                rmap = load_register_map(path)
                if dev.kind == "load":
                    check_load_map(rmap)
            except RegisterMapError as err:
                raise ConfigError(source, f"{key}.register_map", str(err)) from None
        for field_name in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
            value = getattr(dev, field_name)
            if value is not None and not (base_dir / value).is_file():
                raise ConfigError(source, f"{key}.{field_name}", f"no such file {value!r}")
