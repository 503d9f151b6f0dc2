"""M&V from the journal (controller/performance.py, controller/assessor.py): what an event
delivered against each baseline, computed from journals made with the real ``Journal`` API
and checked by hand; the daemon's assessment on the DR worker thread, its journal rows and its
metrics (``promtool check metrics``); the journal's format 5."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import shutil
import sqlite3
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from controller.assessor import SHOWN, Assessor
from controller.clock import FakeClock
from controller.config import ConfigError, parse_config
from controller.daemon import Daemon
from controller.dr.events import EventType
from controller.dr.service import DrService
from controller.journal import Journal
from controller.metrics import Metrics
from controller.performance import MvSettings, UnknownEvent, assess, event_days
from tests.controller.mv_helpers import (
    EVENT_END,
    EVENT_START,
    TZ,
    event,
    fill,
    in_event,
    journal_at,
    record,
)
from tests.support.net import free_port

SETTINGS = MvSettings(timezone=TZ)
AFTER = EVENT_END + timedelta(hours=2)  # the meter-after window (30 min) has passed


def _summary(perf: Any, baseline: str) -> Any:
    return next(s for s in perf.summary if s.baseline == baseline)


def _cut(kw_during: float) -> Any:
    """500 kW all day, every day; `kw_during` during the event."""
    return lambda t: kw_during if in_event(t) else 500.0


def test_a_reduce_by_event_delivered_against_both_baselines(tmp_path: Path) -> None:
    j = journal_at(tmp_path / "j.sqlite")
    fill(j, _cut(350.0))
    event(j, "ev1", kw=100.0)
    perf = assess(j, "ev1", settings=SETTINGS, now=AFTER)
    df = perf.intervals
    assert len(df) == 8  # 2 h of 15 min intervals
    assert df.index[0] == EVENT_START
    assert set(df.columns) >= {
        "measured_kw",
        "limit_kw",
        "baseline_kw_10of10",
        "delivered_kw_10of10",
        "requested_kw_10of10",
        "baseline_kw_meter_before_after",
    }
    for b in ("10of10", "meter_before_after"):
        assert df[f"baseline_kw_{b}"].tolist() == pytest.approx([500.0] * 8)
        assert df[f"delivered_kw_{b}"].tolist() == pytest.approx([150.0] * 8)
        assert df[f"requested_kw_{b}"].tolist() == pytest.approx([100.0] * 8)
        s = _summary(perf, b)
        assert s.delivered_kwh == pytest.approx(150.0 * 2)
        assert s.requested_kwh == pytest.approx(100.0 * 2)
        assert s.performance_ratio == pytest.approx(1.5)
    ten = _summary(perf, "10of10")
    assert len(ten.days_used) == 10
    assert ten.days_used[0] == date(2026, 6, 16)
    assert ten.adjustment == pytest.approx(1.0)
    assert ten.note is None
    assert perf.note is None


def test_an_import_limit_asks_for_the_baseline_above_the_limit(tmp_path: Path) -> None:
    j = journal_at(tmp_path / "j.sqlite")
    fill(j, _cut(420.0), limit=lambda t: 400.0 if in_event(t) else None)
    event(j, "lim", kind=EventType.IMPORT_LIMIT, kw=400.0)
    perf = assess(j, "lim", settings=SETTINGS, now=AFTER)
    assert perf.intervals["limit_kw"].tolist() == pytest.approx([400.0] * 8)
    s = _summary(perf, "10of10")
    assert s.requested_kwh == pytest.approx((500.0 - 400.0) * 2)
    assert s.delivered_kwh == pytest.approx((500.0 - 420.0) * 2)
    assert s.performance_ratio == pytest.approx(0.8)


def test_a_limit_above_the_baseline_requests_nothing(tmp_path: Path) -> None:
    j = journal_at(tmp_path / "j.sqlite")
    fill(j, _cut(480.0))
    event(j, "loose", kind=EventType.IMPORT_LIMIT, kw=600.0)
    s = _summary(assess(j, "loose", settings=SETTINGS, now=AFTER), "meter_before_after")
    assert s.requested_kwh == pytest.approx(0.0)
    assert s.delivered_kwh == pytest.approx(20.0 * 2)
    assert s.performance_ratio is None
    assert s.note is not None
    assert "nothing requested" in s.note


def test_a_cancelled_event_is_assessed_up_to_its_cancellation(tmp_path: Path) -> None:
    cancel = EVENT_START + timedelta(hours=1)
    j = journal_at(tmp_path / "j.sqlite")
    fill(j, lambda t: 350.0 if EVENT_START <= t < cancel else 500.0)
    event(j, "cut", kw=100.0, cancelled_at=cancel)
    perf = assess(j, "cut", settings=SETTINGS, now=AFTER)
    assert perf.end == cancel
    assert len(perf.intervals) == 4
    for b in ("10of10", "meter_before_after"):
        s = _summary(perf, b)
        assert s.delivered_kwh == pytest.approx(150.0)
        assert s.requested_kwh == pytest.approx(100.0)
    assert perf.note is not None
    assert "cancelled at 2026-06-17 13:00:00 UTC" in perf.note


def test_days_with_events_are_not_baseline_days(tmp_path: Path) -> None:
    # Tuesday 06-16 had an event of its own, during which the feeder drew 200 kW: not a day
    # to average (it would pull the baseline down by 30 kW)
    before = EVENT_START - timedelta(days=1), EVENT_END - timedelta(days=1)
    j = journal_at(tmp_path / "j.sqlite")
    fill(j, lambda t: 350.0 if in_event(t) else 200.0 if in_event(t, *before) else 500.0)
    event(j, "tuesday", start=before[0], end=before[1])
    event(j, "ev1")
    assert event_days(j.events(), TZ) == {date(2026, 6, 16), date(2026, 6, 17)}
    ten = _summary(assess(j, "ev1", settings=SETTINGS, now=AFTER), "10of10")
    assert date(2026, 6, 16) not in ten.days_used
    assert ten.days_used[0] == date(2026, 6, 15)
    assert ten.delivered_kwh == pytest.approx(300.0)


def test_intervals_not_measured_count_for_neither_energy(tmp_path: Path) -> None:
    # two event intervals missing (the daemon was down 14:30-15:00): 1.5 h are assessed
    j = journal_at(tmp_path / "j.sqlite")
    gap = EVENT_START + timedelta(minutes=30), EVENT_START + timedelta(hours=1)
    fill(j, _cut(350.0), skip=lambda t: gap[0] <= t < gap[1])
    event(j, "ev1")
    perf = assess(j, "ev1", settings=SETTINGS, now=AFTER)
    assert len(perf.intervals) == 6
    for b in ("10of10", "meter_before_after"):
        s = _summary(perf, b)
        assert s.delivered_kwh == pytest.approx(150.0 * 1.5)
        assert s.requested_kwh == pytest.approx(100.0 * 1.5)


def test_an_unknown_event_and_one_never_measured(tmp_path: Path) -> None:
    j = journal_at(tmp_path / "j.sqlite")
    with pytest.raises(UnknownEvent):
        assess(j, "nope", settings=SETTINGS, now=AFTER)
    event(j, "dark")  # no interval at all: every figure unknown, and said
    perf = assess(j, "dark", settings=SETTINGS, now=AFTER)
    assert perf.intervals.empty
    assert all(s.delivered_kwh is None and s.performance_ratio is None for s in perf.summary)
    assert perf.note == "no interval measured during the event"


# -- the journal's format 5 ---------------------------------------------------------------------


def test_a_format_4_journal_gains_the_performance_table_in_place(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    fill(j, _cut(350.0), first=EVENT_START - timedelta(hours=2))
    event(j, "ev1")
    j.close()
    with sqlite3.connect(path) as db:  # as format 4 left it
        db.execute("DROP TABLE performance")
        db.execute("PRAGMA user_version=4")
    j = Journal(path)
    assert j.performance() == []
    perf = assess(j, "ev1", settings=SETTINGS, now=AFTER)
    j.put_performance(perf.rows(assessed_at=AFTER))
    rows = j.performance()
    assert [(r.event_id, r.baseline) for r in rows] == [
        ("ev1", "10of10"),
        ("ev1", "meter_before_after"),
    ]
    assert rows[1].delivered_kwh == pytest.approx(300.0)
    assert rows[0].end == EVENT_END
    assert j.unassessed_events(AFTER) == []
    j.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- the daemon's side: the assessor on the DR worker thread ------------------------------------


def _promtool(text: bytes) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make apt` (as root)")
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


class _Rig:
    """A DR service with its worker thread and its own journal connection, and an assessor
    listening to its intervals: what ``Daemon.open`` assembles."""

    def __init__(self, path: Path, clock: FakeClock, settings: MvSettings = SETTINGS) -> None:
        self.metrics = Metrics()
        self.journal = Journal(path)
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.dr = DrService(
            self.journal,
            clock=clock,
            site="t",
            default_import_kw=None,
            default_export_kw=None,
            metrics=self.metrics,
            worker=self.worker,
        )
        self.assessor = Assessor(
            self.journal, settings=settings, clock=clock, metrics=self.metrics, worker=self.worker
        )
        self.dr.record_listeners.append(self.assessor.cycle_done)

    async def interval(self) -> None:
        """One interval's end, and the jobs it started."""
        self.dr.cycle_done(record(0, 500.0, None))
        await self.assessor.drain()
        await self.dr.drain()

    def value(self, name: str, event_id: str, baseline: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            name, {"event": event_id, "baseline": baseline}
        )

    def close(self) -> None:
        self.worker.shutdown(wait=True)
        self.journal.close()


async def test_each_event_is_assessed_once_over_and_the_last_ten_are_shown(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    j = journal_at(path)
    fill(j, _cut(350.0))
    event(j, "ev0")  # the 17th, 14:00-16:00
    # eleven more, one a day back in time on the days before, 02:00-03:00 (500 kW at night:
    # each delivered nothing against a flat baseline)
    for k in range(1, 12):
        day = EVENT_START - timedelta(days=k)
        event(j, f"old{k:02d}", start=day.replace(hour=2), end=day.replace(hour=3))
    event(j, "later", start=EVENT_END + timedelta(hours=6), end=EVENT_END + timedelta(hours=7))
    j.close()
    clock = FakeClock(EVENT_END + timedelta(minutes=20))  # over, but not its after window
    rig = _Rig(path, clock)
    try:
        for _ in range(15):
            await rig.interval()
        assessed = {r.event_id for r in rig.journal.performance(100)}
        assert "ev0" not in assessed
        assert "later" not in assessed  # not over
        assert len(assessed) == 11  # the old ones, one per interval
        clock.advance(15 * 60)  # the meter-after window (30 min) has passed
        await rig.interval()
        ratio = rig.value("feederd_dr_performance_ratio", "ev0", "meter_before_after")
        assert ratio == pytest.approx(1.5)
        assert rig.value("feederd_dr_delivered_kwh", "ev0", "10of10") == pytest.approx(300.0)
        assert rig.value("feederd_dr_requested_kwh", "ev0", "10of10") == pytest.approx(200.0)
        shown = {
            s.labels["event"]
            for f in rig.metrics.registry.collect()
            if f.name == "feederd_dr_delivered_kwh"
            for s in f.samples
        }
        assert len(shown) == SHOWN
        assert "ev0" in shown
        assert "old11" not in shown  # the oldest of the twelve lost its labels
        _promtool(generate_latest(rig.metrics.registry))
        await rig.interval()  # nothing new: nothing assessed again
        assert len(rig.journal.performance(100)) == 2 * 12
    finally:
        rig.close()
    # a restart shows what was stored, before anything new is assessed
    rig = _Rig(path, FakeClock(AFTER))
    try:
        await rig.interval()
        assert rig.value("feederd_dr_delivered_kwh", "ev0", "10of10") == pytest.approx(300.0)
    finally:
        rig.close()


async def test_a_journal_error_is_logged_once_and_the_intervals_go_on(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = journal_at(path)
    fill(j, _cut(350.0))
    event(j, "ev1")
    j.close()
    rig = _Rig(path, FakeClock(AFTER))
    try:
        with sqlite3.connect(path) as db:
            db.execute("ALTER TABLE performance RENAME TO elsewhere")
        with capture_logs() as logs:
            for _ in range(5):
                await rig.interval()
        failures = [e for e in logs if e["event"] == "mv_journal_unavailable"]
        assert len(failures) == 1
        assert "performance" in failures[0]["error"]
        with sqlite3.connect(path) as db:
            db.execute("ALTER TABLE elsewhere RENAME TO performance")
        with capture_logs() as logs:
            await rig.interval()
        assert [e["event"] for e in logs if e["event"].startswith("mv_")] == [
            "mv_journal_available"
        ]
        assert any(e["event"] == "dr_event_assessed" and e["id"] == "ev1" for e in logs)
        assert rig.value("feederd_dr_delivered_kwh", "ev1", "10of10") == pytest.approx(300.0)
    finally:
        rig.close()


async def test_an_event_the_baselines_refuse_is_logged_once_and_left(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = journal_at(path)
    fill(j, _cut(350.0))
    event(j, "ev1")
    j.close()
    rig = _Rig(path, FakeClock(AFTER), MvSettings(timezone="Nowhere/Atlantis"))
    try:
        with capture_logs() as logs:
            for _ in range(3):
                await rig.interval()
        refused = [e for e in logs if e["event"] == "dr_event_not_assessed"]
        assert len(refused) == 1
        assert "unknown time zone" in refused[0]["error"]
        assert rig.journal.performance() == []
    finally:
        rig.close()


async def test_the_daemon_assesses_an_event_once_its_after_window_has_passed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    j = journal_at(path)
    fill(j, _cut(350.0))
    event(j, "ev1")
    j.close()
    # the head meter is where nothing listens: the interval has no reading
    loaded = parse_config(_config(mv={"timezone": TZ}), source="<test>", base_dir=tmp_path)
    metrics = Metrics()
    async with Daemon.open(
        loaded, clock=FakeClock(AFTER), metrics=metrics, journal_path=str(path)
    ) as daemon:
        await daemon.controller.cycle()
        reader = Journal(path)
        try:
            # the assessment runs on the DR worker thread: a bounded wait for its row
            for _ in range(500):
                if reader.performance():
                    break
                await asyncio.sleep(0.01)
            rows = {r.baseline: r for r in reader.performance()}
        finally:
            reader.close()
        assert rows["10of10"].delivered_kwh == pytest.approx(300.0)
        assert rows["10of10"].days_used == 10
        assert rows["meter_before_after"].performance_ratio == pytest.approx(1.5)
        labels = {"event": "ev1", "baseline": "10of10"}
        for _ in range(500):  # the metrics follow on the loop's thread
            value = metrics.registry.get_sample_value("feederd_dr_performance_ratio", labels)
            if value is not None:
                break
            await asyncio.sleep(0.01)
        assert value is not None
        assert math.isclose(value, 1.5)


def test_the_mv_table_and_its_time_zone() -> None:
    # the [mv] time zone, else [forecast]'s; days within the lookback
    chicago = {"timezone": "America/Chicago"}
    loaded = parse_config(_config(forecast=chicago), source="<t>", base_dir=Path())
    assert MvSettings.from_config(loaded.config).timezone == "America/Chicago"
    own = parse_config(
        _config(forecast=chicago, mv={"timezone": TZ, "days": 5}), source="<t>", base_dir=Path()
    )
    settings = MvSettings.from_config(own.config)
    assert (settings.timezone, settings.days) == (TZ, 5)
    assert settings.after_s == 1800.0
    with pytest.raises(ConfigError, match="lookback_days"):
        parse_config(_config(mv={"days": 20, "lookback_days": 14}), source="<t>", base_dir=Path())


def _config(**tables: Any) -> dict[str, Any]:
    """A feeder whose head meter is on a port where nothing listens, and `tables`."""
    return {
        "site": "mv",
        "feeder": {"case": "builtin:case33bw"},
        "metrics": {"enabled": False},
        "devices": [
            {
                "name": "head",
                "kind": "meter",
                "bus": 1,
                "head": True,
                "transport": {"type": "tcp", "host": "127.0.0.1", "port": free_port()},
            }
        ],
        **tables,
    }
