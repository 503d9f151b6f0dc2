"""``fleet.toml`` → the coordinator's settings: the fleet (``FleetSettings``), its journal, its
metrics endpoint and its broker.

One validation for ``feederd coordinate check``, the daemon's start and a SIGHUP reload, as
feederd's own config (``controller.config.load``): strict pydantic tables at the boundary
(unknown keys, NaN and infinity refused), then what only the whole can say (a group naming an
unknown feeder, a site listed twice), then the secrets the daemon will read. Every problem is
one ``ConfigError`` line naming the file and the key.

The ``[mqtt]`` table is feederd's (``controller.config.models.MqttConfig``): the password is a
file or a systemd ``credential:NAME``, never inline; TLS is loaded here, once. The coordinator
always talks MQTT, so ``enabled = false`` is refused, and its topics hang from the top-level
``topic_root`` (``mqtt.topic_root`` is refused too: one place says where they are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from controller.config import (
    CONFIG_MAX_BYTES,
    ConfigError,
    FileRefused,
    read_limited,
    resolve_path,
)
from controller.config.fields import MAX_KW, FilePath, Strict
from controller.config.files import decode_utf8, parse_toml
from controller.config.load import check_journal_file, validated  # feederd's own checks
from controller.config.models import Host, MqttConfig, Topic
from controller.config.openadr import OpenAdrConfig
from coordinator.settings import FeederSpec, FleetSettings, TransformerSpec

if TYPE_CHECKING:
    from controller.dr.mqtt_common import MqttSettings
    from controller.openadr.settings import VenSettings

__all__ = [
    "FleetConfig",
    "FleetFile",
    "FleetMetricsConfig",
    "load_fleet",
    "parse_fleet",
]

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
"""A site, transformer or group: one topic level, no wildcard."""
Kw = Annotated[float, Field(gt=0.0, le=MAX_KW)]
MAX_FEEDERS = 10_000
"""A fleet is at most this many feeders (the allocation is sized for thousands, not millions)."""


class FeederTable(Strict):
    site: Name
    rating_kw: Kw
    transformer: Name | None = None


class TransformerTable(Strict):
    name: Name
    rating_kw: Kw


class FleetJournalConfig(Strict):
    path: FilePath
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30


class FleetMetricsConfig(Strict):
    enabled: bool = True
    address: Host = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9101


class FleetOpenAdr(OpenAdrConfig):
    """feederd's ``[openadr]`` table, plus the group whose targets the VTN's events become
    (``coordinator.openadr``); its ``priority`` is the targets' (hence their feeders' events')."""

    group: Name = "all"
    priority: Annotated[int, Field(ge=0, le=1000)] = 100


class FleetFile(Strict):
    """``fleet.toml`` as written (README "Fleet coordinator")."""

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
    topic_root: Annotated[Topic, Field(max_length=200)] | None = None
    feeder_root: Annotated[Topic, Field(max_length=200)] = "feederd"
    # "": none; else $share/<name>/ in front of the flex filter (an active/standby pair)
    shared_subscription: Annotated[str, Field(pattern=r"^([A-Za-z0-9_.-]{1,64})?$")] = ""
    interval_s: Annotated[float, Field(ge=0.1, le=3600.0)] = 30.0
    silent_after_s: Annotated[float, Field(gt=0.0, le=86400.0)] = 90.0
    max_age_s: Annotated[float, Field(gt=0.0, le=86400.0)] = 120.0
    mode: Literal["cost", "fair"] = "cost"
    deadband_kw: Annotated[float, Field(ge=0.0, le=MAX_KW)] = 10.0
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    journal: FleetJournalConfig
    mqtt: MqttConfig = MqttConfig()
    metrics: FleetMetricsConfig = FleetMetricsConfig()
    openadr: FleetOpenAdr = FleetOpenAdr()
    feeders: Annotated[list[FeederTable], Field(min_length=1, max_length=MAX_FEEDERS)]
    transformers: Annotated[list[TransformerTable], Field(max_length=MAX_FEEDERS)] = Field(
        default_factory=list
    )
    groups: Annotated[
        dict[Name, Annotated[list[Name], Field(min_length=1, max_length=MAX_FEEDERS)]],
        Field(max_length=1000),
    ] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetConfig:
    """A validated ``fleet.toml``: the fleet as the core takes it, and the daemon's I/O."""

    fleet: FleetSettings
    mqtt: MqttConfig
    metrics: FleetMetricsConfig
    journal_path: Path
    retention_days: int
    source: str
    base_dir: Path
    """Where relative paths (journal, password and TLS files) start: the config's folder."""
    openadr: FleetOpenAdr = field(default_factory=FleetOpenAdr)
    notes: tuple[str, ...] = ()
    """What ``check`` should say (a systemd credential it cannot read here)."""

    def ven_settings(self, *, notes: list[str] | None = None) -> VenSettings | None:
        """The VEN's settings (``None``: ``[openadr]`` off, or with ``notes`` a credential
        this process cannot read), its files read and TLS loaded; a ``ConfigError`` names the
        key of any problem."""
        from controller.openadr.settings import openadr_settings  # noqa: PLC0415

        return openadr_settings(
            self.openadr, source=self.source, base_dir=self.base_dir, notes=notes
        )

    @property
    def client_id(self) -> str:
        """``mqtt.client_id``, else ``feederd-fleet-<name>``: fixed, so the broker keeps the
        session (the subscriptions, the QoS 1 messages in flight) across a restart."""
        return self.mqtt.client_id or f"feederd-fleet-{self.fleet.name}"[:64]

    def mqtt_settings(self) -> MqttSettings:
        """The broker session's settings, the password read and TLS loaded (blocking: before
        the event loop serves); every problem is a ``ConfigError``."""
        from controller.dr.connect import mqtt_table_secrets  # noqa: PLC0415
        from controller.dr.mqtt_common import MqttSettings  # noqa: PLC0415

        password, tls = mqtt_table_secrets(self.mqtt, source=self.source, base_dir=self.base_dir)
        return MqttSettings(
            host=self.mqtt.host,
            port=self.mqtt.port,
            topic_root=self.fleet.topic_root,
            username=self.mqtt.username,
            password=password,
            tls=tls,
            client_id=self.client_id,
            keepalive_s=self.mqtt.keepalive_s,
            queue_size=self.mqtt.queue_size,
        )


def parse_fleet(data: dict[str, Any], *, source: str, base_dir: Path) -> FleetConfig:
    """Validate a parsed ``fleet.toml``: the tables, then the checks across them; one
    ``ConfigError`` (file, key, what is wrong) for the first problem."""
    raw = validated(FleetFile, data, source)
    _check_mqtt(raw.mqtt, source)
    _check_fleet(raw, source)
    if raw.openadr.enabled and raw.openadr.group != "all" and raw.openadr.group not in raw.groups:
        raise ConfigError(source, "openadr.group", f"no [groups] is named {raw.openadr.group!r}")
    try:
        fleet = FleetSettings(
            name=raw.name,
            topic_root=raw.topic_root or f"feederd-fleet/{raw.name}",
            feeder_root=raw.feeder_root,
            feeders=tuple(FeederSpec(f.site, f.rating_kw, f.transformer) for f in raw.feeders),
            transformers=tuple(TransformerSpec(t.name, t.rating_kw) for t in raw.transformers),
            groups={g: tuple(m) for g, m in raw.groups.items()},
            interval_s=raw.interval_s,
            silent_after_s=raw.silent_after_s,
            max_age_s=raw.max_age_s,
            mode=raw.mode,
            deadband_kw=raw.deadband_kw,
            priority=raw.priority,
            shared_subscription=raw.shared_subscription,
        )
    except ValueError as err:  # the core's own checks (their message names the key)
        key = "topic_root" if raw.topic_root is None and "topic_root" in str(err) else ""
        raise ConfigError(source, key, str(err)) from None
    journal = resolve_path(raw.journal.path, base_dir)
    check_journal_file(journal, source)
    return FleetConfig(
        fleet=fleet,
        mqtt=raw.mqtt,
        metrics=raw.metrics,
        openadr=raw.openadr,
        journal_path=journal,
        retention_days=raw.journal.retention_days,
        source=source,
        base_dir=base_dir,
    )


def load_fleet(path: str | Path, *, require_credentials: bool = False) -> FleetConfig:
    """Read and validate ``path``, and read the secrets the daemon will read (the broker's
    password, its TLS files). A ``credential:NAME`` outside systemd is a note, or with
    ``require_credentials`` (the daemon, its reload) a ``ConfigError``."""
    source = str(path)
    try:
        data = parse_toml(decode_utf8(read_limited(path, limit=CONFIG_MAX_BYTES)))
    except FileRefused as err:
        raise ConfigError(source, "", f"cannot read config: {err}") from None
    try:
        base_dir = Path(path).resolve().parent
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise ConfigError(source, "", f"cannot read config: {err}") from None
    loaded = parse_fleet(data, source=source, base_dir=base_dir)
    from controller.dr.connect import mqtt_table_secrets  # noqa: PLC0415

    notes: list[str] | None = None if require_credentials else []
    mqtt_table_secrets(loaded.mqtt, source=source, base_dir=base_dir, notes=notes)
    loaded.ven_settings(notes=notes)  # the VEN's certificate, key, CA and fingerprint
    if notes:
        from dataclasses import replace  # noqa: PLC0415

        return replace(loaded, notes=tuple(notes))
    return loaded


def _check_mqtt(m: MqttConfig, source: str) -> None:
    if "enabled" in m.model_fields_set and not m.enabled:
        raise ConfigError(
            source, "mqtt.enabled", "the coordinator always uses MQTT: leave 'enabled' out"
        )
    if m.topic_root is not None:
        raise ConfigError(
            source,
            "mqtt.topic_root",
            "the coordinator's topics hang from the top-level 'topic_root' (and the feeders' "
            "from 'feeder_root'): leave mqtt.topic_root out",
        )


def _check_fleet(raw: FleetFile, source: str) -> None:
    """Sites and transformers once each; every name a feeder or a group gives is known."""
    sites: set[str] = set()
    for i, f in enumerate(raw.feeders):
        if f.site in sites:
            raise ConfigError(source, f"feeders[{i}].site", f"site {f.site!r} is listed twice")
        sites.add(f.site)
    names: set[str] = set()
    for i, t in enumerate(raw.transformers):
        if t.name in names:
            raise ConfigError(
                source, f"transformers[{i}].name", f"transformer {t.name!r} is listed twice"
            )
        names.add(t.name)
    for i, f in enumerate(raw.feeders):
        if f.transformer is not None and f.transformer not in names:
            raise ConfigError(
                source,
                f"feeders[{i}].transformer",
                f"no [[transformers]] is named {f.transformer!r}",
            )
    for group, members in raw.groups.items():
        if group == "all":
            raise ConfigError(
                source, "groups.all", "'all' is every feeder already: name the group otherwise"
            )
        unknown = [m for m in members if m not in sites]
        if unknown:
            raise ConfigError(
                source,
                f"groups.{group}",
                f"no [[feeders]] has site {unknown[0]!r}"
                + (f" (nor {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
            )
        if len(set(members)) != len(members):
            raise ConfigError(source, f"groups.{group}", "a feeder is listed twice")
