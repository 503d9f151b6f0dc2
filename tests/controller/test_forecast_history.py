"""The forecasts' history: kept in a real journal file across a restart, pruned to its
retention, and untroubled by holes, clock jumps and bad values; the journal's format 4
(history, plan) and the migration of a format-3 journal."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import structlog

from controller.forecasts import Forecaster, ForecastSettings
from controller.journal import HistorySlot, Journal
from tests.controller.forecast_series import horizon_steps, samples

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
LOADS = {2: 100.0, 3: 90.0, 7: 200.0}
PV = {"pv1": 300.0}
SEASONAL = ForecastSettings(None, None, model="seasonal")


def _feed(fc: Forecaster, days: float, *, start: datetime = START, seed: int = 1) -> datetime:
    at = start
    for s in samples(
        start, days=days, interval_s=300.0, loads_kw=LOADS, pv_kwp=PV, seed=seed, noise=0.02
    ):
        fc.observe(s.at, s.loads_kw, s.pv_kw)
        at = s.at
    return at


def test_a_restart_keeps_what_was_learned(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    first = Forecaster(sorted(LOADS), sorted(PV), SEASONAL, journal)
    last = _feed(first, 2.0)
    at = last + timedelta(seconds=300)  # the next interval, same slot as after a restart
    first.observe(at, dict.fromkeys(LOADS, 1.0), {"pv1": 0.0})
    starts, steps = horizon_steps(300.0)
    before = first.forecast(at, starts, steps)
    journal.close()

    journal = Journal(path)
    again = Forecaster(sorted(LOADS), sorted(PV), SEASONAL, journal)
    again.observe(at, dict.fromkeys(LOADS, 1.0), {"pv1": 0.0})
    after = again.forecast(at, starts, steps)
    journal.close()
    assert after.source == "seasonal"
    # beyond the first hour the forecast is the learned baseline alone: identical after a
    # restart (to the journal's rounding, 0.1 W)
    late = [i for i, s in enumerate(starts) if s >= 3600.0]
    np.testing.assert_allclose(
        after.load_kw.iloc[late].to_numpy(), before.load_kw.iloc[late].to_numpy(), atol=1e-3
    )
    np.testing.assert_allclose(
        after.pv_kw.iloc[late].to_numpy(), before.pv_kw.iloc[late].to_numpy(), atol=1e-3
    )
    # and it is the daily shape, not the 1 kW measured at the restart
    assert after.load_kw.iloc[late][7].max() > 150.0


def test_history_is_pruned_to_its_retention(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    fc = Forecaster(
        sorted(LOADS), sorted(PV), ForecastSettings(None, None, history_days=2), journal
    )
    last = _feed(fc, 5.0)
    kept = journal.history_since(START - timedelta(days=1))
    # pruned once per day of slots: nothing older than the retention and that day
    assert kept[0].start >= last - timedelta(days=3)
    assert kept[-1].start == last - timedelta(minutes=15) - timedelta(minutes=last.minute % 15)
    assert fc.history.slot_no.max() == fc.history.slot_of(last) - 1
    journal.close()


def test_clock_jumps_and_holes_log_one_line_and_leave_slots_absent() -> None:
    fc = Forecaster(sorted(LOADS), sorted(PV), SEASONAL, None)
    last = _feed(fc, 1.0)
    starts, steps = horizon_steps(300.0)
    with structlog.testing.capture_logs() as logs:
        later = last + timedelta(hours=6)  # the daemon was away (or the clock jumped)
        fc.observe(later, LOADS, PV)
        fc.observe(later + timedelta(minutes=5), LOADS, PV)
        h = fc.history
        hole = np.arange(h.slot_of(last) + 1, h.slot_of(later), dtype=np.int64)
        assert np.isnan(h.at_slots(hole)).all()
        back = later - timedelta(hours=3)  # and the clock goes back
        fc.observe(back, LOADS, PV)
        fc.observe(back + timedelta(minutes=5), LOADS, PV)
        frames = fc.forecast(back + timedelta(minutes=5), starts, steps)
    events = [e["event"] for e in logs]
    assert events.count("forecast_history_gap") == 1
    assert events.count("forecast_clock_back") == 1
    gap = next(e for e in logs if e["event"] == "forecast_history_gap")
    assert gap["missing_slots"] == 6 * 4 - 1
    # the slot measured again after the clock went back is kept, the rest of the hole absent
    assert np.isfinite(h.at_slots(np.array([h.slot_of(back)]))).all()
    assert np.isnan(h.at_slots(hole[hole > h.slot_of(back)])).all()
    assert np.isfinite(frames.load_kw.to_numpy()).all()
    assert frames.load_kw.shape == (len(starts), 3)


def test_bad_values_and_unknown_series_are_said_once_and_skipped() -> None:
    fc = Forecaster(sorted(LOADS), sorted(PV), SEASONAL, None)
    with structlog.testing.capture_logs() as logs:
        for i in range(3):
            at = START + timedelta(minutes=5 * i)
            fc.observe(at, {2: float("nan"), 3: 90.0, 7: 200.0, 99: 5.0}, {"pv1": "x"})  # type: ignore[dict-item]
        frames = fc.forecast(START + timedelta(minutes=10), [0.0, 300.0], [300.0, 300.0])
    assert [e["event"] for e in logs].count("forecast_unknown_series") == 1
    assert [e["event"] for e in logs].count("forecast_bad_value") == 2
    assert list(frames.load_kw.columns) == [3, 7]  # bus 2 never measured: left to the dispatch
    assert frames.pv_kw.shape[1] == 0


def test_a_format_3_journal_migrates(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE interval (id INTEGER PRIMARY KEY, at TEXT NOT NULL, cycle INTEGER NOT NULL,
            status TEXT NOT NULL, import_kw REAL, import_limit_kw REAL, record TEXT NOT NULL);
        CREATE INDEX interval_at ON interval (at);
        CREATE TABLE dr_event (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL, kw REAL NOT NULL, start TEXT NOT NULL, end TEXT NOT NULL,
            priority INTEGER NOT NULL, received_at TEXT NOT NULL, source TEXT NOT NULL,
            cancelled_at TEXT, baseline_import_kw REAL, end_ts REAL,
            rev INTEGER NOT NULL DEFAULT 0);
        INSERT INTO interval (at, cycle, status, import_kw, import_limit_kw, record)
            VALUES ('2026-03-01T00:00:00+00:00', 1, 'optimal', 1.5, NULL, '{"cycle": 1}');
        PRAGMA user_version = 3;
        """
    )
    db.commit()
    db.close()
    journal = Journal(path)
    assert journal.records() == [{"cycle": 1}]
    assert journal._db.execute("PRAGMA user_version").fetchone()[0] == 5
    assert journal.last_plan() is None
    journal.put_plan({"at": "2026-03-01T00:00:00+00:00", "steps": [{"import_kw": 1.0}]}, START)
    journal.put_plan({"at": "2026-03-01T00:05:00+00:00", "steps": []}, START)
    assert journal.last_plan() == {"at": "2026-03-01T00:05:00+00:00", "steps": []}
    slot = HistorySlot(start=START, slot_s=900.0, samples=3, loads_kw={2: 1.25}, pv_kw={"a": 0.5})
    journal.put_history(slot)
    assert journal.history_since(START) == [slot]
    journal.close()


def test_history_of_another_slot_length_is_skipped_with_a_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.put_history(
        HistorySlot(start=START, slot_s=600.0, samples=1, loads_kw={2: 1.0}, pv_kw={})
    )
    fc = Forecaster(sorted(LOADS), sorted(PV), SEASONAL, journal)
    with structlog.testing.capture_logs() as logs:
        fc.observe(START + timedelta(hours=1), LOADS, PV)
    assert [e["event"] for e in logs].count("forecast_history_skipped") == 1
    assert fc.history.last_finished() is None
    journal.close()


def test_settings_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="latitude"):
        ForecastSettings(95.0, 5.0)
    with pytest.raises(ValueError, match="both latitude and longitude"):
        ForecastSettings(50.0, None)
    with pytest.raises(ValueError, match="slot_s"):
        ForecastSettings(None, None, slot_s=700.0)
    with pytest.raises(ValueError, match="model"):
        ForecastSettings(None, None, model="prophet")
    with pytest.raises(ValueError, match="timezone"):
        ForecastSettings(None, None, timezone="Mars/Olympus")
