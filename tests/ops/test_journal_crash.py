"""kill -9 at any moment leaves a journal that passes integrity_check and that a restart
continues; events, the CLI, and the report on top of it."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ops_helpers import FEEDERD, GUARD_S

from controller.records import CycleRecord, CycleStatus

pytestmark = pytest.mark.integration

# Appends interval rows (and now and then a DR event) until killed; says "open N" once the
# journal is open with N rows, then "wrote I" after each row it committed.
WRITER = r"""
import sys, itertools
from datetime import UTC, datetime, timedelta
from controller.dr.events import DrEvent, EventType
from controller.journal import Journal
from controller.records import CycleRecord, CycleStatus
j = Journal(sys.argv[1])
start = j.count()
t0 = datetime(2026, 7, 1, tzinfo=UTC)
print("open", start, flush=True)
for i in itertools.count(start):
    rec = CycleRecord(cycle=i, status=CycleStatus.OPTIMAL, at_s=float(i),
        import_kw=1500.0 + i % 7, import_estimate_kw=1500.0, import_limit_kw=2000.0,
        export_limit_kw=None, losses_kw=70.0, curtailed_kw=0.0, v_min_pu=0.95,
        setpoints_kw={"bess-1": 100.0}, devices_up=3, devices_missing=(), poll_ms=5.0,
        solve_ms=20.0, write_ms=5.0, cycle_ms=30.0)
    j.append(rec, t0 + timedelta(seconds=i))
    if i % 50 == 0:
        ev = DrEvent(id=f"e{i}", type=EventType.IMPORT_LIMIT, kw=1800.0, start=t0,
            end=t0 + timedelta(days=3650))
        j.put_event(ev, received_at=t0, source="test")
    print("wrote", i, flush=True)
"""


async def _line(proc: asyncio.subprocess.Process) -> list[str]:
    assert proc.stdout is not None
    try:
        raw = await asyncio.wait_for(proc.stdout.readline(), GUARD_S)
    except TimeoutError:
        raise AssertionError(f"the journal writer said nothing for {GUARD_S:g} s") from None
    assert raw, "the journal writer exited"
    return raw.decode().split()


async def test_kill_9_leaves_an_intact_journal_that_a_restart_continues(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    rng = random.Random(6)
    counts: list[int] = []
    for _ in range(4):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(path), stdout=asyncio.subprocess.PIPE
        )
        try:
            opened = await _line(proc)
            assert opened[0] == "open"
            counts.append(int(opened[1]))
            # SIGKILL while it writes on: once it has committed a random number of rows (not
            # after a fixed time, which a busy machine may spend before the first row)
            for _ in range(rng.randint(1, 120)):
                assert (await _line(proc))[0] == "wrote"
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            cycles = [r[0] for r in db.execute("SELECT cycle FROM interval ORDER BY id")]
        assert cycles == list(range(len(cycles)))  # no gap, no duplicate: each run continued
    assert counts[0] == 0
    assert counts == sorted(counts)
    assert counts[-1] > counts[1] > 0
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_event_cli_add_list_cancel_and_report(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

    def feederd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FEEDERD, *args], capture_output=True, text=True, timeout=60, check=False
        )

    added = feederd(
        "event",
        "add",
        "--journal",
        str(journal),
        "--id",
        "cli-1",
        "--type",
        "import_limit",
        "--kw",
        "1600",
        "--end",
        end,
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "accepted cli-1"
    bad = feederd(
        "event",
        "add",
        "--journal",
        str(journal),
        "--id",
        "cli-2",
        "--type",
        "export_limit",
        "--kw",
        "-5",
        "--end",
        end,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "feederd: event cli-2 rejected: 'kw' of an export_limit event must not be negative, got -5.0"
    )
    listed = feederd("event", "list", "--journal", str(journal))
    assert "cli-1" in listed.stdout
    assert "active" in listed.stdout
    assert feederd("event", "cancel", "--journal", str(journal), "--id", "cli-1").returncode == 0
    assert "cli-1" not in feederd("event", "list", "--journal", str(journal)).stdout
    again = feederd("event", "cancel", "--journal", str(journal), "--id", "cli-1")
    assert again.returncode == 2
    assert "no live event" in again.stderr

    # the report over a journal of 60 intervals, two of them over the limit
    from controller.journal import Journal  # noqa: PLC0415

    j = Journal(journal)
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    for i in range(60):
        j.append(
            CycleRecord(
                cycle=i,
                status=CycleStatus.OPTIMAL,
                at_s=float(i),
                import_kw=2100.0 if i in (10, 11) else 1900.0,
                import_estimate_kw=1900.0,
                import_limit_kw=2000.0,
                export_limit_kw=None,
                losses_kw=70.0,
                curtailed_kw=0.0,
                v_min_pu=0.95,
                setpoints_kw={"bess-1": 50.0 + i},
                devices_up=3,
                devices_missing=(),
                poll_ms=5.0,
                solve_ms=20.0,
                write_ms=5.0,
                cycle_ms=30.0,
            ),
            t0 + timedelta(seconds=5 * i),
        )
    j.close()
    out = tmp_path / "report"
    rep = feederd(
        "report",
        "--journal",
        str(journal),
        "--from",
        "2026-07-01T00:00:00Z",
        "--to",
        "2026-07-01T00:04:00Z",
        "--out",
        str(out),
    )
    assert rep.returncode == 0, rep.stderr
    assert "within import limit +2%" in rep.stdout
    assert "47/49" in rep.stdout  # 49 intervals in 4 minutes, two over
    for name in ("import.png", "voltage.png", "setpoints.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = feederd("report", "--journal", str(journal), "--from", "2030-01-01T00:00:00Z")
    assert empty.returncode == 2
    assert "no intervals in the period" in empty.stderr
