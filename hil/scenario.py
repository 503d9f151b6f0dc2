"""HIL scenarios: a TOML timeline of DR events, faults, cloud passes and load steps on a feeder.

``load_scenario(path)`` validates the file with pydantic and returns a ``Scenario``; every
problem is a ``ScenarioError`` whose message names the file, the key path and what is wrong,
on one line. Times on the timeline are seconds from the scenario's start (``start`` is the
time of day it starts at, which places it on the day's load and sun profiles).

```toml
name = "evening-peak"
date = "2026-08-26"  # the day it starts on (default 2026-07-01): real datetimes, a weekday
timezone = "Europe/Berlin"  # the site's local time, which ``start`` and the profiles are in
start = "17:00"
duration_s = 7200

[feeder]            # optional: the rig (IEEE 33-bus unless ``case`` says otherwise)
load_scale = 1.1
v_slack_pu = 1.02   # the substation's busbar at the start (default: the case's slack voltage)
varied = true       # a feeder unlike the case (hil.variation); false: the case's own picture
seed = 1            # the variation's and the AMI meters' draws
meters = "all"      # smart meters at the case's load buses: "all", "half" or "none"
meter_transport = "modbus"  # SunSpec behind one gateway; "mqtt" AMI meters; "mixed"
[feeder.days]       # optional: no two days alike (hil.days); without it every day is the same
sky = ["clear", "partly_cloudy"]   # each day's sky from the start date; later days drawn
level_spread = 0.06 # the feeder's load level each day within 1 ± this (and more, hil.days)
[controller]        # optional: a partial feederd.toml merged into the rig's config
interval_s = 5
[controller.poll]
timeout_s = 0.5     # real seconds: the rig's I/O is real, only the clock is simulated

[[dr]]              # a DR event: the controller's import/export limit while it lasts
start_s = 1200
end_s = 5400
import_limit_kw = 2600
announce_s = 1200   # when the operator announces it (= start_s: known only when it starts)

[[fault]]           # silent | slow | exception | garbage | frozen | reset (| outage)
device = "pv18"
kind = "silent"
start_s = 2400
end_s = 3000

[[cloud]]
start_s = 3000
end_s = 3600
depth = 0.6

[[load_step]]
start_s = 4000
factor = 1.05

[[oltc]]            # the on-load tap changer moves the busbar (the head meter measures it)
start_s = 4500
v_pu = 1.0
```
"""

from __future__ import annotations

import datetime as dt
import itertools
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from hil.ami import AmiSettings
from hil.days import DaySettings, DayVariation
from hil.feeder_meters import meter_layout, plan_meters
from hil.profiles import CloudPass, LoadStep, TapChange, busbar, load, sun
from hil.rig import DEFAULT_BATTERY_BUSES, DEFAULT_PV_BUSES
from hil.variation import RigVariation

__all__ = [
    "ALL_SCENARIOS",
    "BROKER",
    "BUNDLED_SCENARIOS",
    "DEFAULT_DATE",
    "FAULT_KINDS",
    "HORIZON_SCENARIOS",
    "MV_SCENARIOS",
    "V_BUSBAR_PU",
    "DaysSpec",
    "DrEvent",
    "Fault",
    "Scenario",
    "ScenarioError",
    "bundled_scenario",
    "load_scenario",
    "parse_scenario",
]

FAULT_KINDS = ("silent", "slow", "exception", "garbage", "frozen", "reset", "outage")
BROKER = "broker"
SCENARIO_DIR = Path(__file__).parent / "scenarios"
BUILTIN_CASE = "builtin:case33bw"
CASE33_LOAD_BUSES = tuple(range(2, 34))
"""The built-in 33-bus case's load buses (every bus but the slack): where its meters go."""
BUNDLED_SCENARIOS = (
    "evening_peak",
    "midday_overvoltage",
    "device_failures",
    "broker_outage",
    "oltc_high_busbar",
    "cloud_clearing_export_cap",
)
"""The two-hour scenarios of one situation each (what ``benchmarks/control_quality.py`` and
``scenarios_estimation.py`` run side by side)."""
HORIZON_SCENARIOS = ("announced_evening_event", "two_evening_caps")
"""The scenarios that span most of a day or days, at five-minute intervals: events announced
hours ahead or only as they start, a tariff, the days unlike each other
(``benchmarks/horizon_scenarios.py``)."""
MV_SCENARIOS = ("mv_fortnight",)
"""The scenarios that grade the M&V baselines: ordinary days enough for "10 of 10", then an
event (``benchmarks/mv_baselines.py`` runs each with and without it)."""
ALL_SCENARIOS = BUNDLED_SCENARIOS + HORIZON_SCENARIOS + MV_SCENARIOS


class ScenarioError(Exception):
    """A scenario that cannot be run; ``str()`` is the one-line message."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


class _At(ValueError):
    """A problem found by a check across tables, with the key it is about."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Seconds = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
V_BUSBAR_PU = (0.9, 1.1)
"""Where a scenario may put the substation's busbar (p.u.): a tap changer's range."""


def _busbar_pu(v_pu: float) -> float:
    low, high = V_BUSBAR_PU
    if not low <= v_pu <= high:  # also NaN
        raise ValueError(f"a busbar voltage must be within {low:g}..{high:g} p.u. (got {v_pu!r})")
    return v_pu


BusbarPu = Annotated[float, Field(strict=True), AfterValidator(_busbar_pu)]


class _Window(_Strict):
    start_s: Seconds
    end_s: Seconds

    @model_validator(mode="after")
    def _ordered(self) -> _Window:
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s:g}) must be after start_s ({self.start_s:g})")
        return self


class DrEvent(_Window):
    """A DR event: the feeder's import and/or export limit while it lasts.

    Without ``[mqtt]`` the runner sets the limits on the controller at ``start_s`` and
    ``end_s``; with it, the operator publishes the event on the broker at ``announce_s``
    (default: five minutes ahead, or at once) and the daemon's MQTT intake takes it from there.
    """

    import_limit_kw: float | None = None
    export_limit_kw: Annotated[float, Field(ge=0)] | None = None
    announce_s: Seconds | None = None
    id: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @property
    def announced_at_s(self) -> float:
        return self.announce_s if self.announce_s is not None else max(0.0, self.start_s - 300)

    @model_validator(mode="after")
    def _a_limit(self) -> DrEvent:
        if self.import_limit_kw is None and self.export_limit_kw is None:
            raise ValueError("a DR event needs import_limit_kw or export_limit_kw")
        return self


class Fault(_Window):
    """A device (its Modbus port) misbehaving between ``start_s`` and ``end_s``.

    ``slow`` answers ``delay_s`` late (real seconds, against the poll timeout); ``exception``
    answers with Modbus exception ``code``; ``reset`` drops the connection on every request.
    """

    device: str
    """A device's name, or ``broker`` (kind ``outage``: the MQTT broker stops)."""
    kind: Literal["silent", "slow", "exception", "garbage", "frozen", "reset", "outage"]
    delay_s: Positive = 0.5
    code: Annotated[int, Field(ge=1, le=11)] = 4


class Cloud(_Window):
    depth: Annotated[float, Field(ge=0, le=1)]
    edge_s: Seconds = 60.0


class LoadStepSpec(_Strict):
    start_s: Seconds
    factor: Positive
    end_s: Seconds | None = None


class TapChangeSpec(_Strict):
    """The on-load tap changer moves the busbar to ``v_pu`` at ``start_s`` (and holds it)."""

    start_s: Seconds
    v_pu: BusbarPu


class DaysSpec(_Strict):
    """``[feeder.days]``: the day-to-day variation of the rig's truth (``hil.days``)."""

    seed: Annotated[int, Field(ge=0, strict=True)] | None = None
    """Seeds the days' draws (default: ``[feeder] seed``)."""
    level_spread: Annotated[float, Field(ge=0, le=0.5)] = 0.06
    bus_spread: Annotated[float, Field(ge=0, le=0.5)] = 0.04
    shift_h: Annotated[float, Field(ge=0, le=3)] = 0.5
    weekend_level: Annotated[float, Field(ge=0.3, le=1.5)] = 0.9
    weekend_shift_h: Annotated[float, Field(ge=-3, le=3)] = 1.0
    sky: list[Literal["clear", "partly_cloudy", "overcast"]] = Field(default_factory=list)
    cloudy_frac: Annotated[float, Field(ge=0, le=1)] = 0.3
    haze: Annotated[float, Field(ge=0, le=0.5)] = 0.06

    def settings(self, seed: int) -> DaySettings:
        return DaySettings(
            seed=self.seed if self.seed is not None else seed,
            level_spread=self.level_spread,
            bus_spread=self.bus_spread,
            shift_h=self.shift_h,
            weekend_level=self.weekend_level,
            weekend_shift_h=self.weekend_shift_h,
            sky=tuple(self.sky),
            cloudy_frac=self.cloudy_frac,
            haze=self.haze,
        )


class FeederSpec(_Strict):
    """The rig: its case, DERs and how much load and sun it sees."""

    case: str = BUILTIN_CASE
    load_scale: Positive = 1.0
    """Multiplies the day's load shape (1 = the case's loads at the evening peak)."""
    pv_buses: list[int] = Field(default_factory=lambda: list(DEFAULT_PV_BUSES))
    pv_kw: Positive = 150.0
    pv_peak_frac: Annotated[float, Field(ge=0, le=1)] = 0.85
    """PV availability at noon on a clear day, per unit of the inverters' rating."""
    battery_buses: list[int] = Field(default_factory=lambda: list(DEFAULT_BATTERY_BUSES))
    battery_kw: Positive = 250.0
    battery_kwh: Positive = 500.0
    battery_soc_pct: Annotated[float, Field(ge=0, le=100)] = 60.0
    v_slack_pu: BusbarPu | None = None
    """The substation's busbar voltage at the start (p.u.); unset: the case's slack voltage.
    ``[[oltc]]`` moves it during the run; the controller's config is not told."""
    varied: StrictBool = True
    """A feeder unlike the controller's case (``hil.variation.RigVariation``): its own
    impedances, loads bus by bus, meters with an accuracy class, clouds that travel."""
    seed: Annotated[int, Field(ge=0, strict=True)] = 1
    """Seeds the variation and the AMI meters' cadence, lateness and losses."""
    meters: Literal["none", "half", "all"] = "all"
    """Smart meters at the case's load buses: all, every other one, or none."""
    meter_transport: Literal["modbus", "mqtt", "mixed"] = "modbus"
    """SunSpec meters behind one Modbus gateway, AMI meters over MQTT, or alternating."""
    days: DaysSpec | None = None
    """No two days alike (``[feeder.days]``); ``None``: every day the same curve."""


_RENAMED = {
    "poll_timeout_s": "is now [controller.poll] timeout_s",
    "stale_after_intervals": "is now [controller.poll] stale_after_intervals",
    "v_min_pu": "is now [controller.feeder] v_min_pu",
    "v_max_pu": "is now [controller.feeder] v_max_pu",
    "price_per_kwh": "is now [controller.dr] price_per_kwh",
    "revert_s": "is no longer set here: the rig's devices revert after ten intervals (30 s at least)",
}
"""Keys of the first scenario format's ``[controller]`` and what replaced them."""
DEFAULT_INTERVAL_S = 5.0
"""feederd's own default interval (``interval_s`` in feederd.toml)."""


def _controller(table: dict[str, Any]) -> dict[str, Any]:
    """A partial feederd config: checked here for what only a scenario can get wrong; the rest
    is validated as feederd.toml when the run merges it into the rig's config."""
    for key in table:
        if key in _RENAMED:
            raise ValueError(f"{key!r} {_RENAMED[key]}")
        if key in ("site", "devices"):
            raise ValueError(f"{key!r} is the rig's to set, not the scenario's")
    interval = table.get("interval_s", DEFAULT_INTERVAL_S)
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not 0.2 <= interval <= 3600
    ):
        raise ValueError(
            f"'interval_s' must be a number of seconds in 0.2..3600 (got {interval!r})"
        )
    return table


DEFAULT_DATE = dt.date(2026, 7, 1)
"""The (arbitrary) day a scenario runs on unless its ``date`` says otherwise."""


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name, e.g. 'Europe/Berlin' or 'UTC')"
        ) from None
    return name


class MqttSpec(_Strict):
    """DR events through a real Mosquitto the runner starts (and stops, for an outage)."""

    enabled: bool = False


class Scenario(_Strict):
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    date: dt.date = DEFAULT_DATE
    """The day the scenario starts on (local): the simulated clock's datetimes, weekdays."""
    timezone: Annotated[str, AfterValidator(_zone)] = "UTC"
    """The site's time zone (IANA): ``start``, the load and sun profiles and the days are in
    its local time; the clock the daemon runs on is UTC."""
    start: Annotated[str, Field(pattern=r"^([01]?\d|2[0-3]):[0-5]\d$")] = "00:00"
    """Time of day (HH:MM, local) the scenario starts at."""
    duration_s: Positive
    feeder: FeederSpec = FeederSpec()
    controller: dict[str, Any] = Field(default_factory=dict)
    """A partial feederd config (the keys of feederd.toml but ``site`` and ``devices``),
    merged into the one a commissioning engineer would write for the rig."""
    mqtt: MqttSpec = MqttSpec()
    dr: list[DrEvent] = Field(default_factory=list)
    fault: list[Fault] = Field(default_factory=list)
    cloud: list[Cloud] = Field(default_factory=list)
    load_step: list[LoadStepSpec] = Field(default_factory=list)
    oltc: list[TapChangeSpec] = Field(default_factory=list)

    @field_validator("controller")
    @classmethod
    def _partial_config(cls, table: dict[str, Any]) -> dict[str, Any]:
        return _controller(table)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        forecast = self.controller.get("forecast")
        zone = forecast.get("timezone") if isinstance(forecast, Mapping) else None
        if zone is not None and zone != self.timezone:
            raise _At(
                "controller.forecast.timezone",
                f"{zone!r} is not the scenario's timezone {self.timezone!r} (the rig's local "
                "time): set one, or both alike",
            )
        names = set(self.device_names)
        for i, fault in enumerate(self.fault):
            if fault.device == BROKER or fault.kind == "outage":
                if (fault.device, fault.kind) != (BROKER, "outage"):
                    raise _At(f"fault[{i}]", "kind 'outage' goes with device 'broker', and only it")
                if not self.mqtt.enabled:
                    raise _At(f"fault[{i}]", "a broker outage needs [mqtt] enabled = true")
            elif fault.device not in names:
                raise _At(
                    f"fault[{i}].device",
                    f"no device {fault.device!r} on the rig (devices: {', '.join(sorted(names))})",
                )
        seen: dict[float, int] = {}
        for i, change in enumerate(self.oltc):
            if change.start_s in seen:
                raise _At(
                    f"oltc[{i}].start_s",
                    f"oltc[{seen[change.start_s]}] already moves the busbar at {change.start_s:g} s",
                )
            seen[change.start_s] = i
        events = sorted(self.dr, key=lambda e: e.start_s)
        for a, b in itertools.pairwise(events):
            if b.start_s < a.end_s:
                raise _At(
                    "dr",
                    f"DR events overlap: {a.start_s:g}-{a.end_s:g} s and {b.start_s:g}-{b.end_s:g} s",
                )
        return self

    @property
    def interval_s(self) -> float:
        """The control interval (``[controller] interval_s``, feederd's default otherwise)."""
        return float(self.controller.get("interval_s", DEFAULT_INTERVAL_S))

    @property
    def start_hour(self) -> float:
        hh, mm = self.start.split(":")
        return int(hh) + int(mm) / 60.0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def start_local(self) -> datetime:
        """When the scenario starts, in the site's local time."""
        midnight = datetime(self.date.year, self.date.month, self.date.day, tzinfo=self.zone)
        return midnight + timedelta(hours=self.start_hour)

    @property
    def start_utc(self) -> datetime:
        """When the scenario starts, in UTC (the simulated clock's start)."""
        return self.start_local.astimezone(UTC)

    def local_time(self, t_s: float) -> datetime:
        """Scenario second ``t_s`` in the site's local time."""
        return (self.start_utc + timedelta(seconds=t_s)).astimezone(self.zone)

    def day_variation(self) -> DayVariation | None:
        """The days' draws (``[feeder.days]``; ``None``: every day alike)."""
        spec = self.feeder.days
        if spec is None:
            return None
        return DayVariation(
            spec.settings(self.feeder.seed), start_date=self.date, start_hour=self.start_hour
        )

    @property
    def device_names(self) -> tuple[str, ...]:
        """The rig's device names for this feeder (as ``HilRig`` names them); the bus meters'
        only on the built-in case, whose load buses are known without loading it."""
        feeder = self.feeder
        meters: tuple[str, ...] = ()
        if feeder.case == BUILTIN_CASE:
            buses = meter_layout(CASE33_LOAD_BUSES, feeder.meters)
            meters = tuple(p.name for p in plan_meters(buses, feeder.meter_transport))
        return (
            *(f"pv{b:02d}" for b in feeder.pv_buses),
            *(f"bat{b:02d}" for b in feeder.battery_buses),
            "head",
            *meters,
        )

    def rig_options(self) -> dict[str, Any]:
        """The ``HilRig`` keyword arguments this scenario decides: the load and sun profiles,
        the clouds (timed at the substation; kept out of ``pv_available_frac`` so that on a
        varied feeder they travel; the days' skies among them), the busbar, the DERs, the
        variation, the days and the local time zone, and the meters. The
        runner adds the clock (``monotonic``, ``now``), ``case`` and how it steps the physics."""
        feeder = self.feeder
        start_hour = self.start_hour
        steps = self.load_steps()
        days = self.day_variation()

        def haze(t: float) -> float:
            return 1.0 if days is None else days.sun_factor(t)

        return {
            "load_scale": lambda t: load(
                t, start_hour=start_hour, scale=feeder.load_scale, steps=steps
            ),
            "pv_available_frac": lambda t: (
                sun(t, start_hour=start_hour, peak_frac=feeder.pv_peak_frac, clouds=()) * haze(t)
            ),
            "clouds": self.clouds() + (() if days is None else days.clouds(self.duration_s)),
            "days": days,
            "tz": self.zone,
            "slack_v_pu": self.busbar_v_pu if self.moves_busbar else None,
            "pv_buses": tuple(feeder.pv_buses),
            "pv_kw": feeder.pv_kw,
            "battery_buses": tuple(feeder.battery_buses),
            "battery_kw": feeder.battery_kw,
            "battery_kwh": feeder.battery_kwh,
            "battery_soc_pct": feeder.battery_soc_pct,
            "variation": RigVariation(seed=feeder.seed) if feeder.varied else None,
            "meter_buses": feeder.meters,
            "meter_transport": feeder.meter_transport,
            "ami": AmiSettings(seed=feeder.seed),
        }

    def clouds(self) -> tuple[CloudPass, ...]:
        return tuple(
            CloudPass(start_s=c.start_s, end_s=c.end_s, depth=c.depth, edge_s=c.edge_s)
            for c in self.cloud
        )

    def load_steps(self) -> tuple[LoadStep, ...]:
        return tuple(
            LoadStep(start_s=s.start_s, factor=s.factor, end_s=s.end_s) for s in self.load_step
        )

    def tap_changes(self) -> tuple[TapChange, ...]:
        return tuple(TapChange(start_s=c.start_s, v_pu=c.v_pu) for c in self.oltc)

    @property
    def moves_busbar(self) -> bool:
        """Whether the busbar is anything but the case's slack voltage at some time."""
        return self.feeder.v_slack_pu is not None or bool(self.oltc)

    def busbar_v_pu(self, t_s: float) -> float | None:
        """The busbar's voltage at ``t_s`` (p.u.; ``None``: the case's slack voltage)."""
        return busbar(t_s, start_pu=self.feeder.v_slack_pu, changes=self.tap_changes())

    def limits_at(self, t_s: float) -> tuple[float | None, float | None]:
        """The (import, export) limits in force at ``t_s``."""
        for event in self.dr:
            if event.start_s <= t_s < event.end_s:
                return event.import_limit_kw, event.export_limit_kw
        return None, None

    def variant(
        self,
        *,
        uniform: bool = False,
        estimation: bool | None = None,
        control: Mapping[str, Any] | None = None,
    ) -> Scenario:
        """The same scenario for a comparison: ``uniform`` takes the rig's variation away (the
        meters stay); ``estimation`` sets the controller's ``[estimation] enabled`` (``None``:
        as the scenario's ``[controller]`` has it); ``control`` sets keys of its ``[control]``
        table (``reactive_power = false``, ``firm_limits = false``, ...), checked with the
        rest of the config when the run merges it into the rig's."""
        update: dict[str, Any] = {}
        if uniform:
            update["feeder"] = self.feeder.model_copy(update={"varied": False})
        controller = dict(self.controller)
        if estimation is not None:
            controller["estimation"] = {
                **dict(controller.get("estimation") or {}),
                "enabled": estimation,
            }
        if control:
            controller["control"] = {**dict(controller.get("control") or {}), **control}
        if controller != self.controller:
            update["controller"] = controller
        return self.model_copy(update=update) if update else self

    def compressed(self, factor: float) -> Scenario:
        """The same timeline with every time (and the duration) times ``factor`` (0 < f <= 1):
        how the tests run a two-hour scenario in a fraction of it."""
        if not 0 < factor <= 1:
            raise ValueError(f"compression factor must be within (0, 1], got {factor}")

        def scale(items: list[Any]) -> list[Any]:
            out = []
            for item in items:
                update = {
                    k: getattr(item, k) * factor
                    for k in ("start_s", "end_s", "edge_s", "announce_s")
                    if k in type(item).model_fields and getattr(item, k) is not None
                }
                out.append(item.model_copy(update=update))
            return out

        return self.model_copy(
            update={
                "duration_s": self.duration_s * factor,
                "dr": scale(self.dr),
                "fault": scale(self.fault),
                "cloud": scale(self.cloud),
                "load_step": scale(self.load_step),
                "oltc": scale(self.oltc),
            }
        )


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
    if "input" in err and kind not in ("model_type", "dict_type", "value_error"):
        return f"{msg} (got {err['input']!r})"
    return msg


def parse_scenario(data: dict[str, Any], *, source: str) -> Scenario:
    """Validate a parsed TOML document."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        at = first.get("ctx", {}).get("error")
        if isinstance(at, _At):  # a check across tables says which key it is about
            raise ScenarioError(source, at.key, at.problem + more) from None
        raise ScenarioError(
            source, _key_path(first["loc"]), _describe(dict(first)) + more
        ) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; every problem is a ``ScenarioError``."""
    p = Path(path)
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(source, "", f"cannot read scenario: {err.strerror or err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(source, "", f"not valid TOML: {err}") from None
    return parse_scenario(data, source=source)


def bundled_scenario(name: str) -> Path:
    """The path of a scenario shipped in ``hil/scenarios`` (``name`` without ``.toml``)."""
    path = SCENARIO_DIR / f"{name}.toml"
    if not path.is_file():
        raise KeyError(f"no bundled scenario {name!r} (have: {', '.join(ALL_SCENARIOS)})")
    return path
