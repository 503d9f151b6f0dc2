"""``feederd report --event ID``: what a DR event delivered against each baseline, printed as
a table, interval by interval, as CSV, as a PNG and as JSON, from a journal made with the real
``Journal`` API; an unknown id, or options out of place, are one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from controller.dr.events import EventType
from tests.controller.mv_helpers import EVENT_START, TZ, event, fill, in_event, journal_at
from tests.controller.test_config_cli import cli


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three weeks at 500 kW; a 100 kW reduce_by on 2026-06-17 14:00-16:00 (Berlin) during
    which the feeder drew 350 kW under a limit of 400 kW."""
    path = tmp_path_factory.mktemp("mv") / "journal.sqlite"
    j = journal_at(path)
    fill(
        j,
        lambda t: 350.0 if in_event(t) else 500.0,
        limit=lambda t: 400.0 if in_event(t) else None,
    )
    event(j, "ev-1", kind=EventType.REDUCE_BY, kw=100.0)
    j.close()
    return path


def test_the_report_prints_each_baseline_and_every_interval(journal: Path) -> None:
    r = cli("report", "--journal", str(journal), "--event", "ev-1", "--timezone", TZ)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("DR event ev-1: reduce_by 100 kW, 2026-06-17 12:00:00 ..")
    summary = {ln.split()[0]: ln.split() for ln in lines if ln.startswith(("10of10", "meter_"))}
    # baseline delivered requested ratio days adjustment
    assert summary["10of10"][1:6] == ["300.0", "200.0", "1.500", "10", "1.000"]
    assert summary["meter_before_after"][1:4] == ["300.0", "200.0", "1.500"]
    rows = [ln for ln in lines if ln.startswith("2026-06-17 1")]
    assert len(rows) == 8  # one per 15 min interval of the event
    assert rows[0].split()[2:5] == ["350.0", "400.0", "500.0"]  # measured, limit, baseline


def test_csv_and_plot_are_written(journal: Path, tmp_path: Path) -> None:
    csv, png = tmp_path / "out" / "ev.csv", tmp_path / "out" / "ev.png"
    r = cli(
        "report",
        "--journal",
        str(journal),
        "--event",
        "ev-1",
        "--timezone",
        TZ,
        "--csv",
        str(csv),
        "--plot",
        str(png),
    )
    assert r.returncode == 0, r.stderr
    assert f"wrote {csv}" in r.stdout
    df = pd.read_csv(csv, index_col=0, parse_dates=True)
    assert len(df) == 8
    assert df.index[0] == pd.Timestamp(EVENT_START).tz_convert("UTC")
    assert df["delivered_kw_10of10"].tolist() == pytest.approx([150.0] * 8)
    assert df["requested_kw_meter_before_after"].tolist() == pytest.approx([100.0] * 8)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000  # a drawn figure, not an empty canvas


def test_json_holds_the_summary_and_the_intervals(journal: Path) -> None:
    r = cli("report", "--journal", str(journal), "--event", "ev-1", "--json", "--timezone", TZ)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["event"]["id"] == "ev-1"
    assert doc["event"]["cancelled_at"] is None
    ten = next(b for b in doc["baselines"] if b["baseline"] == "10of10")
    assert ten["ratio"] == pytest.approx(1.5)
    assert len(ten["days_used"]) == 10
    assert ten["days_used"][0] == "2026-06-16"
    assert len(doc["intervals"]) == 8


def test_without_a_time_zone_the_report_says_it_used_utc(journal: Path) -> None:
    # without --timezone (and no config) the days are UTC days (the same figures here: the
    # load is flat), and the report says which time zone it used
    r = cli("report", "--journal", str(journal), "--event", "ev-1")
    assert r.returncode == 0, r.stderr
    assert "baselines in local time UTC" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--event", "nope"), "no DR event 'nope' in the journal"),
        (("--csv", "x.csv"), "--csv, --plot and --timezone go with --event"),
        (("--event", "ev-1", "--timezone", "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    journal: Path, args: tuple[str, ...], message: str
) -> None:
    r = cli("report", "--journal", str(journal), *args)
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert message in r.stderr
