"""From a file or a parsed document to a ``LoadedConfig``: the models, then what only the whole can
say (devices on the feeder's buses, register maps, files, the journal), one path for ``check``,
``run`` and a reload."""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:  # loaded when a config is: `feederd event --journal` needs neither
    from devices import RegisterMap
    from optimizer import Network

from controller.config.errors import ConfigError, short_value
from controller.config.fields import MAX_KW
from controller.config.files import (
    CASE_MAX_BYTES,
    CONFIG_MAX_BYTES,
    SECRET_MAX_BYTES,
    FileRefused,
    check_regular_file,
    decode_utf8,
    file_kind,
    parse_toml,
    read_limited,
    resolve_path,
)
from controller.config.models import (
    MAX_BASE_KV,
    MAX_BASE_MVA,
    MAX_HORIZON_STEPS,
    MIN_BASE_KV,
    MIN_BASE_MVA,
    TRANSPORT_TYPES,
    Config,
    DeviceConfig,
    FeederConfig,
    TlsTransport,
)


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

    @property
    def bus_bands_pu(self) -> dict[int, tuple[float, float]]:
        """The buses held within a band of their own (``feeder.voltage_limits = "case"``: the
        case's limits, ``v_margin_pu`` inside them), by bus; empty with "config"."""
        return bus_bands(self.config.feeder, self.network)


def bus_bands(feeder: FeederConfig, network: Network) -> dict[int, tuple[float, float]]:
    """See ``LoadedConfig.bus_bands_pu``."""
    if feeder.voltage_limits == "config":
        return {}
    margin = feeder.v_margin_pu
    bands = {}
    for bus in network.buses:
        if bus.v_min_pu is None and bus.v_max_pu is None:
            continue
        low = feeder.v_min_pu if bus.v_min_pu is None else bus.v_min_pu
        high = feeder.v_max_pu if bus.v_max_pu is None else bus.v_max_pu
        bands[bus.id] = (low + margin, high - margin)
    return bands


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
        return f"type must be one of {', '.join(TRANSPORT_TYPES)} (got {short_value(err['ctx']['tag'])})"
    if kind == "finite_number":
        return f"must be a finite number (got {short_value(err.get('input'))})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    # a whole table as "input" (a model-level check) would bury the message: leave it out
    if (
        "input" in err
        and kind not in ("model_type", "dict_type")
        and not isinstance(err["input"], dict)
    ):
        return f"{msg} (got {short_value(err['input'])})"
    return msg


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: dict[str, Any], source: str) -> M:
    """``data`` as ``model`` (a config file's top-level table: feederd's, the coordinator's),
    or one ``ConfigError`` naming the first key that is wrong (and how many more are)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(source, _key_path(first["loc"]), _describe(dict(first)) + more) from None
    except RecursionError:
        raise ConfigError(source, "", "arrays or tables nested too deeply") from None


def parse_config(data: dict[str, Any], *, source: str, base_dir: Path) -> LoadedConfig:
    """Validate a parsed TOML document: the models and their ranges, the network it builds,
    the register maps it names (read here, once), and that the other files it names are
    regular files of bounded size. ``load_config`` also loads what ``run`` will load."""
    config = validated(Config, data, source)
    _check_ranges(config, source)
    _check_horizon(config, source)
    network = _network(config.feeder, source=source, base_dir=base_dir)
    _check_network(network, source)
    _check_bands(config.feeder, network, source)
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


def horizon_steps(config: Config) -> int:
    """How many steps the config's horizon has (``HorizonSpec.multi_resolution``'s count)."""
    from optimizer.horizon import HorizonSpec  # noqa: PLC0415

    c = config.control
    if c.horizon_h <= 0:
        return 1
    if c.horizon_h * 3600.0 / c.horizon_block_s > 10 * MAX_HORIZON_STEPS:
        return math.ceil(c.horizon_h * 3600.0 / c.horizon_block_s)  # not worth building
    return HorizonSpec.multi_resolution(
        config.interval_s,
        hours=c.horizon_h,
        fine_steps=c.horizon_fine_steps,
        block_s=c.horizon_block_s,
    ).horizon


def _check_horizon(config: Config, source: str) -> None:
    """The horizon's steps: blocks no shorter than the interval, not too many of them."""
    c = config.control
    if c.horizon_h > 0 and c.horizon_block_s < config.interval_s:
        raise ConfigError(
            source,
            "control.horizon_block_s",
            f"blocks of {c.horizon_block_s:g} s are shorter than the interval "
            f"({config.interval_s:g} s): a block is at least one interval",
        )
    steps = horizon_steps(config)
    if steps > MAX_HORIZON_STEPS:
        raise ConfigError(
            source,
            "control.horizon_h",
            f"{c.horizon_h:g} h makes {steps} steps ({c.horizon_fine_steps} of "
            f"{config.interval_s:g} s, then blocks of {c.horizon_block_s:g} s): at most "
            f"{MAX_HORIZON_STEPS}; lengthen horizon_block_s or shorten horizon_h",
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
            network = load_matpower(case_path)
        else:
            network = network_from_tables(
                name="inline",
                base_mva=feeder.base_mva,
                slack_bus=feeder.slack_bus,
                buses=[b.model_dump() for b in feeder.buses],
                branches=[b.model_dump() for b in feeder.branches],
            )
        if feeder.v_slack_pu is not None:
            network = dataclasses.replace(network, v_slack_pu=feeder.v_slack_pu)
        return network
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
            ("shunt conductance", bus.gs_kw, -MAX_KW, MAX_KW),
            ("shunt susceptance", bus.bs_kvar, -MAX_KW, MAX_KW),
        ):
            if not low <= value <= high:
                raise ConfigError(
                    source, key, f"bus {bus.id}: {name} {value:g} is outside {low:g}..{high:g}"
                )
    for gen in network.generators:
        for name, value in (("PG", gen.p_kw), ("QG", gen.q_kvar)):
            if not abs(value) <= MAX_KW:
                raise ConfigError(
                    source,
                    key,
                    f"generator at bus {gen.bus}: {name} {value:g} kW is over {MAX_KW:g} kW",
                )
    if not abs(network.total_load_kw) <= MAX_KW:
        raise ConfigError(
            source,
            key,
            f"the feeder's total load {network.total_load_kw:g} kW is over {MAX_KW:g} kW",
        )


def _check_bands(feeder: FeederConfig, network: Network, source: str) -> None:
    """With ``voltage_limits = "case"``, every case band must leave room for the margin."""
    for bus, (low, high) in bus_bands(feeder, network).items():
        if not low < high:
            b = network.bus(bus)
            raise ConfigError(
                source,
                "feeder.voltage_limits",
                f"bus {bus}'s band in the case ({b.v_min_pu}-{b.v_max_pu} p.u., completed "
                f"with the config's) leaves no room inside v_margin_pu {feeder.v_margin_pu:g}",
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
    check_journal_file(resolve_path(config.journal.path, base_dir), source)


def check_journal_file(path: Path, source: str, key: str = "journal.path") -> None:
    """``path`` is an SQLite file, or one that can be made (its nearest existing folder is a
    folder); one ``ConfigError`` naming ``key`` otherwise. Nothing is created (feederd's
    journal and the fleet coordinator's)."""
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
            source, key, f"{str(path)!r} is {file_kind(st.st_mode)}, not a regular file"
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
