"""``feederd status``: a running daemon's journal and metrics, read without disturbing it.

The daemon is the real one on the HIL rig (simulated time), with a journal file and its
``/metrics`` served on a loopback port; the command reads them while the daemon is open, through
a config that points at both (the example config with its journal and port replaced).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from controller.commands.rig.simulation import Simulation
from tests.controller.test_config_cli import EXAMPLE, cli
from tests.support.feeder import RIG_DEFAULTS, TEST_DEFAULTS
from tests.support.net import free_port


def _config(tmp_path: Path, journal: Path, port: int, *, name: str = "status.toml") -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace('path = "/var/lib/feederd/journal.sqlite"', f'path = "{journal}"')
    text = text.replace("port = 9410", f"port = {port}")
    assert str(journal) in text
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _files(journal: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in journal.parent.iterdir() if p.name.startswith(journal.name)
    }


async def test_status_reads_the_running_daemon_without_disturbing_it(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    async with Simulation.open(
        overrides={**TEST_DEFAULTS, "journal": {"path": str(journal)}},
        rig_options=RIG_DEFAULTS,
    ) as sim:
        port = sim.daemon.metrics.serve("127.0.0.1", 0)
        try:
            outlet = sim.daemon.controller.flex
            assert outlet is not None
            published: list[dict[str, object]] = []  # as the MQTT intake listens: computed only
            outlet.listeners.append(published.append)  # when someone takes it
            for _ in range(2):
                await sim.step()
            free = outlet.last
            assert free is not None
            assert free.max_kw is not None
            now = sim.clock.now()
            limit = round(free.max_kw - 200.0, 1)
            for payload in (
                {"id": "fleet:noon:1", "type": "import_limit", "kw": limit},
                {"id": "later", "type": "reduce_by", "kw": 100.0, "in": 3600.0},
            ):
                start = now + dt.timedelta(seconds=float(payload.pop("in", 0.0)))  # type: ignore[arg-type]
                decision = await sim.daemon.dr.submit_async(
                    {
                        **payload,
                        "start": start.isoformat(),
                        "end": (start + dt.timedelta(hours=2)).isoformat(),
                    },
                    source="mqtt",
                )
                assert decision.result == "accepted", decision
            for _ in range(3):
                record = await sim.step()
            flex = outlet.last
            assert flex is not None
            config = _config(tmp_path, journal, port)
            before = _files(journal)
            proc = cli("status", "--config", str(config), "--json")
            text = cli("status", "--config", str(config))
            after = _files(journal)
        finally:
            sim.daemon.metrics.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert after == before  # read-only: not a byte of the journal (or its WAL) moved
    doc = json.loads(proc.stdout)
    last = doc["last_interval"]
    assert last["cycle"] == record.cycle
    assert last["status"] == record.status.value
    assert last["import_kw"] == pytest.approx(record.import_kw)
    assert last["import_limit_kw"] == pytest.approx(limit)
    assert last["devices_down"] == []
    events = doc["events"]
    (active,) = events["active"]
    (coming,) = events["coming"]
    assert (active["id"], active["type"], active["kw"], active["source"]) == (
        "fleet:noon:1",
        "import_limit",
        limit,
        "mqtt",
    )
    assert active["predicted_shortfall_kw"] == pytest.approx(0.0, abs=1.0)
    assert (coming["id"], coming["type"]) == ("later", "reduce_by")
    assert coming["predicted_shortfall_kw"] is not None  # the plan reaches it
    plan = doc["plan"]
    assert [s["minutes"] for s in plan["ahead"]] == [0, 15, 30, 45, 60]
    assert plan["ahead"][0]["import_limit_kw"] is not None
    metrics = doc["metrics"]
    assert metrics["available"], metrics
    assert flex.min_kw is not None
    assert flex.max_kw is not None
    assert metrics["min_kw"] == pytest.approx(flex.min_kw)
    assert metrics["max_kw"] == pytest.approx(flex.max_kw)
    assert metrics["limit_kw"] == pytest.approx(limit)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert f"cycle {record.cycle}, optimal" in out
    assert f"against a limit of {limit:.1f} kW" in out
    assert "DR events in force: 1" in out
    assert "fleet:noon:1  import_limit" in out
    assert "DR events coming: 1" in out
    assert "devices: 17 up, none down" in out
    assert f"can hold down to {flex.min_kw:.1f} kW" in out


async def test_without_metrics_it_says_so_and_still_reports(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    async with Simulation.open(
        overrides={**TEST_DEFAULTS, "journal": {"path": str(journal)}},
        rig_options=RIG_DEFAULTS,
    ) as sim:
        await sim.step()
    closed = free_port()  # nothing listens there
    proc = cli("status", "--config", str(_config(tmp_path, journal, closed)))
    assert proc.returncode == 0, proc.stderr
    assert "last interval:" in proc.stdout
    assert "flexibility: metrics not available" in proc.stdout
    assert f"127.0.0.1:{closed}" in proc.stdout


def test_a_journal_missing_or_not_feederds_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database file at all" * 100)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.close()
    for path, words in (
        (missing, "no such journal file"),
        (garbage, "is not a journal"),  # the config's own check of journal.path
        (other, "not a feederd journal (no dr_event, interval, plan table)"),
    ):
        proc = cli("status", "--config", str(_config(tmp_path, path, free_port())))
        assert proc.returncode == 2, (path, proc.stdout)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert str(path) in lines[0]
        assert words in lines[0]
    assert not missing.exists()  # read-only: nothing created
    no_journal = tmp_path / "nojournal.toml"
    no_journal.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace('path = "/var/lib/feederd/journal.sqlite"', ""),
        encoding="utf-8",
    )
    proc = cli("status", "--config", str(no_journal))
    assert proc.returncode == 2
    assert "journal.path" in proc.stderr
