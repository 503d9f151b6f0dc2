"""The coordinator's settings as plain records (``fleet.toml`` is parsed into them at the edge),
and the MQTT topics they imply.

A fleet is a set of feeders, each a feederd publishing on ``<feeder_root>/<site>/...``
(``flex``, ``dr/status``, ``online``; the coordinator publishes DR events on its ``dr/event``),
the transformers some of them share (a rating their feeders' import may not exceed together),
and named groups a system target can address (``"all"`` is every feeder). The coordinator's own
topics live under ``topic_root``: ``target`` (in), ``target/status`` and ``status`` (retained).

Everything is checked when the record is made: a ``ValueError`` of one line names what is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["ALL_GROUP", "MODES", "FeederSpec", "FleetSettings", "TransformerSpec"]

ALL_GROUP = "all"
"""The group every target may name: the whole fleet."""
MODES = ("cost", "fair")
MAX_PRIORITY = 1000
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""Sites, transformers, groups and shared-subscription names: one topic level, no wildcards."""


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} must match [A-Za-z0-9_.-]{{1,64}}")
    return value


def _check_rating(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what}: rating_kw must be a number")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what}: rating_kw must be positive and finite, got {value!r}")
    return float(value)


def _check_root(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty topic")
    if any(c in value for c in "+#\0") or value.startswith(("/", "$")) or value.endswith("/"):
        raise ValueError(f"{what} {value!r} must be a topic without wildcards or edge slashes")
    if "//" in value or len(value) > 200:
        raise ValueError(f"{what} {value!r} has an empty level or is too long")
    return value


@dataclass(frozen=True, slots=True)
class FeederSpec:
    """One feeder: its site (a topic level), its rating (no flexibility figure may exceed it,
    no target may ask more than the group's sum) and the transformer it hangs on, if shared."""

    site: str
    rating_kw: float
    transformer: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.site, "feeder site")
        _check_rating(self.rating_kw, f"feeder {self.site!r}")
        if self.transformer is not None:
            _check_name(self.transformer, f"feeder {self.site!r}: transformer")


@dataclass(frozen=True, slots=True)
class TransformerSpec:
    """A transformer several feeders share: their import together stays within ``rating_kw``."""

    name: str
    rating_kw: float

    def __post_init__(self) -> None:
        _check_name(self.name, "transformer")
        _check_rating(self.rating_kw, f"transformer {self.name!r}")


def _positive(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """The fleet and how the coordinator treats it.

    ``interval_s``: the check cadence (silence, shortfall, re-allocation); ``silent_after_s``:
    a feeder without flexibility this long is silent; ``max_age_s``: an older flex message is
    stale; ``mode``: ``cost`` (least total cost) or ``fair`` (the reduction in proportion to
    each feeder's flexibility); ``deadband_kw``: a limit moving less than this is not
    re-published; ``priority``: of the per-feeder DR events; ``shared_subscription``: a group
    name to share the flex subscription between coordinators (``$share/<name>/...``)."""

    name: str
    topic_root: str
    feeder_root: str
    feeders: tuple[FeederSpec, ...]
    transformers: tuple[TransformerSpec, ...] = ()
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    interval_s: float = 30.0
    silent_after_s: float = 90.0
    max_age_s: float = 120.0
    mode: str = "cost"
    deadband_kw: float = 10.0
    priority: int = 0
    shared_subscription: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > 128:
            raise ValueError("fleet name must be a non-empty string of at most 128 characters")
        _check_root(self.topic_root, "topic_root")
        _check_root(self.feeder_root, "feeder_root")
        object.__setattr__(self, "feeders", tuple(self.feeders))
        object.__setattr__(self, "transformers", tuple(self.transformers))
        if not self.feeders:
            raise ValueError("a fleet needs at least one feeder")
        sites = [f.site for f in self.feeders]
        dup = sorted({s for s in sites if sites.count(s) > 1})
        if dup:
            raise ValueError(f"feeder site(s) listed twice: {', '.join(dup)}")
        names = [t.name for t in self.transformers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"transformer(s) listed twice: {', '.join(dup)}")
        for f in self.feeders:
            if f.transformer is not None and f.transformer not in names:
                raise ValueError(f"feeder {f.site!r} names unknown transformer {f.transformer!r}")
        known = set(sites)
        groups: dict[str, tuple[str, ...]] = {}
        for group, listed in dict(self.groups).items():
            _check_name(group, "group")
            if group == ALL_GROUP:
                raise ValueError(f"group {ALL_GROUP!r} is implicit (every feeder): rename it")
            members = tuple(listed)
            if not members:
                raise ValueError(f"group {group!r} is empty")
            unknown = sorted(set(members) - known)
            if unknown:
                raise ValueError(f"group {group!r} names unknown feeder(s): {', '.join(unknown)}")
            if len(set(members)) != len(members):
                raise ValueError(f"group {group!r} lists a feeder twice")
            groups[group] = members
        object.__setattr__(self, "groups", MappingProxyType(groups))
        for key in ("interval_s", "silent_after_s", "max_age_s"):
            _positive(getattr(self, key), key)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        d = self.deadband_kw
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0 <= d < math.inf:
            raise ValueError(f"deadband_kw must be a non-negative number, got {d!r}")
        p = self.priority
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= MAX_PRIORITY:
            raise ValueError(f"priority must be an integer in 0..{MAX_PRIORITY}, got {p!r}")
        if self.shared_subscription:
            _check_name(self.shared_subscription, "shared_subscription")

    # -- the fleet -------------------------------------------------------------------------

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(f.site for f in self.feeders)

    def feeder(self, site: str) -> FeederSpec | None:
        for f in self.feeders:
            if f.site == site:
                return f
        return None

    def group_sites(self, group: str) -> tuple[str, ...] | None:
        """The feeders of ``group`` (``"all"``: every one), or ``None`` for an unknown group."""
        if group == ALL_GROUP:
            return self.sites
        return self.groups.get(group)

    def rating_sum_kw(self, sites: tuple[str, ...]) -> float:
        ratings = {f.site: f.rating_kw for f in self.feeders}
        return sum(ratings[s] for s in sites)

    # -- topics ----------------------------------------------------------------------------

    @property
    def flex_filter(self) -> str:
        base = f"{self.feeder_root}/+/flex"
        if self.shared_subscription:
            return f"$share/{self.shared_subscription}/{base}"
        return base

    @property
    def dr_status_filter(self) -> str:
        return f"{self.feeder_root}/+/dr/status"

    @property
    def online_filter(self) -> str:
        return f"{self.feeder_root}/+/online"

    @property
    def target_topic(self) -> str:
        return f"{self.topic_root}/target"

    @property
    def target_status_topic(self) -> str:
        return f"{self.topic_root}/target/status"

    @property
    def status_topic(self) -> str:
        return f"{self.topic_root}/status"

    def event_topic(self, site: str) -> str:
        return f"{self.feeder_root}/{site}/dr/event"

    def site_of(self, topic: str) -> str | None:
        """The site level of a topic under ``feeder_root`` (``feederd/north-1/flex`` →
        ``north-1``), whether or not the site is known; ``None`` for any other topic."""
        prefix = self.feeder_root + "/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :]
        site, sep, _ = rest.partition("/")
        return site if sep and site else None
