"""Config mutations, and the two ways feederd meets a config: ``feederd check`` and the run path.

Shared by ``tests/controller/test_config_fuzz.py`` (hypothesis draws the choices) and
``benchmarks/fuzz_config.py`` (a seeded ``random.Random`` does). A mutation starts from
``deploy/feederd.example.toml`` or a rig-style config (the HIL rig's devices: Modbus PV and
batteries, a register-map load, an MQTT PV) and changes values to adversarial numbers, strings
and types, deletes and inserts keys, nests deeply, or damages the text (bad UTF-8, a NUL byte,
a 5,000-digit integer, a dotted key of thousands of parts, a cut).

``evaluate`` runs the config through ``feederd check`` (in this process, ``controller.cli.main``)
and through what ``feederd run`` does before its first interval (``load_config`` with the
credentials required, the run command's ``_settings``, ``Fleet.build``, ``Daemon.open`` entered
and left on a ``FakeClock``), and returns the problems: every config must either pass ``check``
and be accepted by the run path, or be refused by both with the same single line and exit 2,
and never raise anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import shutil
import tomllib
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from controller.cli import main
from controller.clock import FakeClock
from controller.commands.run import _settings
from controller.config import ConfigError, LoadedConfig, load_config
from controller.daemon import Daemon
from controller.fleet import Fleet
from controller.setpoints import setpoints
from controller.snapshot import EstimatorState, Snapshot, dispatch_input
from devices import BatteryReading, LoadReading, MeterReading, PvReading, Ramp
from devices.safety import battery_command, load_command, pv_command
from optimizer import Dispatcher, DispatchResult, builtin_case, proportional_curtailment

__all__ = [
    "Chooser",
    "Files",
    "Outcome",
    "dispatch_once",
    "evaluate",
    "example_base",
    "make_files",
    "mutate",
    "mutate_numbers",
    "rig_base",
    "to_toml",
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "feederd.example.toml"
T = TypeVar("T")


class Chooser(Protocol):
    """Where the choices come from: ``random.Random``, or hypothesis (``DataChooser``)."""

    def choice(self, seq: Sequence[T]) -> T: ...

    def randint(self, a: int, b: int) -> int: ...


# -- TOML out ---------------------------------------------------------------------------------


def _key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key):
        return key
    return _string(key)


def _string(value: str) -> str:
    out = ['"']
    for c in value:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


@dataclass(frozen=True)
class Raw:
    """TOML text written as it is (a value nested thousands deep)."""

    text: str


def _value(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def to_toml(doc: dict[str, Any]) -> str:
    """``doc`` as TOML: one ``key = value`` line per top-level key, tables inline."""
    return "".join(f"{_key(k)} = {_value(v)}\n" for k, v in doc.items())


# -- the bases --------------------------------------------------------------------------------


def example_base(files: Files) -> dict[str, Any]:
    """``deploy/feederd.example.toml``, its journal in the scratch folder."""
    doc = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    doc["journal"]["path"] = str(files.dir / "journal.sqlite")
    return doc


def rig_base(files: Files) -> dict[str, Any]:
    """A config like ``rig_config`` writes for the HIL rig (ports nobody listens on)."""
    from hil.rig import DEFAULT_BATTERY_BUSES, DEFAULT_PV_BUSES  # noqa: PLC0415

    port = iter(range(47_000, 48_000))
    devices: list[dict[str, Any]] = [
        {
            "name": "head",
            "kind": "meter",
            "bus": 1,
            "head": True,
            "transport": {"type": "tcp", "host": "127.0.0.1", "port": next(port), "unit": 1},
        }
    ]
    for bus in DEFAULT_PV_BUSES:
        devices.append(
            {
                "name": f"pv{bus:02d}",
                "kind": "pv",
                "bus": bus,
                "rating_kw": 150.0,
                "revert_s": 30,
                "transport": {"type": "tcp", "host": "127.0.0.1", "port": next(port), "unit": 1},
            }
        )
    devices[1]["transport"] = {  # one PV speaks MQTT, as `HilRig(mqtt_pv_buses=...)` gives
        "type": "mqtt",
        "host": "127.0.0.1",
        "port": next(port),
        "telemetry_topic": "rig/pv07/telemetry",
        "paths": {"p_kw": "ac.p_w", "limit_pct": "limit_pct"},
        "scale": {"p_kw": 0.001},
        "setpoint_topic": "rig/pv07/setpoint",
        "status_topic": "rig/pv07/status",
        "max_age_s": 5.0,
    }
    devices.extend(
        {
            "name": f"bat{bus:02d}",
            "kind": "battery",
            "bus": bus,
            "rating_kw": 250.0,
            "energy_kwh": 500.0,
            "revert_s": 30,
            "ramp_kw_per_s": 50.0,
            "transport": {"type": "tcp", "host": "127.0.0.1", "port": next(port), "unit": 1},
        }
        for bus in DEFAULT_BATTERY_BUSES
    )
    devices.append(
        {
            "name": "load12",
            "kind": "load",
            "bus": 12,
            "rating_kw": 100.0,
            "min_kw": 20.0,
            "revert_s": 30,
            "register_map": "builtin:controllable_load",
            "transport": {"type": "tcp", "host": "127.0.0.1", "port": next(port), "unit": 1},
        }
    )
    return {
        "site": "hil",
        "interval_s": 5.0,
        "feeder": {"case": "builtin:case33bw", "v_min_pu": 0.92, "v_max_pu": 1.05},
        "dr": {"import_limit_kw": 2000.0, "price_per_kwh": 0.1},
        "poll": {"timeout_s": 1.0},
        "metrics": {"enabled": False},
        "journal": {"path": str(files.dir / "rig-journal.sqlite")},
        "devices": devices,
    }


# -- files a mutation may name ----------------------------------------------------------------


@dataclass(frozen=True)
class Files:
    """A scratch folder with files of every kind a path in the config may name."""

    dir: Path
    cwd: Path
    """Where the evaluation runs: relative journal paths land in here."""
    paths: tuple[str, ...]


def make_files(directory: Path, *, certs: Any | None = None) -> Files:
    """Regular, empty, oversized and non-regular files, register maps and a case in
    ``directory``; ``certs`` (``tests.support.tls.Certs``) adds real TLS files."""
    d = directory
    (d / "notes.txt").write_text("not a config\n", encoding="utf-8")
    (d / "empty.txt").write_bytes(b"")
    (d / "big.bin").write_bytes(b"a" * ((1 << 20) + 1))  # over the map and config limits
    (d / "secret-big.txt").write_bytes(b"p" * ((64 << 10) + 1))
    (d / "bad-utf8.txt").write_bytes(b"\xff\xfe password \xc3\x28\n")
    (d / "password.txt").write_text("s3cret\n", encoding="utf-8")
    (d / "folder").mkdir(exist_ok=True)
    fifo = d / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    from devices import register_map  # noqa: PLC0415

    maps = Path(register_map.__file__).parent / "maps"
    shutil.copy(maps / "three_phase_float_meter.toml", d / "meter-map.toml")
    shutil.copy(maps / "controllable_load.toml", d / "load-map.toml")
    (d / "bad-map.toml").write_text("[[points]]\nname = 'p_kw'\naddress = 65535\n")
    shutil.copy(builtin_case("case33bw"), d / "case33.m")
    (d / "broken-case.m").write_text("function mpc = broken\nmpc.baseMVA = nan;\n")
    cwd = d / "cwd" / "a" / "b"
    cwd.mkdir(parents=True, exist_ok=True)
    names = [
        "notes.txt",
        "empty.txt",
        "big.bin",
        "secret-big.txt",
        "bad-utf8.txt",
        "password.txt",
        "folder",
        "fifo",
        "meter-map.toml",
        "load-map.toml",
        "bad-map.toml",
        "case33.m",
        "broken-case.m",
        "missing.txt",
    ]
    paths = [str(d / n) for n in names] + ["meter-map.toml", "case33.m", "missing.toml"]
    if certs is not None:
        for p in (certs.ca, certs.server_cert, certs.server_key, certs.client_cert):
            paths.append(str(p))
        paths.append(str(certs.client_key))
    return Files(dir=d, cwd=cwd, paths=tuple(paths))


# -- mutations --------------------------------------------------------------------------------

NUMBERS: tuple[Any, ...] = (
    math.nan,
    math.inf,
    -math.inf,
    0,
    0.0,
    -0.0,
    -1,
    1,
    2,
    0.5,
    5e-324,
    1e-300,
    0.001,
    0.01,
    3,
    30,
    366,
    367,
    1000.0,
    1000.5,
    3650,
    3651,
    65535,
    65536,
    100_000,
    100_001,
    1e6,
    1e6 + 1,
    -1e6,
    -1e6 - 1,
    1e7,
    2**31 - 1,
    2**31,
    2**63,
    -(2**63) - 1,
    999_999_999_999,
    1e300,
    -1e300,
    1e308,
    10**4000,
)
STRINGS: tuple[str, ...] = (
    "",
    " ",
    "x",
    "a" * 300,
    "b" * 70_000,
    "\x00",
    "a\x00b",
    "line\nbreak",
    "\x7f",
    "\u202e",
    "ü",
    "🙂",
    "../../../../../../../../etc/passwd",
    "journal.sqlite",
    "../journal2.sqlite",
    "/",
    "/dev/zero",
    "/dev/null",
    "/proc/self/status",
    "builtin:case33bw",
    "builtin:nope",
    "builtin:controllable_load",
    "builtin:three_phase_float_meter",
    "credential:pw",
    "credential:../x",
    "credential:",
    "modbus-tcp",
    "modbus-rtu",
    "tcp",
    "tls",
    "rtu",
    "mqtt",
    "meter",
    "pv",
    "battery",
    "load",
    "127.0.0.1",
    "::1",
    "0.0.0.0",
    "localhost",
    "a..b",
    "-a",
    "a" * 64 + ".example",
    "#",
    "a/+/b",
    "release",
    "revert",
    "N",
    "E",
    "nan",
    "inf",
    "1e309",
    "5",
    "-1",
    "ac.p_w",
)
OTHERS: tuple[Any, ...] = (True, False, [], {}, [1, 2], ["a"], {"a": 1}, [{"x": 1}])
JUNK_KEYS = ("colour", "", " ", "a.b", "\x00", "ü", "x" * 200)


def _known_keys() -> tuple[str, ...]:
    from pydantic import BaseModel  # noqa: PLC0415

    from controller import config  # noqa: PLC0415

    keys: set[str] = set()
    for obj in vars(config).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
            keys.update(obj.model_fields)
    return tuple(sorted(keys))


KNOWN_KEYS = _known_keys()

Node = dict[str, Any] | list[Any]
Path_ = tuple[Node, str | int]


def _slots(node: Any) -> list[Path_]:
    """Every (container, key) in the tree, depth first."""
    out: list[Path_] = []
    stack: list[Any] = [node]
    while stack:
        n = stack.pop()
        items: Sequence[tuple[str | int, Any]] = (
            list(n.items()) if isinstance(n, dict) else list(enumerate(n))
        )
        for k, v in items:
            out.append((n, k))
            if isinstance(v, dict | list):
                stack.append(v)
    return out


def _pick(doc: dict[str, Any], c: Chooser) -> Path_ | None:
    """A place in ``doc``: a top-level key first (so each section is as likely as the list of
    devices), then anywhere beneath it."""
    if not doc:
        return None
    key = c.choice(list(doc))
    value = doc[key]
    inner = _slots(value) if isinstance(value, dict | list) else []
    return c.choice([(doc, key), *inner])


def _tables(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    stack: list[Any] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            out.append(n)
            stack.extend(v for v in n.values() if isinstance(v, dict | list))
        elif isinstance(n, list):
            stack.extend(v for v in n if isinstance(v, dict | list))
    return out


def _near(value: Any, c: Chooser) -> Any:
    """A value close to ``value`` (so some mutations are accepted and go on to run)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    factor = c.choice((2, 0.5, 10, 0.1, 1000, -1, 1.01, 0.99))
    out = value * factor
    return round(out) if isinstance(value, int) and abs(out) < 2**62 else out


def _adversarial(c: Chooser, files: Files, current: Any = None) -> Any:
    pool = c.choice(("number", "string", "path", "other", *("near",) * 6))
    if pool == "number":
        return c.choice(NUMBERS)
    if pool == "string":
        return c.choice(STRINGS)
    if pool == "path":
        return c.choice(files.paths)
    if pool == "other":
        return c.choice(OTHERS)
    return _near(current, c) if current is not None else c.choice(NUMBERS)


def _deep(c: Chooser) -> Raw:
    """Arrays or inline tables nested 40 to 2,000 deep."""
    depth = c.choice((40, 200, 400, 600, 2000))
    if c.randint(0, 1):
        return Raw("[" * depth + "1" + "]" * depth)
    return Raw("{k = " * depth + "1" + "}" * depth)


Op = Literal["set", "delete", "insert", "deep"]


def mutate(doc: dict[str, Any], c: Chooser, files: Files) -> bytes:
    """Change ``doc`` (in place) one to three times and return it as TOML bytes, perhaps
    damaged as text."""
    for _ in range(c.randint(1, 3)):
        op: Op = c.choice(("set", "set", "set", "set", "delete", "insert", "insert", "deep"))
        slot = _pick(doc, c)
        if op == "set" and slot is not None:
            parent, key = slot
            parent[key] = _adversarial(c, files, parent[key])  # type: ignore[index]
        elif op == "delete" and slot is not None:
            parent, key = slot
            del parent[key]  # type: ignore[arg-type]
        elif op == "insert":
            table = c.choice(_tables(doc) or [doc])
            key = c.choice((*KNOWN_KEYS, *JUNK_KEYS))
            table[key] = _adversarial(c, files)
        elif op == "deep":
            table = c.choice(_tables(doc) or [doc])
            table[c.choice((*KNOWN_KEYS[:8], "colour"))] = _deep(c)
    text = to_toml(doc).encode("utf-8")
    damage = c.choice(("none",) * 24 + ("utf8", "nul", "dotted", "digits", "cut", "nest"))
    at = c.randint(0, len(text))
    if damage == "utf8":
        text = (
            text[:at] + c.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90")) + text[at:]
        )
    elif damage == "nul":
        text = text[:at] + b"\x00" + text[at:]
    elif damage == "dotted":
        text += b"x" + b".x" * c.choice((40, 5000, 200_000)) + b" = 1\n"
    elif damage == "digits":
        text += b"huge = " + b"9" * c.choice((4000, 5000)) + b"\n"
    elif damage == "cut":
        text = text[:at]
    elif damage == "nest":
        n = c.choice((100, 600, 100_000))
        text += b"deep = " + b"[" * n + b"]" * n + b"\n"
    return text


EDGES: tuple[float, ...] = (
    0.001,
    0.01,
    0.5,
    1.0,
    -1.0,
    1000.0,
    -1000.0,
    1e4,
    1e6,
    -1e6,
    1e7,
)


def mutate_numbers(doc: dict[str, Any], c: Chooser) -> bytes:
    """Set one to four numbers of ``doc`` (in place) to values at or near the edges of their
    ranges (most are accepted: they go on to be dispatched)."""
    numeric = [
        (parent, key)
        for parent, key in _slots(doc)
        if isinstance(parent[key], int | float) and not isinstance(parent[key], bool)  # type: ignore[index]
    ]
    for _ in range(c.randint(1, 4)):
        parent, key = c.choice(numeric)
        current = parent[key]  # type: ignore[index]
        value = c.choice((*EDGES, _near(current, c), _near(current, c)))
        parent[key] = round(value) if isinstance(current, int) else float(value)  # type: ignore[index]
    return to_toml(doc).encode("utf-8")


# -- evaluation -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What ``check`` and the run path made of one config."""

    result: Literal["accepted", "refused", "unverifiable"]
    message: str
    """``check``'s one line when refused."""
    problems: list[str] = field(default_factory=list)
    """Each broken promise (a traceback, two lines, a config check accepts and run refuses)."""
    loaded: LoadedConfig | None = None

    @property
    def tracebacks(self) -> int:
        return sum("Traceback" in p for p in self.problems)


def _cli(argv: list[str]) -> tuple[int, str, str, str | None]:
    """``feederd ARGV`` in this process: exit code, stdout, stderr, and a traceback if it
    raised."""
    out, err = io.StringIO(), io.StringIO()
    crash = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:
            code = -1
            crash = traceback.format_exc()
    return code, out.getvalue(), err.getvalue(), crash


async def _enter_and_leave(loaded: LoadedConfig) -> None:
    clock = FakeClock()
    fleet = Fleet.build(loaded, monotonic=clock.monotonic)
    await fleet.close()
    async with Daemon.open(loaded, clock=clock):
        await asyncio.sleep(0)


def _run_path(path: Path) -> tuple[LoadedConfig | None, str | None, str | None]:
    """What ``feederd run`` does before its first interval: (loaded, its ConfigError, a
    traceback if anything else was raised)."""
    try:
        loaded = load_config(path, require_credentials=True)
        _settings(loaded)
        asyncio.run(_enter_and_leave(loaded))
    except ConfigError as err:
        return None, str(err), None
    except BaseException:
        return None, None, traceback.format_exc()
    return loaded, None, None


def _one_line(code: int, out: str, err: str) -> list[str]:
    problems = []
    lines = err.splitlines()
    if code != 2:
        problems.append(f"exit {code}, not 2")
    if len(lines) != 1 or not lines[0].startswith("feederd: "):
        problems.append(f"stderr is not one 'feederd: ' line: {err[:2000]!r}")
    if "Traceback" in err:
        problems.append("Traceback on stderr: " + err[:4000])
    if out:
        problems.append(f"stdout not empty: {out[:500]!r}")
    return problems


def evaluate(text: bytes, files: Files) -> Outcome:
    """Check, then the run path, on ``text``; see the module docstring."""
    path = files.cwd / "feederd.toml"
    path.write_bytes(text)
    with contextlib.chdir(files.cwd):
        code, out, err, crash = _cli(["check", "--config", str(path)])
        loaded, run_error, run_crash = _run_path(path)
        problems: list[str] = []
        if crash is not None:
            problems.append("check raised: " + crash)
        if run_crash is not None:
            problems.append("the run path raised: " + run_crash)
        if crash is not None or run_crash is not None:
            return Outcome("refused", err.strip(), problems)
        if code == 0:
            if loaded is not None:
                return Outcome("accepted", "", problems, loaded)
            assert run_error is not None
            if "cannot be checked here" in out and "$CREDENTIALS_DIRECTORY" in run_error:
                return Outcome("unverifiable", run_error, problems)
            problems.append(f"check accepted, run refused: {run_error}")
            return Outcome("accepted", "", problems)
        problems += _one_line(code, out, err)
        line = err.strip()
        if run_error is None:
            problems.append(f"check refused ({line}), run accepted")
            return Outcome("refused", line, problems)
        if line != f"feederd: {run_error}":
            problems.append(f"check and run refuse differently: {line!r} / {run_error!r}")
        # and `feederd run` itself says the same, once, with exit 2
        r_code, r_out, r_err, r_crash = _cli(["run", "--config", str(path)])
        if r_crash is not None:
            problems.append("run raised: " + r_crash)
        problems += [f"run: {p}" for p in _one_line(r_code, r_out, r_err)]
        if r_err.strip() != line:
            problems.append(f"run says {r_err.strip()!r}, check says {line!r}")
        return Outcome("refused", line, problems)


# -- an accepted config dispatches ------------------------------------------------------------


def dispatch_once(loaded: LoadedConfig) -> tuple[DispatchResult, dict[str, Any]]:
    """One interval's dispatch on ``loaded``'s values, as the controller makes it: a snapshot
    of every device at a plausible reading, ``dispatch_input`` with the config's limits, price
    and band, ``Dispatcher.solve`` (the proportional rule when it gives no setpoints, e.g. a
    1,000 MW inverter on the 33-bus feeder, whose power flow cannot converge), then each
    device's command clamped to its ratings."""
    cfg = loaded.config
    net = loaded.network
    pv: dict[str, PvReading] = {}
    batteries: dict[str, BatteryReading] = {}
    loads: dict[str, LoadReading] = {}
    for d in cfg.devices:
        rating = d.rating_kw or 0.0
        if d.kind == "pv":
            pv[d.name] = PvReading(
                device=d.name,
                p_kw=0.8 * rating,
                w_max_kw=rating,
                limit_pct=None,
                limit_enabled=False,
                limit_revert_s=None,
            )
        elif d.kind == "battery":
            assert d.energy_kwh is not None
            batteries[d.name] = BatteryReading(
                device=d.name,
                p_kw=0.0,
                p_max_kw=rating,
                energy_kwh=d.energy_kwh,
                soc_pct=60.0,
                min_reserve_pct=10.0,
            )
        elif d.kind == "load":
            loads[d.name] = LoadReading(
                device=d.name,
                p_kw=rating,
                rating_kw=rating,
                min_kw=d.min_kw,
                limit_kw=None,
                limit_active=None,
            )
    head = MeterReading(
        device=loaded.head_meter.name, p_kw=net.total_load_kw, q_kvar=None, v_ll_v=None, a=None
    )
    snapshot = Snapshot(
        cycle=1,
        taken_at=datetime(2026, 1, 1, tzinfo=UTC),
        head=head,
        pv=pv,
        batteries=batteries,
        missing=frozenset(),
        loads=loads,
    )
    bus = {d.name: d.bus for d in cfg.devices}
    state = EstimatorState()
    inp = dispatch_input(
        snapshot,
        net,
        pv_bus=bus,
        battery_bus=bus,
        ramp_kw_per_s={d.name: d.ramp_kw_per_s for d in cfg.devices},
        state=state,
        interval_s=cfg.interval_s,
        import_limit_kw=cfg.dr.import_limit_kw,
        export_limit_kw=cfg.dr.export_limit_kw,
        v_min_pu=cfg.feeder.dispatch_band_pu[0],
        v_max_pu=cfg.feeder.dispatch_band_pu[1],
        price_per_kwh=cfg.dr.price_per_kwh,
        load_bus=bus,
        shed_cost_per_kwh={d.name: d.shed_cost_per_kwh for d in cfg.devices if d.kind == "load"},
    )
    result = Dispatcher(net, time_limit_s=max(cfg.interval_s * 0.3, 1.0)).solve(inp)
    if not result.status.has_setpoints:  # as the controller does: the documented rule
        result = proportional_curtailment(net, inp)
    commands: dict[str, Any] = {}
    devices = {d.name: d for d in cfg.devices}
    for name, sp in setpoints(result, snapshot, state).items():
        d = devices[name]
        ramp = (
            None
            if d.ramp_kw_per_s is None
            else Ramp(kw_per_s=d.ramp_kw_per_s, interval_s=cfg.interval_s)
        )
        rating = d.rating_kw or 0.0
        if d.kind == "pv":
            commands[name] = pv_command(
                d.name, sp.p_max_kw, w_max_kw=rating, revert_s=d.revert_s, ramp=ramp
            )
        elif d.kind == "battery":
            commands[name] = battery_command(
                d.name, sp.p_kw, p_max_kw=rating, revert_s=d.revert_s, ramp=ramp
            )
        else:
            commands[name] = load_command(
                d.name,
                sp.p_max_kw,
                min_kw=d.min_kw,
                rating_kw=rating,
                revert_s=d.revert_s,
                ramp=ramp,
            )
    return result, commands
