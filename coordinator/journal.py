"""The coordinator's journal: SQLite in WAL mode, shared by the running coordinator and the CLI.

What it holds:

- ``targets``: every accepted target, its source, when it was cancelled, the ``reduce_by``
  baseline (the group's ``max_kw`` sum, frozen at the first allocation) and ``rev``, the count
  of its allocations (its feeders' events are ``fleet:<id>:<rev>``);
- ``allocations``: every DR event published to a feeder (target, rev, site, event id, kW,
  start, end, when published, when cancelled and why) and the feeder's answer;
- ``decisions``: every target message's decision (accepted, cancelled, rejected with reason);
- ``documents``: the last fleet and target status documents, which ``feederd coordinate
  status`` reads (read-only) and which carry each feeder's last state;
- ``meta``: ``revision``, raised by every target added or cancelled, so the coordinator notices
  the CLI's changes at its next tick without reading the table.

Each write is one transaction (``BEGIN IMMEDIATE``: the CLI and the daemon may write at once;
a busy database is waited for), durable across a power cut (``synchronous=FULL``) but for the
status documents, rewritten every tick, and the feeders' answers, which their retained
``dr/status`` gives again. Publications are journaled before they are published, so a
restarted coordinator knows what its feeders already have. Ended targets, their allocations and
decisions are kept ``retention_days`` (``purge``). The file is created owner-only (0600).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from coordinator.settings import FleetSettings
from coordinator.targets import (
    Target,
    TargetCancel,
    TargetDecision,
    TargetRejected,
    TargetResult,
    TargetType,
    overlap,
    parse_target,
)

__all__ = ["AllocationRecord", "FleetJournal", "JournalUnavailable", "TargetRecord"]

MEMORY = ":memory:"
_VERSION = 1
BUSY_TIMEOUT_S = 5.0
RECENT_DECISIONS = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS targets (
    id TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    type TEXT NOT NULL,
    kw REAL NOT NULL,
    start TEXT NOT NULL,
    end TEXT NOT NULL,
    end_ts REAL NOT NULL,
    priority INTEGER,
    source TEXT NOT NULL,
    added_at TEXT NOT NULL,
    cancelled_at TEXT,
    baseline_kw REAL,
    rev INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS allocations (
    event_id TEXT NOT NULL,
    site TEXT NOT NULL,
    target TEXT NOT NULL,
    rev INTEGER NOT NULL,
    kw REAL NOT NULL,
    start TEXT NOT NULL,
    end TEXT NOT NULL,
    end_ts REAL NOT NULL,
    published_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    cancelled_at TEXT,
    cancel_reason TEXT,
    answer TEXT,
    answer_reason TEXT,
    PRIMARY KEY (event_id, site)
);
CREATE INDEX IF NOT EXISTS allocations_live ON allocations (cancelled_at, end_ts);
CREATE TABLE IF NOT EXISTS decisions (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT,
    result TEXT NOT NULL,
    reason TEXT,
    source TEXT NOT NULL,
    at TEXT NOT NULL,
    at_ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (name TEXT PRIMARY KEY, doc TEXT NOT NULL, at TEXT NOT NULL);
"""


class JournalUnavailable(RuntimeError):
    """The journal file cannot be opened or written; the message says which and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRecord:
    """A target as journaled: the target, who sent it, whether cancelled, its frozen
    ``reduce_by`` baseline and how many allocations it has had (``rev``)."""

    target: Target
    source: str
    added_at: datetime
    cancelled_at: datetime | None
    baseline_kw: float | None
    rev: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationRecord:
    """One DR event published to one feeder (``cancelled_at`` set once its cancel was)."""

    event_id: str
    site: str
    target: str
    rev: int
    kw: float
    start: datetime
    end: datetime
    published_at: datetime
    reason: str
    cancelled_at: datetime | None = None
    answer: str | None = None
    answer_reason: str | None = None


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class FleetJournal:
    """One SQLite file (or ``":memory:"``); one connection, used by one thread at a time."""

    def __init__(
        self, path: str | Path, *, retention_days: float = 30.0, read_only: bool = False
    ) -> None:
        self.path = str(path)
        self.retention = timedelta(days=retention_days)
        self.read_only = read_only
        try:
            if read_only:
                if self.path != MEMORY and not Path(self.path).exists():
                    raise JournalUnavailable(f"journal {self.path}: no such file")
                uri = f"file:{Path(self.path).resolve()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
            else:
                if self.path != MEMORY and not Path(self.path).exists():
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                    os.close(fd)
                self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('version', ?), ('revision', '0')",
                    (str(_VERSION),),
                )
        except (sqlite3.Error, OSError) as err:
            raise JournalUnavailable(f"journal {self.path}: {err}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; ``durable=False``: kept across a process crash but not a power cut
        (``synchronous=NORMAL``: no fsync of its own), for what is rebuilt anyway."""
        if self.read_only:
            raise JournalUnavailable(f"journal {self.path} is open read-only")
        try:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as err:
            raise JournalUnavailable(f"journal {self.path}: {err}") from None

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self._db.execute(sql, args))
        except sqlite3.Error as err:
            raise JournalUnavailable(f"journal {self.path}: {err}") from None

    # -- targets ---------------------------------------------------------------------------

    def revision(self) -> int:
        """Raised by every target added or cancelled (by anyone)."""
        rows = self._rows("SELECT value FROM meta WHERE key = 'revision'")
        return int(rows[0][0]) if rows else 0

    def add_target(
        self,
        payload: bytes | str | dict[str, Any],
        *,
        settings: FleetSettings,
        now: datetime,
        source: str = "cli",
    ) -> TargetDecision:
        """Decide one target message (a target or its cancel) and journal the decision; an
        accepted target is journaled in the same transaction as the overlap check."""
        try:
            parsed = parse_target(payload, now=now, settings=settings)
        except TargetRejected as err:
            return self.record_decision(
                TargetDecision(
                    id=err.target_id,
                    result=TargetResult.REJECTED,
                    reason=err.reason,
                    source=source,
                    at=now,
                )
            )
        if isinstance(parsed, TargetCancel):
            return self.cancel_target(parsed.id, now=now, source=source)
        with self._write() as db:
            decision = self._accept(db, parsed, settings=settings, now=now, source=source)
            self._insert_decision(db, decision)
        return decision

    def _accept(
        self,
        db: sqlite3.Connection,
        target: Target,
        *,
        settings: FleetSettings,
        now: datetime,
        source: str,
    ) -> TargetDecision:
        def decided(result: TargetResult, reason: str | None) -> TargetDecision:
            return TargetDecision(id=target.id, result=result, reason=reason, source=source, at=now)

        live = [r for r in self._targets(db, now) if r.cancelled_at is None]
        same = next((r for r in live if r.target.id == target.id), None)
        if same is not None:
            if same.target == target:
                return decided(TargetResult.ACCEPTED, "already accepted")
            return decided(TargetResult.REJECTED, f"target {target.id!r} is live: cancel it first")
        why = overlap(target, [r.target for r in live], settings)
        if why is not None:
            return decided(TargetResult.REJECTED, why)
        # an id used before (ended or cancelled) keeps counting its revisions: event ids
        # stay unique on the feeders
        db.execute(
            "INSERT INTO targets (id, grp, type, kw, start, end, end_ts, priority, source,"
            " added_at, cancelled_at, baseline_kw, rev) VALUES (?,?,?,?,?,?,?,?,?,?,NULL,NULL,0)"
            " ON CONFLICT (id) DO UPDATE SET grp=excluded.grp, type=excluded.type,"
            " kw=excluded.kw, start=excluded.start, end=excluded.end, end_ts=excluded.end_ts,"
            " priority=excluded.priority, source=excluded.source, added_at=excluded.added_at,"
            " cancelled_at=NULL, baseline_kw=NULL",
            (
                target.id,
                target.group,
                target.type.value,
                target.kw,
                target.start.isoformat(),
                target.end.isoformat(),
                target.end.timestamp(),
                target.priority,
                source,
                now.isoformat(),
            ),
        )
        self._bump(db)
        return decided(TargetResult.ACCEPTED, None)

    def cancel_target(
        self, target_id: str, *, now: datetime, source: str = "cli"
    ) -> TargetDecision:
        """Cancel a live target (its feeders' events are cancelled at the coordinator's next
        tick); a target that is not live is a rejection that says so."""
        with self._write() as db:
            row = db.execute(
                "SELECT cancelled_at, end_ts FROM targets WHERE id = ?", (target_id,)
            ).fetchone()
            if row is None:
                reason: str | None = f"no target {target_id!r}"
            elif row[0] is not None:
                reason = f"target {target_id!r} was cancelled already"
            elif row[1] <= now.timestamp():
                reason = f"target {target_id!r} has ended"
            else:
                reason = None
                db.execute(
                    "UPDATE targets SET cancelled_at = ? WHERE id = ?", (now.isoformat(), target_id)
                )
                self._bump(db)
            decision = TargetDecision(
                id=target_id,
                result=TargetResult.REJECTED if reason else TargetResult.CANCELLED,
                reason=reason,
                source=source,
                at=now,
            )
            self._insert_decision(db, decision)
        return decision

    def record_decision(self, decision: TargetDecision) -> TargetDecision:
        with self._write() as db:
            self._insert_decision(db, decision)
        return decision

    def _insert_decision(self, db: sqlite3.Connection, d: TargetDecision) -> None:
        db.execute(
            "INSERT INTO decisions (target, result, reason, source, at, at_ts)"
            " VALUES (?,?,?,?,?,?)",
            (d.id, d.result.value, d.reason, d.source, d.at.isoformat(), d.at.timestamp()),
        )
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")

    def _bump(self, db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")

    def decisions(self, limit: int = RECENT_DECISIONS) -> list[TargetDecision]:
        """The latest decisions, newest first."""
        rows = self._rows(
            "SELECT target, result, reason, source, at FROM decisions ORDER BY n DESC LIMIT ?",
            (limit,),
        )
        return [
            TargetDecision(
                id=r[0],
                result=TargetResult(r[1]),
                reason=r[2],
                source=r[3],
                at=datetime.fromisoformat(r[4]),
            )
            for r in rows
        ]

    def decisions_after(self, n: int) -> list[tuple[int, TargetDecision]]:
        """Decisions journaled after number ``n`` (at most ``RECENT_DECISIONS * 10``), oldest
        first, with their numbers: what another process (the CLI) decided meanwhile."""
        rows = self._rows(
            "SELECT n, target, result, reason, source, at FROM decisions WHERE n > ?"
            " ORDER BY n LIMIT ?",
            (n, RECENT_DECISIONS * 10),
        )
        return [
            (
                r[0],
                TargetDecision(
                    id=r[1],
                    result=TargetResult(r[2]),
                    reason=r[3],
                    source=r[4],
                    at=datetime.fromisoformat(r[5]),
                ),
            )
            for r in rows
        ]

    def decision_count(self) -> int:
        """The number of the latest decision (0: none yet)."""
        rows = self._rows("SELECT COALESCE(MAX(n), 0) FROM decisions")
        return int(rows[0][0])

    def targets(self, now: datetime | None = None) -> list[TargetRecord]:
        """Targets not yet over at ``now`` (every journaled one when ``None``), by start."""
        return self._targets(self._db, now)

    def _targets(self, db: sqlite3.Connection, now: datetime | None) -> list[TargetRecord]:
        sql = (
            "SELECT id, grp, type, kw, start, end, priority, source, added_at, cancelled_at,"
            " baseline_kw, rev FROM targets"
        )
        args: tuple[Any, ...] = ()
        if now is not None:
            sql += " WHERE end_ts > ?"
            args = (now.timestamp(),)
        try:
            rows = list(db.execute(sql + " ORDER BY start, id", args))
        except sqlite3.Error as err:
            raise JournalUnavailable(f"journal {self.path}: {err}") from None
        return [
            TargetRecord(
                target=Target(
                    id=r[0],
                    group=r[1],
                    type=TargetType(r[2]),
                    kw=r[3],
                    start=datetime.fromisoformat(r[4]),
                    end=datetime.fromisoformat(r[5]),
                    priority=r[6],
                ),
                source=r[7],
                added_at=datetime.fromisoformat(r[8]),
                cancelled_at=_time(r[9]),
                baseline_kw=r[10],
                rev=r[11],
            )
            for r in rows
        ]

    # -- allocations -----------------------------------------------------------------------

    def record_publications(
        self,
        *,
        events: Iterable[AllocationRecord] = (),
        cancels: Iterable[tuple[str, str, str]] = (),
        revs: dict[str, int] | None = None,
        baselines: dict[str, float] | None = None,
        now: datetime,
    ) -> None:
        """In one transaction: the events about to be published, the cancels (event id, site,
        reason), each target's new ``rev`` and its frozen baseline."""
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO allocations (event_id, site, target, rev, kw, start, end,"
                " end_ts, published_at, reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        e.event_id,
                        e.site,
                        e.target,
                        e.rev,
                        e.kw,
                        e.start.isoformat(),
                        e.end.isoformat(),
                        e.end.timestamp(),
                        e.published_at.isoformat(),
                        e.reason,
                    )
                    for e in events
                ],
            )
            db.executemany(
                "UPDATE allocations SET cancelled_at = ?, cancel_reason = ?"
                " WHERE event_id = ? AND site = ? AND cancelled_at IS NULL",
                [(now.isoformat(), why, event_id, site) for event_id, site, why in cancels],
            )
            for target_id, rev in (revs or {}).items():
                db.execute("UPDATE targets SET rev = ? WHERE id = ?", (rev, target_id))
            for target_id, kw in (baselines or {}).items():
                db.execute(
                    "UPDATE targets SET baseline_kw = ? WHERE id = ? AND baseline_kw IS NULL",
                    (kw, target_id),
                )

    def record_answer(self, event_id: str, site: str, answer: str, reason: str | None) -> None:
        """A feeder's decision on one of the coordinator's events (from its ``dr/status``).
        Not fsynced on its own (a thousand answers to one target would take a second of
        fsyncs): a power cut loses at most the last answers, which every feeder's retained
        ``dr/status`` gives again after a restart."""
        with self._write(durable=False) as db:
            db.execute(
                "UPDATE allocations SET answer = ?, answer_reason = ?"
                " WHERE event_id = ? AND site = ?",
                (answer, reason, event_id, site),
            )

    def live_allocations(self, now: datetime) -> list[AllocationRecord]:
        """Events published and not cancelled that have not ended at ``now``."""
        rows = self._rows(
            "SELECT event_id, site, target, rev, kw, start, end, published_at, reason,"
            " cancelled_at, answer, answer_reason FROM allocations"
            " WHERE cancelled_at IS NULL AND end_ts > ? ORDER BY published_at, site",
            (now.timestamp(),),
        )
        return [
            AllocationRecord(
                event_id=r[0],
                site=r[1],
                target=r[2],
                rev=r[3],
                kw=r[4],
                start=datetime.fromisoformat(r[5]),
                end=datetime.fromisoformat(r[6]),
                published_at=datetime.fromisoformat(r[7]),
                reason=r[8],
                cancelled_at=_time(r[9]),
                answer=r[10],
                answer_reason=r[11],
            )
            for r in rows
        ]

    def allocation_count(self) -> int:
        rows = self._rows("SELECT COUNT(*) FROM allocations")
        return int(rows[0][0])

    # -- documents and retention -----------------------------------------------------------

    def save_document(self, name: str, doc: dict[str, Any], *, now: datetime) -> None:
        """Replace a status document. Written every tick and rebuilt from the next, so it is
        durable across a process crash only (``synchronous=NORMAL``), not a power cut."""
        with self._write(durable=False) as db:
            db.execute(
                "INSERT OR REPLACE INTO documents VALUES (?,?,?)",
                (name, json.dumps(doc, separators=(",", ":")), now.isoformat()),
            )

    def document(self, name: str) -> dict[str, Any] | None:
        """The last ``status`` (the fleet, each feeder's last state) or ``target_status``."""
        rows = self._rows("SELECT doc FROM documents WHERE name = ?", (name,))
        if not rows:
            return None
        doc = json.loads(rows[0][0])
        return doc if isinstance(doc, dict) else None

    def fleet_status(self) -> dict[str, Any] | None:
        """The last fleet status document the coordinator wrote (``feederd coordinate status``)."""
        return self.document("status")

    def purge(self, now: datetime) -> int:
        """Forget targets over (ended or cancelled) for longer than the retention, with their
        allocations, and decisions as old; returns the targets removed."""
        cutoff = (now - self.retention).timestamp()
        with self._write() as db:
            gone = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM targets WHERE end_ts <= ?"
                    " OR (cancelled_at IS NOT NULL AND julianday(cancelled_at) <= julianday(?))",
                    (cutoff, (now - self.retention).isoformat()),
                )
            ]
            db.executemany("DELETE FROM targets WHERE id = ?", [(t,) for t in gone])
            db.execute("DELETE FROM allocations WHERE end_ts <= ?", (cutoff,))
            db.execute("DELETE FROM decisions WHERE at_ts <= ?", (cutoff,))
        return len(gone)
