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

    @model_validator(mode="after")
    def _one_source(self) -> FeederConfig:
        if (self.case is None) == (not self.buses):
            raise ValueError(
                "give either 'case' (a MATPOWER file) or inline 'buses' and 'branches'"
            )
        return self


class DeviceConfig(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Literal["meter", "pv", "battery"]
    bus: int
    transport: Literal["modbus-tcp"] = "modbus-tcp"
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit: Annotated[int, Field(ge=0, le=255)] = 1
    rating_kw: PositiveFloat | None = None
    energy_kwh: PositiveFloat | None = None
    revert_s: Annotated[int, Field(ge=1, le=65534)] = 60
    ramp_kw_per_s: PositiveFloat | None = None
    head: bool = False

    @model_validator(mode="after")
    def _ratings(self) -> DeviceConfig:
        if self.kind in ("pv", "battery") and self.rating_kw is None:
            raise ValueError(f"a {self.kind} device needs 'rating_kw'")
        if self.kind == "battery" and self.energy_kwh is None:
            raise ValueError("a battery needs 'energy_kwh'")
        return self


class PollConfig(_Strict):
    timeout_s: PositiveFloat = 1.0
    deadline_fraction: Annotated[float, Field(gt=0.0, le=0.8)] = 0.4
    stale_after_intervals: Annotated[int, Field(ge=1)] = 3


class DrConfig(_Strict):
    import_limit_kw: float | None = None
    export_limit_kw: Annotated[float, Field(ge=0)] | None = None
    price_per_kwh: float = 0.10


class MqttConfig(_Strict):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    topic_root: str | None = None


class MetricsConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9410


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
    if "input" in err and kind not in ("model_type", "dict_type"):
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
