"""``feederd report``: the last plan hour by hour, the DR events it sees coming and the
forecasts' error, as text and ``--json``; from the journal alone, beside a daemon that keeps
writing to it; and a clear word when the journal holds no plan yet."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

from controller.cli import main
from controller.dr.events import EventType
from controller.journal import Journal
from controller.plan import ForecastError, plan_from
from controller.records import CycleRecord, CycleStatus
from tests.controller.plan_helpers import AT, EVENING, event, plan_input, plan_result


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(["feederd", *args], code, out.getvalue(), err.getvalue())


def _record(i: int) -> CycleRecord:
    return CycleRecord(
        cycle=i,
        status=CycleStatus.OPTIMAL,
        at_s=float(i),
        import_kw=1500.0,
        import_estimate_kw=1500.0,
        import_limit_kw=None,
        export_limit_kw=None,
        losses_kw=50.0,
        curtailed_kw=0.0,
        v_min_pu=0.95,
        setpoints_kw={"b1": -10.0},
        devices_up=3,
        devices_missing=(),
        poll_ms=5.0,
        solve_ms=20.0,
        write_ms=5.0,
        cycle_ms=30.0,
    )


def _journal(path: Path, *, plan: bool) -> Journal:
    j = Journal(path)
    for i in range(10):
        j.append(_record(i), AT - timedelta(minutes=10 - i))
    if plan:
        errors = (
            ForecastError(quantity="load", bucket="0-1h", mape_pct=3.2, rmse_kw=41.5, samples=96),
            ForecastError(quantity="pv", bucket="0-1h", mape_pct=None, rmse_kw=None, samples=0),
        )
        doc = plan_from(
            plan_result(),
            plan_input(),
            AT,
            [event("evening-cap", EventType.IMPORT_LIMIT, *EVENING)],
            forecast_errors=errors,
        ).to_json()
        j.put_plan(doc, AT)
    return j


def _first_hour_import() -> float:
    """12:00-13:00: four minutes of 1500..1503 kW, 15 min each of 1504..1506, 11 of 1507."""
    return round((1500 + 1501 + 1502 + 1503 + 15 * (1504 + 1505 + 1506) + 11 * 1507) / 60, 1)


def test_report_shows_the_plan_hour_by_hour_beside_a_running_daemon(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    daemon = _journal(path, plan=True)  # the daemon's connection stays open, writing
    stop = threading.Event()
    written: list[int] = []
    failed: list[BaseException] = []

    def keep_writing() -> None:
        i = 100
        while not stop.is_set():
            try:
                daemon.append(_record(i), AT + timedelta(seconds=i))
                daemon.put_plan(daemon.last_plan() or {}, AT)
            except BaseException as err:
                failed.append(err)
                return
            written.append(i)
            i += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        rep = cli("report", "--journal", str(path))
        as_json = cli("report", "--journal", str(path), "--json")
    finally:
        stop.set()
        writer.join()
    assert not failed, failed  # the daemon's writes never failed while the report read
    assert written
    daemon.close()
    assert rep.returncode == 0, rep.stderr
    text = rep.stdout
    assert "plan made 2026-07-01 12:00:00 UTC" in text
    assert "largest shortfall 40.0 kW" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("hour (UTC)"))
    assert lines[header].split() == [
        "hour",
        "(UTC)",
        "import",
        "kW",
        "limit",
        "kW",
        "SOC",
        "%",
        "curtailed",
        "kW",
        "shortfall",
        "kW",
    ]
    hours = [line.split() for line in lines[header + 1 : header + 25]]
    assert [h[0] for h in hours] == [f"{(12 + k) % 24:02d}:00" for k in range(24)]
    first = hours[0]
    assert float(first[1]) == _first_hour_import()
    assert first[2] == "-"  # no limit held at noon
    assert float(first[3]) == round(100 * (120 + 0.5 * 7) / 400, 1)  # at the end of step 7
    assert float(first[4]) == round((4 * 3.0) / 60, 1)  # 3 kW for the first four minutes
    six_pm = hours[6]
    assert (float(six_pm[2]), float(six_pm[5])) == (1200.0, 40.0)
    assert "evening-cap" in text
    assert "forecast error (forecasts against what was measured)" in text
    assert any(line.split()[:5] == ["load", "0-1h", "3.2", "41.5", "96"] for line in lines)

    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["plan"]["at"] == "2026-07-01T12:00:00Z"
    assert len(doc["plan_hourly"]) == 24
    assert doc["plan_hourly"][0]["import kW"] == _first_hour_import()
    assert doc["plan_hourly"][0]["limit kW"] is None
    assert doc["plan"]["events"][0]["predicted_shortfall_kwh"] == 80.0
    assert doc["forecast_errors"][0] == {
        "quantity": "load",
        "horizon": "0-1h",
        "MAPE %": 3.2,
        "RMSE kW": 41.5,
        "samples": 96,
    }
    assert doc["forecast_errors"][1]["MAPE %"] is None
    assert doc["summary"]["intervals"] >= 10
    assert doc["plan_note"] is None


def test_report_says_when_there_is_no_plan_yet(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    _journal(path, plan=False).close()
    rep = cli("report", "--journal", str(path))
    assert rep.returncode == 0, rep.stderr
    assert "no plan yet: the journal holds none" in rep.stdout
    assert "intervals" in rep.stdout  # the period's summary is there all the same
    doc = json.loads(cli("report", "--journal", str(path), "--json").stdout)
    assert doc["plan"] is None
    assert doc["plan_hourly"] == []
    assert doc["forecast_errors"] == []
    assert doc["plan_note"].startswith("no plan yet")


def test_a_damaged_plan_row_is_named_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    j = _journal(path, plan=False)
    j.put_plan({"at": "2026-07-01T12:00:00Z", "steps": [{"start": 7}]}, AT)
    j.close()
    rep = cli("report", "--journal", str(path))
    assert rep.returncode == 0, rep.stderr
    assert "the stored plan cannot be read: not a plan document" in rep.stdout
