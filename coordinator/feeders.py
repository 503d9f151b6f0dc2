"""Each feeder as the coordinator knows it, from what the feeder publishes.

- ``flex`` (``controller.flex.parse_flex`` with the feeder's rating and ``max_age_s``): the last
  accepted ``Flexibility``; a refused message is counted by reason and logged once per feeder
  and reason (a feeder repeating the same fault every interval is one line).
- ``online`` (``true``/``false``; the MQTT will says ``false`` when the feeder dies).
- ``dr/status``: the feeder's decision on the coordinator's current event for it (``recent``)
  and the shortfall its plan predicts for it (``events``).

A feeder is *silent* after ``silent_after_s`` without flexibility, or ``OFFLINE_GRACE_S`` after
``online = false`` (its will: it died) while the coordinator's own connection stayed up. The
grace is for a broker that stops: Mosquitto publishes every client's will as it shuts down,
just before the coordinator's connection drops, and a broker restart must not re-split the
fleet; a connection lost within the grace forgets those wills (the feeders are judged by their
flexibility once the broker is back). Silence is not judged while the broker is down nor for
``silent_after_s`` after it returns (the feeders' retained messages arrive first). A feeder is *short* when its measured
import exceeds the coordinator's limit by more than ``COMPLIANCE_TOLERANCE`` (2 %, the feeder's
own compliance rule) for two flex messages in a row while the event is active, or when its plan
predicts a shortfall beyond that tolerance: from then on it is asked no more than it achieves
(its floor is raised to its import, or to the limit plus the predicted shortfall).

``FeederState.allocation_input`` says how the allocation LP counts the feeder: flexible within
its range (above its floor), or fixed at what it is expected to draw.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from controller.dr.events import json_object, short
from controller.flex import Flexibility, FlexRejected, parse_flex
from controller.records import COMPLIANCE_TOLERANCE
from coordinator.allocation import FeederInput
from coordinator.metrics import FleetMetrics
from coordinator.settings import FeederSpec, FleetSettings

__all__ = ["FeederState", "Feeders", "refusal_kind"]

log = structlog.get_logger("feederd.coordinator")

OFFLINE_GRACE_S = 2.0
"""How long a feeder's will waits before it is believed (see the module docstring)."""
MAX_STATUS_BYTES = 65_536
MAX_STATUS_DEPTH = 6
SHORT_AFTER = 2
"""Flex messages in a row over the limit (while the event is active) that make a feeder short."""
_KINDS = (
    (re.compile(r"^stale"), "stale"),
    (re.compile(r"^from the future"), "future"),
    (re.compile(r"beyond the feeder's rating"), "over_rating"),
    (re.compile(r"^'site' is"), "wrong_site"),
    (re.compile(r"^payload larger|^payload nested"), "too_large"),
)


def refusal_kind(reason: str) -> str:
    """A refusal's reason as a bounded label (the reason itself carries numbers)."""
    for pattern, kind in _KINDS:
        if pattern.search(reason):
            return kind
    return "malformed"


@dataclass(slots=True)
class FeederState:
    """One feeder: its last accepted flexibility, whether it is heard from, and how it answers
    the coordinator's current event for it (accepted, rejected, falling short)."""

    spec: FeederSpec
    flex: Flexibility | None = None
    flex_mono: float | None = None
    """When (monotonic) the last flex was accepted."""
    last_seen: datetime | None = None
    online: bool | None = None
    silent: bool = False
    event_id: str | None = None
    """The coordinator's current (latest published) event for this feeder, and its kW."""
    event_kw: float | None = None
    rejected: str | None = None
    """The feeder's reason for rejecting ``event_id``."""
    accepted: bool = False
    over_count: int = 0
    floor_kw: float | None = None
    """Set once the feeder fell short: it is asked no lower than this."""
    predicted_shortfall_kw: float | None = None
    offline_mono: float | None = None
    """When (monotonic) its will (``online = false``) arrived, until judged or forgotten."""
    refusals_logged: set[str] = field(default_factory=set)

    @property
    def site(self) -> str:
        return self.spec.site

    @property
    def short(self) -> bool:
        return self.floor_kw is not None

    @property
    def state(self) -> str:
        """``up``, ``silent``, ``rejected``, ``short`` or ``unknown`` (nothing heard yet)."""
        if self.silent:
            return "silent"
        if self.flex is None:
            return "unknown"
        if self.rejected is not None:
            return "rejected"
        if self.short:
            return "short"
        return "up"

    @property
    def import_kw(self) -> float | None:
        return None if self.flex is None else self.flex.import_kw

    def expected_kw(self) -> float:
        """What the feeder is expected to draw when not asked: its planned peak (``max_kw``),
        else its measured import, else its rating."""
        f = self.flex
        if f is not None and f.max_kw is not None:
            return f.max_kw
        if f is not None and f.import_kw is not None:
            return f.import_kw
        return self.spec.rating_kw

    def allocation_input(self) -> FeederInput:
        """The feeder as the LP counts it (see the module docstring)."""
        f = self.flex
        if self.silent or self.rejected is not None or f is None or not f.flexible:
            return FeederInput(site=self.site, fixed_kw=self.expected_kw())
        assert f.min_kw is not None
        assert f.max_kw is not None
        low, high = f.min_kw, f.max_kw
        if self.floor_kw is not None:
            low = min(max(low, self.floor_kw), high)
        if high - low <= 1e-6:
            return FeederInput(site=self.site, fixed_kw=high)
        return FeederInput(site=self.site, min_kw=low, max_kw=high, curve=_trim(f, low))


def _trim(f: Flexibility, low: float) -> tuple[tuple[float, float], ...]:
    """The curve from ``low`` up (the point at ``low`` interpolated)."""
    points = [(low, f.cost_at(low))]
    points += [(k, c) for k, c in f.curve if k > low + 1e-9]
    return tuple(points)


class Feeders:
    """The fleet's feeders by site, updated from their messages; one thread."""

    def __init__(self, settings: FleetSettings, metrics: FleetMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.by_site = {f.site: FeederState(spec=f) for f in settings.feeders}
        self.unknown_logged: set[str] = set()
        self.unknown_sites = 0
        self.up_since: float | None = None
        """When (monotonic) the broker connection came up; ``None`` while down."""

    def __iter__(self) -> Iterator[FeederState]:
        return iter(self.by_site.values())

    def __getitem__(self, site: str) -> FeederState:
        return self.by_site[site]

    def _feeder(self, topic: str, channel: str) -> FeederState | None:
        site = self.settings.site_of(topic)
        state = self.by_site.get(site) if site is not None else None
        if state is None:
            self.unknown_sites += 1
            self.metrics.flex_refused.labels(reason="unknown_site").inc()
            shown = short(repr(site if site is not None else topic), 80)
            if shown not in self.unknown_logged and len(self.unknown_logged) < 1000:
                self.unknown_logged.add(shown)
                log.warning("fleet_unknown_site", site=shown, channel=channel)
        return state

    # -- messages --------------------------------------------------------------------------

    def flex_received(
        self, topic: str, payload: bytes, *, now: datetime, mono: float
    ) -> str | None:
        """Take one flex message; returns what changed for the allocation (``feeder_back``,
        ``feeder_short``) or ``None``."""
        state = self._feeder(topic, "flex")
        if state is None:
            return None
        try:
            flex = parse_flex(
                payload,
                now=now,
                max_age_s=self.settings.max_age_s,
                site=state.site,
                rating_kw=state.spec.rating_kw,
            )
        except FlexRejected as err:
            kind = refusal_kind(err.reason)
            self.metrics.flex_refused.labels(reason=kind).inc()
            if kind not in state.refusals_logged:
                state.refusals_logged.add(kind)
                log.warning("fleet_flex_refused", site=state.site, reason=err.reason)
            return None
        if state.flex is not None and flex.at < state.flex.at:
            return None  # an older message (a retained copy delivered late)
        state.refusals_logged.clear()
        state.flex = flex
        state.flex_mono = mono
        state.last_seen = now
        self.metrics.feeder_import_kw.labels(site=state.site).set(flex.import_kw or 0.0)
        change = None
        if state.silent and state.online is not False:
            state.silent = False
            log.info("fleet_feeder_back", site=state.site)
            change = "feeder_back"
        if self._over_limit(state, flex):
            state.over_count += 1
            achieved = flex.import_kw
            if (
                state.over_count >= SHORT_AFTER
                and achieved is not None
                and _raise_floor(state, min(achieved, flex.max_kw or achieved))
            ):
                log.warning(
                    "fleet_feeder_short",
                    site=state.site,
                    event_id=state.event_id,
                    limit_kw=state.event_kw,
                    import_kw=achieved,
                )
                change = "feeder_short"
        else:
            state.over_count = 0
        return change

    def _over_limit(self, state: FeederState, flex: Flexibility) -> bool:
        if state.event_id is None or state.event_kw is None or flex.import_kw is None:
            return False
        active = any(e.id == state.event_id and e.active for e in flex.events)
        slack = COMPLIANCE_TOLERANCE * abs(state.event_kw)
        return active and flex.import_kw > state.event_kw + slack

    def online_received(self, topic: str, payload: bytes, *, mono: float) -> str | None:
        """``true``/``false``; returns ``feeder_silent`` when a feeder says it went away, and
        ``feeder_back`` when it says it is back with flexibility still fresh."""
        state = self._feeder(topic, "online")
        if state is None:
            return None
        text = payload.strip().lower()
        if text not in (b"true", b"false"):
            if "online" not in state.refusals_logged:
                state.refusals_logged.add("online")
                log.warning(
                    "fleet_online_refused", site=state.site, payload=short(repr(payload[:80]))
                )
            return None
        state.online = text == b"true"
        state.offline_mono = None if state.online or state.silent else mono
        fresh = (
            state.flex_mono is not None and mono - state.flex_mono < self.settings.silent_after_s
        )
        if state.online and state.silent and fresh:
            state.silent = False
            log.info("fleet_feeder_back", site=state.site)
            return "feeder_back"
        return None

    def dr_status_received(self, topic: str, payload: bytes) -> tuple[str, str | None] | None:
        """The feeder's answer on its current coordinator event: returns ``("rejected",
        reason)`` / ``("accepted", None)`` once per event, or ``("short", None)`` when its plan
        predicts a shortfall; else ``None``."""
        state = self._feeder(topic, "dr/status")
        if state is None:
            return None
        try:
            data = json_object(payload, max_bytes=MAX_STATUS_BYTES, max_depth=MAX_STATUS_DEPTH)
        except ValueError as err:
            if "status" not in state.refusals_logged:
                state.refusals_logged.add("status")
                log.warning("fleet_dr_status_refused", site=state.site, reason=str(err))
            return None
        if state.event_id is None:
            return None
        out: tuple[str, str | None] | None = None
        recent = data.get("recent")
        for item in recent if isinstance(recent, list) else []:
            if not isinstance(item, dict) or item.get("id") != state.event_id:
                continue
            result, reason = item.get("result"), item.get("reason")
            reason = short(reason, 200) if isinstance(reason, str) else None
            if result == "rejected" and state.rejected is None:
                state.rejected = reason or "rejected"
                log.warning(
                    "fleet_event_rejected", site=state.site, event_id=state.event_id, reason=reason
                )
                out = ("rejected", reason)
            elif result == "accepted" and not state.accepted:
                state.accepted = True
                out = ("accepted", None)
        events = data.get("events")
        for item in events if isinstance(events, list) else []:
            if not isinstance(item, dict) or item.get("id") != state.event_id:
                continue
            predicted = item.get("predicted_shortfall_kw")
            if isinstance(predicted, bool) or not isinstance(predicted, int | float):
                state.predicted_shortfall_kw = None
                continue
            state.predicted_shortfall_kw = float(predicted)
            kw = state.event_kw or 0.0
            if predicted > COMPLIANCE_TOLERANCE * abs(kw) and _raise_floor(state, kw + predicted):
                log.warning(
                    "fleet_feeder_short",
                    site=state.site,
                    event_id=state.event_id,
                    limit_kw=kw,
                    predicted_shortfall_kw=predicted,
                )
                out = out or ("short", None)
        return out

    # -- judgement -------------------------------------------------------------------------

    def connected(self, up: bool, mono: float) -> None:
        self.up_since = mono if up else None
        if not up:  # the wills of a broker going down: not the feeders'
            for state in self:
                state.offline_mono = None

    def next_judgement(self) -> float | None:
        """When (monotonic) a will received comes to be judged, if one waits."""
        waiting = [s.offline_mono for s in self if s.offline_mono is not None]
        return min(waiting) + OFFLINE_GRACE_S if waiting else None

    def judge_silence(self, mono: float) -> list[str]:
        """Feeders newly silent (no flex for ``silent_after_s``); none while the broker is down
        or within ``silent_after_s`` of its return."""
        limit = self.settings.silent_after_s
        if self.up_since is None:
            return []
        lost = []
        for state in self:
            since = state.offline_mono
            if since is not None and not state.silent and mono - since >= OFFLINE_GRACE_S:
                state.offline_mono = None
                state.silent = True
                log.warning("fleet_feeder_silent", site=state.site, why="offline")
                lost.append(state.site)
        if mono - self.up_since < limit:
            return lost
        for state in self:
            if state.silent:
                continue
            if state.flex_mono is None or mono - state.flex_mono >= limit:
                state.silent = True
                log.warning("fleet_feeder_silent", site=state.site, why="no flexibility")
                lost.append(state.site)
        return lost

    def asked(self, site: str, event_id: str | None, kw: float | None) -> None:
        """The coordinator's current event for ``site`` changed (``None``: none)."""
        state = self.by_site[site]
        if state.event_id == event_id:
            return
        state.event_id, state.event_kw = event_id, kw
        state.rejected = None
        state.accepted = False
        state.over_count = 0
        state.predicted_shortfall_kw = None
        if event_id is None:
            state.floor_kw = None


def _raise_floor(state: FeederState, kw: float) -> bool:
    """Raise the feeder's floor to ``kw``; whether it rose (by more than a watt)."""
    if state.floor_kw is not None and kw <= state.floor_kw + 1e-3:
        return False
    state.floor_kw = kw
    return True
