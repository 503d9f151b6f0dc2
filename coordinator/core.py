"""The coordinator's core: feeders' messages and system targets in, per-feeder DR events out.

No I/O but its journal: the daemon hands every message in (``flex_received``,
``dr_status_received``, ``online_received``, ``target_received``, ``connected``) and publishes
what ``tick`` returns, on one thread, in order.

``tick``:

1. takes the targets the journal holds (added by MQTT or by ``feederd coordinate target``; the
   journal's ``revision`` says when to look), cancels the events of a cancelled target and
   forgets the ended ones (their events end on the feeders by themselves);
2. judges silence (``Feeders.judge_silence``);
3. allocates (``coordinator.allocation``) when something changed: a target starting within the
   feeders' flexibility window (their ``window_s``, an hour) or running, a feeder lost, back,
   rejecting or short, new flexibility, a transformer over its rating. A feeder that cannot be
   asked (silent, rejecting, without flexibility) counts at what it is expected to draw and
   keeps what it has; a feeder whose limit moved by more than ``deadband_kw`` gets the new
   event ``fleet:<target>:<rev>`` (from the target's start, or now if later, to its end) and
   then the cancel of its previous one;
4. journals all of it, then returns it with the retained ``target/status`` (when a decision
   was made) and ``status`` documents.

A coordinator built on the same journal after a restart reloads the targets and the events
its feeders hold: the same flexibility allocates the same limits, so nothing is published twice
(``AllocationRecord`` rows are the memory of what was sent).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from controller.clock import Clock
from controller.flex import FLEET_EVENT_PREFIX
from coordinator.allocation import (
    Allocation,
    AllocationStatus,
    Constraint,
    FeederInput,
    allocate,
)
from coordinator.feeders import Feeders
from coordinator.journal import AllocationRecord, FleetJournal, JournalUnavailable, TargetRecord
from coordinator.metrics import FEEDER_STATES, FleetMetrics
from coordinator.settings import FleetSettings
from coordinator.targets import TargetDecision, TargetResult, TargetType

__all__ = ["REASONS", "Coordinator", "Outgoing", "event_id"]

log = structlog.get_logger("feederd.coordinator")

REASONS = (
    "target",
    "feeder_silent",
    "feeder_back",
    "feeder_rejected",
    "feeder_short",
    "transformer",
    "flex_changed",
)
"""Why an allocation ran, in the order one is named when several apply."""
DEFAULT_WINDOW_S = 3600.0
"""The flexibility window when no feeder has said its own (``Flexibility.window_s``)."""
PURGE_EVERY_S = 3600.0
RECENT_DECISIONS = 10


def event_id(target_id: str, rev: int) -> str:
    return f"{FLEET_EVENT_PREFIX}{target_id}:{rev}"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish."""

    topic: str
    payload: dict[str, Any] = field(default_factory=dict)
    qos: int = 1
    retain: bool = False


@dataclass(slots=True)
class _Plan:
    """What one tick publishes, before it is journaled."""

    events: list[AllocationRecord] = field(default_factory=list)
    cancels: list[tuple[AllocationRecord, str]] = field(default_factory=list)
    revs: dict[str, int] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    order: list[Outgoing] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.events or self.cancels or self.baselines)


class Coordinator:
    """The fleet coordinator's state and decisions; see the module docstring."""

    def __init__(
        self,
        settings: FleetSettings,
        *,
        journal: FleetJournal,
        clock: Clock,
        metrics: FleetMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.clock = clock
        self.metrics = metrics or FleetMetrics()
        self.feeders = Feeders(settings, self.metrics)
        self._on_transformer = {
            t.name: tuple(f.site for f in settings.feeders if f.transformer == t.name)
            for t in settings.transformers
        }
        self._targets: dict[str, TargetRecord] = {}
        self._seen_revision = -1
        self._live: dict[tuple[str, str], AllocationRecord] = {}
        """The events the feeders hold, by (target id, site)."""
        self._shared: set[str] = set()
        """Sites with a ``share_kw`` sample."""
        self._held: dict[str, AllocationRecord] = {}
        """Per site, the one of them in force now, else the next (``_point_feeders``)."""
        self._reasons: set[str] = set()
        self._flex_dirty = False
        self._status_due = True
        self._allocated: set[str] = set()
        """Targets allocated at least once since this coordinator started."""
        self._overloaded: frozenset[str] = frozenset()
        self._allocation: Allocation | None = None
        self._allocation_at: datetime | None = None
        self._allocation_reason: str | None = None
        self._limits: dict[str, float] = {}
        """Each live target's import limit (kW) at the last allocation."""
        self._last_purge: float | None = None
        self._broker_down = False
        self._unstored: deque[TargetDecision] = deque(maxlen=RECENT_DECISIONS)
        """Targets refused because the journal could not store them (not in the journal)."""
        """Told by ``connected(False)``: nothing is decided that could not be published."""
        now = clock.now()
        for record in journal.live_allocations(now):
            self._live[(record.target, record.site)] = record
        self._pending_cancels: list[tuple[AllocationRecord, str]] = []
        self._load_targets(now, self._pending_cancels)
        self._seen_revision = journal.revision()
        self._seen_decision = journal.decision_count()
        self._point_feeders(now)

    # -- messages in -----------------------------------------------------------------------

    def flex_received(self, topic: str, payload: bytes) -> None:
        change = self.feeders.flex_received(
            topic, payload, now=self.clock.now(), mono=self.clock.monotonic()
        )
        self._flex_dirty = True
        if change is not None:
            self._reasons.add(change)

    def dr_status_received(self, topic: str, payload: bytes) -> None:
        site = self.settings.site_of(topic)
        answer = self.feeders.dr_status_received(topic, payload)
        if answer is None or site is None:
            return
        kind, reason = answer
        state = self.feeders[site]
        if kind in ("accepted", "rejected") and state.event_id is not None:
            self.journal.record_answer(state.event_id, site, kind, reason)
        if kind == "rejected":
            self._reasons.add("feeder_rejected")
        elif kind == "short":
            self._reasons.add("feeder_short")

    def online_received(self, topic: str, payload: bytes) -> None:
        change = self.feeders.online_received(topic, payload, mono=self.clock.monotonic())
        if change is not None:
            self._reasons.add(change)

    def target_received(
        self, payload: bytes | dict[str, Any], *, source: str = "mqtt"
    ) -> TargetDecision:
        """Decide a target message (journaled at once); its status is published at the next
        tick, which ``due`` asks for now."""
        now = self.clock.now()
        try:
            decision = self.journal.add_target(
                payload, settings=self.settings, now=now, source=source
            )
        except JournalUnavailable as err:  # nothing stored: refused, and said
            decision = TargetDecision(
                id=_target_id(payload),
                result=TargetResult.REJECTED,
                reason=f"the coordinator's journal cannot store it: {err}",
                source=source,
                at=now,
            )
            self._unstored.append(decision)
        self.metrics.targets.labels(result=decision.result.value).inc()
        if decision.accepted:
            log.info("fleet_target_" + decision.result.value, id=decision.id, source=source)
            self._reasons.add("target")
        else:
            log.warning(
                "fleet_target_rejected", id=decision.id, source=source, reason=decision.reason
            )
        self._status_due = True
        self._seen_decision = max(self._seen_decision, self.journal.decision_count())
        return decision

    def connected(self, up: bool) -> None:
        self._broker_down = not up
        self.feeders.connected(up, self.clock.monotonic())
        self.metrics.mqtt_connected.set(1 if up else 0)

    @property
    def next_judgement(self) -> float | None:
        """When (the clock's monotonic seconds) a feeder's will is to be judged: a tick then
        re-splits its share (``coordinator.feeders.OFFLINE_GRACE_S``)."""
        return self.feeders.next_judgement()

    @property
    def due(self) -> bool:
        """Something changed that wants a tick now (a target, a feeder lost, back, rejecting
        or short, a decision to publish)."""
        return bool(self._reasons) or self._status_due

    # -- the tick --------------------------------------------------------------------------

    def tick(self) -> list[Outgoing]:
        """See the module docstring. While the broker is down it does nothing (what changed
        waits for the connection: a published event must not be one that was lost)."""
        if self._broker_down:
            return []
        now, mono = self.clock.now(), self.clock.monotonic()
        plan = _Plan(cancels=self._pending_cancels)
        self._pending_cancels = []
        revision = self.journal.revision()
        if revision != self._seen_revision:
            self._seen_revision = revision
            self._status_due = True
            self._load_targets(now, plan.cancels)
            self._count_decisions()
        self._drop_ended(now)
        for _ in self.feeders.judge_silence(mono):
            self._reasons.add("feeder_silent")
        self._check_transformers()
        relevant = self._relevant(now)
        if any(t.target.id not in self._allocated for t in relevant):
            self._reasons.add("target")
        if relevant and (self._reasons or self._flex_dirty) and self._ready(mono, relevant):
            self._allocate(relevant, plan, now)
        elif not relevant:
            self._reasons.clear()
            self._allocation = None
        out = self._commit(plan, now)
        if self._last_purge is None or mono - self._last_purge >= PURGE_EVERY_S:
            self._last_purge = mono
            self.journal.purge(now)
        return out

    def _load_targets(self, now: datetime, cancels: list[tuple[AllocationRecord, str]]) -> None:
        """The journal's targets not yet over; a cancelled one's live events are cancelled."""
        records = {r.target.id: r for r in self.journal.targets(now)}
        for record in records.values():
            if record.cancelled_at is not None:
                for key, alloc in list(self._live.items()):
                    if key[0] == record.target.id:
                        cancels.append((alloc, "target cancelled"))
                        del self._live[key]
                if record.target.id in self._targets:
                    self._reasons.add("target")
                    self._allocated.discard(record.target.id)
                    log.info("fleet_target_withdrawn", id=record.target.id)
            elif record.target.id not in self._targets:
                self._reasons.add("target")
        self._targets = {k: r for k, r in records.items() if r.cancelled_at is None}

    def _count_decisions(self) -> None:
        """Count and log the decisions made elsewhere (``feederd coordinate target``)."""
        for n, decision in self.journal.decisions_after(self._seen_decision):
            self._seen_decision = n
            self.metrics.targets.labels(result=decision.result.value).inc()
            log.info(
                "fleet_target_" + decision.result.value,
                id=decision.id,
                source=decision.source,
                reason=decision.reason,
            )

    def _drop_ended(self, now: datetime) -> None:
        for target_id, record in list(self._targets.items()):
            if record.target.end <= now:
                del self._targets[target_id]
                self._allocated.discard(target_id)
                log.info("fleet_target_ended", id=target_id)
        for key, alloc in list(self._live.items()):
            if alloc.end <= now:
                del self._live[key]

    def _window_s(self) -> float:
        windows = [s.flex.window_s for s in self.feeders if s.flex is not None]
        return max(windows) if windows else DEFAULT_WINDOW_S

    def _relevant(self, now: datetime) -> list[TargetRecord]:
        """Targets running, or starting within the flexibility window."""
        horizon = now + timedelta(seconds=self._window_s())
        return [r for r in self._targets.values() if r.target.start <= horizon]

    def _ready(self, mono: float, relevant: Iterable[TargetRecord]) -> bool:
        """Whether to allocate now: not while a feeder of these targets has not been heard from
        and may still be (its retained flexibility is on the way)."""
        up = self.feeders.up_since
        if up is not None and mono - up >= self.settings.silent_after_s:
            return True
        for record in relevant:
            for site in self.settings.group_sites(record.target.group) or ():
                state = self.feeders[site]
                if state.flex is None and not state.silent:
                    return False
        return True

    def _check_transformers(self) -> None:
        over = set()
        for t in self.settings.transformers:
            load = sum(self.feeders[s].import_kw or 0.0 for s in self._on_transformer[t.name])
            if load > t.rating_kw:
                over.add(t.name)
        overloaded = frozenset(over)
        for name in overloaded - self._overloaded:
            log.warning("fleet_transformer_overloaded", transformer=name)
        if overloaded - self._overloaded:
            self._reasons.add("transformer")
        self._overloaded = overloaded

    # -- allocation ------------------------------------------------------------------------

    def _askable(self, site: str) -> bool:
        return not self.feeders[site].allocation_input().fixed

    def _inputs(self, relevant: list[TargetRecord]) -> tuple[list[FeederInput], set[str]]:
        """Every feeder as the LP counts it: those of the relevant targets as they stand,
        the others fixed at what they are expected to draw (they have no target to carry a
        limit). Returns the inputs and the sites that can be asked."""
        in_target = {s for r in relevant for s in self.settings.group_sites(r.target.group) or ()}
        inputs, askable = [], set()
        for state in self.feeders:
            item = state.allocation_input()
            if state.site not in in_target and not item.fixed:
                item = FeederInput(site=state.site, fixed_kw=state.expected_kw())
            if not item.fixed:
                askable.add(state.site)
            inputs.append(item)
        return inputs, askable

    def _constraints(self, relevant: list[TargetRecord], plan: _Plan) -> list[Constraint]:
        out = []
        for record in relevant:
            t = record.target
            sites = self.settings.group_sites(t.group) or ()
            if t.type is TargetType.REDUCE_BY:
                baseline = record.baseline_kw
                if baseline is None:
                    baseline = sum(self.feeders[s].expected_kw() for s in sites)
                    plan.baselines[t.id] = baseline
                limit = baseline - t.kw
            else:
                limit = t.kw
            self._limits[t.id] = limit
            out.append(Constraint(name=t.id, sites=sites, limit_kw=limit))
        for f in self.settings.transformers:
            sites = self._on_transformer[f.name]
            if sites:
                out.append(
                    Constraint(name=f"transformer:{f.name}", sites=sites, limit_kw=f.rating_kw)
                )
        return out

    def _solve(
        self, relevant: list[TargetRecord], plan: _Plan
    ) -> tuple[Allocation, dict[str, dict[str, float | None]]] | None:
        """One LP per set of targets that overlap in time (they share no feeder: ``overlap``),
        each with the transformers: the merged outcome and each target's limits by site.
        ``None`` when a solve failed."""
        merged: dict[str, Any] = {"limits": {}, "kw": {}, "shortfall_kw": {}}
        by_target: dict[str, dict[str, float | None]] = {}
        cost = solve_ms = 0.0
        for component in _overlapping(relevant):
            inputs, askable = self._inputs(component)
            started = time.perf_counter()
            result = allocate(inputs, self._constraints(component, plan), mode=self.settings.mode)
            self.metrics.allocation_seconds.observe(time.perf_counter() - started)
            if result.status is not AllocationStatus.OPTIMAL:
                log.error("fleet_allocation_failed", solve_ms=round(result.solve_ms, 1))
                return None
            for record in component:
                sites = self.settings.group_sites(record.target.group) or ()
                by_target[record.target.id] = {
                    site: result.limits[site] if site in askable else None for site in sites
                }
                for site in sites:
                    merged["limits"][site] = by_target[record.target.id][site]
                    merged["kw"][site] = result.kw[site]
            merged["shortfall_kw"].update(result.shortfall_kw)
            cost += result.cost
            solve_ms += result.solve_ms
        summary = Allocation(
            status=AllocationStatus.OPTIMAL, cost=cost, solve_ms=solve_ms, **merged
        )
        return summary, by_target

    def _allocate(self, relevant: list[TargetRecord], plan: _Plan, now: datetime) -> None:
        solved = self._solve(relevant, plan)
        if solved is None:
            return  # the reasons stay: the next tick tries again
        result, by_target = solved
        self._allocation = result
        self._allocation_at = now
        self._flex_dirty = False
        deadband = self.settings.deadband_kw
        fresh: list[AllocationRecord] = []
        for record in relevant:
            t = record.target
            rev = record.rev + 1
            changed = False
            for site in self.settings.group_sites(t.group) or ():
                if not self._askable(site):
                    continue  # silent, rejecting, without flexibility: keeps what it has
                limit = by_target[t.id].get(site)
                current = self._live.get((t.id, site))
                if limit is None:
                    # no longer needed; one within the deadband of the feeder's peak is left
                    # alone (a limit hovering at the peak would otherwise flap)
                    peak = self.feeders[site].expected_kw()
                    if current is not None and peak - current.kw > deadband:
                        plan.cancels.append((current, "not needed"))
                        del self._live[(t.id, site)]
                        changed = True
                    continue
                if current is not None and abs(limit - current.kw) <= deadband:
                    continue
                changed = True
                fresh.append(
                    AllocationRecord(
                        event_id=event_id(t.id, rev),
                        site=site,
                        target=t.id,
                        rev=rev,
                        kw=round(limit, 2),
                        start=max(t.start, now),
                        end=t.end,
                        published_at=now,
                        reason="",
                    )
                )
                if current is not None:
                    plan.cancels.append((current, "re-allocated"))
            if changed:
                plan.revs[t.id] = rev
            self._allocated.add(t.id)
        pending = [r for r in REASONS if r in self._reasons]
        changed_any = bool(fresh or plan.cancels)
        reason = pending[0] if pending else ("flex_changed" if changed_any else None)
        self._reasons.clear()
        for draft in fresh:
            new = replace(draft, reason=reason or "flex_changed")
            plan.events.append(new)
            self._live[(new.target, new.site)] = new
        if reason is None:
            return
        self._allocation_reason = reason
        self.metrics.allocations.labels(reason=reason).inc()
        log.info(
            "fleet_reallocated",
            reason=reason,
            targets=[r.target.id for r in relevant],
            events=len(plan.events),
            cancels=len(plan.cancels),
            shortfall_kw={k: round(v, 1) for k, v in result.shortfall_kw.items() if v > 1e-6},
            solve_ms=round(result.solve_ms, 1),
        )

    # -- publishing ------------------------------------------------------------------------

    def _commit(self, plan: _Plan, now: datetime) -> list[Outgoing]:
        """Journal what this tick publishes, then return it in order: per feeder its new event
        before the cancel of its old one; the status documents last."""
        for record_id, rev in plan.revs.items():
            record = self._targets.get(record_id)
            if record is not None:
                self._targets[record_id] = replace(record, rev=rev)
        for record_id, kw in plan.baselines.items():
            record = self._targets.get(record_id)
            if record is not None:
                self._targets[record_id] = replace(record, baseline_kw=kw)
        if not plan.empty or plan.revs:
            self.journal.record_publications(
                events=plan.events,
                cancels=[(a.event_id, a.site, why) for a, why in plan.cancels],
                revs=plan.revs,
                baselines=plan.baselines,
                now=now,
            )
        out: list[Outgoing] = []
        replaced: dict[tuple[str, str], list[AllocationRecord]] = {}
        for alloc, _ in plan.cancels:
            replaced.setdefault((alloc.target, alloc.site), []).append(alloc)
        for e in plan.events:
            out.append(Outgoing(self.settings.event_topic(e.site), self._event_payload(e)))
            self.metrics.events_published.labels(kind="event").inc()
            out.extend(self._cancel(old) for old in replaced.pop((e.target, e.site), []))
        for olds in replaced.values():
            out.extend(self._cancel(old) for old in olds)
        self._point_feeders(now)
        self._update_metrics()
        if self._status_due:
            self._status_due = False
            doc = self.target_status()
            self.journal.save_document("target_status", doc, now=now)
            out.append(Outgoing(self.settings.target_status_topic, doc, retain=True))
        doc = self.status()
        self.journal.save_document("status", doc, now=now)
        out.append(Outgoing(self.settings.status_topic, doc, retain=True))
        return out

    def _event_payload(self, e: AllocationRecord) -> dict[str, Any]:
        record = self._targets.get(e.target)
        priority = record.target.priority if record is not None else None
        return {
            "id": e.event_id,
            "type": "import_limit",
            "kw": e.kw,
            "start": e.start.isoformat(),
            "end": e.end.isoformat(),
            "priority": self.settings.priority if priority is None else priority,
        }

    def _cancel(self, alloc: AllocationRecord) -> Outgoing:
        self.metrics.events_published.labels(kind="cancel").inc()
        return Outgoing(
            self.settings.event_topic(alloc.site), {"id": alloc.event_id, "cancel": True}
        )

    def _point_feeders(self, now: datetime) -> None:
        """Tell each feeder's state which of the coordinator's events to hold it to: the one
        in force now, else the next."""
        current: dict[str, AllocationRecord] = {}
        for alloc in self._live.values():
            best = current.get(alloc.site)
            key = (alloc.start > now, alloc.start)
            if best is None or key < (best.start > now, best.start):
                current[alloc.site] = alloc
        self._held = current
        for state in self.feeders:
            held = current.get(state.site)
            if held is None:
                self.feeders.asked(state.site, None, None)
            else:
                self.feeders.asked(state.site, held.event_id, held.kw)
                if held.answer == "rejected":  # known from before a restart
                    state.rejected = state.rejected or held.answer_reason or "rejected"

    # -- documents and metrics -------------------------------------------------------------

    def _limit_of(self, site: str) -> AllocationRecord | None:
        """The event ``site`` is held to (in force now, else the next), if any."""
        return self._held.get(site)

    def status(self) -> dict[str, Any]:
        """The fleet status document (retained on ``<topic_root>/status``)."""
        now = self.clock.now()
        feeders: dict[str, Any] = {}
        imports = [s.import_kw for s in self.feeders if s.import_kw is not None and not s.silent]
        result = self._allocation
        for state in self.feeders:
            alloc = self._limit_of(state.site)
            expected = state.expected_kw()
            feeders[state.site] = {
                "state": state.state,
                "import_kw": _r(state.import_kw),
                "max_kw": _r(state.flex.max_kw if state.flex else None),
                "min_kw": _r(state.flex.min_kw if state.flex else None),
                "limit_kw": _r(alloc.kw if alloc else None),
                "event": alloc.event_id if alloc else None,
                "reduction_kw": _r(max(0.0, expected - alloc.kw) if alloc else 0.0),
                "health": state.flex.health if state.flex else None,
                "last_seen": state.last_seen.isoformat() if state.last_seen else None,
                "rejected": state.rejected,
                "floor_kw": _r(state.floor_kw),
                "predicted_shortfall_kw": _r(state.predicted_shortfall_kw),
                "target": None,
                "share": None,
            }
        targets = []
        for record in sorted(self._targets.values(), key=lambda r: (r.target.start, r.target.id)):
            t = record.target
            sites = self.settings.group_sites(t.group) or ()
            reductions = {s: feeders[s]["reduction_kw"] or 0.0 for s in sites}
            total = sum(reductions.values())
            for s in sites:
                feeders[s]["share"] = round(reductions[s] / total, 4) if total > 0 else 0.0
                feeders[s]["target"] = t.id
            fleet_import = sum(
                self.feeders[s].import_kw or 0.0 for s in sites if not self.feeders[s].silent
            )
            shortfall = result.shortfall_kw.get(t.id) if result is not None else None
            targets.append(
                {
                    **t.to_json(),
                    "active": t.active_at(now),
                    "rev": record.rev,
                    "limit_kw": _r(self._limits.get(t.id)),
                    "baseline_kw": _r(record.baseline_kw),
                    "fleet_import_kw": _r(fleet_import),
                    "shortfall_kw": _r(shortfall),
                }
            )
        return {
            "fleet": self.settings.name,
            "at": now.isoformat(),
            "mode": self.settings.mode,
            "import_kw": _r(sum(imports)),
            "feeders": feeders,
            "targets": targets,
            "transformers": {
                t.name: {
                    "rating_kw": t.rating_kw,
                    "import_kw": _r(
                        sum(self.feeders[s].import_kw or 0.0 for s in self._on_transformer[t.name])
                    ),
                    "overloaded": t.name in self._overloaded,
                }
                for t in self.settings.transformers
            },
            "allocation": None
            if result is None
            else {
                "at": self._allocation_at.isoformat() if self._allocation_at else None,
                "reason": self._allocation_reason,
                "solve_ms": round(result.solve_ms, 2),
                "cost": round(result.cost, 4),
                "shortfall_kw": {k: _r(v) for k, v in result.shortfall_kw.items()},
            },
        }

    def target_status(self) -> dict[str, Any]:
        """The target status document (retained on ``<topic_root>/target/status``)."""
        recent = sorted(
            [*self.journal.decisions(RECENT_DECISIONS), *self._unstored],
            key=lambda d: d.at,
            reverse=True,
        )[:RECENT_DECISIONS]
        return {
            "at": self.clock.now().isoformat(),
            "last": recent[0].to_json() if recent else None,
            "recent": [d.to_json() for d in reversed(recent)],
            "targets": [
                {**r.target.to_json(), "rev": r.rev, "source": r.source}
                for r in sorted(self._targets.values(), key=lambda r: (r.target.start, r.target.id))
            ],
        }

    def _update_metrics(self) -> None:
        m = self.metrics
        counts = dict.fromkeys(FEEDER_STATES, 0)
        total = 0.0
        for state in self.feeders:
            if state.state in counts:
                counts[state.state] += 1
            m.feeder_up.labels(site=state.site).set(0 if state.silent or state.flex is None else 1)
            alloc = self._limit_of(state.site)
            if alloc is not None:
                m.share_kw.labels(site=state.site).set(alloc.kw)
                self._shared.add(state.site)
            elif state.site in self._shared:
                self._shared.discard(state.site)
                _remove(m.share_kw, state.site)
            if state.import_kw is not None and not state.silent:
                total += state.import_kw
        for name, n in counts.items():
            m.feeders.labels(state=name).set(n)
        m.import_kw.set(total)
        result = self._allocation
        for target_id in list(self._limits):
            if target_id not in self._targets:
                del self._limits[target_id]
                _remove(m.target_kw, target_id)
                _remove(m.shortfall_kw, target_id)
                continue
            m.target_kw.labels(target=target_id).set(self._limits[target_id])
            if result is not None:
                m.shortfall_kw.labels(target=target_id).set(result.shortfall_kw.get(target_id, 0.0))


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _overlapping(records: list[TargetRecord]) -> list[list[TargetRecord]]:
    """``records`` in sets whose times overlap (chains included), by start."""
    out: list[list[TargetRecord]] = []
    end = None
    for record in sorted(records, key=lambda r: (r.target.start, r.target.id)):
        if end is None or record.target.start >= end:
            out.append([record])
            end = record.target.end
        else:
            out[-1].append(record)
            end = max(end, record.target.end)
    return out


def _remove(gauge: Any, label: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(label)


def _target_id(payload: bytes | dict[str, Any]) -> str | None:
    """The id a target message gives, if it is a string (for a decision not stored)."""
    data: object = payload
    if isinstance(payload, bytes):
        try:
            data = json.loads(payload[:4096])
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
    raw = data.get("id") if isinstance(data, dict) else None
    return raw[:64] if isinstance(raw, str) else None
