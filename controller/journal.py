"""The journal: SQLite in WAL mode, one row per interval, the DR events, bounded retention.

Each write is its own transaction, so a crash (``kill -9`` included) loses at most the write
in flight and leaves a database that passes ``pragma integrity_check`` and that a restart
continues. Interval rows use ``synchronous=NORMAL`` (durable across a process crash); DR event
writes use ``synchronous=FULL`` (durable across a power cut too) because an accepted event is
acknowledged only after its write returns. The file is created owner-only (0600).

Events are indexed by their end (UTC seconds, ``end_ts``) and by ``rev``, a number every
write of an event raises: the daemon reads only events not yet over (``live_events``) and
what changed since it last looked (``changes_since``: an event added or cancelled by
``feederd event``), never the whole table. A connection is used by one thread at a time: the
daemon gives the DR service its own (``sibling()``), on its own worker thread.

The forecasts keep the feeder's history in ``history``: one row per finished slot (15 minutes
by default) with each bus's mean load and each inverter's mean PV available, as compact JSON,
pruned to the forecast's own retention (``prune_history``). ``plan`` holds one row, the latest
dispatch plan, replaced every interval. Both arrived with format 4; an older journal gains
them when opened.

``performance`` (format 5) holds what each DR event delivered, one row per event and M&V
baseline (``controller.performance``), pruned with the events; an older journal gains it when
opened, like the tables before it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.dr.events import DrEvent, EventType
from controller.dr.overlap import StoredEvent
from controller.records import CycleRecord

__all__ = ["HistorySlot", "Journal", "JournalError", "PerformanceRow"]

MEMORY = ":memory:"
_VERSION = 5
MAX_RETENTION_DAYS = 3650

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interval (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    cycle INTEGER NOT NULL,
    status TEXT NOT NULL,
    import_kw REAL,
    import_limit_kw REAL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS interval_at ON interval (at);
CREATE TABLE IF NOT EXISTS dr_event (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    kw REAL NOT NULL,
    start TEXT NOT NULL,
    end TEXT NOT NULL,
    priority INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    cancelled_at TEXT,
    baseline_import_kw REAL,
    end_ts REAL,
    rev INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS history (
    slot_ts REAL PRIMARY KEY,
    slot_s REAL NOT NULL,
    samples INTEGER NOT NULL,
    loads TEXT NOT NULL,
    pv TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plan (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS performance (
    event_id TEXT NOT NULL,
    baseline TEXT NOT NULL,
    assessed_at TEXT NOT NULL,
    end_ts REAL NOT NULL,
    delivered_kwh REAL,
    requested_kwh REAL,
    performance_ratio REAL,
    days_used INTEGER NOT NULL,
    adjustment REAL,
    note TEXT,
    PRIMARY KEY (event_id, baseline)
);
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS dr_event_end ON dr_event (end_ts);
CREATE INDEX IF NOT EXISTS dr_event_rev ON dr_event (rev);
"""
_EVENT_COLUMNS = (
    "seq, id, type, kw, start, end, priority, received_at, source, cancelled_at,"
    " baseline_import_kw, rev"
)


def _ts(at: datetime) -> float:
    return at.timestamp()


def _migrate(db: sqlite3.Connection) -> None:
    """A journal of the first formats: events get their UTC end and a revision."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(dr_event)")}
    with db:
        if "end_ts" not in columns:
            db.execute("ALTER TABLE dr_event ADD COLUMN end_ts REAL")
            db.execute("UPDATE dr_event SET end_ts = (julianday(end) - 2440587.5) * 86400.0")
        if "rev" not in columns:
            db.execute("ALTER TABLE dr_event ADD COLUMN rev INTEGER NOT NULL DEFAULT 0")
            db.execute("UPDATE dr_event SET rev = seq")


@dataclass(frozen=True, slots=True, kw_only=True)
class HistorySlot:
    """One finished slot of the feeder's history: its start (UTC), length, how many intervals
    were averaged, each bus's mean load and each inverter's mean PV available (kW); a bus or
    inverter not measured in the slot is absent."""

    start: datetime
    slot_s: float
    samples: int
    loads_kw: Mapping[int, float]
    pv_kw: Mapping[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class PerformanceRow:
    """What one DR event delivered against one M&V baseline (``controller.performance``):
    energies in kWh and their ratio (None: not measurable), how many days the baseline
    averaged, its same-day adjustment, its note; `end` is the event's end as assessed (its
    cancellation when cancelled), `assessed_at` when."""

    event_id: str
    baseline: str
    delivered_kwh: float | None
    requested_kwh: float | None
    performance_ratio: float | None
    days_used: int = 0
    adjustment: float | None = None
    note: str | None = None
    end: datetime
    assessed_at: datetime


class JournalError(Exception):
    """The journal file cannot be opened or is not a feederd journal."""


class Journal:
    """The daemon's journal; ``Journal(":memory:")`` keeps it in memory (the demo's default)."""

    def __init__(self, path: str | Path, *, retention_days: int = 30) -> None:
        if not 1 <= retention_days <= MAX_RETENTION_DAYS:
            raise JournalError(f"retention of {retention_days} days is outside 1..3650")
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if str(path) == MEMORY:
            # "in memory": a file of its own in a private temporary folder, removed on close,
            # so that a sibling connection (another thread) shares it with SQLite's own locking
            self._scratch = tempfile.TemporaryDirectory(prefix="feederd-journal-")
            path = Path(self._scratch.name) / "journal.sqlite"
        self.path = Path(path)
        self.retention = timedelta(days=retention_days)
        self.retention_days = retention_days
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if not self.path.exists():
            # owner-only: the journal records the feeder's operation; SQLite gives the -wal and
            # -shm files the database file's mode
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            _migrate(self._db)
            self._db.executescript(_INDEXES)
            self._db.execute(f"PRAGMA user_version={_VERSION}")
        except sqlite3.DatabaseError as err:
            self.close()
            raise JournalError(f"{path}: not a usable journal: {err}") from None
        self._writes = 0

    def sibling(self) -> Journal:
        """Another connection to the same journal (for another thread)."""
        return Journal(self.path, retention_days=self.retention_days)

    # -- intervals ------------------------------------------------------------------------

    def append(self, record: CycleRecord, at: datetime) -> None:
        body: dict[str, Any] = dataclasses.asdict(record)
        body["setpoints_kw"] = dict(record.setpoints_kw)
        del body["estimated_v_pu"]  # one number per bus: the summary fields are kept
        del body["picture_v_pu"]
        body["at"] = at.isoformat()
        with self._db:
            self._db.execute(
                "INSERT INTO interval (at, cycle, status, import_kw, import_limit_kw, record)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    at.isoformat(),
                    record.cycle,
                    record.status,
                    record.import_kw,
                    record.import_limit_kw,
                    json.dumps(body, separators=(",", ":")),
                ),
            )
        self._writes += 1
        if self._writes % 100 == 1:
            self.prune(at)

    def prune(self, now: datetime) -> None:
        """Drop intervals, and events that ended, older than the retention."""
        cutoff = now - self.retention
        with self._db:
            self._db.execute(
                "DELETE FROM interval WHERE at < ?", (cutoff.astimezone(UTC).isoformat(),)
            )
            self._db.execute("DELETE FROM dr_event WHERE end_ts < ?", (_ts(cutoff),))
            self._db.execute("DELETE FROM performance WHERE end_ts < ?", (_ts(cutoff),))

    def records(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT record FROM interval ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def intervals(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Interval records between two times (ISO strings compare in time order in UTC)."""
        rows = self._db.execute(
            "SELECT at, record FROM interval WHERE at >= ? AND at < ? ORDER BY id",
            (
                since.isoformat() if since else "",
                until.isoformat() if until else "~",
            ),
        ).fetchall()
        return [{**json.loads(body), "at": at} for at, body in rows]

    def count(self) -> int:
        row = self._db.execute("SELECT count(*) FROM interval").fetchone()
        return int(row[0])

    def meter(
        self, since: datetime, until: datetime
    ) -> list[tuple[float, float | None, float | None]]:
        """``(UTC seconds, import_kw, import_limit_kw)`` of the intervals in ``[since,
        until)``, in time order: the head meter alone, for M&V. SQLite reads the times (to
        the millisecond); no record is decoded."""
        rows: list[tuple[float, float | None, float | None]] = self._db.execute(
            "SELECT (julianday(at) - 2440587.5) * 86400.0, import_kw, import_limit_kw"
            " FROM interval WHERE at >= ? AND at < ? ORDER BY at",
            (since.astimezone(UTC).isoformat(), until.astimezone(UTC).isoformat()),
        ).fetchall()
        return rows

    # -- what DR events delivered (M&V) ---------------------------------------------------

    def put_performance(self, rows: list[PerformanceRow]) -> None:
        """Store an event's assessment, one row per baseline (replacing an earlier one)."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO performance (event_id, baseline, assessed_at, end_ts,"
                " delivered_kwh, requested_kwh, performance_ratio, days_used, adjustment, note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.event_id,
                        r.baseline,
                        r.assessed_at.isoformat(),
                        _ts(r.end),
                        r.delivered_kwh,
                        r.requested_kwh,
                        r.performance_ratio,
                        r.days_used,
                        r.adjustment,
                        r.note,
                    )
                    for r in rows
                ],
            )

    def performance(self, last_events: int = 10) -> list[PerformanceRow]:
        """The assessments of the ``last_events`` events that ended last, oldest first."""
        rows = self._db.execute(
            "SELECT event_id, baseline, assessed_at, end_ts, delivered_kwh, requested_kwh,"
            " performance_ratio, days_used, adjustment, note FROM performance WHERE event_id IN"
            " (SELECT event_id FROM performance GROUP BY event_id ORDER BY max(end_ts) DESC,"
            " event_id LIMIT ?) ORDER BY end_ts, event_id, baseline",
            (last_events,),
        ).fetchall()
        return [
            PerformanceRow(
                event_id=r[0],
                baseline=r[1],
                assessed_at=datetime.fromisoformat(r[2]),
                end=datetime.fromtimestamp(r[3], UTC),
                delivered_kwh=r[4],
                requested_kwh=r[5],
                performance_ratio=r[6],
                days_used=r[7],
                adjustment=r[8],
                note=r[9],
            )
            for r in rows
        ]

    def unassessed_events(self, ended_before: datetime) -> list[StoredEvent]:
        """The events with no assessment that ended (or were cancelled) before
        ``ended_before``, the earliest end first."""
        found = self._select(
            "WHERE (end_ts < ? OR cancelled_at IS NOT NULL) AND id NOT IN"
            " (SELECT event_id FROM performance) ORDER BY end_ts, seq",
            _ts(ended_before),
        )
        return [s for s in found if min(s.event.end, s.cancelled_at or s.event.end) < ended_before]

    # -- the forecasts' history, and the plan ------------------------------------------------

    def put_history(self, slot: HistorySlot) -> None:
        """Store a finished slot (replacing one that started at the same time)."""
        loads = {str(bus): round(kw, 4) for bus, kw in slot.loads_kw.items()}
        pv = {unit: round(kw, 4) for unit, kw in slot.pv_kw.items()}
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO history (slot_ts, slot_s, samples, loads, pv)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    _ts(slot.start),
                    slot.slot_s,
                    slot.samples,
                    json.dumps(loads, separators=(",", ":")),
                    json.dumps(pv, separators=(",", ":")),
                ),
            )

    def history_since(self, since: datetime) -> list[HistorySlot]:
        """The slots that started at or after ``since``, oldest first."""
        rows = self._db.execute(
            "SELECT slot_ts, slot_s, samples, loads, pv FROM history WHERE slot_ts >= ?"
            " ORDER BY slot_ts",
            (_ts(since),),
        ).fetchall()
        return [
            HistorySlot(
                start=datetime.fromtimestamp(ts, UTC),
                slot_s=slot_s,
                samples=samples,
                loads_kw={int(bus): float(kw) for bus, kw in json.loads(loads).items()},
                pv_kw={str(unit): float(kw) for unit, kw in json.loads(pv).items()},
            )
            for ts, slot_s, samples, loads, pv in rows
        ]

    def prune_history(self, before: datetime) -> None:
        """Drop the slots that started before ``before``."""
        with self._db:
            self._db.execute("DELETE FROM history WHERE slot_ts < ?", (_ts(before),))

    def put_plan(self, doc: Mapping[str, Any], at: datetime) -> None:
        """Store the latest plan document (one row, replaced)."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO plan (id, at, doc) VALUES (1, ?, ?)",
                (at.isoformat(), json.dumps(doc, separators=(",", ":"))),
            )

    def last_plan(self) -> dict[str, Any] | None:
        """The latest plan document stored, or ``None``."""
        row = self._db.execute("SELECT doc FROM plan WHERE id = 1").fetchone()
        if row is None:
            return None
        doc: dict[str, Any] = json.loads(row[0])
        return doc

    # -- DR events ------------------------------------------------------------------------

    def _next_rev(self) -> int:
        row = self._db.execute("SELECT coalesce(max(rev), 0) + 1 FROM dr_event").fetchone()
        return int(row[0])

    def put_event(self, event: DrEvent, *, received_at: datetime, source: str) -> StoredEvent:
        """Store an accepted event (replacing one with the same id) durably; returns it."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._db:
                rev = self._next_rev()
                self._db.execute("DELETE FROM dr_event WHERE id = ?", (event.id,))
                cur = self._db.execute(
                    "INSERT INTO dr_event (id, type, kw, start, end, priority, received_at,"
                    " source, end_ts, rev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.id,
                        event.type.value,
                        event.kw,
                        event.start.isoformat(),
                        event.end.isoformat(),
                        event.priority,
                        received_at.isoformat(),
                        source,
                        _ts(event.end),
                        rev,
                    ),
                )
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        assert cur.lastrowid is not None
        return StoredEvent(
            event=event, seq=cur.lastrowid, received_at=received_at, source=source, rev=rev
        )

    def cancel_event(self, event_id: str, *, at: datetime) -> bool:
        """Mark a live event cancelled; False when there is none with that id."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._db:
                cur = self._db.execute(
                    "UPDATE dr_event SET cancelled_at = ?, rev = ? WHERE id = ?"
                    " AND cancelled_at IS NULL",
                    (at.isoformat(), self._next_rev(), event_id),
                )
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        return cur.rowcount == 1

    def set_baseline(self, event_id: str, import_kw: float) -> None:
        with self._db:
            self._db.execute(
                "UPDATE dr_event SET baseline_import_kw = ?, rev = ? WHERE id = ?",
                (import_kw, self._next_rev(), event_id),
            )

    def events(self) -> list[StoredEvent]:
        """Every event the journal keeps (the retention bounds them), in arrival order."""
        return self._select("ORDER BY seq")

    def live_events(self, now: datetime) -> list[StoredEvent]:
        """The events not cancelled and not yet over at ``now`` (read by their index)."""
        return self._select("WHERE end_ts > ? AND cancelled_at IS NULL ORDER BY seq", _ts(now))

    def count_live(self, now: datetime) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM dr_event WHERE end_ts > ? AND cancelled_at IS NULL", (_ts(now),)
        ).fetchone()
        return int(row[0])

    def changes_since(self, rev: int) -> tuple[list[StoredEvent], int]:
        """The events written (added, cancelled, given a baseline) after revision ``rev``, and
        the revision to ask from next time."""
        changed = self._select("WHERE rev > ? ORDER BY rev", rev)
        return changed, max((s.rev for s in changed), default=rev)

    def revision(self) -> int:
        row = self._db.execute("SELECT coalesce(max(rev), 0) FROM dr_event").fetchone()
        return int(row[0])

    def event(self, event_id: str) -> StoredEvent | None:
        found = self._select("WHERE id = ?", event_id)
        return found[0] if found else None

    def _select(self, where: str, *args: object) -> list[StoredEvent]:
        rows = self._db.execute(f"SELECT {_EVENT_COLUMNS} FROM dr_event {where}", args)
        return [
            StoredEvent(
                event=DrEvent(
                    id=r[1],
                    type=EventType(r[2]),
                    kw=r[3],
                    start=datetime.fromisoformat(r[4]),
                    end=datetime.fromisoformat(r[5]),
                    priority=r[6],
                ),
                seq=r[0],
                received_at=datetime.fromisoformat(r[7]),
                source=r[8],
                cancelled_at=None if r[9] is None else datetime.fromisoformat(r[9]),
                baseline_import_kw=r[10],
                rev=r[11],
            )
            for r in rows.fetchall()
        ]

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
