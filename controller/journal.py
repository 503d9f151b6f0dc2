"""The journal: SQLite in WAL mode, one row per interval, the DR events, bounded retention.

Each write is its own transaction, so a crash (``kill -9`` included) loses at most the write
in flight and leaves a database that passes ``pragma integrity_check`` and that a restart
continues. Interval rows use ``synchronous=NORMAL`` (durable across a process crash); DR event
writes use ``synchronous=FULL`` (durable across a power cut too) because an accepted event is
acknowledged only after its write returns. The file is created owner-only (0600).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.dr.events import DrEvent, EventType
from controller.dr.overlap import StoredEvent
from controller.records import CycleRecord

__all__ = ["Journal", "JournalError"]

MEMORY = ":memory:"
_VERSION = 2

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
    baseline_import_kw REAL
);
"""


class JournalError(Exception):
    """The journal file cannot be opened or is not a feederd journal."""


class Journal:
    """The daemon's journal; ``Journal(":memory:")`` keeps it in memory (the demo's default)."""

    def __init__(self, path: str | Path, *, retention_days: int = 30) -> None:
        self.path = Path(path) if str(path) != MEMORY else None
        self.retention = timedelta(days=retention_days)
        if self.path is not None:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            if not self.path.exists():
                # owner-only: the journal records the feeder's operation; SQLite gives the
                # -wal and -shm files the database file's mode
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
        try:
            self._db = sqlite3.connect(
                MEMORY if self.path is None else self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=5.0,
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={_VERSION}")
        except sqlite3.DatabaseError as err:
            raise JournalError(f"{path}: not a usable journal: {err}") from None
        self._writes = 0

    # -- intervals ------------------------------------------------------------------------

    def append(self, record: CycleRecord, at: datetime) -> None:
        body: dict[str, Any] = dataclasses.asdict(record)
        body["setpoints_kw"] = dict(record.setpoints_kw)
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
        cutoff = (now - self.retention).isoformat()
        with self._db:
            self._db.execute("DELETE FROM interval WHERE at < ?", (cutoff,))
            self._db.execute("DELETE FROM dr_event WHERE end < ?", (cutoff,))

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

    # -- DR events ------------------------------------------------------------------------

    def put_event(self, event: DrEvent, *, received_at: datetime, source: str) -> StoredEvent:
        """Store an accepted event (replacing one with the same id) durably; returns it."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._db:
                self._db.execute("DELETE FROM dr_event WHERE id = ?", (event.id,))
                cur = self._db.execute(
                    "INSERT INTO dr_event (id, type, kw, start, end, priority, received_at,"
                    " source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.id,
                        event.type.value,
                        event.kw,
                        event.start.isoformat(),
                        event.end.isoformat(),
                        event.priority,
                        received_at.isoformat(),
                        source,
                    ),
                )
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        assert cur.lastrowid is not None
        return StoredEvent(event=event, seq=cur.lastrowid, received_at=received_at, source=source)

    def cancel_event(self, event_id: str, *, at: datetime) -> bool:
        """Mark a live event cancelled; False when there is none with that id."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._db:
                cur = self._db.execute(
                    "UPDATE dr_event SET cancelled_at = ? WHERE id = ? AND cancelled_at IS NULL",
                    (at.isoformat(), event_id),
                )
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        return cur.rowcount == 1

    def set_baseline(self, event_id: str, import_kw: float) -> None:
        with self._db:
            self._db.execute(
                "UPDATE dr_event SET baseline_import_kw = ? WHERE id = ?", (import_kw, event_id)
            )

    def events(self) -> list[StoredEvent]:
        rows = self._db.execute(
            "SELECT seq, id, type, kw, start, end, priority, received_at, source, cancelled_at,"
            " baseline_import_kw FROM dr_event ORDER BY seq"
        ).fetchall()
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
            )
            for r in rows
        ]

    def event(self, event_id: str) -> StoredEvent | None:
        return next((s for s in self.events() if s.event.id == event_id), None)

    def close(self) -> None:
        self._db.close()
