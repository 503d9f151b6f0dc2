"""The feederd configuration: one TOML file, validated by pydantic at the boundary.

``load_config`` returns plain validated models and the feeder network, or raises
``ConfigError`` whose message names the file, the key path and what is wrong, on one line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import reprlib
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

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
    "read_limited",
    "resolve_path",
]


_MESSAGE_MAX = 400
"""A config error is one line of at most this many characters (a key's value is cut short)."""


def _one_line(text: str) -> str:
    """``text`` without line breaks or other control characters, cut to ``_MESSAGE_MAX``."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return flat if len(flat) <= _MESSAGE_MAX else flat[: _MESSAGE_MAX - 3] + "..."


class ConfigError(Exception):
    """A config that cannot be used; ``str()`` is the one-line message for the operator."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        where = f"{_one_line(source)}: {_one_line(key)}: " if key else f"{_one_line(source)}: "
        super().__init__(where + _one_line(problem))
        self.source = source
        self.key = key
        self.problem = problem


# -- bounded file reads -------------------------------------------------------------------
#
# Every file feederd reads because its config names it is a regular file of bounded size:
# a device (``/dev/zero``), a FIFO or a directory is refused before it is opened for reading,
# and a file over its limit before it is read.

CONFIG_MAX_BYTES = 1 << 20
"""The config file: 1 MiB."""
# A register map: 1 MiB (``devices.register_map.MAP_MAX_BYTES``, read there).
CASE_MAX_BYTES = 50 << 20
"""A MATPOWER case: 50 MiB (read by ``optimizer.network``, which has the same limit)."""
SECRET_MAX_BYTES = 64 << 10
"""A password file, a certificate, a key or a CA bundle: 64 KiB."""


class FileRefused(Exception):
    """A file that must not be read; ``str()`` says why (without the key)."""


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_regular_file(path: str | Path, *, limit: int) -> None:
    """``path`` is a regular file of at most ``limit`` bytes, or ``FileRefused`` says why.
    Nothing is opened: a FIFO or a device is never touched."""
    try:
        st = os.stat(path)
    except ValueError:  # an embedded NUL byte
        raise FileRefused(f"{str(path)!r}: a path cannot contain a NUL byte") from None
    except OSError as err:
        raise FileRefused(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{str(path)!r} is {_file_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise FileRefused(
            f"{str(path)!r} is {st.st_size} bytes, more than the {_size(limit)} allowed"
        )


def read_limited(path: str | Path, *, limit: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; ``FileRefused``
    otherwise (it is checked before it is opened, and again on the open file)."""
    check_regular_file(path, limit=limit)
    try:
        # O_NONBLOCK: should the path have become a FIFO since, the open does not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as err:
        raise FileRefused(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{str(path)!r} is {_file_kind(st.st_mode)}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise FileRefused(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise FileRefused(f"{str(path)!r} is more than the {_size(limit)} allowed")
    return b"".join(chunks)


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"


def decode_utf8(data: bytes) -> str:
    """``data`` as UTF-8; ``FileRefused`` names the first bad byte's offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileRefused(f"not valid UTF-8 (byte {err.start})") from None


TOML_MAX_KEY_PARTS = 32
"""A dotted key of more parts is refused before parsing (tomllib's time grows with the square
of a key's parts: a 1 MiB file of one dotted key would take hours)."""
_TOML_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_TOML_DEEP_KEY = re.compile(
    r"(?m)(?:^|[\[{,])[ \t]*"
    + _TOML_KEY_PART
    + r"(?:[ \t]*\.[ \t]*"
    + _TOML_KEY_PART
    + "){"
    + str(TOML_MAX_KEY_PARTS)
    + "}"
)


def parse_toml(text: str) -> dict[str, Any]:
    """A TOML document; every problem (syntax, an integer of thousands of digits, nesting too
    deep, a dotted key of too many parts) is ``FileRefused`` with one line."""
    deep = _TOML_DEEP_KEY.search(text)
    if deep is not None:
        line = text.count("\n", 0, deep.start()) + 1
        raise FileRefused(
            f"not valid TOML: a dotted key of more than {TOML_MAX_KEY_PARTS} parts (line {line})"
        )
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise FileRefused("not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as err:  # TOMLDecodeError, and int() of more than 4300 digits
        raise FileRefused(f"not valid TOML: {err}") from None


# -- the models -----------------------------------------------------------------------------


class _Strict(BaseModel):
    # NaN and infinity are refused everywhere: no limit, rating or duration can be one
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


MAX_KW = 1e6
"""No power in a feeder's config is a gigawatt or more: a bigger number is a typing error."""
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


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a path cannot contain a NUL byte")
    return value


FilePath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_no_nul)]
"""A path in the config (relative ones start next to the config file)."""


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
            f"transport {_short(transport)} is not known: write a [devices.transport] table "
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
    ramp_kw_per_s: Annotated[float, Field(ge=0.001, le=MAX_KW)] | None = None
    head: bool = False
    # loads: rating_kw is the nominal draw; min_kw the floor it may be shed to; serving less
    # than its demand costs shed_cost_per_kwh (default 0.50, five times the default energy
    # price, so PV and batteries are used first and a load is shed only when a limit needs it)
    min_kw: Annotated[float, Field(ge=0, le=MAX_KW)] = 0.0
    shed_cost_per_kwh: Annotated[float, Field(ge=0, le=MAX_PRICE)] = 0.50

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
    def journal_path(self) -> Path | None:
        """``journal.path``, a relative one taken from the config's folder (as every path)."""
        path = self.config.journal.path
        return None if path is None else resolve_path(path, self.base_dir)

    @property
    def feeder_rating_kw(self) -> float:
        """``feeder.rating_kw``, else the case's total load."""
        rating = self.config.feeder.rating_kw
        return rating if rating is not None else max(self.network.total_load_kw, 1.0)

    @property
    def max_event_kw(self) -> float:
        """The most kW a DR event may name (``dr.max_event_kw_factor`` times the rating)."""
        return self.config.dr.max_event_kw_factor * self.feeder_rating_kw

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


_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlong = 40
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 4


def _short(value: Any) -> str:
    """A value as the operator wrote it, cut short (a value may be a megabyte long)."""
    return _REPR.repr(value)


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_not_found":
        return f"missing 'type' ({', '.join(TRANSPORT_TYPES)})"
    if kind == "union_tag_invalid":
        return f"type must be one of {', '.join(TRANSPORT_TYPES)} (got {_short(err['ctx']['tag'])})"
    if kind == "finite_number":
        return f"must be a finite number (got {_short(err.get('input'))})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    # a whole table as "input" (a model-level check) would bury the message: leave it out
    if (
        "input" in err
        and kind not in ("model_type", "dict_type")
        and not isinstance(err["input"], dict)
    ):
        return f"{msg} (got {_short(err['input'])})"
    return msg


def parse_config(data: dict[str, Any], *, source: str, base_dir: Path) -> LoadedConfig:
    """Validate a parsed TOML document: the models and their ranges, the network it builds,
    the register maps it names (read here, once), and that the other files it names are
    regular files of bounded size. ``load_config`` also loads what ``run`` will load."""
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(source, _key_path(first["loc"]), _describe(dict(first)) + more) from None
    except RecursionError:
        raise ConfigError(source, "", "arrays or tables nested too deeply") from None
    _check_ranges(config, source)
    network = _network(config.feeder, source=source, base_dir=base_dir)
    _check_network(network, source)
    _check_devices(config, network, source)
    maps = _register_maps(config, source, base_dir)
    _check_device_files(config, source, base_dir)
    _check_journal(config, source, base_dir)
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


def load_config(path: str | Path, *, require_credentials: bool = False) -> LoadedConfig:
    """Read and validate ``path``: the one validation of ``check``, ``run`` and a SIGHUP
    reload; every problem is a ``ConfigError`` (one line).

    Beyond ``parse_config``, it loads what ``run`` loads before it starts: each Modbus/TLS
    device's certificate, key and CA (as the link does), the metrics certificate, the MQTT
    password and TLS files. A ``credential:NAME`` (a systemd credential) outside systemd
    cannot be read: a note in ``LoadedConfig.notes``, or with ``require_credentials``
    (``run`` and its reload) a ``ConfigError``."""
    source = str(path)
    try:
        text = decode_utf8(read_limited(path, limit=CONFIG_MAX_BYTES))
        data = parse_toml(text)
    except FileRefused as err:
        raise ConfigError(source, "", f"cannot read config: {err}") from None
    try:
        base_dir = Path(path).resolve().parent
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise ConfigError(source, "", f"cannot read config: {err}") from None
    loaded = parse_config(data, source=source, base_dir=base_dir)
    _load_device_tls(loaded.config, source, base_dir)
    from controller.dr.connect import check_secrets  # noqa: PLC0415

    notes = check_secrets(
        loaded.config, source=source, base_dir=base_dir, require_credentials=require_credentials
    )
    return dataclasses.replace(loaded, notes=loaded.notes + notes) if notes else loaded


def _check_ranges(config: Config, source: str) -> None:
    """What one key's range cannot say: a poll request fits inside the poll deadline."""
    poll = config.poll
    deadline = config.interval_s * poll.deadline_fraction
    if poll.timeout_s > deadline * (1 + 1e-9):
        raise ConfigError(
            source,
            "poll.timeout_s",
            f"a request timeout of {poll.timeout_s:g} s does not fit inside the poll deadline "
            f"of {deadline:g} s (interval_s {config.interval_s:g} x deadline_fraction "
            f"{poll.deadline_fraction:g}): one attempt per request must end before it",
        )


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
                case_path = resolve_path(feeder.case, base_dir)
                if not case_path.exists():
                    raise ConfigError(
                        source, "feeder.case", f"MATPOWER file {str(case_path)!r} does not exist"
                    )
                try:
                    check_regular_file(case_path, limit=CASE_MAX_BYTES)
                except FileRefused as err:
                    raise ConfigError(source, "feeder.case", str(err)) from None
            return load_matpower(case_path)
        return network_from_tables(
            name="inline",
            base_mva=feeder.base_mva,
            slack_bus=feeder.slack_bus,
            buses=[b.model_dump() for b in feeder.buses],
            branches=[b.model_dump() for b in feeder.branches],
        )
    except NetworkError as err:
        key = "feeder.case" if feeder.case is not None else "feeder"
        raise ConfigError(source, key, str(err)) from None


def _check_network(network: Network, source: str) -> None:
    """The case's numbers within the config's bounds (a MATPOWER file is input too)."""
    key = "feeder"
    if not MIN_BASE_MVA <= network.base_mva <= MAX_BASE_MVA:
        raise ConfigError(
            source,
            key,
            f"base MVA {network.base_mva:g} is outside {MIN_BASE_MVA:g}..{MAX_BASE_MVA:g}",
        )
    for bus in network.buses:
        for name, value, low, high in (
            ("load", bus.p_load_kw, -MAX_KW, MAX_KW),
            ("reactive load", bus.q_load_kvar, -MAX_KW, MAX_KW),
            ("base kV", bus.base_kv, MIN_BASE_KV, MAX_BASE_KV),
            ("v_min_pu", bus.v_min_pu, 0.0, 2.0),
            ("v_max_pu", bus.v_max_pu, 0.0, 2.0),
        ):
            if not low <= value <= high:
                raise ConfigError(
                    source, key, f"bus {bus.id}: {name} {value:g} is outside {low:g}..{high:g}"
                )
    if not abs(network.total_load_kw) <= MAX_KW:
        raise ConfigError(
            source,
            key,
            f"the feeder's total load {network.total_load_kw:g} kW is over {MAX_KW:g} kW",
        )


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
            elif "p_kw" not in rmap.points:  # what the meter's driver asks of its map
                raise RegisterMapError(f"{path}: a meter map needs a point named 'p_kw'")
        except RegisterMapError as err:
            raise ConfigError(source, f"devices[{i}].register_map", str(err)) from None
        maps[dev.name] = rmap
    return maps


def _check_device_files(config: Config, source: str, base_dir: Path) -> None:
    """Each Modbus/TCP Security device's files exist and are regular files of at most
    64 KiB."""
    for i, dev in enumerate(config.devices):
        t = dev.transport
        if not isinstance(t, TlsTransport):
            continue
        for field_name in ("cert_file", "key_file", "ca_file"):
            value = getattr(t, field_name)
            if value is None:
                continue
            key = f"devices[{i}].transport.{field_name}"
            path = resolve_path(value, base_dir)
            if not path.exists():
                raise ConfigError(source, key, f"no such file {value!r}")
            try:
                check_regular_file(path, limit=SECRET_MAX_BYTES)
            except FileRefused as err:
                raise ConfigError(source, key, str(err)) from None


def _load_device_tls(config: Config, source: str, base_dir: Path) -> None:
    """Each Modbus/TCP Security device's files load as the link will load them
    (``devices.tls_context``, in ``Fleet.build``)."""
    tls = [(i, d.transport) for i, d in enumerate(config.devices) if d.transport.type == "tls"]
    if not tls:
        return
    import ssl  # noqa: PLC0415

    from devices import tls_context  # noqa: PLC0415

    for i, t in tls:
        assert isinstance(t, TlsTransport)
        try:
            tls_context(
                cert_file=str(resolve_path(t.cert_file, base_dir)),
                key_file=str(resolve_path(t.key_file, base_dir)),
                ca_file=None if t.ca_file is None else str(resolve_path(t.ca_file, base_dir)),
            )
        except (OSError, ssl.SSLError, ValueError) as err:
            raise ConfigError(
                source, f"devices[{i}].transport.cert_file", f"cannot load TLS files: {err}"
            ) from None


def _check_journal(config: Config, source: str, base_dir: Path) -> None:
    """The journal is a regular file, or one that can be made (its nearest existing folder
    is a folder): ``run`` opens it, ``check`` does not create it. A relative path starts next
    to the config, as ``run`` takes it."""
    if config.journal.path is None:
        return
    path = resolve_path(config.journal.path, base_dir)
    key = "journal.path"
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        parent = path.absolute().parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(
                source, key, f"cannot make {str(path)!r}: {str(parent)!r} is not a folder"
            ) from None
        return
    except OSError as err:
        raise ConfigError(source, key, f"cannot use {str(path)!r}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(
            source, key, f"{str(path)!r} is {_file_kind(st.st_mode)}, not a regular file"
        )
    try:
        with open(path, "rb") as f:  # a regular file: opening it cannot block
            head = f.read(len(_SQLITE_HEADER))
    except OSError:
        return  # not readable by whoever runs `check`: the daemon's user may read it
    if head and head != _SQLITE_HEADER:
        raise ConfigError(
            source, key, f"{str(path)!r} is not a journal (not an SQLite database file)"
        )


_SQLITE_HEADER = b"SQLite format 3\x00"
