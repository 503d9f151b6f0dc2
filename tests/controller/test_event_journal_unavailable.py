"""`feederd event add|cancel|list` when the journal cannot be written: one line, exit 2.

A full disk for real, without root: the command runs in its own process under a file-size limit
(``RLIMIT_FSIZE``, what ``ulimit -f`` sets), so the kernel refuses every write past the journal's
present size, as a full disk would. A reader holding a snapshot (as the daemon may, between
its reads) keeps SQLite from rewinding its write-ahead log, so any new write must grow a file.
Python ignores ``SIGXFSZ``, so the write fails with ``EFBIG`` rather than killing the process.
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"


def _end() -> str:
    return (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(*args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    """``feederd event ARGS`` in its own process, its writes limited to ``limit_bytes``."""

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [FEEDERD, "event", *args],
        capture_output=True, text=True, timeout=60, check=False, preexec_fn=limit,
    )  # fmt: skip


def add(journal: Path, event_id: str, **kw: int) -> subprocess.CompletedProcess[str]:
    return event(
        "add", "--journal", str(journal), "--id", event_id, "--type", "import_limit",
        "--kw", "1500", "--end", _end(), **kw,
    )  # fmt: skip


def assert_one_line_exit_2(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("feederd: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def listed(journal: Path) -> str:
    proc = event("list", "--all", "--journal", str(journal))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_full_disk_is_one_line_and_exit_2_and_nothing_is_half_written(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    assert add(journal, "e1").returncode == 0
    reader = sqlite3.connect(journal)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM dr_event").fetchone()  # a snapshot: the log stays
        assert add(journal, "e2").returncode == 0
        sizes = {p.name: p.stat().st_size for p in tmp_path.glob("journal.sqlite*")}
        # no file may grow: the disk is full. A write goes to the log (the database file is
        # written only at a checkpoint, which the reader's snapshot holds off), so the log and
        # its index set the limit: one at the database file's size would leave the log room
        # to grow while it is the smaller file.
        full = max(sizes["journal.sqlite-wal"], sizes["journal.sqlite-shm"])
        tries: dict[str, Callable[[], subprocess.CompletedProcess[str]]] = {
            "add": lambda: add(journal, "e3", limit_bytes=full),
            "cancel": lambda: event(
                "cancel", "--journal", str(journal), "--id", "e1", limit_bytes=full
            ),
        }
        for action, attempt in tries.items():
            proc = attempt()
            assert_one_line_exit_2(proc, "journal")
            # the event's id, or the action that failed, is in the line
            assert ("e3" if action == "add" else action) in proc.stderr, proc.stderr
            assert "disk" in proc.stderr or "full" in proc.stderr, proc.stderr
        # `list` only reads: it answers, or says in one line why it cannot
        proc = event("list", "--journal", str(journal), limit_bytes=full)
        if proc.returncode != 0:
            assert_one_line_exit_2(proc, str(journal))
    finally:
        reader.rollback()
        reader.close()
    # room again: e3 was never stored, e1 never cancelled, and the journal is whole
    rows = listed(journal)
    assert "e3" not in rows
    assert "e1" in rows
    assert "cancelled" not in rows
    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert add(journal, "e3").returncode == 0


def test_a_journal_on_a_full_disk_from_the_start_is_one_line(tmp_path: Path) -> None:
    """Not a byte can be written: the journal file cannot even be set up."""
    journal = tmp_path / "journal.sqlite"
    for args in (
        ("add", "--id", "e1", "--type", "import_limit", "--kw", "1500", "--end", _end()),
        ("cancel", "--id", "e1"),
        ("list",),
    ):
        proc = event(args[0], "--journal", str(journal), *args[1:], limit_bytes=0)
        assert_one_line_exit_2(proc, str(journal))


@pytest.mark.parametrize("where", ["folder", "under-a-file", "not-a-journal", "device"])
def test_a_journal_that_cannot_be_a_journal_is_one_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "notes.txt").write_text("not a journal\n" * 100)
    journal = {
        "folder": tmp_path,
        "under-a-file": tmp_path / "notes.txt" / "journal.sqlite",
        "not-a-journal": tmp_path / "notes.txt",
        "device": Path("/dev/null"),
    }[where]
    for args in (
        ("add", "--id", "e1", "--type", "import_limit", "--kw", "1500", "--end", _end()),
        ("cancel", "--id", "e1"),
        ("list",),
    ):
        proc = event(args[0], "--journal", str(journal), *args[1:])
        assert_one_line_exit_2(proc, "journal")
    assert (tmp_path / "notes.txt").read_text() == "not a journal\n" * 100
    assert os.path.exists("/dev/null")


def test_through_the_config_a_bad_journal_path_is_refused_before_it_is_opened(
    tmp_path: Path,
) -> None:
    config = tmp_path / "feederd.toml"
    example = Path(__file__).resolve().parents[2] / "deploy" / "feederd.example.toml"
    config.write_text(
        example.read_text().replace(
            'path = "/var/lib/feederd/journal.sqlite"', f'path = "{tmp_path}"'
        )
    )
    proc = event("list", "--config", str(config))
    assert_one_line_exit_2(proc, "journal.path: ", "is a directory, not a regular file")
