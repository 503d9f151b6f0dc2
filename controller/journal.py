"""The interval journal: one SQLite row per interval, in WAL mode, with bounded retention.

Each record is written in its own transaction, so a crash loses at most the interval being
written and leaves a database that a restart continues.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.daemon import CycleRecord

__all__ = ["Journal"]

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
"""


class Journal:
    def __init__(self, path: str | Path, *, retention_days: int = 30) -> None:
        self.path = Path(path)
        self.retention = timedelta(days=retention_days)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # created owner-only: the journal records the feeder's operation
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._writes = 0

    def append(self, record: CycleRecord, at: datetime) -> None:
        body: dict[str, Any] = dataclasses.asdict(record)
        body["setpoints_kw"] = dict(record.setpoints_kw)
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
            self._db.execute(
                "DELETE FROM interval WHERE at < ?", ((at - self.retention).isoformat(),)
            )

    def records(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT record FROM interval ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def close(self) -> None:
        self._db.close()
